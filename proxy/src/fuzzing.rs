//! Properties for the fuzz targets in `fuzz/`: each target is one call here.
#![allow(clippy::panic)]

use crate::http::{self, Parsed};
use crate::range::{self, RangeRequest};

/// A `Range` value never panics the parser, and a partial range always lies
/// inside the image. The first 8 bytes choose the image size.
pub fn range_header(data: &[u8]) {
    let (size, value) = match data.split_first_chunk::<8>() {
        Some((size, rest)) => (u64::from_le_bytes(*size), rest),
        None => (1040, data),
    };
    if let RangeRequest::Partial { start, end } = range::parse(value, size) {
        assert!(
            start <= end && end < size,
            "range {start}-{end} outside {size} bytes"
        );
    }
}

/// Arbitrary bytes never panic the request-head parser, which never claims
/// more bytes than it was given or than its limit.
pub fn request_head(data: &[u8]) {
    const MAX: usize = 4096;
    if let Parsed::Complete(head) = http::parse(data, 32, MAX) {
        assert!(
            head.len <= data.len() && head.len <= MAX,
            "head of {} bytes",
            head.len
        );
        assert!(!head.path.contains('?'), "query left in the path");
    }
}
