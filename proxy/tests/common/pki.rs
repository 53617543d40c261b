//! A certificate authority made by the test, the files a TLS server reads,
//! and a client that trusts that CA alone.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::Arc;

use glance_api::tls::{ThrowawayCa, Validity};

/// A CA, its certificate in a file, and a directory for the node's files.
pub struct Pki {
    pub ca: ThrowawayCa,
    pub dir: tempfile::TempDir,
    pub ca_file: PathBuf,
}

impl Pki {
    pub fn new() -> Pki {
        let ca = ThrowawayCa::new("glance-stream test CA").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).unwrap();
        Pki { ca, dir, ca_file }
    }

    /// Issues a certificate for the loopback address into `server.pem` and
    /// `server-key.pem` (replacing what is there, as a renewal does).
    pub fn issue(&self, validity: Validity) -> String {
        let issued = self
            .ca
            .issue(&["127.0.0.1", "localhost"], validity)
            .unwrap();
        issued.write(self.dir.path(), "server").unwrap();
        issued.chain_pem
    }

    /// The `[tls]` table naming the files `issue` writes.
    pub fn table(&self) -> String {
        let d = self.dir.path().display();
        format!("[tls]\ncert = \"{d}/server.pem\"\nkey = \"{d}/server-key.pem\"\n")
    }

    /// A rustls client trusting this CA only.
    pub fn client(&self) -> Arc<rustls::ClientConfig> {
        glance_link::tls::client_config(Some(&self.ca_file)).unwrap()
    }
}

impl Pki {
    /// The certificate chain and key `issue` wrote.
    pub fn files(&self) -> (PathBuf, PathBuf) {
        (
            self.dir.path().join("server.pem"),
            self.dir.path().join("server-key.pem"),
        )
    }
}
