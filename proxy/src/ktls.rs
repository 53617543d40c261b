//! Kernel TLS: once rustls has finished a handshake, the session's keys
//! and record sequence numbers go to the kernel (`TCP_ULP "tls"`, then
//! `TLS_TX` and `TLS_RX`). From then on the kernel encrypts what the socket
//! sends and decrypts what it receives, so a cached body leaves with
//! `sendfile` from the page cache, as on plain HTTP, and never passes
//! through user space.
//!
//! Written here over `libc`'s definitions of the kernel's structures rather
//! than with the `ktls` crate, which is built for tokio-rustls streams: a
//! monoio server needs only the five system calls in `sys` and the
//! bookkeeping below.
//!
//! What stays with the server after the hand-off:
//! - records that are not application data (alerts, post-handshake
//!   messages), which the kernel leaves to `recvmsg` (a plain read fails
//!   with `EIO` on them): close_notify ends the connection cleanly; a key
//!   update from the client is refused by closing, since this server does
//!   not re-key kernel sessions;
//! - the alerts it sends (close_notify, unexpected_message); a record that
//!   fails to decrypt fails the socket in the kernel, so it ends the
//!   connection without one;
//! - the cipher's confidentiality limit, which rustls no longer counts:
//!   the connection fails before the kernel would send more records under
//!   one key than the cipher allows.

use std::io;
use std::os::fd::RawFd;

use rustls::{CipherSuite, ConnectionTrafficSecrets, ProtocolVersion, SupportedCipherSuite};
use zeroize::Zeroize as _;

use crate::sys::{self, TlsDirection};
use crate::tls::ServerSession;

/// The TLS content types the server meets after the hand-off.
const ALERT: u8 = 21;
const HANDSHAKE: u8 = 22;
const APPLICATION_DATA: u8 = 23;
/// Alert levels and descriptions sent or understood.
const WARNING: u8 = 1;
const FATAL: u8 = 2;
const CLOSE_NOTIFY: u8 = 0;
const UNEXPECTED_MESSAGE: u8 = 10;
/// The post-handshake message a client may send: a key update.
const KEY_UPDATE: u8 = 24;
/// The most plaintext the kernel puts in one record.
const RECORD: usize = 16 << 10;
/// Records kept in hand below the cipher's confidentiality limit.
const LIMIT_MARGIN: u64 = 1 << 10;

/// An AEAD the kernel may take keys for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cipher {
    /// AES-128-GCM.
    Aes128Gcm,
    /// AES-256-GCM.
    Aes256Gcm,
    /// ChaCha20-Poly1305.
    Chacha20Poly1305,
}

impl Cipher {
    const ALL: [Cipher; 3] = [
        Cipher::Aes128Gcm,
        Cipher::Aes256Gcm,
        Cipher::Chacha20Poly1305,
    ];

    /// The key's length in bytes.
    fn key_len(self) -> usize {
        match self {
            Cipher::Aes128Gcm => 16,
            Cipher::Aes256Gcm | Cipher::Chacha20Poly1305 => 32,
        }
    }

    /// The name operators read in logs.
    pub fn name(self) -> &'static str {
        match self {
            Cipher::Aes128Gcm => "AES-128-GCM",
            Cipher::Aes256Gcm => "AES-256-GCM",
            Cipher::Chacha20Poly1305 => "ChaCha20-Poly1305",
        }
    }

    /// The AEAD of a TLS 1.2 or 1.3 cipher suite, if the kernel knows it.
    fn of(suite: CipherSuite) -> Option<Cipher> {
        use CipherSuite as S;
        match suite {
            S::TLS13_AES_128_GCM_SHA256
            | S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
            | S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => Some(Cipher::Aes128Gcm),
            S::TLS13_AES_256_GCM_SHA384
            | S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
            | S::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => Some(Cipher::Aes256Gcm),
            S::TLS13_CHACHA20_POLY1305_SHA256
            | S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
            | S::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => Some(Cipher::Chacha20Poly1305),
            _ => None,
        }
    }
}

/// What this kernel's TLS layer accepted when probed at start.
#[derive(Debug, Clone)]
pub struct Offload {
    /// The (kernel protocol version, cipher) pairs it took keys for, both
    /// ways.
    taken: Vec<(u16, Cipher)>,
}

/// The protocol versions handed over, as the kernel numbers them.
const VERSIONS: [(u16, &str); 2] = [
    (libc::TLS_1_3_VERSION, "TLS 1.3"),
    (libc::TLS_1_2_VERSION, "TLS 1.2"),
];

impl Offload {
    /// Probes the kernel on loopback connections of its own: `TCP_ULP
    /// "tls"`, then a (throw-away) send key of each cipher. `Err` says why
    /// kernel TLS cannot be used.
    pub fn probe() -> Result<Offload, String> {
        let (a, _b) = loopback_pair().map_err(|e| format!("no loopback connection: {e}"))?;
        sys::set_tls_ulp(as_fd(&a)).map_err(|e| format!("TCP_ULP \"tls\": {e}"))?;
        let mut taken = Vec::new();
        let mut refused = Vec::new();
        for (version, name) in VERSIONS {
            for cipher in Cipher::ALL {
                match probe_one(version, cipher) {
                    Ok(()) => taken.push((version, cipher)),
                    Err(e) => refused.push(format!("{name} {}: {e}", cipher.name())),
                }
            }
        }
        if taken.is_empty() {
            return Err(format!(
                "the kernel's TLS layer takes no cipher ({})",
                refused.join("; ")
            ));
        }
        Ok(Offload { taken })
    }

    /// The versions and ciphers the kernel takes, for the start log.
    pub fn describe(&self) -> String {
        let mut out = Vec::new();
        for (version, name) in VERSIONS {
            let ciphers: Vec<&str> = self
                .taken
                .iter()
                .filter(|(v, _)| *v == version)
                .map(|(_, c)| c.name())
                .collect();
            if !ciphers.is_empty() {
                out.push(format!("{name}: {}", ciphers.join(", ")));
            }
        }
        out.join("; ")
    }
}

/// Gives a loopback connection of its own a throw-away all-zero key of
/// `cipher` both ways, as `version`: whether the kernel takes it.
fn probe_one(version: u16, cipher: Cipher) -> io::Result<()> {
    let (a, _b) = loopback_pair()?;
    sys::set_tls_ulp(as_fd(&a))?;
    for direction in [TlsDirection::Send, TlsDirection::Receive] {
        let key = Key {
            cipher,
            key: &[0; 32][..cipher.key_len()],
            iv: &[0; 12],
        };
        set_key(as_fd(&a), version, direction, 0, key)?;
    }
    Ok(())
}

fn as_fd(s: &std::net::TcpStream) -> RawFd {
    use std::os::fd::AsRawFd as _;
    s.as_raw_fd()
}

/// A connected pair of loopback TCP sockets.
fn loopback_pair() -> io::Result<(std::net::TcpStream, std::net::TcpStream)> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let a = std::net::TcpStream::connect(listener.local_addr()?)?;
    let (b, _) = listener.accept()?;
    Ok((a, b))
}

/// A session whose keys the kernel holds: what the server still does for it.
#[derive(Debug)]
pub struct KernelSession {
    /// Records the kernel may still send under the current key.
    records_left: u64,
    /// The AEAD in use, for logs.
    cipher: Cipher,
    /// The client asked for a key update, which ended the session: the
    /// connection closes politely (close_notify, then a linger), since the
    /// client may have sent more under its new key.
    refused_key_update: bool,
}

/// What became of a session offered to the kernel.
pub enum HandOff {
    /// The kernel holds the keys; the plaintext rustls had already
    /// decrypted (the start of the first request) comes along.
    Kernel(KernelSession, Vec<u8>),
    /// The session stays in user space, for the reason given (a version
    /// or cipher the kernel lacks, a record half received): nothing was
    /// lost.
    Kept(Box<ServerSession>, &'static str),
    /// The keys left rustls but the kernel refused them: the connection
    /// cannot go on.
    Failed(String),
}

/// Hands a session whose handshake is complete to the kernel, when it can
/// be: every received byte processed by rustls (a record half received
/// cannot be split between the two), every byte rustls wrote (the session
/// tickets) sent, and a cipher the kernel took at start.
pub fn hand_off(session: Box<ServerSession>, fd: RawFd, offload: &Offload) -> HandOff {
    if let Err(why) = session.ready_for_kernel() {
        return HandOff::Kept(session, why);
    }
    let Some(suite) = session.negotiated_cipher_suite() else {
        return HandOff::Kept(session, "no cipher suite was negotiated");
    };
    let Some(cipher) = Cipher::of(suite.suite()) else {
        return HandOff::Kept(session, "the kernel has no such cipher");
    };
    let version = match session.protocol_version() {
        Some(ProtocolVersion::TLSv1_3) => libc::TLS_1_3_VERSION,
        Some(ProtocolVersion::TLSv1_2) => libc::TLS_1_2_VERSION,
        _ => return HandOff::Kept(session, "the kernel has no such protocol version"),
    };
    if !offload.taken.contains(&(version, cipher)) {
        return HandOff::Kept(
            session,
            "the kernel took no key of this version and cipher at start",
        );
    }
    // Until keys are set the kernel's TLS layer passes bytes through, so a
    // refusal here leaves the session as it was.
    if sys::set_tls_ulp(fd).is_err() {
        return HandOff::Kept(session, "the kernel refused TCP_ULP \"tls\"");
    }
    let (secrets, kernel, plaintext) = match session.into_kernel() {
        Ok(parts) => parts,
        Err(e) => return HandOff::Failed(format!("rustls gave no keys: {e}")),
    };
    let (tx_seq, tx) = secrets.tx;
    let (rx_seq, rx) = secrets.rx;
    if let Err(e) = install(fd, version, TlsDirection::Send, tx_seq, tx) {
        return HandOff::Failed(format!("TLS_TX: {e}"));
    }
    if let Err(e) = install(fd, version, TlsDirection::Receive, rx_seq, rx) {
        return HandOff::Failed(format!("TLS_RX: {e}"));
    }
    let limit = confidentiality_limit(kernel.negotiated_cipher_suite());
    let session = KernelSession {
        records_left: limit.saturating_sub(tx_seq).saturating_sub(LIMIT_MARGIN),
        cipher,
        refused_key_update: false,
    };
    HandOff::Kernel(session, plaintext)
}

/// The most records one key may protect, by rustls's reckoning.
fn confidentiality_limit(suite: SupportedCipherSuite) -> u64 {
    match suite {
        SupportedCipherSuite::Tls13(s) => s.common.confidentiality_limit,
        SupportedCipherSuite::Tls12(s) => s.common.confidentiality_limit,
    }
}

/// One direction's key material, borrowed from rustls's secrets.
struct Key<'k> {
    cipher: Cipher,
    key: &'k [u8],
    /// The 12-byte IV (nonce base).
    iv: &'k [u8],
}

/// Gives the kernel one direction's key from rustls's secrets.
fn install(
    fd: RawFd,
    version: u16,
    direction: TlsDirection,
    seq: u64,
    secrets: ConnectionTrafficSecrets,
) -> io::Result<()> {
    let key = match &secrets {
        ConnectionTrafficSecrets::Aes128Gcm { key, iv } => Key {
            cipher: Cipher::Aes128Gcm,
            key: key.as_ref(),
            iv: iv.as_ref(),
        },
        ConnectionTrafficSecrets::Aes256Gcm { key, iv } => Key {
            cipher: Cipher::Aes256Gcm,
            key: key.as_ref(),
            iv: iv.as_ref(),
        },
        ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => Key {
            cipher: Cipher::Chacha20Poly1305,
            key: key.as_ref(),
            iv: iv.as_ref(),
        },
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "a cipher the kernel does not take",
            ));
        }
    };
    set_key(fd, version, direction, seq, key)
}

/// Copies `N` bytes of key material into a kernel structure's array.
fn bytes<const N: usize>(from: &[u8]) -> io::Result<[u8; N]> {
    from.try_into()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "unexpected key or IV size"))
}

/// Gives the kernel one direction's key, IV and next record sequence
/// number. The copies made here are wiped after the call.
fn set_key(
    fd: RawFd,
    version: u16,
    direction: TlsDirection,
    seq: u64,
    key: Key<'_>,
) -> io::Result<()> {
    let header = |cipher_type: u16| libc::tls_crypto_info {
        version,
        cipher_type,
    };
    let rec_seq = seq.to_be_bytes();
    // For AES-GCM the kernel takes the 12-byte IV as a 4-byte salt and the
    // 8 bytes after it; ChaCha20-Poly1305 takes all 12 and no salt.
    let (salt, rest) = key.iv.split_at(4.min(key.iv.len()));
    let gcm12_send = version == libc::TLS_1_2_VERSION && direction == TlsDirection::Send;
    let next_nonce;
    let rest = match key.cipher {
        Cipher::Aes128Gcm | Cipher::Aes256Gcm if gcm12_send => {
            next_nonce = tls12_gcm_next_nonce(rest, seq)?;
            &next_nonce[..]
        }
        _ => rest,
    };
    let (cipher_type, iv, salt): (u16, &[u8], &[u8]) = match key.cipher {
        Cipher::Aes128Gcm => (libc::TLS_CIPHER_AES_GCM_128, rest, salt),
        Cipher::Aes256Gcm => (libc::TLS_CIPHER_AES_GCM_256, rest, salt),
        Cipher::Chacha20Poly1305 => (libc::TLS_CIPHER_CHACHA20_POLY1305, key.iv, &[]),
    };
    let parts = Parts {
        info: header(cipher_type),
        iv,
        key: key.key,
        salt,
        rec_seq,
    };
    match key.cipher {
        Cipher::Aes128Gcm => give_key::<libc::tls12_crypto_info_aes_gcm_128>(fd, direction, parts),
        Cipher::Aes256Gcm => give_key::<libc::tls12_crypto_info_aes_gcm_256>(fd, direction, parts),
        Cipher::Chacha20Poly1305 => {
            give_key::<libc::tls12_crypto_info_chacha20_poly1305>(fd, direction, parts)
        }
    }
}

/// The explicit nonce a TLS 1.2 AES-GCM sender in the kernel starts from.
///
/// TLS 1.3 and ChaCha20-Poly1305 make each record's nonce as the IV XOR
/// the record's sequence number, in rustls and in the kernel alike, so the
/// kernel carries on where rustls stopped. TLS 1.2 AES-GCM does not: the
/// kernel sends the 8 bytes it is given as the first record's explicit
/// nonce and adds one per record, while rustls made record `s`'s as
/// `iv_tail XOR s`. Given `iv_tail` itself, the kernel's first record would
/// reuse the nonce of rustls's first (the Finished message) under the same
/// key, which gives away the key's authentication secret. Every nonce
/// rustls used (`s < seq`) is at most `iv_tail + s`, below `iv_tail + seq`:
/// counting from there repeats none of them (short of 2^64 records).
fn tls12_gcm_next_nonce(iv_tail: &[u8], seq: u64) -> io::Result<[u8; 8]> {
    let tail: [u8; 8] = bytes(iv_tail)?;
    Ok(u64::from_be_bytes(tail).wrapping_add(seq).to_be_bytes())
}

/// The fields of a kernel key structure, before their sizes are checked.
struct Parts<'k> {
    info: libc::tls_crypto_info,
    iv: &'k [u8],
    key: &'k [u8],
    salt: &'k [u8],
    rec_seq: [u8; 8],
}

/// Fills kernel structure `K`, passes it to the kernel and wipes it.
fn give_key<K: KeyStruct>(fd: RawFd, direction: TlsDirection, parts: Parts<'_>) -> io::Result<()> {
    let mut info = K::from_parts(parts)?;
    let res = sys::set_tls_key(fd, direction, &info);
    info.wipe();
    res
}

/// A kernel key structure: built from its parts (each checked for
/// size), wiped after use.
trait KeyStruct: sys::KernelKey + Sized {
    fn from_parts(parts: Parts<'_>) -> io::Result<Self>;
    fn wipe(&mut self);
}

macro_rules! key_struct {
    ($($info:ty),*) => {$(
        impl KeyStruct for $info {
            fn from_parts(p: Parts<'_>) -> io::Result<Self> {
                Ok(Self {
                    info: p.info,
                    iv: bytes(p.iv)?,
                    key: bytes(p.key)?,
                    salt: bytes(p.salt)?,
                    rec_seq: p.rec_seq,
                })
            }
            fn wipe(&mut self) {
                self.key.zeroize();
                self.iv.zeroize();
                self.salt.zeroize();
            }
        }
    )*};
}

key_struct!(
    libc::tls12_crypto_info_aes_gcm_128,
    libc::tls12_crypto_info_aes_gcm_256,
    libc::tls12_crypto_info_chacha20_poly1305
);

/// The error of a session past its cipher's confidentiality limit.
fn limit_reached() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "TLS: the session has sent as many records as its cipher allows under one key",
    )
}

impl KernelSession {
    /// The AEAD the kernel runs for this session.
    pub fn cipher(&self) -> Cipher {
        self.cipher
    }

    /// Counts the records sending `bytes` in one call can make (at most a
    /// record per 16 KiB, the last one short), failing once the cipher's
    /// confidentiality limit would be passed: the client may resume with a
    /// range request on a new connection, under new keys.
    pub fn charge(&mut self, bytes: usize) -> io::Result<()> {
        let records = bytes.div_ceil(RECORD).max(1) as u64;
        if records > self.records_left {
            return Err(limit_reached());
        }
        self.records_left -= records;
        Ok(())
    }

    /// Handles a read the kernel refused. `EIO` means the next record is
    /// not application data: it is read with its type. A close_notify is
    /// the end of the client's data (`Ok(0)`); application data (had it
    /// raced in) is appended to `dst`; anything else ends the connection.
    /// A record that fails to decrypt (`EBADMSG`) ends the connection
    /// (the kernel fails the socket, so no bad_record_mac alert can be sent).
    pub fn after_read_error(
        &mut self,
        fd: RawFd,
        error: io::Error,
        dst: &mut Vec<u8>,
        max: usize,
    ) -> io::Result<usize> {
        match error.raw_os_error() {
            Some(libc::EIO) => {}
            Some(libc::EBADMSG) => {
                // The kernel has failed the socket: no alert can follow.
                let why = "a TLS record failed to decrypt (forged or corrupted); connection closed";
                tracing::info!(cipher = self.cipher.name(), "{why}");
                return Err(io::Error::new(io::ErrorKind::InvalidData, why));
            }
            _ => return Err(error),
        }
        // After EIO the next record is a control record, a few bytes long
        // (a longer one is not one the server expects), read whole
        // whatever `max` is; application data cannot come first.
        let mut record = [0u8; 64];
        let (kind, n) = sys::recv_tls_record(fd, &mut record)?;
        let body = &record[..n];
        match (kind, body) {
            (APPLICATION_DATA, _) if n <= max => {
                dst.extend_from_slice(body);
                Ok(n)
            }
            // TLS 1.3 ignores an alert's level (RFC 8446 6).
            (ALERT, [_, CLOSE_NOTIFY]) => Ok(0),
            (ALERT, [level, description]) => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                format!("TLS: the client sent alert {description} (level {level})"),
            )),
            (HANDSHAKE, [KEY_UPDATE, ..]) => {
                self.refused_key_update = true;
                let why = "the client asked for a key update, which kernel TLS sessions here \
                           do not do; the connection closes (a new one starts with new keys)";
                tracing::info!(cipher = self.cipher.name(), "{why}");
                Err(io::Error::new(io::ErrorKind::ConnectionAborted, why))
            }
            (kind, _) => {
                // Best effort: the connection ends either way.
                let _ = self.alert(fd, FATAL, UNEXPECTED_MESSAGE);
                Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("TLS: an unexpected record of type {kind} after the handshake"),
                ))
            }
        }
    }

    /// Whether the session ended on a key update it refused (the
    /// connection then closes with close_notify and a linger).
    pub fn refused_key_update(&self) -> bool {
        self.refused_key_update
    }

    /// Sends close_notify through the kernel. Never waits: `WouldBlock`
    /// when the socket is full (the caller waits for room, bounded).
    pub fn close_notify(&mut self, fd: RawFd) -> io::Result<()> {
        self.alert(fd, WARNING, CLOSE_NOTIFY)
    }

    /// Sends an alert through the kernel. Never waits.
    fn alert(&mut self, fd: RawFd, level: u8, description: u8) -> io::Result<()> {
        if self.records_left == 0 {
            return Err(limit_reached());
        }
        sys::send_tls_record(fd, ALERT, &[level, description])?;
        self.records_left -= 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_stops_before_its_ciphers_record_limit() {
        let mut session = KernelSession {
            records_left: 5,
            cipher: Cipher::Aes128Gcm,
            refused_key_update: false,
        };
        // 16 KiB + 1 makes two records; 48 KiB three.
        session.charge(RECORD + 1).unwrap();
        session.charge(3 * RECORD).unwrap();
        // Even an empty write may make a record; none is left.
        let err = session.charge(0).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
        assert!(
            err.to_string()
                .contains("as many records as its cipher allows")
        );
    }

    #[test]
    fn a_tls12_gcm_sender_in_the_kernel_never_repeats_a_nonce_rustls_used() {
        for tail in [0u64, 1, 2, 0x0123_4567_89ab_cdef, u64::MAX - 1, u64::MAX] {
            for seq in 0u64..6 {
                // rustls: record s had explicit nonce tail XOR s.
                let used: Vec<u64> = (0..seq).map(|s| tail ^ s).collect();
                let start = tls12_gcm_next_nonce(&tail.to_be_bytes(), seq).unwrap();
                let start = u64::from_be_bytes(start);
                // The kernel: start, start + 1, ... one per record.
                for k in 0..4096u64 {
                    let nonce = start.wrapping_add(k);
                    assert!(!used.contains(&nonce), "tail {tail:#x} seq {seq} k {k}");
                }
            }
        }
        // The nonce given for a server's first kernel record (rustls sent
        // one, its Finished): never the IV's own tail.
        let tail = 0x1111_2222_3333_4444u64;
        let start = tls12_gcm_next_nonce(&tail.to_be_bytes(), 1).unwrap();
        assert_ne!(u64::from_be_bytes(start), tail);
    }

    #[test]
    fn kernel_ciphers_are_found_for_every_aead_suite_of_the_provider() {
        let provider = rustls::crypto::ring::default_provider();
        for suite in provider.cipher_suites {
            assert!(Cipher::of(suite.suite()).is_some(), "{:?}", suite.suite());
        }
        assert_eq!(Cipher::of(CipherSuite::TLS_RSA_WITH_AES_128_CBC_SHA), None);
    }
}
