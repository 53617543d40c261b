//! The link's query string: strict parsing and canonical formatting.
//!
//! Parameters may come in any order, but each exactly once, with no unknown
//! names and no percent-encoding. The verifier MACs the values exactly as
//! received; numbers, hashes, ids and the signature must be in their one
//! canonical spelling, so formatting a parsed link gives back the same bytes.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ipnet::IpNet;

use crate::canonical::Fields;
use crate::{FORMAT_VERSION, KeyId, MAX_QUERY_BYTES, Rejection, StoreId};

/// The query's values, located but not yet decoded.
pub(crate) struct RawQuery<'a> {
    pub key_id: &'a str,
    pub expires: &'a str,
    pub store: &'a str,
    pub size: &'a str,
    pub md5: &'a str,
    pub sha512: &'a str,
    pub cidr: Option<&'a str>,
    pub signature: &'a str,
}

/// The query's values, decoded and checked.
pub(crate) struct Decoded {
    pub key_id: KeyId,
    pub expires: u64,
    pub store: StoreId,
    pub size: u64,
    pub md5: [u8; 16],
    pub sha512: [u8; 64],
    pub client_cidr: Option<IpNet>,
    pub signature: [u8; 32],
}

/// Splits a query string (without the leading `?`) into its named values.
///
/// Parameters come in the one order the table in `docs/signed-links.md` gives
/// (only glance-api writes links), which makes this a single forward pass with
/// no lookups: it runs on every request.
pub(crate) fn split(query: &str) -> Result<RawQuery<'_>, Rejection> {
    if query.len() > MAX_QUERY_BYTES {
        return Err(Rejection::Malformed);
    }
    let mut rest = query;
    let version = take(&mut rest, "v=")?;
    if parse_decimal(version)? != u64::from(FORMAT_VERSION) {
        return Err(Rejection::Version);
    }
    let key_id = take(&mut rest, "&kid=")?;
    let expires = take(&mut rest, "&exp=")?;
    let store = take(&mut rest, "&store=")?;
    let size = take(&mut rest, "&size=")?;
    let md5 = take_exact(&mut rest, "&md5=", 32)?;
    let sha512 = take_exact(&mut rest, "&sha512=", 128)?;
    let cidr = if rest.starts_with("&cidr=") {
        Some(take(&mut rest, "&cidr=")?)
    } else {
        None
    };
    let signature = take_exact(&mut rest, "&sig=", 43)?;
    if !rest.is_empty() {
        return Err(Rejection::Malformed);
    }
    Ok(RawQuery {
        key_id,
        expires,
        store,
        size,
        md5,
        sha512,
        cidr,
        signature,
    })
}

/// Takes `prefix` and the value after it, up to the next `&` or the end.
fn take<'a>(rest: &mut &'a str, prefix: &str) -> Result<&'a str, Rejection> {
    let after = rest.strip_prefix(prefix).ok_or(Rejection::Malformed)?;
    // Values scanned this way are short (at most 64 bytes when valid); '&' is
    // ASCII, so the index found is a char boundary.
    let end = after.bytes().position(|b| b == b'&').unwrap_or(after.len());
    let (value, tail) = after.split_at(end);
    *rest = tail;
    Ok(value)
}

/// Takes `prefix` and a value of exactly `len` bytes, which must end the
/// query or be followed by `&`.
fn take_exact<'a>(rest: &mut &'a str, prefix: &str, len: usize) -> Result<&'a str, Rejection> {
    let after = rest.strip_prefix(prefix).ok_or(Rejection::Malformed)?;
    let value = after.get(..len).ok_or(Rejection::Malformed)?;
    let tail = &after[len..];
    if !(tail.is_empty() || tail.starts_with('&')) {
        return Err(Rejection::Malformed);
    }
    *rest = tail;
    Ok(value)
}

impl<'a> RawQuery<'a> {
    /// Decodes every value, refusing any that is not in its canonical spelling.
    pub fn decode(&self) -> Result<Decoded, Rejection> {
        Ok(Decoded {
            key_id: KeyId::new(self.key_id).map_err(|_| Rejection::Malformed)?,
            expires: parse_decimal(self.expires)?,
            store: StoreId::new(self.store).map_err(|_| Rejection::Malformed)?,
            size: parse_decimal(self.size)?,
            md5: parse_hex(self.md5)?,
            sha512: parse_hex(self.sha512)?,
            client_cidr: self.cidr.map(parse_cidr).transpose()?,
            signature: parse_signature(self.signature)?,
        })
    }

    /// The canonical-string fields, taken text for text from the query.
    pub fn fields(&self, image_id: &'a str) -> Fields<'a> {
        Fields {
            image_id,
            key_id: self.key_id,
            expires: self.expires,
            store: self.store,
            size: self.size,
            md5: self.md5,
            sha512: self.sha512,
            cidr: self.cidr.unwrap_or(""),
        }
    }
}

/// A `u64` in decimal: digits only, no sign, no leading zero (except `0`).
fn parse_decimal(s: &str) -> Result<u64, Rejection> {
    let b = s.as_bytes();
    if b.is_empty() || b.len() > 20 || !b.iter().all(u8::is_ascii_digit) {
        return Err(Rejection::Malformed);
    }
    if b.len() > 1 && b[0] == b'0' {
        return Err(Rejection::Malformed);
    }
    b.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(d - b'0')))
            .ok_or(Rejection::Malformed)
    })
}

/// Decodes lowercase hex digits into `out` (half as long); false on any other byte.
///
/// Refusing uppercase keeps one spelling per link. The check is written as a
/// branch-free fold so the compiler vectorises it, and the decoding itself is
/// `const-hex`'s SIMD decoder: this runs on every request.
pub(crate) fn decode_hex_lower(hex: &[u8], out: &mut [u8]) -> bool {
    let not_lower = hex.iter().fold(false, |bad, &c| {
        bad | !(c.is_ascii_digit() | (b'a'..=b'f').contains(&c))
    });
    !not_lower && hex.len() == 2 * out.len() && hex::decode_to_slice(hex, out).is_ok()
}

/// Lowercase hex of exactly `N` bytes.
///
/// Hand-written rather than a hex crate's decoder: this is on every request's
/// path and must refuse uppercase (one spelling per link) in the same single pass.
fn parse_hex<const N: usize>(s: &str) -> Result<[u8; N], Rejection> {
    let mut out = [0u8; N];
    if !decode_hex_lower(s.as_bytes(), &mut out) {
        return Err(Rejection::Malformed);
    }
    Ok(out)
}

/// A CIDR with its host bits zero.
///
/// Other spellings of an IPv6 network (`2001:0DB8::/32`) parse, but the
/// signer always writes the RFC 5952 form and the MAC covers the text as
/// received, so such a link fails its signature check. Re-printing the value
/// here to refuse it earlier would cost more than the rest of the parse.
fn parse_cidr(s: &str) -> Result<IpNet, Rejection> {
    let net: IpNet = s.parse().map_err(|_| Rejection::Malformed)?;
    if net.trunc() != net {
        return Err(Rejection::Malformed);
    }
    Ok(net)
}

/// 32 bytes in base64url without padding (43 characters, canonical trailing bits).
fn parse_signature(s: &str) -> Result<[u8; 32], Rejection> {
    if s.len() != 43 {
        return Err(Rejection::Malformed);
    }
    let mut out = [0u8; 32];
    let n = URL_SAFE_NO_PAD
        .decode_slice(s, &mut out)
        .map_err(|_| Rejection::Malformed)?;
    if n != out.len() {
        return Err(Rejection::Malformed);
    }
    Ok(out)
}

/// Formats the canonical query string from the link's text fields.
pub(crate) fn format(fields: &Fields<'_>, signature: &[u8; 32]) -> String {
    let mut q = String::with_capacity(320);
    for piece in [
        "v=1&kid=",
        fields.key_id,
        "&exp=",
        fields.expires,
        "&store=",
        fields.store,
        "&size=",
        fields.size,
        "&md5=",
        fields.md5,
        "&sha512=",
        fields.sha512,
    ] {
        q.push_str(piece);
    }
    if !fields.cidr.is_empty() {
        q.push_str("&cidr=");
        q.push_str(fields.cidr);
    }
    q.push_str("&sig=");
    URL_SAFE_NO_PAD.encode_string(signature, &mut q);
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_version_matches_the_literal_in_format() {
        assert_eq!(FORMAT_VERSION, 1);
    }

    #[test]
    fn decimal_rejects_non_canonical_numbers() {
        assert_eq!(parse_decimal("0"), Ok(0));
        assert_eq!(parse_decimal("18446744073709551615"), Ok(u64::MAX));
        for bad in ["", "01", "+1", "-1", "1e3", "18446744073709551616", " 1"] {
            assert_eq!(parse_decimal(bad), Err(Rejection::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn cidr_must_be_a_network() {
        assert!(parse_cidr("10.0.0.0/8").is_ok());
        assert!(parse_cidr("2001:db8::/32").is_ok());
        for bad in ["10.0.0.1/8", "2001:db8::1/32", "10.0.0.0", "10.0.0.0/33"] {
            assert_eq!(parse_cidr(bad), Err(Rejection::Malformed), "{bad}");
        }
    }

    #[test]
    fn hex_must_be_lowercase_and_exact_length() {
        assert_eq!(parse_hex::<3>("0aff19"), Ok([0x0a, 0xff, 0x19]));
        for bad in [
            "0AFF19",
            "0af",
            "0aff1900",
            "0aff1g",
            "0aff1 ",
            "0aff1\u{0}",
        ] {
            assert!(parse_hex::<3>(bad).is_err(), "{bad:?}");
        }
        // Every byte value round-trips.
        let all: Vec<u8> = (0..=255).collect();
        let text = hex::encode(&all);
        assert_eq!(parse_hex::<256>(&text).unwrap().to_vec(), all);
    }

    #[test]
    fn signature_must_be_canonical_base64url() {
        let good = URL_SAFE_NO_PAD.encode([7u8; 32]);
        assert_eq!(parse_signature(&good), Ok([7u8; 32]));
        assert!(parse_signature(&format!("{good}=")).is_err());
        assert!(parse_signature(&good.replace('B', "+")).is_err());
    }
}
