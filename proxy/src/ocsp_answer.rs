//! The OCSP protocol, as Passerelle speaks it (RFC 6960, RFC 5019 profile): a request
//! with a SHA-1 CertID and no nonce, sent by HTTP POST; an answer read only when it is
//! signed by the certificate's issuer or a responder that issuer delegated
//! (`id-kp-OCSPSigning`), chaining to the given CA certificates, and within its
//! `thisUpdate` / `nextUpdate` (5 minutes of clock slack; without `nextUpdate`, at most
//! 7 days old). Used for our own certificates ([`crate::ocsp`]) and the upstream
//! servers' ([`crate::server_ocsp`]).

use std::time::Duration;

use bytes::Bytes;
use openssl::hash::MessageDigest;
use openssl::ocsp::{
    OcspCertId, OcspCertStatus, OcspFlag, OcspRequest, OcspResponse, OcspResponseStatus,
};
use openssl::stack::Stack;
use openssl::x509::X509;
use openssl::x509::store::X509StoreBuilder;
use passerelle_config::EgressProxy;
use time::OffsetDateTime;

use crate::fetch::{Fetch, fetch};

/// The largest OCSP answer read (a few KiB in practice).
const MAX_ANSWER: u64 = 1024 * 1024;
/// Clock slack on an answer's `thisUpdate` / `nextUpdate`.
const SLACK_SECONDS: u32 = 300;
/// The oldest answer without `nextUpdate` accepted (a replayed old "good").
const MAX_AGE_SECONDS: u32 = 7 * 24 * 3600;

/// A responder's answer, or why there was none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OcspVerdict {
    Good,
    /// When, and by which responder.
    Revoked(String),
    /// The responder does not know the certificate.
    Unknown,
    /// No usable answer (responder down, bad signature, ...).
    Failed(String),
}

impl OcspVerdict {
    /// `good`, `revoked`, `unknown` or `error`: a metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Good => "good",
            Self::Revoked(_) => "revoked",
            Self::Unknown => "unknown",
            Self::Failed(_) => "error",
        }
    }
}

pub(crate) fn ossl(what: &'static str) -> impl Fn(openssl::error::ErrorStack) -> String {
    move |e| format!("{what}: {e}")
}

/// Asks `url` about `leaf` (SHA-1 CertID, no nonce), within `timeout`: the answer's DER.
pub(crate) async fn query(
    url: &url::Url,
    egress: Option<&EgressProxy>,
    timeout: Duration,
    leaf: &X509,
    issuer: &X509,
) -> Result<Bytes, String> {
    // SHA-1 CertID: what every responder answers (RFC 6960 §4.1.1; RFC 5019).
    let id = OcspCertId::from_cert(MessageDigest::sha1(), leaf, issuer)
        .map_err(ossl("building the request"))?;
    let mut request = OcspRequest::new().map_err(ossl("building the request"))?;
    request.add_id(id).map_err(ossl("building the request"))?;
    let body = request.to_der().map_err(ossl("building the request"))?;
    let exchange = fetch(Fetch {
        url,
        egress,
        post: Some(("application/ocsp-request", Bytes::from(body))),
        accept: "application/ocsp-response",
        max: MAX_ANSWER,
        setting: "trust.ocsp",
    });
    match tokio::time::timeout(timeout, exchange).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!(
            "{url}: no answer within {} s (trust.ocsp.timeout)",
            timeout.as_secs().max(1)
        )),
    }
}

/// Reads and verifies an OCSP answer about `leaf` (from `source`: a responder's URL,
/// or "the server's stapled answer"): signed by `issuer` or a responder it delegated,
/// chaining to `trust` (which holds the issuer), and within its validity. Its verdict
/// and `nextUpdate`; or why it does not count (`setting`: where the responder is set).
pub(crate) fn read_answer(
    answer: &[u8],
    source: &str,
    setting: &str,
    leaf: &X509,
    issuer: &X509,
    trust: &[X509],
) -> Result<(OcspVerdict, Option<OffsetDateTime>), String> {
    let url = source;
    let response = OcspResponse::from_der(answer)
        .map_err(|_| format!("{url}: the answer is not an OCSP response"))?;
    let status = response.status();
    if status != OcspResponseStatus::SUCCESSFUL {
        return Err(format!(
            "{url}: the responder answered {} ({})",
            status.as_raw(),
            match status {
                OcspResponseStatus::MALFORMED_REQUEST => "malformedRequest",
                OcspResponseStatus::INTERNAL_ERROR => "internalError",
                OcspResponseStatus::TRY_LATER => "tryLater",
                OcspResponseStatus::SIG_REQUIRED => "sigRequired",
                OcspResponseStatus::UNAUTHORIZED => {
                    return Err(format!(
                        "{url}: the responder answered 6 (unauthorized: not this certificate's responder? set {setting})"
                    ));
                }
                _ => "unknown status",
            }
        ));
    }
    let basic = response
        .basic()
        .map_err(|_| format!("{url}: no basic OCSP response in the answer"))?;
    let mut store = X509StoreBuilder::new().map_err(ossl("the trust store"))?;
    for ca in trust {
        let _ = store.add_cert(ca.clone());
    }
    let store = store.build();
    // The issuer and the chain as candidate signers: a CA-signed answer need not embed
    // its certificate (RFC 6960 `certs` is optional). Not trusted for that: OpenSSL
    // still requires the issuer itself or a responder it delegated.
    let mut untrusted = Stack::new().map_err(ossl("the trust store"))?;
    for ca in trust {
        let _ = untrusted.push(ca.clone());
    }
    basic
        .verify(&untrusted, &store, OcspFlag::empty())
        .map_err(|e| {
            format!("{url}: the answer's signature does not verify with the certificate's issuer or a responder it delegated: {e}")
        })?;
    let id = OcspCertId::from_cert(MessageDigest::sha1(), leaf, issuer)
        .map_err(ossl("the certificate id"))?;
    let single = basic
        .find_status(&id)
        .ok_or_else(|| format!("{url}: the answer does not speak of this certificate"))?;
    single
        .check_validity(SLACK_SECONDS, Some(MAX_AGE_SECONDS))
        .map_err(|_| format!("{url}: the answer is outside its validity (thisUpdate / nextUpdate): a stale or replayed answer, or our clock is off"))?;
    let next_update = single.next_update().and_then(generalized);
    let verdict = match single.status {
        OcspCertStatus::GOOD => OcspVerdict::Good,
        OcspCertStatus::REVOKED => OcspVerdict::Revoked(format!(
            "revoked on {} according to {}",
            single
                .revocation_time
                .map(ToString::to_string)
                .unwrap_or_else(|| "an unstated date".into()),
            if url.starts_with("http") {
                format!("the OCSP responder {url}")
            } else {
                url.to_string()
            }
        )),
        _ => OcspVerdict::Unknown,
    };
    Ok((verdict, next_update))
}

fn generalized(t: &openssl::asn1::Asn1GeneralizedTimeRef) -> Option<OffsetDateTime> {
    // Asn1GeneralizedTimeRef derefs to no Asn1TimeRef: read it through its text form.
    let text = t.to_string();
    // OpenSSL prints fractional seconds when the time has them.
    let format = time::macros::format_description!(
        "[month repr:short] [day padding:space] [hour]:[minute]:[second][optional [.[subsecond]]] [year] GMT"
    );
    time::PrimitiveDateTime::parse(&text, &format)
        .ok()
        .map(time::PrimitiveDateTime::assume_utc)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// OpenSSL's printed GeneralizedTime, with and without fractional seconds.
    #[test]
    fn generalized_times_are_read_with_or_without_fractions() {
        for (der_text, expected) in [
            ("20261202015550Z", "2026-12-02T01:55:50Z"),
            ("20261202015550.123Z", "2026-12-02T01:55:50.123Z"),
            ("20260105090000Z", "2026-01-05T09:00:00Z"),
        ] {
            let t = openssl::asn1::Asn1GeneralizedTime::from_str(der_text).expect("time");
            let parsed = generalized(&t).unwrap_or_else(|| panic!("{der_text} not read"));
            let expected =
                OffsetDateTime::parse(expected, &time::format_description::well_known::Rfc3339)
                    .expect("rfc3339");
            assert_eq!(parsed, expected, "{der_text}");
        }
    }
}
