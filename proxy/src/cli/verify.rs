//! `passerelle verify`: checks a VIHF assertion or a lot signature document with
//! libxmlsec1 against the given trust anchors. Exit 0 when valid, 1 with the reason.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use passerelle_signing::{SuppliedDocument, TrustAnchors, verify_lot, verify_vihf, xml};

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Trusted anchor (PEM), e.g. the IGC-Santé root; repeatable.
    #[arg(long, value_name = "ROOT.pem", required = true)]
    trust: Vec<PathBuf>,
    /// Untrusted intermediate (PEM) to build the chain; repeatable.
    #[arg(long, value_name = "INTER.pem")]
    untrusted: Vec<PathBuf>,
    /// For a lot signature: folder of the signed documents, each named
    /// `<uniqueId>.<ext>` (`.xml` is canonicalised before digesting).
    #[arg(long, value_name = "DIR")]
    documents: Option<PathBuf>,
    /// The VIHF assertion or lot signature document.
    file: PathBuf,
}

pub fn run(args: &VerifyArgs) -> ExitCode {
    match verify(args) {
        Ok(summary) => {
            println!("valid: {summary}");
            ExitCode::SUCCESS
        }
        Err(reason) => {
            println!("invalid: {reason}");
            ExitCode::FAILURE
        }
    }
}

fn mime_for(path: &Path) -> &'static str {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("xml") => "text/xml",
        Some("pdf") => "application/pdf",
        Some("txt") => "text/plain",
        Some("jpg" | "jpeg") => "image/jpeg",
        _ => "application/octet-stream",
    }
}

fn verify(args: &VerifyArgs) -> Result<String, String> {
    let anchors: Vec<&Path> = args.trust.iter().map(PathBuf::as_path).collect();
    let untrusted: Vec<&Path> = args.untrusted.iter().map(PathBuf::as_path).collect();
    let trust = TrustAnchors::from_files(&anchors, &untrusted).map_err(|e| e.to_string())?;
    let text = std::fs::read_to_string(&args.file)
        .map_err(|e| format!("{}: cannot read: {e}", args.file.display()))?;
    let root = xml::parse(text.trim_start_matches('\u{feff}'))
        .map_err(|e| format!("{}: {e}", args.file.display()))?;
    match root.local.as_ref() {
        "Assertion" => {
            let v = verify_vihf(&text, &trust).map_err(|e| e.to_string())?;
            Ok(format!(
                "VIHF {} signed by {} (serial {}), structure {}",
                v.id,
                v.signer.subject,
                v.signer.serial_hex,
                v.attribute("Identifiant_Structure").unwrap_or("-")
            ))
        }
        "Signature" => {
            let dir = args
                .documents
                .as_ref()
                .ok_or("a lot signature needs --documents DIR with the signed documents")?;
            let mut files = Vec::new();
            for entry in std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
                let path = entry.map_err(|e| e.to_string())?.path();
                if path.is_file() {
                    let bytes =
                        std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                    let unique_id = path
                        .file_stem()
                        .and_then(|s| s.to_str())
                        .unwrap_or_default()
                        .to_string();
                    files.push((unique_id, mime_for(&path), bytes));
                }
            }
            let documents: Vec<SuppliedDocument<'_>> = files
                .iter()
                .map(|(id, mime, bytes)| SuppliedDocument {
                    unique_id: id,
                    mime_type: mime,
                    content: bytes,
                })
                .collect();
            let v = verify_lot(&text, &documents, &trust).map_err(|e| e.to_string())?;
            Ok(format!(
                "lot signature {} signed by {}, {} document(s) match the manifest",
                v.signature_id,
                v.signer.subject,
                v.documents.len()
            ))
        }
        other => Err(format!(
            "{}: root element {other} is neither a SAML Assertion nor a Signature",
            args.file.display()
        )),
    }
}
