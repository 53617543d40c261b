//! The stream-node fleet: the registry of nodes (from the config and the
//! admin API, kept in the metadata store), their health, placement of images
//! on them, and the signing keys pushed to them.
//!
//! A node takes new downloads while it is *eligible*: not drained, not
//! unhealthy (`unhealthy_after` failed checks in a row), and, when glance-api
//! pushes keyrings, known to hold the key links are signed with now. If no
//! node is eligible, downloads go to every node not drained that holds that
//! key, whatever its health checks say: a check that fails everywhere at
//! once more likely says something about glance-api's own network than
//! about every node.

mod health;
pub mod keys;
pub mod node_client;
pub mod placement;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use serde::Serialize;

pub use health::{round, run};
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
    /// push since start.
    pub keyring_generation: Option<u64>,
    /// Pushes to this node go one at a time, so the last one sent is the
    /// last one recorded.
    push_gate: Arc<tokio::sync::Mutex<()>>,
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
    /// Registry changes go one at a time (the metadata write happens
    /// outside the `nodes` lock, which every download reads).
    change: std::sync::Mutex<()>,
    /// Whether downloads go to unhealthy nodes for want of healthy ones.
    unhealthy_fallback: AtomicBool,
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
    /// Keys cannot be rotated: they could not reach the nodes.
    #[error(
        "no [fleet] admin_token_file is configured: a new key could not reach the stream nodes"
    )]
    NoAdminToken,
    /// A key change failed (the keyring file or its records).
    #[error("signing keys: {0}")]
    Keys(String),
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
            .map(|(name, node)| (name, NodeState::new(node)))
            .collect();
        Ok(Fleet {
            nodes: RwLock::new(nodes),
            client: NodeClient::new(
                config.fleet.admin_token.clone(),
                config.fleet.node_timeout,
                &config.roots,
            )?,
            settings: config.fleet.clone(),
            keys,
            metadata,
            change: std::sync::Mutex::new(()),
            unhealthy_fallback: AtomicBool::new(false),
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

    /// Whether a node is known to verify links signed now (always, when
    /// glance-api does not push keyrings).
    fn holds_primary(&self, s: &NodeState, primary: u64) -> bool {
        !self.client.can_administer() || s.keyring_generation.is_some_and(|g| g >= primary)
    }

    /// Whether a node takes new downloads.
    fn eligible(&self, s: &NodeState, primary: u64) -> bool {
        !s.node.drained && s.health != Health::Down && self.holds_primary(s, primary)
    }

    /// The nodes an image is placed on, best first: the `replicas` best of
    /// the eligible nodes (or of the nodes not drained that hold the primary
    /// key, if none is eligible).
    pub fn placed(&self, image: &uuid::Uuid) -> Vec<StreamNode> {
        self.placed_for(image, self.keys.generations().primary)
    }

    fn placed_for(&self, image: &uuid::Uuid, primary: u64) -> Vec<StreamNode> {
        let nodes = self.read();
        let mut pool: Vec<&StreamNode> = nodes
            .values()
            .filter(|s| self.eligible(s, primary))
            .map(|s| &s.node)
            .collect();
        if pool.is_empty() {
            pool = nodes
                .values()
                .filter(|s| !s.node.drained && self.holds_primary(s, primary))
                .map(|s| &s.node)
                .collect();
            // Said once when it starts, not on every download.
            if !pool.is_empty() && !self.unhealthy_fallback.swap(true, Ordering::Relaxed) {
                tracing::warn!("no stream node is healthy: placing on every node not drained");
            }
        } else if self.unhealthy_fallback.swap(false, Ordering::Relaxed) {
            tracing::info!("stream nodes are healthy again: placing on healthy nodes only");
        }
        // Only the chosen nodes are copied out of the lock.
        placement::top(&pool, image, self.settings.replicas.get())
            .into_iter()
            .map(|n| (*n).clone())
            .collect()
    }

    /// The node a download goes to, with the keys to sign its link: one of
    /// the image's placed nodes (at random when there are several, so their
    /// load evens out), chosen among nodes that hold that snapshot's primary.
    pub fn pick(&self, image: &uuid::Uuid) -> Option<(StreamNode, Arc<keys::KeyState>)> {
        let keys = self.keys.current();
        let mut placed = self.placed_for(image, keys.generations.primary);
        let node = if placed.len() > 1 {
            let mut b = [0u8; 4];
            let r = getrandom::fill(&mut b).map_or(0, |()| u32::from_le_bytes(b));
            let i = r as usize % placed.len();
            placed.swap_remove(i)
        } else {
            placed.pop()?
        };
        Some((node, keys))
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
                eligible: self.eligible(s, generations.primary),
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
        let _one = self.change.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.read().get(&node.name).map(|s| s.node.clone());
        let node = StreamNode {
            drained: old.as_ref().is_some_and(|n| n.drained),
            ..node
        };
        self.metadata.put_stream_node(&node)?;
        let mut nodes = self.write();
        // A new or moved node has not received the keyring.
        let same_place = old.as_ref().is_some_and(|n| n.admin_url == node.admin_url);
        match nodes.get_mut(&node.name) {
            Some(s) if same_place => s.node = node.clone(),
            _ => {
                nodes.insert(node.name.clone(), NodeState::new(node.clone()));
            }
        }
        Ok(old.is_none())
    }

    /// Drains a node (`true`) or puts it back in service (`false`).
    pub fn set_drained(&self, name: &str, drained: bool) -> Result<(), FleetError> {
        let _one = self.change.lock().unwrap_or_else(|e| e.into_inner());
        let node = self
            .read()
            .get(name)
            .map(|s| StreamNode {
                drained,
                ..s.node.clone()
            })
            .ok_or_else(|| FleetError::NoSuchNode(name.to_owned()))?;
        self.metadata.put_stream_node(&node)?;
        if let Some(s) = self.write().get_mut(name) {
            s.node.drained = drained;
        }
        Ok(())
    }

    /// Removes a node from the registry (its cache is left as it is).
    pub fn remove(&self, name: &str) -> Result<(), FleetError> {
        let _one = self.change.lock().unwrap_or_else(|e| e.into_inner());
        if !self.read().contains_key(name) {
            return Err(FleetError::NoSuchNode(name.to_owned()));
        }
        self.metadata.delete_stream_node(name)?;
        self.write().remove(name);
        Ok(())
    }

    /// Checks one node's health now.
    pub async fn check(&self, name: &str) {
        let Some(node) = self.read().get(name).map(|s| s.node.clone()) else {
            return;
        };
        let outcome = self.client.health(&node).await;
        self.record_health(&node, outcome, unix_now());
    }

    /// Records a health check's outcome, unless the node moved meanwhile.
    fn record_health(&self, node: &StreamNode, outcome: Result<(), String>, now: u64) {
        let name = node.name.as_str();
        let mut nodes = self.write();
        let Some(s) = still_at(&mut nodes, node) else {
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
    /// outcome, recorded as it arrives. Pushes to one node go one at a time,
    /// each sending the keyring current when its turn comes, so the
    /// generation recorded is the one the node holds.
    pub async fn push_keyring(&self, names: &[String]) -> Vec<(String, Result<(), String>)> {
        let targets: Vec<(StreamNode, Arc<tokio::sync::Mutex<()>>)> = {
            let nodes = self.read();
            names
                .iter()
                .filter_map(|n| {
                    nodes
                        .get(n)
                        .map(|s| (s.node.clone(), Arc::clone(&s.push_gate)))
                })
                .collect()
        };
        let calls = targets.iter().map(|(node, gate)| async move {
            let _turn = gate.lock().await;
            let keys = self.keys.current();
            let outcome = self
                .client
                .push_keyring(node, &keys.keyring.to_toml())
                .await;
            self.record_push(node, keys.generations.keyring, &outcome);
            (node.name.clone(), outcome)
        });
        futures_util::future::join_all(calls).await
    }

    /// Records a push's outcome, unless the node moved meanwhile.
    fn record_push(&self, node: &StreamNode, generation: u64, outcome: &Result<(), String>) {
        let mut nodes = self.write();
        let Some(s) = still_at(&mut nodes, node) else {
            return;
        };
        match outcome {
            Ok(()) => s.keyring_generation = Some(generation),
            Err(e) => {
                tracing::warn!(node = %node.name, error = %e, "cannot push the keyring");
                s.keyring_generation.get_or_insert(0);
                s.last_error = Some(format!("keyring push: {e}"));
            }
        }
    }

    /// Rotates the signing key in two steps: a new key joins the keyring
    /// and is pushed to every node; then it becomes primary (and is pushed
    /// again). Links are signed with it only after the nodes that will get
    /// them hold it: a node the first push missed is out of placement until
    /// a later push reaches it. `link_ttl` plus the grace period is how long
    /// the replaced key stays. Returns the rotation and the first push's
    /// outcome for every node.
    pub async fn rotate(
        self: &Arc<Self>,
        link_ttl: std::time::Duration,
    ) -> Result<(keys::Rotation, Vec<(String, Result<(), String>)>), FleetError> {
        if !self.client.can_administer() {
            return Err(FleetError::NoAdminToken);
        }
        let lifetime = link_ttl.saturating_add(self.settings.key_grace);
        let fleet = Arc::clone(self);
        let staged = tokio::task::spawn_blocking(move || {
            fleet.keys.stage(fleet.metadata.as_ref(), unix_now())
        })
        .await
        .map_err(|e| FleetError::Keys(format!("the rotation task failed: {e}")))?
        .map_err(FleetError::Keys)?;
        let names: Vec<String> = self.nodes().into_iter().map(|n| n.name).collect();
        let pushed = self.push_keyring(&names).await;
        let fleet = Arc::clone(self);
        let rotation = tokio::task::spawn_blocking(move || {
            fleet
                .keys
                .promote(fleet.metadata.as_ref(), lifetime, unix_now())
        })
        .await
        .map_err(|e| FleetError::Keys(format!("the rotation task failed: {e}")))?
        .map_err(FleetError::Keys)?;
        tracing::info!(primary = %staged, replaced = %rotation.replaced.id, "signing key rotated");
        let reached: Vec<String> = pushed
            .iter()
            .filter(|(_, r)| r.is_ok())
            .map(|(n, _)| n.clone())
            .collect();
        self.push_keyring(&reached).await;
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

/// The state of `node` if it is still registered at the same admin URL (an
/// answer from a node that moved meanwhile says nothing of its new place).
fn still_at<'a>(
    nodes: &'a mut BTreeMap<String, NodeState>,
    node: &StreamNode,
) -> Option<&'a mut NodeState> {
    nodes
        .get_mut(&node.name)
        .filter(|s| s.node.admin_url == node.admin_url)
}

/// The Unix time now, in seconds.
pub fn unix_now() -> u64 {
    time::OffsetDateTime::now_utc().unix_timestamp().max(0) as u64
}

impl NodeState {
    fn new(node: StreamNode) -> NodeState {
        NodeState {
            node,
            health: Health::Unknown,
            failures: 0,
            checked_at: None,
            last_error: None,
            keyring_generation: None,
            push_gate: Arc::default(),
        }
    }
}
