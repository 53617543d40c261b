//! A slowloris load: idle connections held open against the server under
//! test while the real clients download. Each sends the start of a request
//! head and nothing more, so the server must keep it (and whatever it
//! allocates for it) until its header timeout. One thread sweeps them all
//! every [`SWEEP`] with non-blocking reads; whichever the server closed (or
//! answered, with a 408 say, and then closed) is counted as dropped and
//! opened again at once, as a real slowloris keeps its count up.

use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What each idle connection sends: a request head cut in the middle of a
/// header line.
pub const PARTIAL_HEAD: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\nX-a: ";
/// How often the holder looks for connections the server closed.
pub const SWEEP: Duration = Duration::from_millis(150);
/// Longest wait for one connect (a server whose accept queue is full lets
/// the SYN go unanswered).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The label of a point with `idle` idle connections, among the counts
/// `idles` measured: none when only `0` is (the reports of a run without
/// `--idle` stay as they were).
pub fn kind(idle: usize, idles: &[usize]) -> Option<String> {
    idles.iter().any(|&n| n > 0).then(|| format!("{idle} idle"))
}

/// `n` idle connections to one server, kept at `n` by a sweeping thread
/// until [`Holder::close`] (or drop).
pub struct Holder {
    /// Dropped to stop the sweeper.
    stop: Option<mpsc::Sender<()>>,
    /// The sweeper; it returns how many connections the server dropped.
    sweeper: Option<JoinHandle<u64>>,
}

impl Holder {
    /// Opens `n` idle connections to `addr`, each having sent
    /// [`PARTIAL_HEAD`], and starts sweeping them. Panics if they cannot all
    /// be opened within `within`.
    pub fn open(addr: SocketAddr, n: usize, within: Duration) -> Holder {
        let deadline = Instant::now() + within;
        let mut conns = Vec::with_capacity(n);
        let mut last_error = None;
        while conns.len() < n {
            assert!(
                Instant::now() < deadline,
                "slowloris: opened only {} of {n} idle connections to {addr} within {within:?} \
                 (last error: {last_error:?}); is the server's connection limit or this \
                 process's open-files limit below that?",
                conns.len()
            );
            match idle_conn(addr, deadline) {
                Ok(c) => conns.push(Some(c)),
                Err(e) => {
                    last_error = Some(e);
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
        let (stop, stopped) = mpsc::channel();
        let sweeper = std::thread::Builder::new()
            .name("slowloris".into())
            .spawn(move || hold(addr, conns, &stopped))
            .unwrap();
        Holder {
            stop: Some(stop),
            sweeper: Some(sweeper),
        }
    }

    /// Closes every connection; returns how many the server dropped while
    /// they were held (each was opened again).
    pub fn close(mut self) -> u64 {
        drop(self.stop.take());
        self.sweeper
            .take()
            .map_or(0, |h| h.join().expect("the slowloris sweeper panicked"))
    }
}

impl Drop for Holder {
    /// Stops the sweeper, which closes the connections (a round that
    /// panicked leaves none open behind it).
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(h) = self.sweeper.take() {
            let _ = h.join();
        }
    }
}

/// The sweeper: until `stopped` says so (its sender dropped), every
/// [`SWEEP`] reads what each connection has; one at end-of-stream or in
/// error is counted and replaced. Its slot stays empty, and is retried next
/// sweep, while a new connection cannot be made. Returns the count; the
/// connections close as it returns.
fn hold(addr: SocketAddr, mut conns: Vec<Option<TcpStream>>, stopped: &mpsc::Receiver<()>) -> u64 {
    let mut dropped = 0;
    let mut scratch = [0u8; 512];
    while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(SWEEP) {
        for slot in &mut conns {
            if slot.as_mut().is_some_and(|c| !alive(c, &mut scratch)) {
                dropped += 1;
                *slot = None;
            }
            if slot.is_none() {
                *slot = idle_conn(addr, Instant::now() + CONNECT_TIMEOUT).ok();
            }
        }
    }
    dropped
}

/// Whether the server still holds `conn`: reading what it sent (an answer
/// such as a 408 is discarded) ends in "would block", not at end-of-stream
/// or in an error.
fn alive(conn: &mut TcpStream, scratch: &mut [u8]) -> bool {
    loop {
        match conn.read(scratch) {
            Ok(0) => return false,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

/// A new idle connection to `addr`, made by `deadline`: [`PARTIAL_HEAD`]
/// sent, then non-blocking for the sweeps.
fn idle_conn(addr: SocketAddr, deadline: Instant) -> std::io::Result<TcpStream> {
    let left = deadline.saturating_duration_since(Instant::now());
    let wait = left.min(CONNECT_TIMEOUT).max(Duration::from_millis(1));
    let mut c = TcpStream::connect_timeout(&addr, wait)?;
    c.set_nodelay(true)?;
    c.write_all(PARTIAL_HEAD)?;
    c.set_nonblocking(true)?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// The next connection `listener` accepts, within 5 s, having checked
    /// it sent the partial head.
    fn accept(listener: &TcpListener) -> TcpStream {
        listener.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut c = loop {
            match listener.accept() {
                Ok((c, _)) => break c,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "no connection within 5 s");
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        c.set_nonblocking(false).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut head = vec![0; PARTIAL_HEAD.len()];
        c.read_exact(&mut head).unwrap();
        assert_eq!(head, PARTIAL_HEAD);
        c
    }

    #[test]
    fn closed_connections_are_counted_and_opened_again_and_all_close_at_the_end() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let holder = Holder::open(listener.local_addr().unwrap(), 3, Duration::from_secs(5));
        let mut held: Vec<TcpStream> = (0..3).map(|_| accept(&listener)).collect();
        // The server closes one outright, and answers another first.
        drop(held.pop());
        let mut answered = held.pop().unwrap();
        answered
            .write_all(b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
        drop(answered);
        // Both come back, sending the partial head again.
        held.push(accept(&listener));
        held.push(accept(&listener));
        // Nothing more is opened while the server keeps them.
        std::thread::sleep(SWEEP * 3);
        listener.set_nonblocking(true).unwrap();
        assert!(listener.accept().is_err(), "a held connection was reopened");
        assert_eq!(holder.close(), 2);
        // Every connection, first or reopened, is closed.
        for mut c in held {
            assert_eq!(c.read(&mut [0; 16]).unwrap(), 0);
        }
    }

    #[test]
    #[should_panic(expected = "opened only 0 of 2 idle connections")]
    fn a_server_that_cannot_be_reached_ends_the_run_in_bounded_time() {
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        // Nobody listens there any more: every connect is refused.
        Holder::open(addr, 2, Duration::from_millis(300));
    }

    #[test]
    fn points_are_labelled_only_when_some_hold_idle_connections() {
        assert_eq!(kind(0, &[0]), None);
        assert_eq!(kind(0, &[0, 1000]).as_deref(), Some("0 idle"));
        assert_eq!(kind(1000, &[0, 1000]).as_deref(), Some("1000 idle"));
        assert_eq!(kind(50, &[50]).as_deref(), Some("50 idle"));
    }
}
