//! Minimal DER encoding for the few IGC-Santé leaf extensions rcgen has no model for
//! (certificate policies, authority information access, private key usage period).
//!
//! Only definite-length encodings of the handful of types those extensions need.

use time::OffsetDateTime;

const SEQUENCE: u8 = 0x30;
const OBJECT_IDENTIFIER: u8 = 0x06;

/// Wraps `content` in a tag-length-value triple.
pub(crate) fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

pub(crate) fn sequence(items: &[Vec<u8>]) -> Vec<u8> {
    tlv(SEQUENCE, &items.concat())
}

/// Encodes an object identifier given as its arcs (`[1, 2, 250, ...]`).
pub(crate) fn oid(arcs: &[u64]) -> Vec<u8> {
    let mut body = Vec::new();
    // The first two arcs share one sub-identifier (X.690 §8.19.4).
    let first = arcs.first().copied().unwrap_or(0) * 40 + arcs.get(1).copied().unwrap_or(0);
    for arc in std::iter::once(first).chain(arcs.iter().skip(2).copied()) {
        let mut groups = vec![(arc & 0x7f) as u8];
        let mut rest = arc >> 7;
        while rest > 0 {
            groups.push(0x80 | (rest & 0x7f) as u8);
            rest >>= 7;
        }
        groups.reverse();
        body.extend(groups);
    }
    tlv(OBJECT_IDENTIFIER, &body)
}

/// `GeneralizedTime` body (`YYYYMMDDHHMMSSZ`), as RFC 5280 §4.1.2.5.2 requires.
fn generalized_time_body(t: OffsetDateTime) -> Vec<u8> {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
    .into_bytes()
}

/// `certificatePolicies ::= SEQUENCE OF PolicyInformation`, one policy without qualifiers.
pub(crate) fn certificate_policies(policy: &[u64]) -> Vec<u8> {
    sequence(&[sequence(&[oid(policy)])])
}

/// `AuthorityInfoAccessSyntax` with one OCSP responder and one caIssuers URI.
pub(crate) fn authority_info_access(ocsp_uri: &str, ca_issuers_uri: &str) -> Vec<u8> {
    const OCSP: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 48, 1];
    const CA_ISSUERS: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 48, 2];
    // accessLocation is a GeneralName; uniformResourceIdentifier is [6] IMPLICIT IA5String.
    let uri = |u: &str| tlv(0x86, u.as_bytes());
    sequence(&[
        sequence(&[oid(OCSP), uri(ocsp_uri)]),
        sequence(&[oid(CA_ISSUERS), uri(ca_issuers_uri)]),
    ])
}

/// `PrivateKeyUsagePeriod ::= SEQUENCE { notBefore [0] IMPLICIT GeneralizedTime, notAfter [1] ... }`
pub(crate) fn private_key_usage_period(
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Vec<u8> {
    sequence(&[
        tlv(0x80, &generalized_time_body(not_before)),
        tlv(0x81, &generalized_time_body(not_after)),
    ])
}

/// A "certs-only" PKCS#7 SignedData (RFC 2315 §9.1 with no signer, the `.p7b` form
/// portals deliver chains in): the certificates, DER, in the given order.
pub(crate) fn pkcs7_certs_only(certificates: &[&[u8]]) -> Vec<u8> {
    const SET: u8 = 0x31;
    const INTEGER: u8 = 0x02;
    const CONTEXT_0: u8 = 0xa0;
    const OID_SIGNED_DATA: &[u64] = &[1, 2, 840, 113549, 1, 7, 2];
    const OID_DATA: &[u64] = &[1, 2, 840, 113549, 1, 7, 1];
    let signed_data = sequence(&[
        tlv(INTEGER, &[1]),
        tlv(SET, &[]),
        sequence(&[oid(OID_DATA)]),
        tlv(CONTEXT_0, &certificates.concat()),
        tlv(SET, &[]),
    ]);
    sequence(&[oid(OID_SIGNED_DATA), tlv(CONTEXT_0, &signed_data)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_long_lengths() {
        assert_eq!(tlv(0x04, &[1, 2]), vec![0x04, 2, 1, 2]);
        let long = tlv(0x04, &[0u8; 300]);
        assert_eq!(&long[..4], &[0x04, 0x82, 0x01, 0x2c]);
        assert_eq!(long.len(), 304);
    }

    #[test]
    fn oid_matches_known_encoding() {
        // 1.2.840.113549.1.1.11 (sha256WithRSAEncryption)
        assert_eq!(
            oid(&[1, 2, 840, 113549, 1, 1, 11]),
            vec![
                0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b
            ]
        );
    }

    #[test]
    fn generalized_time_is_utc_seconds() {
        let t = time::macros::datetime!(2026-03-04 05:06:07 +02:00);
        assert_eq!(generalized_time_body(t), b"20260304030607Z".to_vec());
    }
}
