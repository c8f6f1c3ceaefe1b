//! The `lorkd` command line: one module per subcommand, each exposing `Args` and `run`.
use clap::{Parser, Subcommand};

/// lorkd: pack LoRKD department experts into one bundle and work with it.
#[derive(Parser, Debug)]
#[command(name = "lorkd", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
}

/// Runs one parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {}
}
