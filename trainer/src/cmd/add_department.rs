//! `lorkd-train add-department --from RUN --data NEW -o DIR`: trains the low-rank factors and
//! head of a department the run does not have; `W0`, BN, the other departments' factors and
//! heads stay bit-identical. `--resume DIR` continues an interrupted one. Logic in
//! [`crate::train::finetune::add_department`] (the fine-tune's loop).
use std::path::PathBuf;

use crate::train::finetune::{add_department, FinetuneConfig};
use crate::train::run::install_ctrlc;

/// Arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The trained LoRKD checkpoint (a model.safetensors or its run directory).
    #[arg(long = "from", required_unless_present = "resume")]
    pub from: Option<PathBuf>,
    /// Data holding the checkpoint's departments, in order, then the new one:
    /// synthetic[:k=v,..] | medmnist:DIR[:name,..] | folder:DIR.
    #[arg(long, required_unless_present = "resume")]
    pub data: Option<String>,
    /// The new department's name (default: the data's one department the run lacks).
    #[arg(long)]
    pub dept: Option<String>,
    /// Teacher for the distillation term over the new department's class slice (it must
    /// have been trained on data with the new department).
    #[arg(long)]
    pub teacher: Option<PathBuf>,
    #[command(flatten)]
    pub hyper: super::finetune::Hyper,
    #[command(flatten)]
    pub run: super::RunArgs,
    /// Continue the interrupted run in this directory (its run.json's settings).
    #[arg(long, conflicts_with_all = ["from", "data", "output"])]
    pub resume: Option<PathBuf>,
    /// Run directory (created): run.json, model.safetensors, metrics.jsonl.
    #[arg(short, long, required_unless_present = "resume")]
    pub output: Option<PathBuf>,
}

/// Runs `add-department`.
pub fn run(a: &Args) -> anyhow::Result<()> {
    install_ctrlc();
    let ctl = a.run.control();
    let (fc, dir, resume) = match (&a.resume, &a.from, &a.data, &a.output) {
        (Some(dir), ..) => {
            let p = dir.join("run.json");
            let text = std::fs::read_to_string(&p)
                .map_err(|e| anyhow::anyhow!("{}: {e} (nothing to resume)", p.display()))?;
            let fc: FinetuneConfig =
                serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
            anyhow::ensure!(
                fc.method == "add-department",
                "{} is a `{}` run, not add-department",
                dir.display(),
                fc.method
            );
            (fc, dir.clone(), true)
        }
        (None, Some(from), Some(data), Some(out)) => {
            let from = if from.is_dir() {
                from.join("model.safetensors")
            } else {
                from.clone()
            };
            let mut fc = FinetuneConfig::new(&from, a.dept.as_deref().unwrap_or(""), data);
            fc.method = "add-department".into();
            fc.teacher = a.teacher.clone();
            a.hyper.apply(&mut fc);
            (fc, out.clone(), false)
        }
        _ => anyhow::bail!("give --from, --data and -o, or --resume DIR"),
    };
    let o = add_department(&fc, &dir, &ctl, resume)?;
    match (&o.last, o.interrupted) {
        (_, true) => println!(
            "interrupted; {} holds the last epoch: continue with lorkd-train add-department --resume {0}",
            dir.display()
        ),
        (Some(m), false) => println!(
            "done: new department {} val top-1 {:.4} -> {:.4}; run in {} (model.safetensors: one more department, everything else bit-identical)",
            m.department.as_deref().unwrap_or("?"),
            o.before,
            m.val_mean,
            dir.display()
        ),
        (None, false) => println!("nothing to do (0 epochs left); {} holds the run", dir.display()),
    }
    Ok(())
}
