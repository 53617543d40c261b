//! HTTP/1.1 request heads (parsed by `httparse` into slices of the read
//! buffer) and response heads (written into a reused buffer).

/// Most header fields any configuration may allow; the parser's slots live on the stack.
pub const MAX_HEADERS_CAP: usize = 128;

/// A parsed request head, borrowing the connection's read buffer.
pub struct RequestHead<'a> {
    /// The method, as sent.
    pub method: &'a str,
    /// The path, without the query.
    pub path: &'a str,
    /// The query, without `?` (empty when there is none).
    pub query: &'a str,
    /// Whether the connection may stay open after the response.
    pub keep_alive: bool,
    /// The `Range` header, if any.
    pub range: Option<&'a [u8]>,
    /// The `Authorization` header, if any.
    pub authorization: Option<&'a [u8]>,
    /// What the head says about a request body.
    pub body: Body,
    /// Length of the head in bytes, including the blank line.
    pub len: usize,
}

impl std::fmt::Debug for RequestHead<'_> {
    // The `Authorization` header (an admin token) never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestHead")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("keep_alive", &self.keep_alive)
            .field("range", &self.range.map(String::from_utf8_lossy))
            .field("authorization", &self.authorization.map(|_| ".."))
            .field("body", &self.body)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

/// What a request announces about its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// No body (no `Content-Length`, or `Content-Length: 0`).
    None,
    /// A `Content-Length` above zero.
    Length(u64),
    /// `Transfer-Encoding` present (this server takes no request bodies).
    Chunked,
    /// Several or unparsable `Content-Length` values.
    Invalid,
}

/// Why a head could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// Larger than the configured byte limit, or more header fields than allowed: `431`.
    TooLarge,
    /// Not HTTP/1.x: `400`.
    Malformed,
}

/// The result of trying to parse the bytes received so far.
#[derive(Debug)]
pub enum Parsed<'a> {
    /// A whole head.
    Complete(RequestHead<'a>),
    /// More bytes are needed.
    Partial,
    /// The head is refused.
    Error(HeadError),
}

/// Parses a request head from `buf`, allowing at most `max_headers` fields
/// (capped at [`MAX_HEADERS_CAP`]) and `max_bytes` bytes.
pub fn parse(buf: &[u8], max_headers: usize, max_bytes: usize) -> Parsed<'_> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS_CAP];
    let slots = &mut slots[..max_headers.min(MAX_HEADERS_CAP)];
    let mut req = httparse::Request::new(slots);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n <= max_bytes => n,
        Ok(httparse::Status::Complete(_)) => return Parsed::Error(HeadError::TooLarge),
        Ok(httparse::Status::Partial) if buf.len() >= max_bytes => {
            return Parsed::Error(HeadError::TooLarge);
        }
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => return Parsed::Error(HeadError::TooLarge),
        Err(_) => return Parsed::Error(HeadError::Malformed),
    };
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Parsed::Error(HeadError::Malformed);
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut keep_alive = minor == 1;
    let mut range = None;
    let mut authorization = None;
    let mut body = Body::None;
    let mut lengths = 0;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive = true;
                }
            }
        } else if h.name.eq_ignore_ascii_case("range") {
            range = Some(h.value);
        } else if h.name.eq_ignore_ascii_case("authorization") {
            authorization = Some(h.value);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            body = Body::Chunked;
        } else if h.name.eq_ignore_ascii_case("content-length") {
            lengths += 1;
            if body != Body::Chunked {
                // Digits only (RFC 9110 8.6): no sign, no list, no spaces
                // inside, so no two parsers can read it differently.
                let digits = h.value.trim_ascii();
                let length = (!digits.is_empty() && digits.iter().all(u8::is_ascii_digit))
                    .then(|| std::str::from_utf8(digits).ok()?.parse::<u64>().ok())
                    .flatten();
                body = match length {
                    Some(0) if lengths == 1 => Body::None,
                    Some(n) if lengths == 1 => Body::Length(n),
                    _ => Body::Invalid,
                };
            }
        }
    }
    Parsed::Complete(RequestHead {
        method,
        path,
        query,
        keep_alive,
        range,
        authorization,
        body,
        len,
    })
}

/// The reason phrase for a status code.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        206 => "Partial Content",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        416 => "Range Not Satisfiable",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Builds a response head into a buffer the connection reuses.
pub struct ResponseHead<'b> {
    out: &'b mut Vec<u8>,
}

impl<'b> ResponseHead<'b> {
    /// Starts a head with the status line, clearing `out`.
    pub fn new(out: &'b mut Vec<u8>, status: u16) -> Self {
        out.clear();
        let mut head = ResponseHead { out };
        head.raw(format_args!("HTTP/1.1 {status} {}\r\n", reason(status)));
        head
    }

    fn raw(&mut self, args: std::fmt::Arguments<'_>) {
        // Writing into a Vec cannot fail.
        let _ = std::io::Write::write_fmt(self.out, args);
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: impl std::fmt::Display) -> Self {
        self.raw(format_args!("{name}: {value}\r\n"));
        self
    }

    /// Ends the head, saying whether the connection stays open.
    pub fn finish(self, keep_alive: bool) {
        if !keep_alive {
            self.out.extend_from_slice(b"Connection: close\r\n");
        }
        self.out.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(buf: &[u8]) -> RequestHead<'_> {
        match parse(buf, 64, 8192) {
            Parsed::Complete(h) => h,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn splits_path_and_query_and_reads_keep_alive() {
        let buf = b"GET /v1/images/x?a=1&b=2 HTTP/1.1\r\nHost: x\r\nRange: bytes=0-1\r\n\r\nNEXT";
        let h = complete(buf);
        assert_eq!(
            (h.method, h.path, h.query),
            ("GET", "/v1/images/x", "a=1&b=2")
        );
        assert!(h.keep_alive);
        assert_eq!(h.range, Some(&b"bytes=0-1"[..]));
        assert_eq!(h.body, Body::None);
        assert_eq!(&buf[h.len..], b"NEXT");
        assert!(!complete(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(!complete(b"GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(complete(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
    }

    #[test]
    fn bodies_are_recognised() {
        let body = |h: &[u8]| complete(h).body;
        assert_eq!(
            body(b"PUT / HTTP/1.1\r\nContent-Length: 5\r\n\r\n"),
            Body::Length(5)
        );
        assert_eq!(
            body(b"GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
            Body::None
        );
        assert_eq!(
            body(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Body::Chunked
        );
        assert_eq!(
            body(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            Body::Invalid
        );
        assert_eq!(
            body(b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n"),
            Body::Invalid
        );
        // Shapes two parsers could read differently are refused.
        for odd in ["+5", "5, 5", "0x5", "5 5", "", "-0"] {
            let head = format!("POST / HTTP/1.1\r\nContent-Length: {odd}\r\n\r\n");
            assert_eq!(body(head.as_bytes()), Body::Invalid, "{odd:?}");
        }
    }

    #[test]
    fn limits_give_431_and_garbage_400() {
        let many: String = (0..70).map(|i| format!("X-{i}: v\r\n")).collect();
        let req = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert!(matches!(
            parse(req.as_bytes(), 64, 8192),
            Parsed::Error(HeadError::TooLarge)
        ));
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000));
        assert!(matches!(
            parse(big.as_bytes(), 64, 8192),
            Parsed::Error(HeadError::TooLarge)
        ));
        assert!(matches!(
            parse(&big.as_bytes()[..8192], 64, 8192),
            Parsed::Error(HeadError::TooLarge)
        ));
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\nX: 1", 64, 8192),
            Parsed::Partial
        ));
        assert!(matches!(
            parse(b"\x00\x01garbage\r\n\r\n", 64, 8192),
            Parsed::Error(HeadError::Malformed)
        ));
    }

    #[test]
    fn response_head_is_well_formed() {
        let mut out = Vec::new();
        ResponseHead::new(&mut out, 206)
            .header("Content-Length", 10)
            .finish(false);
        assert_eq!(
            out,
            b"HTTP/1.1 206 Partial Content\r\nContent-Length: 10\r\nConnection: close\r\n\r\n"
        );
    }
}
