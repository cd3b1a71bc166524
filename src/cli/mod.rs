//! Subcommands: one file each, `pub struct Args` + `pub fn run(args) -> anyhow::Result<()>`.
//! `setup` holds what train, experiment, eval and predict share.

pub mod bench;
pub mod data;
pub mod eval;
pub mod experiment;
pub mod info;
pub mod predict;
pub mod serve;
pub mod setup;
pub mod train;
