//! The canonical string that a link's signature covers (format version 1).
//!
//! ```text
//! glance-link/1\n
//! GET\n
//! /v1/images/{image_id}\n
//! kid={key_id}\n
//! exp={expires}\n
//! store={store}\n
//! size={size}\n
//! md5={md5 hex}\n
//! sha512={sha512 hex}\n
//! cidr={cidr, empty when unbound}
//! ```
//!
//! Lines are joined by one `\n`, with no trailing newline. Every value is
//! written exactly as it stands in the query, and is restricted to characters
//! that cannot contain `\n`, so the string is unambiguous.
//! `docs/signed-links.md` is the normative description.

use std::io::Write as _;

use crate::{KeyId, LinkParams, PATH_PREFIX};

/// First line of the canonical string.
const HEADER: &str = "glance-link/1";

/// Method class bound into every version-1 link: GET, which also allows HEAD.
const METHOD_CLASS: &str = "GET";

/// The bound values as they appear in a link, text for text.
///
/// The verifier builds one from the query it received (the parser has already
/// checked that each value is in its single canonical spelling), the signer
/// from [`LinkParams`] via [`with_fields`]: both feed the same bytes to the MAC.
pub(crate) struct Fields<'a> {
    pub image_id: &'a str,
    pub key_id: &'a str,
    pub expires: &'a str,
    pub store: &'a str,
    pub size: &'a str,
    pub md5: &'a str,
    pub sha512: &'a str,
    /// Empty when the link binds no CIDR.
    pub cidr: &'a str,
}

/// Room for the longest canonical string: the query is at most
/// [`crate::MAX_QUERY_BYTES`] and the fixed text adds less than 128 bytes.
pub(crate) const MAX_CANONICAL_BYTES: usize = crate::MAX_QUERY_BYTES + 128;

impl Fields<'_> {
    /// Writes the canonical string into `buf` and returns it, or `None` if it
    /// would not fit (it always does for a query the parser accepted).
    ///
    /// Built on the stack and handed to the MAC in one `update`: twenty small
    /// updates cost more than the hashing itself.
    pub fn canonical<'b>(&self, buf: &'b mut [u8; MAX_CANONICAL_BYTES]) -> Option<&'b [u8]> {
        let mut len = 0;
        for piece in [
            HEADER,
            "\n",
            METHOD_CLASS,
            "\n",
            PATH_PREFIX,
            self.image_id,
            "\nkid=",
            self.key_id,
            "\nexp=",
            self.expires,
            "\nstore=",
            self.store,
            "\nsize=",
            self.size,
            "\nmd5=",
            self.md5,
            "\nsha512=",
            self.sha512,
            "\ncidr=",
            self.cidr,
        ] {
            let end = len + piece.len();
            buf.get_mut(len..end)?.copy_from_slice(piece.as_bytes());
            len = end;
        }
        Some(&buf[..len])
    }
}

/// Formats `params` as link text on the stack and hands the fields to `f`.
pub(crate) fn with_fields<R>(
    key_id: &KeyId,
    p: &LinkParams,
    f: impl FnOnce(&Fields<'_>) -> R,
) -> R {
    let mut uuid_buf = uuid::Uuid::encode_buffer();
    let mut exp_buf = [0u8; 20];
    let mut size_buf = [0u8; 20];
    let mut md5_buf = [0u8; 32];
    let mut sha512_buf = [0u8; 128];
    let mut cidr_buf = [0u8; 64];
    let cidr = match &p.client_cidr {
        Some(net) => display(net, &mut cidr_buf),
        None => "",
    };
    f(&Fields {
        image_id: p.image_id.hyphenated().encode_lower(&mut uuid_buf),
        key_id: key_id.as_str(),
        expires: decimal(p.expires, &mut exp_buf),
        store: p.store.as_str(),
        size: decimal(p.size, &mut size_buf),
        md5: hex_lower(&p.md5, &mut md5_buf),
        sha512: hex_lower(&p.sha512, &mut sha512_buf),
        cidr,
    })
}

/// Prints a network into `buf` without allocating and returns the text.
pub(crate) fn display<'b>(net: &ipnet::IpNet, buf: &'b mut [u8; 64]) -> &'b str {
    let mut cursor = &mut buf[..];
    // An IPv6 prefix prints in at most 43 bytes, so 64 always suffices.
    let _ = write!(cursor, "{net}");
    let len = 64 - cursor.len();
    std::str::from_utf8(&buf[..len]).unwrap_or_default()
}

/// Formats `n` in decimal into `buf` and returns the digits.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[i..]).unwrap_or_default()
}

/// Lowercase hex of `bytes` into `buf` (exactly twice as long).
fn hex_lower<'b>(bytes: &[u8], buf: &'b mut [u8]) -> &'b str {
    // `buf` is sized by the caller to twice `bytes`, all `encode_to_slice` needs.
    let _ = hex::encode_to_slice(bytes, buf);
    std::str::from_utf8(buf).unwrap_or_default()
}

/// The canonical string for `params` signed under `key_id`, as text (for
/// documentation, debugging and test vectors; signing feeds it to the MAC
/// without building it).
pub fn canonical_string(key_id: &KeyId, params: &LinkParams) -> String {
    with_fields(key_id, params, |fields| {
        let mut buf = [0u8; MAX_CANONICAL_BYTES];
        // Every piece is ASCII by construction.
        String::from_utf8_lossy(fields.canonical(&mut buf).unwrap_or_default()).into_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::decimal;

    #[test]
    fn decimal_formats_edges() {
        assert_eq!(decimal(0, &mut [0; 20]), "0");
        assert_eq!(decimal(10, &mut [0; 20]), "10");
        assert_eq!(decimal(u64::MAX, &mut [0; 20]), "18446744073709551615");
    }
}
