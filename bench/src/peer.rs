//! Starting the servers under test and reading their CPU time.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::object::Workdir;

/// A server process (and its children) under test.
pub struct Server {
    /// Its key in `results.json` (`ours` for glance-stream and glance-api).
    pub key: String,
    /// What it is, for the report.
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The request target of the object.
    pub target: String,
    /// HTTPS: how clients speak TLS to it (`None`: plain HTTP).
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    child: Child,
}

impl Server {
    /// A server started by a scenario of its own.
    pub fn new(key: &str, name: &str, addr: SocketAddr, target: String, child: Child) -> Server {
        Server {
            key: key.to_owned(),
            name: name.to_owned(),
            addr,
            target,
            tls: None,
            child,
        }
    }

    /// The pid at the root of its process tree.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM, so nginx's master takes its workers down with it (and the
        // real Glance's script its WSGI server).
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The image id every benchmark serves.
pub const IMAGE_ID: &str = "6f1c3b2a-9e8d-4f7a-b6c5-d4e3f2a1b0c9";

/// Makes `dir/sub` hold `object` as `IMAGE_ID` (a hard link: every server
/// reads the same page-cached bytes); returns `dir/sub`.
fn serve_from(dir: &Path, sub: &str, object: &Path) -> PathBuf {
    let root = dir.join(sub);
    std::fs::create_dir_all(&root).unwrap();
    let _ = std::fs::remove_file(root.join(IMAGE_ID));
    std::fs::hard_link(object, root.join(IMAGE_ID)).unwrap();
    root
}

/// Starts glance-stream (the binary next to this one) serving `work`'s
/// object from a file store in `dir`, and returns it with a signed link to
/// the object.
pub fn glance_stream(dir: &Path, work: &Workdir, threads: usize) -> Server {
    serve_from(dir, "gs-images", &work.object);
    glance_stream_with(
        dir,
        work,
        threads,
        "local",
        "[stores.local]\nkind = \"file\"\npath = \"gs-images\"\n",
    )
}

/// The first line `child` prints (on its piped stdout): its ready line.
fn first_line(child: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    line
}

/// Writes the bench's keyring (one key, mode 0600) at `path`.
pub fn write_keyring(path: &Path) {
    std::fs::write(
        path,
        "primary = \"b\"\n[keys]\nb = \"AUpHxry2pHEpkVJGCYLJ-TpiLWITLVzhgiWlW1sGUv8\"\n",
    )
    .unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Starts glance-stream with the given store tables and a fresh cache, and
/// returns it with a signed link to `work`'s object (its size and hashes as
/// already known) in store `store`.
pub fn glance_stream_with(
    dir: &Path,
    work: &Workdir,
    threads: usize,
    store: &str,
    stores: &str,
) -> Server {
    let exe = sibling("glance-stream");
    let keyring = dir.join("keyring.toml");
    write_keyring(&keyring);
    let cache = dir.join("gs-cache");
    let _ = std::fs::remove_dir_all(&cache);
    std::fs::create_dir_all(&cache).unwrap();
    let config = dir.join("stream.toml");
    let scheme = if stores.contains("[tls]") {
        "https"
    } else {
        "http"
    };
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\npublic_url = \"{scheme}://127.0.0.1:1\"\nkeyring = \"keyring.toml\"\n\
             threads = {threads}\n[cache]\ndir = \"gs-cache\"\nmax_bytes = 1000000000000\n{stores}"
        ),
    )
    .unwrap();
    let mut child = supervised(&exe)
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let line = first_line(&mut child);
    let addr: SocketAddr = line.split_whitespace().nth(3).unwrap().parse().unwrap();
    let (md5, sha512) = work.hashes;
    let ring = glance_link::Keyring::load(&keyring).unwrap();
    let link = ring.sign(glance_link::LinkParams {
        image_id: glance_link::parse_image_id(IMAGE_ID).unwrap(),
        store: glance_link::StoreId::new(store).unwrap(),
        size: work.size,
        md5,
        sha512,
        expires: u64::MAX / 2,
        client_cidr: None,
    });
    Server {
        key: "ours".into(),
        name: "glance-stream".into(),
        addr,
        target: format!("{}?{}", link.path(), link.query()),
        tls: None,
        child,
    }
}

/// An nginx origin: serves `object` as `/IMAGE_ID` at `rate` bytes per
/// second per connection (`limit_rate`), logging the body bytes of every
/// answer to `access.log` in its prefix.
pub fn origin(dir: &Path, object: &Path, rate: &str) -> (Server, PathBuf) {
    let root = serve_from(dir, "origin-root", object);
    let prefix = dir.join("origin");
    let log = prefix.join("access.log");
    let http = format!(
        "log_format bytes '$body_bytes_sent';\n  access_log {} bytes;\n  limit_rate {rate};\n",
        log.display()
    );
    let http = format!("tcp_nopush on;\n{http}");
    let mut server = nginx_with(&prefix, 2, &http, &format!("root {};", root.display()));
    (server.key, server.name) = ("origin".into(), "origin".into());
    (server, log)
}

/// nginx with `proxy_cache` in front of `origin`, one fetch per object at a
/// time (`proxy_cache_lock on`, waiting at most `lock_secs`).
pub fn nginx_proxy_cache(dir: &Path, origin: SocketAddr, lock_secs: u64, workers: usize) -> Server {
    let prefix = dir.join(format!("nginx-cache-{lock_secs}"));
    let _ = std::fs::remove_dir_all(&prefix);
    let http = format!(
        "access_log off;\n  proxy_cache_path {}/cache levels=1:2 keys_zone=img:10m max_size=100g inactive=1d use_temp_path=off;\n",
        prefix.display()
    );
    let location = format!(
        "location / {{ proxy_pass http://{origin}; proxy_cache img; proxy_cache_valid 200 1d;\n\
         proxy_cache_lock on; proxy_cache_lock_timeout {lock_secs}s; proxy_cache_lock_age {lock_secs}s;\n\
         proxy_read_timeout 600s; }}"
    );
    let http = format!("tcp_nopush on;\n{http}");
    let mut server = nginx_with(&prefix, workers, &http, &location);
    (server.key, server.name) = (
        format!("nginx_lock_{lock_secs}s"),
        format!("nginx proxy_cache_lock {lock_secs} s"),
    );
    server
}

/// The connections each nginx worker may hold (`worker_connections`): well
/// above the clients plus the idle connections `hot --idle` holds.
pub const NGINX_WORKER_CONNECTIONS: usize = 4096;

/// nginx in `prefix` with `workers` processes, extra `http` directives and
/// the body of its one `server` block.
fn nginx_with(prefix: &Path, workers: usize, http: &str, server: &str) -> Server {
    nginx_listening(prefix, workers, http, "", server)
}

/// `nginx_with`, with extra parameters of the `listen` directive (`ssl`).
fn nginx_listening(
    prefix: &Path,
    workers: usize,
    http: &str,
    listen: &str,
    server: &str,
) -> Server {
    let port = free_port();
    std::fs::create_dir_all(prefix.join("logs")).unwrap();
    let conf = prefix.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nmaster_process on;\nworker_processes {workers};\nerror_log {p}/error.log warn;\n\
             pid {p}/nginx.pid;\nevents {{ worker_connections {NGINX_WORKER_CONNECTIONS}; }}\n\
             http {{\n  {http}  sendfile on;\n  keepalive_requests 100000;\n\
               client_body_temp_path {p}/body; proxy_temp_path {p}/proxy; fastcgi_temp_path {p}/fcgi;\n\
               uwsgi_temp_path {p}/uwsgi; scgi_temp_path {p}/scgi;\n\
               server {{ listen 127.0.0.1:{port}{listen}; {server} }}\n}}\n",
            p = prefix.display(),
        ),
    )
    .unwrap();
    let child = supervised(&nginx_binary())
        .args(["-p"])
        .arg(prefix)
        .arg("-c")
        .arg(&conf)
        .spawn()
        .expect("nginx (Debian's nginx-light) must be installed");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_for(addr, "nginx", 10);
    Server {
        key: "nginx".into(),
        name: "nginx".into(),
        addr,
        target: format!("/{IMAGE_ID}"),
        tls: None,
        child,
    }
}

/// Starts nginx (Debian's) with `sendfile on` serving `object` from a static
/// root; `tcp_nopush on` (full packets, the usual setting for large files)
/// or off (its default, which small responses need: with it on, a range's
/// last packet waits for the client's delayed ACK, about 40 ms).
pub fn nginx(dir: &Path, object: &Path, workers: usize, nopush: bool) -> Server {
    let root = serve_from(dir, "nginx-root", object);
    nginx_with(
        &dir.join("nginx"),
        workers,
        if nopush {
            "access_log off;\ntcp_nopush on;\n"
        } else {
            "access_log off;\n"
        },
        &format!("root {};", root.display()),
    )
}

fn nginx_binary() -> PathBuf {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("nginx"))
}

/// A command running `program` that the kernel kills should the bench die
/// (`setpriv --pdeathsig KILL`, which execs it: the pid stays the
/// server's), so no server outlives an interrupted run.
fn supervised(program: &Path) -> Command {
    let setpriv = Command::new("setpriv")
        .arg("--help")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("--pdeathsig"));
    if setpriv {
        let mut c = Command::new("setpriv");
        c.args(["--pdeathsig", "KILL", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn sibling(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe.with_file_name(name);
    assert!(
        path.exists(),
        "{} not built: cargo build --release -p glance-stream",
        path.display()
    );
    path
}

/// The static token glance-api is started with (admin, member and reader).
pub const API_TOKEN: &str = "bench-admin-token-0123456789";

/// Starts glance-api (the binary next to this one) with one static token,
/// redb metadata, a file store in `dir`, and `node` as its one stream node
/// (healthy, so placement is the normal path) with the keyring at `keyring`.
pub fn glance_api(dir: &Path, node: Option<SocketAddr>, keyring: &Path) -> Server {
    glance_api_with(dir, node, keyring, &Auth::Static)
}

/// How glance-api authenticates the bench's requests.
pub enum Auth<'a> {
    /// [`API_TOKEN`], a static admin token.
    Static,
    /// Tokens validated by this Keystone.
    Keystone(&'a Keystone),
}

/// [`glance_api()`], authenticating as `auth` says.
pub fn glance_api_with(
    dir: &Path,
    node: Option<SocketAddr>,
    keyring: &Path,
    auth: &Auth,
) -> Server {
    glance_api_on(dir, node, keyring, auth, None, ("ours", "glance-api"))
}

/// [`glance_api()`] keeping its metadata in the SQL database at `sql`
/// (`None`: the redb file), reported under `(key, name)`.
pub fn glance_api_on(
    dir: &Path,
    node: Option<SocketAddr>,
    keyring: &Path,
    auth: &Auth,
    sql: Option<&str>,
    (key, name): (&str, &str),
) -> Server {
    let exe = sibling("glance-api");
    std::fs::create_dir_all(dir).unwrap();
    // The keyring the stream node was started with (copied with its 0600 mode).
    std::fs::copy(keyring, dir.join("keyring.toml")).unwrap();
    let port = free_port();
    let nodes = node.map_or(String::new(), |n| {
        format!("stream_nodes = [\"http://{n}\"]\n")
    });
    let auth = match auth {
        Auth::Static => format!(
            "[auth]\nmode = \"static\"\n[[auth.tokens]]\ntoken = \"{API_TOKEN}\"\nuser_id = \"u\"\n\
             project_id = \"p\"\nroles = [\"admin\", \"member\", \"reader\"]\n"
        ),
        Auth::Keystone(k) => {
            let password = dir.join("keystone-password");
            std::fs::write(&password, &k.password).unwrap();
            std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o600)).unwrap();
            format!(
                "[auth]\nmode = \"keystone\"\n[auth.keystone]\nauth_url = \"{}\"\n\
                 username = \"glance\"\npassword_file = \"keystone-password\"\n",
                k.auth_url
            )
        }
    };
    let (file, table) = match sql {
        None => ("metadata = \"glance.redb\"\n".to_owned(), String::new()),
        Some(url) => (String::new(), format!("[metadata]\nurl = \"{url}\"\n")),
    };
    let config = dir.join("glance-api.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}\"\n\
             keyring = \"keyring.toml\"\n{file}{nodes}\
             [store]\nid = \"local\"\nkind = \"file\"\npath = \"images\"\n\
             {auth}{table}"
        ),
    )
    .unwrap();
    let child = supervised(&exe)
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_for(addr, "glance-api", 30);
    Server::new(key, name, addr, String::new(), child)
}

/// Waits until something accepts connections at `addr`.
fn wait_for(addr: SocketAddr, what: &str, secs: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} did not start within {secs} s"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The script that installs and runs the real Glance.
fn glance_script() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/peers/glance.sh"))
}

/// A service run by one of the project's scripts (`SCRIPT install VENV`,
/// then `SCRIPT serve VENV DIR ARGS...`, which prints one line `ready
/// key=value ...` and serves until its stdin closes): installs it into
/// `venv` unless it is there, starts it in `dir`, and returns the process
/// (its stdin kept open) and the ready line's fields.
fn run_service(
    script: &Path,
    what: &str,
    venv: &Path,
    dir: &Path,
    args: &[&str],
) -> (Child, std::collections::HashMap<String, String>) {
    let installed = Command::new("bash")
        .arg(script)
        .arg("install")
        .arg(venv)
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        installed,
        "installing {what} into {} failed",
        venv.display()
    );
    std::fs::create_dir_all(dir).unwrap();
    let mut child = Command::new("bash")
        .arg(script)
        .arg("serve")
        .arg(venv)
        .arg(dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let line = first_line(&mut child);
    let fields = line
        .strip_prefix("ready ")
        .unwrap_or_else(|| panic!("{what} did not start: {line:?}"))
        .split_whitespace()
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    (child, fields)
}

/// Installs (if needed) and starts the real Glance from `venv` (uWSGI,
/// `workers` processes, SQLite, a file store, no authentication) in the
/// empty directory `dir`. Dropping the server closes the script's stdin,
/// and the script stops Glance.
pub fn real_glance(dir: &Path, venv: &Path, workers: usize) -> Server {
    let workers = workers.to_string();
    let (child, ready) = run_service(
        &glance_script(),
        "the real Glance",
        venv,
        dir,
        &["--workers", &workers],
    );
    let url = ready.get("url").map_or("", String::as_str);
    let addr: SocketAddr = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap_or_else(|_| panic!("the real Glance's URL: {url:?}"));
    Server::new("glance", "Glance 33 (uWSGI)", addr, String::new(), child)
}

/// Installs Debian's nginx-light unless an nginx is there.
pub fn ensure_nginx() {
    if nginx_binary().exists() {
        return;
    }
    let ok = Command::new("apt-get")
        .args(["update", "-q"])
        .status()
        .is_ok_and(|s| s.success())
        && Command::new("apt-get")
            .args(["install", "-y", "-q", "nginx-light"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success());
    assert!(ok, "installing nginx-light failed");
}

/// Options of the real Glance peer, shared by the scenarios it takes part in.
#[derive(clap::Args, Clone)]
pub struct GlancePeer {
    /// Leave the real Glance out.
    #[arg(long)]
    pub no_glance: bool,
    /// The Python venv the real Glance is installed into (made if missing).
    #[arg(long, default_value = ".venv-glance")]
    pub glance_venv: PathBuf,
}

impl GlancePeer {
    /// Installs (if needed) and starts the real Glance with `workers`
    /// processes in `dir`, unless it is left out.
    pub fn start(
        &self,
        run: &mut crate::report::Run,
        dir: &Path,
        workers: usize,
    ) -> Option<Server> {
        if self.no_glance {
            run.note("the real Glance is left out (--no-glance)".into());
            return None;
        }
        Some(real_glance(dir, &self.glance_venv, workers))
    }
}

/// A real Keystone (`tests/keystone/keystone.sh`), with the users that
/// script makes, all with one password.
pub struct Keystone {
    /// Its v3 URL.
    pub auth_url: String,
    /// Every user's password.
    pub password: String,
    child: Child,
}

impl Drop for Keystone {
    fn drop(&mut self) {
        // Closing its stdin ends the script, which stops Keystone.
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// The script that installs and runs Keystone for the project's tests.
fn keystone_script() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/keystone/keystone.sh"
    ))
}

/// Installs (if needed) Keystone into `venv` and starts it in the empty
/// directory `dir`.
pub fn keystone(dir: &Path, venv: &Path) -> Keystone {
    let (child, mut ready) = run_service(&keystone_script(), "Keystone", venv, dir, &[]);
    let mut field = |name: &str| {
        ready
            .remove(name)
            .unwrap_or_else(|| panic!("Keystone's ready line has no {name}"))
    };
    Keystone {
        auth_url: field("auth_url"),
        password: field("password"),
        child,
    }
}

impl Keystone {
    /// A project-scoped token for `user` on `project` (domain Default).
    pub fn token(&self, user: &str, project: &str) -> String {
        let url = self
            .auth_url
            .strip_prefix("http://")
            .unwrap_or(&self.auth_url);
        let (host, path) = url.split_once('/').unwrap_or((url, ""));
        let domain = serde_json::json!({ "id": "default" });
        let body = serde_json::json!({ "auth": {
            "identity": { "methods": ["password"], "password": { "user": {
                "name": user, "domain": domain, "password": self.password,
            } } },
            "scope": { "project": { "name": project, "domain": domain } },
        } })
        .to_string();
        let mut conn = crate::client::Conn::connect(host.parse().unwrap());
        let (head, _) = conn.request(
            "POST",
            &format!("/{path}/auth/tokens"),
            "Content-Type: application/json\r\n",
            body.as_bytes(),
        );
        let text = conn.read_text(head.content_length);
        assert_eq!(head.status, 201, "Keystone token: {text}");
        head.subject_token.expect("Keystone sends X-Subject-Token")
    }
}

/// Certificates for the HTTPS benchmarks: a throw-away CA, one server
/// certificate for 127.0.0.1 that every server presents, and the client
/// config trusting that CA alone.
pub struct Tls {
    /// The certificate chain (PEM).
    pub cert: PathBuf,
    /// Its key (PEM, mode 0600).
    pub key: PathBuf,
    /// What the clients speak: TLS 1.3 (1.2 too), ALPN http/1.1.
    pub client: std::sync::Arc<rustls::ClientConfig>,
}

impl Tls {
    /// Makes the CA and the certificate in `dir`.
    pub fn new(dir: &Path) -> Tls {
        let ca = glance_api::tls::ThrowawayCa::new("glance-bench CA").unwrap();
        let (cert, key) = ca
            .issue(&["127.0.0.1"], glance_api::tls::Validity::Days(2))
            .unwrap()
            .write(dir, "bench")
            .unwrap();
        let ca_file = dir.join("bench-ca.pem");
        std::fs::write(&ca_file, ca.pem()).unwrap();
        let client = glance_link::tls::client_config(Some(&ca_file)).unwrap();
        Tls { cert, key, client }
    }
}

/// glance-stream on HTTPS serving `work`'s object through its cache (a
/// cached file store: bodies are encrypted from the mapped cache file).
pub fn glance_stream_tls(dir: &Path, work: &Workdir, threads: usize, tls: &Tls) -> Server {
    serve_from(dir, "gs-images", &work.object);
    let mut server = glance_stream_with(
        dir,
        work,
        threads,
        "local",
        &format!(
            "[stores.local]\nkind = \"file\"\npath = \"gs-images\"\ncache = true\n\
             [tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            tls.cert.display(),
            tls.key.display()
        ),
    );
    server.tls = Some(std::sync::Arc::clone(&tls.client));
    server
}

/// nginx on HTTPS (OpenSSL; no kernel TLS here, so `sendfile` gives way
/// to reads and `SSL_write`) serving `object` from a static root.
pub fn nginx_tls(dir: &Path, object: &Path, workers: usize, tls: &Tls) -> Server {
    let root = serve_from(dir, "nginx-root", object);
    let mut server = nginx_listening(
        &dir.join("nginx"),
        workers,
        "access_log off;\ntcp_nopush on;\n",
        " ssl",
        &format!(
            "root {}; ssl_certificate {}; ssl_certificate_key {}; \
             ssl_protocols TLSv1.2 TLSv1.3; ssl_session_cache shared:SSL:1m;",
            root.display(),
            tls.cert.display(),
            tls.key.display()
        ),
    );
    server.tls = Some(std::sync::Arc::clone(&tls.client));
    server
}
