//! Homologation capture (`[capture]`): the CNDA asks for the SOAP frames actually
//! exchanged with the DMP and INSi. While a capture is in force, every request of a
//! listed client (for a listed tenant, when tenants are listed) is written as it left
//! for the national service, and its answer as it came back, one file each:
//!
//! ```text
//! <dir>/<UTC date>/<request id>.request.http    request line, headers, body as sent
//! <dir>/<UTC date>/<request id>.response.http   status line, headers, body as received
//! <dir>/<UTC date>/<request id>.failure.txt     when no answer came: why, and whether sent
//! ```
//!
//! The request is captured in [`crate::upstream::UpstreamPool::send`], the one place
//! every route's request leaves (DMP, INSi over SOAP, each call of a JSON INSi search,
//! `[[services]]`): the bytes handed to the HTTP client, after VIHF signing, lot signing
//! and the WS-Addressing rewrite. Headers that carry a secret (`Authorization`,
//! `Proxy-Authorization`, `Cookie`) are left out. Bodies are bytes (MTOM included),
//! written as they are; an answer streamed past the buffered size is written as it
//! passes.
//!
//! The files hold patient data: folders are created 0700, files 0600 with `O_EXCL`
//! (never overwritten; a second request under one id, a JSON search's next INSi call or
//! a client reusing its `X-Request-Id`, gets `<id>.2`, `<id>.3`, ...). A folder that
//! group or others may write is refused. A capture that fails never fails the request:
//! it is logged (without patient data) and counted (`passerelle_capture_errors_total`).
//!
//! A capture is enabled by the configuration only (start or reload, never a request
//! header), checked per request against its `until`, and logged when it starts and when
//! it stops (its `until` reached, or the table removed or past at a reload).

use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use passerelle_config::Capture;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::exchange::Exchange;

/// Request headers never written to a capture: they carry credentials.
const SECRET_HEADERS: [&str; 3] = ["authorization", "proxy-authorization", "cookie"];

/// The longest file name stem kept from a request id.
const MAX_STEM: usize = 128;

/// How many names are tried for one request id (`<id>`, `<id>.2`, ...).
const MAX_SUFFIX: u32 = 1000;

/// `passerelle_capture_files_total` and `passerelle_capture_errors_total`.
#[derive(Debug, Default)]
pub struct CaptureCounters {
    pub files: AtomicU64,
    pub errors: AtomicU64,
}

impl CaptureCounters {
    fn failed(&self, what: &str, error: &io::Error) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        // The path names the request id only; the error never holds the bytes.
        tracing::warn!(what, error = %error, "capture write failed (the request goes on)");
    }
}

/// Where one upstream request of a captured exchange is written.
#[derive(Debug)]
pub struct Recorder {
    root: PathBuf,
    stem: String,
    counters: Arc<CaptureCounters>,
    /// `<root>/<date>/<stem>[.n]`, once the request file was created.
    base: OnceLock<PathBuf>,
}

impl Recorder {
    /// A recorder when `capture` applies to the exchange's client and tenant now.
    pub fn for_exchange(
        capture: Option<&Capture>,
        exchange: &Exchange,
        counters: &Arc<CaptureCounters>,
    ) -> Option<Self> {
        let capture = capture?;
        let client = exchange.client.as_deref()?;
        let tenant = exchange.tenant.as_ref()?;
        if !capture.applies(client, tenant, OffsetDateTime::now_utc()) {
            return None;
        }
        Some(Self {
            root: capture.dir.clone(),
            stem: file_stem(&exchange.request_id),
            counters: Arc::clone(counters),
            base: OnceLock::new(),
        })
    }

    /// Writes the request as handed to the HTTP client: `head` (method, target and
    /// headers) and `body`. Once per recorder; the write runs on the blocking pool.
    pub async fn request(
        &self,
        method: &http::Method,
        target: &str,
        headers: &http::HeaderMap,
        body: &[Bytes],
    ) {
        if self.base.get().is_some() {
            return;
        }
        let mut head = format!("{method} {target} HTTP/1.1\r\n").into_bytes();
        write_headers(&mut head, headers, true);
        let (root, stem, body) = (self.root.clone(), self.stem.clone(), body.to_vec());
        let written = tokio::task::spawn_blocking(move || {
            let dir = day_dir(&root)?;
            let (base, mut file) = reserve(&dir, &stem)?;
            file.write_all(&head)?;
            for chunk in &body {
                file.write_all(chunk)?;
            }
            Ok::<_, io::Error>(base)
        })
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e.to_string())));
        match written {
            Ok(base) => {
                self.counters.files.fetch_add(1, Ordering::Relaxed);
                let _ = self.base.set(base);
            }
            Err(e) => self.counters.failed("request", &e),
        }
    }

    /// Writes an answer read whole.
    pub async fn response(&self, parts: &http::response::Parts, body: &Bytes) {
        let Some(path) = self.path("response.http") else {
            return;
        };
        let mut bytes = response_head(parts);
        bytes.extend_from_slice(body);
        let written = tokio::task::spawn_blocking(move || new_file(&path)?.write_all(&bytes))
            .await
            .unwrap_or_else(|e| Err(io::Error::other(e.to_string())));
        self.done("response", written);
    }

    /// Starts writing a streamed answer: `head` (what was read before streaming), then
    /// each chunk sent to the returned [`Tee`] as it passes, on a blocking thread.
    pub fn streamed_response(&self, parts: &http::response::Parts, head: &[Bytes]) -> Option<Tee> {
        let path = self.path("response.http")?;
        let mut first = response_head(parts);
        head.iter().for_each(|c| first.extend_from_slice(c));
        let (tx, rx) = std::sync::mpsc::channel::<Bytes>();
        let counters = Arc::clone(&self.counters);
        tokio::task::spawn_blocking(move || {
            let written = (|| {
                let mut file = new_file(&path)?;
                file.write_all(&first)?;
                // Ends when the body ends (or is dropped): the sender goes away.
                while let Ok(chunk) = rx.recv() {
                    file.write_all(&chunk)?;
                }
                Ok::<_, io::Error>(())
            })();
            match written {
                Ok(()) => {
                    counters.files.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => counters.failed("response", &e),
            }
        });
        Some(Tee(tx))
    }

    /// Writes why no answer came, and whether the request may have been sent.
    pub async fn failure(&self, reason: &str, sent: bool) {
        let Some(path) = self.path("failure.txt") else {
            return;
        };
        let text = format!(
            "no answer: {reason}\nsent upstream: {}\n",
            if sent { "yes (or maybe)" } else { "no" }
        );
        let written =
            tokio::task::spawn_blocking(move || new_file(&path)?.write_all(text.as_bytes()))
                .await
                .unwrap_or_else(|e| Err(io::Error::other(e.to_string())));
        self.done("failure", written);
    }

    /// The file of `kind` beside the request's; `None` when the request was not captured.
    fn path(&self, kind: &str) -> Option<PathBuf> {
        let base = self.base.get()?;
        let mut name = base.file_name()?.to_os_string();
        name.push(".");
        name.push(kind);
        Some(base.with_file_name(name))
    }

    fn done(&self, what: &str, written: io::Result<()>) {
        match written {
            Ok(()) => {
                self.counters.files.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => self.counters.failed(what, &e),
        }
    }
}

/// The rest of a streamed answer, on its way to the capture file.
#[derive(Debug)]
pub struct Tee(std::sync::mpsc::Sender<Bytes>);

impl Tee {
    pub fn chunk(&self, data: &Bytes) {
        // The writer stopped (a failed write, counted there): the answer goes on.
        let _ = self.0.send(data.clone());
    }
}

/// A request id as a file name: letters, digits, `-` and `_` kept, anything else
/// (`/`, `.`, ...) replaced by `_`: a client's `X-Request-Id` names no other folder.
fn file_stem(request_id: &str) -> String {
    let stem: String = request_id
        .chars()
        .take(MAX_STEM)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if stem.is_empty() {
        "request".into()
    } else {
        stem
    }
}

/// `<root>/<UTC date>`, created 0700 (the root too, when missing); a root that group or
/// others may write is refused, as the audit trail's folder is.
fn day_dir(root: &Path) -> io::Result<PathBuf> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(root)?;
    if let Some(mode) = passerelle_config::shared_write_mode(root)? {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is writable by group or others (mode {mode:04o}): nothing captured; run `chmod 700` on it",
                root.display()
            ),
        ));
    }
    let date = OffsetDateTime::now_utc().date();
    let dir = root.join(date.to_string());
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => Ok(dir),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(dir),
        Err(e) => Err(e),
    }
}

/// A file of its own, 0600, that did not exist (`O_EXCL`: a link planted there is not
/// followed, nothing is overwritten).
fn new_file(path: &Path) -> io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// The first free `<stem>[.n].request.http` in `dir`, created; its base path.
fn reserve(dir: &Path, stem: &str) -> io::Result<(PathBuf, std::fs::File)> {
    for n in 1..=MAX_SUFFIX {
        let name = if n == 1 {
            stem.to_string()
        } else {
            format!("{stem}.{n}")
        };
        let base = dir.join(&name);
        match new_file(&dir.join(format!("{name}.request.http"))) {
            Ok(file) => return Ok((base, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("{MAX_SUFFIX} captures under one request id already"),
    ))
}

fn write_headers(out: &mut Vec<u8>, headers: &http::HeaderMap, request: bool) {
    for (name, value) in headers {
        if request && SECRET_HEADERS.contains(&name.as_str()) {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

fn response_head(parts: &http::response::Parts) -> Vec<u8> {
    let mut head = format!(
        "{:?} {} {}\r\n",
        parts.version,
        parts.status.as_u16(),
        parts.status.canonical_reason().unwrap_or("")
    )
    .into_bytes();
    write_headers(&mut head, &parts.headers, false);
    head
}

/// Says when a capture starts and stops, and stops it at its `until` (the per-request
/// check does; a timer logs it once). One per proxy, across reloads.
#[derive(Debug, Default)]
pub struct CaptureControl {
    /// Bumped each time the capture in force changes: a timer of an older one is stale.
    generation: Arc<AtomicU64>,
}

impl CaptureControl {
    /// Called with the capture before and after a (re)load (`None` before the first).
    pub fn announce(&self, before: Option<&Capture>, after: Option<&Capture>) {
        let now = OffsetDateTime::now_utc();
        let was = before.filter(|c| c.active(now));
        let is = after.filter(|c| c.active(now));
        match (was, is) {
            (None, None) => {}
            (Some(a), Some(b)) if a == b => {}
            (_, Some(c)) => {
                let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
                tracing::info!(
                    clients = ?c.clients.iter().collect::<Vec<_>>(),
                    tenants = ?c.tenants.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    until = %rfc3339(c.until),
                    dir = %c.dir.display(),
                    replaces = was.is_some(),
                    "capture started: the listed clients' exchanges are written with patient data; delete the files after the homologation"
                );
                self.stop_at(generation, c);
            }
            (Some(c), None) => {
                self.generation.fetch_add(1, Ordering::SeqCst);
                // Only a reload has a capture before.
                let reason = match after {
                    None => "[capture] removed by reload",
                    Some(_) => "until in the past",
                };
                tracing::info!(reason, dir = %c.dir.display(), "capture stopped");
            }
        }
    }

    /// Logs the stop once `until` is reached, unless another capture replaced this one.
    fn stop_at(&self, generation: u64, capture: &Capture) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let current = Arc::clone(&self.generation);
        let (until, dir) = (capture.until, capture.dir.clone());
        runtime.spawn(async move {
            loop {
                let left = until - OffsetDateTime::now_utc();
                match std::time::Duration::try_from(left) {
                    Ok(d) if !d.is_zero() => tokio::time::sleep(d).await,
                    _ => break,
                }
            }
            if current.load(Ordering::SeqCst) == generation {
                tracing::info!(
                    until = %rfc3339(until),
                    dir = %dir.display(),
                    "capture stopped (until reached)"
                );
            }
        });
    }
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_id_names_no_other_folder() {
        assert_eq!(file_stem("../../etc/passwd"), "______etc_passwd");
        assert_eq!(file_stem("abc-DEF_1"), "abc-DEF_1");
        assert_eq!(file_stem(""), "request");
        assert_eq!(file_stem(&"x".repeat(500)).len(), MAX_STEM);
    }

    #[test]
    fn files_are_private_never_overwritten_and_secrets_left_out() {
        use std::os::unix::fs::PermissionsExt;
        let scratch = tempfile::tempdir().expect("tempdir");
        let root = scratch.path().join("capture");
        let dir = day_dir(&root).expect("day dir");
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(&dir), 0o700);
        let (first, _) = reserve(&dir, "id").expect("first");
        let (second, _) = reserve(&dir, "id").expect("second");
        assert_eq!(first, dir.join("id"));
        assert_eq!(second, dir.join("id.2"));
        assert_eq!(mode(&dir.join("id.request.http")), 0o600);
        assert!(new_file(&dir.join("id.request.http")).is_err(), "O_EXCL");

        let mut headers = http::HeaderMap::new();
        headers.insert("authorization", http::HeaderValue::from_static("Bearer s"));
        headers.insert("content-type", http::HeaderValue::from_static("text/xml"));
        let mut out = Vec::new();
        write_headers(&mut out, &headers, true);
        assert_eq!(out, b"content-type: text/xml\r\n\r\n");

        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let e = day_dir(&root).expect_err("shared");
        assert!(e.to_string().contains("writable by group or others"), "{e}");
    }
}
