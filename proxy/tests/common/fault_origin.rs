//! An HTTP origin that misbehaves on purpose, on a loopback port of its own:
//! it serves one object's ranges (`206`, keep-alive) and, from a given byte
//! of the object on, cuts its answers short, flips a byte or stops sending.
//! It keeps every request head it received, so a test can check what a
//! stream node sends a backend. nginx cannot be made to do any of this.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the origin does to answers covering byte `at` of the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Serve every byte right.
    None,
    /// Send the head and the body up to byte `at`, then close.
    Truncate { at: u64 },
    /// Send byte `at` wrong (every time).
    WrongByte { at: u64 },
    /// Send the head and the body up to byte `at`, then send nothing more
    /// (the connection stays open until the origin is dropped).
    Hang { at: u64 },
    /// Read the request and answer nothing at all.
    Silent,
}

struct State {
    object: Vec<u8>,
    fault: Mutex<Fault>,
    heads: Mutex<Vec<String>>,
    body_bytes: AtomicU64,
    stop: AtomicBool,
}

/// A running misbehaving origin.
pub struct FaultOrigin {
    pub port: u16,
    state: Arc<State>,
}

impl FaultOrigin {
    /// Serves `object` under any path on a free port.
    pub fn start(object: Vec<u8>, fault: Fault) -> FaultOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let state = Arc::new(State {
            object,
            fault: Mutex::new(fault),
            heads: Mutex::new(Vec::new()),
            body_bytes: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let st = Arc::clone(&state);
        std::thread::spawn(move || {
            while !st.stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let st = Arc::clone(&st);
                        std::thread::spawn(move || serve(&st, conn));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FaultOrigin { port, state }
    }

    /// Changes what the origin does from the next request on.
    pub fn set(&self, fault: Fault) {
        *self.state.fault.lock().unwrap() = fault;
    }

    /// Every request head received so far, as text.
    pub fn heads(&self) -> Vec<String> {
        self.state.heads.lock().unwrap().clone()
    }

    /// Body bytes sent so far.
    pub fn body_bytes(&self) -> u64 {
        self.state.body_bytes.load(Ordering::SeqCst)
    }
}

impl Drop for FaultOrigin {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
    }
}

/// Reads one request head (at most 64 KiB), or `None` at the end.
fn read_head(conn: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 64 << 10 || conn.read(&mut byte).ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// The `Range: bytes=a-b` of a head, or the whole object.
fn range(head: &str, len: u64) -> (u64, u64) {
    head.lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            if !name.eq_ignore_ascii_case("range") {
                return None;
            }
            let (a, b) = value.trim().strip_prefix("bytes=")?.split_once('-')?;
            Some((a.parse().ok()?, b.parse::<u64>().ok()?.min(len - 1)))
        })
        .unwrap_or((0, len - 1))
}

fn serve(st: &State, mut conn: TcpStream) {
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    while let Some(head) = read_head(&mut conn) {
        st.heads.lock().unwrap().push(head.clone());
        let fault = *st.fault.lock().unwrap();
        if fault == Fault::Silent {
            linger(st);
            return;
        }
        let len = st.object.len() as u64;
        let (a, b) = range(&head, len);
        let mut body = st.object[a as usize..=b as usize].to_vec();
        let cut = match fault {
            Fault::Truncate { at } | Fault::Hang { at } if (a..=b).contains(&at) => {
                Some((at - a) as usize)
            }
            Fault::WrongByte { at } if (a..=b).contains(&at) => {
                body[(at - a) as usize] ^= 0x5a;
                None
            }
            _ => None,
        };
        let head = format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {a}-{b}/{len}\r\n\
             Content-Length: {}\r\nContent-Type: application/octet-stream\r\n\r\n",
            body.len()
        );
        if conn.write_all(head.as_bytes()).is_err() {
            return;
        }
        let send = cut.unwrap_or(body.len());
        if conn.write_all(&body[..send]).is_err() {
            return;
        }
        st.body_bytes.fetch_add(send as u64, Ordering::SeqCst);
        if cut.is_some() {
            if matches!(fault, Fault::Hang { .. }) {
                linger(st);
            }
            return;
        }
    }
}

/// Holds a connection open without sending, until the origin is dropped
/// (at most two minutes).
fn linger(st: &State) {
    let until = Instant::now() + Duration::from_secs(120);
    while !st.stop.load(Ordering::SeqCst) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
}
