//! Mock DMP and mock INSi servers for tests, benchmarks and the sandbox.
//!
//! Filled by the mocks issue; the crate exists so the workspace has its final shape.
