//! `lorkd-train finetune --from CKPT --dept NAME -o RUN_DIR`: retrains one department's
//! low-rank factors and head for a field update; every other tensor stays bit-identical.
//! Logic in [`crate::train::finetune`].
use std::path::{Path, PathBuf};

use crate::train::finetune::{finetune, FinetuneConfig};
use crate::train::run::install_ctrlc;

/// Arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The trained LoRKD checkpoint (a model.safetensors or its run directory).
    #[arg(long = "from")]
    pub from: PathBuf,
    /// The department to retrain.
    #[arg(long)]
    pub dept: String,
    /// Data: synthetic[:k=v,..] | medmnist:DIR[:name,..] | folder:DIR (default: the data of
    /// the run the checkpoint comes from).
    #[arg(long)]
    pub data: Option<String>,
    /// Teacher for the distillation term (through the frozen unified head).
    #[arg(long)]
    pub teacher: Option<PathBuf>,
    #[command(flatten)]
    pub hyper: Hyper,
    #[command(flatten)]
    pub run: super::RunArgs,
    /// Run directory (created): run.json, model.safetensors, metrics.jsonl.
    #[arg(short, long)]
    pub output: PathBuf,
}

/// The settings of the one-department training loop (`finetune`, `add-department`).
#[derive(Debug, clap::Args)]
pub struct Hyper {
    /// Epochs over the department's training images.
    #[arg(long, default_value_t = 3)]
    pub epochs: u64,
    /// Batch size.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Peak learning rate (SGD momentum 0.9, cosine annealing).
    #[arg(long, default_value_t = 0.01)]
    pub lr: f64,
    /// Linear learning-rate warmup steps before the cosine.
    #[arg(long, default_value_t = 0)]
    pub warmup_steps: u64,
    /// Weight decay (the department's slice only).
    #[arg(long, default_value_t = 1e-4)]
    pub weight_decay: f64,
    /// Distillation weight β (0: CE only).
    #[arg(long, default_value_t = crate::train::loss::BETA)]
    pub beta: f64,
    /// Seed of the data order and flips (and of a new department's initialisation).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

impl Hyper {
    /// Writes these settings into `fc`.
    pub fn apply(&self, fc: &mut FinetuneConfig) {
        fc.epochs = self.epochs;
        fc.batch = self.batch;
        fc.lr = self.lr;
        fc.warmup_steps = self.warmup_steps;
        fc.weight_decay = self.weight_decay;
        fc.beta = self.beta;
        fc.seed = self.seed;
    }
}

/// The `data` of the run a checkpoint belongs to (`run.json` next to it or in it).
pub fn run_data(ckpt: &Path) -> Option<String> {
    let dir = if ckpt.is_dir() { ckpt } else { ckpt.parent()? };
    let text = std::fs::read_to_string(dir.join("run.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["data"].as_str().map(str::to_string)
}

/// Runs `finetune`.
pub fn run(a: &Args) -> anyhow::Result<()> {
    install_ctrlc();
    let from = if a.from.is_dir() {
        a.from.join("model.safetensors")
    } else {
        a.from.clone()
    };
    let data = match &a.data {
        Some(d) => d.clone(),
        None => run_data(&from).ok_or_else(|| {
            anyhow::anyhow!(
                "--data is required: no run.json next to {} names the data",
                from.display()
            )
        })?,
    };
    let mut fc = FinetuneConfig::new(&from, &a.dept, &data);
    fc.teacher = a.teacher.clone();
    a.hyper.apply(&mut fc);
    let ctl = a.run.control();
    let o = finetune(&fc, &a.output, &ctl)?;
    match (&o.last, o.interrupted) {
        (_, true) => println!("interrupted; {} holds the last epoch", a.output.display()),
        (Some(m), false) => println!(
            "done: department {} val top-1 {:.4} -> {:.4}; run in {} (model.safetensors: only its factors and head changed)",
            a.dept,
            o.before,
            m.val_mean,
            a.output.display()
        ),
        (None, false) => println!("nothing to do (0 epochs); {} is the input", a.output.display()),
    }
    Ok(())
}
