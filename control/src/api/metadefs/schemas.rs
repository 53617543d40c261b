//! `GET /v2/schemas/metadefs/{name}`: the JSON schemas of metadata
//! definitions, with the structure Glance publishes (names, types, limits,
//! required fields) and the limits [`super::model`] enforces.

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::model::{MAX_DESCRIPTION, MAX_NAME, MAX_OWNER, PROPERTY_TYPES};
use crate::error::ApiError;

/// The schema names served, each with the name its document carries.
pub const NAMES: [(&str, &str); 10] = [
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
];

/// `GET /v2/schemas/metadefs/{name}`.
pub async fn serve(Path(name): Path<String>) -> Result<Response, ApiError> {
    schema(&name)
        .map(|s| axum::Json(s).into_response())
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("No schema named {name}")))
}

/// The schema served under `name`.
pub fn schema(name: &str) -> Option<Value> {
    Some(match name {
        "namespace" => single(
            "namespace",
            namespace_properties(),
            &["namespace"],
            Some(shared_definitions()),
        ),
        "namespaces" => collection("namespaces", namespace_item(), Some(shared_definitions())),
        "object" => single(
            "object",
            object_properties(),
            &["name"],
            Some(shared_definitions()),
        ),
        "objects" => collection("objects", object_item(), Some(shared_definitions())),
        "property" => single(
            "property",
            property_fields(),
            &["type", "title", "name"],
            Some(property_definitions()),
        ),
        "properties" => properties_collection(),
        "tag" => single("tag", tag_properties(), &["name"], None),
        "tags" => collection(
            "tags",
            single("tag", tag_properties(), &["name"], None),
            None,
        ),
        "resource_type" => association_schema(),
        "resource_types" => collection("resource_type_associations", association_schema(), None),
        _ => return None,
    })
}

fn read_only_time(what: &str) -> Value {
    json!({"type": "string", "format": "date-time", "readOnly": true, "description": what})
}

fn link_field() -> Value {
    json!({"type": "string", "readOnly": true})
}

/// One document's schema: no properties beyond those listed.
fn single(name: &str, properties: Value, required: &[&str], definitions: Option<Value>) -> Value {
    let mut out = json!({
        "name": name,
        "properties": properties,
        "additionalProperties": false,
    });
    if let Some(o) = out.as_object_mut() {
        if !required.is_empty() {
            o.insert("required".into(), json!(required));
        }
        if let Some(d) = definitions {
            o.insert("definitions".into(), d);
        }
    }
    out
}

/// A list's schema: the items under `name`, with paging links.
fn collection(name: &str, mut item: Value, definitions: Option<Value>) -> Value {
    if let Some(o) = item.as_object_mut() {
        o.remove("definitions");
    }
    let mut properties = Map::new();
    properties.insert(name.into(), json!({"type": "array", "items": item}));
    for k in ["first", "next", "schema"] {
        properties.insert(k.into(), json!({"type": "string"}));
    }
    let mut out = json!({
        "name": name,
        "properties": properties,
        "links": [
            {"rel": "first", "href": "{first}"},
            {"rel": "next", "href": "{next}"},
            {"rel": "describedby", "href": "{schema}"}
        ],
    });
    if let (Some(d), Some(o)) = (definitions, out.as_object_mut()) {
        o.insert("definitions".into(), d);
    }
    out
}

/// The fields of a property definition.
fn property_fields() -> Value {
    let mut types: Vec<Value> = PROPERTY_TYPES.iter().map(|t| json!(t)).collect();
    types.push(Value::Null);
    json!({
        "name": {"type": "string", "maxLength": MAX_NAME},
        "title": {"type": "string"},
        "description": {"type": "string"},
        "operators": {"type": "array", "items": {"type": "string"}},
        "type": {"type": "string", "enum": types},
        "required": {"$ref": "#/definitions/stringArray"},
        "minimum": {"type": "number"},
        "maximum": {"type": "number"},
        "maxLength": {"$ref": "#/definitions/positiveInteger"},
        "minLength": {"$ref": "#/definitions/positiveIntegerDefault0"},
        "pattern": {"type": "string", "format": "regex"},
        "enum": {"type": "array"},
        "readonly": {"type": "boolean"},
        "default": {},
        "items": {
            "type": "object",
            "properties": {"type": {"type": "string", "enum": types}, "enum": {"type": "array"}}
        },
        "maxItems": {"$ref": "#/definitions/positiveInteger"},
        "minItems": {"$ref": "#/definitions/positiveIntegerDefault0"},
        "uniqueItems": {"type": "boolean", "default": false},
        "additionalItems": {"type": "boolean"}
    })
}

/// Definitions every property-bearing schema refers to; `min_one`: lists of
/// strings may not be empty.
fn base_definitions(min_one: bool) -> Map<String, Value> {
    let mut string_array =
        json!({"type": "array", "items": {"type": "string"}, "uniqueItems": true});
    if min_one && let Some(o) = string_array.as_object_mut() {
        o.insert("minItems".into(), json!(1));
    }
    let mut d = Map::new();
    d.insert(
        "positiveInteger".into(),
        json!({"type": "integer", "minimum": 0}),
    );
    d.insert(
        "positiveIntegerDefault0".into(),
        json!({"allOf": [{"$ref": "#/definitions/positiveInteger"}, {"default": 0}]}),
    );
    d.insert("stringArray".into(), string_array);
    d
}

/// The definitions of the property schema.
fn property_definitions() -> Value {
    Value::Object(base_definitions(true))
}

/// The definitions of namespaces and objects: property maps inside them.
fn shared_definitions() -> Value {
    let mut d = base_definitions(false);
    d.insert(
        "property".into(),
        json!({
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": ["title", "type"],
                "properties": property_fields()
            }
        }),
    );
    Value::Object(d)
}

fn namespace_properties() -> Value {
    json!({
        "namespace": {"type": "string", "maxLength": MAX_NAME, "description": "Unique name of the namespace"},
        "display_name": {"type": "string", "maxLength": MAX_NAME, "description": "Name for people"},
        "description": {"type": "string", "maxLength": MAX_DESCRIPTION, "description": "What the namespace is for"},
        "visibility": {"type": "string", "enum": ["public", "private"], "description": "Who may read the namespace"},
        "protected": {"type": "boolean", "description": "A protected namespace cannot be deleted"},
        "owner": {"type": "string", "maxLength": MAX_OWNER, "description": "Owning project"},
        "created_at": read_only_time("Creation time"),
        "updated_at": read_only_time("Last change"),
        "schema": link_field(),
        "self": link_field(),
        "resource_type_associations": {
            "type": "array",
            "items": {"type": "object", "properties": {
                "name": {"type": "string"}, "prefix": {"type": "string"}, "properties_target": {"type": "string"}
            }}
        },
        "properties": {"$ref": "#/definitions/property"},
        "objects": {
            "type": "array",
            "items": {"type": "object", "properties": {
                "name": {"type": "string"},
                "description": {"type": "string"},
                "required": {"$ref": "#/definitions/stringArray"},
                "properties": {"$ref": "#/definitions/property"}
            }}
        },
        "tags": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}}}
    })
}

fn namespace_item() -> Value {
    single("namespace", namespace_properties(), &["namespace"], None)
}

fn object_properties() -> Value {
    json!({
        "name": {"type": "string", "maxLength": MAX_NAME},
        "description": {"type": "string"},
        "required": {"$ref": "#/definitions/stringArray"},
        "properties": {"$ref": "#/definitions/property"},
        "schema": link_field(),
        "self": link_field(),
        "created_at": read_only_time("Creation time"),
        "updated_at": read_only_time("Last change")
    })
}

fn object_item() -> Value {
    single("object", object_properties(), &["name"], None)
}

fn tag_properties() -> Value {
    json!({
        "name": {"type": "string", "maxLength": MAX_NAME},
        "created_at": read_only_time("Creation time"),
        "updated_at": read_only_time("Last change")
    })
}

fn association_schema() -> Value {
    single(
        "resource_type_association",
        json!({
            "name": {"type": "string", "maxLength": MAX_NAME,
                "description": "The resource type, named as Heat names resource types (OS::Nova::Flavor)"},
            "prefix": {"type": "string", "maxLength": MAX_NAME,
                "description": "Prefix of the namespace's properties on this resource type, separator included (hw:)"},
            "properties_target": {"type": "string", "maxLength": MAX_NAME,
                "description": "Which metadata of the resource the properties apply to (image, for a volume's image metadata)"},
            "created_at": read_only_time("Creation time"),
            "updated_at": read_only_time("Last change")
        }),
        &["name"],
        None,
    )
}

/// The properties list: definitions by name.
fn properties_collection() -> Value {
    let item = single("property", property_fields(), &["type", "title"], None);
    let mut out = collection("properties", Value::Null, Some(property_definitions()));
    if let Some(p) = out.pointer_mut("/properties/properties") {
        *p = json!({"type": "object", "additionalProperties": item});
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_schema_names_itself_and_refers_only_to_its_definitions() {
        for (path, name) in NAMES {
            let s = schema(path).unwrap();
            assert_eq!(s["name"], name, "{path}");
            let text = s.to_string();
            for r in text.split("\"$ref\":\"#/definitions/").skip(1) {
                let def = r.split('"').next().unwrap();
                assert!(
                    s["definitions"].get(def).is_some(),
                    "{path}: {def} undefined"
                );
            }
        }
        assert!(schema("nope").is_none());
        assert_eq!(
            schema("property").unwrap()["definitions"]["stringArray"]["minItems"],
            1
        );
        assert!(
            schema("namespace").unwrap()["definitions"]["stringArray"]
                .get("minItems")
                .is_none()
        );
    }
}
