//! A SoftHSM2 token store of the test's own, in a temporary folder: tokens initialised
//! and keys imported with SoftHSM's own `softhsm2-util`, objects read back with OpenSC's
//! `pkcs11-tool`, the store handed to a process through `SOFTHSM2_CONF` (SoftHSM reads
//! no other setting, and only when a process first initialises it).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Debian's SoftHSM2 module (package `softhsm2`).
pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// The user PIN of every test token.
pub const USER_PIN: &str = "4711-passerelle";
const SO_PIN: &str = "so-4711-passerelle";

/// Whether SoftHSM2 and its tools are installed (`scripts/install-deps.sh` does it).
pub fn available() -> bool {
    Path::new(MODULE).is_file()
        && Command::new("softhsm2-util")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
}

/// Process id, time and a counter: no two stores of one machine share a folder.
fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{}-{nanos}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A token store, removed on drop.
#[derive(Debug)]
pub struct SoftHsm {
    pub dir: PathBuf,
    /// The SoftHSM configuration (`SOFTHSM2_CONF`).
    pub conf: PathBuf,
    /// Where SoftHSM keeps the tokens (one folder each).
    pub tokens: PathBuf,
}

impl Drop for SoftHsm {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Default for SoftHsm {
    fn default() -> Self {
        Self::new()
    }
}

impl SoftHsm {
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("passerelle-softhsm-{}", unique()));
        let tokens = dir.join("tokens");
        std::fs::create_dir_all(&tokens).expect("token folder");
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = true\n",
                tokens.display()
            ),
        )
        .expect("softhsm2.conf");
        Self { dir, conf, tokens }
    }

    /// The environment a process needs to see this store.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![("SOFTHSM2_CONF".into(), self.conf.display().to_string())]
    }

    /// Runs a command with this store, panicking with its output when it fails.
    fn tool(&self, program: &str, args: &[&str]) -> Output {
        let output = Command::new(program)
            .env("SOFTHSM2_CONF", &self.conf)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{program}: {e} (install softhsm2 and opensc)"));
        assert!(
            output.status.success(),
            "{program} {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    /// OpenSC's `pkcs11-tool` on `token`, logged in with [`USER_PIN`].
    fn opensc(&self, token: &str, args: &[&str]) -> Output {
        let mut all = vec![
            "--module",
            MODULE,
            "--token-label",
            token,
            "--login",
            "--pin",
            USER_PIN,
        ];
        all.extend_from_slice(args);
        self.tool("pkcs11-tool", &all)
    }

    /// A new token labelled `label`, with [`USER_PIN`].
    pub fn init_token(&self, label: &str) {
        self.tool(
            "softhsm2-util",
            &[
                "--init-token",
                "--free",
                "--label",
                label,
                "--so-pin",
                SO_PIN,
                "--pin",
                USER_PIN,
            ],
        );
    }

    /// Imports a PKCS#8 PEM private key (and its public half) under `label` / `id` (hex).
    pub fn import_key(&self, token: &str, key_pem: &Path, label: &str, id: &str) {
        self.tool(
            "softhsm2-util",
            &[
                "--import",
                &key_pem.display().to_string(),
                "--token",
                token,
                "--label",
                label,
                "--id",
                id,
                "--pin",
                USER_PIN,
            ],
        );
    }

    /// Stores a PEM certificate in the token (OpenSC's `pkcs11-tool`, converted to DER by
    /// OpenSSL) under `label` / `id` (hex), beside the key of that label and id.
    pub fn import_certificate(&self, token: &str, cert_pem: &Path, label: &str, id: &str) {
        let der = self.dir.join(format!("cert-{}.der", unique()));
        let der_arg = der.display().to_string();
        self.tool(
            "openssl",
            &[
                "x509",
                "-in",
                &cert_pem.display().to_string(),
                "-outform",
                "DER",
                "-out",
                &der_arg,
            ],
        );
        self.opensc(
            token,
            &[
                "--write-object",
                &der_arg,
                "--type",
                "cert",
                "--label",
                label,
                "--id",
                id,
            ],
        );
        let _ = std::fs::remove_file(&der);
    }

    /// OpenSC's listing of a token's objects (logged in), for independent checks.
    pub fn list_objects(&self, token: &str) -> String {
        let output = self.opensc(token, &["--list-objects"]);
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The public key object with CKA_ID `id` (hex), DER SubjectPublicKeyInfo, as OpenSC
    /// reads it.
    pub fn public_key_der(&self, token: &str, id: &str) -> Vec<u8> {
        let out = self.dir.join(format!("pub-{}.der", unique()));
        self.tool(
            "pkcs11-tool",
            &[
                "--module",
                MODULE,
                "--token-label",
                token,
                "--read-object",
                "--type",
                "pubkey",
                "--id",
                id,
                "--output-file",
                &out.display().to_string(),
            ],
        );
        let der = std::fs::read(&out).expect("public key read by pkcs11-tool");
        let _ = std::fs::remove_file(&out);
        der
    }

    /// A PIN file (mode 0600) holding `pin`.
    pub fn pin_file(&self, pin: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.dir.join(format!("pin-{}", unique()));
        std::fs::write(&path, format!("{pin}\n")).expect("PIN file");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
        path
    }

    /// Takes every token away (their folder moved aside), as pulling an HSM's cable does.
    pub fn remove_tokens(&self) {
        std::fs::rename(&self.tokens, self.dir.join("tokens-away")).expect("move tokens away");
    }

    /// Puts the tokens taken by [`Self::remove_tokens`] back.
    pub fn restore_tokens(&self) {
        std::fs::rename(self.dir.join("tokens-away"), &self.tokens).expect("move tokens back");
    }
}
