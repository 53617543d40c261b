//! Identifiers bound into a link: key ids, store ids and image ids.

use std::fmt;

use uuid::Uuid;

/// Longest key id or store id accepted.
const MAX_TOKEN_LEN: usize = 64;

/// Why a key id or store id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// Empty or longer than 64 bytes.
    #[error("identifier must be 1 to {MAX_TOKEN_LEN} characters long")]
    Length,
    /// A character outside `A-Z a-z 0-9 _ -`.
    #[error("identifier may only contain A-Z, a-z, 0-9, '_' and '-'")]
    Charset,
}

/// A checked identifier stored inline (length, then up to 64 ASCII bytes;
/// the unused tail is always zero, so the derived equality and hash hold).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Token {
    len: u8,
    bytes: [u8; MAX_TOKEN_LEN],
}

impl Ord for Token {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl PartialOrd for Token {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Token {
    fn new(s: &str) -> Result<Token, IdError> {
        let b = s.as_bytes();
        if b.is_empty() || b.len() > MAX_TOKEN_LEN {
            return Err(IdError::Length);
        }
        if !b
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
        {
            return Err(IdError::Charset);
        }
        let mut bytes = [0u8; MAX_TOKEN_LEN];
        bytes[..b.len()].copy_from_slice(b);
        Ok(Token {
            len: b.len() as u8,
            bytes,
        })
    }

    fn as_str(&self) -> &str {
        // Only ASCII is ever stored, so this never falls back.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

macro_rules! token_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        ///
        /// 1 to 64 characters from `A-Z a-z 0-9 _ -`, so it needs no escaping in a
        /// URL, a TOML key or the canonical string. Held inline: parsing a link
        /// allocates nothing for it.
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(Token);

        impl $name {
            /// Checks `s` and wraps it.
            pub fn new(s: &str) -> Result<Self, IdError> {
                Token::new(s).map(Self)
            }

            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                self.0.as_str()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }
    };
}

token_type!(
    /// The id of one key in a [`crate::Keyring`].
    KeyId
);
token_type!(
    /// The id of a backend store, as configured on the stream node (`[stores.<id>]`).
    StoreId
);

/// Parses an image id, accepting only the canonical form Glance uses:
/// 36 characters, lowercase hexadecimal, hyphenated (`8-4-4-4-12`).
///
/// Anything else (braces, URNs, uppercase, `..`, slashes) is `None`, so a
/// caller can refuse it before any file is touched.
pub fn parse_image_id(s: &str) -> Option<Uuid> {
    let b = s.as_bytes();
    if b.len() != 36 || b[8] != b'-' || b[13] != b'-' || b[18] != b'-' || b[23] != b'-' {
        return None;
    }
    let mut digits = [0u8; 32];
    let groups = [&b[0..8], &b[9..13], &b[14..18], &b[19..23], &b[24..36]];
    let mut at = 0;
    for g in groups {
        digits[at..at + g.len()].copy_from_slice(g);
        at += g.len();
    }
    let mut bytes = [0u8; 16];
    crate::query::decode_hex_lower(&digits, &mut bytes).then(|| Uuid::from_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_id_accepts_only_canonical_lowercase_form() {
        let id = "0f3d9c5e-7b1a-4c2e-9d4f-5a6b7c8d9e0f";
        assert_eq!(parse_image_id(id).map(|u| u.to_string()), Some(id.into()));
        for bad in [
            "0F3D9C5E-7B1A-4C2E-9D4F-5A6B7C8D9E0F",
            "{0f3d9c5e-7b1a-4c2e-9d4f-5a6b7c8d9e0f}",
            "0f3d9c5e7b1a4c2e9d4f5a6b7c8d9e0f",
            "urn:uuid:0f3d9c5e-7b1a-4c2e-9d4f-5a6b7c8d9e0f",
            "../../../../etc/passwd-aaaaaaaaaaaaaaa",
            "0f3d9c5e-7b1a-4c2e-9d4f-5a6b7c8d9e0g",
            "",
        ] {
            assert_eq!(parse_image_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn tokens_are_bounded_and_url_safe() {
        assert!(StoreId::new("local_file-1").is_ok());
        assert_eq!(StoreId::new(""), Err(IdError::Length));
        assert_eq!(KeyId::new(&"k".repeat(65)), Err(IdError::Length));
        assert_eq!(KeyId::new("a/b"), Err(IdError::Charset));
        assert_eq!(KeyId::new("a=b"), Err(IdError::Charset));
        assert_eq!(KeyId::new("a\nb"), Err(IdError::Charset));
    }

    #[test]
    fn tokens_order_as_text() {
        let mut ids = ["b", "ab", "a", "ba"].map(|s| KeyId::new(s).unwrap());
        ids.sort();
        assert_eq!(ids.map(|k| k.to_string()), ["a", "ab", "b", "ba"]);
    }
}
