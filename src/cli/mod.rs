//! Subcommands: one file each, `pub struct Args` + `pub fn run(args) -> anyhow::Result<()>`.

pub mod info;
pub mod bench;
