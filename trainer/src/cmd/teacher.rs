//! `lorkd-train teacher`: trains the foundation model (ResNet-18/50, one unified head over all
//! departments' classes) that `fit --teacher` distils. Logic in [`crate::train::teacher`].
use std::path::PathBuf;

use crate::models::resnet::ResNetArch;
use crate::train::fit::{install_ctrlc, Control};
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
    /// Mixed precision on CUDA: bf16 autocast of the forward passes (default), or off.
    /// Ignored on the CPU. Untested on a GPU (docs/training.md).
    #[arg(long, value_enum, default_value = "bf16")]
    pub amp: crate::amp::Amp,
    /// libtorch threads (default: one per core; 1 is faster on a busy machine).
    #[arg(long)]
    pub threads: Option<i32>,
    /// Data loader threads.
    #[arg(long)]
    pub workers: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Output: a run directory (teacher.safetensors + metrics.jsonl, one line per epoch), or a
    /// FILE.safetensors (metrics then in FILE.metrics.jsonl beside it).
    #[arg(short, long)]
    pub output: PathBuf,
}

/// Runs `teacher`.
pub fn run(a: &Args) -> anyhow::Result<()> {
    install_ctrlc();
    let mut ctl = Control {
        threads: a.threads,
        progress: !a.quiet,
        ..Control::default()
    };
    if let Some(w) = a.workers {
        ctl.workers = w.max(1);
    }
    ctl.amp = a.amp.enabled(ctl.device);
    if ctl.amp {
        eprintln!("mixed precision: bf16 autocast on {:?}", ctl.device);
    }
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
