//! The file sink: one JSON line per record in a JSONL file.
//!
//! One writer thread owns the file. Requests hand it their line and wait until it is
//! written and flushed (and fsynced when configured) before their answer leaves, so no
//! answered exchange is missing from the trail. Lines waiting together are written in
//! one batch. Rotation (by size, or when the day changes) renames the file between two
//! lines and opens a new one: no line is lost or split. The chain (see the module
//! above) runs across rotations and restarts; [`verify`] checks a sequence of files.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use time::OffsetDateTime;
use tokio::sync::oneshot;

use super::{AuditRecord, Broken, Chain, GENESIS, Place, Verified, chained, hex};

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
pub struct FileTrail {
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
    /// SHA-256 of the last line written: the next one's `prev_sha256`.
    last_hash: [u8; 32],
    /// Lines written since start, for the chain head's log line.
    written: u64,
}

/// The last line of a file (without its newline), read from the end.
fn last_line(path: &Path) -> io::Result<Option<Vec<u8>>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let mut tail = Vec::new();
    let mut chunk = 64 * 1024u64;
    loop {
        let start = len.saturating_sub(chunk);
        file.seek(SeekFrom::Start(start))?;
        tail.clear();
        file.read_to_end(&mut tail)?;
        let body = tail.strip_suffix(b"\n").unwrap_or(&tail);
        if let Some(i) = body.iter().rposition(|b| *b == b'\n') {
            return Ok(Some(body[i + 1..].to_vec()));
        }
        if start == 0 {
            return Ok((!body.is_empty()).then(|| body.to_vec()));
        }
        chunk *= 4;
    }
}

/// The rotated files of the trail at `path`, oldest first (their names carry the UTC
/// time of the rotation).
pub fn rotated_files(path: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(stem)) = (path.parent(), path.file_stem().and_then(|s| s.to_str())) else {
        return Vec::new();
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    // Only names the rotation writes (`<stem>.<YYYYMMDD>T<HHMMSS>[-<n>].jsonl`): an
    // operator's copy beside the trail is not part of it.
    let rotated = |name: &str| {
        let Some(middle) = name
            .strip_prefix(&format!("{stem}."))
            .and_then(|n| n.strip_suffix(".jsonl"))
        else {
            return false;
        };
        let (time, n) = middle.split_once('-').unwrap_or((middle, "0"));
        let b = time.as_bytes();
        b.len() == 15
            && b[8] == b'T'
            && b.iter()
                .enumerate()
                .all(|(i, c)| i == 8 || c.is_ascii_digit())
            && !n.is_empty()
            && n.bytes().all(|c| c.is_ascii_digit())
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(rotated))
        .collect();
    // `<stem>.<UTC time>.jsonl`, then `<stem>.<UTC time>-<n>.jsonl` for more rotations
    // within the same second: by time, then n.
    files.sort_by_key(|p| {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let middle = name
            .strip_prefix(&format!("{stem}."))
            .and_then(|n| n.strip_suffix(".jsonl"))
            .unwrap_or("");
        match middle.split_once('-') {
            Some((time, n)) => (time.to_string(), n.parse::<u64>().unwrap_or(u64::MAX)),
            None => (middle.to_string(), 0),
        }
    });
    files
}

/// A crash (or a full disk) can leave the trail ending in part of a line. Cuts it off
/// at the last complete line, keeping the fragment in `<path>.torn-<UTC time>` (0600),
/// so that the next record starts a line of its own and the chain holds.
pub(super) fn repair_torn_tail(path: &Path) -> io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(mut file) = OpenOptions::new().read(true).write(true).open(path) else {
        return Ok(());
    };
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(());
    }
    let mut last = [0u8; 1];
    file.seek(SeekFrom::Start(len - 1))?;
    file.read_exact(&mut last)?;
    if last[0] == b'\n' {
        return Ok(());
    }
    let keep = match last_line(path)? {
        Some(fragment) => len - fragment.len() as u64,
        None => 0,
    };
    file.seek(SeekFrom::Start(keep))?;
    let mut fragment = Vec::new();
    file.read_to_end(&mut fragment)?;
    let now = OffsetDateTime::now_utc();
    let aside = path.with_extension(format!(
        "torn-{:04}{:02}{:02}T{:02}{:02}{:02}",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    ));
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&aside)?
        .write_all(&fragment)?;
    file.set_len(keep)?;
    file.sync_all()?;
    tracing::warn!(
        trail = %path.display(),
        kept_in = %aside.display(),
        bytes = fragment.len(),
        "the audit trail ended in part of a line (a crash or a full disk): cut off and kept aside"
    );
    Ok(())
}

/// Where the chain stands for a trail at `path`: the hash of its last line, or of the
/// newest rotated file's last line when the current file is empty.
fn chain_head(path: &Path) -> io::Result<[u8; 32]> {
    let candidates =
        std::iter::once(path.to_path_buf()).chain(rotated_files(path).into_iter().rev());
    for file in candidates {
        if !file.exists() {
            continue;
        }
        if let Some(line) = last_line(&file)? {
            return Ok(openssl::sha::sha256(&line));
        }
    }
    Ok(GENESIS)
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
pub(super) fn open_private(path: &Path) -> io::Result<(File, u64)> {
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
        tracing::info!(
            sha256 = %hex(&self.last_hash),
            lines_since_start = self.written,
            "audit chain head (rotation)"
        );
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
        let (file, size) = open_private(&self.path)?;
        self.file = file;
        self.size = size;
        self.day = now.date();
        Ok(())
    }

    fn write_batch(&mut self, lines: &[String]) -> io::Result<()> {
        for line in lines {
            let line = chained(line, &self.last_hash);
            self.rotate_if_needed(line.len() as u64 + 1, OffsetDateTime::now_utc())?;
            // One write per line: a line is never split across files.
            let mut buf = Vec::with_capacity(line.len() + 1);
            buf.extend_from_slice(line.as_bytes());
            buf.push(b'\n');
            if let Err(e) = self.file.write_all(&buf) {
                // Part of the line may be on disk (a full disk): drop it, so that the
                // next line starts where this one should have.
                let _ = self.file.set_len(self.size);
                return Err(e);
            }
            self.size += buf.len() as u64;
            self.last_hash = openssl::sha::sha256(line.as_bytes());
            self.written += 1;
        }
        self.file.flush()?;
        if self.fsync {
            self.file.sync_data()?;
        }
        Ok(())
    }
}

impl FileTrail {
    /// Opens (appending) or creates the trail and starts its writer thread.
    pub fn open(path: &Path, rotation: Rotation, fsync: bool) -> io::Result<Self> {
        if path.exists() {
            repair_torn_tail(path)?;
        }
        let (file, size) = open_private(path)?;
        let mut writer = Writer {
            path: path.to_path_buf(),
            file,
            size,
            day: OffsetDateTime::now_utc().date(),
            rotation,
            fsync,
            last_hash: chain_head(path)?,
            written: 0,
        };
        tracing::info!(
            trail = %path.display(),
            sha256 = %hex(&writer.last_hash),
            "audit chain resumed"
        );
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
                tracing::info!(
                    sha256 = %hex(&writer.last_hash),
                    lines_since_start = writer.written,
                    "audit chain head (shutdown)"
                );
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

/// Checks the hash chain over `files`, in order (oldest rotated first, the current file
/// last): every line's `prev_sha256` must be the SHA-256 of the line before it.
pub fn verify(files: &[PathBuf]) -> io::Result<Verified> {
    use std::io::BufRead;
    let mut chain = Chain::default();
    for file in files {
        let reader = io::BufReader::new(File::open(file)?);
        for (i, line) in reader.split(b'\n').enumerate() {
            let line = line?;
            let place = || Place::File {
                file: file.clone(),
                line: i + 1,
            };
            if let Err((reason, request_id)) = chain.push(&line) {
                return Ok(chain.broken(Broken {
                    place: place(),
                    request_id,
                    reason,
                }));
            }
        }
    }
    Ok(chain.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_flushed_and_rotation_loses_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit").join("passerelle-audit.jsonl");
        let trail = FileTrail::open(
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
        let (_file, _) = open_private(&path).expect("open");
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().expect("dir")), 0o700);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        let err = open_private(&path).expect_err("world-writable file");
        assert!(
            err.to_string().contains("writable by group or others"),
            "{err}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let parent = path.parent().expect("dir");
        std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        assert!(open_private(&path).is_err(), "world-writable folder");
    }
}

#[cfg(test)]
mod chain_tests {
    use super::*;

    fn record(i: usize) -> AuditRecord {
        AuditRecord {
            request_id: format!("r{i}"),
            patient_ins: "207058575627097".into(),
            outcome: "ok".into(),
            ..AuditRecord::default()
        }
    }

    /// The trail's files, oldest first, as `audit verify --config` reads them.
    fn files(path: &Path) -> Vec<PathBuf> {
        let mut f = rotated_files(path);
        f.push(path.to_path_buf());
        f
    }

    #[tokio::test]
    async fn the_chain_spans_rotations_and_restarts_and_shows_tampering() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit").join("trail.jsonl");
        let rotation = Rotation {
            max_bytes: 1_000,
            daily: false,
        };
        {
            let trail = FileTrail::open(&path, rotation, false).expect("open");
            for i in 0..20 {
                trail.record(&record(i)).await.expect("recorded");
            }
        }
        // A restart continues the chain.
        let trail = FileTrail::open(&path, rotation, false).expect("reopen");
        for i in 20..30 {
            trail.record(&record(i)).await.expect("recorded");
        }
        drop(trail);
        let all = files(&path);
        assert!(all.len() > 3, "rotated: {all:?}");
        let ok = verify(&all).expect("verify");
        assert_eq!(ok.records, 30);
        assert!(ok.from_genesis);
        assert_eq!(ok.broken, None);

        let lines_of = |p: &Path| -> Vec<String> {
            std::fs::read_to_string(p)
                .expect("read")
                .lines()
                .map(str::to_string)
                .collect()
        };
        let rewrite = |p: &Path, lines: &[String]| {
            std::fs::write(p, lines.join("\n") + "\n").expect("write");
        };
        let target = &all[1];
        let original = lines_of(target);
        assert!(original.len() >= 2, "{original:?}");

        // Edited: the patient changed in a record; the next one says so.
        let mut edited = original.clone();
        edited[0] = edited[0].replace("207058575627097", "107058575627098");
        rewrite(target, &edited);
        let broken = verify(&all).expect("verify").broken.expect("broken");
        assert_eq!(
            broken.place,
            Place::File {
                file: target.clone(),
                line: 2
            },
            "{broken}"
        );

        // Deleted.
        let mut deleted = original.clone();
        deleted.remove(0);
        rewrite(target, &deleted);
        let broken = verify(&all).expect("verify").broken.expect("broken");
        assert_eq!(
            broken.place,
            Place::File {
                file: target.clone(),
                line: 1
            },
            "{broken}"
        );

        // Reordered.
        let mut swapped = original.clone();
        swapped.swap(0, 1);
        rewrite(target, &swapped);
        assert!(verify(&all).expect("verify").broken.is_some());

        rewrite(target, &original);
        assert_eq!(verify(&all).expect("verify").broken, None);
        // A file left out breaks the chain where it was.
        let mut missing = all.clone();
        missing.remove(1);
        let broken = verify(&missing).expect("verify").broken.expect("broken");
        assert!(
            matches!(&broken.place, Place::File { file, .. } if *file == all[2]),
            "{broken}"
        );
    }

    #[tokio::test]
    async fn a_torn_last_line_is_cut_off_and_kept_aside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("trail.jsonl");
        let rotation = Rotation {
            max_bytes: 0,
            daily: false,
        };
        {
            let trail = FileTrail::open(&path, rotation, false).expect("open");
            for i in 0..3 {
                trail.record(&record(i)).await.expect("recorded");
            }
        }
        // A crash in the middle of a line.
        let mut f = OpenOptions::new().append(true).open(&path).expect("open");
        f.write_all(b"{\"prev_sha256\":\"ab").expect("write");
        drop(f);
        let trail = FileTrail::open(&path, rotation, false).expect("reopen");
        trail.record(&record(3)).await.expect("recorded");
        drop(trail);
        let ok = verify(&files(&path)).expect("verify");
        assert_eq!((ok.records, ok.broken), (4, None));
        let torn: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".torn-"))
            .collect();
        assert_eq!(torn.len(), 1);
        assert_eq!(
            std::fs::read(torn[0].path()).expect("read"),
            b"{\"prev_sha256\":\"ab"
        );
    }

    #[tokio::test]
    async fn a_trail_older_than_the_chain_verifies_from_where_the_chain_starts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("trail.jsonl");
        std::fs::write(
            &path,
            "{\"request_id\":\"old-1\"}\n{\"request_id\":\"old-2\"}\n",
        )
        .expect("legacy");
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        }
        let rotation = Rotation {
            max_bytes: 0,
            daily: false,
        };
        let trail = FileTrail::open(&path, rotation, false).expect("open");
        trail.record(&record(1)).await.expect("recorded");
        drop(trail);
        let ok = verify(&files(&path)).expect("verify");
        assert_eq!((ok.unchained, ok.records, ok.broken), (2, 1, None));
        // An unchained line after the chain started is a break.
        let mut text = std::fs::read_to_string(&path).expect("read");
        text.push_str("{\"request_id\":\"forged\"}\n");
        std::fs::write(&path, text).expect("write");
        let broken = verify(&files(&path))
            .expect("verify")
            .broken
            .expect("broken");
        assert!(
            matches!(broken.place, Place::File { line: 4, .. }),
            "{broken}"
        );
    }

    #[test]
    fn rotated_files_sort_by_time_then_sequence() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("trail.jsonl");
        for name in [
            "trail.20261201T100000-1.jsonl",
            "trail.20261201T100000.jsonl",
            "trail.20261130T235959.jsonl",
            "trail.20261201T100000-10.jsonl",
            "trail.20261201T100000-2.jsonl",
            "other.20261201T100000.jsonl",
            "trail.copy.jsonl",
            "trail.20261201T1000.jsonl",
        ] {
            std::fs::write(dir.path().join(name), "").expect("write");
        }
        let names: Vec<String> = rotated_files(&path)
            .iter()
            .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
            .collect();
        assert_eq!(
            names,
            [
                "trail.20261130T235959.jsonl",
                "trail.20261201T100000.jsonl",
                "trail.20261201T100000-1.jsonl",
                "trail.20261201T100000-2.jsonl",
                "trail.20261201T100000-10.jsonl",
            ]
        );
    }
}
