//! `glance-api quickstart`: a working directory with everything one control
//! plane and one stream node need, both started, with credentials written to
//! `openrc` files. Re-running it on the same directory keeps its keyring,
//! tokens, metadata and images.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use base64::Engine as _;

use crate::config::{
    Config, RawAuth, RawConfig, RawFleet, RawKeystone, RawNode, RawNodeTable, RawStore, StaticToken,
};
use crate::server;

/// Options of `glance-api quickstart`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Working directory (created if missing).
    #[arg(long, default_value = "var")]
    pub dir: PathBuf,
    /// Port of the Image API.
    #[arg(long, default_value_t = 9292)]
    pub port: u16,
    /// Port of the first stream node; the others take the ports after it.
    #[arg(long, default_value_t = 9393)]
    pub stream_port: u16,
    /// How many glance-stream processes to start, registered as the fleet.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub stream_nodes: u16,
    /// Address both listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Validate tokens with this Keystone (v3 URL, e.g. http://keystone:5000/v3)
    /// instead of the quickstart's static tokens.
    #[arg(long, requires_all = ["keystone_user", "keystone_password", "keystone_project"])]
    pub keystone_url: Option<String>,
    /// glance-api's service user in Keystone (roles: service, and admin to manage every image).
    #[arg(long, requires = "keystone_url")]
    pub keystone_user: Option<String>,
    /// Its password (stored in DIR/keystone-password, mode 0600).
    #[arg(long, requires = "keystone_url")]
    pub keystone_password: Option<String>,
    /// The project its token is scoped to.
    #[arg(long, requires = "keystone_url")]
    pub keystone_project: Option<String>,
    /// Domain of the user and the project.
    #[arg(long, default_value = "Default")]
    pub keystone_domain: String,
    /// Serve both planes over HTTPS, with certificates from a throw-away CA
    /// made at each start (its certificate in DIR/ca.pem, named by
    /// OS_CACERT in the openrc files).
    #[arg(long)]
    pub tls: bool,
    /// Keep metadata in this PostgreSQL or MariaDB/MySQL database
    /// (postgresql://USER:PASSWORD@HOST:PORT/DB, mysql://... or
    /// mariadb://...) instead of DIR/glance.redb; its tables are created or
    /// upgraded at start (`glance-api db sync`). Also read from
    /// GLANCE_METADATA_URL (a password on the command line is visible to
    /// every local user).
    #[arg(
        long,
        value_name = "URL",
        env = "GLANCE_METADATA_URL",
        hide_env_values = true
    )]
    pub metadata_url: Option<String>,
    /// Add a file store with this id (images in DIR/images-ID), which
    /// imports may write to and copy-image copies into; repeat for more.
    /// The default store stays the first.
    #[arg(long, value_name = "ID")]
    pub extra_file_store: Vec<String>,
    /// Let web-download imports fetch from this host (and port, when given:
    /// HOST:PORT), even on a loopback address; repeat for more. Without it,
    /// web-download fetches from any host that is not loopback or
    /// link-local, on ports 80 and 443.
    #[arg(long, value_name = "HOST[:PORT]")]
    pub web_download_allow: Vec<String>,
    /// Store images in OpenStack Swift, authenticating with tempauth (v1)
    /// at this URL (e.g. http://swift:8080/auth/v1.0), or with Keystone at
    /// its v3 URL (with --swift-project); images go to the container
    /// `glance`, and direct links are Swift TempURLs.
    #[arg(long, value_name = "URL", requires_all = ["swift_user", "swift_key"])]
    pub swift_auth_url: Option<String>,
    /// The Swift user: `account:user` for tempauth, a Keystone user's name
    /// otherwise (it must own the account, to set the container's TempURL
    /// key).
    #[arg(long, requires = "swift_auth_url")]
    pub swift_user: Option<String>,
    /// With a Keystone URL: the project (domain Default) whose account
    /// holds the images.
    #[arg(long, requires = "swift_auth_url")]
    pub swift_project: Option<String>,
    /// Its key (stored in DIR/swift-key, mode 0600). Also read from
    /// GLANCE_SWIFT_KEY.
    #[arg(
        long,
        requires = "swift_auth_url",
        env = "GLANCE_SWIFT_KEY",
        hide_env_values = true
    )]
    pub swift_key: Option<String>,
}

/// The store id of the quickstart's directory of images.
const FILE_STORE: &str = "local";

/// The store id of the quickstart's Swift store.
const SWIFT_STORE: &str = "swift";

/// The store uploads go to: Swift when the command line names one (its key
/// and a TempURL key written to private files), else the directory.
fn quick_store(args: &Args) -> Result<RawStore, String> {
    let (Some(url), Some(user), Some(key)) =
        (&args.swift_auth_url, &args.swift_user, &args.swift_key)
    else {
        return Ok(RawStore {
            id: FILE_STORE.into(),
            kind: "file".into(),
            path: Some("images".into()),
            ..RawStore::default()
        });
    };
    write_private(&args.dir.join("swift-key"), key)?;
    let temp_url_key = args.dir.join("swift-temp-url-key");
    if !temp_url_key.exists() {
        write_private(&temp_url_key, &random_token(32)?)?;
    }
    Ok(RawStore {
        id: SWIFT_STORE.into(),
        kind: "swift".into(),
        auth_url: Some(url.clone()),
        user: Some(user.clone()),
        key_file: Some("swift-key".into()),
        project: args.swift_project.clone(),
        container: Some(glance_link::swift::DEFAULT_CONTAINER.into()),
        temp_url_key_file: Some("swift-temp-url-key".into()),
        ..RawStore::default()
    })
}

/// The URL scheme the command line asks for.
fn scheme(args: &Args) -> &'static str {
    if args.tls { "https" } else { "http" }
}

/// The Keystone settings of the command line, if any.
fn keystone_auth(args: &Args) -> Result<Option<RawAuth>, String> {
    let (Some(url), Some(user), Some(password), Some(project)) = (
        &args.keystone_url,
        &args.keystone_user,
        &args.keystone_password,
        &args.keystone_project,
    ) else {
        return Ok(None);
    };
    write_private(&args.dir.join("keystone-password"), password)?;
    Ok(Some(RawAuth {
        mode: "keystone".into(),
        tokens: Vec::new(),
        keystone: Some(RawKeystone {
            auth_url: url.clone(),
            username: user.clone(),
            password_file: "keystone-password".into(),
            project_name: project.clone(),
            user_domain_name: args.keystone_domain.clone(),
            project_domain_name: args.keystone_domain.clone(),
            cache_max_tokens: 10_000,
            cache_ttl_secs: 300,
            timeout_secs: 10,
        }),
    }))
}

fn random_token(bytes: usize) -> Result<String, String> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| format!("no randomness: {e}"))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf))
}

fn write_private(path: &Path, text: &str) -> Result<(), String> {
    glance_link::write_private_file(path, text, "tmp")
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// One stream node of the quickstart: its name, URL and directory.
struct QuickNode {
    name: String,
    url: String,
    dir: PathBuf,
}

/// The stream nodes the command line asks for: `stream-1` on `--stream-port`,
/// `stream-2` on the next port, and so on, each in `DIR/stream-N`.
fn quick_nodes(args: &Args) -> Result<Vec<QuickNode>, String> {
    (0..args.stream_nodes)
        .map(|i| {
            let port = args
                .stream_port
                .checked_add(i)
                .ok_or("--stream-port plus --stream-nodes passes port 65535")?;
            let name = format!("stream-{}", i + 1);
            Ok(QuickNode {
                url: format!("{}://{}:{port}", scheme(args), args.host),
                dir: args.dir.join(&name),
                name,
            })
        })
        .collect()
}

/// Writes the keyring, the stream nodes' admin token and every config
/// (secrets only if missing); returns the API config.
fn prepare(args: &Args, nodes: &[QuickNode]) -> Result<RawConfig, String> {
    let dir = &args.dir;
    std::fs::create_dir_all(dir.join("images"))
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let keyring = dir.join("keyring.toml");
    if !keyring.exists() {
        let kid = "qs1";
        write_private(
            &keyring,
            &format!(
                "primary = \"{kid}\"\n[keys]\n{kid} = \"{}\"\n",
                random_token(32)?
            ),
        )?;
    }
    let admin_token = dir.join("stream-admin-token");
    if !admin_token.exists() {
        write_private(&admin_token, &random_token(32)?)?;
    }
    let api_path = dir.join("glance-api.toml");
    let mut raw: RawConfig = if api_path.exists() {
        let text = std::fs::read_to_string(&api_path).map_err(|e| e.to_string())?;
        toml::from_str(&text).map_err(|e| format!("{}: {e}", api_path.display()))?
    } else {
        RawConfig {
            listen: String::new(),
            public_url: String::new(),
            keyring: "keyring.toml".into(),
            link_ttl_secs: glance_link::DEFAULT_TTL_SECS,
            stream_nodes: Vec::new(),
            image_size_cap: 1 << 40,
            metadata: "glance.redb".into(),
            store: quick_store(args)?,
            stores: Vec::new(),
            auth: RawAuth {
                mode: "static".into(),
                tokens: vec![
                    StaticToken {
                        token: random_token(24)?,
                        user_id: "admin".into(),
                        project_id: "admin".into(),
                        roles: vec!["admin".into(), "member".into(), "reader".into()],
                    },
                    StaticToken {
                        token: random_token(24)?,
                        user_id: "demo".into(),
                        project_id: "demo".into(),
                        roles: vec!["member".into(), "reader".into()],
                    },
                ],
                keystone: None,
            },
            fleet: None,
            tls: None,
            import: None,
        }
    };
    // Ports, host, nodes, the store and Keystone follow the command line on
    // every run.
    raw.store = quick_store(args)?;
    raw.stores = args
        .extra_file_store
        .iter()
        .map(|id| RawStore {
            id: id.clone(),
            kind: "file".into(),
            path: Some(format!("images-{id}").into()),
            ..RawStore::default()
        })
        .collect();
    if let Some(auth) = keystone_auth(args)? {
        raw.auth = auth;
    }
    if let Some(url) = &args.metadata_url {
        raw.metadata = crate::config::RawMetadata::Sql(crate::config::RawSqlMetadata {
            url: url.clone(),
            max_connections: 16,
        });
    }
    raw.import = web_download_filter(&args.web_download_allow)?;
    raw.listen = format!("{}:{}", args.host, args.port);
    raw.public_url = format!("{}://{}:{}", scheme(args), args.host, args.port);
    raw.tls = match args.tls {
        true => Some(issue_certificates(args, nodes)?),
        false => None,
    };
    raw.stream_nodes = nodes
        .iter()
        .map(|n| {
            RawNode::Table(RawNodeTable {
                name: n.name.clone(),
                public_url: n.url.clone(),
                admin_url: None,
                weight: 100,
            })
        })
        .collect();
    let fleet = raw.fleet.get_or_insert_with(RawFleet::default);
    fleet.admin_token_file = Some("stream-admin-token".into());
    let text = toml::to_string(&raw).map_err(|e| e.to_string())?;
    write_private(&api_path, &text)?;
    for node in nodes {
        prepare_node(args, node, &raw.store, &raw.stores)?;
    }
    Ok(raw)
}

/// The `[import]` table letting web-download reach `allowed` hosts (each
/// `HOST` or `HOST:PORT`), or none when there are none.
fn web_download_filter(allowed: &[String]) -> Result<Option<crate::config::RawImport>, String> {
    if allowed.is_empty() {
        return Ok(None);
    }
    let mut hosts = Vec::new();
    let mut ports = vec![80, 443];
    for entry in allowed {
        let (host, port) = match entry.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(':') && !h.is_empty() => {
                let port: u16 = p
                    .parse()
                    .map_err(|_| format!("--web-download-allow {entry:?}: {p:?} is not a port"))?;
                (h.trim_start_matches('[').trim_end_matches(']'), Some(port))
            }
            _ => (entry.as_str(), None),
        };
        if host.is_empty() {
            return Err(format!("--web-download-allow {entry:?}: no host"));
        }
        hosts.push(host.to_owned());
        if let Some(p) = port
            && !ports.contains(&p)
        {
            ports.push(p);
        }
    }
    Ok(Some(crate::config::RawImport {
        web_download: Some(crate::config::RawUriFilter {
            allowed_hosts: hosts,
            allowed_ports: Some(ports),
            ..Default::default()
        }),
        ..Default::default()
    }))
}

/// A stream node's directory: its config, its copy of the keyring (kept
/// current by glance-api's pushes) and its cache. The file store is served
/// through the cache, as a shared directory would be, so the cache API and
/// pre-warming work on the quickstart too; a Swift store is served too when
/// uploads go there (images of earlier runs stay in the directory).
fn prepare_node(
    args: &Args,
    node: &QuickNode,
    store: &RawStore,
    extra: &[RawStore],
) -> Result<(), String> {
    let err = |e: std::io::Error| format!("cannot create {}: {e}", node.dir.display());
    std::fs::create_dir_all(node.dir.join("cache")).map_err(err)?;
    let keyring = node.dir.join("keyring.toml");
    if !keyring.exists() {
        let text = glance_link::read_private_file(&args.dir.join("keyring.toml"))
            .map_err(|e| e.to_string())?;
        write_private(&keyring, &text)?;
    }
    let listen = node
        .url
        .trim_start_matches("http://")
        .trim_start_matches("https://");
    let tls = match args.tls {
        true => "[tls]\ncert = \"tls.pem\"\nkey = \"tls-key.pem\"\n",
        false => "",
    };
    // The TOML strings of the Swift settings: quoted by toml.
    let quote = |v: &Option<String>| toml::Value::String(v.clone().unwrap_or_default()).to_string();
    let swift = match store.kind.as_str() {
        "swift" => format!(
            "[stores.{SWIFT_STORE}]\nkind = \"swift\"\nauth_url = {}\nuser = {}\n\
             key_file = \"../swift-key\"\ncontainer = {}\n{}",
            quote(&store.auth_url),
            quote(&store.user),
            quote(&store.container),
            match &store.project {
                Some(_) => format!("project = {}\n", quote(&store.project)),
                None => String::new(),
            },
        ),
        _ => String::new(),
    };
    let extra: String = extra
        .iter()
        .map(|s| {
            format!(
                "[stores.{}]\nkind = \"file\"\npath = \"../images-{}\"\ncache = true\n",
                s.id, s.id
            )
        })
        .collect();
    let config = format!(
        "listen = \"{listen}\"\npublic_url = \"{}\"\nkeyring = \"keyring.toml\"\nthreads = 0\n\
         [admin]\ntoken_file = \"../stream-admin-token\"\n\
         [cache]\ndir = \"cache\"\nmax_bytes = 21474836480\n\
         [stores.{FILE_STORE}]\nkind = \"file\"\npath = \"../images\"\ncache = true\n{extra}{swift}{tls}",
        node.url
    );
    std::fs::write(node.dir.join("glance-stream.toml"), config).map_err(err)
}

/// Makes a throw-away CA (`DIR/ca.pem`; its key is never written) and
/// issues the API's certificate (`DIR/api.pem`) and each stream node's
/// (`DIR/stream-N/tls.pem`), valid for a year, for the listen host and the
/// loopback names. Returns the API's `[tls]` table.
fn issue_certificates(args: &Args, nodes: &[QuickNode]) -> Result<crate::config::RawTls, String> {
    use crate::tls::{ThrowawayCa, Validity};
    let ca = ThrowawayCa::new("glance-stream quickstart CA")?;
    let ca_path = args.dir.join("ca.pem");
    std::fs::write(&ca_path, ca.pem())
        .map_err(|e| format!("cannot write {}: {e}", ca_path.display()))?;
    let mut names: Vec<&str> = Vec::new();
    for name in [args.host.as_str(), "localhost", "127.0.0.1", "::1"] {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    let write = |dir: &Path, name: &str| -> Result<(), String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        ca.issue(&names, Validity::Days(365))?
            .write(dir, name)
            .map(|_| ())
            .map_err(|e| format!("cannot write a certificate in {}: {e}", dir.display()))
    };
    write(&args.dir, "api")?;
    for node in nodes {
        write(&node.dir, "tls")?;
    }
    Ok(crate::config::RawTls {
        cert: Some("api.pem".into()),
        key: Some("api-key.pem".into()),
        ca_file: Some("ca.pem".into()),
    })
}

/// The line of an openrc file naming the CA to trust (none without TLS).
fn cacert_line(args: &Args) -> Result<String, String> {
    if !args.tls {
        return Ok(String::new());
    }
    let ca = std::path::absolute(args.dir.join("ca.pem")).map_err(|e| e.to_string())?;
    Ok(format!("export OS_CACERT={}\n", ca.display()))
}

/// The credentials file in keystone mode: the service user's password
/// credentials; the clients find the Image API through the overrides, not
/// Keystone's catalog.
fn openrc_keystone(k: &RawKeystone, password: &str, endpoint: &str) -> String {
    format!(
        "# Credentials for the quickstart's Image API, authenticated by Keystone.\n\
         export OS_AUTH_TYPE=password\nexport OS_AUTH_URL={}\nexport OS_IDENTITY_API_VERSION=3\n\
         export OS_USERNAME={}\nexport OS_PASSWORD='{}'\nexport OS_PROJECT_NAME={}\n\
         export OS_USER_DOMAIN_NAME={}\nexport OS_PROJECT_DOMAIN_NAME={}\n\
         export OS_IMAGE_URL={endpoint}\nexport OS_IMAGE_ENDPOINT_OVERRIDE={endpoint}\nexport OS_IMAGE_API_VERSION=2\n",
        k.auth_url,
        k.username,
        password.replace('\'', "'\\''"),
        k.project_name,
        k.user_domain_name,
        k.project_domain_name
    )
}

/// The credentials file. With `admin_token` auth the openstack CLI and
/// openstacksdk use `OS_ENDPOINT` as the image endpoint as it is, so it names
/// the versioned root (`/v2`); `OS_IMAGE_URL` is the unversioned root that
/// glanceclient and curl take.
fn openrc(token: &str, endpoint: &str) -> String {
    format!(
        "# Credentials for the quickstart's Image API (static token, no Keystone).\n\
         export OS_AUTH_TYPE=admin_token\nexport OS_TOKEN={token}\nexport OS_ENDPOINT={endpoint}/v2\n\
         export OS_IMAGE_URL={endpoint}\nexport OS_IMAGE_API_VERSION=2\n"
    )
}

/// Starts the stream node next to this binary and waits for its ready line.
fn spawn_stream(dir: &Path) -> Result<Child, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let stream = exe.with_file_name("glance-stream");
    if !stream.exists() {
        return Err(format!(
            "{} is missing: build both binaries (cargo build --release --bins)",
            stream.display()
        ));
    }
    let mut child = Command::new(&stream)
        .arg("--config")
        .arg(dir.join("glance-stream.toml"))
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", stream.display()))?;
    let mut line = String::new();
    let stdout = child.stdout.take().ok_or("no stdout from glance-stream")?;
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    if !line.starts_with("glance-stream listening on") {
        let _ = child.kill();
        let status = child.wait().map_err(|e| e.to_string())?;
        return Err(format!(
            "glance-stream did not start ({status}); see its messages above"
        ));
    }
    eprint!("{line}");
    Ok(child)
}

/// Stops the stream nodes: SIGTERM lets each drain.
fn stop_streams(streams: &mut [Child]) {
    for child in streams.iter() {
        let _ = Command::new("kill").arg(child.id().to_string()).status();
    }
    for child in streams.iter_mut() {
        let _ = child.wait();
    }
}

/// Writes `openrc` (and `openrc-member` with static tokens).
fn write_openrc(args: &Args, raw: &RawConfig, endpoint: &str) -> Result<(), String> {
    match (&raw.auth.keystone, raw.auth.tokens.as_slice()) {
        (Some(k), _) => {
            let password = std::fs::read_to_string(args.dir.join(&k.password_file))
                .map_err(|e| format!("keystone password file: {e}"))?;
            write_private(
                &args.dir.join("openrc"),
                &(openrc_keystone(k, password.trim_end(), endpoint) + &cacert_line(args)?),
            )?;
            let _ = std::fs::remove_file(args.dir.join("openrc-member"));
            Ok(())
        }
        (None, [admin, member, ..]) => {
            let cacert = cacert_line(args)?;
            write_private(
                &args.dir.join("openrc"),
                &(openrc(&admin.token, endpoint) + &cacert),
            )?;
            write_private(
                &args.dir.join("openrc-member"),
                &(openrc(&member.token, endpoint) + &cacert),
            )
        }
        (None, _) => Err("the quickstart config has fewer than two static tokens".into()),
    }
}

/// Runs the quickstart until Ctrl-C (or SIGTERM), then stops every process.
pub async fn run(args: Args) -> Result<(), String> {
    // Ctrl-C from here on stops everything started, however early it comes.
    let stop = server::signal();
    let nodes = quick_nodes(&args)?;
    let raw = prepare(&args, &nodes)?;
    let api_path = args.dir.join("glance-api.toml");
    let config = Config::load(&api_path).map_err(|e| e.to_string())?;
    if let crate::config::MetadataConfig::Sql { url, .. } = &config.metadata {
        let owned = url.clone();
        let applied = tokio::task::spawn_blocking(move || crate::metadata::sync(&owned))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        if !applied.is_empty() {
            let shown = crate::metadata::redact(url);
            println!("created the metadata tables in {shown}");
        }
    }
    if let crate::store::Store::Swift(swift) = &config.store {
        swift
            .prepare()
            .await
            .map_err(|e| format!("the Swift store is not usable: {e}"))?;
        if !swift.temp_url_key_in_place() {
            return Err(
                "the Swift store is not usable: cannot set the container's TempURL \
                 key (direct links), since the Swift user does not own the account"
                    .into(),
            );
        }
    }
    let listener = server::bind(&config).await.map_err(|e| e.to_string())?;
    let state = server::state(config.clone()).map_err(|e| e.to_string())?;
    // The quickstart's registry is its command line: nodes of an earlier
    // run with more nodes leave it.
    for old in state.fleet.nodes() {
        if !nodes.iter().any(|n| n.name == old.name) {
            state.fleet.remove(&old.name).map_err(|e| e.to_string())?;
        }
    }
    let mut streams = Vec::with_capacity(nodes.len());
    for node in &nodes {
        match spawn_stream(&node.dir) {
            Ok(child) => streams.push(child),
            Err(e) => {
                stop_streams(&mut streams);
                return Err(e);
            }
        }
    }
    let endpoint = config.public_url.clone();
    if let Err(e) = write_openrc(&args, &raw, &endpoint) {
        stop_streams(&mut streams);
        return Err(e);
    }
    let dir = args.dir.display();
    let (who, token_line) = match &raw.auth.keystone {
        Some(k) => (
            format!(
                "openrc = Keystone user '{}' of project '{}'",
                k.username, k.project_name
            ),
            "\x20 export OS_TOKEN=$(openstack token issue -f value -c id)\n",
        ),
        None => (
            "openrc = admin of project 'admin', openrc-member = member of project 'demo'".into(),
            "",
        ),
    };
    let urls: Vec<&str> = nodes.iter().map(|n| n.url.as_str()).collect();
    let curl = match args.tls {
        true => "curl --cacert $OS_CACERT",
        false => "curl",
    };
    let direct = match &config.store {
        crate::store::Store::Swift(_) => format!(
            "\x20 {curl} -s -X POST -H \"X-Auth-Token: $OS_TOKEN\" -H 'Content-Type: application/json' \
             -d '{{\"kind\": \"direct\"}}' $OS_IMAGE_URL/v2/images/IMAGE_ID/links   # a Swift TempURL\n"
        ),
        _ => String::new(),
    };
    println!("glance-api listening on {}", config.listen);
    println!(
        "\nQuickstart is running: Image API {endpoint}, stream node{} {}.\n\
         Working directory: {dir} ({who}).\n\n\
         Try it:\n\
         \x20 . {dir}/openrc\n\
         {token_line}\
         \x20 {curl} -s -H \"X-Auth-Token: $OS_TOKEN\" $OS_IMAGE_URL/v2/images\n\
         \x20 openstack image create --file disk.img --disk-format raw --container-format bare demo\n\
         \x20 openstack image list\n\
         \x20 openstack image save --file out.img demo\n\
         \x20 {curl} -L -H \"X-Auth-Token: $OS_TOKEN\" -o out.img $OS_IMAGE_URL/v2/images/IMAGE_ID/file\n\
         {direct}\
         \x20 {curl} -s -H \"X-Auth-Token: $OS_TOKEN\" $OS_IMAGE_URL/admin/nodes\n\n\
         Press Ctrl-C to stop them all.",
        if urls.len() > 1 { "s" } else { "" },
        urls.join(", ")
    );
    let served = server::serve(listener, state, stop).await;
    stop_streams(&mut streams);
    served.map_err(|e| e.to_string())
}
