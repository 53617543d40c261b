//! Metadata definitions (`/v2/metadefs/...`) through the router: every
//! route, Glance's visibility and protection rules, and what lands in the
//! metadata store.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod app;
mod common;

use app::*;
use axum::body::Body;
use axum::http::StatusCode;
use serde_json::{Value, json};

impl App {
    async fn json_call(&self, method: &str, path: &str, token: &str, body: Value) -> Reply {
        self.call(
            method,
            path,
            Some(token),
            Body::from(body.to_string()),
            Some("application/json"),
        )
        .await
    }

    /// Creates a namespace as the admin; panics unless `201`.
    async fn namespace(&self, body: Value) -> Value {
        let r = self
            .json_call("POST", "/v2/metadefs/namespaces", ADMIN, body)
            .await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "{}",
            String::from_utf8_lossy(&r.body)
        );
        r.json()
    }
}

fn names(list: &Value, key: &str, field: &str) -> Vec<String> {
    list[key]
        .as_array()
        .unwrap_or_else(|| panic!("no list {key} in {list}"))
        .iter()
        .map(|i| i[field].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn namespaces_are_created_listed_replaced_and_deleted() {
    let app = App::new();
    let ns = app
        .namespace(json!({
            "namespace": "OS::Compute::Quota", "display_name": "Quota", "description": "CPU limits",
            "visibility": "public", "protected": true,
            "resource_type_associations": [{"name": "OS::Nova::Flavor", "prefix": "quota:"}],
            "properties": {"cpu_shares": {"title": "CPU shares", "type": "integer", "minimum": 0, "default": 1024}},
            "objects": [{"name": "CPU Limits", "required": ["cpu_period"],
                         "properties": {"cpu_period": {"title": "Period", "type": "integer"}}}],
            "tags": [{"name": "compute"}]
        }))
        .await;
    assert_eq!(ns["namespace"], "OS::Compute::Quota");
    assert_eq!(ns["owner"], "ops");
    assert_eq!(ns["self"], "/v2/metadefs/namespaces/OS::Compute::Quota");
    assert_eq!(ns["schema"], "/v2/schemas/metadefs/namespace");
    assert_eq!(ns["protected"], true);
    // The same name again: 409.
    let again = app
        .json_call(
            "POST",
            "/v2/metadefs/namespaces",
            ADMIN,
            json!({"namespace": "OS::Compute::Quota"}),
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);

    // Shown whole, and with the flavor prefix when asked for.
    let shown = app
        .get("/v2/metadefs/namespaces/OS::Compute::Quota", MEMBER_B)
        .await;
    assert_eq!(shown.status, StatusCode::OK);
    let shown = shown.json();
    assert_eq!(shown["properties"]["cpu_shares"]["default"], "1024");
    assert_eq!(shown["objects"][0]["name"], "CPU Limits");
    assert_eq!(shown["tags"], json!([{"name": "compute"}]));
    assert_eq!(shown["resource_type_associations"][0]["prefix"], "quota:");
    let flavor = app
        .get(
            "/v2/metadefs/namespaces/OS::Compute::Quota?resource_type=OS::Nova::Flavor",
            ADMIN,
        )
        .await
        .json();
    assert!(flavor["properties"].get("quota:cpu_shares").is_some());
    assert_eq!(
        flavor["objects"][0]["required"],
        json!(["quota:cpu_period"])
    );
    let prefixed = app
        .get(
            "/v2/metadefs/namespaces/OS::Compute::Quota/properties/quota:cpu_shares?resource_type=OS::Nova::Flavor",
            ADMIN,
        )
        .await;
    assert_eq!(prefixed.status, StatusCode::OK);
    assert_eq!(prefixed.json()["title"], "CPU shares");

    // Protected: no delete, but it can be changed (and renamed).
    let refused = app
        .send(
            "DELETE",
            "/v2/metadefs/namespaces/OS::Compute::Quota",
            ADMIN,
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let replaced = app
        .json_call(
            "PUT",
            "/v2/metadefs/namespaces/OS::Compute::Quota",
            ADMIN,
            json!({"namespace": "OS::Compute::Limits", "visibility": "private", "protected": false}),
        )
        .await;
    assert_eq!(
        replaced.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&replaced.body)
    );
    let replaced = replaced.json();
    assert_eq!(replaced["protected"], false);
    assert_eq!(replaced["visibility"], "private");
    assert!(
        replaced.get("display_name").is_none(),
        "a replacement clears what it omits"
    );
    assert_eq!(
        replaced["self"],
        "/v2/metadefs/namespaces/OS::Compute::Limits"
    );
    assert_eq!(
        app.get("/v2/metadefs/namespaces/OS::Compute::Quota", ADMIN)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let moved = app
        .get("/v2/metadefs/namespaces/OS::Compute::Limits", ADMIN)
        .await
        .json();
    assert_eq!(
        moved["objects"][0]["name"], "CPU Limits",
        "the contents moved with the name"
    );
    // Now private to the admin's project: another project sees nothing.
    assert_eq!(
        app.get("/v2/metadefs/namespaces/OS::Compute::Limits", MEMBER_B)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    // Deleted with everything in it.
    let deleted = app
        .send(
            "DELETE",
            "/v2/metadefs/namespaces/OS::Compute::Limits",
            ADMIN,
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.get("/v2/metadefs/namespaces/OS::Compute::Limits/objects", ADMIN)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn only_admins_write_and_others_see_public_or_their_own() {
    let app = App::new();
    app.namespace(json!({"namespace": "pub", "visibility": "public"}))
        .await;
    app.namespace(json!({"namespace": "mine", "owner": "proj-a"}))
        .await;
    app.namespace(json!({"namespace": "theirs", "owner": "proj-b"}))
        .await;
    // Members cannot create: 403.
    let r = app
        .json_call(
            "POST",
            "/v2/metadefs/namespaces",
            MEMBER_A,
            json!({"namespace": "x"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // A change to a namespace the member sees: 403; to one it does not: 404.
    let put = |ns: &'static str| {
        let app = &app;
        async move {
            app.json_call(
                "PUT",
                &format!("/v2/metadefs/namespaces/{ns}"),
                MEMBER_A,
                json!({"namespace": ns}),
            )
            .await
            .status
        }
    };
    assert_eq!(put("pub").await, StatusCode::FORBIDDEN);
    assert_eq!(put("mine").await, StatusCode::FORBIDDEN);
    assert_eq!(put("theirs").await, StatusCode::NOT_FOUND);
    let tag = app
        .send("POST", "/v2/metadefs/namespaces/mine/tags/t", MEMBER_A)
        .await;
    assert_eq!(tag.status, StatusCode::FORBIDDEN);
    // Lists hold what each caller sees; a reader reads too.
    for (token, expected) in [
        (MEMBER_A, vec!["mine", "pub"]),
        (READER_A, vec!["mine", "pub"]),
        (MEMBER_B, vec!["pub", "theirs"]),
        (ADMIN, vec!["mine", "pub", "theirs"]),
    ] {
        let mut seen = names(
            &app.get("/v2/metadefs/namespaces", token).await.json(),
            "namespaces",
            "namespace",
        );
        seen.sort();
        assert_eq!(seen, expected, "{token}");
    }
    let public = app
        .get("/v2/metadefs/namespaces?visibility=public", ADMIN)
        .await
        .json();
    assert_eq!(names(&public, "namespaces", "namespace"), ["pub"]);
    // Read-only fields: 403; unknown ones and bad values: 400.
    for (body, status) in [
        (
            json!({"namespace": "n", "created_at": "x"}),
            StatusCode::FORBIDDEN,
        ),
        (
            json!({"namespace": "n", "self": "x"}),
            StatusCode::FORBIDDEN,
        ),
        (
            json!({"namespace": "n", "colour": "red"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"namespace": "n", "visibility": "shared"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"namespace": "n".repeat(81)}),
            StatusCode::BAD_REQUEST,
        ),
        (json!({"display_name": "no name"}), StatusCode::BAD_REQUEST),
    ] {
        let r = app
            .json_call("POST", "/v2/metadefs/namespaces", ADMIN, body.clone())
            .await;
        assert_eq!(r.status, status, "{body}");
    }
    let empty = app
        .call(
            "POST",
            "/v2/metadefs/namespaces",
            Some(ADMIN),
            Body::empty(),
            Some("application/json"),
        )
        .await;
    assert_eq!(empty.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_namespace_list_pages_newest_first() {
    let app = App::new();
    for i in 0..5 {
        app.namespace(json!({"namespace": format!("ns-{i}"), "visibility": "public"}))
            .await;
    }
    let first = app
        .get("/v2/metadefs/namespaces?limit=2", MEMBER_A)
        .await
        .json();
    assert_eq!(names(&first, "namespaces", "namespace"), ["ns-4", "ns-3"]);
    let next = first["next"].as_str().unwrap();
    assert!(
        next.contains("marker=ns-3") && next.contains("limit=2"),
        "{next}"
    );
    let second = app.get(next, MEMBER_A).await.json();
    assert_eq!(names(&second, "namespaces", "namespace"), ["ns-2", "ns-1"]);
    let by_name = app
        .get(
            "/v2/metadefs/namespaces?sort_key=namespace&sort_dir=asc&limit=1",
            MEMBER_A,
        )
        .await
        .json();
    assert_eq!(names(&by_name, "namespaces", "namespace"), ["ns-0"]);
    for bad in [
        "sort_dir=up",
        "sort_key=colour",
        "limit=-1",
        "visibility=shared",
    ] {
        let r = app
            .get(&format!("/v2/metadefs/namespaces?{bad}"), MEMBER_A)
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    assert_eq!(
        app.get("/v2/metadefs/namespaces?marker=nope", MEMBER_A)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn objects_properties_and_tags_follow_glance() {
    let app = App::new();
    app.namespace(json!({"namespace": "ns", "visibility": "public"}))
        .await;
    let base = "/v2/metadefs/namespaces/ns";
    // Objects: create, duplicate, show, rename, delete.
    let obj = app
        .json_call(
            "POST",
            &format!("{base}/objects"),
            ADMIN,
            json!({"name": "o1", "description": "d"}),
        )
        .await;
    assert_eq!(obj.status, StatusCode::CREATED);
    assert_eq!(obj.json()["self"], "/v2/metadefs/namespaces/ns/objects/o1");
    let dup = app
        .json_call(
            "POST",
            &format!("{base}/objects"),
            ADMIN,
            json!({"name": "o1"}),
        )
        .await;
    assert_eq!(dup.status, StatusCode::CONFLICT);
    let bad = app
        .json_call(
            "POST",
            &format!("{base}/objects"),
            ADMIN,
            json!({"name": "o2", "properties": {"p": {"type": "string"}}}),
        )
        .await;
    assert_eq!(
        bad.status,
        StatusCode::BAD_REQUEST,
        "a property without a title"
    );
    let renamed = app
        .json_call(
            "PUT",
            &format!("{base}/objects/o1"),
            ADMIN,
            json!({"name": "o2"}),
        )
        .await;
    assert_eq!(renamed.status, StatusCode::OK);
    assert_eq!(renamed.json()["name"], "o2");
    assert!(renamed.json().get("description").is_none());
    assert_eq!(
        app.get(&format!("{base}/objects/o1"), ADMIN).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get(&format!("{base}/objects/o2"), MEMBER_B)
            .await
            .json()["name"],
        "o2"
    );
    assert_eq!(
        names(
            &app.get(&format!("{base}/objects"), MEMBER_B).await.json(),
            "objects",
            "name"
        ),
        ["o2"]
    );
    assert_eq!(
        app.send("DELETE", &format!("{base}/objects/o2"), ADMIN)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.send("DELETE", &format!("{base}/objects/o2"), ADMIN)
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    // Properties: a map by name, with the name in each definition.
    let prop = json!({"name": "hypervisor_type", "title": "Hypervisor", "type": "string", "enum": ["kvm", "qemu"]});
    let r = app
        .json_call("POST", &format!("{base}/properties"), ADMIN, prop.clone())
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.json()["name"], "hypervisor_type");
    assert_eq!(
        app.json_call("POST", &format!("{base}/properties"), ADMIN, prop)
            .await
            .status,
        StatusCode::CONFLICT
    );
    let shown = app
        .get(&format!("{base}/properties/hypervisor_type"), MEMBER_A)
        .await
        .json();
    assert_eq!(shown["enum"], json!(["kvm", "qemu"]));
    let updated = app
        .json_call(
            "PUT",
            &format!("{base}/properties/hypervisor_type"),
            ADMIN,
            json!({"name": "hypervisor_type", "title": "Hypervisor type", "type": "string"}),
        )
        .await;
    assert_eq!(updated.json()["title"], "Hypervisor type");
    assert!(updated.json().get("enum").is_none());
    let listed = app
        .get(&format!("{base}/properties"), MEMBER_A)
        .await
        .json();
    assert_eq!(
        listed["properties"]["hypervisor_type"]["title"],
        "Hypervisor type"
    );
    assert_eq!(
        app.send(
            "DELETE",
            &format!("{base}/properties/hypervisor_type"),
            ADMIN
        )
        .await
        .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.get(&format!("{base}/properties"), MEMBER_A)
            .await
            .json(),
        json!({"properties": {}})
    );

    // Tags: bulk create replaces unless appending; a clash changes nothing.
    let bulk = |tags: Value, append: bool| {
        let app = &app;
        async move {
            let mut req = axum::http::Request::builder()
                .method("POST")
                .uri("/v2/metadefs/namespaces/ns/tags")
                .header("X-Auth-Token", ADMIN)
                .header("Content-Type", "application/json");
            if append {
                req = req.header("X-Openstack-Append", "True");
            }
            app.request(
                req.body(Body::from(json!({"tags": tags}).to_string()))
                    .unwrap(),
            )
            .await
        }
    };
    let r = bulk(json!([{"name": "a"}, {"name": "b"}]), false).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.json(), json!({"tags": [{"name": "a"}, {"name": "b"}]}));
    assert_eq!(
        bulk(json!([{"name": "c"}]), true).await.status,
        StatusCode::CREATED
    );
    let tags = || async {
        names(
            &app.get("/v2/metadefs/namespaces/ns/tags", MEMBER_A)
                .await
                .json(),
            "tags",
            "name",
        )
    };
    assert_eq!(tags().await, ["a", "b", "c"]);
    assert_eq!(
        bulk(json!([{"name": "c"}, {"name": "d"}]), true)
            .await
            .status,
        StatusCode::CONFLICT
    );
    assert_eq!(
        tags().await,
        ["a", "b", "c"],
        "a failed bulk create changes nothing"
    );
    assert_eq!(
        bulk(json!([{"name": "x"}]), false).await.status,
        StatusCode::CREATED
    );
    assert_eq!(tags().await, ["x"]);
    // One tag: created without a body, renamed, deleted.
    let one = app.send("POST", &format!("{base}/tags/solo"), ADMIN).await;
    assert_eq!(one.status, StatusCode::CREATED);
    assert_eq!(one.json()["name"], "solo");
    assert_eq!(
        app.send("POST", &format!("{base}/tags/solo"), ADMIN)
            .await
            .status,
        StatusCode::CONFLICT
    );
    let renamed = app
        .json_call(
            "PUT",
            &format!("{base}/tags/solo"),
            ADMIN,
            json!({"name": "duo"}),
        )
        .await;
    assert_eq!(renamed.json()["name"], "duo");
    assert_eq!(
        app.get(&format!("{base}/tags/duo"), MEMBER_B).await.json()["name"],
        "duo"
    );
    assert_eq!(
        app.send("DELETE", &format!("{base}/tags/duo"), ADMIN)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.get(&format!("{base}/tags/duo"), ADMIN).await.status,
        StatusCode::NOT_FOUND
    );
    let limited = app.get(&format!("{base}/tags?limit=0"), ADMIN).await.json();
    assert_eq!(limited, json!({"tags": []}));

    // Deleting all of a kind.
    app.json_call(
        "POST",
        &format!("{base}/objects"),
        ADMIN,
        json!({"name": "o"}),
    )
    .await;
    for kind in ["objects", "tags", "properties"] {
        let r = app.send("DELETE", &format!("{base}/{kind}"), ADMIN).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{kind}");
    }
    let ns = app.get(base, ADMIN).await.json();
    assert!(ns.get("objects").is_none() && ns.get("tags").is_none());
}

#[tokio::test]
async fn a_protected_namespace_keeps_everything_it_holds() {
    let app = App::new();
    app.namespace(json!({
        "namespace": "locked", "protected": true,
        "objects": [{"name": "o"}], "tags": [{"name": "t"}],
        "properties": {"p": {"title": "P", "type": "string"}},
        "resource_type_associations": [{"name": "OS::Glance::Image"}]
    }))
    .await;
    let base = "/v2/metadefs/namespaces/locked";
    for path in [
        "objects/o",
        "tags/t",
        "properties/p",
        "resource_types/OS::Glance::Image",
        "objects",
        "tags",
        "properties",
        "",
    ] {
        let r = app
            .send(
                "DELETE",
                format!("{base}/{path}").trim_end_matches('/'),
                ADMIN,
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}");
    }
    let ns = app.get(base, ADMIN).await.json();
    assert_eq!(ns["objects"][0]["name"], "o");
    assert_eq!(ns["tags"][0]["name"], "t");
    assert_eq!(
        ns["resource_type_associations"][0]["name"],
        "OS::Glance::Image"
    );
    // Adding stays allowed.
    let r = app.send("POST", &format!("{base}/tags/t2"), ADMIN).await;
    assert_eq!(r.status, StatusCode::CREATED);
}

#[tokio::test]
async fn resource_types_are_seeded_and_associations_made_on_the_fly() {
    let app = App::new();
    let types = app.get("/v2/metadefs/resource_types", READER_A).await;
    assert_eq!(types.status, StatusCode::OK);
    let types = names(&types.json(), "resource_types", "name");
    assert!(
        types.contains(&"OS::Glance::Image".to_owned()) && types.len() >= 6,
        "{types:?}"
    );
    app.namespace(json!({"namespace": "n", "visibility": "public"}))
        .await;
    let base = "/v2/metadefs/namespaces/n/resource_types";
    let made = app
        .json_call(
            "POST",
            base,
            ADMIN,
            json!({"name": "OS::Manila::Share", "prefix": "share:"}),
        )
        .await;
    assert_eq!(made.status, StatusCode::CREATED);
    assert_eq!(made.json()["prefix"], "share:");
    assert_eq!(
        app.json_call("POST", base, ADMIN, json!({"name": "OS::Manila::Share"}))
            .await
            .status,
        StatusCode::CONFLICT
    );
    let listed = app.get(base, MEMBER_A).await.json();
    assert_eq!(
        names(&listed, "resource_type_associations", "name"),
        ["OS::Manila::Share"]
    );
    let all = names(
        &app.get("/v2/metadefs/resource_types", ADMIN).await.json(),
        "resource_types",
        "name",
    );
    assert!(all.contains(&"OS::Manila::Share".to_owned()));
    let filtered = app
        .get(
            "/v2/metadefs/namespaces?resource_types=OS::Manila::Share,OS::Nova::Server",
            MEMBER_A,
        )
        .await
        .json();
    assert_eq!(names(&filtered, "namespaces", "namespace"), ["n"]);
    assert_eq!(
        app.send("DELETE", &format!("{base}/OS::Manila::Share"), ADMIN)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.send("DELETE", &format!("{base}/OS::Manila::Share"), ADMIN)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let after = names(
        &app.get("/v2/metadefs/resource_types", ADMIN).await.json(),
        "resource_types",
        "name",
    );
    assert!(
        after.contains(&"OS::Manila::Share".to_owned()),
        "the type outlives the association"
    );
}

#[tokio::test]
async fn every_metadefs_schema_is_served_to_any_caller() {
    let app = App::new();
    for (path, name) in [
        ("namespace", "namespace"),
        ("namespaces", "namespaces"),
        ("object", "object"),
        ("objects", "objects"),
        ("property", "property"),
        ("properties", "properties"),
        ("tag", "tag"),
        ("tags", "tags"),
        ("resource_type", "resource_type_association"),
        ("resource_types", "resource_type_associations"),
    ] {
        let r = app
            .get(&format!("/v2/schemas/metadefs/{path}"), READER_A)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert_eq!(r.json()["name"], name);
    }
    let ns = app
        .get("/v2/schemas/metadefs/namespace", MEMBER_A)
        .await
        .json();
    assert_eq!(ns["required"], json!(["namespace"]));
    assert_eq!(ns["properties"]["namespace"]["maxLength"], 80);
    assert_eq!(
        app.get("/v2/schemas/metadefs/nope", MEMBER_A).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_namespace_holds_a_bounded_number_of_definitions() {
    let app = App::new();
    app.namespace(json!({"namespace": "big"})).await;
    let tags = |n: usize| json!({"tags": (0..n).map(|i| json!({"name": format!("t{i}")})).collect::<Vec<_>>()});
    let r = app
        .json_call(
            "POST",
            "/v2/metadefs/namespaces/big/tags",
            ADMIN,
            tags(1000),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = app
        .json_call(
            "POST",
            "/v2/metadefs/namespaces/big/tags",
            ADMIN,
            tags(1001),
        )
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    let one_more = app
        .send("POST", "/v2/metadefs/namespaces/big/tags/extra", ADMIN)
        .await;
    assert_eq!(one_more.status, StatusCode::PAYLOAD_TOO_LARGE);
    let kept = app
        .get("/v2/metadefs/namespaces/big/tags", ADMIN)
        .await
        .json();
    assert_eq!(
        kept["tags"].as_array().unwrap().len(),
        1000,
        "nothing changed"
    );
}
