//! HTTPS for glance-api, and the throw-away certificate authority that
//! `quickstart --tls` (and the test suites) issue certificates from.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

/// A certificate authority made on the spot: its key lives in memory only,
/// so nothing it issued can be re-signed after the process ends.
pub struct ThrowawayCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, PEM-encoded.
pub struct Issued {
    /// The certificate, then the CA's (a chain a server can present).
    pub chain_pem: String,
    /// The private key (PKCS#8).
    pub key_pem: String,
}

/// How long an issued certificate is valid, around now.
#[derive(Debug, Clone, Copy)]
pub enum Validity {
    /// From a day ago for `days` days.
    Days(u32),
    /// Expired: valid from 30 days ago until yesterday.
    Expired,
}

fn tls_error(e: rcgen::Error) -> String {
    format!("cannot make a certificate: {e}")
}

impl ThrowawayCa {
    /// A new CA named `name`, valid for ten years.
    pub fn new(name: &str) -> Result<ThrowawayCa, String> {
        let key = KeyPair::generate().map_err(tls_error)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(tls_error)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(3650);
        let issuer = CertifiedIssuer::self_signed(params, key).map_err(tls_error)?;
        Ok(ThrowawayCa { issuer })
    }

    /// The CA certificate (what clients trust: `OS_CACERT`, `--cacert`).
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// Issues a server certificate for `names` (DNS names or IP addresses).
    pub fn issue(&self, names: &[&str], validity: Validity) -> Result<Issued, String> {
        let key = KeyPair::generate().map_err(tls_error)?;
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).map_err(tls_error)?;
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().map_or("server", |n| n));
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let now = time::OffsetDateTime::now_utc();
        let (from, until) = match validity {
            Validity::Days(days) => (
                now - time::Duration::days(1),
                now + time::Duration::days(i64::from(days)),
            ),
            Validity::Expired => (
                now - time::Duration::days(30),
                now - time::Duration::days(1),
            ),
        };
        params.not_before = from;
        params.not_after = until;
        let cert = params.signed_by(&key, &self.issuer).map_err(tls_error)?;
        Ok(Issued {
            chain_pem: format!("{}{}", cert.pem(), self.pem()),
            key_pem: key.serialize_pem(),
        })
    }
}

impl Issued {
    /// Writes the chain to `DIR/NAME.pem` and the key to `DIR/NAME-key.pem`
    /// (mode 0600); returns both paths.
    pub fn write(&self, dir: &Path, name: &str) -> std::io::Result<(PathBuf, PathBuf)> {
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}-key.pem"));
        std::fs::write(&cert, &self.chain_pem)?;
        glance_link::write_private_file(&key, &self.key_pem, "tmp")?;
        Ok((cert, key))
    }
}
