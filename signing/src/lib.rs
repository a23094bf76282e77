//! Signing for the DMP: the `Signer` abstraction, VIHF token building and signing,
//! submission-lot (XAdES-BES) signatures, and their verification with libxmlsec1.
//!
//! Filled by the signing issue; the crate exists so the workspace has its final shape.
