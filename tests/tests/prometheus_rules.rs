//! The monitoring kit of `deploy/prometheus`: the alert rules pass `promtool check rules`
//! and their unit tests (`promtool test rules`), and every series they use is exported
//! by a running Passerelle, in exposition text that `promtool check metrics` accepts.
//! promtool comes with Debian's `prometheus` package (scripts/install-deps.sh): these
//! tests fail, rather than skip, when it is missing.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use passerelle_e2e::messages::insi_search_bare;
use passerelle_e2e::{Harness, SOAP_CT};

fn deploy() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus")
}

/// `promtool args...` in `deploy/prometheus`, with `stdin` as its standard input.
fn promtool(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new("promtool")
        .args(args)
        .current_dir(deploy())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool: install Debian's prometheus package (scripts/install-deps.sh)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write to promtool");
    child.wait_with_output().expect("promtool output")
}

fn assert_ok(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn promtool_checks_the_rules_and_runs_their_unit_tests() {
    let check = promtool(&["check", "rules", "alerts.yml"], "");
    assert_ok("promtool check rules alerts.yml", &check);
    let test = promtool(&["test", "rules", "alerts.test.yml"], "");
    assert_ok("promtool test rules alerts.test.yml", &test);
    assert!(
        String::from_utf8_lossy(&test.stdout).contains("SUCCESS"),
        "{test:?}"
    );
}

/// The `expr:` lines of the rules and the lines that continue them.
fn expressions(rules: &str) -> String {
    let mut out = String::new();
    let mut in_expr = false;
    for line in rules.lines() {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix("expr:") {
            in_expr = true;
            out.push_str(rest);
            out.push('\n');
        } else if in_expr && (line.starts_with("          ") || trimmed.is_empty()) {
            // A `|` block: more indented than the rule's keys.
            out.push_str(trimmed);
            out.push('\n');
        } else {
            in_expr = false;
        }
    }
    out
}

/// The series names the expressions use: Passerelle's and the standard process ones.
fn series_used(exprs: &str) -> BTreeSet<String> {
    exprs
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|w| w.starts_with("passerelle_") || w.starts_with("process_"))
        .map(str::to_string)
        .collect()
}

/// The `outcome` values the expressions match (`outcome="A"`, `outcome=~"A|B"`).
fn outcomes_used(exprs: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for part in exprs.split("outcome").skip(1) {
        let Some(rest) = part
            .strip_prefix("=~\"")
            .or_else(|| part.strip_prefix("=\""))
        else {
            continue;
        };
        let value = rest.split('"').next().unwrap_or("");
        out.extend(value.split('|').map(str::to_string));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_series_the_rules_use_is_exported_and_the_exposition_parses() {
    let h = Harness::start().await;
    // Some traffic, so the request counters have series: one granted request, one
    // refused before access control, one asking for a tenant it may not have.
    let ok = h
        .post(
            "/insi/auto",
            &[("x-passerelle-tenant", "ch-test-a")],
            SOAP_CT,
            insi_search_bare("MARTIN", "CLAIRE", "F", "2007-05-14"),
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    let anonymous = h
        .post(
            "/insi/auto",
            &[("authorization", "Bearer nope")],
            SOAP_CT,
            "<x/>",
        )
        .await;
    assert_eq!(anonymous.status, 401);
    let foreign = h
        .post(
            "/insi/auto",
            &[("x-passerelle-tenant", "hostile-tenant-xyz")],
            SOAP_CT,
            "<x/>",
        )
        .await;
    assert!(foreign.status >= 400, "{}", foreign.text());

    let (status, scrape) = h.admin("/metrics").await;
    assert_eq!(status, 200);

    // promtool parses the exposition (and lints it).
    let check = promtool(&["check", "metrics"], &scrape);
    assert_ok(&format!("promtool check metrics\n{scrape}"), &check);

    // Every series the rules use has samples in the scrape.
    let rules = std::fs::read_to_string(deploy().join("alerts.yml")).expect("alerts.yml");
    let exprs = expressions(&rules);
    let used = series_used(&exprs);
    for expected in [
        "passerelle_certificate_not_after_timestamp_seconds",
        "passerelle_certificate_usable",
        "passerelle_certificate_revoked",
        "passerelle_config_last_reload_success",
        "passerelle_reloads_total",
        "passerelle_requests_total",
        "passerelle_audit_write_failures_total",
        "passerelle_draining",
        "passerelle_crl_next_update_seconds",
        "process_open_fds",
    ] {
        assert!(used.contains(expected), "{expected} not found in {used:?}");
    }
    let exported: BTreeSet<&str> = scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    for name in &used {
        if name.starts_with("process_") && !cfg!(target_os = "linux") {
            continue;
        }
        assert!(
            exported.contains(name.as_str()),
            "alerts.yml uses {name}, which /metrics does not export:\n{scrape}"
        );
    }
    // The templates name these labels; they must be on the series.
    for name in [
        "passerelle_certificate_not_after_timestamp_seconds",
        "passerelle_certificate_usable",
        "passerelle_certificate_revoked",
    ] {
        assert!(
            scrape.contains(&format!(
                "{name}{{tenant=\"ch-test-a\",role=\"insi_auto\"}} "
            )),
            "{name}:\n{scrape}"
        );
    }

    // The outcomes the rules match are fault codes the proxy answers with.
    let faults = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../proxy/src/fault.rs"),
    )
    .expect("fault.rs");
    let outcomes = outcomes_used(&exprs);
    assert!(outcomes.contains("UpstreamTls"), "{outcomes:?}");
    for code in &outcomes {
        assert!(
            faults.contains(&format!("=> \"{code}\"")),
            "alerts.yml matches outcome {code:?}, which is no fault code"
        );
    }

    // Request counters: tenant and client are configured names, or none before access
    // control granted them; a name the request made up never becomes a series.
    let requests: Vec<&str> = scrape
        .lines()
        .filter(|l| l.starts_with("passerelle_requests_total{"))
        .collect();
    assert!(
        requests.iter().any(|l| l.contains("tenant=\"ch-test-a\",")
            && !l.contains("client=\"none\"")
            && l.contains("outcome=\"ok\"")),
        "{requests:#?}"
    );
    assert!(
        requests
            .iter()
            .any(|l| l.contains("tenant=\"none\",client=\"none\",")
                && l.contains("outcome=\"UnknownClient\"")),
        "{requests:#?}"
    );
    assert!(!scrape.contains("hostile-tenant-xyz"), "{scrape}");
}
