//! Shared helpers of the end-to-end tests (this crate's `tests/` folder).
//!
//! Filled by the proxy issue; the crate exists so the workspace has its final shape.
