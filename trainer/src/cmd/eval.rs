//! `lorkd-train eval CKPT`: top-1 per department and the mean, for the experts and for the
//! shared weights alone, as a table or JSON. Logic in [`crate::train::eval`].
use std::path::PathBuf;

use lorkd_data::Split;

use crate::train::eval::evaluate;
use crate::train::run::Control;

/// Arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A model.safetensors, a run directory (stl runs score each department's model; a
    /// fine-tune run its model), or a teacher (file or `teacher` run directory: each sample
    /// scored by the argmax over its department's class slice of the unified head).
    pub checkpoint: PathBuf,
    /// Data: synthetic[:k=v,..] | medmnist:DIR[:name,..] | folder:DIR (default: the run's).
    #[arg(long)]
    pub data: Option<String>,
    /// train, val or test.
    #[arg(long, default_value = "test")]
    pub split: Split,
    /// Batch size.
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    /// libtorch threads (default: one per core).
    #[arg(long)]
    pub threads: Option<i32>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs `eval`.
pub fn run(a: &Args) -> anyhow::Result<()> {
    let data = match &a.data {
        Some(d) => d.clone(),
        None => crate::cmd::finetune::run_data(&a.checkpoint)
            .filter(|_| a.checkpoint.is_dir())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "--data is required unless CHECKPOINT is a run directory with a run.json ({})",
                    a.checkpoint.display()
                )
            })?,
    };
    if let Some(n) = a.threads {
        tch::set_num_threads(n.max(1));
    }
    let report = evaluate(
        &a.checkpoint,
        &data,
        a.split,
        a.batch,
        &Control {
            progress: false,
            ..Control::default()
        },
    )?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}
