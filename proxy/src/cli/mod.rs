//! Subcommands of the `passerelle` binary.

pub mod audit;
pub mod check;
pub mod csr;
pub mod health;
pub mod install;
mod lifecycle;
pub mod logs;
pub mod run;
pub mod token;
pub mod verify;
pub mod vihf;
