//! Properties for the fuzz targets in `fuzz/`: each target is one call here.

use crate::SignedLink;

/// Parses arbitrary bytes as a link query (with a fixed valid path) and, when
/// that succeeds, checks that formatting gives a canonical query that parses
/// back to the same link and formats to the same bytes.
///
/// Panics when the property fails (that is what the fuzzer looks for).
pub fn query_round_trip(data: &[u8]) {
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    let path = "/v1/images/0f3d9c5e-7b1a-4c2e-9d4f-5a6b7c8d9e0f";
    let Ok(link) = SignedLink::parse(path, query) else {
        return;
    };
    let formatted = link.query();
    #[allow(clippy::panic)]
    match SignedLink::parse(path, &formatted) {
        Ok(again) => {
            assert_eq!(again, link, "reparse differs for {query:?}");
            assert_eq!(
                again.query(),
                formatted,
                "format is not stable for {query:?}"
            );
        }
        Err(e) => panic!("formatted link {formatted:?} does not parse: {e}"),
    }
}

/// Reads arbitrary bytes as the answer to a Swift authentication: the first
/// byte picks tempauth or Keystone, then `name: value` header lines, a blank
/// line and the body. Whatever the bytes, parsing returns (no panic), and a
/// session it accepts has a printable token and a storage URL whose path
/// needs no escaping, and shows neither the token nor the password in
/// `Debug`.
pub fn swift_auth_answer(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let account = crate::swift::SwiftAccount::for_fuzzing(first & 1 == 1);
    let text = String::from_utf8_lossy(rest);
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    let headers: Vec<(String, String)> = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let lookup = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let status = if first & 2 == 0 { 200 } else { 201 };
    if let Ok(session) = account.parse_auth(status, &lookup, body.as_bytes()) {
        assert!(session.token.bytes().all(|b| b.is_ascii_graphic()));
        assert!(!session.token.is_empty());
        let path = session.storage_url.path();
        assert!(!path.contains(['%', '?', '#', ' ']), "{path:?}");
        // What `Debug` shows besides the storage URL (which may hold any text).
        let shown =
            format!("{session:?}{account:?}").replace(session.storage_url.url().as_str(), "");
        assert!(!shown.contains("secret"), "{shown}");
        if session.token.len() > 8 {
            assert!(!shown.contains(&session.token), "{shown}");
        }
    }
}
