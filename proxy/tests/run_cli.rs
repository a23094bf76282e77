//! `passerelle run`, the real binary: starts on a configuration, serves an INSi search
//! and a DMP query through the mocks, stops cleanly on SIGTERM; its log holds one line
//! per request and no patient data. A configuration with errors does not start.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use passerelle_certs_test::shared_test_pki;
use passerelle_mocks::faults::Faults;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .args(args)
        .output()
        .expect("curl installed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_then_stops_on_sigterm_without_patient_data_in_logs() {
    let pki = shared_test_pki().expect("PKI");
    let any = "127.0.0.1:0".parse().expect("addr");
    let spec = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/spec/insi/xsd");
    let (dmp, _service) = passerelle_mocks::start_dmp(&pki, any, any, Faults::default())
        .await
        .expect("mock DMP");
    let insi = passerelle_mocks::start_insi(&pki, &spec, any, any, Faults::default())
        .await
        .expect("mock INSi");
    let (listen, admin) = (free_port(), free_port());
    let mut doc: toml::Table = std::fs::read_to_string(pki.path(&pki.config))
        .expect("config")
        .parse()
        .expect("TOML");
    let mut set = |table: &str, key: &str, value: String| {
        if let Some(toml::Value::Table(t)) = doc.get_mut(table) {
            t.insert(key.into(), value.into());
        }
    };
    set("listener", "address", format!("127.0.0.1:{listen}"));
    set("admin", "address", format!("127.0.0.1:{admin}"));
    set(
        "dmp",
        "base_url",
        format!(
            "https://localhost:{}/si-dmp-server/v2/services",
            dmp.address.port()
        ),
    );
    set(
        "insi",
        "url",
        format!("https://localhost:{}/lps", insi.address.port()),
    );
    let config = pki.dir.join(format!("run-cli-{listen}.toml"));
    std::fs::write(&config, toml::to_string(&doc).expect("TOML")).expect("write");

    let mut child = Command::new(env!("CARGO_BIN_EXE_passerelle"))
        .args(["run", "--config"])
        .arg(&config)
        .stderr(Stdio::piped())
        .spawn()
        .expect("start passerelle");
    let healthz = format!("http://127.0.0.1:{admin}/healthz");
    let started = Instant::now();
    while curl(&[&healthz]) != "ok\n" {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "passerelle did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let base = format!("http://127.0.0.1:{listen}");
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
    let common = [
        "-H",
        "Authorization: Bearer sandbox-token",
        "-H",
        "X-Passerelle-Tenant: ch-test-a",
        "-H",
        "Content-Type: application/soap+xml",
    ];
    let insi_reply = tokio::task::spawn_blocking({
        let (base, common) = (base.clone(), common.map(String::from));
        move || {
            let mut args: Vec<String> = common.to_vec();
            args.extend([
                "--data-binary".into(),
                format!("@{examples}/insi-rechercher-traits-minimal.xml"),
                format!("{base}/insi/auto"),
            ]);
            curl(&args.iter().map(String::as_str).collect::<Vec<_>>())
        }
    })
    .await
    .expect("curl");
    assert!(insi_reply.contains("<CodeCR>00</CodeCR>"), "{insi_reply}");
    let dmp_reply = tokio::task::spawn_blocking({
        let (base, common) = (base.clone(), common.map(String::from));
        move || {
            let mut args: Vec<String> = common.to_vec();
            for h in [
                "X-Vihf-Subject-Id: 899900063480",
                "X-Vihf-Subject-Name: MAX%20LIBRE",
                "X-Vihf-Role: 10^M%C3%A9decin",
                "X-Vihf-Sector: SA01",
                "X-Vihf-Patient: 207058575627097^^^%261.2.250.1.213.1.4.10%26ISO^NH",
            ] {
                args.extend(["-H".into(), h.into()]);
            }
            args.extend([
                "--data-binary".into(),
                format!("@{examples}/dmp-find-documents.xml"),
                format!("{base}/dmp/registry"),
            ]);
            curl(&args.iter().map(String::as_str).collect::<Vec<_>>())
        }
    })
    .await
    .expect("curl");
    assert!(
        dmp_reply.contains("ResponseStatusType:Success"),
        "{dmp_reply}"
    );

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = child.wait().expect("wait");
    let mut log = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut log)
        .expect("log");
    let _ = std::fs::remove_file(&config);
    assert!(exit.success(), "exit {exit:?}\n{log}");
    assert_eq!(
        log.matches(" request ").count() + log.matches("\"request\"").count(),
        2,
        "{log}"
    );
    assert!(log.contains("stopped"), "{log}");
    // The INS, its key, the patient's names: nowhere in the log.
    for secret in [
        "2070585756270",
        "207058575627097",
        "MARTIN",
        "CLAIRE",
        "MAX LIBRE",
        "sandbox-token",
        "PRIVATE KEY",
    ] {
        assert!(!log.contains(secret), "{secret:?} found in the log:\n{log}");
    }
}

#[test]
fn run_refuses_a_configuration_with_errors() {
    let pki = shared_test_pki().expect("PKI");
    let text = std::fs::read_to_string(pki.path(&pki.config))
        .expect("config")
        .replace("address = \"127.0.0.1:8080\"", "address = \"nowhere\"");
    // Relative paths resolve against the file's directory: keep it beside the PKI.
    let config = pki
        .dir
        .join(format!("run-cli-bad-{}.toml", std::process::id()));
    std::fs::write(&config, text).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_passerelle"))
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .expect("run");
    let _ = std::fs::remove_file(&config);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not started"), "{err}");
    assert!(err.contains("listener.address"), "{err}");
}
