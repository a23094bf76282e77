//! The audit trail: one JSON line per upstream exchange, the record of every access the
//! establishment is legally responsible for (domain.md §1). It is not the log: it holds
//! the acting person and the patient, and lives in its own file.
//!
//! One writer thread owns the file. Requests hand it their line and wait until it is
//! written and flushed (and fsynced when configured) before their answer leaves, so no
//! answered exchange is missing from the trail. Lines waiting together are written in
//! one batch. Rotation (by size, or when the day changes) renames the file between two
//! lines and opens a new one: no line is lost or split.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use serde::Serialize;
use time::OffsetDateTime;
use tokio::sync::oneshot;

/// One upstream exchange.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AuditRecord {
    /// RFC 3339, UTC.
    pub time: String,
    /// The Passerelle instance that wrote it (`audit.instance`, default the host name):
    /// replicas each keep their own trail.
    pub instance: String,
    pub request_id: String,
    /// WS-Addressing MessageID sent upstream.
    pub message_id: String,
    pub client: String,
    pub tenant: String,
    /// Structure id the request acted under (VIHF `Identifiant_Structure`; INSi: Emetteur).
    pub structure: String,
    /// `dmp/<service>` or `insi`.
    pub service: String,
    /// WS-Addressing Action (DMP) or INSi operation.
    pub action: String,
    /// National id of the acting person (VIHF `NameID`); empty for INSi.
    pub actor_id: String,
    /// INSi: `auto` or `manu`, the certificate the call used; empty for the DMP.
    pub insi_mode: String,
    /// The patient's INS, 15 characters (NIR + key), whatever the service: DMP, the
    /// VIHF resource-id; INSi, the INS returned, if any.
    pub patient_ins: String,
    /// The OID of the INS's namespace (`1.2.250.1.213.1.4.8` NIR, `.4.10` test NIR,
    /// `.4.9` NIA); empty when there is no INS.
    pub patient_ins_oid: String,
    /// DMP: the VIHF `purposeofuse` (`normal`, `bris_de_glace` for break-glass access,
    /// `centre_15`); empty for INSi.
    pub purpose: String,
    /// `ok`, `upstream_fault`, or the passerelle fault code.
    pub outcome: String,
    /// HTTP status of the upstream answer; 0 when there was none.
    pub upstream_status: u16,
    pub latency_ms: u64,
}

/// When to start a new file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// Rotate before a line would take the file past this size (0: never by size).
    pub max_bytes: u64,
    /// Rotate at the first line of a new day (UTC).
    pub daily: bool,
}

enum Job {
    Line(String, oneshot::Sender<io::Result<()>>),
}

/// Handle to the writer thread; cloning shares the same file.
#[derive(Debug, Clone)]
pub struct AuditTrail {
    tx: mpsc::Sender<Job>,
    path: PathBuf,
}

struct Writer {
    path: PathBuf,
    file: File,
    size: u64,
    day: time::Date,
    rotation: Rotation,
    fsync: bool,
}

/// Refuses a file or folder others may write: anyone who can write the trail can
/// forge or erase who accessed which patient.
/// (The same rule `passerelle check` applies, from the configuration crate.)
fn refuse_shared_write(path: &Path) -> io::Result<()> {
    if let Some(mode) = passerelle_config::shared_write_mode(path)? {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is writable by group or others (mode {mode:04o}): chmod go-w it (the audit trail is the record of who accessed which patient)",
                path.display(),
            ),
        ));
    }
    Ok(())
}

/// Opens the trail for appending: folder created 0700, file 0600 (patient identifiers
/// are in it); an existing folder or file others may write is refused.
fn open(path: &Path) -> io::Result<(File, u64)> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        refuse_shared_write(dir)?;
    }
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    refuse_shared_write(path)?;
    let size = file.metadata()?.len();
    Ok((file, size))
}

impl Writer {
    fn rotate_if_needed(&mut self, next: u64, now: OffsetDateTime) -> io::Result<()> {
        let by_size = self.rotation.max_bytes > 0
            && self.size > 0
            && self.size + next > self.rotation.max_bytes;
        let by_day = self.rotation.daily && now.date() != self.day && self.size > 0;
        if !(by_size || by_day) {
            self.day = now.date();
            return Ok(());
        }
        self.file.sync_all()?;
        let stamp = format!(
            "{:04}{:02}{:02}T{:02}{:02}{:02}",
            now.year(),
            u8::from(now.month()),
            now.day(),
            now.hour(),
            now.minute(),
            now.second()
        );
        let mut target = self.path.with_extension(format!("{stamp}.jsonl"));
        let mut n = 1;
        while target.exists() {
            target = self.path.with_extension(format!("{stamp}-{n}.jsonl"));
            n += 1;
        }
        std::fs::rename(&self.path, &target)?;
        let (file, size) = open(&self.path)?;
        self.file = file;
        self.size = size;
        self.day = now.date();
        Ok(())
    }

    fn write_batch(&mut self, lines: &[String]) -> io::Result<()> {
        for line in lines {
            self.rotate_if_needed(line.len() as u64 + 1, OffsetDateTime::now_utc())?;
            // One write per line: a line is never split across files.
            let mut buf = Vec::with_capacity(line.len() + 1);
            buf.extend_from_slice(line.as_bytes());
            buf.push(b'\n');
            self.file.write_all(&buf)?;
            self.size += buf.len() as u64;
        }
        self.file.flush()?;
        if self.fsync {
            self.file.sync_data()?;
        }
        Ok(())
    }
}

impl AuditTrail {
    /// Opens (appending) or creates the trail and starts its writer thread.
    pub fn open(path: &Path, rotation: Rotation, fsync: bool) -> io::Result<Self> {
        let (file, size) = open(path)?;
        let mut writer = Writer {
            path: path.to_path_buf(),
            file,
            size,
            day: OffsetDateTime::now_utc().date(),
            rotation,
            fsync,
        };
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("passerelle-audit".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut jobs = vec![first];
                    while let Ok(more) = rx.try_recv() {
                        jobs.push(more);
                    }
                    let (lines, acks): (Vec<String>, Vec<_>) =
                        jobs.into_iter().map(|Job::Line(l, a)| (l, a)).unzip();
                    let result = writer.write_batch(&lines);
                    for ack in acks {
                        let _ = ack.send(match &result {
                            Ok(()) => Ok(()),
                            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
                        });
                    }
                }
                // Every sender is gone: the last lines were flushed with their batch.
            })?;
        Ok(Self {
            tx,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record; returns once it is written and flushed.
    pub async fn record(&self, record: &AuditRecord) -> io::Result<()> {
        let line = serde_json::to_string(record).map_err(io::Error::other)?;
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Job::Line(line, ack))
            .map_err(|_| io::Error::other("audit writer stopped"))?;
        done.await
            .map_err(|_| io::Error::other("audit writer stopped"))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_flushed_and_rotation_loses_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit").join("passerelle-audit.jsonl");
        let trail = AuditTrail::open(
            &path,
            Rotation {
                max_bytes: 2_000,
                daily: true,
            },
            false,
        )
        .expect("open");
        let mut tasks = Vec::new();
        for i in 0..200 {
            let trail = trail.clone();
            tasks.push(tokio::spawn(async move {
                let record = AuditRecord {
                    request_id: format!("r{i}"),
                    outcome: "ok".into(),
                    ..AuditRecord::default()
                };
                trail.record(&record).await.expect("recorded");
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        let mut ids = Vec::new();
        let mut files = 0;
        for entry in std::fs::read_dir(path.parent().expect("dir")).expect("dir") {
            let text = std::fs::read_to_string(entry.expect("entry").path()).expect("read");
            files += 1;
            assert!(text.len() <= 2_000, "rotated before passing the size");
            for line in text.lines() {
                let v: serde_json::Value = serde_json::from_str(line).expect("whole JSON line");
                ids.push(v["request_id"].as_str().expect("id").to_string());
            }
        }
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 200, "every line once");
        assert!(files > 5, "rotated by size: {files} files");
    }

    #[test]
    fn trail_is_private_and_shared_write_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit/trail.jsonl");
        let (_file, _) = open(&path).expect("open");
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().expect("dir")), 0o700);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        let err = open(&path).expect_err("world-writable file");
        assert!(
            err.to_string().contains("writable by group or others"),
            "{err}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let parent = path.parent().expect("dir");
        std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        assert!(open(&path).is_err(), "world-writable folder");
    }
}
