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
