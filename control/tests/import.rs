//! Interoperable import, tasks and the site's info routes through the
//! router: staging, glance-direct, web-download from a real local HTTP
//! server (refused by default, allowed by the filter), copy-image, and
//! what each leaves in the image and its task.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod app;
mod common;

use std::time::Duration;

use app::*;
use axum::body::Body;
use axum::http::StatusCode;
use glance_api::config::{RawImport, RawUriFilter};
use serde_json::{Value, json};
use sha2::Digest as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

impl App {
    async fn stage(&self, id: &str, data: Vec<u8>) -> Reply {
        self.call(
            "PUT",
            &format!("/v2/images/{id}/stage"),
            Some(MEMBER_A),
            Body::from(data),
            Some("application/octet-stream"),
        )
        .await
    }

    async fn import(&self, token: &str, id: &str, body: Value) -> Reply {
        self.call(
            "POST",
            &format!("/v2/images/{id}/import"),
            Some(token),
            Body::from(body.to_string()),
            Some("application/json"),
        )
        .await
    }

    /// Polls the image until `done` holds (10 s at most).
    async fn wait_image(&self, id: &str, done: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..200 {
            let img = self.get(&format!("/v2/images/{id}"), MEMBER_A).await.json();
            if done(&img) {
                return img;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("image {id} never got there");
    }

    /// The image's one task, once it ended, as `token` reads it.
    async fn ended_task_as(&self, token: &str, id: &str) -> Value {
        for _ in 0..200 {
            let tasks = self
                .get(&format!("/v2/images/{id}/tasks"), token)
                .await
                .json();
            let list = tasks["tasks"].as_array().unwrap().clone();
            if list.len() == 1 && (list[0]["status"] == "success" || list[0]["status"] == "failure")
            {
                return list[0].clone();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the import task of image {id} never ended");
    }

    /// The image's one task, once it ended, as its owner reads it.
    async fn ended_task(&self, id: &str) -> Value {
        self.ended_task_as(MEMBER_A, id).await
    }
}

fn sha512(data: &[u8]) -> String {
    hex::encode(sha2::Sha512::digest(data))
}

/// A one-shot HTTP server on loopback answering every request with
/// `status` and `body`; returns its port.
async fn web_server(status: &'static str, body: Vec<u8>) -> u16 {
    web_server_with(status, "", None, body).await
}

/// [`web_server`] with extra header lines (each ending `\r\n`) and, when
/// given, a `Content-Length` other than the body's.
async fn web_server_with(
    status: &'static str,
    extra: &'static str,
    announced: Option<usize>,
    body: Vec<u8>,
) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let head = format!(
                    "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
                    announced.unwrap_or(body.len())
                );
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(&body).await;
            });
        }
    });
    port
}

fn allowing(port: u16) -> Option<RawImport> {
    Some(RawImport {
        web_download: Some(RawUriFilter {
            allowed_hosts: vec!["127.0.0.1".into()],
            allowed_ports: Some(vec![port]),
            ..RawUriFilter::default()
        }),
        ..RawImport::default()
    })
}

const RAW: &str = r#"{"name": "i", "disk_format": "raw", "container_format": "bare"}"#;

async fn new_image(app: &App) -> String {
    app.create_id(MEMBER_A, serde_json::from_str(RAW).unwrap())
        .await
}

#[tokio::test]
async fn glance_direct_stages_then_imports_with_a_task() {
    let app = App::new();
    let created = app
        .create(MEMBER_A, serde_json::from_str(RAW).unwrap())
        .await;
    assert_eq!(
        created.header("openstack-image-import-methods"),
        "glance-direct,web-download,copy-image"
    );
    let id = created.json()["id"].as_str().unwrap().to_owned();
    let bytes = data(3 << 20);
    // Not staged yet: glance-direct is refused.
    let early = app
        .import(MEMBER_A, &id, json!({"method": {"name": "glance-direct"}}))
        .await;
    assert_eq!(early.status, StatusCode::CONFLICT);
    let staged = app.stage(&id, bytes.clone()).await;
    assert_eq!(
        staged.status,
        StatusCode::NO_CONTENT,
        "{}",
        String::from_utf8_lossy(&staged.body)
    );
    let img = app.get(&format!("/v2/images/{id}"), MEMBER_A).await.json();
    assert_eq!(img["status"], "uploading");
    assert_eq!(img["size"], bytes.len());
    assert!(app.dir.path().join("staging").join(&id).exists());
    // Staged once only.
    assert_eq!(
        app.stage(&id, bytes.clone()).await.status,
        StatusCode::CONFLICT
    );

    let started = app
        .import(
            MEMBER_A,
            &id,
            json!({"method": {"name": "glance-direct"}, "all_stores": true}),
        )
        .await;
    assert_eq!(
        started.status,
        StatusCode::ACCEPTED,
        "{}",
        String::from_utf8_lossy(&started.body)
    );
    assert!(started.body.is_empty());
    let request = started.header("x-openstack-request-id").to_owned();
    assert!(request.starts_with("req-"), "{request}");
    let img = app.wait_image(&id, |i| i["status"] == "active").await;
    assert_eq!(img["os_hash_value"], sha512(&bytes));
    assert_eq!(img["checksum"], hex::encode(md5::Md5::digest(&bytes)));
    assert_eq!(img["stores"], "local");
    assert_eq!(img["os_glance_failed_import"], "");
    assert_eq!(img["os_glance_importing_to_stores"], "");
    assert!(
        img.get("os_glance_import_task").is_none(),
        "the lock is released"
    );
    assert_eq!(
        std::fs::read(app.dir.path().join("images").join(&id)).unwrap(),
        bytes
    );
    assert!(
        !app.dir.path().join("staging").join(&id).exists(),
        "staging emptied"
    );

    let task = app.ended_task(&id).await;
    assert_eq!(task["status"], "success");
    assert_eq!(task["request_id"], request.as_str());
    assert_eq!(
        task["input"]["import_req"]["method"]["name"],
        "glance-direct"
    );
    assert_eq!(task["result"]["image_id"], id.as_str());
    assert_eq!(task["message"], "Copied 3 MiB");
    // The task API: admins only.
    assert_eq!(
        app.get("/v2/tasks", MEMBER_A).await.status,
        StatusCode::FORBIDDEN
    );
    let listed = app.get("/v2/tasks?status=success", ADMIN).await.json();
    let task_id = task["id"].as_str().unwrap();
    assert!(
        listed["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == task_id)
    );
    let shown = app.get(&format!("/v2/tasks/{task_id}"), ADMIN).await.json();
    assert_eq!(shown["type"], "api_image_import");
    assert_eq!(shown["self"], format!("/v2/tasks/{task_id}"));
    assert!(shown["expires_at"].is_string());
    assert_eq!(
        app.get("/v2/tasks?type=api_image_import", ADMIN)
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        app.get("/v2/schemas/task", MEMBER_A).await.json()["name"],
        "task"
    );
    assert_eq!(
        app.get("/v2/schemas/tasks", MEMBER_A).await.json()["name"],
        "tasks"
    );
    // Another project sees neither the image nor its tasks.
    assert_eq!(
        app.get(&format!("/v2/images/{id}/tasks"), MEMBER_B)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    // Active: no more imports of new data.
    let again = app
        .import(MEMBER_A, &id, json!({"method": {"name": "glance-direct"}}))
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn bad_stage_and_import_requests_change_nothing() {
    let app = App::new();
    let id = new_image(&app).await;
    let wrong_type = app
        .call(
            "PUT",
            &format!("/v2/images/{id}/stage"),
            Some(MEMBER_A),
            Body::from("x"),
            Some("application/json"),
        )
        .await;
    assert_eq!(wrong_type.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(app.stage(&id, vec![1]).await.status, StatusCode::NO_CONTENT);
    for (body, status) in [
        (json!({}), StatusCode::BAD_REQUEST),
        (json!({"method": {}}), StatusCode::BAD_REQUEST),
        (
            json!({"method": {"name": "glance-download"}}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"method": {"name": "glance-direct"}, "all_stores": "yes"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"method": {"name": "glance-direct"}, "all_stores": true, "stores": ["local"]}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"method": {"name": "glance-direct"}, "stores": ["elsewhere"]}),
            StatusCode::CONFLICT,
        ),
    ] {
        let r = app.import(MEMBER_A, &id, body.clone()).await;
        assert_eq!(
            r.status,
            status,
            "{body}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    // Another project's member cannot see it; a reader may not import it.
    let r = app
        .import(MEMBER_B, &id, json!({"method": {"name": "glance-direct"}}))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = app
        .import(READER_A, &id, json!({"method": {"name": "glance-direct"}}))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let img = app.get(&format!("/v2/images/{id}"), MEMBER_A).await.json();
    assert_eq!(img["status"], "uploading");
    assert!(img.get("os_glance_import_task").is_none());
    // Deleting a staged image removes its staged data.
    assert_eq!(
        app.send("DELETE", &format!("/v2/images/{id}"), MEMBER_A)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert!(!app.dir.path().join("staging").join(&id).exists());
}

#[tokio::test]
async fn web_download_fetches_only_what_the_filter_passes() {
    let bytes = data(1 << 20);
    let port = web_server("200 OK", bytes.clone()).await;
    let url = format!("http://127.0.0.1:{port}/cirros.img");
    // By default loopback is refused, with the reason, even on a port the
    // filter allows.
    let strict = App::with(
        1 << 30,
        Some(RawImport {
            web_download: Some(RawUriFilter {
                allowed_ports: Some(vec![port]),
                ..RawUriFilter::default()
            }),
            ..RawImport::default()
        }),
    );
    let id = new_image(&strict).await;
    let r = strict
        .import(
            MEMBER_A,
            &id,
            json!({"method": {"name": "web-download", "uri": url}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let message = r.json()["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains("does not pass filtering") && message.contains("loopback"),
        "{message}"
    );
    assert_eq!(
        strict
            .get(&format!("/v2/images/{id}"), MEMBER_A)
            .await
            .json()["status"],
        "queued"
    );

    let app = App::with(1 << 30, allowing(port));
    let id = new_image(&app).await;
    let r = app
        .import(
            MEMBER_A,
            &id,
            json!({"method": {"name": "web-download", "uri": url}}),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::ACCEPTED,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let img = app.wait_image(&id, |i| i["status"] == "active").await;
    assert_eq!(img["os_hash_value"], sha512(&bytes));
    assert_eq!(img["size"], bytes.len());
    assert_eq!(app.ended_task(&id).await["status"], "success");
    // Only the allowed host: another host name is refused.
    let other = new_image(&app).await;
    let r = app
        .import(MEMBER_A, &other, json!({"method": {"name": "web-download", "uri": "http://does-not.exist/no/possible/way"}}))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_failed_web_download_puts_the_image_back_to_queued() {
    let port = web_server("404 Not Found", b"gone".to_vec()).await;
    let app = App::with(1 << 30, allowing(port));
    let id = new_image(&app).await;
    let url = format!("http://127.0.0.1:{port}/missing.img");
    let r = app
        .import(
            MEMBER_A,
            &id,
            json!({"method": {"name": "web-download", "uri": url}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let task = app.ended_task(&id).await;
    assert_eq!(task["status"], "failure");
    assert!(task["message"].as_str().unwrap().contains("404"), "{task}");
    let img = app.wait_image(&id, |i| i["status"] == "queued").await;
    assert_eq!(img["os_glance_failed_import"], "local");
    assert!(img.get("os_glance_import_task").is_none());
    assert!(img["size"].is_null() && img["os_hash_value"].is_null());
    // The lock is gone: it can be imported again (and fails again).
    let again = app
        .import(
            MEMBER_A,
            &id,
            json!({"method": {"name": "web-download", "uri": url}}),
        )
        .await;
    assert_eq!(again.status, StatusCode::ACCEPTED);
    app.wait_image(&id, |i| {
        i["status"] == "queued" && i.get("os_glance_import_task").is_none()
    })
    .await;
}

#[tokio::test]
async fn web_download_checks_redirects_and_lengths() {
    let bytes = data(4096);
    // A redirect to a host the filter refuses.
    let away = web_server_with(
        "302 Found",
        "Location: http://169.254.169.254/latest/meta-data\r\n",
        None,
        Vec::new(),
    )
    .await;
    // A body shorter than announced.
    let short = web_server_with("200 OK", "", Some(bytes.len() * 2), bytes.clone()).await;
    let app = App::with(
        1 << 30,
        Some(RawImport {
            web_download: Some(RawUriFilter {
                allowed_hosts: vec!["127.0.0.1".into()],
                allowed_ports: Some(vec![away, short, 80]),
                ..RawUriFilter::default()
            }),
            ..RawImport::default()
        }),
    );
    for (port, why) in [(away, "does not pass filtering"), (short, "")] {
        let id = new_image(&app).await;
        let url = format!("http://127.0.0.1:{port}/c.img");
        let r = app
            .import(
                MEMBER_A,
                &id,
                json!({"method": {"name": "web-download", "uri": url}}),
            )
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED);
        let task = app.ended_task(&id).await;
        assert_eq!(task["status"], "failure", "{task}");
        assert!(task["message"].as_str().unwrap().contains(why), "{task}");
        let img = app.wait_image(&id, |i| i["status"] == "queued").await;
        assert!(img["os_hash_value"].is_null());
        assert!(!app.dir.path().join("staging").join(&id).exists());
        assert!(!app.dir.path().join("images").join(&id).exists());
    }
}

#[tokio::test]
async fn stores_are_named_once_and_methods_follow_the_config() {
    let app = App::configured(|raw| {
        raw.import = Some(RawImport {
            methods: Some(vec!["glance-direct".into()]),
            ..RawImport::default()
        })
    });
    let id = new_image(&app).await;
    app.stage(&id, data(100)).await;
    for body in [
        json!({"method": {"name": "glance-direct"}, "stores": ["local", "local"]}),
        json!({"method": {"name": "glance-direct"}, "stores": []}),
        json!({"method": {"name": "web-download", "uri": "http://images.example/c"}}),
    ] {
        let r = app.import(MEMBER_A, &id, body.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}");
    }
    let info = app.get("/v2/info/import", MEMBER_A).await.json();
    assert_eq!(info["import-methods"]["value"], json!(["glance-direct"]));
    let created = app
        .create(MEMBER_A, serde_json::from_str(RAW).unwrap())
        .await;
    assert_eq!(
        created.header("openstack-image-import-methods"),
        "glance-direct"
    );
    let task = json!({"type": "import", "input": {"import_from": "http://images.example/c", "image_properties": {}}});
    let r = app
        .call(
            "POST",
            "/v2/tasks",
            Some(ADMIN),
            Body::from(task.to_string()),
            Some("application/json"),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::BAD_REQUEST,
        "no URL imports without web-download"
    );
    assert_eq!(
        app.get("/v2/images", ADMIN).await.json()["images"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn a_stale_lock_is_broken_and_the_image_imported_again() {
    let app = App::new();
    let id = new_image(&app).await;
    let bytes = data(5000);
    app.stage(&id, bytes.clone()).await;
    // As a glance-api that stopped mid-import leaves it: importing, locked
    // by a task that no longer exists.
    let uuid = uuid::Uuid::parse_str(&id).unwrap();
    app.state
        .metadata
        .update(&uuid, &mut |img| {
            img.status = glance_api::model::Status::Importing;
            img.properties.insert(
                "os_glance_import_task".into(),
                uuid::Uuid::new_v4().to_string(),
            );
            img.properties
                .insert("os_glance_importing_to_stores".into(), "local".into());
            Ok(())
        })
        .unwrap();
    let r = app
        .import(MEMBER_A, &id, json!({"method": {"name": "glance-direct"}}))
        .await;
    assert_eq!(
        r.status,
        StatusCode::ACCEPTED,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let img = app.wait_image(&id, |i| i["status"] == "active").await;
    assert_eq!(img["os_hash_value"], sha512(&bytes));
}

#[tokio::test]
async fn a_live_lock_refuses_a_second_import() {
    let app = two_stores();
    let id = new_image(&app).await;
    app.upload(MEMBER_A, &id, data(10)).await;
    // Another import's task, running and recently moved, holds the lock.
    let holder = uuid::Uuid::new_v4();
    let stamp = glance_api::model::timestamp(time::OffsetDateTime::now_utc());
    let task = json!({
        "id": holder, "type": "api_image_import", "status": "processing", "owner": "ops",
        "input": {}, "result": null, "message": "", "image_id": id, "request_id": "req-x",
        "user_id": "root", "expires_at": null, "created_at": stamp, "updated_at": stamp
    });
    app.state
        .metadata
        .doc_create(
            glance_api::metadata::DocKind::Task,
            &holder.to_string(),
            &task,
        )
        .unwrap();
    let uuid = uuid::Uuid::parse_str(&id).unwrap();
    app.state
        .metadata
        .update(&uuid, &mut |img| {
            img.properties
                .insert("os_glance_import_task".into(), holder.to_string());
            Ok(())
        })
        .unwrap();
    let copy = json!({"method": {"name": "copy-image"}, "stores": ["archive"]});
    let r = app.import(ADMIN, &id, copy.clone()).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("active task")
    );
    // Once that task ends, its lock no longer counts.
    app.state
        .metadata
        .doc_update(
            glance_api::metadata::DocKind::Task,
            &holder.to_string(),
            None,
            &mut |t| {
                t["status"] = json!("success");
                Ok(())
            },
        )
        .unwrap();
    assert_eq!(
        app.import(ADMIN, &id, copy).await.status,
        StatusCode::ACCEPTED
    );
    app.wait_image(&id, |i| i["stores"] == "archive,local")
        .await;
}

#[tokio::test]
async fn copy_image_is_for_admins_and_names_known_stores() {
    let app = App::new();
    let id = new_image(&app).await;
    assert_eq!(
        app.upload(MEMBER_A, &id, data(1000)).await.status,
        StatusCode::NO_CONTENT
    );
    let copy = json!({"method": {"name": "copy-image"}, "all_stores": true, "all_stores_must_succeed": false});
    assert_eq!(
        app.import(MEMBER_A, &id, copy.clone()).await.status,
        StatusCode::FORBIDDEN
    );
    let r = app
        .import(
            ADMIN,
            &id,
            json!({"method": {"name": "copy-image"}, "stores": ["local"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "already in that store");
    // Every store already holds it: a task that ends at once, nothing copied.
    assert_eq!(
        app.import(ADMIN, &id, copy).await.status,
        StatusCode::ACCEPTED
    );
    let task = app.ended_task_as(ADMIN, &id).await;
    assert_eq!(task["status"], "success");
    // The owner's project does not see the admin's task.
    let theirs = app
        .get(&format!("/v2/images/{id}/tasks"), MEMBER_A)
        .await
        .json();
    assert_eq!(theirs["tasks"], json!([]));
    let img = app
        .wait_image(&id, |i| i.get("os_glance_import_task").is_none())
        .await;
    assert_eq!(img["status"], "active");
    assert_eq!(img["os_glance_importing_to_stores"], "");
    assert_eq!(img["os_glance_failed_import"], "");
}

#[tokio::test]
async fn info_usage_locations_and_store_deletes() {
    let app = App::new();
    let import = app.get("/v2/info/import", READER_A).await.json();
    assert_eq!(
        import["import-methods"]["value"],
        json!(["glance-direct", "web-download", "copy-image"])
    );
    let detail = app.get("/v2/info/stores/detail", ADMIN).await;
    assert_eq!(detail.json()["stores"][0]["type"], "file");
    assert_eq!(
        app.get("/v2/info/stores/detail", MEMBER_A).await.status,
        StatusCode::FORBIDDEN
    );

    let id = new_image(&app).await;
    app.upload(MEMBER_A, &id, data(3 << 20)).await;
    let staged = new_image(&app).await;
    app.stage(&staged, data(2 << 20)).await;
    let usage = app.get("/v2/info/usage", MEMBER_A).await.json()["usage"].clone();
    assert_eq!(usage["image_count_total"], json!({"limit": -1, "usage": 2}));
    assert_eq!(usage["image_size_total"]["usage"], 3);
    assert_eq!(usage["image_stage_total"]["usage"], 2);
    assert_eq!(usage["image_count_uploading"]["usage"], 1);
    assert_eq!(
        app.get("/v2/info/usage", MEMBER_B).await.json()["usage"]["image_count_total"]["usage"],
        0
    );

    // Locations: the service role only.
    assert_eq!(
        app.get(&format!("/v2/images/{id}/locations"), MEMBER_A)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    let locations = app
        .get(&format!("/v2/images/{id}/locations"), SERVICE)
        .await;
    assert_eq!(
        locations.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&locations.body)
    );
    let locations = locations.json();
    assert_eq!(locations[0]["metadata"]["store"], "local");
    let url = locations[0]["url"].as_str().unwrap();
    assert!(url.starts_with("file://") && url.ends_with(&id), "{url}");

    // Data is never deleted from the only store holding it.
    let from = |store: &str| format!("/v2/stores/{store}/{id}");
    assert_eq!(
        app.send("DELETE", &from("local"), MEMBER_A).await.status,
        StatusCode::FORBIDDEN
    );
    let only = app.send("DELETE", &from("local"), ADMIN).await;
    assert_eq!(only.status, StatusCode::FORBIDDEN);
    assert!(
        only.json()["message"]
            .as_str()
            .unwrap()
            .contains("only store")
    );
    assert_eq!(
        app.send("DELETE", &from("elsewhere"), ADMIN).await.status,
        StatusCode::CONFLICT
    );
    assert_eq!(
        app.get(&format!("/v2/images/{id}"), MEMBER_A).await.json()["status"],
        "active"
    );
}

#[tokio::test]
async fn the_task_api_imports_from_a_url_it_passes() {
    let bytes = data(4096);
    let port = web_server("200 OK", bytes.clone()).await;
    let app = App::with(1 << 30, allowing(port));
    let refused = app
        .call(
            "POST",
            "/v2/tasks",
            Some(ADMIN),
            Body::from(json!({"type": "import", "input": {"import_from": "http://dummy-img-file.qcow2", "import_from_format": "qcow2", "image_properties": {}}}).to_string()),
            Some("application/json"),
        )
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    let body = json!({"type": "import", "input": {
        "import_from": format!("http://127.0.0.1:{port}/c.img"), "import_from_format": "raw",
        "image_properties": {"name": "from-task", "disk_format": "raw", "container_format": "bare"}}});
    let created = app
        .call(
            "POST",
            "/v2/tasks",
            Some(ADMIN),
            Body::from(body.to_string()),
            Some("application/json"),
        )
        .await;
    assert_eq!(
        created.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    let task_id = created.json()["id"].as_str().unwrap().to_owned();
    let mut task = Value::Null;
    for _ in 0..200 {
        task = app.get(&format!("/v2/tasks/{task_id}"), ADMIN).await.json();
        if task["status"] == "success" || task["status"] == "failure" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(task["status"], "success", "{task}");
    let image = task["result"]["image_id"].as_str().unwrap();
    let img = app.get(&format!("/v2/images/{image}"), ADMIN).await.json();
    assert_eq!(img["name"], "from-task");
    assert_eq!(img["os_hash_value"], sha512(&bytes));
}

/// An API with a second file store, `archive`.
fn two_stores() -> App {
    App::configured(|raw| {
        raw.stores = vec![glance_api::config::RawStore {
            id: "archive".into(),
            kind: "file".into(),
            path: Some("archive".into()),
            ..Default::default()
        }]
    })
}

#[tokio::test]
async fn several_stores_take_uploads_imports_copies_and_deletes() {
    let app = two_stores();
    let stores = app.get("/v2/info/stores", MEMBER_A).await.json();
    assert_eq!(
        stores,
        json!({"stores": [{"id": "local", "default": "true"}, {"id": "archive"}]})
    );
    let created = app
        .create(MEMBER_A, serde_json::from_str(RAW).unwrap())
        .await;
    assert_eq!(created.header("openstack-image-store-ids"), "local,archive");
    let bytes = data(2 << 20);
    let file = |store: &str, id: &str| {
        app.dir
            .path()
            .join(if store == "local" { "images" } else { store })
            .join(id)
    };

    // An upload to the store X-Image-Meta-Store names; an unknown one: 400.
    let id = new_image(&app).await;
    let upload = |store: &'static str, id: String, bytes: Vec<u8>| {
        let app = &app;
        async move {
            let req = axum::http::Request::builder()
                .method("PUT")
                .uri(format!("/v2/images/{id}/file"))
                .header("X-Auth-Token", MEMBER_A)
                .header("Content-Type", "application/octet-stream")
                .header("X-Image-Meta-Store", store)
                .body(Body::from(bytes))
                .unwrap();
            app.request(req).await
        }
    };
    assert_eq!(
        upload("tape", id.clone(), bytes.clone()).await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        upload("archive", id.clone(), bytes.clone()).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.get(&format!("/v2/images/{id}"), MEMBER_A).await.json()["stores"],
        "archive"
    );
    assert_eq!(std::fs::read(file("archive", &id)).unwrap(), bytes);
    assert!(!file("local", &id).exists());

    // copy-image into the store that lacks it: both hold the same bytes.
    let r = app
        .import(
            ADMIN,
            &id,
            json!({"method": {"name": "copy-image"}, "stores": ["local"]}),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::ACCEPTED,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let img = app
        .wait_image(&id, |i| i["stores"] == "archive,local")
        .await;
    assert_eq!(img["status"], "active");
    assert_eq!(std::fs::read(file("local", &id)).unwrap(), bytes);
    assert_eq!(app.ended_task_as(ADMIN, &id).await["status"], "success");
    let locations = app
        .get(&format!("/v2/images/{id}/locations"), SERVICE)
        .await
        .json();
    assert_eq!(locations.as_array().unwrap().len(), 2);
    assert_eq!(
        app.get("/v2/info/usage", MEMBER_A).await.json()["usage"]["image_size_total"]["usage"],
        4,
        "each copy counts"
    );
    // ?prefer= picks the copy a download reads; an unknown store is a 400.
    assert_eq!(
        app.get(&format!("/v2/images/{id}/file?prefer=tape"), MEMBER_A)
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    for store in ["local", "archive"] {
        let r = app
            .get(&format!("/v2/images/{id}/file?prefer={store}"), MEMBER_A)
            .await;
        assert_eq!(r.status, StatusCode::TEMPORARY_REDIRECT);
        let link = r.header("location");
        assert!(link.contains(&format!("store={store}")), "{link}");
    }

    // Deleting from one store keeps the other; the last one is refused.
    assert_eq!(
        app.send("DELETE", &format!("/v2/stores/archive/{id}"), ADMIN)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert!(!file("archive", &id).exists());
    let img = app.get(&format!("/v2/images/{id}"), MEMBER_A).await.json();
    assert_eq!(img["stores"], "local");
    let r = app.get(&format!("/v2/images/{id}/file"), MEMBER_A).await;
    assert!(
        r.header("location").contains("store=local"),
        "downloads read the copy left"
    );
    assert_eq!(
        app.send("DELETE", &format!("/v2/stores/archive/{id}"), ADMIN)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.send("DELETE", &format!("/v2/stores/local/{id}"), ADMIN)
            .await
            .status,
        StatusCode::FORBIDDEN
    );

    // glance-direct to every store, then the image's delete empties both.
    let both = new_image(&app).await;
    app.stage(&both, bytes.clone()).await;
    let r = app
        .import(
            MEMBER_A,
            &both,
            json!({"method": {"name": "glance-direct"}, "all_stores": true}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let img = app.wait_image(&both, |i| i["status"] == "active").await;
    assert_eq!(img["stores"], "archive,local");
    assert_eq!(std::fs::read(file("archive", &both)).unwrap(), bytes);
    assert_eq!(
        app.send("DELETE", &format!("/v2/images/{both}"), MEMBER_A)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert!(!file("archive", &both).exists() && !file("local", &both).exists());
}

#[tokio::test]
async fn an_import_that_must_land_everywhere_leaves_nothing_when_one_store_fails() {
    let app = two_stores();
    let id = new_image(&app).await;
    app.stage(&id, data(4096)).await;
    // The archive store cannot be written: its directory is now a file.
    let archive = app.dir.path().join("archive");
    std::fs::remove_dir_all(&archive).unwrap();
    std::fs::write(&archive, b"not a directory").unwrap();
    let r = app
        .import(
            MEMBER_A,
            &id,
            json!({"method": {"name": "glance-direct"}, "stores": ["local", "archive"]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let task = app.ended_task(&id).await;
    assert_eq!(task["status"], "failure");
    assert!(
        task["message"].as_str().unwrap().starts_with("archive:"),
        "{task}"
    );
    let img = app.wait_image(&id, |i| i["status"] == "queued").await;
    assert_eq!(img["os_glance_failed_import"], "archive");
    assert!(img.get("stores").is_none());
    assert!(
        !app.dir.path().join("images").join(&id).exists(),
        "what landed in local was removed"
    );

    // Allowed to fail in some: what landed stays, the failures are named.
    let other = new_image(&app).await;
    app.stage(&other, data(4096)).await;
    let r = app
        .import(
            MEMBER_A,
            &other,
            json!({"method": {"name": "glance-direct"}, "stores": ["archive", "local"], "all_stores_must_succeed": false}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let img = app.wait_image(&other, |i| i["status"] == "active").await;
    assert_eq!(img["stores"], "local");
    assert_eq!(img["os_glance_failed_import"], "archive");
    assert_eq!(app.ended_task(&other).await["status"], "success");
}
