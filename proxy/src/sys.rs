//! Raw system calls, fenced off: every `unsafe` block of the crate lives here,
//! each with the reason it holds.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::RawFd;

/// Turns the errno of a failed call into an `io::Error`.
fn check(ret: libc::c_long) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// Puts a descriptor in non-blocking mode.
pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl with F_GETFL/F_SETFL reads and sets flags of a descriptor
    // the caller owns; it touches no memory of ours.
    let flags = check(unsafe { libc::fcntl(fd, libc::F_GETFL) }.into())?;
    // SAFETY: as above.
    check(
        unsafe { libc::fcntl(fd, libc::F_SETFL, flags as libc::c_int | libc::O_NONBLOCK) }.into(),
    )?;
    Ok(())
}

/// `sendfile(2)`: moves up to `count` bytes from `file` at `*offset` to the
/// socket without copying them through user space, advancing `*offset`.
/// A non-blocking socket that is full gives `WouldBlock`.
pub fn sendfile(socket: RawFd, file: RawFd, offset: &mut u64, count: usize) -> io::Result<usize> {
    let mut off =
        libc::off_t::try_from(*offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `off` is a live local the kernel writes the new offset into; the
    // descriptors are owned by the caller for the duration of the call.
    let ret = unsafe { libc::sendfile(socket, file, &mut off, count) };
    let n = check(ret as libc::c_long)?;
    *offset = u64::try_from(off).unwrap_or(*offset);
    Ok(n)
}

/// Advice to the page cache about a file range (`posix_fadvise(2)`).
#[derive(Debug, Clone, Copy)]
pub enum Advice {
    /// The file will be read front to back: read ahead aggressively.
    Sequential,
    /// This range will be read soon: start reading it in now, without waiting.
    WillNeed,
}

/// Gives the kernel advice about `len` bytes of `file` from `offset`.
/// Advisory only: failures are returned but callers may ignore them.
pub fn fadvise(file: RawFd, offset: u64, len: u64, advice: Advice) -> io::Result<()> {
    let advice = match advice {
        Advice::Sequential => libc::POSIX_FADV_SEQUENTIAL,
        Advice::WillNeed => libc::POSIX_FADV_WILLNEED,
    };
    let off = libc::off_t::try_from(offset).unwrap_or(libc::off_t::MAX);
    let len = libc::off_t::try_from(len).unwrap_or(libc::off_t::MAX);
    // SAFETY: posix_fadvise only takes integers and touches no memory of ours.
    let ret = unsafe { libc::posix_fadvise(file, off, len, advice) };
    if ret != 0 {
        return Err(io::Error::from_raw_os_error(ret));
    }
    Ok(())
}

/// Raises the soft limit on open descriptors to the hard limit (each client
/// connection holds one, as do cache files and backend connections) and
/// returns the limit now in force.
pub fn raise_open_files_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into `limit`, a live local of the right type.
    check(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) }.into())?;
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads `raised`, a live local of the right type.
        check(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) }.into())?;
        limit = raised;
    }
    Ok(limit.rlim_cur)
}

/// `setsockopt(TCP_ULP, "tls")` on a connected TCP socket: puts the
/// kernel's TLS layer on it (loading it where the kernel has it as a
/// module). Bytes pass through unchanged until keys are set.
pub fn set_tls_ulp(fd: RawFd) -> io::Result<()> {
    let name = b"tls";
    // SAFETY: setsockopt reads `name.len()` bytes from `name`, a live local
    // array; the descriptor belongs to the caller for the duration of the call.
    let ret = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_ULP,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        )
    };
    check(ret.into()).map(|_| ())
}

/// Which traffic a kernel TLS key protects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsDirection {
    /// What the socket sends (`TLS_TX`).
    Send,
    /// What it receives (`TLS_RX`).
    Receive,
}

/// The kernel's `tls12_crypto_info_*` key structures, the only types
/// [`set_tls_key`] passes to the kernel: each is `repr(C)`, made of a
/// header of two `u16` and byte arrays, so it has no padding and every
/// byte of it is initialised.
pub trait KernelKey: sealed::Sealed {}

mod sealed {
    /// Keeps [`super::KernelKey`] to the types listed here.
    pub trait Sealed {}
    impl Sealed for libc::tls12_crypto_info_aes_gcm_128 {}
    impl Sealed for libc::tls12_crypto_info_aes_gcm_256 {}
    impl Sealed for libc::tls12_crypto_info_chacha20_poly1305 {}
}

impl KernelKey for libc::tls12_crypto_info_aes_gcm_128 {}
impl KernelKey for libc::tls12_crypto_info_aes_gcm_256 {}
impl KernelKey for libc::tls12_crypto_info_chacha20_poly1305 {}

/// Gives the kernel the key, IV and record sequence of one direction of a
/// TLS session (`setsockopt(SOL_TLS, TLS_TX | TLS_RX)`), after
/// [`set_tls_ulp`]. From then on the kernel encrypts what the socket sends
/// or decrypts what it receives.
pub fn set_tls_key<K: KernelKey>(fd: RawFd, direction: TlsDirection, key: &K) -> io::Result<()> {
    let name = match direction {
        TlsDirection::Send => libc::TLS_TX,
        TlsDirection::Receive => libc::TLS_RX,
    };
    // SAFETY: setsockopt reads `size_of::<K>()` bytes from `key`, a live
    // reference; `KernelKey` admits only the kernel's own padding-free
    // structures, so every byte read is initialised and laid out as the
    // kernel expects.
    let ret = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_TLS,
            name,
            std::ptr::from_ref(key).cast(),
            std::mem::size_of::<K>() as libc::socklen_t,
        )
    };
    check(ret.into()).map(|_| ())
}

/// Control-message room for one byte of data, aligned as `cmsghdr` wants.
#[repr(C, align(8))]
struct ControlRoom([u8; 32]);

/// Reads one record (or the start of one) from a socket whose receive side
/// the kernel decrypts, with its TLS content type (`recvmsg` with room for
/// the `TLS_GET_RECORD_TYPE` control message the kernel adds to records
/// that are not application data). Returns `(content type, bytes)`;
/// `WouldBlock` when nothing is there. Never waits.
pub fn recv_tls_record(fd: RawFd, buf: &mut [u8]) -> io::Result<(u8, usize)> {
    let mut control = ControlRoom([0; 32]);
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is a valid empty one (null pointers,
    // zero lengths); the fields set below point at live locals.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr().cast();
    msg.msg_controllen = control.0.len() as _;
    // SAFETY: recvmsg writes at most `iov_len` bytes into `buf` and at most
    // `msg_controllen` bytes into `control`, both live for the call.
    let n = check(unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT) } as libc::c_long)?;
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "TLS: the record type did not fit its control message",
        ));
    }
    // A record whose type the kernel did not report is application data.
    let mut kind = 23;
    // SAFETY: CMSG_FIRSTHDR and CMSG_NXTHDR walk the control buffer the
    // kernel filled, within `msg_controllen`; CMSG_DATA of a header whose
    // length covers one byte points at that byte, inside `control`.
    unsafe {
        let mut header = libc::CMSG_FIRSTHDR(&msg);
        while !header.is_null() {
            let h = &*header;
            if h.cmsg_level == libc::SOL_TLS
                && h.cmsg_type == libc::TLS_GET_RECORD_TYPE
                && h.cmsg_len as usize >= libc::CMSG_LEN(1) as usize
            {
                kind = *libc::CMSG_DATA(header);
            }
            header = libc::CMSG_NXTHDR(&msg, header);
        }
    }
    Ok((kind, n))
}

/// Sends `data` as one TLS record of content type `kind` (an alert, say)
/// through a socket whose send side the kernel encrypts (`sendmsg` with a
/// `TLS_SET_RECORD_TYPE` control message). Never waits: `WouldBlock` when
/// the socket is full.
pub fn send_tls_record(fd: RawFd, kind: u8, data: &[u8]) -> io::Result<usize> {
    let mut control = ControlRoom([0; 32]);
    let mut iov = libc::iovec {
        iov_base: data.as_ptr().cast_mut().cast(),
        iov_len: data.len(),
    };
    // SAFETY: an all-zero msghdr is a valid empty one; the fields set below
    // point at live locals.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE is arithmetic on a constant.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(1) } as _;
    // SAFETY: the control buffer (32 bytes, aligned for cmsghdr) holds one
    // header with one byte of data (CMSG_SPACE(1) is 24 bytes on 64-bit
    // Linux); CMSG_FIRSTHDR points at its start and CMSG_DATA inside it.
    // sendmsg only reads `data` (the kernel never writes through iov_base
    // on a send) and the control buffer, both live for the call.
    let n = unsafe {
        let header = libc::CMSG_FIRSTHDR(&msg);
        if header.is_null() {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        (*header).cmsg_level = libc::SOL_TLS;
        (*header).cmsg_type = libc::TLS_SET_RECORD_TYPE;
        (*header).cmsg_len = libc::CMSG_LEN(1) as _;
        *libc::CMSG_DATA(header) = kind;
        libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT)
    };
    check(n as libc::c_long)
}
