//! `GET /v2/images`: filters, sorting and marker pagination, as Glance.

use std::cmp::Ordering;
use std::collections::HashMap;

use axum::Extension;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::images::blocking;
use super::{Shared, policy};
use crate::auth::Context;
use crate::error::ApiError;
use crate::model::{Image, MemberStatus, Visibility, parse_time};

/// Page size when none is asked for.
const DEFAULT_LIMIT: usize = 25;
/// Largest page.
const MAX_LIMIT: usize = 1000;
/// Properties that can be sorted on besides extra properties.
const SORT_KEYS: [&str; 12] = [
    "name",
    "status",
    "container_format",
    "disk_format",
    "size",
    "id",
    "created_at",
    "updated_at",
    "visibility",
    "owner",
    "min_disk",
    "min_ram",
];

/// A parsed list request.
struct ListQuery {
    limit: usize,
    marker: Option<String>,
    sort: Vec<(String, bool)>,
    filters: Vec<Filter>,
    visibility: Option<String>,
    /// Shared images listed by the caller's answer: `accepted` unless asked.
    member_status: String,
    show_hidden: bool,
    /// The query without `marker`, for the `first` and `next` links.
    base: Vec<(String, String)>,
}

/// One condition an image must meet.
enum Filter {
    /// The property equals one of these strings.
    OneOf(String, Vec<String>),
    /// The image carries every one of these tags.
    Tags(Vec<String>),
    /// Size bounds.
    SizeMin(u64),
    SizeMax(u64),
    /// A time property compared with an operator.
    Time(String, String, time::OffsetDateTime),
}

fn parse_query(raw: Option<&str>) -> Result<ListQuery, ApiError> {
    let mut q = ListQuery {
        limit: DEFAULT_LIMIT,
        marker: None,
        sort: Vec::new(),
        filters: Vec::new(),
        visibility: None,
        member_status: "accepted".into(),
        show_hidden: false,
        base: Vec::new(),
    };
    let mut sort_keys = Vec::new();
    let mut sort_dirs = Vec::new();
    let mut tags = Vec::new();
    for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        let (k, v) = (k.into_owned(), v.into_owned());
        if k != "marker" {
            q.base.push((k.clone(), v.clone()));
        }
        match k.as_str() {
            "limit" => {
                let n: usize = v.parse().map_err(|_| {
                    ApiError::bad_request(format!(
                        "limit must be a non-negative integer, not '{v}'"
                    ))
                })?;
                q.limit = n.min(MAX_LIMIT);
            }
            "marker" => q.marker = Some(v),
            "sort_key" => sort_keys.push(v),
            "sort_dir" => sort_dirs.push(v),
            "sort" => {
                for part in v.split(',').filter(|p| !p.is_empty()) {
                    let (key, dir) = part.split_once(':').unwrap_or((part, "desc"));
                    q.sort.push((key.trim().to_owned(), parse_dir(dir.trim())?));
                }
            }
            "tag" => tags.push(v),
            "size_min" => q.filters.push(Filter::SizeMin(number(&k, &v)?)),
            "size_max" => q.filters.push(Filter::SizeMax(number(&k, &v)?)),
            "created_at" | "updated_at" => {
                let (op, t) = v
                    .split_once(':')
                    .filter(|(op, _)| OPS.contains(op))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "{k} takes an operator and a time, like gte:2026-01-01T00:00:00Z"
                        ))
                    })?;
                let t = parse_time(t)
                    .ok_or_else(|| ApiError::bad_request(format!("Invalid time '{t}' in {k}")))?;
                q.filters.push(Filter::Time(k.clone(), op.to_owned(), t));
            }
            "visibility" => q.visibility = Some(v),
            "os_hidden" => q.show_hidden = v == "true",
            "member_status" => {
                if v != "all" && MemberStatus::parse(&v).is_none() {
                    return Err(ApiError::bad_request(format!("Invalid status value: {v}")));
                }
                q.member_status = v;
            }
            _ => {
                let values = match v.strip_prefix("in:") {
                    Some(list) => list
                        .split(',')
                        .map(|s| s.trim_matches('"').to_owned())
                        .collect(),
                    None => vec![v],
                };
                q.filters.push(Filter::OneOf(k, values));
            }
        }
    }
    if !tags.is_empty() {
        q.filters.push(Filter::Tags(tags));
    }
    if !sort_keys.is_empty() && !q.sort.is_empty() {
        return Err(ApiError::bad_request(
            "Use either sort or sort_key/sort_dir, not both",
        ));
    }
    for (i, key) in sort_keys.iter().enumerate() {
        let dir = sort_dirs
            .get(i)
            .or(sort_dirs.last())
            .map_or("desc", String::as_str);
        q.sort.push((key.clone(), parse_dir(dir)?));
    }
    for (key, _) in &q.sort {
        if !SORT_KEYS.contains(&key.as_str()) {
            return Err(ApiError::bad_request(format!(
                "Unsupported sort key '{key}'"
            )));
        }
    }
    if q.sort.is_empty() {
        q.sort.push(("created_at".into(), false));
    }
    // Ties break on id, so pages never overlap or skip.
    if !q.sort.iter().any(|(k, _)| k == "id") {
        let dir = q.sort.last().is_some_and(|(_, asc)| *asc);
        q.sort.push(("id".into(), dir));
    }
    Ok(q)
}

const OPS: [&str; 6] = ["gt", "gte", "lt", "lte", "eq", "neq"];

fn parse_dir(dir: &str) -> Result<bool, ApiError> {
    match dir {
        "asc" => Ok(true),
        "desc" => Ok(false),
        other => Err(ApiError::bad_request(format!(
            "Invalid sort direction '{other}': use asc or desc"
        ))),
    }
}

fn number(key: &str, v: &str) -> Result<u64, ApiError> {
    v.parse().map_err(|_| {
        ApiError::bad_request(format!("{key} must be a non-negative integer, not '{v}'"))
    })
}

fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl Filter {
    fn matches(&self, img: &Image) -> bool {
        match self {
            Filter::OneOf(key, values) => img
                .field(key)
                .is_some_and(|v| values.iter().any(|want| *want == as_text(&v))),
            Filter::Tags(tags) => tags.iter().all(|t| img.tags.contains(t)),
            Filter::SizeMin(n) => img.size.is_some_and(|s| s >= *n),
            Filter::SizeMax(n) => img.size.is_some_and(|s| s <= *n),
            Filter::Time(key, op, t) => {
                let stamp = if key == "created_at" {
                    &img.created_at
                } else {
                    &img.updated_at
                };
                let Some(have) = parse_time(stamp) else {
                    return false;
                };
                match op.as_str() {
                    "gt" => have > *t,
                    "gte" => have >= *t,
                    "lt" => have < *t,
                    "lte" => have <= *t,
                    "eq" => have == *t,
                    _ => have != *t,
                }
            }
        }
    }
}

fn compare(a: &Image, b: &Image, sort: &[(String, bool)]) -> Ordering {
    for (key, asc) in sort {
        let (va, vb) = (a.field(key), b.field(key));
        let ord = match (&va, &vb) {
            (Some(Value::Number(x)), Some(Value::Number(y))) => x
                .as_f64()
                .partial_cmp(&y.as_f64())
                .unwrap_or(Ordering::Equal),
            (Some(x), Some(y)) => as_text(x).cmp(&as_text(y)),
            (None, Some(_)) => Ordering::Less,
            (Some(_), None) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        };
        let ord = if *asc { ord } else { ord.reverse() };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    Ordering::Equal
}

/// Whether the image is in the caller's default list (or the asked
/// visibility); `memberships` are the caller's project's answers to shares.
fn listed(
    ctx: &Context,
    img: &Image,
    q: &ListQuery,
    memberships: &HashMap<uuid::Uuid, MemberStatus>,
) -> bool {
    let membership = memberships.get(&img.id).copied();
    if !policy::visible(ctx, img, membership) || (img.os_hidden && !q.show_hidden) {
        return false;
    }
    // A shared image of another project is listed by the caller's answer.
    if img.visibility == Visibility::Shared
        && !policy::owns(ctx, img)
        && let Some(status) = membership
        && q.member_status != "all"
        && q.member_status != status.as_str()
    {
        return false;
    }
    match q.visibility.as_deref() {
        Some("all") => true,
        Some(v) => Visibility::parse(v) == Some(img.visibility),
        // Community images appear only when asked for, unless owned.
        None => img.visibility != Visibility::Community || policy::owns(ctx, img),
    }
}

/// A page's link: `path` with the list's query, and `marker` when given.
pub(super) fn page_link(path: &str, base: &[(String, String)], marker: Option<&str>) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in base {
        s.append_pair(k, v);
    }
    if let Some(m) = marker {
        s.append_pair("marker", m);
    }
    let q = s.finish();
    if q.is_empty() {
        path.into()
    } else {
        format!("{path}?{q}")
    }
}

/// `GET /v2/images`.
pub async fn list(
    State(state): State<Shared>,
    Extension(ctx): Extension<Context>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = parse_query(raw.as_deref())?;
    if let Some(v) = &q.visibility
        && v != "all"
        && Visibility::parse(v).is_none()
    {
        return Err(ApiError::bad_request(format!(
            "Invalid visibility value: {v}"
        )));
    }
    let project = ctx.project_id.clone();
    let (all, memberships) =
        blocking(&state, move |m| Ok((m.list()?, m.memberships(&project)?))).await?;
    let mut images: Vec<Image> = all
        .into_iter()
        .filter(|img| listed(&ctx, img, &q, &memberships))
        .filter(|img| q.filters.iter().all(|f| f.matches(img)))
        .collect();
    images.sort_by(|a, b| compare(a, b, &q.sort));
    let start = match &q.marker {
        None => 0,
        Some(m) => {
            let pos = images
                .iter()
                .position(|img| img.id.to_string() == *m)
                .ok_or_else(|| ApiError::bad_request(format!("marker {m} could not be found")))?;
            pos + 1
        }
    };
    let page: Vec<&Image> = images.iter().skip(start).take(q.limit).collect();
    let mut body = json!({
        "images": page.iter().map(|i| i.to_json()).collect::<Vec<_>>(),
        "first": page_link("/v2/images", &q.base, None),
        "schema": "/v2/schemas/images",
    });
    if q.limit > 0
        && page.len() == q.limit
        && let Some(last) = page.last()
    {
        body["next"] = Value::String(page_link("/v2/images", &q.base, Some(&last.id.to_string())));
    }
    Ok(axum::Json(body).into_response())
}
