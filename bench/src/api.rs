//! The control-plane benchmark: keep-alive clients ask glance-api (static
//! tokens, redb metadata) for an image's record (`GET /v2/images/{id}`) and
//! for its download redirect (`GET /v2/images/{id}/file`, a `307` to a
//! signed link), and the report gives requests per second, latency
//! percentiles and server CPU per request. Every answer's status is checked,
//! and every redirect's `Location` is a signed link on the stream node.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::hot::median;
use crate::load::{Load, micros_since};
use crate::peer::Server;

/// Options of `glance-bench api`.
#[derive(clap::Args)]
pub struct ApiArgs {
    /// Client counts to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "8,32")]
    clients: Vec<usize>,
    #[command(flatten)]
    load: Load,
    /// Directory for glance-api's files (default: a temporary one).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
}

const TOKEN: &str = "bench-admin-token-0123456789";

/// Starts glance-api (the binary next to this one) with one static admin
/// token and `node` as its stream node (healthy, so placement is the normal
/// path; redirects are not followed).
fn glance_api(dir: &Path, node: SocketAddr, keyring: &Path) -> Server {
    let exe = std::env::current_exe()
        .unwrap()
        .with_file_name("glance-api");
    assert!(
        exe.exists(),
        "{} not built: cargo build --release -p glance-api",
        exe.display()
    );
    std::fs::create_dir_all(dir).unwrap();
    // The keyring the stream node was started with (copied with its 0600 mode).
    std::fs::copy(keyring, dir.join("keyring.toml")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.join("glance-api.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}\"\n\
             keyring = \"keyring.toml\"\nmetadata = \"glance.redb\"\n\
             stream_nodes = [\"http://{node}\"]\n\
             [store]\nid = \"local\"\nkind = \"file\"\npath = \"images\"\n\
             [auth]\nmode = \"static\"\n[[auth.tokens]]\ntoken = \"{TOKEN}\"\nuser_id = \"u\"\n\
             project_id = \"p\"\nroles = [\"admin\", \"member\", \"reader\"]\n"
        ),
    )
    .unwrap();
    let child = Command::new(exe)
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "glance-api did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Server::new("glance-api", addr, String::new(), child)
}

/// One request on a keep-alive connection; returns the status and the
/// `Location` header, if any.
fn call(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    method: &str,
    target: &str,
    body: &[u8],
) -> (u16, Option<String>) {
    write!(
        s,
        "{method} {target} HTTP/1.1\r\nHost: bench\r\nX-Auth-Token: {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    buf.clear();
    let mut chunk = [0u8; 16 << 10];
    let head_end = loop {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "connection closed early");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status: u16 = head[9..12].parse().unwrap();
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    };
    let len: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "connection closed early");
        buf.extend_from_slice(&chunk[..n]);
    }
    (status, header("location"))
}

pub fn run(args: &ApiArgs) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = args.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir).unwrap();
    let object = dir.join("object");
    crate::hot::write_object(&object, 1 << 20);
    let node = crate::peer::glance_stream(&dir, &object, 1);
    let api = glance_api(&dir.join("api"), node.addr, &dir.join("keyring.toml"));
    // One image with data.
    let mut s = TcpStream::connect(api.addr).unwrap();
    let mut buf = Vec::new();
    let (status, _) = call(
        &mut s,
        &mut buf,
        "POST",
        "/v2/images",
        br#"{"name":"bench","disk_format":"raw","container_format":"bare"}"#,
    );
    assert_eq!(status, 201);
    let body = String::from_utf8_lossy(&buf);
    let id = body
        .split("\"id\":\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_owned();
    let (status, _) = call(
        &mut s,
        &mut buf,
        "PUT",
        &format!("/v2/images/{id}/file"),
        &vec![7u8; 1 << 20],
    );
    assert_eq!(status, 204);
    drop(s);
    let kinds = [
        ("show", format!("/v2/images/{id}"), 200u16),
        ("redirect", format!("/v2/images/{id}/file"), 307u16),
    ];
    println!(
        "glance-api: static tokens, redb, one healthy stream node, {} s rounds, {} rounds, {} cores",
        args.load.seconds,
        args.load.rounds,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("| clients | request | req/s (median) | p50 ms | p99 ms | server CPU µs/req |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for &clients in &args.clients {
        let mut results: Vec<Vec<[f64; 4]>> = vec![Vec::new(); kinds.len()];
        for _ in 0..args.load.rounds {
            for (i, (_, target, want)) in kinds.iter().enumerate() {
                results[i].push(round(&api, node.addr, clients, args, target, *want));
            }
        }
        for ((name, _, _), rs) in kinds.iter().zip(&results) {
            let m = |k: usize| median(rs.iter().map(|r| r[k]).collect());
            println!(
                "| {clients} | {name} | {:.0} | {:.2} | {:.2} | {:.1} |",
                m(0),
                m(1) / 1e3,
                m(2) / 1e3,
                m(3)
            );
        }
    }
}

/// One round: `[req/s, p50 µs, p99 µs, server CPU µs per request]`.
fn round(
    api: &Server,
    node: SocketAddr,
    clients: usize,
    args: &ApiArgs,
    target: &str,
    want: u16,
) -> [f64; 4] {
    let node_url = format!("http://{node}/v1/images/");
    let node_url = &node_url;
    let deadline = Instant::now() + Duration::from_secs(args.load.seconds);
    crate::load::round(api, clients, |_| {
        let mut s = TcpStream::connect(api.addr).unwrap();
        s.set_nodelay(true).unwrap();
        let mut buf = Vec::with_capacity(8 << 10);
        let mut out = Vec::new();
        while out.len() < args.load.max_requests && Instant::now() < deadline {
            let t0 = Instant::now();
            let (status, location) = call(&mut s, &mut buf, "GET", target, b"");
            out.push(micros_since(t0));
            assert_eq!(status, want, "{target}");
            if want == 307 {
                let l = location.unwrap_or_default();
                assert!(l.starts_with(node_url.as_str()), "{l}");
                assert!(l.contains("&sig="), "{l}");
            }
        }
        out
    })
}
