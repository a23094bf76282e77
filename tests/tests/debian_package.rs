//! The Debian package's files agree with each other and with the configuration model:
//! the systemd unit (deploy/systemd), the maintainer scripts and the example
//! configuration (deploy/debian), and `[package.metadata.deb]` (proxy/Cargo.toml).
//! scripts/package-test.sh builds the package and installs it in a Debian container for
//! real (podman); these checks are the part that runs everywhere, in `cargo test`.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use passerelle_certs_test::shared_test_pki;
use passerelle_config::Severity;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(relative: &str) -> String {
    fs::read_to_string(repo().join(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

/// `Key=value` lines of the unit's [Service] section; a key set twice keeps every value.
fn service_section() -> BTreeMap<String, Vec<String>> {
    let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut section = String::new();
    for line in read("deploy/systemd/passerelle.service").lines() {
        let line = line.trim();
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if line.starts_with('[') {
            section = line.to_string();
            continue;
        }
        if section == "[Service]" {
            let (k, v) = line.split_once('=').expect("Key=value");
            keys.entry(k.to_string()).or_default().push(v.to_string());
        }
    }
    keys
}

fn one(keys: &BTreeMap<String, Vec<String>>, key: &str) -> String {
    let values = keys.get(key).unwrap_or_else(|| panic!("{key}= missing"));
    assert_eq!(values.len(), 1, "{key}= set {} times", values.len());
    values[0].clone()
}

fn seconds(d: &str) -> u64 {
    let split = d.find(|c: char| !c.is_ascii_digit()).unwrap_or(d.len());
    let (n, unit) = d.split_at(split);
    let n: u64 = n.parse().unwrap_or_else(|_| panic!("duration {d:?}"));
    match unit {
        "s" | "" => n,
        "m" | "min" => n * 60,
        _ => panic!("duration unit in {d:?}"),
    }
}

fn example() -> toml::Table {
    read("deploy/debian/passerelle.toml.example")
        .parse()
        .expect("the example is TOML")
}

#[test]
fn the_unit_is_hardened_as_the_issue_asks() {
    let keys = service_section();
    assert_eq!(one(&keys, "User"), "passerelle");
    assert_eq!(one(&keys, "ProtectSystem"), "strict");
    assert_eq!(one(&keys, "NoNewPrivileges"), "yes");
    assert_eq!(
        one(&keys, "CapabilityBoundingSet"),
        "",
        "empty bounding set"
    );
    assert_eq!(one(&keys, "Restart"), "on-failure");
    assert_eq!(one(&keys, "ExecReload"), "/bin/kill -HUP $MAINPID");
    assert_eq!(one(&keys, "PrivateTmp"), "yes");
    assert_eq!(one(&keys, "ProtectHome"), "yes");

    // The audit trail of the example is the one writable path.
    let audit = example()["audit"]["path"]
        .as_str()
        .expect("audit.path")
        .to_string();
    let audit_dir = Path::new(&audit).parent().expect("folder");
    assert_eq!(
        one(&keys, "ReadWritePaths"),
        audit_dir.to_str().expect("UTF-8")
    );

    // ExecStart runs the packaged binary on the configuration postinst writes, and the
    // stop timeout covers --drain-delay + --grace.
    let exec = one(&keys, "ExecStart");
    let args: Vec<&str> = exec.split_whitespace().collect();
    assert_eq!(args[..2], ["/usr/bin/passerelle", "run"]);
    let flag = |name: &str| {
        args.iter()
            .position(|a| *a == name)
            .map(|i| args[i + 1])
            .unwrap_or_else(|| panic!("ExecStart lacks {name}"))
    };
    assert_eq!(flag("--config"), "/etc/passerelle/passerelle.toml");
    assert_eq!(flag("--log-format"), "json");
    let drain = seconds(flag("--drain-delay"));
    let grace = seconds(flag("--grace"));
    let stop = seconds(&one(&keys, "TimeoutStopSec"));
    assert!(
        stop >= drain + grace + 5,
        "TimeoutStopSec {stop}s < drain {drain}s + grace {grace}s + 5s"
    );
}

#[test]
fn postinst_makes_what_the_unit_and_the_example_expect() {
    let postinst = read("deploy/debian/postinst");
    assert!(postinst.contains("#DEBHELPER#"));
    assert!(postinst.contains("adduser --system"));
    for line in [
        "make_dir root \"$user\" 0750 /etc/passerelle",
        "make_dir \"$user\" \"$user\" 0700 /etc/passerelle/tenants",
        "make_dir \"$user\" \"$user\" 0700 /var/lib/passerelle/audit",
    ] {
        assert!(postinst.contains(line), "postinst lacks: {line}");
    }
    assert!(postinst.contains("example=/usr/share/passerelle/passerelle.toml.example"));
    // The placeholder postinst replaces is the example's.
    assert_eq!(
        example()["software"]["instance_id"].as_str(),
        Some("00000000-0000-0000-0000-000000000000")
    );
    assert!(read("deploy/debian/postrm").contains("#DEBHELPER#"));

    // The package ships the example where postinst reads it.
    let cargo: toml::Table = read("proxy/Cargo.toml").parse().expect("TOML");
    let deb = &cargo["package"]["metadata"]["deb"];
    assert_eq!(deb["name"].as_str(), Some("passerelle"));
    let assets = deb["assets"].as_array().expect("assets");
    assert!(assets.iter().any(|a| {
        a[0].as_str() == Some("../deploy/debian/passerelle.toml.example")
            && a[1].as_str() == Some("usr/share/passerelle/passerelle.toml.example")
    }));
    let depends = deb["depends"].as_str().expect("depends");
    for d in ["$auto", "adduser", "procps"] {
        assert!(depends.contains(d), "depends lacks {d}");
    }
    let mode = fs::metadata(repo().join("deploy/debian/postinst"))
        .expect("postinst")
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0o111, "postinst is executable");
}

/// As installed, the example fails only for the files still to be put in place; with
/// them (the test PKI) it passes the validation `passerelle check` makes.
#[test]
fn the_example_needs_only_its_certificates() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    let mut config = example();
    // The audit trail in the temporary folder, as the installed one is in /var/lib.
    config
        .get_mut("audit")
        .and_then(toml::Value::as_table_mut)
        .expect("[audit]")
        .insert(
            "path".into(),
            root.join("audit/passerelle-audit.jsonl")
                .to_string_lossy()
                .into_owned()
                .into(),
        );
    let path = root.join("passerelle.toml");
    fs::write(&path, toml::to_string(&config).expect("TOML")).expect("write");

    let inspection = passerelle_config::inspect(&path);
    let errors: Vec<_> = inspection
        .problems
        .iter()
        .filter(|p| p.severity == Severity::Error)
        .collect();
    assert!(!errors.is_empty());
    for e in &errors {
        assert!(
            e.message.contains("No such file or directory")
                && (e.file.starts_with(root.join("ca"))
                    || e.file.starts_with(root.join("tenants"))),
            "not a missing CA or certificate file: {e}"
        );
    }

    // Fill it in as docs/packaging.md says, with the test PKI's second tenant (PKCS#12).
    let pki = shared_test_pki().expect("test PKI");
    let tenant = &pki.tenants[1];
    let put = |from: &Path, to: &str, mode: u32| {
        let to = root.join(to);
        fs::create_dir_all(to.parent().expect("folder")).expect("mkdir");
        fs::copy(pki.path(from), &to).expect("copy");
        fs::set_permissions(&to, fs::Permissions::from_mode(mode)).expect("chmod");
    };
    put(&pki.ca.root, "ca/igc-sante-root.pem", 0o644);
    put(&pki.ca.org_intermediate, "ca/igc-sante-org.pem", 0o644);
    put(&pki.ca.org_crl, "ca/ACI-EL-ORG.crl", 0o644);
    put(&pki.ca.root, "ca/dmp-server-root.pem", 0o644);
    let id = config["tenants"][0]["id"].as_str().expect("id").to_string();
    for (role, leaf) in [
        ("dmp-auth", &tenant.dmp_auth),
        ("dmp-sign", &tenant.dmp_sign),
        ("insi-auto", &tenant.insi_auto),
        ("insi-manu", &tenant.insi_manu),
    ] {
        put(&leaf.p12, &format!("tenants/{id}/{role}.p12"), 0o600);
        put(
            &leaf.p12_password,
            &format!("tenants/{id}/{role}.p12.password"),
            0o600,
        );
    }
    let t = config
        .get_mut("tenants")
        .and_then(|t| t.get_mut(0))
        .and_then(toml::Value::as_table_mut)
        .expect("tenant");
    t.insert("structure_id".into(), tenant.structure_id.clone().into());
    t.insert(
        "geographic_structure_ids".into(),
        toml::Value::Array(
            tenant
                .geographic_structure_ids
                .iter()
                .map(|g| g.clone().into())
                .collect(),
        ),
    );
    fs::write(&path, toml::to_string(&config).expect("TOML")).expect("write");
    let inspection = passerelle_config::inspect(&path);
    let errors: Vec<String> = inspection
        .problems
        .iter()
        .filter(|p| p.severity == Severity::Error)
        .map(|p| p.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    assert_eq!(inspection.certificates.len(), 4);
}
