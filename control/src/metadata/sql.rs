//! The SQL metadata store: PostgreSQL or MariaDB/MySQL through sqlx, for
//! several glance-api replicas sharing one database.
//!
//! Each row holds the record glance-api reads and writes (JSON, as in the
//! redb file) beside the columns queries select on. Updates are optimistic:
//! an image row carries a version, a change is written only over the
//! version it was computed from, and a writer that lost the race reads the
//! new row and applies its change again (so two replicas' PATCHes both
//! land, and of two uploads to a `queued` image one wins and the other sees
//! `saving`). Uniqueness is the database's: image ids, and one membership
//! per image and project.
//!
//! The trait is synchronous (callers run it off the async threads), and
//! sqlx is async: the store owns a small runtime of its own and waits for
//! each query on the calling thread, so it may be called from any thread.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Once;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::{Migrate as _, Migrator};
use sqlx::{AnyConnection, AnyPool, AssertSqlSafe, Connection as _, Row as _};
use uuid::Uuid;

use super::{DocKind, MetadataError, MetadataStore, decode, decode_doc, decode_member};
use crate::model::{Image, KeyRecord, Member, MemberStatus, StreamNode};

/// Attempts of an update that keeps losing to concurrent writers.
const UPDATE_ATTEMPTS: u32 = 64;
/// How long a query may wait for a pooled connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `db sync` waits for another replica's sync to finish.
const SYNC_LOCK_SECS: u32 = 600;
/// The longest one store call may take (a database that stopped
/// answering, a connection half-open after a failover): the caller gets an
/// error instead of a thread held for the kernel's retransmission timeout.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The SQL the store speaks: its placeholders and upserts differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// PostgreSQL (`postgres://`, `postgresql://`).
    Postgres,
    /// MariaDB or MySQL (`mysql://`, `mariadb://`).
    MySql,
}

impl Dialect {
    /// The dialect of a database URL, and the URL as sqlx takes it.
    fn of(url: &str) -> Result<(Dialect, String), MetadataError> {
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            MetadataError::Db(format!(
                "metadata url {}: not a URL (postgresql://... or mysql://...)",
                redact(url)
            ))
        })?;
        match scheme {
            "postgres" | "postgresql" => Ok((Dialect::Postgres, url.to_owned())),
            "mysql" => Ok((Dialect::MySql, url.to_owned())),
            "mariadb" => Ok((Dialect::MySql, format!("mysql://{rest}"))),
            other => Err(MetadataError::Db(format!(
                "metadata url: unknown database kind {other:?} (postgresql, mysql or mariadb)"
            ))),
        }
    }

    /// The migrations of this dialect, embedded at build time.
    fn migrator(self) -> Migrator {
        match self {
            Dialect::Postgres => sqlx::migrate!("migrations/postgres"),
            Dialect::MySql => sqlx::migrate!("migrations/mysql"),
        }
    }

    /// `sql` with `?` placeholders made `$1`, `$2`... for PostgreSQL.
    fn placeholders(self, sql: &str) -> String {
        if self == Dialect::MySql {
            return sql.to_owned();
        }
        let mut out = String::with_capacity(sql.len() + 8);
        let mut n = 0;
        for c in sql.chars() {
            if c == '?' {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
            } else {
                out.push(c);
            }
        }
        out
    }

    /// An insert of `columns` into `table` that replaces the non-key
    /// columns when the key (`key` columns) is taken.
    fn upsert(self, table: &str, key: &[&str], columns: &[&str]) -> String {
        let marks = vec!["?"; columns.len()].join(", ");
        let insert = format!(
            "INSERT INTO {table} ({}) VALUES ({marks})",
            columns.join(", ")
        );
        let rest: Vec<&&str> = columns.iter().filter(|c| !key.contains(c)).collect();
        let sql = match self {
            Dialect::Postgres => {
                let set: Vec<String> = rest.iter().map(|c| format!("{c} = EXCLUDED.{c}")).collect();
                format!(
                    "{insert} ON CONFLICT ({}) DO UPDATE SET {}",
                    key.join(", "),
                    set.join(", ")
                )
            }
            Dialect::MySql => {
                let set: Vec<String> = rest.iter().map(|c| format!("{c} = VALUES({c})")).collect();
                format!("{insert} ON DUPLICATE KEY UPDATE {}", set.join(", "))
            }
        };
        self.placeholders(&sql)
    }
}

/// Every statement the store runs, in its dialect. Built once from the
/// constants below (table and column names, placeholders), never from
/// data: every value is bound. That is the audit sqlx asks for before it
/// takes a string that is not a literal (`AssertSqlSafe`).
struct Queries {
    insert_image: String,
    get_image: String,
    list_images: String,
    update_image: String,
    delete_image: String,
    members: String,
    put_member: String,
    delete_member: String,
    memberships: String,
    nodes: String,
    put_node: String,
    delete_node: String,
    keys: String,
    put_key: String,
    delete_key: String,
    insert_doc: String,
    get_doc: String,
    list_docs: String,
    update_doc: String,
    delete_doc: String,
}

impl Queries {
    fn new(d: Dialect) -> Queries {
        let p = |sql: &str| d.placeholders(sql);
        Queries {
            insert_image: p("INSERT INTO images (id, owner, version, record) VALUES (?, ?, ?, ?)"),
            get_image: p("SELECT version, record FROM images WHERE id = ?"),
            list_images: p("SELECT id, record FROM images ORDER BY id"),
            update_image: p(
                "UPDATE images SET owner = ?, version = version + 1, record = ? \
                 WHERE id = ? AND version = ?",
            ),
            delete_image: p("DELETE FROM images WHERE id = ?"),
            members: p("SELECT record FROM image_members WHERE image_id = ? ORDER BY member_id"),
            put_member: d.upsert(
                "image_members",
                &["image_id", "member_id"],
                &["image_id", "member_id", "record"],
            ),
            delete_member: p("DELETE FROM image_members WHERE image_id = ? AND member_id = ?"),
            memberships: p("SELECT image_id, record FROM image_members WHERE member_id = ?"),
            nodes: p("SELECT name, record FROM stream_nodes ORDER BY name"),
            put_node: d.upsert("stream_nodes", &["name"], &["name", "record"]),
            delete_node: p("DELETE FROM stream_nodes WHERE name = ?"),
            keys: p("SELECT id, record FROM signing_keys ORDER BY id"),
            put_key: d.upsert("signing_keys", &["id"], &["id", "record"]),
            delete_key: p("DELETE FROM signing_keys WHERE id = ?"),
            insert_doc: p("INSERT INTO documents (kind, id, version, record) VALUES (?, ?, ?, ?)"),
            get_doc: p("SELECT version, record FROM documents WHERE kind = ? AND id = ?"),
            list_docs: p("SELECT id, record FROM documents WHERE kind = ? ORDER BY id"),
            update_doc: p(
                "UPDATE documents SET id = ?, version = version + 1, record = ? \
                 WHERE kind = ? AND id = ? AND version = ?",
            ),
            delete_doc: p("DELETE FROM documents WHERE kind = ? AND id = ?"),
        }
    }
}

/// A database URL with its password hidden, for logs and errors.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("****"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "(not a URL)".to_owned(),
    }
}

/// A sqlx error as a metadata error.
fn sql_err(e: sqlx::Error) -> MetadataError {
    MetadataError::Db(e.to_string())
}

fn install_drivers() {
    static ONCE: Once = Once::new();
    ONCE.call_once(sqlx::any::install_default_drivers);
}

/// The SQL store: a connection pool and the runtime that drives it.
pub struct SqlStore {
    /// Drives the pool's connections; `None` only while dropping.
    runtime: Option<tokio::runtime::Runtime>,
    pool: AnyPool,
    dialect: Dialect,
    q: Queries,
}

impl Drop for SqlStore {
    fn drop(&mut self) {
        // Dropping a runtime waits for its threads, which an async thread
        // may not do: let them wind down on their own.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// A runtime for one store's queries (two threads: the work is waiting).
fn runtime() -> Result<tokio::runtime::Runtime, MetadataError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("glance-sql")
        .enable_all()
        .build()
        .map_err(|e| MetadataError::Db(format!("cannot start the SQL runtime: {e}")))
}

/// Runs `fut` on `runtime` and waits for it on this thread (any thread:
/// the wait is a channel's, not a runtime's).
fn wait<T: Send + 'static>(
    runtime: &tokio::runtime::Runtime,
    fut: impl Future<Output = Result<T, sqlx::Error>> + Send + 'static,
) -> Result<T, MetadataError> {
    wait_up_to(runtime, CALL_TIMEOUT, fut)
}

/// [`wait`], giving up after `limit` (the query is dropped, which closes
/// its connection).
fn wait_up_to<T: Send + 'static>(
    runtime: &tokio::runtime::Runtime,
    limit: Duration,
    fut: impl Future<Output = Result<T, sqlx::Error>> + Send + 'static,
) -> Result<T, MetadataError> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    runtime.spawn(async move {
        let _ = tx.send(tokio::time::timeout(limit, fut).await);
    });
    match rx.recv() {
        Ok(Ok(r)) => r.map_err(sql_err),
        Ok(Err(_)) => Err(MetadataError::Db(format!(
            "the database did not answer within {} s",
            limit.as_secs()
        ))),
        Err(_) => Err(MetadataError::Db("the SQL task stopped".into())),
    }
}

impl SqlStore {
    /// Connects to the database at `url` (a pool of up to
    /// `max_connections`) and checks that its schema is the one this build
    /// knows: every migration applied (else `db sync` is needed), none
    /// unknown (else glance-api is older than the database).
    pub fn open(url: &str, max_connections: u32) -> Result<SqlStore, MetadataError> {
        install_drivers();
        let (dialect, url) = Dialect::of(url)?;
        let runtime = runtime()?;
        let options: AnyConnectOptions = url
            .parse()
            .map_err(|e| MetadataError::Db(format!("metadata url {}: {e}", redact(&url))))?;
        let pool = wait(&runtime, async move {
            AnyPoolOptions::new()
                .max_connections(max_connections.max(1))
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_with(options)
                .await
        })
        .map_err(|e| MetadataError::Db(format!("cannot connect to {}: {e}", redact(&url))))?;
        let store = SqlStore {
            runtime: Some(runtime),
            pool,
            dialect,
            q: Queries::new(dialect),
        };
        store.check_schema()?;
        Ok(store)
    }

    /// Which database this is.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    fn run<T: Send + 'static>(
        &self,
        fut: impl Future<Output = Result<T, sqlx::Error>> + Send + 'static,
    ) -> Result<T, MetadataError> {
        match &self.runtime {
            Some(rt) => wait(rt, fut),
            None => Err(MetadataError::Db("the SQL store is closed".into())),
        }
    }

    /// Compares the migrations applied to the database with this build's.
    fn check_schema(&self) -> Result<(), MetadataError> {
        let pool = self.pool.clone();
        let applied = self.run(async move {
            let rows = sqlx::query(
                "SELECT version, CASE WHEN success THEN 1 ELSE 0 END AS ok FROM _sqlx_migrations",
            )
            .fetch_all(&pool)
            .await;
            let rows = match rows {
                Ok(rows) => rows,
                // No such table: PostgreSQL's SQLSTATE, MariaDB's.
                Err(sqlx::Error::Database(e))
                    if matches!(e.code().as_deref(), Some("42P01" | "42S02" | "1146")) =>
                {
                    return Ok(None);
                }
                Err(e) => return Err(e),
            };
            rows.iter()
                .map(|r| Ok((r.try_get::<i64, _>(0)?, r.try_get::<i64, _>(1)? == 1)))
                .collect::<Result<Vec<(i64, bool)>, sqlx::Error>>()
                .map(Some)
        })?;
        let Some(applied) = applied else {
            return Err(MetadataError::NotMigrated("it has no tables yet".into()));
        };
        schema_state(&self.dialect.migrator(), &applied)
    }

    /// One image's row: its version and record.
    fn versioned(&self, id: &Uuid) -> Result<Option<(i64, String)>, MetadataError> {
        let (pool, sql, id) = (self.pool.clone(), self.q.get_image.clone(), id.to_string());
        self.run(async move {
            let row = sqlx::query(AssertSqlSafe(sql))
                .bind(id)
                .fetch_optional(&pool)
                .await?;
            row.map(|r| Ok((r.try_get::<i64, _>(0)?, r.try_get::<String, _>(1)?)))
                .transpose()
        })
    }

    /// One document's row: its version and record.
    fn versioned_doc(
        &self,
        kind: DocKind,
        key: &str,
    ) -> Result<Option<(i64, String)>, MetadataError> {
        let (pool, sql) = (self.pool.clone(), self.q.get_doc.clone());
        let (kind, key) = (kind.as_str().to_owned(), key.to_owned());
        self.run(async move {
            let row = sqlx::query(AssertSqlSafe(sql))
                .bind(kind)
                .bind(key)
                .fetch_optional(&pool)
                .await?;
            row.map(|r| Ok((r.try_get::<i64, _>(0)?, r.try_get::<String, _>(1)?)))
                .transpose()
        })
    }

    /// Runs one writing statement binding `args`: the rows it changed,
    /// or the constraint it broke.
    fn write(&self, sql: &str, args: Vec<Arg>) -> Result<Written, MetadataError> {
        let (pool, sql) = (self.pool.clone(), sql.to_owned());
        self.run(async move {
            match bind_all(sqlx::query(AssertSqlSafe(sql)), args)
                .execute(&pool)
                .await
            {
                Ok(done) => Ok(Written::Rows(done.rows_affected())),
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(Written::Duplicate),
                Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => {
                    Ok(Written::NoParent)
                }
                Err(e) => Err(e),
            }
        })
    }

    /// [`SqlStore::write`] of a statement that breaks no constraint here
    /// (a delete, an upsert): the rows it changed.
    fn rows(&self, sql: &str, args: Vec<Arg>) -> Result<u64, MetadataError> {
        match self.write(sql, args)? {
            Written::Rows(n) => Ok(n),
            other => Err(MetadataError::Db(format!("unexpected {other:?}"))),
        }
    }

    /// Every `(key, record)` a two-column query returns.
    fn pairs(
        &self,
        sql: &str,
        arg: Option<String>,
    ) -> Result<Vec<(String, String)>, MetadataError> {
        let (pool, sql) = (self.pool.clone(), sql.to_owned());
        self.run(async move {
            let mut query = sqlx::query(AssertSqlSafe(sql));
            if let Some(a) = arg {
                query = query.bind(a);
            }
            query
                .fetch_all(&pool)
                .await?
                .iter()
                .map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<String, _>(1)?)))
                .collect()
        })
    }

    fn named_all<T: serde::de::DeserializeOwned>(
        &self,
        sql: &str,
    ) -> Result<Vec<T>, MetadataError> {
        self.pairs(sql, None)?
            .into_iter()
            .map(|(key, record)| {
                serde_json::from_str(&record).map_err(|e| MetadataError::Corrupt {
                    id: key,
                    message: e.to_string(),
                })
            })
            .collect()
    }

    fn named_put<T: serde::Serialize>(
        &self,
        sql: &str,
        key: &str,
        value: &T,
    ) -> Result<(), MetadataError> {
        self.rows(sql, vec![Arg::Text(key.to_owned()), json(value)?])
            .map(|_| ())
    }

    /// Copies everything of another store into this one, in one
    /// transaction: all of it lands or none. Refused when this database
    /// already holds images (checked inside the transaction).
    pub fn import(&self, from: &dyn MetadataStore) -> Result<ImportCounts, MetadataError> {
        let images = from.list()?;
        let mut members = Vec::new();
        for image in &images {
            members.extend(from.members(&image.id)?);
        }
        let nodes = from.stream_nodes()?;
        let keys = from.key_records()?;
        let mut docs = Vec::new();
        for kind in DocKind::ALL {
            docs.extend(from.doc_list(kind)?.into_iter().map(|(k, d)| (kind, k, d)));
        }
        let counts = ImportCounts {
            images: images.len(),
            members: members.len(),
            stream_nodes: nodes.len(),
            signing_keys: keys.len(),
            documents: docs.len(),
        };
        let mut rows: Vec<(String, Vec<Arg>)> = Vec::new();
        for image in &images {
            rows.push((
                self.q.insert_image.clone(),
                vec![
                    Arg::Text(image.id.to_string()),
                    Arg::Optional(image.owner.clone()),
                    Arg::Int(first_version()?),
                    json(image)?,
                ],
            ));
        }
        for m in &members {
            let args = vec![
                Arg::Text(m.image_id.to_string()),
                Arg::Text(m.member_id.clone()),
                json(m)?,
            ];
            rows.push((self.q.put_member.clone(), args));
        }
        for n in &nodes {
            rows.push((
                self.q.put_node.clone(),
                vec![Arg::Text(n.name.clone()), json(n)?],
            ));
        }
        for k in &keys {
            rows.push((
                self.q.put_key.clone(),
                vec![Arg::Text(k.id.clone()), json(k)?],
            ));
        }
        for (kind, key, doc) in &docs {
            rows.push((
                self.q.insert_doc.clone(),
                vec![
                    Arg::Text(kind.as_str().to_owned()),
                    Arg::Text(key.clone()),
                    Arg::Int(first_version()?),
                    json(doc)?,
                ],
            ));
        }
        let pool = self.pool.clone();
        let landed = self.run(async move {
            let mut tx = pool.begin().await?;
            let held: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM images")
                .fetch_one(&mut *tx)
                .await?;
            if held > 0 {
                tx.rollback().await?;
                return Ok(false);
            }
            for (sql, args) in rows {
                bind_all(sqlx::query(AssertSqlSafe(sql)), args)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(true)
        })?;
        if !landed {
            return Err(MetadataError::Refused(
                "the target database already holds images: migrate into an empty one".into(),
            ));
        }
        Ok(counts)
    }
}

/// The version a new image row starts at: random, so that an update
/// computed from a deleted image never lands on a new image created under
/// the same id (both would otherwise start at 0). Positive, with room to
/// count up.
fn first_version() -> Result<i64, MetadataError> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| MetadataError::Db(format!("no randomness: {e}")))?;
    Ok(i64::from_le_bytes(bytes) & 0x3fff_ffff_ffff_ffff)
}

/// A value bound to a statement.
enum Arg {
    Text(String),
    Optional(Option<String>),
    Int(i64),
}

/// Binds `args` to `query`, in order.
fn bind_all(
    mut query: sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments>,
    args: Vec<Arg>,
) -> sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments> {
    for a in args {
        query = match a {
            Arg::Text(t) => query.bind(t),
            Arg::Optional(t) => query.bind(t),
            Arg::Int(i) => query.bind(i),
        };
    }
    query
}

/// What a writing statement did.
#[derive(Debug)]
enum Written {
    /// It changed this many rows.
    Rows(u64),
    /// It would have repeated a unique key.
    Duplicate,
    /// It named a row (an image) that is not there.
    NoParent,
}

/// A record as a JSON text argument.
fn json<T: serde::Serialize>(record: &T) -> Result<Arg, MetadataError> {
    serde_json::to_string(record)
        .map(Arg::Text)
        .map_err(super::db_err)
}

/// What [`SqlStore::import`] copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportCounts {
    /// Image records.
    pub images: usize,
    /// Memberships.
    pub members: usize,
    /// Registered stream nodes.
    pub stream_nodes: usize,
    /// Signing key records.
    pub signing_keys: usize,
    /// Documents: tasks and metadata definitions.
    pub documents: usize,
}

/// Whether the applied migrations (`(version, succeeded)`) are exactly
/// this build's.
fn schema_state(migrator: &Migrator, applied: &[(i64, bool)]) -> Result<(), MetadataError> {
    let known: Vec<i64> = migrator.iter().map(|m| m.version).collect();
    if let Some((v, _)) = applied.iter().find(|(v, _)| !known.contains(v)) {
        return Err(MetadataError::NewerDatabase(*v));
    }
    if let Some((v, _)) = applied.iter().find(|(_, ok)| !ok) {
        return Err(MetadataError::NotMigrated(format!(
            "migration {v} failed half-way; repair the database by hand"
        )));
    }
    for m in migrator.iter() {
        if !applied.iter().any(|(v, _)| *v == m.version) {
            return Err(MetadataError::NotMigrated(format!(
                "migration {} ({}) is not applied",
                m.version, m.description
            )));
        }
    }
    Ok(())
}

/// Applies this build's migrations to the database at `url` (what
/// `glance-api db sync` runs): none when it is current. Safe to run from
/// several replicas at once: each takes a database lock first. Returns the
/// versions it applied.
pub fn sync(url: &str) -> Result<Vec<i64>, MetadataError> {
    install_drivers();
    let (dialect, url) = Dialect::of(url)?;
    let runtime = runtime()?;
    let shown = redact(&url);
    // It may wait for another replica's sync (the lock), then migrate.
    let limit = Duration::from_secs(u64::from(SYNC_LOCK_SECS) * 2);
    let result = wait_up_to(&runtime, limit, async move {
        let mut conn = AnyConnection::connect(&url).await?;
        let mut migrator = dialect.migrator();
        // sqlx's own lock on MariaDB asks GET_LOCK for no timeout, which
        // MariaDB answers without taking the lock: take it here instead.
        // The lock is the server's: named for this database, so syncs of
        // other databases on the server do not wait for it.
        let lock = "CONCAT('glance_api_db_sync.', DATABASE())";
        if dialect == Dialect::MySql {
            let take = format!("SELECT GET_LOCK({lock}, {SYNC_LOCK_SECS})");
            let got: Option<i64> = sqlx::query_scalar(AssertSqlSafe(take))
                .fetch_one(&mut conn)
                .await?;
            if got != Some(1) {
                return Err(sqlx::Error::Protocol(format!(
                    "another db sync held the lock for {SYNC_LOCK_SECS} s"
                )));
            }
            migrator.set_locking(false);
        }
        let table = migrator.table_name.clone();
        let before: Vec<i64> = conn
            .list_applied_migrations(&table)
            .await
            .map(|v| v.iter().map(|m| m.version).collect())
            .unwrap_or_default();
        // `run_direct`: `run(&mut conn)` does not type-check inside a
        // spawned task (sqlx's `Acquire` is "not general enough").
        let run = migrator.run_direct(None, &mut conn, false).await;
        if dialect == Dialect::MySql {
            let _ = sqlx::query(AssertSqlSafe(format!("SELECT RELEASE_LOCK({lock})")))
                .execute(&mut conn)
                .await;
        }
        run.map_err(|e| sqlx::Error::Migrate(Box::new(e)))?;
        let _ = conn.close().await;
        Ok(migrator
            .iter()
            .map(|m| m.version)
            .filter(|v| !before.contains(v))
            .collect())
    });
    runtime.shutdown_background();
    result.map_err(|e| match e {
        MetadataError::Db(message) => MetadataError::Db(format!("db sync of {shown}: {message}")),
        other => other,
    })
}

impl MetadataStore for SqlStore {
    fn create(&self, image: &Image) -> Result<(), MetadataError> {
        let args = vec![
            Arg::Text(image.id.to_string()),
            Arg::Optional(image.owner.clone()),
            Arg::Int(first_version()?),
            json(image)?,
        ];
        match self.write(&self.q.insert_image, args)? {
            Written::Duplicate => Err(MetadataError::Exists(image.id)),
            _ => Ok(()),
        }
    }

    fn get(&self, id: &Uuid) -> Result<Option<Image>, MetadataError> {
        self.versioned(id)?
            .map(|(_, record)| decode(*id, record.as_bytes()))
            .transpose()
    }

    fn list(&self) -> Result<Vec<Image>, MetadataError> {
        self.pairs(&self.q.list_images, None)?
            .into_iter()
            .map(|(id, record)| {
                let id = Uuid::parse_str(&id).map_err(|e| MetadataError::Corrupt {
                    id: id.clone(),
                    message: e.to_string(),
                })?;
                decode(id, record.as_bytes())
            })
            .collect()
    }

    fn update(
        &self,
        id: &Uuid,
        change: &mut dyn FnMut(&mut Image) -> Result<(), String>,
    ) -> Result<Image, MetadataError> {
        for attempt in 0..UPDATE_ATTEMPTS {
            let Some((version, record)) = self.versioned(id)? else {
                return Err(MetadataError::NotFound(*id));
            };
            let mut image = decode(*id, record.as_bytes())?;
            change(&mut image).map_err(MetadataError::Refused)?;
            let args = vec![
                Arg::Optional(image.owner.clone()),
                json(&image)?,
                Arg::Text(id.to_string()),
                Arg::Int(version),
            ];
            if self.rows(&self.q.update_image, args)? == 1 {
                return Ok(image);
            }
            // Another replica wrote first: read its version and apply the
            // change to that, after a pause that grows with the contention.
            std::thread::sleep(Duration::from_millis(u64::from(attempt.min(20)) + 1));
        }
        Err(MetadataError::Db(format!(
            "image {id}: {UPDATE_ATTEMPTS} concurrent writers won in a row; try again"
        )))
    }

    fn delete(&self, id: &Uuid) -> Result<bool, MetadataError> {
        // Its members go with it (ON DELETE CASCADE).
        Ok(self.rows(&self.q.delete_image, vec![Arg::Text(id.to_string())])? > 0)
    }

    fn members(&self, image: &Uuid) -> Result<Vec<Member>, MetadataError> {
        let (pool, sql, id) = (self.pool.clone(), self.q.members.clone(), image.to_string());
        let records = self.run(async move {
            sqlx::query(AssertSqlSafe(sql))
                .bind(id)
                .fetch_all(&pool)
                .await?
                .iter()
                .map(|r| r.try_get::<String, _>(0))
                .collect::<Result<Vec<String>, _>>()
        })?;
        records
            .iter()
            .map(|r| decode_member(*image, r.as_bytes()))
            .collect()
    }

    fn put_member(&self, member: &Member) -> Result<(), MetadataError> {
        let args = vec![
            Arg::Text(member.image_id.to_string()),
            Arg::Text(member.member_id.clone()),
            json(member)?,
        ];
        match self.write(&self.q.put_member, args)? {
            // The image was deleted meanwhile.
            Written::NoParent => Err(MetadataError::NotFound(member.image_id)),
            _ => Ok(()),
        }
    }

    fn delete_member(&self, image: &Uuid, member: &str) -> Result<bool, MetadataError> {
        let args = vec![Arg::Text(image.to_string()), Arg::Text(member.to_owned())];
        Ok(self.rows(&self.q.delete_member, args)? > 0)
    }

    fn memberships(&self, project: &str) -> Result<HashMap<Uuid, MemberStatus>, MetadataError> {
        let mut out = HashMap::new();
        for (image, record) in self.pairs(&self.q.memberships, Some(project.to_owned()))? {
            let id = Uuid::parse_str(&image).map_err(|e| MetadataError::Corrupt {
                id: image.clone(),
                message: e.to_string(),
            })?;
            out.insert(id, decode_member(id, record.as_bytes())?.status);
        }
        Ok(out)
    }

    fn stream_nodes(&self) -> Result<Vec<StreamNode>, MetadataError> {
        self.named_all(&self.q.nodes)
    }

    fn put_stream_node(&self, node: &StreamNode) -> Result<(), MetadataError> {
        self.named_put(&self.q.put_node, &node.name, node)
    }

    fn delete_stream_node(&self, name: &str) -> Result<bool, MetadataError> {
        Ok(self.rows(&self.q.delete_node, vec![Arg::Text(name.to_owned())])? > 0)
    }

    fn key_records(&self) -> Result<Vec<KeyRecord>, MetadataError> {
        self.named_all(&self.q.keys)
    }

    fn put_key_record(&self, record: &KeyRecord) -> Result<(), MetadataError> {
        self.named_put(&self.q.put_key, &record.id, record)
    }

    fn delete_key_record(&self, id: &str) -> Result<bool, MetadataError> {
        Ok(self.rows(&self.q.delete_key, vec![Arg::Text(id.to_owned())])? > 0)
    }

    fn doc_create(
        &self,
        kind: DocKind,
        key: &str,
        doc: &serde_json::Value,
    ) -> Result<(), MetadataError> {
        let args = vec![
            Arg::Text(kind.as_str().to_owned()),
            Arg::Text(key.to_owned()),
            Arg::Int(first_version()?),
            json(doc)?,
        ];
        match self.write(&self.q.insert_doc, args)? {
            Written::Duplicate => Err(MetadataError::DocExists(kind, key.to_owned())),
            _ => Ok(()),
        }
    }

    fn doc_get(
        &self,
        kind: DocKind,
        key: &str,
    ) -> Result<Option<serde_json::Value>, MetadataError> {
        self.versioned_doc(kind, key)?
            .map(|(_, record)| decode_doc(kind, key, record.as_bytes()))
            .transpose()
    }

    fn doc_list(&self, kind: DocKind) -> Result<Vec<(String, serde_json::Value)>, MetadataError> {
        self.pairs(&self.q.list_docs, Some(kind.as_str().to_owned()))?
            .into_iter()
            .map(|(key, record)| {
                let doc = decode_doc(kind, &key, record.as_bytes())?;
                Ok((key, doc))
            })
            .collect()
    }

    fn doc_update(
        &self,
        kind: DocKind,
        key: &str,
        rename: Option<&str>,
        change: &mut dyn FnMut(&mut serde_json::Value) -> Result<(), String>,
    ) -> Result<serde_json::Value, MetadataError> {
        let target = rename.unwrap_or(key);
        for attempt in 0..UPDATE_ATTEMPTS {
            let Some((version, record)) = self.versioned_doc(kind, key)? else {
                return Err(MetadataError::DocNotFound(kind, key.to_owned()));
            };
            let mut doc = decode_doc(kind, key, record.as_bytes())?;
            change(&mut doc).map_err(MetadataError::Refused)?;
            let args = vec![
                Arg::Text(target.to_owned()),
                json(&doc)?,
                Arg::Text(kind.as_str().to_owned()),
                Arg::Text(key.to_owned()),
                Arg::Int(version),
            ];
            match self.write(&self.q.update_doc, args)? {
                Written::Rows(1) => return Ok(doc),
                Written::Duplicate => {
                    return Err(MetadataError::DocExists(kind, target.to_owned()));
                }
                _ => {}
            }
            // Another replica wrote first (see `update`).
            std::thread::sleep(Duration::from_millis(u64::from(attempt.min(20)) + 1));
        }
        Err(MetadataError::Db(format!(
            "{} {key}: {UPDATE_ATTEMPTS} concurrent writers won in a row; try again",
            kind.noun()
        )))
    }

    fn doc_delete(&self, kind: DocKind, key: &str) -> Result<bool, MetadataError> {
        let args = vec![
            Arg::Text(kind.as_str().to_owned()),
            Arg::Text(key.to_owned()),
        ];
        Ok(self.rows(&self.q.delete_doc, args)? > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_placeholders_are_numbered() {
        let sql = Dialect::Postgres.placeholders("UPDATE t SET a = ? WHERE b = ? AND c = ?");
        assert_eq!(sql, "UPDATE t SET a = $1 WHERE b = $2 AND c = $3");
        let same = Dialect::MySql.placeholders("SELECT ? FROM t");
        assert_eq!(same, "SELECT ? FROM t");
    }

    #[test]
    fn upserts_replace_only_the_non_key_columns() {
        let pg = Dialect::Postgres.upsert("m", &["a", "b"], &["a", "b", "r"]);
        assert_eq!(
            pg,
            "INSERT INTO m (a, b, r) VALUES ($1, $2, $3) ON CONFLICT (a, b) DO UPDATE SET r = EXCLUDED.r"
        );
        let my = Dialect::MySql.upsert("m", &["a"], &["a", "r"]);
        assert_eq!(
            my,
            "INSERT INTO m (a, r) VALUES (?, ?) ON DUPLICATE KEY UPDATE r = VALUES(r)"
        );
    }

    #[test]
    fn urls_pick_the_dialect_and_hide_the_password() {
        let (d, url) = Dialect::of("mariadb://u:secret@127.0.0.1:3306/g").unwrap();
        assert_eq!(d, Dialect::MySql);
        assert_eq!(url, "mysql://u:secret@127.0.0.1:3306/g");
        assert_eq!(
            Dialect::of("postgresql://h/g").unwrap().0,
            Dialect::Postgres
        );
        let err = Dialect::of("oracle://u:secret@h/g")
            .unwrap_err()
            .to_string();
        assert!(err.contains("oracle") && !err.contains("secret"), "{err}");
        assert_eq!(
            redact("postgres://u:secret@h:5432/g"),
            "postgres://u:****@h:5432/g"
        );
        assert!(!redact("not a url secret").contains("secret"));
    }

    #[test]
    fn the_schema_check_names_what_is_missing_or_unknown() {
        let migrator = Dialect::Postgres.migrator();
        let all: Vec<(i64, bool)> = migrator.iter().map(|m| (m.version, true)).collect();
        let first = all[0].0;
        assert!(schema_state(&migrator, &all).is_ok());
        let missing = schema_state(&migrator, &[]).unwrap_err().to_string();
        assert!(missing.contains("db sync"), "{missing}");
        // A database one migration behind (the documents table) needs a sync.
        let behind = schema_state(&migrator, &all[..1]).unwrap_err().to_string();
        assert!(
            behind.contains("is not applied") && behind.contains("db sync"),
            "{behind}"
        );
        let newer = schema_state(&migrator, &[(first, true), (99_999_999, true)])
            .unwrap_err()
            .to_string();
        assert!(newer.contains("upgrade glance-api"), "{newer}");
        let dirty = schema_state(&migrator, &[(first, false)])
            .unwrap_err()
            .to_string();
        assert!(dirty.contains("half-way"), "{dirty}");
    }
}
