//! Subcommands of the `passerelle` binary.

pub mod check;
pub mod verify;
pub mod vihf;
