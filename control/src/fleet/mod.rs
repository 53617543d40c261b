//! The stream-node fleet: the registry of nodes (from the config and the
//! admin API, kept in the metadata store), their health, placement of images
//! on them, and the signing keys pushed to them.
//!
//! A node takes new downloads while it is *eligible*: not drained, not
//! unhealthy (`unhealthy_after` failed checks in a row), and, when glance-api
//! pushes keyrings, holding the key links are signed with now. If no node is
//! eligible, downloads go to every node not drained rather than nowhere: a
//! health check that fails everywhere at once more likely says something
//! about glance-api's own network than about every node.

mod health;
pub mod keys;
pub mod node_client;
pub mod placement;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde::Serialize;

pub use health::run;
use keys::SigningKeys;
use node_client::NodeClient;

use crate::config::Config;
use crate::metadata::MetadataStore;
use crate::model::StreamNode;

/// What health checks say of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Not checked since it was registered or glance-api started.
    Unknown,
    /// The last check passed.
    Up,
    /// `unhealthy_after` checks in a row failed.
    Down,
}

/// A node and what glance-api knows of it now.
#[derive(Debug, Clone)]
pub struct NodeState {
    /// The registered node.
    pub node: StreamNode,
    /// Its health.
    pub health: Health,
    /// Failed checks in a row.
    pub failures: u32,
    /// Unix time of the last check.
    pub checked_at: Option<u64>,
    /// Why the last check or push failed.
    pub last_error: Option<String>,
    /// The keyring generation it last received; `None` until the first
    /// push since start, when it is assumed to hold the keyring file's keys.
    pub keyring_generation: Option<u64>,
}

/// A node as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct NodeView {
    /// Its name.
    pub name: String,
    /// Where downloads go.
    pub public_url: String,
    /// Where glance-api checks and administers it.
    pub admin_url: String,
    /// Its relative share.
    pub weight: u32,
    /// Whether it is drained.
    pub drained: bool,
    /// Its health.
    pub health: Health,
    /// Whether it takes new downloads now.
    pub eligible: bool,
    /// `current`, `stale` or `unknown` (not pushed since start).
    pub keyring: &'static str,
    /// Unix time of the last check.
    pub checked_at: Option<u64>,
    /// Why the last check or push failed.
    pub last_error: Option<String>,
}

/// The fleet: registry, health, placement and keys.
pub struct Fleet {
    nodes: RwLock<BTreeMap<String, NodeState>>,
    /// The settings of `[fleet]`.
    pub settings: crate::config::FleetConfig,
    /// Calls to the nodes.
    pub client: NodeClient,
    /// The signing keys.
    pub keys: SigningKeys,
    /// Registry changes are written here.
    metadata: Arc<dyn MetadataStore>,
}

/// Why a registry change failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FleetError {
    /// No node has that name.
    #[error("no stream node is named {0:?}")]
    NoSuchNode(String),
    /// The metadata store failed.
    #[error(transparent)]
    Metadata(#[from] crate::metadata::MetadataError),
}

impl Fleet {
    /// The registry as stored, with the config's nodes registered again
    /// (their settings from the config, their drained flag kept).
    pub fn new(
        config: &Config,
        metadata: Arc<dyn MetadataStore>,
        keys: SigningKeys,
    ) -> Result<Fleet, String> {
        let mut stored: BTreeMap<String, StreamNode> = metadata
            .stream_nodes()
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|n| (n.name.clone(), n))
            .collect();
        for node in &config.stream_nodes {
            let drained = stored.get(&node.name).is_some_and(|n| n.drained);
            let node = StreamNode {
                drained,
                ..node.clone()
            };
            if stored.get(&node.name) != Some(&node) {
                metadata.put_stream_node(&node).map_err(|e| e.to_string())?;
            }
            stored.insert(node.name.clone(), node);
        }
        let nodes = stored
            .into_iter()
            .map(|(name, node)| (name, NodeState::new(node, None)))
            .collect();
        Ok(Fleet {
            nodes: RwLock::new(nodes),
            client: NodeClient::new(config.fleet.admin_token.clone(), config.fleet.node_timeout)?,
            settings: config.fleet.clone(),
            keys,
            metadata,
        })
    }

    /// Whether any node is registered (the cache API needs one).
    pub fn has_nodes(&self) -> bool {
        !self.read().is_empty()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, NodeState>> {
        // A writer never panics while holding the lock (plain field updates).
        self.nodes.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, NodeState>> {
        self.nodes.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a node takes new downloads.
    fn eligible(&self, s: &NodeState) -> bool {
        let keyring_ok = !self.client.can_administer()
            || s.keyring_generation
                .is_none_or(|g| g >= self.keys.generations().primary);
        !s.node.drained && s.health != Health::Down && keyring_ok
    }

    /// The nodes an image is placed on, best first: the `replicas` best of
    /// the eligible nodes (or of every node not drained, if none is eligible).
    pub fn placed(&self, image: &uuid::Uuid) -> Vec<StreamNode> {
        let nodes = self.read();
        let mut pool: Vec<&StreamNode> = nodes
            .values()
            .filter(|s| self.eligible(s))
            .map(|s| &s.node)
            .collect();
        if pool.is_empty() {
            pool = nodes
                .values()
                .filter(|s| !s.node.drained)
                .map(|s| &s.node)
                .collect();
            if !pool.is_empty() {
                tracing::warn!("no stream node is eligible: placing on every node not drained");
            }
        }
        let owned: Vec<StreamNode> = pool.into_iter().cloned().collect();
        placement::top(&owned, image, self.settings.replicas.get())
            .into_iter()
            .cloned()
            .collect()
    }

    /// The node a download goes to: one of the image's placed nodes, picked
    /// at random when there are several, so their load evens out.
    pub fn pick(&self, image: &uuid::Uuid) -> Option<StreamNode> {
        let mut placed = self.placed(image);
        if placed.len() > 1 {
            let mut b = [0u8; 4];
            let r = getrandom::fill(&mut b).map_or(0, |()| u32::from_le_bytes(b));
            let i = r as usize % placed.len();
            return Some(placed.swap_remove(i));
        }
        placed.pop()
    }

    /// Every registered node.
    pub fn nodes(&self) -> Vec<StreamNode> {
        self.read().values().map(|s| s.node.clone()).collect()
    }

    /// Every node as the admin API shows it.
    pub fn views(&self) -> Vec<NodeView> {
        let generations = self.keys.generations();
        self.read()
            .values()
            .map(|s| NodeView {
                name: s.node.name.clone(),
                public_url: s.node.public_url.clone(),
                admin_url: s.node.admin_url.clone(),
                weight: s.node.weight,
                drained: s.node.drained,
                health: s.health,
                eligible: self.eligible(s),
                keyring: match s.keyring_generation {
                    None => "unknown",
                    Some(g) if g >= generations.keyring => "current",
                    Some(_) => "stale",
                },
                checked_at: s.checked_at,
                last_error: s.last_error.clone(),
            })
            .collect()
    }

    /// One node's view.
    pub fn view(&self, name: &str) -> Option<NodeView> {
        self.views().into_iter().find(|v| v.name == name)
    }

    /// Adds a node or replaces its settings (keeping its drained flag and
    /// health). Returns whether it is new. Blocking (metadata write).
    pub fn put(&self, node: StreamNode) -> Result<bool, FleetError> {
        let mut nodes = self.write();
        let old = nodes.get(&node.name);
        let node = StreamNode {
            drained: old.is_some_and(|s| s.node.drained),
            ..node
        };
        self.metadata.put_stream_node(&node)?;
        let created = old.is_none();
        // A new or moved node has not received the keyring.
        let same_place = old.is_some_and(|s| s.node.admin_url == node.admin_url);
        let state = match nodes.remove(&node.name) {
            Some(mut s) if same_place => {
                s.node = node.clone();
                s
            }
            _ => NodeState::new(node.clone(), self.client.can_administer().then_some(0)),
        };
        nodes.insert(node.name.clone(), state);
        Ok(created)
    }

    /// Drains a node (`true`) or puts it back in service (`false`).
    pub fn set_drained(&self, name: &str, drained: bool) -> Result<(), FleetError> {
        let mut nodes = self.write();
        let state = nodes
            .get_mut(name)
            .ok_or_else(|| FleetError::NoSuchNode(name.to_owned()))?;
        let node = StreamNode {
            drained,
            ..state.node.clone()
        };
        self.metadata.put_stream_node(&node)?;
        state.node = node;
        Ok(())
    }

    /// Removes a node from the registry (its cache is left as it is).
    pub fn remove(&self, name: &str) -> Result<(), FleetError> {
        let mut nodes = self.write();
        if nodes.remove(name).is_none() {
            return Err(FleetError::NoSuchNode(name.to_owned()));
        }
        self.metadata.delete_stream_node(name)?;
        Ok(())
    }

    /// Checks one node's health now.
    pub async fn check(&self, name: &str) {
        let Some(node) = self.read().get(name).map(|s| s.node.clone()) else {
            return;
        };
        let outcome = self.client.health(&node).await;
        self.record_health(name, outcome, unix_now());
    }

    /// Records a health check's outcome.
    fn record_health(&self, name: &str, outcome: Result<(), String>, now: u64) {
        let mut nodes = self.write();
        let Some(s) = nodes.get_mut(name) else {
            return;
        };
        s.checked_at = Some(now);
        match outcome {
            Ok(()) => {
                if s.health == Health::Down {
                    tracing::info!(node = name, "stream node is healthy again");
                }
                s.health = Health::Up;
                s.failures = 0;
                s.last_error = None;
            }
            Err(e) => {
                s.failures = s.failures.saturating_add(1);
                if s.failures >= self.settings.unhealthy_after && s.health != Health::Down {
                    tracing::warn!(node = name, error = %e, "stream node is unhealthy");
                    s.health = Health::Down;
                }
                s.last_error = Some(e);
            }
        }
    }

    /// Pushes the keyring to the named nodes at once; returns each node's
    /// outcome. A node that misses a new primary key takes no downloads
    /// until a later push (every health check retries) reaches it.
    pub async fn push_keyring(&self, names: &[String]) -> Vec<(String, Result<(), String>)> {
        let generation = self.keys.generations().keyring;
        let text = self.keys.keyring().to_toml();
        let targets: Vec<StreamNode> = {
            let nodes = self.read();
            names
                .iter()
                .filter_map(|n| nodes.get(n).map(|s| s.node.clone()))
                .collect()
        };
        let calls = targets.iter().map(|node| {
            let text = &text;
            async move {
                (
                    node.name.clone(),
                    self.client.push_keyring(node, text).await,
                )
            }
        });
        let outcomes = futures_util::future::join_all(calls).await;
        let mut nodes = self.write();
        for (name, outcome) in &outcomes {
            let Some(s) = nodes.get_mut(name) else {
                continue;
            };
            match outcome {
                Ok(()) => {
                    s.keyring_generation = Some(generation.max(s.keyring_generation.unwrap_or(0)));
                }
                Err(e) => {
                    tracing::warn!(node = %name, error = %e, "cannot push the keyring");
                    s.keyring_generation.get_or_insert(0);
                    s.last_error = Some(format!("keyring push: {e}"));
                }
            }
        }
        outcomes
    }

    /// Makes a new primary signing key and pushes the keyring to every node
    /// at once. `link_ttl` plus the grace period is how long the replaced key
    /// stays.
    pub async fn rotate(
        self: &Arc<Self>,
        link_ttl: std::time::Duration,
    ) -> Result<(keys::Rotation, Vec<(String, Result<(), String>)>), String> {
        if !self.client.can_administer() {
            return Err(
                "no [fleet] admin_token_file is configured: a new key could not reach the stream nodes"
                    .into(),
            );
        }
        let lifetime = link_ttl.saturating_add(self.settings.key_grace);
        let fleet = Arc::clone(self);
        let rotation = tokio::task::spawn_blocking(move || {
            fleet
                .keys
                .rotate(fleet.metadata.as_ref(), lifetime, unix_now())
        })
        .await
        .map_err(|e| format!("the rotation task failed: {e}"))??;
        tracing::info!(primary = %rotation.primary, replaced = %rotation.replaced.id, "signing key rotated");
        let names: Vec<String> = self.nodes().into_iter().map(|n| n.name).collect();
        let pushed = self.push_keyring(&names).await;
        Ok((rotation, pushed))
    }

    /// Every key, with its record.
    pub async fn key_views(self: &Arc<Self>) -> Result<Vec<keys::KeyView>, String> {
        let fleet = Arc::clone(self);
        tokio::task::spawn_blocking(move || fleet.keys.list(fleet.metadata.as_ref()))
            .await
            .map_err(|e| format!("the key listing task failed: {e}"))?
    }

    /// The names of the nodes whose keyring is older than the current one
    /// (or not pushed since start).
    fn behind(&self) -> Vec<String> {
        let generation = self.keys.generations().keyring;
        self.read()
            .values()
            .filter(|s| s.keyring_generation.is_none_or(|g| g < generation))
            .map(|s| s.node.name.clone())
            .collect()
    }
}

/// The Unix time now, in seconds.
pub fn unix_now() -> u64 {
    time::OffsetDateTime::now_utc().unix_timestamp().max(0) as u64
}

impl NodeState {
    fn new(node: StreamNode, keyring_generation: Option<u64>) -> NodeState {
        NodeState {
            node,
            health: Health::Unknown,
            failures: 0,
            checked_at: None,
            last_error: None,
            keyring_generation,
        }
    }
}
