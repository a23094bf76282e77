//! `[listener.tls]`: the internal listener's certificate, key and client CAs.

use super::Validator;
use crate::file;
use crate::material::{self, PrivateKey};
use crate::model::ListenerTls;
use crate::report::Severity;

impl Validator {
    pub(super) fn listener_tls(&mut self, t: &file::ListenerTlsSection) -> Option<ListenerTls> {
        let cert_path = self.resolve(&t.cert);
        let key_path = self.resolve(&t.key);
        let certs = match material::read_certificates(&cert_path) {
            Ok(c) => c,
            Err(e) => {
                self.problem(Severity::Error, Some(&cert_path), "listener.tls.cert", e);
                return None;
            }
        };
        self.check_secret_permissions("listener.tls.key", &key_path);
        let key = match material::read_pem_key(&key_path) {
            Ok(k) => k,
            Err(e) => {
                self.problem(Severity::Error, Some(&key_path), "listener.tls.key", e);
                return None;
            }
        };
        let matches = certs[0].public_key().is_ok_and(|p| p.public_eq(&key));
        if !matches {
            self.problem(
                Severity::Error,
                Some(&key_path),
                "listener.tls.key",
                "the private key does not match listener.tls.cert".to_string(),
            );
            return None;
        }
        let mut client_cas_der = Vec::new();
        for (i, ca) in t.client_ca.iter().enumerate() {
            let path = self.resolve(ca);
            match material::read_certificates(&path) {
                Ok(cas) => client_cas_der.extend(cas.iter().filter_map(|c| c.to_der().ok())),
                Err(e) => self.problem(
                    Severity::Error,
                    Some(&path),
                    &format!("listener.tls.client_ca[{i}]"),
                    e,
                ),
            }
        }
        if t.require_client_certificate && t.client_ca.is_empty() {
            self.error(
                "listener.tls.require_client_certificate",
                "client certificates are required but listener.tls.client_ca names no CA",
            );
        }
        let chain_der = certs.iter().filter_map(|c| c.to_der().ok()).collect();
        let key = key
            .private_key_to_pkcs8()
            .map(|der| PrivateKey(zeroize::Zeroizing::new(der)))
            .map_err(|e| {
                self.problem(
                    Severity::Error,
                    Some(&key_path),
                    "listener.tls.key",
                    e.to_string(),
                )
            })
            .ok()?;
        Some(ListenerTls {
            chain_der,
            key,
            client_cas_der,
            require_client_certificate: t.require_client_certificate,
        })
    }
}
