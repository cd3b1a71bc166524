//! Subcommands: one file per command, each with `pub struct Args` and `pub fn run`.

pub mod data;
