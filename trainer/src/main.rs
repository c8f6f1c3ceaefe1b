//! `lorkd-train`: parses the command line and dispatches to `lorkd_trainer::cmd::<sub>`.
use clap::{Parser, Subcommand};
use lorkd_trainer::cmd;

#[derive(Parser)]
#[command(
    name = "lorkd-train",
    about = "LoRKD department experts: describe, init, bench, fit, finetune, teacher, transfer, eval, gradcam, eval-bundle",
    version
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Exact parameter / MAC counts (paper Table 4).
    Describe(cmd::describe::Args),
    /// Write a freshly initialised checkpoint.
    Init(cmd::init::Args),
    /// Training-step benchmark of the expert-conv modes.
    Bench(cmd::bench::Args),
    /// Train department experts with the LoRKD loss (or a baseline: mtl, mtl-kd, stl, stl-kd).
    Fit(cmd::fit::Args),
    /// Retrain one department's factors and head (field update); all else stays bit-identical.
    Finetune(cmd::finetune::Args),
    /// Train a department the run does not have (factors and head); all else bit-identical.
    AddDepartment(cmd::add_department::Args),
    /// Train the foundation model (teacher) with one head over all departments' classes.
    Teacher(cmd::teacher::Args),
    /// A downstream task from a department's expert, the shared backbone or scratch.
    Transfer(cmd::transfer::Args),
    /// Top-1 per department: experts vs shared weights.
    Eval(cmd::eval::Args),
    /// Grad-CAM panels: a department's expert next to the shared weights and the teacher.
    Gradcam(cmd::gradcam::Args),
    /// Top-1 per department of a packed bundle, through the device runtime (not libtorch).
    EvalBundle(cmd::eval_bundle::Args),
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(&cli) {
        eprintln!("lorkd-train: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    eprintln!("lorkd-train: device {:?}", lorkd_trainer::default_device());
    match &cli.command {
        Command::Describe(a) => cmd::describe::run(a),
        Command::Init(a) => cmd::init::run(a),
        Command::Bench(a) => cmd::bench::run(a),
        Command::Fit(a) => cmd::fit::run(a),
        Command::Finetune(a) => cmd::finetune::run(a),
        Command::AddDepartment(a) => cmd::add_department::run(a),
        Command::Teacher(a) => cmd::teacher::run(a),
        Command::Transfer(a) => cmd::transfer::run(a),
        Command::Eval(a) => cmd::eval::run(a),
        Command::Gradcam(a) => cmd::gradcam::run(a),
        Command::EvalBundle(a) => cmd::eval_bundle::run(a),
    }
}
