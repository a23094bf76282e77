//! Keys held in PKCS#11 tokens: each probed every few seconds (one signature, on the
//! blocking pool, all keys at once), so that `/readyz` says a token went away, and came
//! back, before a request has to find out. The probe's result is the key's own state
//! ([`passerelle_pkcs11::TokenKey::unavailable`]), which requests read too.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use passerelle_pkcs11::{Pkcs11Error, TokenKey};
use tokio::task::JoinHandle;

use crate::Proxy;

/// Between two rounds of probes.
pub const PROBE_EVERY: Duration = Duration::from_secs(5);
/// A probe not answered within this: the key counts as unavailable (a hung module).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Probes the token keys of the configuration in force, for ever (aborted at shutdown).
pub async fn keep_probed(proxy: Arc<Proxy>) {
    // Per (tenant, role): usable at the last probe (changes are logged once), and a
    // probe still running (a hung module gets no second one).
    let mut usable: HashMap<String, bool> = HashMap::new();
    let mut running: HashMap<String, JoinHandle<Result<(), Pkcs11Error>>> = HashMap::new();
    loop {
        let keys: Vec<(String, Arc<TokenKey>)> = proxy
            .state()
            .credentials()
            .filter_map(|c| {
                let key = Arc::clone(c.token.as_ref()?);
                Some((format!("{} {}", c.tenant, c.role), key))
            })
            .collect();
        usable.retain(|name, _| keys.iter().any(|(n, _)| n == name));
        running.retain(|name, probe| keys.iter().any(|(n, _)| n == name) && !probe.is_finished());
        let mut started = Vec::new();
        for (name, key) in &keys {
            if running.contains_key(name) {
                key.mark_unavailable(format!(
                    "the token has not answered a probe for more than {} s",
                    PROBE_TIMEOUT.as_secs()
                ));
                report(
                    &mut usable,
                    name,
                    Err("its previous probe has not returned".into()),
                );
                continue;
            }
            let probing = Arc::clone(key);
            let handle = tokio::task::spawn_blocking(move || probing.probe());
            started.push((name.clone(), Arc::clone(key), handle));
        }
        // One deadline for the round: the probes run at once.
        let deadline = tokio::time::Instant::now() + PROBE_TIMEOUT;
        for (name, key, mut handle) in started {
            let waited = tokio::time::timeout_at(deadline, &mut handle).await;
            let outcome = match waited {
                Ok(Ok(probed)) => probed.map_err(|e| e.to_string()),
                Ok(Err(e)) => Err(format!("the probe failed: {e}")),
                Err(_) => {
                    let why = format!(
                        "the token did not answer a probe within {} s",
                        PROBE_TIMEOUT.as_secs()
                    );
                    key.mark_unavailable(why.clone());
                    running.insert(name.clone(), handle);
                    Err(why)
                }
            };
            report(&mut usable, &name, outcome);
        }
        tokio::time::sleep(PROBE_EVERY).await;
    }
}

/// Logs a key becoming unusable, or usable again, once.
fn report(usable: &mut HashMap<String, bool>, name: &str, outcome: Result<(), String>) {
    let before = usable.insert(name.to_string(), outcome.is_ok());
    match (outcome, before) {
        (Err(error), Some(true) | None) => tracing::error!(
            credential = %name,
            %error,
            "token key unusable: its requests get KeyUnavailable, /readyz answers 503"
        ),
        (Ok(()), Some(false)) => tracing::info!(credential = %name, "token key usable again"),
        _ => {}
    }
}
