//! `GET|HEAD /v1/images/{id}?{signed link}`: verify the link, open the
//! object, answer exactly as Glance's download does, and send the bytes with
//! no copy through user space.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd as _;

use glance_link::{LinkRequest, VerifiedLink};

use crate::conn::{FORBIDDEN_BODY, Io};
use crate::http::{RequestHead, ResponseHead};
use crate::metrics::SendPath;
use crate::range::{self, RangeRequest};
use crate::store::OpenError;
use crate::{clock, sys};

/// Bytes handed to one `sendfile` call at most.
const SENDFILE_CHUNK: usize = 1 << 20;
/// How far ahead of the send position the page cache is asked to read.
const READAHEAD: u64 = 8 << 20;
/// Bytes a connection may send before letting the thread's other tasks run.
pub(crate) const FAIR_SHARE: u64 = 4 << 20;
/// Buffer of the copy fallback.
const COPY_BUF: usize = 256 << 10;

/// Answers one image request. Returns whether the connection may stay open.
pub async fn serve(io: &mut Io, head: &RequestHead<'_>, keep_alive: bool) -> io::Result<bool> {
    let request = LinkRequest {
        method: head.method,
        path: head.path,
        query: head.query,
        client: io.peer.ip(),
    };
    let verified = io.shared.keyring.load().verify(&request, clock::unix_now());
    let link = match verified {
        Ok(link) => link,
        Err(reason) => {
            io.metrics().rejected(reason);
            io.simple(403, FORBIDDEN_BODY, keep_alive).await?;
            return Ok(keep_alive);
        }
    };
    let head_only = head.method == "HEAD";
    let p = link.params();
    if p.size == 0 {
        // Glance answers an image without data with a bare 204.
        ResponseHead::new(&mut io.out, 204).finish(keep_alive);
        io.metrics().response(204);
        io.write_out().await?;
        return Ok(keep_alive);
    }
    let (start, end, status) = match head.range.map(|r| range::parse(r, p.size)) {
        None | Some(RangeRequest::Full) => (0, p.size - 1, 200),
        Some(RangeRequest::Partial { start, end }) => (start, end, 206),
        Some(RangeRequest::Unsatisfiable) => {
            ResponseHead::new(&mut io.out, 416)
                .header("Content-Range", format_args!("bytes */{}", p.size))
                .header("Content-Type", "text/plain; charset=utf-8")
                .header("Content-Length", 0)
                .finish(keep_alive);
            io.metrics().response(416);
            io.write_out().await?;
            return Ok(keep_alive);
        }
        Some(RangeRequest::Multiple) => {
            let msg = "multiple ranges are not supported; make several single-range requests\n";
            io.simple(400, msg, keep_alive).await?;
            return Ok(keep_alive);
        }
    };
    let answer = Answer {
        status,
        start,
        end,
        keep_alive,
        head_only,
    };
    if io.shared.stores.get(&p.store).is_some_and(|s| s.cached()) {
        return crate::fill::serve(io, &link, &answer).await;
    }
    let Some(file) = open(io, &link, keep_alive).await? else {
        return Ok(keep_alive);
    };
    write_head(io, &link, &answer).await?;
    if !head_only {
        send_body(io, &file, start, end - start + 1).await?;
    }
    Ok(keep_alive)
}

/// What a request gets: status, byte range, connection handling.
pub struct Answer {
    /// 200 or 206.
    pub status: u16,
    /// First byte.
    pub start: u64,
    /// Last byte, inclusive.
    pub end: u64,
    /// Whether the connection stays open.
    pub keep_alive: bool,
    /// HEAD: no body.
    pub head_only: bool,
}

/// Writes the response head of a download, as Glance's.
pub async fn write_head(io: &mut Io, link: &VerifiedLink, a: &Answer) -> io::Result<()> {
    let p = link.params();
    let mut response = ResponseHead::new(&mut io.out, a.status)
        .header("Content-Type", "application/octet-stream")
        .header("Content-Length", a.end - a.start + 1);
    if a.status == 206 {
        response = response.header(
            "Content-Range",
            format_args!("bytes {}-{}/{}", a.start, a.end, p.size),
        );
    }
    response
        .header("Content-MD5", Hex(&p.md5))
        .finish(a.keep_alive);
    io.metrics().response(a.status);
    io.write_out().await
}

/// Opens the link's object, answering the client when that fails.
async fn open(io: &mut Io, link: &VerifiedLink, keep_alive: bool) -> io::Result<Option<File>> {
    let p = link.params();
    let Some(store) = io.shared.stores.get(&p.store) else {
        tracing::warn!(store = %p.store, image = %p.image_id, "link names a store this node does not have");
        io.simple(404, "image not available on this node\n", keep_alive)
            .await?;
        return Ok(None);
    };
    match store.open(&p.image_id, p.size) {
        Ok(file) => Ok(Some(file)),
        Err(OpenError::NotFound) => {
            io.simple(404, "image data not found\n", keep_alive).await?;
            Ok(None)
        }
        Err(e @ OpenError::SizeMismatch { .. }) => {
            tracing::error!(store = %p.store, image = %p.image_id, error = %e, "backend object does not match the link");
            io.simple(
                502,
                "the stored image does not match its record\n",
                keep_alive,
            )
            .await?;
            Ok(None)
        }
        Err(e) => {
            tracing::error!(store = %p.store, image = %p.image_id, error = %e, "cannot open backend object");
            io.simple(500, "cannot read the image\n", keep_alive)
                .await?;
            Ok(None)
        }
    }
}

/// Sends `len` bytes of `file` from `start`: `sendfile` from the page cache to
/// the socket, waiting for the socket when it is full; a copy through a buffer
/// where the kernel refuses `sendfile` for this file.
///
/// A page-cache miss would make `sendfile` wait for the disk on this thread,
/// stalling its other connections; so the range ahead of the send position is
/// handed to the kernel's readahead (`POSIX_FADV_WILLNEED`, which starts the
/// reads and returns) well before `sendfile` reaches it.
pub async fn send_body(io: &mut Io, file: &File, start: u64, len: u64) -> io::Result<()> {
    if io.tls.is_some() {
        // TLS encrypts in user space: the bytes must pass through it.
        return copy_body(io, file, start, len).await;
    }
    let socket = io.stream.as_raw_fd();
    let fd = file.as_raw_fd();
    let end = start + len;
    let mut readahead = Readahead::new(file, start, len);
    let mut offset = start;
    let mut since_yield = 0u64;
    let timeout = io.shared.config.http.send_timeout;
    while offset < end {
        readahead.ahead_of(offset);
        let chunk = (end - offset).min(SENDFILE_CHUNK as u64) as usize;
        match sys::sendfile(socket, fd, &mut offset, chunk) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                // The records this made, against the cipher's limit (the
                // margin kept below it covers one call's worth).
                if let Some(kernel) = &mut io.kernel {
                    kernel.charge(n)?;
                }
                io.metrics().sent(SendPath::ZeroCopy, n as u64);
                since_yield += n as u64;
                if since_yield >= FAIR_SHARE {
                    since_yield = 0;
                    YieldNow(false).await;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                since_yield = 0;
                match monoio::time::timeout(timeout, io.stream.writable(false)).await {
                    Ok(res) => res?,
                    Err(_) => return Err(io::ErrorKind::TimedOut.into()),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if sendfile_unsupported(&e) => {
                return copy_body(io, file, offset, end - offset).await;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Keeps the kernel's readahead ahead of a sender walking a file range
/// front to back: a page-cache miss under `sendfile` or a mapped read would
/// make the thread wait for the disk, stalling its other connections.
pub(crate) struct Readahead {
    fd: std::os::fd::RawFd,
    advised: u64,
    end: u64,
}

impl Readahead {
    /// Tells the kernel bytes `start..start + len` of `file` will be read
    /// in order.
    pub(crate) fn new(file: &File, start: u64, len: u64) -> Readahead {
        let fd = file.as_raw_fd();
        let _ = sys::fadvise(fd, start, len, sys::Advice::Sequential);
        Readahead {
            fd,
            advised: start,
            end: start + len,
        }
    }

    /// Starts reading (without waiting) the next stretch once the sender at
    /// `offset` is within half a stretch of what was asked for so far.
    pub(crate) fn ahead_of(&mut self, offset: u64) {
        if self.advised < self.end && self.advised < offset + READAHEAD / 2 {
            // Never past the body: advising pages no one asked for costs a
            // page-cache walk per request, which small ranges pay in full.
            let n = READAHEAD.min(self.end - self.advised);
            let _ = sys::fadvise(self.fd, self.advised, n, sys::Advice::WillNeed);
            self.advised += n;
        }
    }
}

fn sendfile_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP)
    )
}

/// The fallback, and TLS from a store's own file: read into a buffer
/// (io_uring reads don't block the thread), then write. Counted as the copy
/// path in the metrics.
async fn copy_body(io: &mut Io, file: &File, start: u64, len: u64) -> io::Result<()> {
    let file = monoio::fs::File::from_std(file.try_clone()?)?;
    let mut buf = Vec::with_capacity(COPY_BUF);
    let mut offset = start;
    let end = start + len;
    while offset < end {
        buf.clear();
        let want = (end - offset).min(COPY_BUF as u64) as usize;
        let (res, b) = file.read_at(buf, offset).await;
        buf = b;
        let n = res?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.truncate(n.min(want));
        let sent = buf.len();
        let (res, b) = io.write_all(buf).await;
        buf = b;
        res?;
        offset += sent as u64;
        io.metrics().sent(SendPath::Copy, sent as u64);
    }
    Ok(())
}

/// Lowercase hex of bytes, formatted without allocating.
struct Hex<'a>(&'a [u8]);

impl std::fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Returns `Pending` once (after asking to be woken), letting the thread's
/// other tasks run before this one continues.
pub(crate) struct YieldNow(pub(crate) bool);

impl std::future::Future for YieldNow {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}
