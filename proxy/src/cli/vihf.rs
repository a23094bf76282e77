//! `passerelle vihf sign`: builds and signs a VIHF for a tenant from a JSON context,
//! with the tenant's ORG SIGN key; the signed assertion goes to stdout.

use std::path::PathBuf;
use std::process::ExitCode;

use passerelle_config::{CertRole, StructureId, TenantId};
use passerelle_signing::{SoftwareIdentity, VihfContext, sign_vihf, signer_for};

#[derive(Debug, clap::Subcommand)]
pub enum VihfCommand {
    /// Build and sign a VIHF token; print the assertion.
    Sign(SignArgs),
}

#[derive(Debug, clap::Args)]
pub struct SignArgs {
    /// Configuration file (TOML).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Tenant whose ORG SIGN certificate signs.
    #[arg(long, value_name = "ID")]
    tenant: String,
    /// VIHF context (JSON): see examples/vihf-context.json.
    #[arg(long, value_name = "FILE")]
    context: PathBuf,
}

pub fn run(command: &VihfCommand) -> ExitCode {
    match command {
        VihfCommand::Sign(args) => match sign(args) {
            Ok(xml) => {
                println!("{xml}");
                ExitCode::SUCCESS
            }
            Err(message) => {
                eprintln!("passerelle vihf sign: {message}");
                ExitCode::FAILURE
            }
        },
    }
}

fn sign(args: &SignArgs) -> Result<String, String> {
    let config = passerelle_config::load(&args.config).map_err(|e| e.to_string())?;
    let id: TenantId = args.tenant.parse().map_err(|e| format!("--tenant: {e}"))?;
    let tenant = config
        .tenant(&id)
        .ok_or_else(|| format!("--tenant: no tenant {id} in {}", args.config.display()))?;
    let material = tenant
        .certificates
        .get(&CertRole::DmpSign)
        .ok_or_else(|| format!("tenant {id} has no dmp_sign certificate"))?;
    let json = std::fs::read_to_string(&args.context)
        .map_err(|e| format!("{}: cannot read: {e}", args.context.display()))?;
    let context =
        VihfContext::from_json(&json).map_err(|e| format!("{}: {e}", args.context.display()))?;
    let structure: StructureId = context.validate().map_err(|e| e.to_string())?;
    if !tenant.owns_structure(&structure) {
        return Err(format!(
            "{}: structure_id {structure} is neither tenant {id}'s legal entity ({}) nor one of its geographic entities",
            args.context.display(),
            tenant.structure_id
        ));
    }
    let software = SoftwareIdentity {
        name: config.software.lps_name.clone(),
        version: config.software.lps_version.clone(),
        homologation_id: config.software.dmp_homologation_id.clone(),
        lps_id: None,
    };
    let signer = signer_for(material).map_err(|e| e.to_string())?;
    let signed = sign_vihf(
        &context,
        &software,
        signer.as_ref(),
        time::OffsetDateTime::now_utc(),
    )
    .map_err(|e| e.to_string())?;
    Ok(signed.xml())
}
