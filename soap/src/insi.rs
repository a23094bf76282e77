//! INSi message shapes (domain.md §7): namespaces, operations and their Actions, and
//! the `ContexteLPS` / `ContexteBAM` header blocks in certificate mode.

use passerelle_signing::xml::Element;

pub const RECSANS_NS: &str = "http://www.cnamts.fr/INSiRecSans";
pub const RECVIT_NS: &str = "http://www.cnamts.fr/INSiRecVit";
pub const RESULTAT_NS: &str = "http://www.cnamts.fr/INSiResultat";
pub const CTXLPS_NS: &str = "urn:siram:lps:ctxlps";
pub const CTXBAM_NS: &str = "urn:siram:bam:ctxbam";
pub const SIRAM_NS: &str = "urn:siram";
pub const OP_TRAITS: &str = "rechercherInsAvecTraitsIdentite";
pub const OP_VITALE: &str = "rechercherInsAvecCarteVitale";
/// Prefix of every INSi WS-Addressing Action; the operation name follows.
pub const ACTION_PREFIX: &str = "urn:ServiceIdentiteCertifiee:1.0.0:";

/// The operation a body element asks for, from its name and namespace.
pub fn operation_of(namespace: &str, local: &str) -> Option<&'static str> {
    match (namespace, local) {
        (RECSANS_NS, "RECSANSVITALE") => Some(OP_TRAITS),
        (RECVIT_NS, "RECVITALE") => Some(OP_VITALE),
        _ => None,
    }
}

/// The software identity an INSi context carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LpsIdentity<'a> {
    /// IDAM given by the CNAM.
    pub idam: &'a str,
    pub name: &'a str,
    pub version: &'a str,
    /// UUID of this installation.
    pub instance: &'a str,
}

/// `ctxlps:ContexteLPS` (Nature CTXLPS, Version 01_00). `emetteur` is the INSi
/// certificate's OU; `temps` an xs:dateTime.
pub fn contexte_lps(id: &str, temps: &str, emetteur: &str, lps: &LpsIdentity<'_>) -> Element {
    let c = |local: &'static str| Element::new(Some("ctxlps"), local);
    c("ContexteLPS")
        .ns(Some("ctxlps"), CTXLPS_NS)
        .attr("Nature", "CTXLPS")
        .attr("Version", "01_00")
        .child(c("Id").text(id.to_string()))
        .child(c("Temps").text(temps.to_string()))
        .child(c("Emetteur").text(emetteur.to_string()))
        .child(
            c("LPS")
                .child(c("IDAM").attr("R", "4").text(lps.idam.to_string()))
                .child(c("Version").text(lps.version.to_string()))
                .child(c("Instance").text(lps.instance.to_string()))
                .child(c("Nom").text(format!("urn:lps:{}:{}", lps.name, lps.version))),
        )
}

/// `ctxbam:ContexteBAM` (Version 01_02) with its mandatory, here empty, `COUVERTURE`.
pub fn contexte_bam(id: &str, temps: &str, emetteur: &str) -> Element {
    let c = |local: &'static str| Element::new(Some("ctxbam"), local);
    c("ContexteBAM")
        .ns(Some("ctxbam"), CTXBAM_NS)
        .attr("Version", "01_02")
        .child(c("Id").text(id.to_string()))
        .child(c("Temps").text(temps.to_string()))
        .child(c("Emetteur").text(emetteur.to_string()))
        .child(c("COUVERTURE"))
}
