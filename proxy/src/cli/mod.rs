//! Subcommands of the `passerelle` binary.

pub mod audit;
pub mod check;
pub mod health;
pub mod logs;
pub mod run;
pub mod token;
pub mod verify;
pub mod vihf;
