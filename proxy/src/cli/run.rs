//! `passerelle run`: validate the configuration fully, then serve until SIGTERM or
//! Ctrl-C, finishing in-flight requests within the grace period.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use passerelle_proxy::ProxyState;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Configuration file (TOML).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// How long in-flight requests may take to finish on shutdown.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    grace: Duration,
}

pub fn run(args: &RunArgs) -> ExitCode {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PASSERELLE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let inspection = passerelle_config::inspect(&args.config);
    for problem in &inspection.problems {
        eprintln!("{problem}");
    }
    let Some(config) = inspection.config.filter(|_| {
        !inspection
            .problems
            .iter()
            .any(|p| p.severity == passerelle_config::Severity::Error)
    }) else {
        eprintln!(
            "{}: not started: fix the errors above (passerelle check --config ...)",
            args.config.display()
        );
        return ExitCode::FAILURE;
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(serve(config, args.grace))
}

async fn serve(config: passerelle_config::Config, grace: Duration) -> ExitCode {
    let (listen, admin) = (config.listener, config.admin);
    let state = match ProxyState::new(config) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("not started: {e}");
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
            eprintln!("not started: {e}");
            return ExitCode::FAILURE;
        }
    };
    let running = match passerelle_proxy::start(state, listener, admin_listener, grace) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("not started: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(listen = %running.address, admin = %running.admin_address, tenants = running.state.tenants.len(), "passerelle ready");
    wait_for_signal().await;
    tracing::info!(
        grace_s = grace.as_secs(),
        "stopping: no new connections, finishing in-flight requests"
    );
    running.shutdown(grace).await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match term.as_mut() {
                Some(t) => { t.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}
