//! `finetune`: retrains ONE department of a trained LoRKD checkpoint for a field update.
//!
//! Only department t's low-rank factors (`lora_A[t]`, `lora_B[t]` of every expert conv) and
//! its head (`heads.<t>.*`) move. Everything else stays bit-identical to the input checkpoint:
//! the shared weights `W0`, the depthwise convs, BatchNorm (γ, β AND running statistics: the
//! network runs with BN in eval mode, so the statistics are neither used from the batch nor
//! updated), the other departments' factor slices and heads, and the unified head. That is
//! what makes the result shippable as a delta: `lorkd delta make` packs it and refuses it if
//! the folded shared part differs from the bundle's by a single bit.
//!
//! Loss: the `fit` objective restricted to the department — CE on head t over the
//! department's training images, plus `β·α²·KL(teacher ‖ unified head)` when a teacher is
//! given and the checkpoint has a unified head (the head is frozen; the gradient reaches the
//! factors through the features). Optimiser: SGD momentum / weight decay as in `fit`, applied
//! to the department's slice only (weight decay on a whole `[T, …]` factor tensor would
//! shrink the other departments), cosine annealing after a linear warmup.
//!
//! A run directory holds `run.json` (these settings, with `"method": "finetune"`),
//! `model.safetensors` (rewritten atomically after every epoch) and `metrics.jsonl`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use lorkd_data::{Dataset, LoaderConfig, Split};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::data as bridge;
use super::input::Input;
use super::io;
use super::loss::{department_ce, distillation};
use super::run::{department_accuracy, mean, Control, Epoch, EpochMetrics};
use super::sgd::warmup_cosine_lr;
use super::teacher::Teacher;
use crate::checkpoint::Checkpoint;
use crate::eks_conv::DeptSel;

/// Settings of a fine-tune (saved as `run.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FinetuneConfig {
    /// Always `finetune` (tells `eval` and people what the run is).
    pub method: String,
    /// The trained checkpoint to start from.
    pub from: PathBuf,
    /// The department to retrain.
    pub department: String,
    /// `--data` spec (must hold the checkpoint's departments).
    pub data: String,
    /// Teacher (distillation through the frozen unified head), if any.
    pub teacher: Option<PathBuf>,
    /// Epochs over the department's training images.
    pub epochs: u64,
    /// Batch size.
    pub batch: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Linear warmup steps before the cosine.
    pub warmup_steps: u64,
    /// SGD momentum.
    pub momentum: f64,
    /// Weight decay (on the department's slice only).
    pub weight_decay: f64,
    /// Distillation temperature α.
    pub alpha: f64,
    /// Distillation weight β.
    pub beta: f64,
    /// Seed of the data order and flips.
    pub seed: u64,
}

impl FinetuneConfig {
    /// Defaults for retraining `department` of `from` on `data`.
    pub fn new(from: &Path, department: &str, data: &str) -> Self {
        FinetuneConfig {
            method: "finetune".into(),
            from: from.to_path_buf(),
            department: department.into(),
            data: data.into(),
            teacher: None,
            epochs: 3,
            batch: 32,
            lr: 0.01,
            warmup_steps: 0,
            momentum: 0.9,
            weight_decay: 1e-4,
            alpha: super::loss::ALPHA,
            beta: super::loss::BETA,
            seed: 1,
        }
    }
}

/// One trainable tensor: a whole variable, or slice `t` of its first dimension.
struct Slot {
    var: Tensor,
    slice: Option<i64>,
    momentum: Tensor,
}

impl Slot {
    fn view(&self, t: &Tensor) -> Tensor {
        match self.slice {
            Some(i) => t.narrow(0, i, 1),
            None => t.shallow_clone(),
        }
    }
}

/// Which variables a fine-tune of department `t` trains: `(name, slice)`.
pub fn trainable(name: &str, t: usize) -> Option<Option<i64>> {
    if name.ends_with(".lora_A") || name.ends_with(".lora_B") {
        Some(Some(t as i64))
    } else if name.starts_with(&format!("heads.{t}.")) {
        Some(None)
    } else {
        None
    }
}

/// How a fine-tune ended.
#[derive(Clone, Debug)]
pub struct FinetuneOutcome {
    /// Validation top-1 of the department with the input checkpoint.
    pub before: f64,
    /// Metrics of the last epoch.
    pub last: Option<EpochMetrics>,
    /// Stopped by Ctrl-C or `stop_after_steps`.
    pub interrupted: bool,
}

/// Fine-tunes department `fc.department` of `fc.from` into `run_dir` (which must not hold a run).
///
/// # Errors
/// Unreadable checkpoint, unknown department, a checkpoint without experts, data that does
/// not match it, a NaN loss (the last good checkpoint stays), I/O.
pub fn finetune(
    fc: &FinetuneConfig,
    run_dir: &Path,
    ctl: &Control,
) -> anyhow::Result<FinetuneOutcome> {
    anyhow::ensure!(
        !run_dir.join("run.json").exists(),
        "{} already holds a run; choose another directory",
        run_dir.display()
    );
    ctl.apply_threads();
    let ck =
        Checkpoint::load(&fc.from).with_context(|| format!("loading {}", fc.from.display()))?;
    let cfg = ck.config.clone();
    anyhow::ensure!(
        cfg.rank > 0,
        "{}: no department experts (rank 0, an mtl/stl model): nothing to fine-tune",
        fc.from.display()
    );
    let t = cfg
        .department_index(&fc.department)
        .map_err(|e| anyhow::anyhow!("{}: {e}", fc.from.display()))?;
    let ds = Arc::new(Dataset::open_str(&fc.data)?);
    bridge::check_matches(&cfg, &ds)?;
    eprintln!("data: {}", ds.summary());
    let device = ctl.device;
    let (vs, model) = ck.into_model(device)?;
    let teacher = match (&fc.teacher, cfg.unified_head && fc.beta > 0.0) {
        (Some(p), true) => Some(Teacher::load(p, device, ds.total_classes() as i64)?),
        (Some(_), false) => {
            eprintln!("note: the checkpoint has no unified head or β = 0: no distillation");
            None
        }
        _ => None,
    };

    // Freeze everything, then unfreeze the department's variables.
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let mut slots = Vec::new();
    for (name, v) in &vars {
        match trainable(name, t) {
            Some(slice) => {
                let _ = v.set_requires_grad(true);
                let var = v.shallow_clone();
                let momentum = match slice {
                    Some(i) => var.narrow(0, i, 1).zeros_like().detach(),
                    None => var.zeros_like().detach(),
                };
                slots.push(Slot {
                    var,
                    slice,
                    momentum,
                });
            }
            None => {
                let _ = v.set_requires_grad(false);
            }
        }
    }
    anyhow::ensure!(
        slots.iter().any(|s| s.slice.is_some()),
        "{}: no lora factors found",
        fc.from.display()
    );

    std::fs::create_dir_all(run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    io::write_atomic(
        &run_dir.join("run.json"),
        serde_json::to_string_pretty(fc)?.as_bytes(),
    )?;
    let save = || -> anyhow::Result<()> {
        let out = Checkpoint::from_var_store(&cfg, &vs);
        io::write_atomic(&run_dir.join("model.safetensors"), &out.to_bytes()?)
    };
    save()?;
    let metrics = run_dir.join("metrics.jsonl");
    let transform = bridge::transform(&cfg);
    let input = Input::new(ds.clone(), transform.clone(), ctl);
    let before = department_accuracy(&model, &input, Split::Val, None, true, fc.batch, ctl)?[t];
    eprintln!(
        "fine-tuning department {} ({}): val top-1 before {before:.3}",
        fc.department, t
    );

    let loader_cfg = |epoch: u64| LoaderConfig {
        batch_size: fc.batch,
        shuffle: true,
        flip: true,
        drop_last: false,
        seed: fc.seed,
        epoch,
        workers: ctl.workers.max(1),
        prefetch: 2 * ctl.workers.max(1),
        departments: Some(vec![t]),
        transform: transform.clone(),
    };
    let per_epoch = ds
        .indices_of(Split::Train, t)
        .len()
        .div_ceil(fc.batch.max(1)) as u64;
    let total = per_epoch * fc.epochs;
    let mut outcome = FinetuneOutcome {
        before,
        last: None,
        interrupted: false,
    };
    let mut step = 0u64;
    for epoch in 0..fc.epochs {
        tch::manual_seed(fc.seed as i64 ^ epoch as i64);
        let loader = input.loader(Split::Train, loader_cfg(epoch))?;
        let mut ep = Epoch::start(
            ctl,
            loader.batches() as u64,
            &format!("[{}] epoch {}/{}", fc.department, epoch + 1, fc.epochs),
        );
        let mut lr = fc.lr;
        let non_finite = |loss: f64, at: u64| {
            anyhow::anyhow!(
                "loss is {loss} at epoch {} by step {at}: stopping; the last good checkpoint is {}; lower --lr (now {})",
                epoch + 1,
                run_dir.join("model.safetensors").display(),
                fc.lr
            )
        };
        for batch in loader {
            let b = batch?;
            let xs = input.images(&b);
            let depts = vec![t as i64; b.len()];
            let y = Tensor::from_slice(&b.classes).to_device(device);
            // BN in eval mode: running statistics used, never updated.
            let (ce, ok, kd) = crate::amp::run(ctl.amp, || -> anyhow::Result<_> {
                let f = model.forward_t(&xs, DeptSel::One(t as i64), false);
                let (ce, ok) = department_ce(&f, &depts, &y, |x, h| model.head_logits(x, h));
                let kd = match (&teacher, model.unified_logits(&f)) {
                    (Some(teacher), Some(zs)) => {
                        distillation(&zs, &teacher.logits(&xs)?, fc.alpha) * fc.beta
                    }
                    _ => Tensor::zeros([], (Kind::Float, device)),
                };
                Ok((ce, ok, kd))
            })?;
            let loss = &ce + &kd;
            lr = warmup_cosine_lr(fc.lr, step, total, fc.warmup_steps);
            for s in &mut slots {
                s.var.zero_grad();
            }
            loss.backward();
            tch::no_grad(|| {
                for s in &mut slots {
                    let g = s.var.grad();
                    if !g.defined() {
                        continue;
                    }
                    let (p, g) = (s.view(&s.var), s.view(&g));
                    let d = &g + &p * fc.weight_decay;
                    s.momentum.copy_(&(&s.momentum * fc.momentum + d));
                    let mut p = p;
                    p.copy_(&(&p - &s.momentum * lr));
                }
            });
            step += 1;
            ep.record(b.len(), &loss, &ce, &kd, &ok)
                .map_err(|e| non_finite(e.loss, step))?;
            if Epoch::stop_requested(ctl, step) {
                outcome.interrupted = true;
                break;
            }
        }
        if outcome.interrupted {
            ep.abandon();
            eprintln!(
                "stopped during epoch {}; the last epoch's checkpoint stays in {}",
                epoch + 1,
                run_dir.display()
            );
            return Ok(outcome);
        }
        let tot = ep.finish().map_err(|e| non_finite(e.loss, step))?;
        let val = department_accuracy(&model, &input, Split::Val, None, true, fc.batch, ctl)?;
        let m = EpochMetrics {
            department: Some(fc.department.clone()),
            epoch: epoch + 1,
            step,
            lr,
            loss: tot.loss,
            ce: tot.ce,
            kd: tot.kd,
            train_acc: tot.train_acc,
            // The curve of this run is the department's own validation accuracy.
            val_mean: val[t],
            val_acc: vec![val[t]],
            images_per_sec: tot.images_per_sec(),
            seconds: tot.seconds,
        };
        save()?;
        m.append_to(&metrics)?;
        eprintln!(
            "[{}] epoch {}/{}: loss {:.4} (ce {:.4} kd {:.4}) train acc {:.3} val acc {:.3} (others {:.3}) {:.0} img/s",
            fc.department,
            epoch + 1,
            fc.epochs,
            m.loss,
            m.ce,
            m.kd,
            m.train_acc,
            val[t],
            mean(
                &val.iter()
                    .enumerate()
                    .filter(|(i, _)| *i != t)
                    .map(|(_, v)| *v)
                    .collect::<Vec<_>>()
            ),
            m.images_per_sec
        );
        outcome.last = Some(m);
    }
    Ok(outcome)
}
