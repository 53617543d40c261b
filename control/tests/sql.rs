//! glance-api on PostgreSQL and MariaDB: real servers (`scripts/sql.sh`),
//! several glance-api processes on one database, and what must hold
//! between them: each sees the others' writes, concurrent PATCHes all
//! land, of two uploads to one image exactly one wins, an image id is
//! taken once. Also `db sync` and `db migrate` as an operator runs them.
//!
//! The servers are started by `scripts/test-all.sh` (their URLs in
//! `GLANCE_TEST_POSTGRES_URL` and `GLANCE_TEST_MARIADB_URL`), so these
//! tests are ignored by a plain `cargo test`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use common::{Api, Server, start};
use glance_api::metadata::{DocKind, MetadataError, MetadataStore as _, RedbStore, SqlStore};
use glance_api::model::{Image, KeyRecord, Member, MemberStatus, StreamNode};
use md5::Digest as _;
use serde_json::{Value, json};

const ADMIN: &str = "sql-admin-token-0123456789abcdef";
const MEMBER: &str = "sql-member-token-0123456789abcdef";
const KEYRING: &str =
    "primary = \"k1\"\n[keys]\nk1 = \"AUpHxry2pHEpkVJGCYLJ-TpiLWITLVzhgiWlW1sGUv8\"\n";
const PATCH: &str = "application/openstack-images-v2.1-json-patch";

/// Writes a glance-api config on the database at `url`, with its own
/// directory (keyring, file store) under `dir`.
fn write_config(dir: &Path, url: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    glance_link::write_private_file(&dir.join("keyring.toml"), KEYRING, "tmp").unwrap();
    let config = format!(
        "listen = \"127.0.0.1:0\"\npublic_url = \"http://api.test:9292\"\n\
         keyring = \"keyring.toml\"\n\
         [metadata]\nurl = \"{url}\"\nmax_connections = 8\n\
         [store]\nid = \"local\"\nkind = \"file\"\npath = \"../images\"\n\
         [auth]\nmode = \"static\"\n\
         [[auth.tokens]]\ntoken = \"{ADMIN}\"\nuser_id = \"root\"\nproject_id = \"ops\"\n\
         roles = [\"admin\", \"member\", \"reader\"]\n\
         [[auth.tokens]]\ntoken = \"{MEMBER}\"\nuser_id = \"alice\"\nproject_id = \"proj-a\"\n\
         roles = [\"member\", \"reader\"]\n"
    );
    let path = dir.join("glance-api.toml");
    std::fs::write(&path, config).unwrap();
    path
}

/// Two glance-api processes on one fresh database of `server`.
fn replicas(server: Server) -> (tempfile::TempDir, Api, Api) {
    let url = server.synced_database();
    let dir = tempfile::tempdir().unwrap();
    let a = start(&write_config(&dir.path().join("a"), &url)).unwrap();
    let b = start(&write_config(&dir.path().join("b"), &url)).unwrap();
    (dir, a, b)
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn url(api: &Api, path: &str) -> String {
    format!("http://{}{path}", api.addr)
}

fn create(api: &Api, body: Value) -> Value {
    let r = client()
        .post(url(api, "/v2/images"))
        .header("X-Auth-Token", MEMBER)
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
    r.json().unwrap()
}

fn show(api: &Api, id: &str) -> (u16, Value) {
    let r = client()
        .get(url(api, &format!("/v2/images/{id}")))
        .header("X-Auth-Token", MEMBER)
        .send()
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

fn patch(api: &Api, id: &str, ops: Value) -> u16 {
    client()
        .patch(url(api, &format!("/v2/images/{id}")))
        .header("X-Auth-Token", MEMBER)
        .header("Content-Type", PATCH)
        .body(ops.to_string())
        .send()
        .unwrap()
        .status()
        .as_u16()
}

#[test]
#[ignore = "needs PostgreSQL and MariaDB: run by scripts/test-all.sh"]
fn replicas_on_one_database_see_each_others_writes() {
    for server in Server::ALL {
        let (_dir, a, b) = replicas(server);
        let img = create(
            &a,
            json!({"name": "shared", "disk_format": "raw", "container_format": "bare"}),
        );
        let id = img["id"].as_str().unwrap();
        let (status, seen) = show(&b, id);
        assert_eq!(status, 200, "{server:?}");
        assert_eq!(seen["name"], "shared", "{server:?}");
        assert_eq!(
            patch(
                &b,
                id,
                json!([{"op": "replace", "path": "/name", "value": "renamed"}])
            ),
            200
        );
        assert_eq!(show(&a, id).1["name"], "renamed", "{server:?}");
        let listed: Value = client()
            .get(url(&a, "/v2/images"))
            .header("X-Auth-Token", MEMBER)
            .send()
            .unwrap()
            .json()
            .unwrap();
        let ids: Vec<&str> = listed["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, [id], "{server:?}");
        let deleted = client()
            .delete(url(&b, &format!("/v2/images/{id}")))
            .header("X-Auth-Token", MEMBER)
            .send()
            .unwrap();
        assert_eq!(deleted.status(), 204);
        assert_eq!(show(&a, id).0, 404, "{server:?}");
    }
}

#[test]
#[ignore = "needs PostgreSQL and MariaDB: run by scripts/test-all.sh"]
fn concurrent_patches_through_two_replicas_lose_nothing() {
    const WRITERS: usize = 8;
    const EACH: usize = 12;
    for server in Server::ALL {
        let (_dir, a, b) = replicas(server);
        let img = create(&a, json!({"name": "busy"}));
        let id = img["id"].as_str().unwrap().to_owned();
        let apis = Arc::new([a, b]);
        let threads: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (apis, id) = (Arc::clone(&apis), id.clone());
                std::thread::spawn(move || {
                    for i in 0..EACH {
                        // Each writer adds properties of its own, through
                        // either replica: a lost update would drop some.
                        let api = &apis[(w + i) % 2];
                        let op = json!([{"op": "add", "path": format!("/w{w}_{i}"), "value": format!("{w}.{i}")}]);
                        assert_eq!(patch(api, &id, op), 200);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let (_, seen) = show(&apis[0], &id);
        for w in 0..WRITERS {
            for i in 0..EACH {
                assert_eq!(seen[format!("w{w}_{i}")], format!("{w}.{i}"), "{server:?}");
            }
        }
    }
}

#[test]
#[ignore = "needs PostgreSQL and MariaDB: run by scripts/test-all.sh"]
fn of_two_uploads_to_one_image_exactly_one_wins() {
    for server in Server::ALL {
        let (_dir, a, b) = replicas(server);
        for round in 0..6 {
            let img = create(
                &a,
                json!({"name": format!("race-{round}"), "disk_format": "raw", "container_format": "bare"}),
            );
            let id = img["id"].as_str().unwrap().to_owned();
            let uploads: Vec<_> = [(a.addr, 1u8), (b.addr, 2u8)]
                .into_iter()
                .map(|(addr, fill)| {
                    let id = id.clone();
                    std::thread::spawn(move || {
                        let body = vec![fill; 64 << 10];
                        let r = client()
                            .put(format!("http://{addr}/v2/images/{id}/file"))
                            .header("X-Auth-Token", MEMBER)
                            .header("Content-Type", "application/octet-stream")
                            .body(body)
                            .send()
                            .unwrap();
                        (fill, r.status().as_u16())
                    })
                })
                .collect();
            let results: Vec<(u8, u16)> = uploads.into_iter().map(|t| t.join().unwrap()).collect();
            let won: Vec<u8> = results.iter().filter(|r| r.1 == 204).map(|r| r.0).collect();
            let refused = results.iter().filter(|r| r.1 == 409).count();
            assert_eq!(
                (won.len(), refused),
                (1, 1),
                "{server:?} round {round}: {results:?}"
            );
            // The record holds the winner's bytes, hashed.
            let (_, seen) = show(&b, &id);
            assert_eq!(seen["status"], "active");
            let expected = hex::encode(md5::Md5::digest(vec![won[0]; 64 << 10]));
            assert_eq!(seen["checksum"], expected.as_str(), "{server:?}");
        }
    }
}

#[test]
#[ignore = "needs PostgreSQL and MariaDB: run by scripts/test-all.sh"]
fn an_image_id_is_taken_once_across_replicas() {
    for server in Server::ALL {
        let (_dir, a, b) = replicas(server);
        let id = uuid::Uuid::new_v4().to_string();
        let tries: Vec<_> = [a.addr, b.addr]
            .into_iter()
            .map(|addr| {
                let id = id.clone();
                std::thread::spawn(move || {
                    client()
                        .post(format!("http://{addr}/v2/images"))
                        .header("X-Auth-Token", MEMBER)
                        .json(&json!({"id": id, "name": "same"}))
                        .send()
                        .unwrap()
                        .status()
                        .as_u16()
                })
            })
            .collect();
        let mut statuses: Vec<u16> = tries.into_iter().map(|t| t.join().unwrap()).collect();
        statuses.sort_unstable();
        assert_eq!(statuses, [201, 409], "{server:?}");
    }
}

#[test]
#[ignore = "needs PostgreSQL and MariaDB: run by scripts/test-all.sh"]
fn two_updates_that_read_the_same_version_both_land_and_a_refusal_sees_the_winner() {
    use std::sync::Barrier;
    use std::sync::atomic::{AtomicUsize, Ordering};
    for server in Server::ALL {
        let store = Arc::new(SqlStore::open(&server.synced_database(), 4).unwrap());
        let img = Image::new(
            uuid::Uuid::new_v4(),
            Some("p".into()),
            "2026-01-01T00:00:00Z",
        );
        store.create(&img).unwrap();
        // Both writers read the row before either writes (the barrier, on
        // their first attempt): one write loses and is applied again.
        let barrier = Arc::new(Barrier::new(2));
        let calls = Arc::new(AtomicUsize::new(0));
        let writers: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|name| {
                let (store, barrier, calls) =
                    (Arc::clone(&store), Arc::clone(&barrier), Arc::clone(&calls));
                std::thread::spawn(move || {
                    let mut first = true;
                    store
                        .update(&img.id, &mut |i| {
                            calls.fetch_add(1, Ordering::SeqCst);
                            if std::mem::take(&mut first) {
                                barrier.wait();
                            }
                            i.properties.insert(name.into(), "1".into());
                            Ok(())
                        })
                        .unwrap();
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        let seen = store.get(&img.id).unwrap().unwrap();
        assert!(
            seen.properties.contains_key("a") && seen.properties.contains_key("b"),
            "{server:?}: {:?}",
            seen.properties
        );
        assert_eq!(
            calls.load(Ordering::SeqCst),
            3,
            "{server:?}: one change applied twice"
        );
        // A change that refuses once it sees the other's write: of two
        // "only if still free" transitions, one lands and one is refused.
        let barrier = Arc::new(Barrier::new(2));
        let racers: Vec<_> = ["x", "y"]
            .into_iter()
            .map(|name| {
                let (store, barrier) = (Arc::clone(&store), Arc::clone(&barrier));
                std::thread::spawn(move || {
                    let mut first = true;
                    store.update(&img.id, &mut |i| {
                        if std::mem::take(&mut first) {
                            barrier.wait();
                        }
                        if i.properties.contains_key("winner") {
                            return Err("taken".into());
                        }
                        i.properties.insert("winner".into(), name.into());
                        Ok(())
                    })
                })
            })
            .collect();
        let results: Vec<_> = racers.into_iter().map(|r| r.join().unwrap()).collect();
        assert_eq!(
            results.iter().filter(|r| r.is_ok()).count(),
            1,
            "{server:?}"
        );
        assert!(results.iter().any(
            |r| matches!(r, Err(glance_api::metadata::MetadataError::Refused(m)) if m == "taken")
        ));
    }
}

fn glance_api(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_glance-api"))
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
#[ignore = "needs PostgreSQL and MariaDB: run by scripts/test-all.sh"]
fn an_unmigrated_database_is_refused_until_db_sync_and_sync_runs_again_cleanly() {
    for server in Server::ALL {
        let url = server.fresh_database();
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(dir.path(), &url);
        let refused = start(&config).err().expect("started on an empty database");
        assert!(
            refused.contains("glance-api db sync"),
            "{server:?}: {refused}"
        );
        assert!(!refused.contains("glance-test-password"), "{refused}");
        let config = config.to_str().unwrap();
        let (ok, said) = glance_api(&["db", "sync", "--config", config]);
        assert!(
            ok && said.contains("applied migration"),
            "{server:?}: {said}"
        );
        // The password never shows.
        assert!(!said.contains("glance-test-password"), "{said}");
        let (ok, said) = glance_api(&["db", "sync", "--config", config]);
        assert!(
            ok && said.contains("the schema is current"),
            "{server:?}: {said}"
        );
        let api = start(Path::new(config)).unwrap();
        assert_eq!(show(&api, &uuid::Uuid::new_v4().to_string()).0, 404);
    }
}

#[test]
#[ignore = "needs PostgreSQL and MariaDB: run by scripts/test-all.sh"]
fn db_migrate_copies_a_redb_file_whole_and_only_into_an_empty_database() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("glance.redb");
    let images: Vec<Image> = (0..5u128)
        .map(|i| {
            let mut img = Image::new(
                uuid::Uuid::from_u128(i + 1),
                Some("proj-a".into()),
                "2026-01-01T00:00:00Z",
            );
            img.name = Some(format!("image {i}"));
            img
        })
        .collect();
    {
        let redb = RedbStore::open(&file).unwrap();
        for img in &images {
            redb.create(img).unwrap();
        }
        redb.put_member(&Member {
            image_id: images[0].id,
            member_id: "proj-b".into(),
            status: MemberStatus::Accepted,
            created_at: "2026-01-01T00:00:00Z".into(),
            updated_at: "2026-01-01T00:00:00Z".into(),
        })
        .unwrap();
        redb.put_stream_node(&StreamNode {
            name: "stream-1".into(),
            public_url: "http://stream-1:9393".into(),
            admin_url: "http://stream-1:9393".into(),
            weight: 100,
            drained: false,
        })
        .unwrap();
        redb.put_key_record(&KeyRecord {
            id: "k1".into(),
            created_at: Some(1),
            retire_at: None,
        })
        .unwrap();
        redb.doc_create(
            DocKind::MetadefNamespace,
            "OS::Compute::Quota",
            &serde_json::json!({"namespace": "OS::Compute::Quota"}),
        )
        .unwrap();
        redb.doc_create(DocKind::Task, "t1", &serde_json::json!({"id": "t1"}))
            .unwrap();
    }
    for server in Server::ALL {
        let url = server.fresh_database();
        let from = format!("redb:{}", file.display());
        let (ok, said) = glance_api(&["db", "migrate", "--from", &from, "--to", &url]);
        assert!(ok, "{server:?}: {said}");
        assert!(
            said.contains(
                "copied 5 images, 1 memberships, 1 stream nodes, 1 signing key records and 2 documents"
            ),
            "{said}"
        );
        let sql = SqlStore::open(&url, 2).unwrap();
        let mut copied = sql.list().unwrap();
        copied.sort_by_key(|i| i.id);
        assert_eq!(copied, images, "{server:?}");
        assert_eq!(sql.members(&images[0].id).unwrap().len(), 1);
        assert_eq!(sql.memberships("proj-b").unwrap().len(), 1);
        assert_eq!(sql.stream_nodes().unwrap().len(), 1);
        assert_eq!(sql.key_records().unwrap().len(), 1);
        assert_eq!(
            sql.doc_get(DocKind::MetadefNamespace, "OS::Compute::Quota")
                .unwrap()
                .unwrap()["namespace"],
            "OS::Compute::Quota"
        );
        assert_eq!(sql.doc_list(DocKind::Task).unwrap().len(), 1);
        // Again into the same database: refused, nothing doubled.
        let (ok, said) = glance_api(&["db", "migrate", "--from", &from, "--to", &url]);
        assert!(
            !ok && said.contains("already holds images"),
            "{server:?}: {said}"
        );
        assert_eq!(sql.list().unwrap().len(), 5);
    }
}

#[test]
#[ignore = "needs PostgreSQL and MariaDB: run by scripts/test-all.sh"]
fn documents_rename_atomically_and_concurrent_changes_all_land() {
    for server in Server::ALL {
        let url = server.synced_database();
        let sql = std::sync::Arc::new(SqlStore::open(&url, 8).unwrap());
        let ns = DocKind::MetadefNamespace;
        for key in ["a", "b"] {
            sql.doc_create(ns, key, &serde_json::json!({"n": 0}))
                .unwrap();
        }
        // A rename onto a taken key is refused and changes nothing.
        let clash = sql.doc_update(ns, "a", Some("b"), &mut |d| {
            d["n"] = serde_json::json!(9);
            Ok(())
        });
        assert!(
            matches!(clash, Err(MetadataError::DocExists(..))),
            "{server:?}: {clash:?}"
        );
        assert_eq!(sql.doc_get(ns, "a").unwrap().unwrap()["n"], 0);
        let moved = sql.doc_update(ns, "a", Some("c"), &mut |_| Ok(())).unwrap();
        assert_eq!(moved["n"], 0);
        assert!(sql.doc_get(ns, "a").unwrap().is_none());
        // 4 threads x 25 increments of one document: every one lands.
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let sql = std::sync::Arc::clone(&sql);
                std::thread::spawn(move || {
                    for _ in 0..25 {
                        sql.doc_update(ns, "c", None, &mut |d| {
                            let n = d["n"].as_u64().unwrap_or(0);
                            d["n"] = serde_json::json!(n + 1);
                            Ok(())
                        })
                        .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(
            sql.doc_get(ns, "c").unwrap().unwrap()["n"],
            100,
            "{server:?}"
        );
        let keys: Vec<String> = sql
            .doc_list(ns)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, ["b", "c"]);
    }
}
