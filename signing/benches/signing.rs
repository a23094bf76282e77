//! `cargo bench -p passerelle-signing --bench signing`
//!
//! VIHF build+sign, lot signature (3 documents x 100 KB, one of them XML), and the raw
//! RSA-2048 signature of the same ORG SIGN key, on one core, in the same run. Criterion
//! measures each; the iterations it times are also summed here so that the rates and
//! the ratios to the raw RSA rate are printed at the end.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use passerelle_config::CertRole;
use passerelle_signing::{
    DigestAlgorithm, DocumentDigest, LotRequest, Signer, SoftwareIdentity, SoftwareSigner,
    VihfContext, sign_lot, sign_vihf,
};

static TOTALS: Mutex<BTreeMap<&'static str, (u64, Duration)>> = Mutex::new(BTreeMap::new());

fn timed(name: &'static str, iters: u64, mut op: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        op();
    }
    let elapsed = start.elapsed();
    if let Ok(mut t) = TOTALS.lock() {
        let e = t.entry(name).or_insert((0, Duration::ZERO));
        e.0 += iters;
        e.1 += elapsed;
    }
    elapsed
}

fn main() {
    let pki = passerelle_certs_test::shared_test_pki().expect("test PKI");
    let config = passerelle_config::load(&pki.path(&pki.config)).expect("sandbox config");
    let material = &config.tenants[0].certificates[&CertRole::DmpSign];
    let signer = SoftwareSigner::from_material(material).expect("signer");
    let ctx = VihfContext::from_json(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/vihf-context.json"
        ))
        .expect("example context"),
    )
    .expect("context");
    let software = SoftwareIdentity {
        name: "PASSERELLE".into(),
        version: "0.1.0".into(),
        homologation_id: "TEST-HOMOLOGATION-0000".into(),
        lps_id: None,
    };
    let mut xml_doc = String::from("<ClinicalDocument xmlns=\"urn:hl7-org:v3\">");
    while xml_doc.len() < 100_000 {
        xml_doc.push_str("<section><text>Compte rendu &amp; conclusion</text></section>");
    }
    xml_doc.push_str("</ClinicalDocument>");
    let docs: Vec<(&str, &str, Vec<u8>)> = vec![
        ("1.2.250.1.999.1.1.7.1", "text/xml", xml_doc.into_bytes()),
        (
            "1.2.250.1.999.1.1.7.2",
            "application/pdf",
            vec![7u8; 100_000],
        ),
        ("1.2.250.1.999.1.1.7.3", "text/plain", vec![b'x'; 100_000]),
    ];
    // The raw operation every signed request pays: sign a SignedInfo-sized message.
    let message = vec![0x42u8; 700];

    let mut c = Criterion::default()
        .configure_from_args()
        .sample_size(30)
        .measurement_time(Duration::from_secs(6))
        .warm_up_time(Duration::from_secs(1));
    let mut group = c.benchmark_group("signing");
    group.throughput(Throughput::Elements(1));
    group.bench_function("rsa2048_raw_sign", |b| {
        b.iter_custom(|n| {
            timed("rsa2048_raw_sign", n, || {
                std::hint::black_box(
                    signer
                        .sign(DigestAlgorithm::Sha256, &message)
                        .expect("sign"),
                );
            })
        })
    });
    group.bench_function("vihf_build_and_sign", |b| {
        b.iter_custom(|n| {
            timed("vihf_build_and_sign", n, || {
                std::hint::black_box(
                    sign_vihf(&ctx, &software, &signer, time::OffsetDateTime::now_utc())
                        .expect("vihf"),
                );
            })
        })
    });
    group.bench_function("lot_sign_3x100KB", |b| {
        b.iter_custom(|n| {
            timed("lot_sign_3x100KB", n, || {
                let request = LotRequest {
                    submission_set_unique_id: "1.2.250.1.999.1.1.7.100".into(),
                    signature_unique_id: "1.2.250.1.999.1.1.7.200".into(),
                    documents: docs
                        .iter()
                        .map(|(id, mime, bytes)| {
                            DocumentDigest::compute(id, mime, bytes, DigestAlgorithm::Sha256)
                                .expect("digest")
                        })
                        .collect(),
                    digest: DigestAlgorithm::Sha256,
                    signing_time: time::OffsetDateTime::now_utc(),
                };
                std::hint::black_box(sign_lot(&request, &signer).expect("lot"));
            })
        })
    });
    group.finish();
    c.final_summary();

    let totals = TOTALS.lock().map(|t| t.clone()).unwrap_or_default();
    let rate = |name: &str| {
        totals
            .get(name)
            .map(|(n, d)| *n as f64 / d.as_secs_f64())
            .unwrap_or(f64::NAN)
    };
    let raw = rate("rsa2048_raw_sign");
    println!("\nsigning rates on one core (same key, same run):");
    println!(
        "  {:<22} {:>9.0} /s   {:>7.3} ms   ratio 1.00 (baseline)",
        "raw RSA-2048 sign",
        raw,
        1000.0 / raw
    );
    for (name, label) in [
        ("vihf_build_and_sign", "VIHF build + sign"),
        ("lot_sign_3x100KB", "lot sign 3 x 100 KB"),
    ] {
        let r = rate(name);
        println!(
            "  {label:<22} {r:>9.0} /s   {:>7.3} ms   ratio {:.3} of raw RSA",
            1000.0 / r,
            r / raw
        );
    }
}
