//! The stored forms of metadata definitions and the checks of what clients
//! send: a namespace is one document holding its objects, property
//! definitions, tags and resource type associations, so every change to it
//! is one atomic write.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::error::ApiError;

/// Longest name of a namespace, object, property, tag or resource type.
pub const MAX_NAME: usize = 80;
/// Longest namespace description.
pub const MAX_DESCRIPTION: usize = 500;
/// Longest namespace owner.
pub const MAX_OWNER: usize = 255;

/// The most objects, property definitions, tags or associations one
/// namespace holds: a namespace is one stored document, rewritten whole at
/// each change.
pub const MAX_PER_NAMESPACE: usize = 1000;

/// The types a property definition may have.
pub const PROPERTY_TYPES: [&str; 6] = ["array", "boolean", "integer", "number", "object", "string"];

/// Fields of a request body clients may not set: `403`, as Glance.
pub const TIMESTAMPS: [&str; 2] = ["created_at", "updated_at"];
/// The same, for documents that carry links.
pub const LINKED_READ_ONLY: [&str; 4] = ["self", "schema", "created_at", "updated_at"];

/// A namespace with everything in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Namespace {
    /// Its unique name.
    pub namespace: String,
    /// A name for people.
    #[serde(default)]
    pub display_name: Option<String>,
    /// What it is for.
    #[serde(default)]
    pub description: Option<String>,
    /// `public` or `private`.
    pub visibility: String,
    /// A protected namespace, and everything in it, cannot be deleted.
    pub protected: bool,
    /// The owning project.
    pub owner: String,
    /// Creation time.
    pub created_at: String,
    /// Last change.
    pub updated_at: String,
    /// Creation time in nanoseconds, for a stable newest-first order.
    #[serde(default)]
    pub created_ns: i128,
    /// Objects, in creation order.
    #[serde(default)]
    pub objects: Vec<Object>,
    /// Property definitions by name (each holds its `name` too).
    #[serde(default)]
    pub properties: BTreeMap<String, Map<String, Value>>,
    /// Tags, in creation order.
    #[serde(default)]
    pub tags: Vec<Tag>,
    /// Resource types it applies to.
    #[serde(default)]
    pub associations: Vec<Association>,
}

/// A group of property definitions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Object {
    /// Its name, unique in the namespace.
    pub name: String,
    /// What it is for.
    #[serde(default)]
    pub description: Option<String>,
    /// Names of the properties that must be set.
    #[serde(default)]
    pub required: Vec<String>,
    /// Property definitions by name.
    #[serde(default)]
    pub properties: Map<String, Value>,
    /// Creation time.
    pub created_at: String,
    /// Last change.
    pub updated_at: String,
}

/// A tag of a namespace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tag {
    /// The tag.
    pub name: String,
    /// Creation time.
    pub created_at: String,
    /// Last change.
    pub updated_at: String,
}

/// A namespace's link to a resource type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Association {
    /// The resource type's name.
    pub name: String,
    /// Prefix of the namespace's properties when applied to that type.
    #[serde(default)]
    pub prefix: Option<String>,
    /// Which metadata of the resource the properties go to.
    #[serde(default)]
    pub properties_target: Option<String>,
    /// Creation time.
    pub created_at: String,
    /// Last change.
    pub updated_at: String,
}

/// A kind of resource namespaces apply to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceType {
    /// Its unique name (as Heat names resource types).
    pub name: String,
    /// Seeded types are protected.
    pub protected: bool,
    /// Creation time.
    pub created_at: String,
    /// Last change.
    pub updated_at: String,
    /// Creation time in nanoseconds, for the list's order.
    #[serde(default)]
    pub created_ns: i128,
}

/// The resource types every deployment has, as Glance's sample
/// definitions name them.
pub const SEEDED_RESOURCE_TYPES: [&str; 6] = [
    "OS::Glance::Image",
    "OS::Cinder::Volume",
    "OS::Nova::Flavor",
    "OS::Nova::Aggregate",
    "OS::Nova::Server",
    "OS::Trove::Instance",
];

impl Namespace {
    /// `413` when the namespace holds more than [`MAX_PER_NAMESPACE`] of
    /// any kind.
    pub fn check_size(&self) -> Result<(), ApiError> {
        for (what, n) in [
            ("objects", self.objects.len()),
            ("property definitions", self.properties.len()),
            ("tags", self.tags.len()),
            ("resource type associations", self.associations.len()),
        ] {
            if n > MAX_PER_NAMESPACE {
                return Err(ApiError::new(
                    axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "Namespace {} would hold {n} {what}; at most {MAX_PER_NAMESPACE} are kept",
                        self.namespace
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The object named `name`.
    pub fn object(&self, name: &str) -> Option<&Object> {
        self.objects.iter().find(|o| o.name == name)
    }

    /// The association with resource type `name`.
    pub fn association(&self, name: &str) -> Option<&Association> {
        self.associations.iter().find(|a| a.name == name)
    }

    /// The namespace's own fields, with its links.
    pub fn to_json(&self) -> Value {
        let mut out = json!({
            "namespace": self.namespace,
            "visibility": self.visibility,
            "protected": self.protected,
            "owner": self.owner,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "self": format!("/v2/metadefs/namespaces/{}", self.namespace),
            "schema": "/v2/schemas/metadefs/namespace",
        });
        if let Some(o) = out.as_object_mut() {
            put_opt(o, "display_name", &self.display_name);
            put_opt(o, "description", &self.description);
        }
        out
    }

    /// The namespace with what it holds (each part only when not empty);
    /// with `resource_type`, property names carry that type's prefix.
    pub fn to_json_full(&self, resource_type: Option<&str>) -> Value {
        let prefix = resource_type
            .and_then(|rt| self.association(rt))
            .and_then(|a| a.prefix.as_deref())
            .unwrap_or("");
        let mut out = self.to_json();
        let Some(o) = out.as_object_mut() else {
            return out;
        };
        if !self.objects.is_empty() {
            let objects = self
                .objects
                .iter()
                .map(|obj| {
                    let mut obj = obj.clone();
                    if !prefix.is_empty() {
                        obj.properties = prefixed(prefix, &obj.properties);
                        obj.required = obj
                            .required
                            .iter()
                            .map(|r| format!("{prefix}{r}"))
                            .collect();
                    }
                    obj.to_json(&self.namespace)
                })
                .collect();
            o.insert("objects".into(), Value::Array(objects));
        }
        if !self.associations.is_empty() {
            o.insert(
                "resource_type_associations".into(),
                self.associations_json(),
            );
        }
        if !self.properties.is_empty() {
            let props: Map<String, Value> = self
                .properties
                .iter()
                .map(|(k, v)| (format!("{prefix}{k}"), Value::Object(v.clone())))
                .collect();
            o.insert("properties".into(), Value::Object(props));
        }
        if !self.tags.is_empty() {
            let tags = self.tags.iter().map(|t| json!({"name": t.name})).collect();
            o.insert("tags".into(), Value::Array(tags));
        }
        out
    }

    /// The associations, as listed.
    pub fn associations_json(&self) -> Value {
        Value::Array(self.associations.iter().map(Association::to_json).collect())
    }
}

/// Property definitions with their names prefixed.
fn prefixed(prefix: &str, props: &Map<String, Value>) -> Map<String, Value> {
    props
        .iter()
        .map(|(k, v)| (format!("{prefix}{k}"), v.clone()))
        .collect()
}

/// Inserts `value` under `key` when it is set.
fn put_opt(o: &mut Map<String, Value>, key: &str, value: &Option<String>) {
    if let Some(v) = value {
        o.insert(key.into(), Value::String(v.clone()));
    }
}

impl Object {
    /// The object as the API shows it.
    pub fn to_json(&self, namespace: &str) -> Value {
        let mut out = json!({
            "name": self.name,
            "required": self.required,
            "properties": self.properties,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "self": format!("/v2/metadefs/namespaces/{namespace}/objects/{}", self.name),
            "schema": "/v2/schemas/metadefs/object",
        });
        if let Some(o) = out.as_object_mut() {
            put_opt(o, "description", &self.description);
        }
        out
    }
}

impl Tag {
    /// The tag with its times.
    pub fn to_json(&self) -> Value {
        json!({"name": self.name, "created_at": self.created_at, "updated_at": self.updated_at})
    }
}

impl Association {
    /// The association as the API shows it.
    pub fn to_json(&self) -> Value {
        let mut out = json!({
            "name": self.name,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        });
        if let Some(o) = out.as_object_mut() {
            put_opt(o, "prefix", &self.prefix);
            put_opt(o, "properties_target", &self.properties_target);
        }
        out
    }
}

/// A request body as a JSON object: `400` when it is missing or not JSON.
pub fn body_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("Body expected in request."));
    }
    match serde_json::from_slice(body) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(ApiError::bad_request(
            "The request body must be a JSON object",
        )),
        Err(e) => Err(ApiError::bad_request(format!(
            "The request body is not JSON: {e}"
        ))),
    }
}

/// Refuses read-only fields (`403`) and fields outside `allowed` (`400`).
pub fn check_fields(
    fields: &Map<String, Value>,
    read_only: &[&str],
    allowed: &[&str],
) -> Result<(), ApiError> {
    if let Some(k) = fields.keys().find(|k| read_only.contains(&k.as_str())) {
        return Err(ApiError::forbidden(format!(
            "Attribute '{k}' is read-only."
        )));
    }
    if let Some(k) = fields.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!(
            "Additional properties are not allowed ('{k}' was unexpected)"
        )));
    }
    Ok(())
}

/// An optional string field of at most `max` characters.
pub fn opt_string(
    fields: &Map<String, Value>,
    key: &str,
    max: Option<usize>,
) -> Result<Option<String>, ApiError> {
    match fields.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => match max {
            Some(max) if s.chars().count() > max => Err(ApiError::bad_request(format!(
                "'{key}' is longer than {max} characters"
            ))),
            _ => Ok(Some(s.clone())),
        },
        Some(_) => Err(ApiError::bad_request(format!("'{key}' must be a string"))),
    }
}

/// A required name field: a string of 1 to [`MAX_NAME`] characters.
pub fn name_field(fields: &Map<String, Value>, key: &str) -> Result<String, ApiError> {
    let name = opt_string(fields, key, Some(MAX_NAME))?
        .ok_or_else(|| ApiError::bad_request(format!("'{key}' is a required property")))?;
    check_name(&name)?;
    Ok(name)
}

/// A name from a path or a body: 1 to [`MAX_NAME`] characters.
pub fn check_name(name: &str) -> Result<(), ApiError> {
    let n = name.chars().count();
    if n == 0 || n > MAX_NAME {
        return Err(ApiError::bad_request(format!(
            "Names must be 1 to {MAX_NAME} characters"
        )));
    }
    Ok(())
}

/// An optional boolean field.
pub fn opt_bool(fields: &Map<String, Value>, key: &str) -> Result<Option<bool>, ApiError> {
    match fields.get(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ApiError::bad_request(format!("'{key}' must be a boolean"))),
    }
}

/// A list of distinct strings (`at_least_one`: not empty either).
fn string_array(key: &str, v: &Value, at_least_one: bool) -> Result<Vec<String>, ApiError> {
    let list = v
        .as_array()
        .ok_or_else(|| ApiError::bad_request(format!("'{key}' must be a list of strings")))?;
    if at_least_one && list.is_empty() {
        return Err(ApiError::bad_request(format!("'{key}' must not be empty")));
    }
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for item in list {
        let s = item
            .as_str()
            .ok_or_else(|| ApiError::bad_request(format!("'{key}' must be a list of strings")))?;
        if out.iter().any(|o| o == s) {
            return Err(ApiError::bad_request(format!("'{key}' has '{s}' twice")));
        }
        out.push(s.to_owned());
    }
    Ok(out)
}

/// The fields a property definition may have.
const PROPERTY_FIELDS: [&str; 19] = [
    "name",
    "title",
    "type",
    "description",
    "operators",
    "default",
    "readonly",
    "minimum",
    "maximum",
    "enum",
    "pattern",
    "minLength",
    "maxLength",
    "items",
    "uniqueItems",
    "minItems",
    "maxItems",
    "additionalItems",
    "required",
];

/// Checks one property definition and returns it as stored: `default`
/// becomes a string, as Glance keeps it. `top_level`: a definition sent on
/// its own (`POST .../properties`), which must name itself and whose
/// `required` list may not be empty.
pub fn property_definition(v: &Value, top_level: bool) -> Result<Map<String, Value>, ApiError> {
    let fields = v
        .as_object()
        .ok_or_else(|| ApiError::bad_request("A property definition must be a JSON object"))?;
    if top_level {
        check_fields(fields, &TIMESTAMPS, &PROPERTY_FIELDS)?;
    } else {
        check_fields(fields, &[], &PROPERTY_FIELDS)?;
    }
    for key in ["title", "type"] {
        if !fields.contains_key(key) {
            return Err(ApiError::bad_request(format!(
                "'{key}' is a required property"
            )));
        }
    }
    let mut out = Map::new();
    for (key, value) in fields {
        let checked = match key.as_str() {
            "name" => {
                let name = opt_string(fields, key, Some(MAX_NAME))?.unwrap_or_default();
                check_name(&name)?;
                Value::String(name)
            }
            "title" | "description" | "pattern" => {
                Value::String(opt_string(fields, key, None)?.unwrap_or_default())
            }
            "type" => {
                let t = opt_string(fields, key, None)?.unwrap_or_default();
                if !PROPERTY_TYPES.contains(&t.as_str()) {
                    return Err(ApiError::bad_request(format!(
                        "Invalid property type '{t}': expected one of {}",
                        PROPERTY_TYPES.join(", ")
                    )));
                }
                Value::String(t)
            }
            "readonly" | "uniqueItems" | "additionalItems" => {
                Value::Bool(opt_bool(fields, key)?.unwrap_or_default())
            }
            "minimum" | "maximum" => {
                if !value.is_number() {
                    return Err(ApiError::bad_request(format!("'{key}' must be a number")));
                }
                value.clone()
            }
            "minLength" | "maxLength" | "minItems" | "maxItems" => {
                if value.as_u64().is_none() {
                    return Err(ApiError::bad_request(format!(
                        "'{key}' must be a non-negative integer"
                    )));
                }
                value.clone()
            }
            "operators" => json!(string_array(key, value, false)?),
            "required" => json!(string_array(key, value, top_level)?),
            "enum" => {
                if !value.is_array() {
                    return Err(ApiError::bad_request("'enum' must be a list"));
                }
                value.clone()
            }
            "items" => items(value)?,
            // Glance keeps a default as text, whatever its JSON type.
            "default" => match value {
                Value::String(_) => value.clone(),
                other => Value::String(other.to_string()),
            },
            _ => value.clone(),
        };
        out.insert(key.clone(), checked);
    }
    if top_level && !out.contains_key("name") {
        return Err(ApiError::bad_request("'name' is a required property"));
    }
    Ok(out)
}

/// The `items` of an array property: its type and allowed values.
fn items(value: &Value) -> Result<Value, ApiError> {
    let fields = value
        .as_object()
        .ok_or_else(|| ApiError::bad_request("'items' must be a JSON object"))?;
    if let Some(t) = fields.get("type")
        && !t.as_str().is_some_and(|t| PROPERTY_TYPES.contains(&t))
    {
        return Err(ApiError::bad_request(format!(
            "Invalid items type: expected one of {}",
            PROPERTY_TYPES.join(", ")
        )));
    }
    if fields.get("enum").is_some_and(|e| !e.is_array()) {
        return Err(ApiError::bad_request("'items.enum' must be a list"));
    }
    Ok(value.clone())
}

/// Property definitions by name (in a namespace or an object).
pub fn property_map(v: &Value) -> Result<Map<String, Value>, ApiError> {
    let fields = v
        .as_object()
        .ok_or_else(|| ApiError::bad_request("'properties' must be a JSON object"))?;
    let mut out = Map::new();
    for (name, def) in fields {
        check_name(name)?;
        out.insert(
            name.clone(),
            Value::Object(property_definition(def, false)?),
        );
    }
    Ok(out)
}

/// The fields of an object in a request body.
pub const OBJECT_FIELDS: [&str; 4] = ["name", "description", "required", "properties"];

/// An object from a request body (create, or the full replacement of an
/// update), stamped `now`.
pub fn object_from(fields: &Map<String, Value>, now: &str) -> Result<Object, ApiError> {
    let required = match fields.get("required") {
        Some(v) => string_array("required", v, false)?,
        None => Vec::new(),
    };
    let properties = match fields.get("properties") {
        Some(v) => property_map(v)?,
        None => Map::new(),
    };
    Ok(Object {
        name: name_field(fields, "name")?,
        description: opt_string(fields, "description", None)?,
        required,
        properties,
        created_at: now.to_owned(),
        updated_at: now.to_owned(),
    })
}

/// The fields of a resource type association in a request body.
pub const ASSOCIATION_FIELDS: [&str; 3] = ["name", "prefix", "properties_target"];

/// An association from a request body, stamped `now`.
pub fn association_from(fields: &Map<String, Value>, now: &str) -> Result<Association, ApiError> {
    Ok(Association {
        name: name_field(fields, "name")?,
        prefix: opt_string(fields, "prefix", Some(MAX_NAME))?,
        properties_target: opt_string(fields, "properties_target", Some(MAX_NAME))?,
        created_at: now.to_owned(),
        updated_at: now.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn property_definitions_are_checked_and_defaults_kept_as_text() {
        let def = property_definition(
            &json!({"name": "hw_cpu", "title": "CPU", "type": "integer", "default": 4, "minimum": 1}),
            true,
        )
        .unwrap();
        assert_eq!(def["default"], "4");
        assert_eq!(def["minimum"], 1);
        for bad in [
            json!({"title": "t", "type": "string"}),
            json!({"name": "n", "type": "string"}),
            json!({"name": "n", "title": "t", "type": "text"}),
            json!({"name": "n", "title": "t", "type": "string", "required": []}),
            json!({"name": "n", "title": "t", "type": "string", "confidential": true}),
            json!({"name": "n", "title": "t", "type": "string", "minLength": -1}),
            json!({"name": "n", "title": "t", "type": "array", "items": {"type": "text"}}),
            json!({"name": "", "title": "t", "type": "string"}),
        ] {
            let e = property_definition(&bad, true).unwrap_err();
            assert_eq!(e.status.as_u16(), 400, "{bad}");
        }
        let e = property_definition(
            &json!({"name": "n", "title": "t", "type": "string", "created_at": "x"}),
            true,
        )
        .unwrap_err();
        assert_eq!(e.status.as_u16(), 403);
        // Inside an object a definition needs no name.
        assert!(property_definition(&json!({"title": "t", "type": "string"}), false).is_ok());
    }

    #[test]
    fn a_prefix_applies_to_properties_and_required_lists() {
        let now = "2026-12-05T00:00:00Z".to_owned();
        let mut props = BTreeMap::new();
        props.insert("cpu".to_owned(), Map::new());
        let obj = Object {
            name: "o".into(),
            description: None,
            required: vec!["cpu".into()],
            properties: [("cpu".to_owned(), json!({}))].into_iter().collect(),
            created_at: now.clone(),
            updated_at: now.clone(),
        };
        let ns = Namespace {
            namespace: "n".into(),
            display_name: None,
            description: None,
            visibility: "public".into(),
            protected: false,
            owner: "p".into(),
            created_at: now.clone(),
            updated_at: now.clone(),
            created_ns: 0,
            objects: vec![obj],
            properties: props,
            tags: vec![],
            associations: vec![Association {
                name: "OS::Nova::Flavor".into(),
                prefix: Some("hw:".into()),
                properties_target: None,
                created_at: now.clone(),
                updated_at: now,
            }],
        };
        let plain = ns.to_json_full(None);
        assert!(plain["properties"].get("cpu").is_some());
        let flavor = ns.to_json_full(Some("OS::Nova::Flavor"));
        assert!(flavor["properties"].get("hw:cpu").is_some());
        assert_eq!(flavor["objects"][0]["required"], json!(["hw:cpu"]));
        assert!(flavor["objects"][0]["properties"].get("hw:cpu").is_some());
        assert!(plain.get("tags").is_none());
        assert!(plain.get("display_name").is_none());
    }
}
