//! `lorkd-train fit`: LoRKD training (or a baseline) into a run directory; `--resume RUN_DIR`
//! continues one exactly. Logic in [`crate::train::fit`].
use std::path::PathBuf;

use crate::config::Arch;
use crate::train::fit::{self, FitConfig, Method};

/// Arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Data: synthetic[:k=v,..] | medmnist:DIR[:name,..] | folder:DIR.
    #[arg(long, default_value = "synthetic", required_unless_present = "resume")]
    pub data: String,
    /// Teacher: a `lorkd-train teacher` safetensors or a TorchScript .pt (omit: no distillation).
    #[arg(long)]
    pub teacher: Option<PathBuf>,
    /// Method: lorkd, or the baselines mtl, mtl-kd, stl, stl-kd.
    #[arg(long, value_enum, default_value = "lorkd")]
    pub method: Method,
    /// Student architecture.
    #[arg(long, default_value = "shufflenet_v2_x1_0")]
    pub arch: Arch,
    /// LoRA rank r of the department experts.
    #[arg(long, default_value_t = 8)]
    pub rank: i64,
    /// lora_alpha (scaling = alpha / r).
    #[arg(long, default_value_t = 16.0)]
    pub lora_alpha: f64,
    /// Input side (default: the data's native size, else 224).
    #[arg(long)]
    pub input_size: Option<i64>,
    /// Epochs.
    #[arg(long, default_value_t = 10)]
    pub epochs: u64,
    /// Batch size (mixed departments).
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Peak learning rate (SGD momentum 0.9, weight decay 1e-4, cosine annealing).
    #[arg(long, default_value_t = 0.05)]
    pub lr: f64,
    /// Linear learning-rate warmup steps before the cosine (0: none). A few hundred steps
    /// make the default lr 0.05 usable on small runs (docs/training.md).
    #[arg(long, default_value_t = 0)]
    pub warmup_steps: u64,
    /// Weight decay.
    #[arg(long, default_value_t = 1e-4)]
    pub weight_decay: f64,
    /// Distillation temperature α.
    #[arg(long, default_value_t = 10.0)]
    pub alpha: f64,
    /// Distillation weight β (0.1: the KD term on the CE's scale, chosen by measurement in
    /// docs/results.md; the paper's 1 made it ~20× the CE and cost accuracy).
    #[arg(long, default_value_t = crate::train::loss::BETA)]
    pub beta: f64,
    /// What is distilled: the teacher's logits (α²·KL) or its pooled features through a
    /// learned projection (the paper's feature-level KD; a `lorkd-train teacher` ResNet).
    #[arg(long, value_enum, default_value = "logits")]
    pub kd: crate::train::fit::Kd,
    /// Seed (initialisation, data order, flips).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Expert-conv mode: auto, eks, lowrank, looped.
    #[arg(long, default_value = "auto")]
    pub expert_conv_mode: String,
    #[command(flatten)]
    pub run: super::RunArgs,
    /// Continue the run in this directory (its run.json gives every setting).
    #[arg(long, conflicts_with = "output")]
    pub resume: Option<PathBuf>,
    /// Run directory (created).
    #[arg(short, long, required_unless_present = "resume")]
    pub output: Option<PathBuf>,
}

/// Runs `fit`.
pub fn run(a: &Args) -> anyhow::Result<()> {
    crate::train::run::install_ctrlc();
    let ctl = a.run.control();
    let (outcome, dir) = if let Some(dir) = &a.resume {
        (fit::resume(dir, &ctl)?, dir.clone())
    } else {
        let dir = a
            .output
            .clone()
            .ok_or_else(|| anyhow::anyhow!("give -o RUN_DIR or --resume RUN_DIR"))?;
        let fc = FitConfig {
            data: a.data.clone(),
            method: a.method,
            arch: a.arch,
            rank: a.rank,
            lora_alpha: a.lora_alpha,
            input_size: a.input_size,
            epochs: a.epochs,
            batch: a.batch,
            lr: a.lr,
            warmup_steps: a.warmup_steps,
            momentum: 0.9,
            weight_decay: a.weight_decay,
            alpha: a.alpha,
            beta: a.beta,
            kd: a.kd,
            seed: a.seed,
            teacher: a.teacher.clone(),
            expert_conv_mode: a.expert_conv_mode.clone(),
        };
        (fit::fit(&fc, &dir, &ctl)?, dir)
    };
    if outcome.interrupted {
        println!(
            "interrupted after epoch {}; resume with: lorkd-train fit --resume {}",
            outcome.epochs_done,
            dir.display()
        );
    } else if let Some(m) = outcome.last {
        println!(
            "done: {} epochs, val mean top-1 {:.4}; run in {}",
            outcome.epochs_done,
            m.val_mean,
            dir.display()
        );
    } else {
        println!(
            "nothing to do: {} already completed {} epochs",
            dir.display(),
            outcome.epochs_done
        );
    }
    Ok(())
}
