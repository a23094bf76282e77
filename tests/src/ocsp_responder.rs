//! A real OCSP responder for the tests: `openssl ocsp` serving an index of the test
//! PKI's certificates, and the stapled answers a server sends, made the same way.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use passerelle_certs_test::Manifest;

/// `openssl ocsp` answering from an index file, killed on drop.
#[derive(Debug)]
pub struct Responder {
    child: Child,
    port: u16,
}

impl Drop for Responder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Responder {
    /// `entries`: (certificate file, revoked) written to the index; any other
    /// certificate is unknown to the responder. For the ORG intermediate's
    /// certificates (the tenants'), signed by it.
    pub fn start(pki: &Manifest, dir: &Path, entries: &[(&Path, bool)]) -> Self {
        let org = pki.path(&pki.ca.org_intermediate);
        let key = pki.path(&pki.ca.org_intermediate_key);
        Self::signed_by(dir, entries, &org, &org, &key)
    }

    /// For the SERV SSL intermediate's certificates (the mock services'), signed by it.
    pub fn servers(pki: &Manifest, dir: &Path, entries: &[(&Path, bool)]) -> Self {
        let ca = pki.path(&pki.ca.server_intermediate);
        let key = pki.path(&pki.ca.server_intermediate_key);
        Self::signed_by(dir, entries, &ca, &ca, &key)
    }

    /// For `ca`'s certificates, its answers signed by `signer` / `key`.
    pub fn signed_by(
        dir: &Path,
        entries: &[(&Path, bool)],
        ca: &Path,
        signer: &Path,
        key: &Path,
    ) -> Self {
        let index = write_index(dir, entries);
        let port = crate::free_port();
        let mut child = Command::new("openssl")
            .args(["ocsp", "-port", &port.to_string(), "-index"])
            .arg(&index)
            .arg("-CA")
            .arg(ca)
            .arg("-rsigner")
            .arg(signer)
            .arg("-rkey")
            .arg(key)
            .arg("-ignore_err")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("openssl ocsp");
        // Ready once it says so: a connection made only to probe the port would hold
        // its single-threaded loop (it waits on that connection for a request).
        let (tx, rx) = std::sync::mpsc::channel();
        for pipe in [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let tx = tx.clone();
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                    if line.contains("waiting for OCSP client connections") {
                        let _ = tx.send(());
                    }
                }
            });
        }
        rx.recv_timeout(Duration::from_secs(10))
            .expect("openssl ocsp did not start");
        Self { child, port }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }
}

/// The serial (hexadecimal) and subject (`/C=FR/...`) as the index wants them.
fn serial_and_subject(cert: &Path) -> (String, String) {
    let o = Command::new("openssl")
        .args([
            "x509", "-noout", "-serial", "-subject", "-nameopt", "compat", "-in",
        ])
        .arg(cert)
        .output()
        .expect("openssl x509");
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let serial = out
        .lines()
        .find_map(|l| l.strip_prefix("serial="))
        .expect("serial")
        .trim()
        .to_string();
    let subject = out
        .lines()
        .find_map(|l| l.strip_prefix("subject="))
        .expect("subject")
        .trim()
        .to_string();
    (serial, subject)
}

/// An index in `openssl ca`'s format: each (certificate file, revoked).
fn write_index(dir: &Path, entries: &[(&Path, bool)]) -> PathBuf {
    let index = dir.join(format!("index-{}.txt", uuid::Uuid::new_v4().simple()));
    let mut lines = String::new();
    for (cert, revoked) in entries {
        let (serial, subject) = serial_and_subject(cert);
        // status, expiry, revocation date, serial, file name, subject (ca(1)'s index).
        if *revoked {
            lines.push_str(&format!(
                "R\t491231235959Z\t251201000000Z,keyCompromise\t{serial}\tunknown\t{subject}\n"
            ));
        } else {
            lines.push_str(&format!(
                "V\t491231235959Z\t\t{serial}\tunknown\t{subject}\n"
            ));
        }
    }
    std::fs::write(&index, lines).expect("index");
    std::fs::write(
        dir.join(format!("{}.attr", index.display())),
        "unique_subject = no\n",
    )
    .expect("attr");
    index
}

/// A DER OCSP response about `cert` from `ca`'s index `entries`, signed by `ca` (`key`),
/// valid a day: what a server staples.
pub fn staple(
    dir: &Path,
    entries: &[(&Path, bool)],
    ca: &Path,
    key: &Path,
    cert: &Path,
) -> Vec<u8> {
    let index = write_index(dir, entries);
    let out = dir.join(format!("staple-{}.der", uuid::Uuid::new_v4().simple()));
    let o = Command::new("openssl")
        .args(["ocsp", "-index"])
        .arg(&index)
        .arg("-CA")
        .arg(ca)
        .arg("-rsigner")
        .arg(ca)
        .arg("-rkey")
        .arg(key)
        .arg("-issuer")
        .arg(ca)
        .arg("-cert")
        .arg(cert)
        .args(["-ndays", "1", "-respout"])
        .arg(&out)
        .output()
        .expect("openssl ocsp");
    assert!(
        o.status.success(),
        "openssl ocsp: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::read(&out).expect("the staple")
}
