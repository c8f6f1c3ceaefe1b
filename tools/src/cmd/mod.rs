//! The `lorkd` command line: one module per subcommand, each exposing `Args` and `run`.
use clap::{Parser, Subcommand};

pub mod bench;
pub mod delta;
pub mod eval;
pub mod export_onnx;
pub mod inspect;
pub mod keygen;
pub mod pack;
pub mod report;
pub mod run;
pub mod verify;

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
    /// Pack a trainer checkpoint into a bundle (fold, quantise, calibrate, plan, hash, sign).
    Pack(pack::Args),
    /// Show a bundle's departments, sizes, arena plan, base id and signature status.
    Inspect(inspect::Args),
    /// Generate an ed25519 signing key (KEY, mode 0600) and KEY.pub.
    Keygen(keygen::Args),
    /// Run one department's expert on .npy / image inputs.
    Run(run::Args),
    /// Top-1 per department of a bundle or a device flash image on a dataset split.
    Eval(eval::Args),
    /// Time inference and department switch.
    Bench(bench::Args),
    /// Re-check hashes and signature; compare every department with tract on its ONNX export.
    Verify(verify::Args),
    /// Export one department's fused float expert as ONNX.
    ExportOnnx(export_onnx::Args),
    /// Signed department updates: make, verify, apply to a flash image.
    Delta(delta::Args),
    /// Join evaluation results into the demo's table, report.json and PNG plots.
    Report(report::Args),
}

/// Runs one parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Pack(a) => pack::run(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Keygen(a) => keygen::run(a),
        Command::Run(a) => run::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Verify(a) => verify::run(a),
        Command::ExportOnnx(a) => export_onnx::run(a),
        Command::Delta(a) => delta::run(a),
        Command::Report(a) => report::run(a),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
