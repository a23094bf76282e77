//! `passerelle token`: bearer tokens for internal clients (`[[clients]] token_sha256`)
//! and for the admin listener (`[admin] token_sha256`).
//!
//! - `token new` draws 32 bytes from OpenSSL's CSPRNG (`RAND_bytes`, seeded by the
//!   operating system) and prints the token once on stdout with the
//!   `token_sha256 = "<hex>"` line to paste (or a whole `[[clients]]` block with
//!   `--client NAME`); the guidance goes to stderr.
//! - `token hash` reads a token a client brings on stdin and prints the same line.
//!
//! The digest is what [`passerelle_proxy::access`] compares: SHA-256 of the bytes after
//! `Authorization: Bearer `, in lower-case hexadecimal (what `[[clients]] token_sha256`
//! parses).

use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;

use base64::Engine;

/// What every generated token starts with, so that a leaked one is easy to find
/// (secret scanners: `psl_[A-Za-z0-9_-]{43}`).
pub const PREFIX: &str = "psl_";
/// Random bytes in a token: 256 bits.
const RANDOM_BYTES: usize = 32;
/// Shorter tokens brought by a client are accepted by `token hash`, with a warning.
const WEAK_BELOW: usize = 32;

#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Make a new random token: print it once, and the `token_sha256` line to configure.
    New(NewArgs),
    /// Read a token from stdin (one line) and print its `token_sha256` line.
    Hash(HashArgs),
}

#[derive(Debug, clap::Args)]
pub struct NewArgs {
    /// Print a complete `[[clients]]` block for this client name (edit its sources,
    /// tenants and services before use).
    #[arg(long, value_name = "NAME")]
    client: Option<String>,
    /// Print one JSON object instead (`token`, `token_sha256`, and `toml` with --client).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct HashArgs {
    /// Print one JSON object instead (`token_sha256`).
    #[arg(long)]
    json: bool,
}

/// A new token: `psl_` and 32 random bytes in URL-safe base64 without padding (47
/// characters, `[A-Za-z0-9_-]` after the prefix: safe in HTTP headers, shells and TOML).
pub fn new_token() -> Result<String, openssl::error::ErrorStack> {
    let mut bytes = [0u8; RANDOM_BYTES];
    openssl::rand::rand_bytes(&mut bytes)?;
    Ok(format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// SHA-256 of the token's bytes, lower-case hex: the value of `token_sha256`.
pub fn token_sha256(token: &str) -> String {
    hex(&openssl::sha::sha256(token.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The line to paste into a `[[clients]]` block (or `[admin]`).
pub fn config_line(digest: &str) -> String {
    format!("token_sha256 = \"{digest}\"")
}

/// A `[[clients]]` block for `name`. Sources, tenants and services are left empty, so
/// `passerelle check` refuses the block until they are filled in: a skeleton never
/// admits anyone by accident.
pub fn client_block(name: &str, digest: &str) -> String {
    let name = toml::Value::String(name.to_string());
    format!(
        "[[clients]]\n\
         name = {name}\n\
         {line}\n\
         source_cidrs = []    # its addresses, e.g. [\"10.12.0.0/16\"]\n\
         tenants = []         # tenant ids it acts for, e.g. [\"chu-nantes\"]\n\
         services = []        # \"dmp\", \"dmp/<service>\", \"insi\", \"svc\", \"svc/<name>\"\n\
         # rate_per_second = 50\n",
        line = config_line(digest)
    )
}

/// Why `token hash` refuses a token: the proxy could never match it.
fn check_brought_token(token: &str) -> Result<(), String> {
    if token.is_empty() {
        return Err("no token on stdin".into());
    }
    // What survives an HTTP header and `Authorization: Bearer <token>` unchanged
    // (the proxy trims around the token and reads the header as visible ASCII).
    if let Some(c) = token.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!(
            "the token holds {}: a bearer token is visible ASCII, without spaces",
            if c.is_whitespace() {
                "a space or tab".to_string()
            } else if c.is_ascii_control() {
                "a control character".to_string()
            } else {
                "a non-ASCII character".to_string()
            }
        ));
    }
    Ok(())
}

/// The token of `token hash`'s input: one line, its line ending removed.
fn brought_token(input: &str) -> Result<&str, String> {
    let token = input
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(input);
    if token.contains('\n') {
        return Err("more than one line on stdin: give the token alone".into());
    }
    check_brought_token(token)?;
    Ok(token)
}

pub fn run(command: &TokenCommand) -> ExitCode {
    match command {
        TokenCommand::New(args) => new(args),
        TokenCommand::Hash(args) => hash(args),
    }
}

fn json_line(value: &serde_json::Value) -> String {
    format!("{value}\n")
}

/// Writes `out` on stdout and `note` on stderr; a failed stdout write is a failure
/// (the token would be lost).
fn emit(out: &str, note: &str) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
    {
        eprintln!("passerelle token: cannot write to stdout: {e}");
        return ExitCode::FAILURE;
    }
    if !note.is_empty() {
        eprint!("{note}");
    }
    ExitCode::SUCCESS
}

fn new(args: &NewArgs) -> ExitCode {
    if let Some(name) = &args.client
        && name.trim().is_empty()
    {
        eprintln!("passerelle token new: --client needs a name");
        return ExitCode::FAILURE;
    }
    let token = match new_token() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("passerelle token new: no random bytes from the system: {e}");
            return ExitCode::FAILURE;
        }
    };
    let digest = token_sha256(&token);
    let block = args.client.as_deref().map(|n| client_block(n, &digest));
    let out = if args.json {
        let mut v = serde_json::json!({ "token": token, "token_sha256": digest });
        if let Some(b) = &block {
            v["toml"] = serde_json::Value::String(b.clone());
        }
        json_line(&v)
    } else {
        let config = block.clone().unwrap_or_else(|| config_line(&digest) + "\n");
        format!("{token}\n{config}")
    };
    let note = if args.json {
        String::new()
    } else {
        let target = if block.is_some() {
            "the block above into the configuration (fill in source_cidrs, tenants and services)"
        } else {
            "the token_sha256 line into the client's [[clients]] block (or [admin])"
        };
        format!(
            "\nFirst line: the token. Store it in the client system's secret store now: it is \
             not shown again and Passerelle keeps only its SHA-256.\n\
             The client sends it as: Authorization: Bearer <token>\n\
             Paste {target}, then: passerelle check --config FILE (a running Passerelle \
             reloads by itself, or on SIGHUP).\n"
        )
    };
    emit(&out, &note)
}

fn hash(args: &HashArgs) -> ExitCode {
    let stdin = std::io::stdin();
    let mut input = String::new();
    let read = if stdin.is_terminal() {
        eprintln!("Token, then Enter (it is shown as typed; prefer a pipe from a secret store):");
        stdin.read_line(&mut input)
    } else {
        stdin.lock().read_to_string(&mut input)
    };
    if let Err(e) = read {
        eprintln!("passerelle token hash: cannot read stdin: {e}");
        return ExitCode::FAILURE;
    }
    let token = match brought_token(&input) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("passerelle token hash: {e}");
            return ExitCode::FAILURE;
        }
    };
    let digest = token_sha256(token);
    let note = if token.len() < WEAK_BELOW {
        format!(
            "warning: {} characters: a guessable token; `passerelle token new` makes 256-bit ones\n",
            token.len()
        )
    } else {
        String::new()
    };
    let out = if args.json {
        json_line(&serde_json::json!({ "token_sha256": digest }))
    } else {
        config_line(&digest) + "\n"
    };
    emit(&out, &note)
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use http::HeaderMap;
    use passerelle_proxy::access::{AccessPolicy, Service, TENANT_HEADER};

    use super::*;

    fn bearer(token: &str, tenant: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::AUTHORIZATION,
            format!("Bearer {token}").parse().expect("header value"),
        );
        h.insert(TENANT_HEADER, tenant.parse().expect("header value"));
        h
    }

    #[test]
    fn token_new_makes_distinct_prefixed_header_safe_tokens() {
        let a = new_token().expect("token");
        let b = new_token().expect("token");
        assert_ne!(a, b);
        for t in [&a, &b] {
            assert_eq!(t.len(), PREFIX.len() + 43, "{t}");
            let body = t.strip_prefix(PREFIX).expect("prefix");
            assert!(
                body.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'),
                "{t}"
            );
            let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(body)
                .expect("base64url");
            assert_eq!(raw.len(), 32);
            assert!(http::HeaderValue::from_str(&format!("Bearer {t}")).is_ok());
        }
        // The sandbox's documented pair (certs-test SANDBOX_TOKEN_SHA256).
        assert_eq!(
            token_sha256("sandbox-token"),
            passerelle_certs_test::SANDBOX_TOKEN_SHA256
        );
    }

    /// The sandbox configuration of the shared test PKI, with absolute paths, and the
    /// first tenant's id.
    fn sandbox() -> (String, String) {
        let m = passerelle_certs_test::shared_test_pki().expect("test PKI");
        let dir = m.dir.display().to_string();
        let text = std::fs::read_to_string(m.path(&m.config))
            .expect("sandbox config")
            .replace("\"ca/", &format!("\"{dir}/ca/"))
            .replace("\"tenants/", &format!("\"{dir}/tenants/"));
        (text, m.tenants[0].id.clone())
    }

    fn inspect(text: &str) -> passerelle_config::Inspection {
        let work = tempfile::tempdir().expect("tempdir");
        let path = work.path().join("passerelle.toml");
        std::fs::write(&path, text).expect("write");
        passerelle_config::inspect(&path)
    }

    /// The printed `[[clients]]` block, filled in, goes through the real configuration
    /// loader into the real access policy, and the printed token is admitted by it;
    /// another token is not.
    #[test]
    fn token_new_block_authenticates_through_the_configuration() {
        let (sandbox, tenant) = sandbox();
        let token = new_token().expect("token");
        let block = client_block("lab \"north\"", &token_sha256(&token))
            .replace("source_cidrs = []", "source_cidrs = [\"10.20.0.0/16\"]")
            .replace("tenants = []", &format!("tenants = [\"{tenant}\"]"))
            .replace("services = []", "services = [\"insi\"]");
        let inspection = inspect(&format!("{sandbox}\n{block}"));
        assert!(!inspection.has_errors(), "{:#?}", inspection.problems);
        let config = inspection.config.expect("config");
        let policy = AccessPolicy::new(config.clients);
        let source: IpAddr = "10.20.3.4".parse().expect("ip");
        let grant = policy
            .authorize(&bearer(&token, &tenant), source, None, Service::Insi)
            .expect("the new token is admitted");
        assert_eq!(grant.client, "lab \"north\"");
        assert_eq!(grant.tenant.as_str(), tenant);
        let other = new_token().expect("token");
        let refused = policy
            .authorize(&bearer(&other, &tenant), source, None, Service::Insi)
            .expect_err("another token is refused");
        assert_eq!(refused.code(), "UnknownClient");
    }

    /// The printed line, pasted into `[admin]`, configures the digest the admin
    /// listener compares with the SHA-256 of the bearer token it receives.
    #[test]
    fn token_new_line_configures_the_admin_token() {
        let (sandbox, _) = sandbox();
        let token = new_token().expect("token");
        assert_eq!(sandbox.matches("[admin]\n").count(), 1);
        let text = sandbox.replace(
            "[admin]\n",
            &format!("[admin]\n{}\n", config_line(&token_sha256(&token))),
        );
        let inspection = inspect(&text);
        assert!(!inspection.has_errors(), "{:#?}", inspection.problems);
        let config = inspection.config.expect("config");
        assert_eq!(
            config.admin_token_sha256,
            Some(openssl::sha::sha256(token.as_bytes()))
        );
    }

    /// Left as printed, the block is refused by `passerelle check`: a skeleton never
    /// admits anyone.
    #[test]
    fn token_new_block_unedited_is_refused_by_check() {
        let (sandbox, _) = sandbox();
        let block = client_block("dpi", &token_sha256("x"));
        let inspection = inspect(&format!("{sandbox}\n{block}"));
        assert!(inspection.has_errors());
        let fields: Vec<String> = inspection.problems.iter().map(|p| p.to_string()).collect();
        for key in ["tenants", "services"] {
            assert!(
                fields
                    .iter()
                    .any(|f| f.contains(&format!("].{key}: empty"))),
                "{key}: {fields:#?}"
            );
        }
    }

    #[test]
    fn token_hash_takes_one_line_of_visible_ascii() {
        assert_eq!(brought_token("abc\n"), Ok("abc"));
        assert_eq!(brought_token("abc\r\n"), Ok("abc"));
        assert_eq!(brought_token("abc"), Ok("abc"));
        assert!(brought_token("").is_err());
        assert!(brought_token("\n").is_err());
        assert!(brought_token("a\nb\n").is_err());
        assert!(brought_token("a b").is_err());
        assert!(brought_token(" ab").is_err());
        assert!(brought_token("é").is_err());
        assert!(brought_token("a\u{1b}b").is_err());
        assert_eq!(
            config_line(&token_sha256("sandbox-token")),
            format!(
                "token_sha256 = \"{}\"",
                passerelle_certs_test::SANDBOX_TOKEN_SHA256
            )
        );
    }
}
