//! Subcommands of the `passerelle` binary.

pub mod check;
pub mod logs;
pub mod run;
pub mod token;
pub mod verify;
pub mod vihf;
