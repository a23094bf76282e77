//! Load generator, scenarios and comparisons (direct, Passerelle, nginx).
//!
//! Filled by the benchmarks issue; the crate exists so the workspace has its final shape.
