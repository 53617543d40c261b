//! Why a link was refused.

/// The reason a link failed verification.
///
/// Callers answer every variant with the same `403` and body (no oracle saying
/// which check failed); the reason goes only to a metric label via
/// [`Rejection::label`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// The path or query is not a well-formed link (missing, duplicate,
    /// unknown or badly encoded parameter, non-UUID image id, too long).
    #[error("malformed link")]
    Malformed,
    /// The link names a format version this build does not speak.
    #[error("unsupported link version")]
    Version,
    /// The request method is neither GET nor HEAD.
    #[error("method not covered by the link")]
    Method,
    /// The key id is not in the keyring (never issued, or already dropped).
    #[error("unknown key id")]
    UnknownKey,
    /// The signature does not match the bound parameters.
    #[error("bad signature")]
    Signature,
    /// The link's expiry has passed.
    #[error("link expired")]
    Expired,
    /// The client address is outside the link's CIDR.
    #[error("client address not allowed")]
    ClientAddress,
}

impl Rejection {
    /// Every variant, for pre-registering metric labels.
    pub const ALL: [Rejection; 7] = [
        Rejection::Malformed,
        Rejection::Version,
        Rejection::Method,
        Rejection::UnknownKey,
        Rejection::Signature,
        Rejection::Expired,
        Rejection::ClientAddress,
    ];

    /// A short, stable name for a metric label (`reason="expired"`).
    pub fn label(self) -> &'static str {
        match self {
            Rejection::Malformed => "malformed",
            Rejection::Version => "version",
            Rejection::Method => "method",
            Rejection::UnknownKey => "unknown_key",
            Rejection::Signature => "signature",
            Rejection::Expired => "expired",
            Rejection::ClientAddress => "client_address",
        }
    }
}
