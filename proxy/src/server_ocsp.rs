//! OCSP for the upstream servers' certificates (`[trust] revocation = "ocsp"` or
//! `"both"`). The status of a server's certificate comes from the answer the server
//! staples in its handshake when it sends one, else from the OCSP responder
//! (`[trust.ocsp] responder`, else the certificate's Authority Information Access).
//! Either is verified like our own certificates' answers
//! ([`read_answer`](crate::ocsp_answer::read_answer)) and kept per certificate until its
//! `nextUpdate` (at most `refresh`), shared by every pool and across reloads: a
//! responder sees one question per server certificate and period, however many
//! connections open (concurrent askers wait for the first one's answer).
//!
//! A connection is checked right after its handshake, before a byte of any request is
//! written ([`ServerOcsp::status`]): revoked → `UpstreamCertificateRevoked`; no status
//! (unknown to the responder, responder down, bad answer) → soft-fail (served, counted
//! in `passerelle_upstream_revocation_soft_failures_total`, alert) or, with
//! `revocation_failure = "hard"`, `UpstreamRevocationUnknown`. A failure is remembered
//! for [`FAILURE_MEMORY`] (at most `retry`), so a responder that is down is not asked on
//! every new connection.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openssl::x509::{X509, X509VerifyResult};
use passerelle_config::UpstreamOcsp;
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;

use crate::ocsp_answer::{OcspVerdict, query, read_answer};

/// The setting that names the servers' responder, for messages.
const SETTING: &str = "trust.ocsp.server_responder";

/// How long a failure to get a status is remembered (at most `retry`).
pub const FAILURE_MEMORY: Duration = Duration::from_secs(30);
/// The shortest time an answer is kept (one just past its `nextUpdate`, within the
/// clock slack, must not make every connection ask again).
const MIN_HOLD: Duration = Duration::from_secs(10);
/// Server certificates remembered at most (a handful in practice); beyond, the
/// expired entries are dropped, then all.
const MAX_CERTIFICATES: usize = 1024;

/// The revocation status of a server's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerStatus {
    Good,
    /// When, and who said so.
    Revoked(String),
    /// Why no status could be established.
    Unknown(String),
}

#[derive(Debug, Clone)]
struct Held {
    status: ServerStatus,
    until: Instant,
    /// The certificate's subject CN, for `/readyz`.
    server: String,
}

#[derive(Debug, Default, Clone)]
struct Slot {
    held: Option<Held>,
    /// Held while the responder is asked about this certificate.
    asking: Arc<tokio::sync::Mutex<()>>,
}

/// What OCSP said of each upstream server certificate, and the counts for the metrics.
#[derive(Debug, Default)]
pub struct ServerOcsp {
    slots: Mutex<HashMap<[u8; 32], Slot>>,
    /// Answers obtained, by (`stapled` | `responder`, `good` | `revoked` | `unknown` |
    /// `error`).
    answers: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// Connections let through without an established status (soft-fail).
    pub soft_failures: AtomicU64,
}

impl ServerOcsp {
    /// The counts of answers obtained, by (source, status).
    pub fn answers(&self) -> BTreeMap<(&'static str, &'static str), u64> {
        self.answers.lock().map(|a| a.clone()).unwrap_or_default()
    }

    fn count(&self, source: &'static str, status: &'static str) {
        if let Ok(mut a) = self.answers.lock() {
            *a.entry((source, status)).or_default() += 1;
        }
    }

    /// The status held for a certificate (SHA-256 of its DER) while it is in force.
    pub fn held(&self, key: &[u8; 32]) -> Option<ServerStatus> {
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots
            .get(key)
            .and_then(|s| s.held.as_ref())
            .filter(|h| h.until > Instant::now())
            .map(|h| h.status.clone())
    }

    /// Forgets every answer: the settings they were obtained under changed.
    pub fn clear(&self) {
        self.slots.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    fn fresh(&self, key: &[u8; 32]) -> Result<ServerStatus, Arc<tokio::sync::Mutex<()>>> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        make_room(&mut slots, key);
        let slot = slots.entry(*key).or_default();
        match &slot.held {
            Some(h) if h.until > Instant::now() => Ok(h.status.clone()),
            _ => Err(Arc::clone(&slot.asking)),
        }
    }

    /// The server certificates whose status is unknown now, and why: `/readyz` lists
    /// them (soft-fail serves them; hard-fail refuses).
    pub fn unknown(&self) -> Vec<(String, String)> {
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let mut out: Vec<(String, String)> = slots
            .values()
            .filter_map(|s| s.held.as_ref())
            .filter(|h| h.until > now)
            .filter_map(|h| match &h.status {
                ServerStatus::Unknown(why) => Some((h.server.clone(), why.clone())),
                _ => None,
            })
            .collect();
        out.sort();
        out
    }

    fn hold(&self, key: [u8; 32], status: ServerStatus, until: Instant, server: String) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if !make_room(&mut slots, &key) {
            return;
        }
        let slot = slots.entry(key).or_default();
        // A revocation still in force is not undone by a "good" (an older stapled
        // answer the server keeps sending, say): only its expiry ends it.
        if let Some(h) = &slot.held
            && matches!(h.status, ServerStatus::Revoked(_))
            && h.until > Instant::now()
            && !matches!(status, ServerStatus::Revoked(_))
        {
            return;
        }
        slot.held = Some(Held {
            status,
            until,
            server,
        });
    }

    /// A stapled answer from a handshake (`end_entity` and the chain the server sent):
    /// kept when it verifies, ignored otherwise (the responder is asked instead).
    pub fn staple(
        &self,
        settings: &UpstreamOcsp,
        anchors: &[Vec<u8>],
        end_entity: &[u8],
        intermediates: &[&[u8]],
        staple: &[u8],
    ) {
        let Some(parties) = Parties::of(end_entity, intermediates, anchors) else {
            return;
        };
        let source = "the server's stapled OCSP answer";
        match read_answer(
            staple,
            source,
            SETTING,
            &parties.leaf,
            &parties.issuer,
            &parties.trust,
        ) {
            Ok((verdict, next_update)) => {
                self.count("stapled", verdict.label());
                let (status, until) = judged(verdict, next_update, settings, source);
                self.hold(parties.key, status, until, common_name(&parties.leaf));
            }
            Err(reason) => {
                self.count("stapled", "error");
                tracing::warn!(
                    error = %reason,
                    "the server's stapled OCSP answer does not count: its responder is asked instead"
                );
            }
        }
    }

    /// The status of the certificate a server presented (`peer`: its chain, leaf
    /// first): held, or asked now (one question at a time per certificate).
    pub async fn status(
        &self,
        settings: &UpstreamOcsp,
        anchors: &[Vec<u8>],
        peer: &[CertificateDer<'_>],
    ) -> ServerStatus {
        let Some((leaf, rest)) = peer.split_first() else {
            return ServerStatus::Unknown("the server presented no certificate".into());
        };
        let key = openssl::sha::sha256(leaf.as_ref());
        let asking = match self.fresh(&key) {
            Ok(status) => return status,
            Err(asking) => asking,
        };
        let _turn = asking.lock().await;
        if let Ok(status) = self.fresh(&key) {
            return status;
        }
        let intermediates: Vec<&[u8]> = rest.iter().map(|c| c.as_ref()).collect();
        let (status, until) = match Parties::of(leaf.as_ref(), &intermediates, anchors) {
            None => failed(
                "the issuer of the server's certificate is not among the certificates it sent nor the trust anchors".into(),
                settings,
            ),
            Some(parties) => match parties.responder(settings) {
                None => failed(
                    "the server's certificate names no http:// OCSP responder (set trust.ocsp.server_responder)".into(),
                    settings,
                ),
                Some(url) => {
                    let answer = query(
                        &url,
                        settings.egress.as_ref(),
                        settings.timeout,
                        &parties.leaf,
                        &parties.issuer,
                    )
                    .await
                    .and_then(|der| {
                        read_answer(
                            &der,
                            url.as_str(),
                            SETTING,
                            &parties.leaf,
                            &parties.issuer,
                            &parties.trust,
                        )
                    });
                    match answer {
                        Ok((verdict, next_update)) => {
                            self.count("responder", verdict.label());
                            judged(verdict, next_update, settings, url.as_str())
                        }
                        Err(reason) => {
                            self.count("responder", "error");
                            failed(reason, settings)
                        }
                    }
                }
            },
        };
        match &status {
            ServerStatus::Good => tracing::debug!("OCSP: the server's certificate is good"),
            ServerStatus::Revoked(why) => tracing::error!(
                reason = %why,
                "the server's certificate is revoked (OCSP): its connections are refused (UpstreamCertificateRevoked)"
            ),
            ServerStatus::Unknown(why) => tracing::warn!(
                reason = %why,
                "no OCSP status for the server's certificate (trust.revocation_failure decides: soft serves, hard refuses)"
            ),
        }
        let server = X509::from_der(leaf.as_ref())
            .map(|c| common_name(&c))
            .unwrap_or_else(|_| "an unreadable certificate".into());
        self.hold(key, status.clone(), until, server);
        status
    }
}

/// Keeps the map within [`MAX_CERTIFICATES`] before `key` is added: drops what is no
/// longer in force, then what is not a revocation (a revocation in force is never
/// forgotten for room). False when there is still no room.
fn make_room(slots: &mut HashMap<[u8; 32], Slot>, key: &[u8; 32]) -> bool {
    if slots.len() < MAX_CERTIFICATES || slots.contains_key(key) {
        return true;
    }
    let now = Instant::now();
    let live = |s: &Slot| s.held.as_ref().is_some_and(|h| h.until > now);
    slots.retain(|_, s| live(s));
    if slots.len() >= MAX_CERTIFICATES {
        slots.retain(|_, s| {
            live(s)
                && matches!(
                    s.held.as_ref().map(|h| &h.status),
                    Some(ServerStatus::Revoked(_))
                )
        });
    }
    slots.len() < MAX_CERTIFICATES
}

/// A verified answer's status, held until its `nextUpdate` (at most `refresh`); an
/// "unknown" only as long as a failure (a certificate issued minutes ago may be known
/// soon).
fn judged(
    verdict: OcspVerdict,
    next_update: Option<OffsetDateTime>,
    settings: &UpstreamOcsp,
    source: &str,
) -> (ServerStatus, Instant) {
    let status = match verdict {
        OcspVerdict::Good => ServerStatus::Good,
        OcspVerdict::Revoked(why) => ServerStatus::Revoked(why),
        OcspVerdict::Unknown => {
            return failed(
                format!("{source}: the responder does not know this certificate"),
                settings,
            );
        }
        OcspVerdict::Failed(why) => return failed(why, settings),
    };
    // No nextUpdate: `refresh`. One already past (accepted within the clock slack):
    // a few seconds, not `refresh`.
    let hold = match next_update {
        None => settings.refresh,
        Some(n) => Duration::try_from(n - OffsetDateTime::now_utc()).unwrap_or(MIN_HOLD),
    };
    (
        status,
        Instant::now() + hold.min(settings.refresh).max(MIN_HOLD),
    )
}

fn failed(reason: String, settings: &UpstreamOcsp) -> (ServerStatus, Instant) {
    let hold = FAILURE_MEMORY.min(settings.retry);
    (ServerStatus::Unknown(reason), Instant::now() + hold)
}

/// A server certificate, its issuer and the CA certificates an answer may chain to.
struct Parties {
    key: [u8; 32],
    leaf: X509,
    issuer: X509,
    trust: Vec<X509>,
}

impl Parties {
    /// The issuer is the sent or anchored certificate whose name matches and whose key
    /// verifies the leaf's signature: the chain was verified by the handshake, so that
    /// key is the real issuer's.
    fn of(end_entity: &[u8], intermediates: &[&[u8]], anchors: &[Vec<u8>]) -> Option<Self> {
        let leaf = X509::from_der(end_entity).ok()?;
        let candidates: Vec<X509> = intermediates
            .iter()
            .copied()
            .chain(anchors.iter().map(Vec::as_slice))
            .filter_map(|der| X509::from_der(der).ok())
            .collect();
        let issuer = candidates
            .iter()
            .find(|ca| {
                ca.issued(&leaf) == X509VerifyResult::OK
                    && ca
                        .public_key()
                        .is_ok_and(|k| leaf.verify(&k).unwrap_or(false))
            })?
            .clone();
        // Trusted: the issuer (its key is authenticated) and the anchors, not whatever
        // else the server sent.
        let mut trust = vec![issuer.clone()];
        trust.extend(anchors.iter().filter_map(|der| X509::from_der(der).ok()));
        Some(Self {
            key: openssl::sha::sha256(end_entity),
            leaf,
            issuer,
            trust,
        })
    }

    fn responder(&self, settings: &UpstreamOcsp) -> Option<url::Url> {
        settings.responder.clone().or_else(|| {
            self.leaf
                .ocsp_responders()
                .ok()?
                .iter()
                .filter_map(|u| url::Url::parse(u).ok())
                .find(|u| u.scheme() == "http" && u.host().is_some())
        })
    }
}

/// The subject's CN (else the whole subject): how a server certificate is named.
fn common_name(cert: &X509) -> String {
    let subject = cert.subject_name();
    subject
        .entries_by_nid(openssl::nid::Nid::COMMONNAME)
        .next()
        .and_then(|e| e.data().to_string().ok())
        .unwrap_or_else(|| format!("{subject:?}"))
}

/// Bumps the soft-failure count (for the metric and its alert).
pub fn soft_failure(board: &ServerOcsp) {
    board.soft_failures.fetch_add(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> UpstreamOcsp {
        UpstreamOcsp {
            responder: None,
            refresh: Duration::from_secs(3600),
            retry: Duration::from_secs(300),
            timeout: Duration::from_secs(10),
            egress: None,
        }
    }

    fn held_for(until: Instant) -> Duration {
        until.saturating_duration_since(Instant::now())
    }

    /// An answer is held until its nextUpdate, at most `refresh`; one already past its
    /// nextUpdate (accepted within the clock slack) a few seconds only; "unknown" and
    /// failures as long as a failure.
    #[test]
    fn answers_are_held_as_long_as_they_say_and_no_longer() {
        let s = settings();
        let now = OffsetDateTime::now_utc();
        let (status, until) = judged(
            OcspVerdict::Good,
            Some(now + time::Duration::minutes(20)),
            &s,
            "x",
        );
        assert_eq!(status, ServerStatus::Good);
        let d = held_for(until);
        assert!(
            d > Duration::from_secs(1190) && d <= Duration::from_secs(1200),
            "{d:?}"
        );
        let (_, until) = judged(
            OcspVerdict::Good,
            Some(now + time::Duration::days(3)),
            &s,
            "x",
        );
        assert!(held_for(until) <= s.refresh);
        let (_, until) = judged(
            OcspVerdict::Good,
            Some(now - time::Duration::minutes(4)),
            &s,
            "x",
        );
        assert!(
            held_for(until) <= MIN_HOLD,
            "a stale answer is not kept for refresh"
        );
        let (status, until) = judged(
            OcspVerdict::Unknown,
            Some(now + time::Duration::days(1)),
            &s,
            "x",
        );
        assert!(matches!(status, ServerStatus::Unknown(_)));
        assert!(held_for(until) <= FAILURE_MEMORY);
    }

    /// The map stays bounded; room is never made by forgetting a revocation in force,
    /// and a "good" never replaces one.
    #[test]
    fn revocations_in_force_are_kept_and_the_map_bounded() {
        let board = ServerOcsp::default();
        let later = Instant::now() + Duration::from_secs(600);
        let revoked = [0xAA; 32];
        board.hold(
            revoked,
            ServerStatus::Revoked("r".into()),
            later,
            "s".into(),
        );
        board.hold(revoked, ServerStatus::Good, later, "s".into());
        assert_eq!(
            board.held(&revoked),
            Some(ServerStatus::Revoked("r".into()))
        );
        for i in 0..(MAX_CERTIFICATES * 2) {
            let mut key = [0u8; 32];
            key[..8].copy_from_slice(&(i as u64).to_be_bytes());
            board.hold(key, ServerStatus::Good, later, "s".into());
        }
        let len = board.slots.lock().map(|s| s.len()).unwrap_or(usize::MAX);
        assert!(len <= MAX_CERTIFICATES, "{len}");
        assert_eq!(
            board.held(&revoked),
            Some(ServerStatus::Revoked("r".into()))
        );
        board.clear();
        assert_eq!(board.held(&revoked), None);
    }
}
