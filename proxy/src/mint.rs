//! `glance-stream mint`: print one signed link (an operator's debugging tool).

use std::io::Read as _;

use glance_link::{Keyring, LinkParams, StoreId, parse_image_id};
use md5::Digest as _;

use crate::config::{Config, StoreConfig};

/// What to mint.
#[derive(Debug, Clone)]
pub struct MintRequest {
    /// Store id (a `[stores.<id>]` table).
    pub store: String,
    /// Image id.
    pub image: String,
    /// Link lifetime in seconds.
    pub ttl_secs: u64,
    /// Size and hashes; read from the object when absent.
    pub known: Option<(u64, String, String)>,
}

/// Builds the signed URL, reading the object to hash it when the size and
/// hashes are not given.
pub fn mint(config: &Config, req: &MintRequest, now: u64) -> Result<String, String> {
    let keyring = Keyring::load(&config.keyring).map_err(|e| e.to_string())?;
    let store = StoreId::new(&req.store).map_err(|e| format!("--store {:?}: {e}", req.store))?;
    let image = parse_image_id(&req.image)
        .ok_or_else(|| format!("--image {:?} is not a lowercase hyphenated UUID", req.image))?;
    let (size, md5, sha512) = match &req.known {
        Some((size, md5, sha512)) => (
            *size,
            hex_array(md5, "--md5")?,
            hex_array(sha512, "--sha512")?,
        ),
        None => match config.stores.get(&store) {
            Some(StoreConfig::File { path, .. }) => {
                hash_file(&path.join(image.hyphenated().to_string()))?
            }
            Some(_) => {
                return Err(format!(
                    "store {store:?} is not a directory: give --size, --md5 and --sha512"
                ));
            }
            None => return Err(format!("no store {store:?} in the config")),
        },
    };
    let link = keyring.sign(LinkParams {
        image_id: image,
        store,
        size,
        md5,
        sha512,
        expires: now.saturating_add(req.ttl_secs),
        client_cidr: None,
    });
    Ok(link.url(&config.public_url))
}

fn hex_array<const N: usize>(s: &str, flag: &str) -> Result<[u8; N], String> {
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out)
        .map_err(|_| format!("{flag} must be {} hex digits", 2 * N))?;
    Ok(out)
}

fn hash_file(path: &std::path::Path) -> Result<(u64, [u8; 16], [u8; 64]), String> {
    let mut file =
        std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut md5 = md5::Md5::new();
    let mut sha = sha2::Sha512::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if n == 0 {
            break;
        }
        md5.update(&buf[..n]);
        sha.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, md5.finalize().into(), sha.finalize().into()))
}
