//! Subcommands of the `passerelle` binary.

pub mod check;
