//! The `Range` request header, as Glance's download honours it: one byte range
//! (`a-b`, `a-`, `-n`); several ranges are refused.

/// What a `Range` header asks of an image of a given size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable range: send the whole image (also for a header that is not a
    /// byte range at all, as RFC 9110 says to ignore it).
    Full,
    /// Bytes `start..=end` (inclusive, within the image).
    Partial {
        /// First byte.
        start: u64,
        /// Last byte, inclusive.
        end: u64,
    },
    /// A byte range that starts at or past the end: `416`.
    Unsatisfiable,
    /// More than one range: Glance answers `400`.
    Multiple,
}

/// Longest `Range` value read; a longer one is ignored.
const MAX_RANGE_HEADER: usize = 256;

/// Interprets a `Range` header value for an image of `size` bytes.
pub fn parse(value: &[u8], size: u64) -> RangeRequest {
    if value.len() > MAX_RANGE_HEADER {
        return RangeRequest::Full;
    }
    let Ok(value) = std::str::from_utf8(value) else {
        return RangeRequest::Full;
    };
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeRequest::Full;
    };
    if spec.contains(',') {
        return RangeRequest::Multiple;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    match (number(first), number(last)) {
        // `-n`: the last n bytes (all of them if n exceeds the size).
        (None, Some(n)) if first.is_empty() => {
            if n == 0 || size == 0 {
                RangeRequest::Unsatisfiable
            } else {
                RangeRequest::Partial {
                    start: size.saturating_sub(n),
                    end: size - 1,
                }
            }
        }
        // `a-`: from a to the end.
        (Some(start), None) if last.is_empty() => bounded(start, u64::MAX, size),
        // `a-b`.
        (Some(start), Some(end)) if start <= end => bounded(start, end, size),
        _ => RangeRequest::Full,
    }
}

fn bounded(start: u64, end: u64, size: u64) -> RangeRequest {
    if start >= size {
        return RangeRequest::Unsatisfiable;
    }
    RangeRequest::Partial {
        start,
        end: end.min(size - 1),
    }
}

fn number(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::RangeRequest::*;
    use super::*;

    #[test]
    fn single_ranges_in_every_form() {
        let size = 1040;
        assert_eq!(parse(b"bytes=0-99", size), Partial { start: 0, end: 99 });
        assert_eq!(parse(b"bytes=0-0", size), Partial { start: 0, end: 0 });
        assert_eq!(
            parse(b"bytes=1039-1039", size),
            Partial {
                start: 1039,
                end: 1039
            }
        );
        assert_eq!(
            parse(b"bytes=1000-", size),
            Partial {
                start: 1000,
                end: 1039
            }
        );
        assert_eq!(
            parse(b"bytes=1039-", size),
            Partial {
                start: 1039,
                end: 1039
            }
        );
        assert_eq!(
            parse(b"bytes=-10", size),
            Partial {
                start: 1030,
                end: 1039
            }
        );
        assert_eq!(
            parse(b"bytes=-5000", size),
            Partial {
                start: 0,
                end: 1039
            }
        );
        assert_eq!(
            parse(b"bytes=1000-99999", size),
            Partial {
                start: 1000,
                end: 1039
            }
        );
    }

    #[test]
    fn out_of_range_is_unsatisfiable() {
        assert_eq!(parse(b"bytes=1040-", 1040), Unsatisfiable);
        assert_eq!(parse(b"bytes=5000-6000", 1040), Unsatisfiable);
        assert_eq!(parse(b"bytes=-0", 1040), Unsatisfiable);
        assert_eq!(parse(b"bytes=0-", 0), Unsatisfiable);
    }

    #[test]
    fn multiple_ranges_are_refused_and_nonsense_is_ignored() {
        assert_eq!(parse(b"bytes=0-1,5-6", 1040), Multiple);
        for ignored in [
            &b"items=0-1"[..],
            b"bytes=5-1",
            b"bytes=a-b",
            b"bytes=",
            b"bytes=-",
            b"bytes=+1-2",
            b"bytes=99999999999999999999999-",
            b"\xff\xfe",
        ] {
            assert_eq!(parse(ignored, 1040), Full, "{ignored:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn partial_ranges_always_lie_inside_the_image(v in "bytes=[0-9-]{0,12}", size in 0u64..5000) {
            if let Partial { start, end } = parse(v.as_bytes(), size) {
                proptest::prop_assert!(start <= end && end < size);
            }
        }
    }
}
