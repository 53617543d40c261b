//! API errors, and the one place they become HTTP responses.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::metadata::MetadataError;

/// An error answer: a status, a message for the client and optional extra headers.
#[derive(Debug)]
pub struct ApiError {
    /// The status.
    pub status: StatusCode,
    /// Text for the client (never internal detail).
    pub message: String,
    /// Extra headers.
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl ApiError {
    /// An error with `status` and `message`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: header::HeaderName, value: &'static str) -> ApiError {
        self.headers.push((name, HeaderValue::from_static(value)));
        self
    }

    /// 400.
    pub fn bad_request(m: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, m)
    }
    /// 403.
    pub fn forbidden(m: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, m)
    }
    /// 404 for an image.
    pub fn no_image(id: impl std::fmt::Display) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("No image found with ID {id}"),
        )
    }
    /// 409.
    pub fn conflict(m: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, m)
    }
    /// 500 for a failure of ours: the cause goes to the log, not the client.
    pub fn from_internal(cause: &dyn std::fmt::Display) -> ApiError {
        tracing::error!(error = %cause, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error; see the server log",
        )
    }
}

impl From<MetadataError> for ApiError {
    fn from(e: MetadataError) -> ApiError {
        match e {
            MetadataError::NotFound(id) => ApiError::no_image(id),
            MetadataError::Exists(id) => {
                ApiError::conflict(format!("Image with identifier {id} already exists"))
            }
            MetadataError::Refused(m) => ApiError::conflict(m),
            e @ MetadataError::DocExists(..) => ApiError::conflict(capitalised(&e.to_string())),
            e @ MetadataError::DocNotFound(..) => {
                ApiError::new(StatusCode::NOT_FOUND, capitalised(&e.to_string()))
            }
            other => {
                tracing::error!(error = %other, "metadata store failed");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "The metadata store failed; see the server log",
                )
            }
        }
    }
}

/// A message with its first letter capitalised.
fn capitalised(s: &str) -> String {
    let mut chars = s.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = format!(
            "{} {}",
            self.status.as_u16(),
            self.status.canonical_reason().unwrap_or("")
        );
        let body = json!({
            "message": self.message,
            "code": code,
            "title": self.status.canonical_reason().unwrap_or(""),
        });
        let mut resp = (self.status, axum::Json(body)).into_response();
        for (k, v) in self.headers {
            resp.headers_mut().insert(k, v);
        }
        resp.extensions_mut().insert(ErrorMessage(self.message));
        resp
    }
}

/// The message of an error answer, for [`negotiate`] to render as HTML.
#[derive(Clone)]
struct ErrorMessage(String);

/// Renders error answers as Glance's server (webob) does: JSON
/// `{"message", "code", "title"}` when the client's `Accept` names
/// `application/json`, else the HTML page, which python-glanceclient reads
/// (it expects JSON errors nested one level deeper, as Glance never sends).
pub async fn negotiate(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let wants_json = req
        .headers()
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json"));
    let mut resp = next.run(req).await;
    if wants_json {
        return resp;
    }
    let Some(ErrorMessage(message)) = resp.extensions_mut().remove::<ErrorMessage>() else {
        return resp;
    };
    let status = resp.status();
    let title = format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let page = format!(
        "<html>\n <head>\n  <title>{title}</title>\n </head>\n <body>\n  <h1>{title}</h1>\n  {}<br /><br />\n\n\n\n </body>\n</html>",
        escape_html(&message)
    );
    let (mut parts, _) = resp.into_parts();
    parts.headers.insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("text/html; charset=UTF-8"),
    );
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(page))
}

fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(c),
        }
    }
    out
}
