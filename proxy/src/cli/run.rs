//! `passerelle run`: validate the configuration fully, then serve; reload on SIGHUP and
//! when the configuration or a file it names changes; warn daily about certificates
//! close to expiry; on SIGTERM or Ctrl-C finish in-flight requests within the grace
//! period, flush the audit trail, exit 0.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use passerelle_proxy::runtime::Proxy;
use passerelle_proxy::{ProxyState, RunningProxy};

/// How often the files are checked for changes.
const WATCH_EVERY: Duration = Duration::from_secs(2);
/// How often a refused reload is tried again, files changed or not: a renewed
/// certificate refused as not yet valid (a few minutes of clock skew) is taken once it
/// is, and a refusal keeps being logged while it lasts.
const RETRY_REFUSED_EVERY: Duration = Duration::from_secs(300);
/// How often expiring certificates are reported.
const EXPIRY_WARNING_EVERY: Duration = Duration::from_secs(24 * 3600);

use super::logs::LogFormat;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Configuration file (TOML).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// How long in-flight requests may take to finish on shutdown.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    grace: Duration,
    /// On SIGTERM, how long to keep serving new requests while `/readyz` already
    /// answers 503 "draining", so that load balancers stop sending first.
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = humantime::parse_duration)]
    drain_delay: Duration,
    /// Log lines for people (default) or one JSON object per line.
    #[arg(long, value_enum, default_value = "human")]
    log_format: LogFormat,
}

pub fn run(args: &RunArgs) -> ExitCode {
    super::logs::init(args.log_format);
    let inspection = passerelle_config::inspect(&args.config);
    log_problems(&inspection.problems, "start");
    let blocked = inspection.has_blocking_errors();
    let Some(config) = inspection.config.filter(|_| !blocked) else {
        tracing::error!(
            config = %args.config.display(),
            "not started: fix the errors above (passerelle check --config ...)"
        );
        return ExitCode::FAILURE;
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "not started: cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(serve(config, args.grace, args.drain_delay))
}

async fn serve(
    config: passerelle_config::Config,
    grace: Duration,
    drain_delay: Duration,
) -> ExitCode {
    let (listen, admin) = (config.listener, config.admin);
    let proxy = match ProxyState::new(config)
        .map_err(passerelle_proxy::runtime::StartError::from)
        .and_then(Proxy::new)
    {
        Ok(p) => Arc::new(p),
        Err(e) => {
            tracing::error!(error = %e, "not started");
            return ExitCode::FAILURE;
        }
    };
    let bind = |addr| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e}"))
    };
    let (listener, admin_listener) = match (bind(listen).await, bind(admin).await) {
        (Ok(l), Ok(a)) => (l, a),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "not started");
            return ExitCode::FAILURE;
        }
    };
    let running = match passerelle_proxy::start(Arc::clone(&proxy), listener, admin_listener, grace)
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "not started");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        listen = %running.address,
        admin = %running.admin_address,
        tenants = running.state().tenants.len(),
        audit = %proxy.audit().path().display(),
        "passerelle ready"
    );
    let watcher = tokio::spawn(watch_files(Arc::clone(&proxy)));
    let warner = tokio::spawn(warn_expiring(Arc::clone(&proxy)));
    let crls = tokio::spawn(passerelle_proxy::crl::keep_fresh(Arc::clone(&proxy)));
    let ocsp = tokio::spawn(passerelle_proxy::ocsp::keep_checked(Arc::clone(&proxy)));
    let tokens = tokio::spawn(passerelle_proxy::tokens::keep_probed(Arc::clone(&proxy)));
    wait_for_stop(&proxy).await;
    watcher.abort();
    warner.abort();
    crls.abort();
    ocsp.abort();
    tokens.abort();
    stop(running, grace, drain_delay).await;
    ExitCode::SUCCESS
}

async fn stop(running: RunningProxy, grace: Duration, drain_delay: Duration) {
    running.drain();
    if !drain_delay.is_zero() {
        tracing::info!(
            drain_delay_s = drain_delay.as_secs_f64(),
            "draining: /readyz answers 503, requests still served"
        );
        tokio::time::sleep(drain_delay).await;
    }
    tracing::info!(
        grace_s = grace.as_secs(),
        "stopping: no new connections, finishing in-flight requests; /readyz answers 503 draining"
    );
    running.shutdown(grace).await;
    // Every answered request waited for its audit line: the trail is complete.
    tracing::info!("stopped");
}

/// One line per problem: errors (those that disable a tenant's certificate role
/// included) at error level, warnings (expiry within `expiry_warning_days`) at warn.
fn log_problems(problems: &[passerelle_config::Problem], when: &str) {
    for problem in problems {
        match problem.severity {
            passerelle_config::Severity::Error => tracing::error!(
                when,
                %problem,
                disables = problem.disables,
                "configuration"
            ),
            passerelle_config::Severity::Warning => {
                tracing::warn!(when, %problem, "configuration")
            }
        }
    }
}

fn reload(proxy: &Proxy, why: &str) {
    match proxy.reload() {
        Ok(report) => {
            log_problems(&report.problems, "reload");
            for (tenant, role, before, after) in &report.certificates {
                tracing::info!(
                    tenant = %tenant,
                    role = %role,
                    serial_before = before.as_deref().unwrap_or("-"),
                    serial_after = after.as_deref().unwrap_or("-"),
                    "certificate changed"
                );
            }
            tracing::info!(
                trigger = why,
                pools_kept = report.pools_kept,
                pools_rebuilt = report.pools_built.len(),
                rebuilt = ?report.pools_built,
                "configuration and certificates reloaded"
            );
        }
        Err(reasons) => {
            for reason in &reasons {
                tracing::error!(trigger = why, %reason, "reload refused");
            }
            tracing::error!(
                trigger = why,
                errors = reasons.len(),
                "reload refused: the running configuration stays"
            );
        }
    }
}

/// Waits for SIGTERM or Ctrl-C, reloading on every SIGHUP meanwhile.
async fn wait_for_stop(proxy: &Proxy) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).ok();
    let mut hup = signal(SignalKind::hangup()).ok();
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return,
            _ = recv(&mut term) => return,
            _ = recv(&mut hup) => reload(proxy, "SIGHUP"),
        }
    }
}

async fn recv(signal: &mut Option<tokio::signal::unix::Signal>) {
    match signal.as_mut() {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}

/// Every file the configuration reads (string values that are existing files:
/// certificates, keys, passwords, anchors, CRLs), the `[trust.crl_download]` folder and
/// its copies (a new copy reloads: its revocations apply), and the configuration; never
/// what Passerelle writes (the `[audit]` trail: watching it reloaded everything after
/// each audited request).
fn watched_files(config: &Path) -> Vec<PathBuf> {
    fn walk(v: &toml::Value, dir: &Path, out: &mut Vec<PathBuf>) {
        match v {
            toml::Value::String(s) => {
                let p = dir.join(s);
                if p.is_file() {
                    out.push(p);
                }
            }
            toml::Value::Array(a) => a.iter().for_each(|v| walk(v, dir, out)),
            toml::Value::Table(t) => t.values().for_each(|v| walk(v, dir, out)),
            _ => {}
        }
    }
    let mut out = vec![config.to_path_buf()];
    let dir = config.parent().unwrap_or(Path::new("."));
    if let Ok(Ok(mut table)) = std::fs::read_to_string(config).map(|t| t.parse::<toml::Table>()) {
        table.remove("audit");
        let downloads = table
            .get("trust")
            .and_then(|t| t.get("crl_download"))
            .and_then(|d| d.as_table())
            .map(|d| {
                dir.join(
                    d.get("directory")
                        .and_then(|v| v.as_str())
                        .unwrap_or("crls"),
                )
            });
        walk(&toml::Value::Table(table), dir, &mut out);
        if let Some(folder) = downloads {
            if let Ok(entries) = std::fs::read_dir(&folder) {
                let mut copies: Vec<PathBuf> = entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "crl"))
                    .collect();
                copies.sort();
                out.extend(copies);
            }
            // The folder itself: a first copy written there changes its mtime.
            out.push(folder);
        }
    }
    out
}

fn fingerprint(files: &[PathBuf]) -> Vec<(PathBuf, Option<(SystemTime, u64)>)> {
    files
        .iter()
        .map(|f| {
            let meta = std::fs::metadata(f).ok();
            (
                f.clone(),
                meta.and_then(|m| Some((m.modified().ok()?, m.len()))),
            )
        })
        .collect()
}

/// Reloads when the configuration or a file it names changes. A change is acted on once
/// the files have stayed the same for one period, so a renewal copied file by file
/// reloads once, complete.
async fn watch_files(proxy: Arc<Proxy>) {
    let mut files = watched_files(proxy.config_path());
    let mut seen = fingerprint(&files);
    let mut pending = false;
    let mut last_try = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(WATCH_EVERY).await;
        if proxy.metrics.last_reload_failed() && last_try.elapsed() >= RETRY_REFUSED_EVERY {
            last_try = tokio::time::Instant::now();
            reload(&proxy, "retry of a refused reload");
            continue;
        }
        let now = fingerprint(&files);
        if now != seen {
            for ((file, _), _) in now.iter().zip(&seen).filter(|(a, b)| a != b) {
                tracing::info!(file = %file.display(), "configuration input changed");
            }
            seen = now;
            pending = true;
            continue;
        }
        if pending {
            pending = false;
            last_try = tokio::time::Instant::now();
            reload(&proxy, "files changed");
            files = watched_files(proxy.config_path());
            seen = fingerprint(&files);
        }
    }
}

/// Logs a warning for every certificate expiring within `expiry_warning_days`, at start
/// and then daily.
async fn warn_expiring(proxy: Arc<Proxy>) {
    loop {
        let state = proxy.state();
        let now = time::OffsetDateTime::now_utc();
        let days = i64::from(state.config.security.expiry_warning_days);
        for c in state.credentials() {
            let left = (c.not_after - now).whole_days();
            if left < days {
                tracing::warn!(
                    tenant = %c.tenant,
                    role = %c.role,
                    not_after = %c.not_after.date(),
                    days_left = left,
                    "certificate expires soon: renew it on the IGC-Santé portal, then replace the files (reload is automatic)"
                );
            }
        }
        tokio::time::sleep(EXPIRY_WARNING_EVERY).await;
    }
}

#[cfg(test)]
mod watch_tests {
    use super::watched_files;

    #[test]
    fn the_audit_trail_is_not_an_input() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cert = dir.path().join("cert.pem");
        let trail = dir.path().join("trail.jsonl");
        std::fs::write(&cert, "x").expect("write");
        std::fs::write(&trail, "{}").expect("write");
        let config = dir.path().join("p.toml");
        std::fs::write(
            &config,
            "[audit]\npath = \"trail.jsonl\"\n[tenant]\ncert = \"cert.pem\"\n",
        )
        .expect("write");
        let files = watched_files(&config);
        assert!(files.contains(&cert), "{files:?}");
        assert!(!files.contains(&trail), "{files:?}");
    }
}
