//! The SOAP layer shared by the proxy and the mocks: what a message *is*, not what a
//! service does with it.
//!
//! - [`envelope`]: parsing an envelope (SOAP 1.2, SOAP 1.1 tolerated) through the signing
//!   crate's DTD-refusing parser, header and body access, writing envelopes and SOAP 1.2
//!   faults.
//! - [`mtom`]: MTOM/XOP `multipart/related` messages: parsing into a root part and
//!   attachments (zero-copy slices of the body), and building them.
//! - [`dmp`]: the DMP's operations as a closed set: service path, Action spellings, and
//!   whether each one only reads or changes state.
//! - [`xds`]: the DMP's XDS vocabulary, the Actions of each DMP service, and reading an
//!   ITI-41 submission into its documents.
//! - [`insi`]: INSi operations and the `ContexteLPS` / `ContexteBAM` header blocks.

pub mod dmp;
pub mod envelope;
pub mod insi;
pub mod mtom;
pub mod xds;

pub use envelope::{
    Envelope, EnvelopeError, Fault, FaultCode, SOAP11, SOAP12, WSA, envelope, fault_envelope,
};
