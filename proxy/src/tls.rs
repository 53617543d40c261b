//! TLS on monoio sockets with rustls's unbuffered API, both ways: clients
//! of glance-stream (server side) and HTTPS backends (client side).
//!
//! Hand-written rather than a buffered adapter, because this is the hot
//! path: rustls's buffered connection encrypts each record into a new
//! allocation and then copies it out; the unbuffered one encrypts straight
//! from the caller's plaintext (for cached images, a read-only map of the
//! cache file) into the one ciphertext buffer the socket write takes. The
//! only pass over the bytes in user space is the encryption itself.

pub use glance_link::tls::{
    PLAINTEXT_REFUSAL, TlsFiles, client_config, looks_like_http, server_config,
};
use monoio::buf::{IoBuf as _, IoBufMut as _};
use monoio::io::{AsyncReadRent as _, AsyncWriteRent as _};
use monoio::net::TcpStream;
use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, InsufficientSizeError, UnbufferedStatus,
};
use std::io;

/// Received ciphertext buffered at first: one full record and its header.
const INCOMING_START: usize = 18 << 10;
/// The most ciphertext buffered while a record or handshake message is
/// incomplete (a handshake message may span several records).
const INCOMING_MAX: usize = 64 << 10;
/// Plaintext encrypted per socket write: sixteen full records.
pub const SEGMENT: usize = 256 << 10;

/// A TLS role: rustls's unbuffered server or client connection.
pub trait Role {
    /// rustls's per-role connection data.
    type Data;
    /// Runs rustls's state machine over received ciphertext.
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data>;
    /// Whether records (an alert) wait to be encoded.
    fn queued(&self) -> bool;
}

impl Role for UnbufferedServerConnection {
    type Data = ServerConnectionData;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, ServerConnectionData> {
        self.process_tls_records(incoming)
    }
    fn queued(&self) -> bool {
        self.wants_write()
    }
}

impl Role for UnbufferedClientConnection {
    type Data = ClientConnectionData;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, ClientConnectionData> {
        self.process_tls_records(incoming)
    }
    fn queued(&self) -> bool {
        self.wants_write()
    }
}

/// A server-side session (a client of glance-stream).
pub type ServerSession = Session<UnbufferedServerConnection>;
/// A client-side session (glance-stream fetching from an HTTPS backend).
pub type ClientSession = Session<UnbufferedClientConnection>;

/// One TLS session's state and buffers; the socket is passed to each call.
pub struct Session<C> {
    conn: C,
    /// Received ciphertext (`incoming[..in_len]`) not yet processed.
    incoming: Vec<u8>,
    in_len: usize,
    /// Ciphertext (`outgoing[..out_len]`) to send; the buffer stays
    /// initialised so encrypting into it never clears it first.
    outgoing: Vec<u8>,
    out_len: usize,
    /// Decrypted bytes (`plain[plain_at..]`) not yet taken by the reader.
    plain: Vec<u8>,
    plain_at: usize,
    /// The peer sent close_notify: no more data will come.
    peer_closed: bool,
    /// A socket read or write was abandoned half-way (its future dropped
    /// by a timeout): the buffers no longer match the stream, and every
    /// later call fails rather than send or read garbage.
    broken: bool,
    /// rustls reported an error: the session is over. Its alert (if any)
    /// may still be sent; rustls is not asked anything more (reading on
    /// could raise a second fatal alert).
    failed: bool,
}

/// The error of a session whose socket I/O was abandoned half-way.
fn broken_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "TLS: the session was interrupted",
    )
}

/// Where the state machine stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    /// It needs more ciphertext from the peer.
    NeedInput,
    /// Application data may be sent.
    Ready,
    /// Both sides closed.
    Closed,
}

/// A TLS failure as an I/O error (the connection cannot go on).
fn tls_error(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}"))
}

impl<C: Role> Session<C> {
    /// A session over a fresh rustls connection.
    pub fn new(conn: C) -> Session<C> {
        Session {
            conn,
            incoming: vec![0; INCOMING_START],
            in_len: 0,
            outgoing: Vec::new(),
            out_len: 0,
            plain: Vec::new(),
            plain_at: 0,
            peer_closed: false,
            broken: false,
            failed: false,
        }
    }

    /// Gives back buffer space a finished answer grew (a body's ciphertext
    /// buffer, a long record's room), so an idle keep-alive connection
    /// holds a few KiB, not a segment.
    pub fn trim(&mut self) {
        if self.out_len == 0 && self.outgoing.len() > INCOMING_START {
            self.outgoing = Vec::new();
        }
        if self.in_len <= INCOMING_START && self.incoming.len() > INCOMING_START {
            self.incoming.truncate(INCOMING_START);
            self.incoming.shrink_to_fit();
        }
        if self.plain_at == self.plain.len() && self.plain.capacity() > INCOMING_START {
            self.plain = Vec::new();
            self.plain_at = 0;
        }
    }

    /// Whether decrypted bytes wait to be read.
    pub fn has_plaintext(&self) -> bool {
        self.plain_at < self.plain.len()
    }

    /// The first received bytes, before any were processed (to tell a
    /// plaintext request from a TLS hello).
    pub fn received(&self) -> &[u8] {
        &self.incoming[..self.in_len]
    }

    /// Runs the state machine over the received ciphertext: decrypted data
    /// goes to `plain`, handshake records to `outgoing`. On an error, the
    /// alert rustls queued (if any) is encoded into `outgoing` too.
    fn process(&mut self) -> Result<Progress, rustls::Error> {
        self.step(Send::Nothing)
    }

    /// [`Session::process`], and once application data may be sent, what
    /// `send` asks for is encrypted into `outgoing`: the one loop over
    /// rustls's states that reading, writing and closing share.
    fn step(&mut self, send: Send<'_>) -> Result<Progress, rustls::Error> {
        if self.failed {
            return Err(rustls::Error::General("the session has failed".into()));
        }
        loop {
            let UnbufferedStatus { mut discard, state } =
                self.conn.process(&mut self.incoming[..self.in_len]);
            let progress = match state {
                Err(e) => {
                    self.discard(discard);
                    self.encode_alert();
                    self.failed = true;
                    return Err(e);
                }
                Ok(ConnectionState::ReadTraffic(mut traffic)) => {
                    if self.plain_at == self.plain.len() {
                        self.plain.clear();
                        self.plain_at = 0;
                    }
                    while let Some(record) = traffic.next_record() {
                        let record = match record {
                            Ok(r) => r,
                            Err(e) => {
                                self.failed = true;
                                return Err(e);
                            }
                        };
                        discard += record.discard;
                        self.plain.extend_from_slice(record.payload);
                    }
                    None
                }
                Ok(ConnectionState::EncodeTlsData(mut data)) => {
                    if let Err(e) = encode(&mut data, &mut self.outgoing, &mut self.out_len) {
                        self.failed = true;
                        return Err(e);
                    }
                    None
                }
                // Records already encoded go out, in order, with the next
                // write of `outgoing`, before anything is awaited.
                Ok(ConnectionState::TransmitTlsData(data)) => {
                    data.done();
                    None
                }
                Ok(ConnectionState::BlockedHandshake) => Some(Progress::NeedInput),
                Ok(ConnectionState::WriteTraffic(mut traffic)) => {
                    let (out, len) = (&mut self.outgoing, &mut self.out_len);
                    let sent = match send {
                        Send::Nothing => Ok(()),
                        Send::Data(data) => grow_into(out, len, |o| traffic.encrypt(data, o)),
                        Send::CloseNotify => grow_into(out, len, |o| traffic.queue_close_notify(o)),
                    };
                    if let Err(e) = sent {
                        self.discard(discard);
                        self.failed = true;
                        return Err(rustls::Error::General(e.to_string()));
                    }
                    Some(Progress::Ready)
                }
                Ok(ConnectionState::PeerClosed) => {
                    self.peer_closed = true;
                    None
                }
                Ok(ConnectionState::Closed) => Some(Progress::Closed),
                // Early data is never enabled, and later states are unknown.
                Ok(_) => {
                    self.discard(discard);
                    self.failed = true;
                    return Err(rustls::Error::General("unexpected TLS state".into()));
                }
            };
            self.discard(discard);
            if let Some(p) = progress {
                return Ok(p);
            }
        }
    }

    /// Drops `n` processed bytes from the front of `incoming`.
    fn discard(&mut self, n: usize) {
        if n > 0 {
            self.incoming.copy_within(n..self.in_len, 0);
            self.in_len -= n;
        }
    }

    /// Encodes what rustls queued before and after an error (its alert,
    /// behind any handshake records of the same flight). Each call pops
    /// one queued record before rustls would read further input, so it is
    /// called only while records are queued: reading on after a fatal
    /// error could raise a second one. rustls always gets the received
    /// bytes (never an empty buffer): its deframer may hold offsets into
    /// them.
    fn encode_alert(&mut self) {
        while self.conn.queued() {
            let UnbufferedStatus { discard, state } =
                self.conn.process(&mut self.incoming[..self.in_len]);
            let encoded = match state {
                Ok(ConnectionState::EncodeTlsData(mut data)) => {
                    encode(&mut data, &mut self.outgoing, &mut self.out_len).is_ok()
                }
                _ => false,
            };
            self.discard(discard);
            if !encoded {
                return;
            }
        }
    }

    /// Sends the ciphertext in `outgoing`.
    pub async fn flush(&mut self, stream: &mut TcpStream) -> io::Result<()> {
        if self.broken {
            return Err(broken_error());
        }
        if self.out_len == 0 {
            return Ok(());
        }
        let len = std::mem::take(&mut self.out_len);
        let out = std::mem::take(&mut self.outgoing);
        self.broken = true;
        let (res, out) = write_all(stream, out, len).await;
        self.broken = false;
        self.outgoing = out;
        res
    }

    /// Reads more ciphertext. `Ok(false)` when the peer closed the socket;
    /// `WouldBlock` when nothing is there yet (the caller waits, bounded).
    async fn read_more(&mut self, stream: &mut TcpStream) -> io::Result<bool> {
        if self.broken {
            return Err(broken_error());
        }
        self.make_room()?;
        loop {
            let buf = std::mem::take(&mut self.incoming);
            let cap = buf.len();
            self.broken = true;
            let (res, slice) = stream.read(buf.slice_mut(self.in_len..cap)).await;
            self.broken = false;
            self.incoming = slice.into_inner();
            match res {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.in_len += n;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Makes room in `incoming` for more ciphertext: up to `INCOMING_MAX`
    /// may wait for a record (or handshake message) to complete, no more.
    fn make_room(&mut self) -> io::Result<()> {
        if self.in_len == self.incoming.len() {
            if self.incoming.len() >= INCOMING_MAX {
                return Err(tls_error("a record or handshake message is too large"));
            }
            self.incoming.resize(INCOMING_MAX, 0);
        }
        Ok(())
    }

    /// Takes `data` as socket reads would bring it and runs the state
    /// machine over it (the fuzz target's way in); `Err` ends the session.
    #[doc(hidden)]
    pub fn absorb(&mut self, data: &[u8]) -> io::Result<()> {
        if self.broken {
            return Err(broken_error());
        }
        let mut rest = data;
        while !rest.is_empty() {
            self.make_room()?;
            let n = rest.len().min(self.incoming.len() - self.in_len);
            self.incoming[self.in_len..self.in_len + n].copy_from_slice(&rest[..n]);
            self.in_len += n;
            rest = &rest[n..];
            self.process().map_err(tls_error)?;
        }
        Ok(())
    }

    /// Bytes held: received ciphertext, ciphertext to send, and plaintext
    /// not yet read.
    #[doc(hidden)]
    pub fn held(&self) -> (usize, usize, usize) {
        (self.in_len, self.out_len, self.plain.len() - self.plain_at)
    }

    /// Reads more ciphertext, waiting for it (the caller bounds the wait).
    async fn read_more_waiting(&mut self, stream: &mut TcpStream) -> io::Result<bool> {
        loop {
            match self.read_more(stream).await {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => stream.readable(false).await?,
                r => return r,
            }
        }
    }

    /// Reads the first bytes of the connection without processing them.
    pub async fn read_first(&mut self, stream: &mut TcpStream) -> io::Result<bool> {
        self.read_more_waiting(stream).await
    }

    /// Runs the handshake to its end (the caller bounds it in time).
    pub async fn handshake(&mut self, stream: &mut TcpStream) -> io::Result<()> {
        loop {
            let progress = self.process();
            self.flush(stream).await?;
            match progress.map_err(tls_error)? {
                Progress::Ready => return Ok(()),
                Progress::Closed => return Err(io::ErrorKind::UnexpectedEof.into()),
                Progress::NeedInput if self.peer_closed => {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                Progress::NeedInput => {
                    if !self.read_more_waiting(stream).await? {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                }
            }
        }
    }

    /// Appends decrypted bytes to `dst`, at most `max`, reading the socket
    /// once when none are buffered. `Ok(0)` at the end of the peer's data;
    /// `WouldBlock` when no whole record has arrived yet: the caller waits
    /// for readability within its own deadline (a peer trickling a record
    /// byte by byte never holds a read here).
    pub async fn read(
        &mut self,
        stream: &mut TcpStream,
        dst: &mut Vec<u8>,
        max: usize,
    ) -> io::Result<usize> {
        if !self.has_plaintext() {
            if self.peer_closed || !self.read_more(stream).await? {
                return Ok(0);
            }
            // What this queued (an answer to a key update, an alert) goes
            // out with the next write or the close, both bounded in time:
            // flushing here could wait without limit on a client that
            // stopped reading.
            match self.process().map_err(tls_error)? {
                Progress::Closed => return Ok(0),
                _ if self.has_plaintext() => {}
                _ if self.peer_closed => return Ok(0),
                _ => return Err(io::ErrorKind::WouldBlock.into()),
            }
        }
        let n = (self.plain.len() - self.plain_at).min(max);
        dst.extend_from_slice(&self.plain[self.plain_at..self.plain_at + n]);
        self.plain_at += n;
        Ok(n)
    }

    /// Like [`Session::read`], waiting until a whole record has arrived
    /// (the caller bounds the wait).
    pub async fn read_waiting(
        &mut self,
        stream: &mut TcpStream,
        dst: &mut Vec<u8>,
        max: usize,
    ) -> io::Result<usize> {
        loop {
            match self.read(stream, dst, max).await {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => stream.readable(false).await?,
                r => return r,
            }
        }
    }

    /// Encrypts `data` and sends it, a segment per socket write.
    pub async fn write_all(&mut self, stream: &mut TcpStream, data: &[u8]) -> io::Result<()> {
        for segment in data.chunks(SEGMENT) {
            self.encrypt(segment)?;
            self.flush(stream).await?;
        }
        Ok(())
    }

    /// Encrypts `data` into `outgoing` (after anything already there).
    pub fn encrypt(&mut self, data: &[u8]) -> io::Result<()> {
        if self.broken {
            return Err(broken_error());
        }
        match self.step(Send::Data(data)).map_err(tls_error)? {
            Progress::Ready => Ok(()),
            Progress::Closed => Err(io::ErrorKind::BrokenPipe.into()),
            Progress::NeedInput => Err(tls_error("cannot send: the handshake is not complete")),
        }
    }

    /// Sends close_notify (best effort: the socket closes after it anyway).
    /// A failed session sends only what is queued (its alert).
    pub async fn close(&mut self, stream: &mut TcpStream) {
        if self.broken {
            return;
        }
        if !self.failed {
            let _ = self.step(Send::CloseNotify);
        }
        let _ = self.flush(stream).await;
    }
}

/// Reads [`ServerSession::finish_record`] makes at most: a record is at
/// most 16 KiB and 256 bytes, which a few reads complete.
const FINISH_READS: usize = 8;

impl ServerSession {
    /// Reads until the received bytes end on a record boundary (the client
    /// may have sent its first request right behind the handshake, and the
    /// read that finished the handshake may have taken part of it), each
    /// complete record decrypted into the plaintext a reader takes. The
    /// caller bounds the wait.
    pub async fn finish_record(&mut self, stream: &mut TcpStream) -> io::Result<()> {
        for _ in 0..FINISH_READS {
            if self.in_len == 0 || self.peer_closed {
                return Ok(());
            }
            if !self.read_more_waiting(stream).await? {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.process().map_err(tls_error)?;
        }
        Err(tls_error("the client keeps sending records half at a time"))
    }

    /// Whether the session may leave rustls for the kernel now: every
    /// received byte processed (a record half received cannot be split
    /// between the two) and every byte rustls wrote sent. `Err` says why not.
    pub fn ready_for_kernel(&self) -> Result<(), &'static str> {
        if self.broken || self.failed {
            return Err("the session has failed");
        }
        if self.peer_closed {
            return Err("the client has closed the session");
        }
        if self.in_len > 0 {
            return Err("a record was half received");
        }
        if self.out_len > 0 {
            return Err("records wait to be sent");
        }
        Ok(())
    }

    /// The cipher suite agreed on, once the handshake is done.
    pub fn negotiated_cipher_suite(&self) -> Option<rustls::SupportedCipherSuite> {
        self.conn.negotiated_cipher_suite()
    }

    /// The protocol version agreed on, once the handshake is done.
    pub fn protocol_version(&self) -> Option<rustls::ProtocolVersion> {
        self.conn.protocol_version()
    }

    /// Ends the session in user space: its traffic secrets with their
    /// next sequence numbers (for the kernel), what rustls keeps for the
    /// connection, and the plaintext already decrypted but not yet read.
    pub fn into_kernel(
        self,
    ) -> Result<
        (
            rustls::ExtractedSecrets,
            rustls::kernel::KernelConnection<ServerConnectionData>,
            Vec<u8>,
        ),
        rustls::Error,
    > {
        let plain = self.plain[self.plain_at..].to_vec();
        let (secrets, kernel) = self.conn.dangerous_into_kernel_connection()?;
        Ok((secrets, kernel, plain))
    }
}

/// What [`Session::step`] encrypts once application data may be sent.
#[derive(Clone, Copy)]
enum Send<'d> {
    /// Nothing: only run the state machine.
    Nothing,
    /// These bytes.
    Data(&'d [u8]),
    /// A close_notify alert.
    CloseNotify,
}

/// Runs `write` (an encryption into `out[*len..]`), growing `out` to the
/// size rustls asks for when it is short.
fn grow_into(
    out: &mut Vec<u8>,
    len: &mut usize,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, EncryptError>,
) -> Result<(), EncryptError> {
    loop {
        match write(&mut out[*len..]) {
            Ok(n) => {
                *len += n;
                return Ok(());
            }
            Err(EncryptError::InsufficientSize(InsufficientSizeError { required_size })) => {
                out.resize(*len + required_size, 0);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Encodes one handshake record rustls queued into `out[len..]`, growing
/// the buffer when it is short.
fn encode<Data>(
    data: &mut rustls::unbuffered::EncodeTlsData<'_, Data>,
    out: &mut Vec<u8>,
    len: &mut usize,
) -> Result<(), rustls::Error> {
    loop {
        match data.encode(&mut out[*len..]) {
            Ok(n) => {
                *len += n;
                return Ok(());
            }
            Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => {
                let want = *len + required_size;
                out.resize(want.max(4 << 10), 0);
            }
            Err(e) => return Err(rustls::Error::General(e.to_string())),
        }
    }
}

/// Writes `buf[..len]` whole to a (non-blocking) socket, waiting for room
/// when it is full.
pub async fn write_all(
    stream: &mut TcpStream,
    buf: Vec<u8>,
    len: usize,
) -> (io::Result<()>, Vec<u8>) {
    write_all_counted(stream, buf, len, |_| Ok(())).await
}

/// [`write_all`], telling `wrote` what each socket write took (kernel TLS
/// counts the records each one makes); an error from it ends the write.
pub async fn write_all_counted(
    stream: &mut TcpStream,
    buf: Vec<u8>,
    len: usize,
    mut wrote: impl FnMut(usize) -> io::Result<()>,
) -> (io::Result<()>, Vec<u8>) {
    let mut buf = buf;
    let mut at = 0;
    while at < len {
        let (res, slice) = stream.write(buf.slice(at..len)).await;
        buf = slice.into_inner();
        match res {
            Ok(0) => return (Err(io::ErrorKind::WriteZero.into()), buf),
            Ok(n) => {
                at += n;
                if let Err(e) = wrote(n) {
                    return (Err(e), buf);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if let Err(e) = stream.writable(false).await {
                    return (Err(e), buf);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (Err(e), buf),
        }
    }
    (Ok(()), buf)
}

#[cfg(test)]
mod session_tests {
    use std::sync::Arc;

    use super::*;

    fn server() -> Arc<rustls::ServerConfig> {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let files = TlsFiles {
            cert: dir.path().join("c.pem"),
            key: dir.path().join("k.pem"),
        };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        glance_link::write_private_file(&files.key, &key.serialize_pem(), "tmp").unwrap();
        server_config(&files).unwrap()
    }

    #[test]
    fn a_hello_without_a_common_protocol_gets_an_alert() {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut client_config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        client_config.alpn_protocols = vec![b"h2".to_vec()];
        let mut client =
            rustls::ClientConnection::new(Arc::new(client_config), "localhost".try_into().unwrap())
                .unwrap();
        let mut hello = Vec::new();
        client.write_tls(&mut hello).unwrap();
        let conn = UnbufferedServerConnection::new(server()).unwrap();
        let mut session = Session::new(conn);
        session.incoming[..hello.len()].copy_from_slice(&hello);
        session.in_len = hello.len();
        let err = session.process().unwrap_err();
        assert!(err.to_string().contains("protocol"), "{err}");
        // The server hello, then the alert, encrypted with the handshake
        // keys: the client decrypts it and learns why.
        let mut flight = &session.outgoing[..session.out_len];
        client.read_tls(&mut flight).unwrap();
        let err = client.process_new_packets().unwrap_err();
        assert!(err.to_string().contains("NoApplicationProtocol"), "{err}");
    }
}
