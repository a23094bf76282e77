//! Passerelle's load benchmarks: a load generator, the scenarios, resource readings and
//! the comparison chart. `cargo bench -p passerelle-benches --bench compare` runs
//! Passerelle against direct access to the (mock) services and against nginx, in one run.
//!
//! - [`load`]: fixed-concurrency and fixed-rate load over keep-alive connections (plain
//!   or mutual TLS), HDR latencies.
//! - [`workloads`]: `insi`, `dmp-query` and `dmp-submit`, as sent directly (signed in
//!   advance) or through a proxy.
//! - [`resources`]: CPU seconds and peak memory of a process, from `/proc`.
//! - [`chart`]: throughput and p99 per scenario and target, as a PNG.
//! - [`stack`]: Passerelle and the mocks as processes of their own.
//! - [`soak`]: the long run's samples, verdicts, CSV and chart (`scripts/soak.sh`).

pub mod chart;
pub mod load;
pub mod resources;
pub mod soak;
pub mod stack;
pub mod workloads;
