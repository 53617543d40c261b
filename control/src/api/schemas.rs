//! JSON schemas of the API's documents. python-glanceclient validates what it
//! sends against `/v2/schemas/image`, so this must accept every property the
//! API accepts (and mark the ones it refuses as read-only).

use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::model::{CONTAINER_FORMATS, DISK_FORMATS};

const UUID_PATTERN: &str =
    "^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$";

fn nullable_enum(values: &[&str]) -> Value {
    let mut all: Vec<Value> = vec![Value::Null];
    all.extend(values.iter().map(|v| json!(v)));
    Value::Array(all)
}

/// The image schema.
pub fn image_schema() -> Value {
    let ro_string = |d: &str| json!({"type": "string", "readOnly": true, "description": d});
    json!({
        "name": "image",
        "properties": {
            "id": {"type": "string", "pattern": UUID_PATTERN, "description": "Image id (UUID)"},
            "name": {"type": ["null", "string"], "maxLength": 255, "description": "Name of the image"},
            "status": {"type": "string", "readOnly": true, "description": "Lifecycle state",
                "enum": ["queued", "saving", "active", "killed", "deleted", "uploading", "importing", "pending_delete", "deactivated"]},
            "visibility": {"type": "string", "enum": ["community", "public", "private", "shared"], "description": "Who may see the image"},
            "protected": {"type": "boolean", "description": "Protected images cannot be deleted"},
            "os_hidden": {"type": "boolean", "description": "Hidden from default image lists"},
            "checksum": {"type": ["null", "string"], "readOnly": true, "maxLength": 32, "description": "md5 of the data"},
            "os_hash_algo": {"type": ["null", "string"], "readOnly": true, "maxLength": 64, "description": "Algorithm of os_hash_value"},
            "os_hash_value": {"type": ["null", "string"], "readOnly": true, "maxLength": 128, "description": "Secure hash of the data"},
            "owner": {"type": ["null", "string"], "maxLength": 255, "description": "Owning project"},
            "size": {"type": ["null", "integer"], "readOnly": true, "description": "Data size in bytes"},
            "virtual_size": {"type": ["null", "integer"], "readOnly": true, "description": "Virtual disk size in bytes"},
            "container_format": {"type": ["null", "string"], "enum": nullable_enum(&CONTAINER_FORMATS), "description": "Container format"},
            "disk_format": {"type": ["null", "string"], "enum": nullable_enum(&DISK_FORMATS), "description": "Disk format"},
            "created_at": ro_string("Creation time"),
            "updated_at": ro_string("Last change"),
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 255}, "description": "Tags"},
            "direct_url": ro_string("Not exposed by this service"),
            "min_ram": {"type": "integer", "description": "Minimum RAM in MB"},
            "min_disk": {"type": "integer", "description": "Minimum disk in GB"},
            "self": ro_string("URL of the image"),
            "file": ro_string("URL of the image data"),
            "stores": ro_string("Stores holding the data"),
            "schema": ro_string("URL of this schema"),
            "locations": {"type": "array", "readOnly": true, "items": {"type": "object"}, "description": "Managed by this service"}
        },
        "additionalProperties": {"type": "string"},
        "links": [
            {"rel": "self", "href": "{self}"},
            {"rel": "enclosure", "href": "{file}"},
            {"rel": "describedby", "href": "{schema}"}
        ]
    })
}

fn member_schema() -> Value {
    json!({
        "name": "member",
        "properties": {
            "member_id": {"type": "string", "description": "Project the image is shared with"},
            "image_id": {"type": "string", "pattern": UUID_PATTERN, "description": "The image"},
            "created_at": {"type": "string", "description": "Creation time"},
            "updated_at": {"type": "string", "description": "Last change"},
            "status": {"type": "string", "enum": ["pending", "accepted", "rejected"], "description": "Whether the member accepted the image"},
            "schema": {"type": "string", "readOnly": true}
        }
    })
}

/// `GET /v2/schemas/image`.
pub async fn image() -> Response {
    axum::Json(image_schema()).into_response()
}

/// `GET /v2/schemas/images`.
pub async fn images() -> Response {
    let item = image_schema();
    axum::Json(json!({
        "name": "images",
        "properties": {
            "images": {"type": "array", "items": item},
            "schema": {"type": "string"},
            "first": {"type": "string"},
            "next": {"type": "string"}
        },
        "links": [
            {"rel": "first", "href": "{first}"},
            {"rel": "next", "href": "{next}"},
            {"rel": "describedby", "href": "{schema}"}
        ]
    }))
    .into_response()
}

/// `GET /v2/schemas/member`.
pub async fn member() -> Response {
    axum::Json(member_schema()).into_response()
}

/// `GET /v2/schemas/members`.
pub async fn members() -> Response {
    axum::Json(json!({
        "name": "members",
        "properties": {
            "members": {"type": "array", "items": member_schema()},
            "schema": {"type": "string"}
        },
        "links": [{"rel": "schema", "href": "{schema}"}]
    }))
    .into_response()
}

/// The task schema.
pub fn task_schema() -> Value {
    let string = |d: &str| json!({"type": "string", "description": d});
    json!({
        "name": "task",
        "properties": {
            "id": {"type": "string", "pattern": UUID_PATTERN, "description": "Task id (UUID)"},
            "type": {"type": "string", "enum": ["import", "api_image_import", "location_import"],
                "description": "What the task does"},
            "status": {"type": "string", "enum": super::tasks::STATUSES, "description": "Where the task stands"},
            "input": {"type": ["null", "object"], "description": "What was asked"},
            "result": {"type": ["null", "object"], "description": "What came of it"},
            "owner": string("The project that asked"),
            "message": string("Progress, or why the task failed"),
            "image_id": string("The image the task works on"),
            "request_id": string("The request that started the task"),
            "user_id": string("The user that asked"),
            "expires_at": {"type": ["null", "string"], "description": "When the ended task may be removed"},
            "created_at": string("Creation time"),
            "updated_at": string("Last change"),
            "self": {"type": "string", "readOnly": true},
            "schema": {"type": "string", "readOnly": true}
        }
    })
}

/// `GET /v2/schemas/task`.
pub async fn task() -> Response {
    axum::Json(task_schema()).into_response()
}

/// `GET /v2/schemas/tasks`: list entries carry no input, result or message.
pub async fn tasks() -> Response {
    let mut item = task_schema();
    if let Some(p) = item.get_mut("properties").and_then(Value::as_object_mut) {
        for k in ["input", "result", "message"] {
            p.remove(k);
        }
    }
    axum::Json(json!({
        "name": "tasks",
        "properties": {
            "tasks": {"type": "array", "items": item},
            "schema": {"type": "string"}
        },
        "links": [{"rel": "describedby", "href": "{schema}"}]
    }))
    .into_response()
}
