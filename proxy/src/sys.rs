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

/// Tries kernel TLS on a loopback connection of its own: `setsockopt(
/// TCP_ULP, "tls")` on a connected TCP socket, which loads the kernel's TLS
/// layer where the kernel has one. `Ok` when it is there.
pub fn probe_kernel_tls() -> io::Result<()> {
    use std::os::fd::AsRawFd as _;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let client = std::net::TcpStream::connect(listener.local_addr()?)?;
    let _server = listener.accept()?;
    let name = b"tls";
    // SAFETY: setsockopt reads `name.len()` bytes from `name`, a live local
    // array; the descriptor belongs to `client`, alive for the call.
    let ret = unsafe {
        libc::setsockopt(
            client.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_ULP,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        )
    };
    check(ret.into()).map(|_| ())
}
