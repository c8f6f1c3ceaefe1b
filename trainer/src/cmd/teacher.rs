//! `lorkd-train teacher`: trains the foundation model (ResNet-18/50, one unified head over all
//! departments' classes) that `fit --teacher` distils. Logic in [`crate::train::teacher`].
use std::path::PathBuf;

use crate::models::resnet::ResNetArch;
use crate::train::run::install_ctrlc;
use crate::train::teacher::{train_teacher, TeacherConfig};

/// Arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Data: synthetic[:k=v,..] | medmnist:DIR[:name,..] | folder:DIR.
    #[arg(long, default_value = "synthetic")]
    pub data: String,
    /// resnet18 or resnet50.
    #[arg(long, default_value = "resnet18")]
    pub arch: ResNetArch,
    /// Epochs.
    #[arg(long, default_value_t = 10)]
    pub epochs: u64,
    /// Batch size.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Peak learning rate (SGD momentum 0.9, weight decay 1e-4, cosine).
    #[arg(long, default_value_t = 0.05)]
    pub lr: f64,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Input side (default: the data's native size, else 224).
    #[arg(long)]
    pub input_size: Option<i64>,
    #[command(flatten)]
    pub run: super::RunArgs,
    /// Output: a run directory (teacher.safetensors + metrics.jsonl, one line per epoch), or a
    /// FILE.safetensors (metrics then in FILE.metrics.jsonl beside it).
    #[arg(short, long)]
    pub output: PathBuf,
}

/// Runs `teacher`.
pub fn run(a: &Args) -> anyhow::Result<()> {
    install_ctrlc();
    let ctl = a.run.control();
    let tc = TeacherConfig {
        data: a.data.clone(),
        arch: a.arch,
        epochs: a.epochs,
        batch: a.batch,
        lr: a.lr,
        seed: a.seed,
        input_size: a.input_size,
        output: a.output.clone(),
    };
    let val = train_teacher(&tc, &ctl)?;
    let (file, metrics) = tc.paths();
    println!(
        "wrote {} (val top-1 {val:.4}, all classes) and {}",
        file.display(),
        metrics.display()
    );
    Ok(())
}
