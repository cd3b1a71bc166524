//! Subcommands: one file each, `pub struct Args` + `pub fn run(args) -> anyhow::Result<()>`.

pub mod data;
pub mod info;
