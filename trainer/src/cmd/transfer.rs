//! `lorkd-train transfer --from RUN --init expert:NAME|shared|scratch --data DOWNSTREAM -o DIR`:
//! a downstream task with a new head, the whole network fine-tuned. Logic in
//! [`crate::train::transfer`].
use std::path::PathBuf;

use crate::train::run::install_ctrlc;
use crate::train::transfer::{transfer, Init, TransferConfig};

/// Arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The trained run (a model.safetensors or its run directory): architecture, input spec
    /// and, unless `--init scratch`, the initial weights.
    #[arg(long = "from")]
    pub from: PathBuf,
    /// expert:NAME (department NAME's fused expert), shared (W0 alone) or scratch.
    #[arg(long)]
    pub init: Init,
    /// Downstream data: synthetic[:k=v,..] | medmnist:DIR[:name,..] | folder:DIR.
    #[arg(long)]
    pub data: String,
    /// The downstream task: a department of the data (needed when it has several).
    #[arg(long)]
    pub task: Option<String>,
    /// Epochs.
    #[arg(long, default_value_t = 10)]
    pub epochs: u64,
    /// Batch size.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Peak learning rate (AdamW, cosine annealing; the paper fine-tunes at 5e-5).
    #[arg(long, default_value_t = 5e-5)]
    pub lr: f64,
    /// AdamW weight decay.
    #[arg(long, default_value_t = 0.05)]
    pub weight_decay: f64,
    /// Seed of the new head, data order and flips.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[command(flatten)]
    pub run: super::RunArgs,
    /// Run directory (created): run.json, model.safetensors, metrics.jsonl.
    #[arg(short, long)]
    pub output: PathBuf,
}

/// Runs `transfer`.
pub fn run(a: &Args) -> anyhow::Result<()> {
    install_ctrlc();
    let mut tc = TransferConfig::new(&a.from, a.init.clone(), &a.data);
    tc.task = a.task.clone();
    tc.epochs = a.epochs;
    tc.batch = a.batch;
    tc.lr = a.lr;
    tc.weight_decay = a.weight_decay;
    tc.seed = a.seed;
    let out = transfer(&tc, &a.output, &a.run.control())?;
    match (out.interrupted, out.last) {
        (true, _) => println!(
            "interrupted; the last finished epoch is in {}",
            a.output.display()
        ),
        (false, Some(m)) => println!(
            "done: {} epochs from {}, val top-1 {:.4}; run in {}",
            m.epoch,
            tc.init,
            m.val_mean,
            a.output.display()
        ),
        (false, None) => println!("no epochs run; {}", a.output.display()),
    }
    Ok(())
}
