//! Subcommands of the `passerelle` binary.

pub mod check;
pub mod run;
pub mod verify;
pub mod vihf;
