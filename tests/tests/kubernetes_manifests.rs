//! The Kubernetes manifests of `deploy/kubernetes`, read as Kubernetes would read them
//! (the files `kustomization.yaml` lists), and held to what issue 14 asks: a StatefulSet
//! of N replicas where each replica has its own certificate set (never one Secret shared
//! by all replicas), probes on the admin listener, locked-down containers, a
//! PodDisruptionBudget, a NetworkPolicy that lets in only the SIH (and monitoring on the
//! admin port) and lets out only DNS, the forward proxy and the API server, and a
//! termination grace period that covers `--drain-delay` + `--grace`. The ConfigMap's
//! configuration must pass `passerelle-config`'s validation once the mounts it names
//! hold real (test) certificates.
//!
//! YAML: `yaml-rust2` (YAML 1.2, pure Rust, maintained). `serde_yaml` is deprecated and
//! `serde_yml` unmaintained; these tests walk the documents, so no serde is needed.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use passerelle_certs_test::shared_test_pki;
use passerelle_config::Severity;
use yaml_rust2::{Yaml, YamlLoader};

fn deploy() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes")
}

fn load_yaml(path: &Path) -> Vec<Yaml> {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every object of the files `kustomization.yaml` lists, in order.
fn objects() -> Vec<Yaml> {
    let kustomization = load_yaml(&deploy().join("kustomization.yaml"));
    let mut all = Vec::new();
    for resource in seq(&kustomization[0]["resources"]) {
        let docs = load_yaml(&deploy().join(text(resource)));
        all.extend(docs.into_iter().filter(|d| !d.is_null()));
    }
    all
}

fn text(y: &Yaml) -> &str {
    y.as_str()
        .unwrap_or_else(|| panic!("expected a string, found {y:?}"))
}

fn int(y: &Yaml) -> i64 {
    y.as_i64()
        .unwrap_or_else(|| panic!("expected an integer, found {y:?}"))
}

/// A sequence, or nothing when the key is absent.
fn seq(y: &Yaml) -> &[Yaml] {
    match y {
        Yaml::Array(a) => a,
        Yaml::BadValue | Yaml::Null => &[],
        other => panic!("expected a sequence, found {other:?}"),
    }
}

fn is_true(y: &Yaml) -> bool {
    y.as_bool() == Some(true)
}

fn of_kind<'a>(objects: &'a [Yaml], kind: &str) -> Vec<&'a Yaml> {
    objects
        .iter()
        .filter(|o| o["kind"].as_str() == Some(kind))
        .collect()
}

fn one<'a>(objects: &'a [Yaml], kind: &str) -> &'a Yaml {
    let found = of_kind(objects, kind);
    assert_eq!(found.len(), 1, "expected one {kind}");
    found[0]
}

fn named<'a>(objects: &'a [Yaml], kind: &str, name: &str) -> &'a Yaml {
    of_kind(objects, kind)
        .into_iter()
        .find(|o| o["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no {kind} named {name}"))
}

/// The map of a `matchLabels` / `labels` node.
fn labels(y: &Yaml) -> BTreeMap<String, String> {
    y.as_hash()
        .map(|h| {
            h.iter()
                .map(|(k, v)| (text(k).to_string(), text(v).to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// `selector` selects pods labelled `pod_labels`.
fn selects(selector: &BTreeMap<String, String>, pod_labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v))
}

fn sts(objects: &[Yaml]) -> &Yaml {
    one(objects, "StatefulSet")
}

fn pod_spec(objects: &[Yaml]) -> &Yaml {
    &sts(objects)["spec"]["template"]["spec"]
}

fn pod_labels(objects: &[Yaml]) -> BTreeMap<String, String> {
    labels(&sts(objects)["spec"]["template"]["metadata"]["labels"])
}

fn main_container(objects: &[Yaml]) -> &Yaml {
    seq(&pod_spec(objects)["containers"])
        .iter()
        .find(|c| c["name"].as_str() == Some("passerelle"))
        .expect("a container named passerelle")
}

/// `--flag value` in the passerelle container's arguments.
fn arg<'a>(objects: &'a [Yaml], flag: &str) -> Option<&'a str> {
    let c = main_container(objects);
    let args: Vec<&str> = seq(&c["command"])
        .iter()
        .chain(seq(&c["args"]))
        .map(text)
        .collect();
    args.iter().position(|a| *a == flag).map(|i| {
        *args
            .get(i + 1)
            .unwrap_or_else(|| panic!("{flag} has no value"))
    })
}

/// Seconds of a Passerelle duration (`"30s"`, `"500ms"`, `"2m"`), rounded up.
fn seconds(d: &str) -> i64 {
    let split = d.find(|c: char| !c.is_ascii_digit()).unwrap_or(d.len());
    let (n, unit) = d.split_at(split);
    let n: i64 = n.parse().unwrap_or_else(|_| panic!("duration {d:?}"));
    match unit {
        "ms" => (n + 999) / 1000,
        "s" | "" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => panic!("duration unit in {d:?}"),
    }
}

/// The container port a probe or Service names (by name or number).
fn container_port(container: &Yaml, port: &Yaml) -> i64 {
    match port {
        Yaml::Integer(n) => *n,
        Yaml::String(name) => seq(&container["ports"])
            .iter()
            .find(|p| p["name"].as_str() == Some(name))
            .map(|p| int(&p["containerPort"]))
            .unwrap_or_else(|| panic!("no container port named {name}")),
        other => panic!("port {other:?}"),
    }
}

/// The configuration the ConfigMap holds, and the path the container reads it from.
fn configuration(objects: &[Yaml]) -> toml::Table {
    let config_path = PathBuf::from(arg(objects, "--config").expect("--config"));
    let file_name = config_path.file_name().expect("a file name");
    let dir = config_path.parent().expect("a folder");
    // The folder of --config is a mount of a ConfigMap volume holding that key.
    let mount = seq(&main_container(objects)["volumeMounts"])
        .iter()
        .find(|m| Path::new(text(&m["mountPath"])) == dir)
        .unwrap_or_else(|| panic!("nothing mounted at {}", dir.display()));
    let volume = seq(&pod_spec(objects)["volumes"])
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the mounted volume");
    let map = named(objects, "ConfigMap", text(&volume["configMap"]["name"]));
    let toml_text = text(&map["data"][file_name.to_str().expect("UTF-8")]);
    toml_text
        .parse()
        .expect("the ConfigMap's passerelle.toml is TOML")
}

/// `host:port` -> port.
fn port_of(address: &str) -> i64 {
    address
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .unwrap_or_else(|| panic!("no port in {address:?}"))
}

#[test]
fn kustomization_lists_every_manifest_and_each_parses() {
    let listed: BTreeSet<String> =
        seq(&load_yaml(&deploy().join("kustomization.yaml"))[0]["resources"])
            .iter()
            .map(|r| text(r).to_string())
            .collect();
    for entry in fs::read_dir(deploy()).expect("deploy/kubernetes") {
        let name = entry
            .expect("entry")
            .file_name()
            .into_string()
            .expect("UTF-8");
        if name.ends_with(".yaml") && name != "kustomization.yaml" {
            assert!(
                listed.contains(&name),
                "{name} is not in kustomization.yaml"
            );
        }
    }
    let objects = objects();
    for o in &objects {
        assert!(o["apiVersion"].as_str().is_some(), "{o:?}");
        assert!(o["metadata"]["name"].as_str().is_some(), "{o:?}");
    }
    for kind in [
        "StatefulSet",
        "ConfigMap",
        "Service",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ServiceAccount",
        "Role",
        "RoleBinding",
    ] {
        assert!(!of_kind(&objects, kind).is_empty(), "no {kind}");
    }
}

#[test]
fn a_statefulset_of_several_replicas_behind_its_services() {
    let objects = objects();
    let sts = sts(&objects);
    let replicas = int(&sts["spec"]["replicas"]);
    assert!(replicas >= 2, "replicas: {replicas}");
    let pods = pod_labels(&objects);
    assert!(selects(
        &labels(&sts["spec"]["selector"]["matchLabels"]),
        &pods
    ));
    // The governing Service is headless.
    let governing = named(&objects, "Service", text(&sts["spec"]["serviceName"]));
    assert_eq!(text(&governing["spec"]["clusterIP"]), "None");
    // Every Service selects the pods and targets a port the container declares.
    let container = main_container(&objects);
    for service in of_kind(&objects, "Service") {
        assert!(
            selects(&labels(&service["spec"]["selector"]), &pods),
            "{service:?}"
        );
        for port in seq(&service["spec"]["ports"]) {
            container_port(container, &port["targetPort"]);
        }
    }
    // The listener the SIH calls is the one the configuration binds.
    let config = configuration(&objects);
    let listener = config["listener"]["address"]
        .as_str()
        .expect("listener.address");
    assert!(
        listener.starts_with("0.0.0.0:"),
        "{listener}: reachable from the Service"
    );
    assert_eq!(
        container_port(container, &Yaml::String("internal".into())),
        port_of(listener)
    );
}

#[test]
fn each_replica_gets_its_own_certificate_secret_and_no_secret_is_shared() {
    let objects = objects();
    let sts = sts(&objects);
    let name = text(&sts["metadata"]["name"]);
    let replicas = int(&sts["spec"]["replicas"]);
    let spec = pod_spec(&objects);

    // No Secret reaches a pod through the template, which every replica shares: no
    // secret volume, no projected secret, no env from a Secret.
    for v in seq(&spec["volumes"]) {
        assert!(
            v["secret"].is_badvalue(),
            "a Secret volume is shared by all replicas: {v:?}"
        );
        for source in seq(&v["projected"]["sources"]) {
            assert!(source["secret"].is_badvalue(), "projected Secret: {v:?}");
        }
    }
    let containers: Vec<&Yaml> = seq(&spec["initContainers"])
        .iter()
        .chain(seq(&spec["containers"]))
        .collect();
    for c in &containers {
        for e in seq(&c["env"]) {
            assert!(e["valueFrom"]["secretKeyRef"].is_badvalue(), "{e:?}");
        }
        for e in seq(&c["envFrom"]) {
            assert!(e["secretRef"].is_badvalue(), "{e:?}");
        }
    }

    // The Secrets: one per ordinal, <sts>-<ordinal>-certs, exactly those, get only.
    let role = one(&objects, "Role");
    let rules = seq(&role["rules"]);
    assert_eq!(rules.len(), 1, "{rules:?}");
    let rule = &rules[0];
    assert_eq!(
        seq(&rule["resources"]).iter().map(text).collect::<Vec<_>>(),
        ["secrets"]
    );
    assert_eq!(
        seq(&rule["verbs"]).iter().map(text).collect::<Vec<_>>(),
        ["get"]
    );
    let names: BTreeSet<&str> = seq(&rule["resourceNames"]).iter().map(text).collect();
    let expected: BTreeSet<String> = (0..replicas).map(|i| format!("{name}-{i}-certs")).collect();
    assert_eq!(
        names,
        expected.iter().map(String::as_str).collect::<BTreeSet<_>>(),
        "one Secret per ordinal, and no other"
    );
    let binding = one(&objects, "RoleBinding");
    assert_eq!(
        text(&binding["roleRef"]["name"]),
        text(&role["metadata"]["name"])
    );
    let account = text(&spec["serviceAccountName"]);
    assert!(
        seq(&binding["subjects"])
            .iter()
            .any(|s| s["kind"].as_str() == Some("ServiceAccount") && text(&s["name"]) == account)
    );

    // The init container reads the Secret named after its own pod...
    let init = seq(&spec["initContainers"])
        .iter()
        .find(|c| c["name"].as_str() == Some("certificates"))
        .expect("init container certificates");
    let pod_name = seq(&init["env"])
        .iter()
        .find(|e| e["name"].as_str() == Some("POD_NAME"))
        .expect("POD_NAME");
    assert_eq!(
        text(&pod_name["valueFrom"]["fieldRef"]["fieldPath"]),
        "metadata.name"
    );
    let script: String = seq(&init["command"])
        .iter()
        .map(text)
        .collect::<Vec<_>>()
        .join(" ");
    assert!(script.contains(r#"secret="${POD_NAME}-certs""#), "{script}");
    assert!(script.contains("get secret \"$secret\""), "{script}");
    assert!(script.contains("umask 077"), "keys written 0600: {script}");

    // ...into memory that the passerelle container mounts read-only.
    let certs_dir = "/run/passerelle/certs";
    let mount_of = |c: &Yaml| {
        seq(&c["volumeMounts"])
            .iter()
            .find(|m| m["mountPath"].as_str() == Some(certs_dir))
            .cloned()
    };
    let init_mount = mount_of(init).expect("init container mounts the certificates");
    let main_mount = mount_of(main_container(&objects)).expect("passerelle mounts them");
    assert_eq!(init_mount["name"], main_mount["name"]);
    assert!(is_true(&main_mount["readOnly"]));
    let volume = seq(&spec["volumes"])
        .iter()
        .find(|v| v["name"] == main_mount["name"])
        .expect("certificates volume");
    assert_eq!(
        text(&volume["emptyDir"]["medium"]),
        "Memory",
        "keys never on disk"
    );

    // Only the init container holds an API token.
    assert_eq!(spec["automountServiceAccountToken"].as_bool(), Some(false));
    let token_volumes: Vec<&Yaml> = seq(&spec["volumes"])
        .iter()
        .filter(|v| {
            seq(&v["projected"]["sources"])
                .iter()
                .any(|s| !s["serviceAccountToken"].is_badvalue())
        })
        .collect();
    assert_eq!(token_volumes.len(), 1);
    for c in seq(&spec["containers"]) {
        assert!(
            seq(&c["volumeMounts"])
                .iter()
                .all(|m| m["name"] != token_volumes[0]["name"]),
            "the API token must stay out of {:?}",
            c["name"]
        );
    }
    let expiry = int(&seq(&token_volumes[0]["projected"]["sources"])
        .iter()
        .find(|s| !s["serviceAccountToken"].is_badvalue())
        .expect("token source")["serviceAccountToken"]["expirationSeconds"]);
    assert!(expiry <= 3600, "short-lived token: {expiry}s");

    // Every certificate path of the configuration lies in that memory.
    let config = configuration(&objects);
    let tenants = config["tenants"].as_array().expect("tenants");
    for tenant in tenants {
        let certificates = tenant["certificates"].as_table().expect("certificates");
        for (role, files) in certificates {
            for (key, path) in files.as_table().expect("role table") {
                let path = path.as_str().expect("a path");
                assert!(
                    path.starts_with(&format!("{certs_dir}/")),
                    "tenants.certificates.{role}.{key} = {path}: not in the replica's own certificates"
                );
            }
        }
    }
}

#[test]
fn probes_use_the_admin_listener() {
    let objects = objects();
    let c = main_container(&objects);
    let admin = port_of(
        configuration(&objects)["admin"]["address"]
            .as_str()
            .expect("admin.address"),
    );
    let probe = |kind: &str, path: &str| {
        let get = &c[kind]["httpGet"];
        assert_eq!(text(&get["path"]), path, "{kind}");
        assert_eq!(
            container_port(c, &get["port"]),
            admin,
            "{kind} on the admin port"
        );
        assert!(
            get["httpHeaders"].is_badvalue(),
            "{kind}: no token in the pod spec"
        );
    };
    probe("readinessProbe", "/readyz");
    probe("livenessProbe", "/healthz");
    if !c["startupProbe"].is_badvalue() {
        probe("startupProbe", "/healthz");
    }
    // The admin token would make /readyz answer 401 to the kubelet.
    assert!(
        configuration(&objects)["admin"]
            .get("token_sha256")
            .is_none(),
        "a kubelet httpGet probe cannot send the admin token: restrict the port instead"
    );
}

#[test]
fn every_container_runs_non_root_read_only_without_capabilities() {
    let objects = objects();
    let spec = pod_spec(&objects);
    let pod = &spec["securityContext"];
    assert!(is_true(&pod["runAsNonRoot"]));
    assert!(int(&pod["runAsUser"]) > 0);
    assert_eq!(text(&pod["seccompProfile"]["type"]), "RuntimeDefault");
    if !pod["fsGroup"].is_badvalue() {
        // A recursive chmod at each start would make the audit folder group-writable.
        assert_eq!(text(&pod["fsGroupChangePolicy"]), "OnRootMismatch");
    }
    let containers: Vec<&Yaml> = seq(&spec["initContainers"])
        .iter()
        .chain(seq(&spec["containers"]))
        .collect();
    assert!(containers.len() >= 2);
    for c in containers {
        let name = text(&c["name"]);
        let sc = &c["securityContext"];
        assert_eq!(
            sc["allowPrivilegeEscalation"].as_bool(),
            Some(false),
            "{name}"
        );
        assert!(is_true(&sc["readOnlyRootFilesystem"]), "{name}");
        assert!(!is_true(&sc["privileged"]), "{name}");
        assert!(sc["runAsUser"].as_i64() != Some(0), "{name}");
        let drop: Vec<&str> = seq(&sc["capabilities"]["drop"]).iter().map(text).collect();
        assert_eq!(drop, ["ALL"], "{name}");
        assert!(seq(&sc["capabilities"]["add"]).is_empty(), "{name}");
    }
}

#[test]
fn termination_grace_covers_drain_delay_and_grace() {
    let objects = objects();
    let grace = seconds(arg(&objects, "--grace").expect("--grace"));
    let drain = seconds(arg(&objects, "--drain-delay").expect("--drain-delay"));
    assert!(
        drain > 0,
        "a drain delay lets endpoints drop the pod before it stops accepting"
    );
    // A preStop hook runs before SIGTERM, within the same period.
    let pre_stop = &main_container(&objects)["lifecycle"]["preStop"];
    let pre_stop_seconds = if pre_stop.is_badvalue() {
        0
    } else if !pre_stop["sleep"].is_badvalue() {
        int(&pre_stop["sleep"]["seconds"])
    } else {
        let command: Vec<&str> = seq(&pre_stop["exec"]["command"]).iter().map(text).collect();
        match command.as_slice() {
            ["sleep", n] => n.parse().expect("sleep seconds"),
            other => panic!("preStop {other:?}: only a sleep can be accounted for"),
        }
    };
    let period = int(&pod_spec(&objects)["terminationGracePeriodSeconds"]);
    assert!(
        period >= pre_stop_seconds + drain + grace + 5,
        "terminationGracePeriodSeconds {period} < preStop {pre_stop_seconds} + --drain-delay {drain} + --grace {grace} + 5"
    );
    // The readiness probe notices the drain well within the drain delay.
    let readiness = &main_container(&objects)["readinessProbe"];
    let notice = int(&readiness["periodSeconds"]) * int(&readiness["failureThreshold"]);
    assert!(
        notice <= drain,
        "readiness fails after {notice}s, drain delay {drain}s"
    );
}

#[test]
fn a_disruption_budget_keeps_all_but_one_replica() {
    let objects = objects();
    let pdb = one(&objects, "PodDisruptionBudget");
    assert!(selects(
        &labels(&pdb["spec"]["selector"]["matchLabels"]),
        &pod_labels(&objects)
    ));
    let replicas = int(&sts(&objects)["spec"]["replicas"]);
    match (&pdb["spec"]["maxUnavailable"], &pdb["spec"]["minAvailable"]) {
        (Yaml::Integer(n), Yaml::BadValue) => assert_eq!(*n, 1),
        (Yaml::BadValue, Yaml::Integer(n)) => assert!(*n >= 1 && *n == replicas - 1),
        other => panic!("PodDisruptionBudget: {other:?}"),
    }
}

#[test]
fn the_network_policy_lets_in_only_the_sih_and_monitoring_and_out_only_dns_proxy_and_api() {
    let objects = objects();
    let policy = one(&objects, "NetworkPolicy");
    let spec = &policy["spec"];
    assert!(selects(
        &labels(&spec["podSelector"]["matchLabels"]),
        &pod_labels(&objects)
    ));
    let types: BTreeSet<&str> = seq(&spec["policyTypes"]).iter().map(text).collect();
    assert_eq!(types, BTreeSet::from(["Ingress", "Egress"]));

    let config = configuration(&objects);
    let internal = port_of(config["listener"]["address"].as_str().expect("listener"));
    let admin = port_of(config["admin"]["address"].as_str().expect("admin"));
    let namespace_of = |peer: &Yaml| -> String {
        assert!(
            peer["ipBlock"].is_badvalue(),
            "ingress by address: {peer:?}"
        );
        let ns = labels(&peer["namespaceSelector"]["matchLabels"]);
        ns.get("kubernetes.io/metadata.name")
            .cloned()
            .unwrap_or_else(|| panic!("ingress from a namespace by name: {peer:?}"))
    };
    let mut allowed_in: BTreeMap<i64, BTreeSet<String>> = BTreeMap::new();
    for rule in seq(&spec["ingress"]) {
        let from = seq(&rule["from"]);
        let ports = seq(&rule["ports"]);
        assert!(
            !from.is_empty() && !ports.is_empty(),
            "open ingress rule: {rule:?}"
        );
        for port in ports {
            for peer in from {
                allowed_in
                    .entry(int(&port["port"]))
                    .or_default()
                    .insert(namespace_of(peer));
            }
        }
    }
    assert_eq!(
        allowed_in,
        BTreeMap::from([
            (internal, BTreeSet::from(["sih".to_string()])),
            (admin, BTreeSet::from(["monitoring".to_string()])),
        ])
    );

    // Out: DNS to kube-system, the configured forward proxy, the API server; each rule
    // names its peers and ports.
    let proxy = config["egress"]["proxy"].as_str().expect("[egress] proxy");
    let proxy_port = port_of(proxy);
    let mut kinds = BTreeSet::new();
    for rule in seq(&spec["egress"]) {
        let to = seq(&rule["to"]);
        let ports: BTreeSet<i64> = seq(&rule["ports"])
            .iter()
            .map(|p| int(&p["port"]))
            .collect();
        assert!(
            !to.is_empty() && !ports.is_empty(),
            "open egress rule: {rule:?}"
        );
        for peer in to {
            if let Some(cidr) = peer["ipBlock"]["cidr"].as_str() {
                assert!(
                    cidr.ends_with("/32"),
                    "egress to {cidr}: one address (the API server)"
                );
                assert_eq!(ports, BTreeSet::from([6443]), "{rule:?}");
                kinds.insert("api");
                continue;
            }
            let ns = labels(&peer["namespaceSelector"]["matchLabels"]);
            let pods = labels(&peer["podSelector"]["matchLabels"]);
            assert!(
                !pods.is_empty(),
                "egress to every pod of a namespace: {peer:?}"
            );
            match ns.get("kubernetes.io/metadata.name").map(String::as_str) {
                Some("kube-system") => {
                    assert_eq!(ports, BTreeSet::from([53]), "{rule:?}");
                    kinds.insert("dns");
                }
                Some(other) => {
                    assert!(
                        proxy.contains(&format!(".{other}.")),
                        "egress to {other}: not {proxy}"
                    );
                    assert_eq!(ports, BTreeSet::from([proxy_port]), "{rule:?}");
                    kinds.insert("proxy");
                }
                None => panic!("egress peer without a namespace: {peer:?}"),
            }
        }
    }
    assert_eq!(kinds, BTreeSet::from(["api", "dns", "proxy"]));
    // Both national services go through the proxy (no `egress = "direct"`).
    for service in ["dmp", "insi"] {
        assert_ne!(
            config[service].get("egress").and_then(|e| e.as_str()),
            Some("direct"),
            "{service} would need a direct egress rule"
        );
    }
}

/// The ConfigMap's configuration, with the files of the three mounts it names taken
/// from the test PKI, passes the validation `passerelle check` and `run` make.
#[test]
fn the_configmap_configuration_validates_once_the_mounts_hold_certificates() {
    let objects = objects();
    let mut config = configuration(&objects);
    let pki = shared_test_pki().expect("test PKI");
    let tenant = &pki.tenants[0];
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();

    // Where each absolute path of the configuration lives in the pod, and here.
    let container = main_container(&objects);
    let mounts: Vec<String> = seq(&container["volumeMounts"])
        .iter()
        .map(|m| text(&m["mountPath"]).to_string())
        .collect();
    let audit_mount = "/var/lib/passerelle";
    assert!(mounts.iter().any(|m| m == audit_mount));
    let claim = seq(&sts(&objects)["spec"]["volumeClaimTemplates"])
        .iter()
        .find(|c| {
            seq(&container["volumeMounts"])
                .iter()
                .any(|m| m["name"] == c["metadata"]["name"] && text(&m["mountPath"]) == audit_mount)
        });
    assert!(
        claim.is_some(),
        "the audit trail is on the replica's own volume"
    );

    fn relocate(value: &mut toml::Value, mounts: &[String], root: &Path, seen: &mut Vec<String>) {
        match value {
            toml::Value::String(s) if s.starts_with('/') => {
                let mount = mounts
                    .iter()
                    .find(|m| s.starts_with(&format!("{m}/")))
                    .unwrap_or_else(|| panic!("{s} is in no mount of the container"));
                seen.push(s.clone());
                let local = root.join(s.trim_start_matches('/'));
                assert!(local.starts_with(root.join(mount.trim_start_matches('/'))));
                *s = local.to_string_lossy().into_owned();
            }
            toml::Value::Array(a) => a.iter_mut().for_each(|v| relocate(v, mounts, root, seen)),
            toml::Value::Table(t) => t
                .iter_mut()
                .for_each(|(_, v)| relocate(v, mounts, root, seen)),
            _ => {}
        }
    }
    let mut paths = Vec::new();
    for section in ["trust", "dmp", "insi", "tenants", "audit"] {
        relocate(
            config.get_mut(section).expect(section),
            &mounts,
            root,
            &mut paths,
        );
    }
    let audit = config["audit"]["path"].as_str().expect("audit.path");
    let audit_dir = Path::new(audit).parent().expect("audit folder");
    assert_ne!(
        audit_dir,
        root.join(audit_mount.trim_start_matches('/')),
        "the volume's root is group-writable (fsGroup): the trail needs a folder of its own"
    );
    // The test PKI's first tenant stands for the configured one.
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

    // The files: CA and CRL from the test PKI, each role's PKCS#12 and its password.
    let copy = |from: &Path, to: &str, mode: u32| {
        let to = root.join(to.trim_start_matches('/'));
        fs::create_dir_all(to.parent().expect("folder")).expect("mkdir");
        fs::copy(pki.path(from), &to).expect("copy");
        fs::set_permissions(&to, fs::Permissions::from_mode(mode)).expect("chmod");
    };
    let mut copied = 0;
    for p in &paths {
        let name = Path::new(p)
            .file_name()
            .expect("file name")
            .to_string_lossy()
            .into_owned();
        let source: PathBuf = if p.starts_with("/etc/passerelle/ca/") {
            match name.as_str() {
                "igc-sante-root.pem" | "dmp-server-root.pem" => pki.ca.root.clone(),
                "igc-sante-org.pem" => pki.ca.org_intermediate.clone(),
                n if n.ends_with(".crl") => pki.ca.org_crl.clone(),
                other => panic!("unexpected CA file {other}"),
            }
        } else if p.starts_with("/run/passerelle/certs/") {
            let leaf = ["dmp-auth", "dmp-sign", "insi-auto", "insi-manu"]
                .iter()
                .zip([
                    &tenant.dmp_auth,
                    &tenant.dmp_sign,
                    &tenant.insi_auto,
                    &tenant.insi_manu,
                ])
                .find(|(role, _)| name.contains(&format!(".{role}.")))
                .map(|(_, leaf)| leaf)
                .unwrap_or_else(|| panic!("unexpected certificate file {name}"));
            if name.ends_with(".p12.password") {
                leaf.p12_password.clone()
            } else if name.ends_with(".p12") {
                leaf.p12.clone()
            } else {
                panic!("unexpected certificate file {name}")
            }
        } else {
            continue; // the audit trail: Passerelle creates it
        };
        copy(&source, p, 0o600);
        copied += 1;
    }
    assert!(copied >= 8, "{paths:?}");

    let path = root.join("passerelle.toml");
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
