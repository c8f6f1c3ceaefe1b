//! `transfer`: a downstream task learnt from a trained run (the paper's Table 2 and the
//! transfer half of Table 3). The student gets a plain network of the same architecture —
//! no experts, one new head for the downstream classes — initialised from
//!
//! - `expert:NAME`: department NAME's fused expert, `W = W0 + s·reshape(B_t·A_t)` in every
//!   expert conv, the shared BN and every other layer as trained;
//! - `shared`: the shared backbone alone (`W0`; the paper's † fallback);
//! - `scratch`: nothing (random initialisation, the same architecture),
//!
//! and fine-tuned whole with AdamW and a cosine schedule (paper: lr 5e-5). The result is an
//! ordinary one-department checkpoint: `eval` scores it, `lorkd pack` packs it as a plain
//! single-expert bundle.
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use anyhow::Context;
use lorkd_data::{Dataset, Split};
use serde::{Deserialize, Serialize};
use tch::nn::OptimizerConfig;
use tch::{nn, Tensor};

use super::data as bridge;
use super::input::Input;
use super::io;
use super::loss::department_ce;
use super::run::{department_accuracy, mean, Control, Epoch, EpochMetrics};
use super::sgd::warmup_cosine_lr;
use crate::checkpoint::Checkpoint;
use crate::config::{Config, Department};
use crate::eks_conv::DeptSel;
use crate::models::shufflenet::ShuffleNetLoRKD;

/// Where the downstream network's weights come from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Init {
    /// A department's fused expert.
    Expert(String),
    /// The shared backbone `W0`.
    Shared,
    /// Random initialisation.
    Scratch,
}

impl FromStr for Init {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "shared" => Ok(Init::Shared),
            "scratch" => Ok(Init::Scratch),
            _ => match s.strip_prefix("expert:") {
                Some(name) if !name.is_empty() => Ok(Init::Expert(name.to_string())),
                _ => Err(format!(
                    "unknown init `{s}` (expert:NAME, shared or scratch)"
                )),
            },
        }
    }
}

impl fmt::Display for Init {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Init::Expert(n) => write!(f, "expert:{n}"),
            Init::Shared => f.write_str("shared"),
            Init::Scratch => f.write_str("scratch"),
        }
    }
}

impl TryFrom<String> for Init {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<Init> for String {
    fn from(i: Init) -> String {
        i.to_string()
    }
}

/// Everything that defines a transfer run (saved as `run.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TransferConfig {
    /// Always `transfer`.
    pub method: String,
    /// The source checkpoint (architecture, input spec and, unless `scratch`, weights).
    pub from: PathBuf,
    /// Initialisation.
    pub init: Init,
    /// Downstream data spec.
    pub data: String,
    /// The downstream task: a department of `data` (None: its only department).
    pub task: Option<String>,
    /// Epochs.
    pub epochs: u64,
    /// Batch size.
    pub batch: usize,
    /// Peak learning rate (AdamW, cosine-annealed to 0).
    pub lr: f64,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Seed of the new head, data order and flips.
    pub seed: u64,
}

impl TransferConfig {
    /// The paper's settings for `from` → `data` with `init`.
    pub fn new(from: &Path, init: Init, data: &str) -> Self {
        TransferConfig {
            method: "transfer".into(),
            from: from.to_path_buf(),
            init,
            data: data.into(),
            task: None,
            epochs: 10,
            batch: 32,
            lr: 5e-5,
            weight_decay: 0.05,
            seed: 1,
        }
    }
}

/// How a transfer ended.
#[derive(Clone, Debug)]
pub struct TransferOutcome {
    /// Metrics of the last epoch.
    pub last: Option<EpochMetrics>,
    /// Stopped by Ctrl-C or `stop_after_steps`.
    pub interrupted: bool,
}

/// The source checkpoint file of `from` (a file, or a run directory's model).
pub fn checkpoint_file(from: &Path) -> PathBuf {
    if from.is_dir() {
        from.join("model.safetensors")
    } else {
        from.to_path_buf()
    }
}

/// The downstream network's initial variables from `src` (`None`: scratch): every backbone
/// variable of the source by name, expert convs fused for department `t`; heads are new.
///
/// # Errors
/// A variable the source lacks or holds with another shape.
pub fn init_from(vs: &nn::VarStore, src: &Checkpoint, t: Option<usize>) -> anyhow::Result<()> {
    let s = src.config.scaling();
    let tensors: HashMap<&str, &Tensor> =
        src.tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    tch::no_grad(|| -> anyhow::Result<()> {
        for (name, var) in vs.variables() {
            if name.starts_with("heads.") || name.starts_with("head.") {
                continue;
            }
            let w = tensors
                .get(name.as_str())
                .with_context(|| format!("source checkpoint has no `{name}`"))?;
            anyhow::ensure!(
                w.size() == var.size(),
                "`{name}`: source shape {:?}, downstream {:?}",
                w.size(),
                var.size()
            );
            let prefix = name.strip_suffix(".weight");
            let factors = prefix.and_then(|p| {
                Some((
                    tensors.get(format!("{p}.lora_A").as_str())?,
                    tensors.get(format!("{p}.lora_B").as_str())?,
                ))
            });
            let value = match (t, factors) {
                (Some(t), Some((a, b))) => {
                    let t = t as i64;
                    *w + b.get(t).matmul(&a.get(t)).reshape(w.size()) * s
                }
                _ => w.shallow_clone(),
            };
            var.shallow_clone()
                .copy_(&value.to_device(var.device()).to_kind(var.kind()));
        }
        Ok(())
    })
}

/// The downstream network for `task`: the source's architecture and input spec, no experts,
/// one new head, initialised as `init` says (heads always fresh, from libtorch's RNG).
///
/// # Errors
/// An unknown department, `expert:` on a source without experts, mismatched variables.
pub fn downstream_model(
    src: &Checkpoint,
    init: &Init,
    task: Department,
    device: tch::Device,
) -> anyhow::Result<(Config, nn::VarStore, ShuffleNetLoRKD)> {
    let expert = match init {
        Init::Expert(name) => {
            anyhow::ensure!(
                src.config.rank > 0,
                "no department experts in the source (rank 0): use --init shared"
            );
            Some(
                src.config
                    .department_index(name)
                    .map_err(|e| anyhow::anyhow!("source: {e}"))?,
            )
        }
        _ => None,
    };
    let mut cfg = Config::new(src.config.arch, src.config.in_channels, vec![task]);
    cfg.rank = 0;
    cfg.input_size = src.config.input_size;
    cfg.mean = src.config.mean.clone();
    cfg.std = src.config.std.clone();
    cfg.bn_eps = src.config.bn_eps;
    cfg.validate().map_err(|e| anyhow::anyhow!(e))?;
    let vs = nn::VarStore::new(device);
    let model = ShuffleNetLoRKD::new(&vs.root(), &cfg);
    if *init != Init::Scratch {
        init_from(&vs, src, expert)?;
    }
    Ok((cfg, vs, model))
}

/// Trains the downstream task of `tc` into `run_dir` (which must not hold a run).
///
/// # Errors
/// Unreadable source, unknown department or task, a NaN loss, I/O.
pub fn transfer(
    tc: &TransferConfig,
    run_dir: &Path,
    ctl: &Control,
) -> anyhow::Result<TransferOutcome> {
    anyhow::ensure!(
        !run_dir.join("run.json").exists(),
        "{} already holds a run; choose another directory",
        run_dir.display()
    );
    ctl.apply_threads();
    let file = checkpoint_file(&tc.from);
    let src = Checkpoint::load(&file).with_context(|| format!("loading {}", file.display()))?;
    let ds = Arc::new(Dataset::open_str(&tc.data)?);
    eprintln!("data: {}", ds.summary());
    let task = match &tc.task {
        Some(n) => ds
            .departments()
            .iter()
            .position(|d| &d.name == n)
            .with_context(|| {
                format!(
                    "no task `{n}` in the data (it has {})",
                    names(ds.departments().iter().map(|d| d.name.as_str()))
                )
            })?,
        None => {
            anyhow::ensure!(
                ds.departments().len() == 1,
                "the data has {} departments ({}): choose the task with --task",
                ds.departments().len(),
                names(ds.departments().iter().map(|d| d.name.as_str()))
            );
            0
        }
    };
    let dd = &ds.departments()[task];
    let task_dept = Department {
        name: dd.name.clone(),
        classes: dd.classes.clone(),
    };
    std::fs::create_dir_all(run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    io::write_atomic(
        &run_dir.join("run.json"),
        serde_json::to_string_pretty(tc)?.as_bytes(),
    )?;
    tch::manual_seed(tc.seed as i64);
    let (cfg, vs, model) = downstream_model(&src, &tc.init, task_dept, ctl.device)
        .with_context(|| format!("initialising from {}", file.display()))?;
    let mut opt = nn::AdamW {
        wd: tc.weight_decay,
        ..Default::default()
    }
    .build(&vs, tc.lr)?;

    let transform = bridge::transform(&cfg);
    let input = Input::new(ds.clone(), transform.clone(), ctl);
    let (loader_cfg, per_epoch) =
        ctl.department_train_loader(&ds, task, tc.batch, tc.seed, &transform);
    let total = per_epoch * tc.epochs;
    let (mut step, mut steps_here) = (0u64, 0u64);
    let metrics = run_dir.join("metrics.jsonl");
    let mut outcome = TransferOutcome {
        last: None,
        interrupted: false,
    };
    let save = |vs: &nn::VarStore| -> anyhow::Result<()> {
        let ckpt = Checkpoint::from_var_store(&cfg, vs);
        io::write_atomic(&run_dir.join("model.safetensors"), &ckpt.to_bytes()?)
    };
    save(&vs)?;
    for epoch in 0..tc.epochs {
        tch::manual_seed(tc.seed.wrapping_add(epoch + 1) as i64);
        let loader = input.loader(Split::Train, loader_cfg(epoch))?;
        let mut ep = Epoch::start(
            ctl,
            loader.batches() as u64,
            &format!("epoch {}/{}", epoch + 1, tc.epochs),
        );
        let mut lr = tc.lr;
        for batch in loader {
            let b = batch?;
            let xs = input.images(&b);
            let depts = vec![0i64; b.len()];
            let y = crate::upload(&b.classes, ctl.device);
            let f = model.forward_t(&xs, DeptSel::Shared, true);
            let (ce, ok) = department_ce(&f, &depts, &y, |x, t| model.head_logits(x, t));
            lr = warmup_cosine_lr(tc.lr, step, total, 0);
            opt.set_lr(lr);
            opt.zero_grad();
            ce.backward();
            opt.step();
            step += 1;
            steps_here += 1;
            let zero = Tensor::zeros([], (tch::Kind::Float, ctl.device));
            ep.record(b.len(), &ce, &ce, &zero, &ok).map_err(|e| {
                anyhow::anyhow!("loss is {} at step {step}: stopping; lower --lr", e.loss)
            })?;
            if Epoch::stop_requested(ctl, steps_here) {
                outcome.interrupted = true;
                break;
            }
        }
        if outcome.interrupted {
            ep.abandon();
            return Ok(outcome);
        }
        let tot = ep
            .finish()
            .map_err(|e| anyhow::anyhow!("loss is {}: stopping; lower --lr", e.loss))?;
        let val =
            department_accuracy(&model, &input, Split::Val, Some(task), false, tc.batch, ctl)?;
        let m = EpochMetrics {
            department: Some(dd.name.clone()),
            epoch: epoch + 1,
            step,
            lr,
            loss: tot.loss,
            ce: tot.ce,
            kd: 0.0,
            train_acc: tot.train_acc,
            val_mean: mean(&val),
            val_acc: val,
            images_per_sec: tot.images_per_sec(),
            seconds: tot.seconds,
        };
        save(&vs)?;
        m.append_to(&metrics)?;
        eprintln!(
            "epoch {}/{}: loss {:.4} train acc {:.3} val acc {:.3}",
            epoch + 1,
            tc.epochs,
            m.loss,
            m.train_acc,
            m.val_mean
        );
        outcome.last = Some(m);
    }
    Ok(outcome)
}

fn names<'a>(it: impl Iterator<Item = &'a str>) -> String {
    it.collect::<Vec<_>>().join(", ")
}
