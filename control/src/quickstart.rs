//! `glance-api quickstart`: a working directory with everything one control
//! plane and one stream node need, both started, with credentials written to
//! `openrc` files. Re-running it on the same directory keeps its keyring,
//! tokens, metadata and images.

use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use base64::Engine as _;

use crate::config::{Config, RawAuth, RawConfig, RawKeystone, RawStore, StaticToken};
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
    /// Port of the stream node.
    #[arg(long, default_value_t = 9393)]
    pub stream_port: u16,
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
    let err = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(err)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// Writes the keyring and both configs unless they exist; returns the API config.
fn prepare(args: &Args) -> Result<RawConfig, String> {
    let dir = &args.dir;
    for sub in ["images", "cache"] {
        std::fs::create_dir_all(dir.join(sub))
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
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
    let api_path = dir.join("glance-api.toml");
    let stream_url = format!("http://{}:{}", args.host, args.stream_port);
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
            store: RawStore {
                id: "local".into(),
                kind: "file".into(),
                path: "images".into(),
            },
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
        }
    };
    // Ports, host and Keystone follow the command line on every run.
    if let Some(auth) = keystone_auth(args)? {
        raw.auth = auth;
    }
    raw.listen = format!("{}:{}", args.host, args.port);
    raw.public_url = format!("http://{}:{}", args.host, args.port);
    raw.stream_nodes = vec![stream_url.clone()];
    let text = toml::to_string(&raw).map_err(|e| e.to_string())?;
    write_private(&api_path, &text)?;
    let stream = format!(
        "listen = \"{}:{}\"\npublic_url = \"{stream_url}\"\nkeyring = \"keyring.toml\"\nthreads = 0\n\
         [cache]\ndir = \"cache\"\nmax_bytes = 21474836480\n\
         [stores.{}]\nkind = \"file\"\npath = \"images\"\n",
        args.host, args.stream_port, raw.store.id
    );
    std::fs::write(dir.join("glance-stream.toml"), stream).map_err(|e| e.to_string())?;
    Ok(raw)
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

/// Runs the quickstart until Ctrl-C (or SIGTERM), then stops both processes.
pub async fn run(args: Args) -> Result<(), String> {
    let raw = prepare(&args)?;
    let api_path = args.dir.join("glance-api.toml");
    let config = Config::load(&api_path).map_err(|e| e.to_string())?;
    let listener = server::bind(&config).await.map_err(|e| e.to_string())?;
    let state = server::state(config.clone()).map_err(|e| e.to_string())?;
    let mut stream = spawn_stream(&args.dir)?;
    let endpoint = config.public_url.clone();
    match (&raw.auth.keystone, raw.auth.tokens.as_slice()) {
        (Some(k), _) => {
            let password = std::fs::read_to_string(args.dir.join(&k.password_file))
                .map_err(|e| format!("keystone password file: {e}"))?;
            write_private(
                &args.dir.join("openrc"),
                &openrc_keystone(k, password.trim_end(), &endpoint),
            )?;
            let _ = std::fs::remove_file(args.dir.join("openrc-member"));
        }
        (None, [admin, member, ..]) => {
            write_private(&args.dir.join("openrc"), &openrc(&admin.token, &endpoint))?;
            write_private(
                &args.dir.join("openrc-member"),
                &openrc(&member.token, &endpoint),
            )?;
        }
        (None, _) => return Err("the quickstart config has fewer than two static tokens".into()),
    }
    let dir = args.dir.display();
    let who = match &raw.auth.keystone {
        Some(k) => format!(
            "openrc = Keystone user '{}' of project '{}'",
            k.username, k.project_name
        ),
        None => {
            "openrc = admin of project 'admin', openrc-member = member of project 'demo'".into()
        }
    };
    println!("glance-api listening on {}", config.listen);
    println!(
        "\nQuickstart is running: Image API {endpoint}, stream node {}.\n\
         Working directory: {dir} ({who}).\n\n\
         Try it:\n\
         \x20 . {dir}/openrc\n\
         \x20 curl -s -H \"X-Auth-Token: $OS_TOKEN\" $OS_IMAGE_URL/v2/images\n\
         \x20 openstack image create --file disk.img --disk-format raw --container-format bare demo\n\
         \x20 openstack image list\n\
         \x20 openstack image save --file out.img demo\n\
         \x20 curl -L -H \"X-Auth-Token: $OS_TOKEN\" -o out.img $OS_IMAGE_URL/v2/images/IMAGE_ID/file\n\n\
         Press Ctrl-C to stop both.",
        config.stream_nodes.join(", ")
    );
    let served = server::serve(listener, state, server::signal()).await;
    // Stop the stream node: SIGTERM lets it drain.
    let _ = Command::new("kill").arg(stream.id().to_string()).status();
    let _ = stream.wait();
    served.map_err(|e| e.to_string())
}
