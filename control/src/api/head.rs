//! Checks of the request head that hyper leaves to us. hyper caps the
//! whole head (about 400 KiB, 100 header lines) and refuses a
//! `Transfer-Encoding` whose last coding is not `chunked`, but it takes one
//! header line of any length, and a body framed `gzip, chunked` (or
//! `chunked` twice) as plain `chunked`, ignoring the rest: such an upload
//! would store bytes other than the ones the client meant.

use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// The longest header line accepted, name and value: Glance's own
/// `max_header_line` default (a Keystone Fernet token is a few hundred bytes).
pub const MAX_HEADER_LINE: usize = 16 * 1024;

/// Refuses a request whose head fails [`refusal`] before anything reads it.
pub async fn check(req: Request, next: Next) -> Response {
    match refusal(req.headers()) {
        Some(e) => e.into_response(),
        None => next.run(req).await,
    }
}

/// Why a head is refused: `431` for a header line over [`MAX_HEADER_LINE`],
/// `400` for any `Transfer-Encoding` but one `chunked`. Either closes the
/// connection, whose framing can no longer be trusted.
pub fn refusal(headers: &HeaderMap) -> Option<ApiError> {
    if headers
        .iter()
        .any(|(name, value)| name.as_str().len() + value.len() > MAX_HEADER_LINE)
    {
        return Some(
            ApiError::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                format!("A request header line is longer than {MAX_HEADER_LINE} bytes"),
            )
            .with_header(header::CONNECTION, "close"),
        );
    }
    let mut codings = headers.get_all(header::TRANSFER_ENCODING).iter();
    match (codings.next(), codings.next()) {
        (None, _) => None,
        (Some(one), None) if one.as_bytes().trim_ascii().eq_ignore_ascii_case(b"chunked") => None,
        _ => Some(
            ApiError::bad_request(
                "Transfer-Encoding must be chunked alone: no other transfer coding is implemented",
            )
            .with_header(header::CONNECTION, "close"),
        ),
    }
}
