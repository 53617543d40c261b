//! The Image API through its router, without a socket: every route and the
//! error codes Glance answers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod app;
mod common;

use std::sync::Arc;

use app::*;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use glance_api::api::router;
use http_body_util::BodyExt as _;
use md5::Digest as _;
use serde_json::{Value, json};
use tower::ServiceExt as _;

#[tokio::test]
async fn versions_answer_without_a_token() {
    let app = App::new();
    let root = app.call("GET", "/", None, Body::empty(), None).await;
    assert_eq!(root.status, StatusCode::MULTIPLE_CHOICES);
    let versions = app
        .call("GET", "/versions", None, Body::empty(), None)
        .await;
    assert_eq!(versions.status, StatusCode::OK);
    assert_eq!(root.json(), versions.json());
    let v = versions.json();
    let current: Vec<&Value> = v["versions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["status"] == "CURRENT")
        .collect();
    assert_eq!(current.len(), 1);
    assert!(current[0]["id"].as_str().unwrap().starts_with("v2."));
    assert_eq!(
        v["versions"][0]["links"][0]["href"],
        "http://api.test:9292/v2/"
    );
}

#[tokio::test]
async fn no_or_bad_token_is_401_with_a_keystone_challenge() {
    let app = App::new();
    for token in [None, Some("wrong-token-xxxxxxxxxxxx")] {
        let r = app
            .call("GET", "/v2/images", token, Body::empty(), None)
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            r.header("www-authenticate"),
            "Keystone uri=\"http://api.test:9292\""
        );
        assert_eq!(r.json()["code"], "401 Unauthorized");
    }
}

#[tokio::test]
async fn create_show_and_the_glance_shape() {
    let app = App::new();
    let r = app
        .create(MEMBER_A, json!({"name": "cirros", "disk_format": "raw", "container_format": "bare", "foo": "bar", "tags": ["t1"]}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let img = r.json();
    let id = img["id"].as_str().unwrap();
    assert_eq!(
        r.header("location"),
        format!("http://api.test:9292/v2/images/{id}")
    );
    assert_eq!(r.header("openstack-image-store-ids"), "local");
    assert_eq!(img["status"], "queued");
    assert_eq!(img["visibility"], "shared");
    assert_eq!(img["owner"], "proj-a");
    assert_eq!(img["foo"], "bar");
    assert_eq!(img["tags"], json!(["t1"]));
    assert_eq!(img["size"], Value::Null);
    assert_eq!(img["self"], format!("/v2/images/{id}"));
    assert_eq!(img["file"], format!("/v2/images/{id}/file"));
    let shown = app.get(&format!("/v2/images/{id}"), MEMBER_A).await;
    assert_eq!(shown.status, StatusCode::OK);
    assert_eq!(shown.json(), img);
    // Client-chosen id, and a duplicate.
    let fixed = "0f3d9c5e-7b1a-4c2e-9d4f-5a6b7c8d9e0f";
    assert_eq!(
        app.create(MEMBER_A, json!({"id": fixed})).await.status,
        StatusCode::CREATED
    );
    assert_eq!(
        app.create(MEMBER_A, json!({"id": fixed})).await.status,
        StatusCode::CONFLICT
    );
}

#[tokio::test]
async fn create_refuses_bad_input_with_the_right_code() {
    let app = App::new();
    let cases = [
        (MEMBER_A, json!({"size": 5}), StatusCode::FORBIDDEN),
        (MEMBER_A, json!({"status": "active"}), StatusCode::FORBIDDEN),
        (
            MEMBER_A,
            json!({"visibility": "public"}),
            StatusCode::FORBIDDEN,
        ),
        (
            MEMBER_A,
            json!({"disk_format": "floppy"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            MEMBER_A,
            json!({"min_ram": "lots"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            MEMBER_A,
            json!({"id": "not-a-uuid"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            MEMBER_A,
            json!(["not", "an", "object"]),
            StatusCode::BAD_REQUEST,
        ),
        (READER_A, json!({"name": "x"}), StatusCode::FORBIDDEN),
    ];
    for (token, body, want) in cases {
        let r = app.create(token, body.clone()).await;
        assert_eq!(r.status, want, "{body}");
        assert!(r.json()["message"].as_str().is_some());
    }
    assert_eq!(
        app.create(ADMIN, json!({"visibility": "public"}))
            .await
            .status,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn private_images_are_invisible_to_other_projects() {
    let app = App::new();
    let id = app
        .create_id(MEMBER_A, json!({"name": "mine", "visibility": "private"}))
        .await;
    let path = format!("/v2/images/{id}");
    assert_eq!(app.get(&path, MEMBER_A).await.status, StatusCode::OK);
    assert_eq!(app.get(&path, ADMIN).await.status, StatusCode::OK);
    let other = app.get(&path, MEMBER_B).await;
    assert_eq!(other.status, StatusCode::NOT_FOUND);
    assert_eq!(other.json()["code"], "404 Not Found");
    let listed = app.get("/v2/images", MEMBER_B).await.json();
    assert!(listed["images"].as_array().unwrap().is_empty());
    assert_eq!(
        app.send("DELETE", &path, MEMBER_B).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn upload_hashes_and_download_redirects_to_a_signed_link() {
    let app = App::new();
    let id = app
        .create_id(
            MEMBER_A,
            json!({"name": "d", "disk_format": "raw", "container_format": "bare"}),
        )
        .await;
    let bytes = data(3 << 20);
    let r = app.upload(MEMBER_A, &id, bytes.clone()).await;
    assert_eq!(
        r.status,
        StatusCode::NO_CONTENT,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let img = app.get(&format!("/v2/images/{id}"), MEMBER_A).await.json();
    assert_eq!(img["status"], "active");
    assert_eq!(img["size"], bytes.len());
    assert_eq!(img["virtual_size"], bytes.len());
    assert_eq!(img["checksum"], hex::encode(md5::Md5::digest(&bytes)));
    assert_eq!(img["os_hash_algo"], "sha512");
    assert_eq!(
        img["os_hash_value"],
        hex::encode(sha2::Sha512::digest(&bytes))
    );
    assert_eq!(img["stores"], "local");
    let stored = std::fs::read(app.dir.path().join("images").join(&id)).unwrap();
    assert_eq!(stored, bytes);
    // Re-upload: 409, data untouched.
    let again = app.upload(MEMBER_A, &id, vec![1, 2, 3]).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert!(
        again.json()["message"]
            .as_str()
            .unwrap()
            .contains("active to saving")
    );
    // Download: 307 to a link glance-stream would accept.
    let dl = app.get(&format!("/v2/images/{id}/file"), MEMBER_A).await;
    assert_eq!(dl.status, StatusCode::TEMPORARY_REDIRECT);
    let location = dl.header("location").to_owned();
    let (base, rest) = location.split_at(location.find("/v1/images/").unwrap());
    assert!(
        base == "http://stream-a:9393" || base == "http://stream-b:9393",
        "{location}"
    );
    let (path, query) = rest.split_once('?').unwrap();
    let keyring = glance_link::Keyring::load(&app.dir.path().join("keyring.toml")).unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp() as u64;
    let req = glance_link::LinkRequest {
        method: "GET",
        path,
        query,
        client: "10.0.0.1".parse().unwrap(),
    };
    let link = keyring.verify(&req, now).unwrap();
    let p = link.params();
    assert_eq!(p.image_id.to_string(), id);
    assert_eq!(p.size, bytes.len() as u64);
    assert_eq!(
        hex::encode(p.sha512),
        img["os_hash_value"].as_str().unwrap()
    );
    assert_eq!(hex::encode(p.md5), img["checksum"].as_str().unwrap());
    assert_eq!(p.store.as_str(), "local");
    assert!(p.expires > now && p.expires <= now + 301);
    // The same node every time (rendezvous).
    let again = app.get(&format!("/v2/images/{id}/file"), MEMBER_A).await;
    assert!(again.header("location").starts_with(base));
    // Readers may not download; other projects cannot see the image.
    assert_eq!(
        app.get(&format!("/v2/images/{id}/file"), READER_A)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.get(&format!("/v2/images/{id}/file"), MEMBER_B)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn an_image_without_data_downloads_as_204() {
    let app = App::new();
    let id = app.create_id(MEMBER_A, json!({"name": "empty"})).await;
    assert_eq!(
        app.get(&format!("/v2/images/{id}/file"), MEMBER_A)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.upload(MEMBER_A, &id, Vec::new()).await.status,
        StatusCode::NO_CONTENT
    );
    let img = app.get(&format!("/v2/images/{id}"), MEMBER_A).await.json();
    assert_eq!(
        (img["status"].as_str(), img["size"].as_u64()),
        (Some("active"), Some(0))
    );
    assert_eq!(
        app.get(&format!("/v2/images/{id}/file"), MEMBER_A)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
}

#[tokio::test]
async fn an_upload_over_the_cap_is_413_and_leaves_the_image_queued_with_no_partial_file() {
    let app = App::with_cap(1000);
    let id = app.create_id(MEMBER_A, json!({"name": "big"})).await;
    let r = app.upload(MEMBER_A, &id, data(5000)).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    let img = app.get(&format!("/v2/images/{id}"), MEMBER_A).await.json();
    assert_eq!(img["status"], "queued");
    let leftovers: Vec<_> = std::fs::read_dir(app.dir.path().join("images"))
        .unwrap()
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // A later upload within the cap works.
    assert_eq!(
        app.upload(MEMBER_A, &id, data(900)).await.status,
        StatusCode::NO_CONTENT
    );
}

#[tokio::test]
async fn an_upload_whose_request_is_dropped_returns_the_image_to_queued() {
    use futures_util::StreamExt as _;
    let app = App::new();
    let id = app.create_id(MEMBER_A, json!({"name": "dropped"})).await;
    // One chunk, then nothing: the request hangs until the server drops it
    // (as hyper does when the client's connection closes).
    let first =
        futures_util::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from(data(4096)))]);
    let body = Body::from_stream(first.chain(futures_util::stream::pending()));
    let path = format!("/v2/images/{id}/file");
    let call = app.call(
        "PUT",
        &path,
        Some(MEMBER_A),
        body,
        Some("application/octet-stream"),
    );
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(300), call)
            .await
            .is_err(),
        "the upload finished without its body"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let img = app.get(&format!("/v2/images/{id}"), MEMBER_A).await.json();
        if img["status"] == "queued" {
            break;
        }
        assert_eq!(img["status"], "saving");
        assert!(std::time::Instant::now() < deadline, "left in saving");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        std::fs::read_dir(app.dir.path().join("images"))
            .unwrap()
            .next()
            .is_none(),
        "the partial file stayed"
    );
}

#[tokio::test]
async fn an_interrupted_upload_returns_the_image_to_queued() {
    let app = App::new();
    let id = app.create_id(MEMBER_A, json!({"name": "cut"})).await;
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = vec![
        Ok(bytes::Bytes::from(data(4096))),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "client went away",
        )),
    ];
    let body = Body::from_stream(futures_util::stream::iter(chunks));
    let r = app
        .call(
            "PUT",
            &format!("/v2/images/{id}/file"),
            Some(MEMBER_A),
            body,
            Some("application/octet-stream"),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let img = app.get(&format!("/v2/images/{id}"), MEMBER_A).await.json();
    assert_eq!(img["status"], "queued");
    assert_eq!(img["size"], Value::Null);
    assert!(
        std::fs::read_dir(app.dir.path().join("images"))
            .unwrap()
            .next()
            .is_none()
    );
}

#[tokio::test]
async fn patch_follows_glance() {
    let app = App::new();
    let id = app
        .create_id(MEMBER_A, json!({"name": "p", "foo": "1"}))
        .await;
    let r = app
        .patch(
            MEMBER_A,
            &id,
            json!([
                {"op": "replace", "path": "/name", "value": "renamed"},
                {"op": "add", "path": "/bar", "value": "2"},
                {"op": "remove", "path": "/foo"},
                {"op": "add", "path": "/min_ram", "value": 512},
                {"op": "replace", "path": "/tags", "value": ["a", "b"]}
            ]),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let img = r.json();
    assert_eq!(img["name"], "renamed");
    assert_eq!(img["bar"], "2");
    assert!(img.get("foo").is_none());
    assert_eq!(img["min_ram"], 512);
    assert_eq!(img["tags"], json!(["a", "b"]));
    // Wrong media type: 415 with Accept-Patch.
    let wrong = app
        .call(
            "PATCH",
            &format!("/v2/images/{id}"),
            Some(MEMBER_A),
            Body::from("[]"),
            Some("application/json"),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(
        wrong
            .header("accept-patch")
            .contains("openstack-images-v2.1-json-patch")
    );
    // Read-only: 403, and nothing of the patch applied.
    let ro = app
        .patch(MEMBER_A, &id, json!([{"op": "replace", "path": "/name", "value": "x"}, {"op": "replace", "path": "/size", "value": 1}]))
        .await;
    assert_eq!(ro.status, StatusCode::FORBIDDEN);
    assert!(
        ro.json()["message"]
            .as_str()
            .unwrap()
            .contains("'size' is read-only")
    );
    assert_eq!(
        app.get(&format!("/v2/images/{id}"), MEMBER_A).await.json()["name"],
        "renamed"
    );
    // Replace of a missing property: 409; bad op: 400; other project: 404; reader: 403.
    assert_eq!(
        app.patch(
            MEMBER_A,
            &id,
            json!([{"op": "replace", "path": "/nope", "value": "1"}])
        )
        .await
        .status,
        StatusCode::CONFLICT
    );
    assert_eq!(
        app.patch(MEMBER_A, &id, json!([{"op": "move", "path": "/name"}]))
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        app.patch(MEMBER_B, &id, json!([])).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.patch(READER_A, &id, json!([])).await.status,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn patch_speaks_the_v2_0_dialect_too() {
    let app = App::new();
    let id = app.create_id(MEMBER_A, json!({"name": "p"})).await;
    let v20 = |ops: Value| {
        let (app, id) = (&app, id.clone());
        async move {
            app.call(
                "PATCH",
                &format!("/v2/images/{id}"),
                Some(MEMBER_A),
                Body::from(ops.to_string()),
                Some("application/openstack-images-v2.0-json-patch"),
            )
            .await
        }
    };
    let r = v20(
        json!([{"replace": "/name", "value": "v20"}, {"add": "/os_distro", "value": "cirros"}]),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.json()["name"], "v20");
    assert_eq!(r.json()["os_distro"], "cirros");
    let r = v20(json!([{"remove": "/os_distro"}])).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.json().get("os_distro").is_none());
    // The other dialect's form, or two operations in one: 400.
    for bad in [
        json!([{"op": "replace", "path": "/name", "value": "x"}]),
        json!([{"replace": "/name", "add": "/x", "value": "x"}]),
        json!([{"replace": 1, "value": "x"}]),
    ] {
        assert_eq!(v20(bad).await.status, StatusCode::BAD_REQUEST);
    }
    assert_eq!(
        app.get(&format!("/v2/images/{id}"), MEMBER_A).await.json()["name"],
        "v20"
    );
}

#[tokio::test]
async fn os_glance_properties_are_reserved() {
    let app = App::new();
    let r = app
        .create(MEMBER_A, json!({"name": "r", "os_glance_foo": "bar"}))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("'os_glance_foo' is reserved")
    );
    let id = app.create_id(MEMBER_A, json!({"name": "r"})).await;
    for op in ["add", "remove"] {
        let r = app
            .patch(
                ADMIN,
                &id,
                json!([{"op": op, "path": "/os_glance_import_task", "value": "x"}]),
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{op}");
    }
    assert!(
        app.get(&format!("/v2/images/{id}"), MEMBER_A)
            .await
            .json()
            .get("os_glance_import_task")
            .is_none()
    );
}

#[tokio::test]
async fn tags_are_added_and_removed() {
    let app = App::new();
    let id = app.create_id(MEMBER_A, json!({"name": "t"})).await;
    let tag = |m: &'static str, t: &'static str| {
        let (app, id) = (&app, id.clone());
        async move {
            app.call(
                m,
                &format!("/v2/images/{id}/tags/{t}"),
                Some(MEMBER_A),
                Body::empty(),
                None,
            )
            .await
            .status
        }
    };
    assert_eq!(tag("PUT", "blue").await, StatusCode::NO_CONTENT);
    assert_eq!(tag("PUT", "blue").await, StatusCode::NO_CONTENT);
    assert_eq!(tag("PUT", "green").await, StatusCode::NO_CONTENT);
    assert_eq!(
        app.get(&format!("/v2/images/{id}"), MEMBER_A).await.json()["tags"],
        json!(["blue", "green"])
    );
    assert_eq!(tag("DELETE", "blue").await, StatusCode::NO_CONTENT);
    assert_eq!(tag("DELETE", "blue").await, StatusCode::NOT_FOUND);
    assert_eq!(
        app.get(&format!("/v2/images/{id}"), MEMBER_A).await.json()["tags"],
        json!(["green"])
    );
}

#[tokio::test]
async fn deactivated_images_download_for_admins_only() {
    let app = App::new();
    let id = app.create_id(MEMBER_A, json!({"name": "d"})).await;
    app.upload(MEMBER_A, &id, data(100)).await;
    let action = |a: &str, t: &str| {
        let path = format!("/v2/images/{id}/actions/{a}");
        let t = t.to_owned();
        let app = &app;
        async move {
            app.call("POST", &path, Some(&t), Body::empty(), None)
                .await
                .status
        }
    };
    // The owner's members or admins deactivate; readers and other projects do not.
    assert_eq!(action("deactivate", READER_A).await, StatusCode::FORBIDDEN);
    assert_eq!(action("deactivate", MEMBER_B).await, StatusCode::NOT_FOUND);
    assert_eq!(action("deactivate", MEMBER_A).await, StatusCode::NO_CONTENT);
    assert_eq!(
        app.get(&format!("/v2/images/{id}"), MEMBER_A).await.json()["status"],
        "deactivated"
    );
    assert_eq!(
        app.get(&format!("/v2/images/{id}/file"), MEMBER_A)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.get(&format!("/v2/images/{id}/file"), ADMIN)
            .await
            .status,
        StatusCode::TEMPORARY_REDIRECT
    );
    assert_eq!(action("reactivate", ADMIN).await, StatusCode::NO_CONTENT);
    assert_eq!(
        app.get(&format!("/v2/images/{id}/file"), MEMBER_A)
            .await
            .status,
        StatusCode::TEMPORARY_REDIRECT
    );
    let queued = app.create_id(MEMBER_A, json!({})).await;
    let r = app
        .send(
            "POST",
            &format!("/v2/images/{queued}/actions/deactivate"),
            ADMIN,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn delete_removes_record_and_data_and_honours_protected() {
    let app = App::new();
    let id = app
        .create_id(MEMBER_A, json!({"name": "x", "protected": true}))
        .await;
    app.upload(MEMBER_A, &id, data(10)).await;
    let path = format!("/v2/images/{id}");
    assert_eq!(
        app.send("DELETE", &path, MEMBER_A).await.status,
        StatusCode::FORBIDDEN
    );
    app.patch(
        MEMBER_A,
        &id,
        json!([{"op": "replace", "path": "/protected", "value": false}]),
    )
    .await;
    assert_eq!(
        app.send("DELETE", &path, READER_A).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.send("DELETE", &path, MEMBER_A).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(app.get(&path, MEMBER_A).await.status, StatusCode::NOT_FOUND);
    assert!(!app.dir.path().join("images").join(&id).exists());
}

#[tokio::test]
async fn lists_page_filter_and_sort() {
    let app = App::new();
    let mut ids = Vec::new();
    for i in 0..7 {
        let vis = if i % 2 == 0 { "private" } else { "shared" };
        let id = app
            .create_id(MEMBER_A, json!({"name": format!("img-{i}"), "visibility": vis, "tags": if i < 3 { vec!["small"] } else { vec![] }}))
            .await;
        ids.push(id);
    }
    // Three pages of 3, 3 and 1 by name ascending, following `next`.
    let mut seen = Vec::new();
    let mut url = "/v2/images?limit=3&sort_key=name&sort_dir=asc".to_owned();
    let mut pages = 0;
    loop {
        let page = app.get(&url, MEMBER_A).await.json();
        pages += 1;
        assert_eq!(page["schema"], "/v2/schemas/images");
        assert_eq!(
            page["first"],
            "/v2/images?limit=3&sort_key=name&sort_dir=asc"
        );
        for img in page["images"].as_array().unwrap() {
            seen.push(img["name"].as_str().unwrap().to_owned());
        }
        match page.get("next").and_then(Value::as_str) {
            Some(next) => url = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, (0..7).map(|i| format!("img-{i}")).collect::<Vec<_>>());
    let names = |v: Value| -> Vec<String> {
        v["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        names(
            app.get("/v2/images?sort=name:desc&limit=2", MEMBER_A)
                .await
                .json()
        ),
        ["img-6", "img-5"]
    );
    assert_eq!(
        names(
            app.get("/v2/images?tag=small&sort=name:asc", MEMBER_A)
                .await
                .json()
        ),
        ["img-0", "img-1", "img-2"]
    );
    assert_eq!(
        names(app.get("/v2/images?name=img-4", MEMBER_A).await.json()),
        ["img-4"]
    );
    assert_eq!(
        names(
            app.get("/v2/images?name=in:img-1,img-2&sort=name:asc", MEMBER_A)
                .await
                .json()
        ),
        ["img-1", "img-2"]
    );
    assert_eq!(
        names(
            app.get("/v2/images?visibility=private&sort=name:asc", MEMBER_A)
                .await
                .json()
        ),
        ["img-0", "img-2", "img-4", "img-6"]
    );
    assert_eq!(
        app.get("/v2/images?status=queued", MEMBER_A).await.json()["images"]
            .as_array()
            .unwrap()
            .len(),
        7
    );
    assert!(
        names(
            app.get("/v2/images?created_at=lt:2000-01-01T00:00:00Z", MEMBER_A)
                .await
                .json()
        )
        .is_empty()
    );
    assert_eq!(
        names(
            app.get("/v2/images?created_at=gte:2000-01-01T00:00:00Z", MEMBER_A)
                .await
                .json()
        )
        .len(),
        7
    );
    app.upload(MEMBER_A, &ids[5], data(50)).await;
    assert_eq!(
        names(
            app.get("/v2/images?size_min=10&size_max=100", MEMBER_A)
                .await
                .json()
        ),
        ["img-5"]
    );
    for bad in [
        "/v2/images?limit=x",
        "/v2/images?sort_dir=up&sort_key=name",
        "/v2/images?marker=nope",
        "/v2/images?sort_key=bogus",
        "/v2/images?visibility=everyone",
    ] {
        assert_eq!(
            app.get(bad, MEMBER_A).await.status,
            StatusCode::BAD_REQUEST,
            "{bad}"
        );
    }
}

#[tokio::test]
async fn schemas_and_stores_answer() {
    let app = App::new();
    let image = app.get("/v2/schemas/image", MEMBER_A).await.json();
    assert_eq!(image["name"], "image");
    assert_eq!(image["properties"]["size"]["readOnly"], true);
    assert_eq!(image["additionalProperties"]["type"], "string");
    assert!(
        image["properties"]["disk_format"]["enum"]
            .as_array()
            .unwrap()
            .contains(&json!("qcow2"))
    );
    assert_eq!(
        app.get("/v2/schemas/images", MEMBER_A).await.json()["name"],
        "images"
    );
    assert_eq!(
        app.get("/v2/schemas/member", MEMBER_A).await.json()["name"],
        "member"
    );
    assert_eq!(
        app.get("/v2/schemas/members", MEMBER_A).await.json()["name"],
        "members"
    );
    assert_eq!(
        app.get("/v2/info/stores", MEMBER_A).await.json(),
        json!({"stores": [{"id": "local", "default": "true"}]})
    );
}

#[tokio::test]
async fn a_malformed_image_id_names_no_image() {
    let app = App::new();
    for (method, path) in [
        ("GET", "/v2/images/not-a-uuid"),
        ("GET", "/v2/images/not-a-uuid/file"),
        ("PUT", "/v2/images/not-a-uuid/tags/x"),
        ("DELETE", "/v2/images/1234"),
    ] {
        let r = app
            .call(method, path, Some(MEMBER_A), Body::empty(), None)
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{method} {path}");
        assert_eq!(r.json()["code"], "404 Not Found");
    }
}

impl App {
    async fn send_json(&self, method: &str, path: &str, token: &str, body: Value) -> Reply {
        self.call(
            method,
            path,
            Some(token),
            Body::from(body.to_string()),
            Some("application/json"),
        )
        .await
    }

    async fn listed_ids(&self, path: &str, token: &str) -> Vec<String> {
        let r = self.get(path, token).await;
        assert_eq!(r.status, StatusCode::OK);
        r.json()["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_owned())
            .collect()
    }
}

#[tokio::test]
async fn sharing_follows_glances_members_api() {
    let app = App::new();
    let id = app
        .create_id(MEMBER_A, json!({"name": "s", "visibility": "shared"}))
        .await;
    let members = format!("/v2/images/{id}/members");
    let b = format!("{members}/proj-b");
    // Before sharing, proj-b cannot see it.
    assert_eq!(
        app.get(&format!("/v2/images/{id}"), MEMBER_B).await.status,
        StatusCode::NOT_FOUND
    );
    // Only the owner's members (or admins) share.
    let r = app
        .send_json("POST", &members, MEMBER_B, json!({"member": "proj-b"}))
        .await;
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "proj-b cannot see the image yet"
    );
    let r = app
        .send_json("POST", &members, READER_A, json!({"member": "proj-b"}))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "a reader does not share");
    let r = app
        .send_json("POST", &members, MEMBER_A, json!({"member": "proj-b"}))
        .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let m = r.json();
    assert_eq!(
        (m["member_id"].as_str(), m["status"].as_str()),
        (Some("proj-b"), Some("pending"))
    );
    assert_eq!(m["image_id"], id.as_str());
    assert_eq!(m["schema"], "/v2/schemas/member");
    let r = app
        .send_json("POST", &members, MEMBER_A, json!({"member": "proj-b"}))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    // Pending: visible by id, listed only when asked.
    assert_eq!(
        app.get(&format!("/v2/images/{id}"), MEMBER_B).await.status,
        StatusCode::OK
    );
    assert!(!app.listed_ids("/v2/images", MEMBER_B).await.contains(&id));
    assert!(
        app.listed_ids("/v2/images?member_status=pending", MEMBER_B)
            .await
            .contains(&id)
    );
    assert!(
        app.listed_ids("/v2/images?member_status=all", MEMBER_B)
            .await
            .contains(&id)
    );
    assert_eq!(
        app.get("/v2/images?member_status=maybe", MEMBER_B)
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    // Another project learns nothing of proj-b's membership.
    let other = format!("{members}/proj-c");
    let r = app
        .send_json("PUT", &other, MEMBER_B, json!({"status": "accepted"}))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // The owner cannot answer for proj-b; proj-b can.
    let r = app
        .send_json("PUT", &b, MEMBER_A, json!({"status": "accepted"}))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = app
        .send_json("PUT", &b, MEMBER_B, json!({"status": "yes"}))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = app
        .send_json("PUT", &b, MEMBER_B, json!({"status": "accepted"}))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["status"], "accepted");
    assert!(app.listed_ids("/v2/images", MEMBER_B).await.contains(&id));
    assert!(
        !app.listed_ids("/v2/images?member_status=rejected", MEMBER_B)
            .await
            .contains(&id)
    );
    // The owner sees every member; a member sees its own entry.
    let r = app.get(&members, MEMBER_A).await;
    assert_eq!(r.json()["members"].as_array().unwrap().len(), 1);
    assert_eq!(r.json()["schema"], "/v2/schemas/members");
    assert_eq!(app.get(&b, MEMBER_B).await.json()["status"], "accepted");
    // Rejected: visible, not listed.
    app.send_json("PUT", &b, MEMBER_B, json!({"status": "rejected"}))
        .await;
    assert!(!app.listed_ids("/v2/images", MEMBER_B).await.contains(&id));
    assert_eq!(
        app.get(&format!("/v2/images/{id}"), MEMBER_B).await.status,
        StatusCode::OK
    );
    // The owner stops sharing: gone for proj-b.
    let r = app.send("DELETE", &b, MEMBER_A).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.get(&format!("/v2/images/{id}"), MEMBER_B).await.status,
        StatusCode::NOT_FOUND
    );
    let r = app.send("DELETE", &b, MEMBER_A).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // Only shared images have members.
    let private = app
        .create_id(MEMBER_A, json!({"name": "p", "visibility": "private"}))
        .await;
    let r = app
        .send_json(
            "POST",
            &format!("/v2/images/{private}/members"),
            MEMBER_A,
            json!({"member": "proj-b"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn errors_are_html_unless_json_is_asked_for_as_glance_answers() {
    let app = App::new();
    let req = Request::builder()
        .uri("/v2/images/00000000-0000-4000-8000-000000000001")
        .header("X-Auth-Token", MEMBER_A)
        .body(Body::empty())
        .unwrap();
    let resp = router(Arc::clone(&app.state)).oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(resp.headers()["content-type"], "text/html; charset=UTF-8");
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let page = String::from_utf8(body.to_vec()).unwrap();
    assert!(page.contains("<title>404 Not Found</title>"), "{page}");
    assert!(
        page.contains("00000000-0000-4000-8000-000000000001"),
        "{page}"
    );
}

/// Uploads a 1 MiB image as MEMBER_A; returns its id.
async fn uploaded(app: &App) -> String {
    let id = app
        .create_id(
            MEMBER_A,
            json!({"name": "f", "disk_format": "raw", "container_format": "bare"}),
        )
        .await;
    let r = app.upload(MEMBER_A, &id, data(1 << 20)).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    id
}

/// The stream node base URL a download of `id` is redirected to.
async fn node_of(app: &App, id: &str) -> String {
    let dl = app.get(&format!("/v2/images/{id}/file"), MEMBER_A).await;
    assert_eq!(dl.status, StatusCode::TEMPORARY_REDIRECT);
    let location = dl.header("location");
    location[..location.find("/v1/images/").unwrap()].to_owned()
}

#[tokio::test]
async fn stream_nodes_are_admin_only_and_a_drained_node_gets_no_downloads() {
    let app = App::new();
    assert_eq!(
        app.get("/admin/nodes", MEMBER_A).await.status,
        StatusCode::FORBIDDEN
    );
    let nodes = app.get("/admin/nodes", ADMIN).await.json();
    let names: Vec<&str> = nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["stream-a:9393", "stream-b:9393"]);
    assert_eq!(nodes["nodes"][0]["health"], "unknown");
    assert_eq!(nodes["nodes"][0]["eligible"], true);
    let id = uploaded(&app).await;
    let first = node_of(&app, &id).await;
    let name = first.trim_start_matches("http://");
    let drain = app
        .send("POST", &format!("/admin/nodes/{name}/drain"), ADMIN)
        .await;
    assert_eq!(drain.status, StatusCode::OK);
    assert_eq!(drain.json()["drained"], true);
    assert_eq!(drain.json()["eligible"], false);
    let other = node_of(&app, &id).await;
    assert_ne!(other, first, "a drained node still gets downloads");
    let undrain = app
        .send("POST", &format!("/admin/nodes/{name}/undrain"), ADMIN)
        .await;
    assert_eq!(undrain.status, StatusCode::OK);
    assert_eq!(node_of(&app, &id).await, first);
    // Both drained: no node for downloads at all.
    for n in ["stream-a:9393", "stream-b:9393"] {
        let path = format!("/admin/nodes/{n}/drain");
        app.send("POST", &path, ADMIN).await;
    }
    let none = app.get(&format!("/v2/images/{id}/file"), MEMBER_A).await;
    assert_eq!(none.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        none.json()["message"]
            .as_str()
            .unwrap()
            .contains("No stream node")
    );
}

#[tokio::test]
async fn nodes_are_registered_checked_and_removed_through_the_admin_api() {
    let app = App::new();
    let put = |body: Value, name: &'static str| {
        let app = &app;
        async move {
            app.call(
                "PUT",
                &format!("/admin/nodes/{name}"),
                Some(ADMIN),
                Body::from(body.to_string()),
                Some("application/json"),
            )
            .await
        }
    };
    let bad = put(json!({"public_url": "ftp://x"}), "stream-c").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.json()["message"].as_str().unwrap().contains("http://"));
    let bad = put(json!({"public_url": "http://x", "weight": 0}), "stream-c").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let bad = put(json!({"public_url": "http://x"}), "bad%2Fname").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(
        bad.json()["message"]
            .as_str()
            .unwrap()
            .contains("node name")
    );
    // Nothing listens on port 1: the node is registered, and its first
    // health check (at once) records why it failed.
    let made = put(
        json!({"public_url": "http://127.0.0.1:1", "weight": 300}),
        "stream-c",
    )
    .await;
    assert_eq!(
        made.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&made.body)
    );
    assert_eq!(made.json()["weight"], 300);
    assert!(
        made.json()["last_error"]
            .as_str()
            .unwrap()
            .contains("connect")
    );
    let again = put(
        json!({"public_url": "http://127.0.0.1:1", "weight": 200}),
        "stream-c",
    )
    .await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(
        app.get("/admin/nodes", ADMIN).await.json()["nodes"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let del = app.send("DELETE", "/admin/nodes/stream-c", ADMIN).await;
    assert_eq!(del.status, StatusCode::NO_CONTENT);
    let del = app.send("DELETE", "/admin/nodes/stream-c", ADMIN).await;
    assert_eq!(del.status, StatusCode::NOT_FOUND);
    // Without the nodes' admin token, keys cannot be rotated (they could not
    // reach the nodes) and the cache API is not offered.
    let rotate = app.send("POST", "/admin/keys/rotate", ADMIN).await;
    assert_eq!(rotate.status, StatusCode::CONFLICT);
    assert!(
        rotate.json()["message"]
            .as_str()
            .unwrap()
            .contains("admin_token_file")
    );
    let keys = app.get("/admin/keys", ADMIN).await.json();
    assert_eq!(keys["primary"], "k1");
    assert!(
        keys.to_string().find("AUpHx").is_none(),
        "a secret in {keys}"
    );
    let cache = app.get("/v2/cache", ADMIN).await;
    assert_eq!(cache.status, StatusCode::NOT_FOUND);
    assert!(
        cache.json()["message"]
            .as_str()
            .unwrap()
            .contains("not supported")
    );
    let versions = app
        .call("GET", "/versions", None, Body::empty(), None)
        .await
        .json();
    assert_eq!(versions["versions"][0]["id"], "v2.16");
}

#[tokio::test]
async fn the_links_api_signs_stream_links_and_keeps_direct_ones_for_services() {
    let app = App::new();
    let id = uploaded(&app).await;
    let link = |token: &'static str, body: &'static str| {
        let app = &app;
        let path = format!("/v2/images/{id}/links");
        async move {
            app.call(
                "POST",
                &path,
                Some(token),
                Body::from(body),
                Some("application/json"),
            )
            .await
        }
    };
    let r = link(MEMBER_A, "").await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let j = r.json();
    assert_eq!(j["kind"], "stream");
    let node = node_of(&app, &id).await;
    assert!(
        j["url"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{node}/v1/images/{id}?"))
    );
    let expires = time::OffsetDateTime::parse(
        j["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let left = expires - time::OffsetDateTime::now_utc();
    assert!(
        left.whole_seconds() > 250 && left.whole_seconds() <= 300,
        "{left}"
    );
    assert_eq!(
        link(MEMBER_A, r#"{"kind":"stream"}"#).await.status,
        StatusCode::OK
    );
    let direct = link(MEMBER_A, r#"{"kind":"direct"}"#).await;
    assert_eq!(direct.status, StatusCode::FORBIDDEN);
    assert!(
        direct.json()["message"]
            .as_str()
            .unwrap()
            .contains("service and admin")
    );
    // An admin may, but a file store has no direct links.
    let direct = link(ADMIN, r#"{"kind":"direct"}"#).await;
    assert_eq!(direct.status, StatusCode::CONFLICT);
    assert!(
        direct.json()["message"]
            .as_str()
            .unwrap()
            .contains("kind file")
    );
    assert_eq!(
        link(MEMBER_A, r#"{"kind":"other"}"#).await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(link(READER_A, "").await.status, StatusCode::FORBIDDEN);
    assert_eq!(link(MEMBER_B, "").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_links_by_kind() {
    let app = App::new();
    let id = uploaded(&app).await;
    node_of(&app, &id).await;
    node_of(&app, &id).await;
    app.get("/v2/images/not-a-uuid", MEMBER_A).await;
    app.send("FROB", "/v2/images", MEMBER_A).await;
    let m = app.call("GET", "/metrics", None, Body::empty(), None).await;
    assert_eq!(m.status, StatusCode::OK);
    let text = String::from_utf8(m.body).unwrap();
    for want in [
        "glance_api_requests_total{route=\"/v2/images/{id}/file\",method=\"GET\",status=\"307\"} 2",
        "glance_api_requests_total{route=\"/v2/images/{id}/file\",method=\"PUT\",status=\"204\"} 1",
        "glance_api_requests_total{route=\"/v2/images/{id}\",method=\"GET\",status=\"404\"} 1",
        "glance_api_links_issued_total{kind=\"stream\"} 2",
        "glance_api_request_duration_seconds_count{route=\"/v2/images/{id}/file\",method=\"GET\"} 2",
        "glance_api_stream_node_eligible{node=\"stream-a:9393\"} 1",
        "glance_api_stream_node_drained{node=\"stream-b:9393\"} 0",
        "route=\"/v2/images\",method=\"other\",status=\"405\"} 1",
    ] {
        assert!(text.contains(want), "no {want} in\n{text}");
    }
    assert!(
        !text.contains(ADMIN) && !text.contains(MEMBER_A),
        "a token in the metrics"
    );
}
