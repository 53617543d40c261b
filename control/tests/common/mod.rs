//! What several of glance-api's test files share: the metadata backend a
//! test runs on, and throw-away SQL databases.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead as _, BufReader, Read as _};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use glance_api::config::{RawMetadata, RawSqlMetadata};

/// A SQL server the tests can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    /// PostgreSQL (`GLANCE_TEST_POSTGRES_URL`).
    Postgres,
    /// MariaDB (`GLANCE_TEST_MARIADB_URL`).
    Mariadb,
}

impl Server {
    /// Both, for tests that run on each.
    pub const ALL: [Server; 2] = [Server::Postgres, Server::Mariadb];

    fn admin_url(self) -> String {
        let var = match self {
            Server::Postgres => "GLANCE_TEST_POSTGRES_URL",
            Server::Mariadb => "GLANCE_TEST_MARIADB_URL",
        };
        std::env::var(var).unwrap_or_else(|_| {
            panic!("{var} is not set: start the servers with `scripts/sql.sh start DIR`")
        })
    }

    /// A new, empty database on this server, made for one test: its URL.
    pub fn fresh_database(self) -> String {
        let admin = self.admin_url();
        let name = format!("glance_{}", uuid::Uuid::new_v4().simple());
        let create = format!("CREATE DATABASE {name}");
        let url = admin.clone();
        // sqlx is async and the caller may be inside a runtime: a thread
        // with a runtime of its own runs the statement.
        std::thread::spawn(move || {
            sqlx::any::install_default_drivers();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                use sqlx::Connection as _;
                let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
                // The name is made here, of hex digits only.
                sqlx::query(sqlx::AssertSqlSafe(create))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                conn.close().await.unwrap();
            });
        })
        .join()
        .unwrap();
        let mut url = url::Url::parse(&admin).unwrap();
        url.set_path(&name);
        url.to_string()
    }

    /// A fresh database with glance-api's tables.
    pub fn synced_database(self) -> String {
        let url = self.fresh_database();
        glance_api::metadata::sync(&url).unwrap();
        url
    }
}

/// The metadata backend the API tests run on: `GLANCE_TEST_METADATA` =
/// `postgres` or `mariadb` (a fresh database each time), else the redb file.
pub fn metadata_for_test() -> RawMetadata {
    let server = match std::env::var("GLANCE_TEST_METADATA").as_deref() {
        Ok("postgres") => Server::Postgres,
        Ok("mariadb") => Server::Mariadb,
        Ok("redb") | Err(_) => return "glance.redb".into(),
        Ok(other) => panic!("GLANCE_TEST_METADATA={other}: postgres, mariadb or redb"),
    };
    RawMetadata::Sql(RawSqlMetadata {
        url: server.synced_database(),
        max_connections: 8,
    })
}

/// A glance-api process (killed by its pid when dropped) and its log.
pub struct Api {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: Arc<Mutex<String>>,
}

impl Drop for Api {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Api {
    pub fn logged(&self, text: &str) -> usize {
        self.log.lock().unwrap().matches(text).count()
    }

    pub fn hup(&self) {
        let ok = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }

    /// Waits until the log has said `text` `times` times.
    pub fn wait_for(&self, text: &str, times: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.logged(text) < times {
            assert!(Instant::now() < deadline, "never logged {text:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Starts glance-api on `config`; `Err` holds its log when it exits
/// instead of listening.
pub fn start(config: &Path) -> Result<Api, String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_glance-api"))
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let mut stderr = child.stderr.take().unwrap();
    let sink = Arc::clone(&log);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let Some(addr) = line.strip_prefix("glance-api listening on ") else {
        let _ = child.wait();
        std::thread::sleep(Duration::from_millis(100));
        let text = log.lock().unwrap().clone();
        return Err(text);
    };
    let addr = addr.trim().parse().unwrap();
    Ok(Api { child, addr, log })
}
