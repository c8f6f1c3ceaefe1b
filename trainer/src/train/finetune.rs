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
//!
//! [`add_department`] runs the same loop ([`train_department`]) for a department the
//! checkpoint does not have: the model grows by one department (its factor slices initialised
//! as `fit` initialises every department — Kaiming-uniform `A`, zero `B` — and a fresh head),
//! everything the checkpoint had is copied in bit for bit and frozen, and only the new
//! department's factors and head train. The result is a checkpoint with one more department
//! whose folded shared part is the input's, so `lorkd delta make` ships the new department as
//! an *add* package. With a teacher the distillation term compares the new head with the
//! teacher's logits over the department's class slice (the teacher must know the new
//! department's classes; the frozen unified head has no trained rows for them).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use lorkd_data::{Dataset, Split};
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

/// Settings of a fine-tune or an added department (saved as `run.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FinetuneConfig {
    /// `finetune` or `add-department` (tells `eval`, `--resume` and people what the run is).
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
    fresh_run_dir(run_dir)?;
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
    let job = Job {
        cfg: &cfg,
        vs: &vs,
        model: &model,
        t,
        kd: Kd::Unified,
        teacher: teacher.as_ref(),
        ds,
        start_epoch: 0,
    };
    train_department(fc, &job, run_dir, ctl)
}

fn fresh_run_dir(run_dir: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(
        !run_dir.join("run.json").exists(),
        "{} already holds a run; choose another directory",
        run_dir.display()
    );
    Ok(())
}

/// How the distillation term reads the student.
#[derive(Clone, Copy, Debug)]
pub enum Kd {
    /// Through the frozen unified head, against the teacher's logits over all classes.
    Unified,
    /// Through the department's own head, against the teacher's logits over the department's
    /// class slice `[offset, offset + classes)`.
    Slice {
        /// The department's first class in the teacher's class order.
        offset: i64,
        /// Classes of the department.
        classes: i64,
    },
}

/// One department to train in a model: what [`train_department`] needs.
pub struct Job<'a> {
    /// The model's configuration (what the checkpoints it writes carry).
    pub cfg: &'a crate::config::Config,
    /// The model's variables.
    pub vs: &'a tch::nn::VarStore,
    /// The model.
    pub model: &'a crate::models::shufflenet::ShuffleNetLoRKD,
    /// The department that trains.
    pub t: usize,
    /// How the teacher, if any, is matched.
    pub kd: Kd,
    /// The teacher.
    pub teacher: Option<&'a Teacher>,
    /// The data (its departments are the model's).
    pub ds: Arc<Dataset>,
    /// Epochs already done (a resumed run: the checkpoint in the run directory is theirs).
    pub start_epoch: u64,
}

/// The loop `finetune` and `add_department` share: department `job.t`'s factor slices and
/// head train (SGD with momentum on their slices only, BN in eval mode), every other variable
/// of `job.vs` is frozen; `run.json`, `model.safetensors` after every epoch and
/// `metrics.jsonl` go to `run_dir`.
///
/// # Errors
/// A model without factors, a NaN loss (the last good checkpoint stays), I/O.
pub fn train_department(
    fc: &FinetuneConfig,
    job: &Job<'_>,
    run_dir: &Path,
    ctl: &Control,
) -> anyhow::Result<FinetuneOutcome> {
    let Job {
        cfg,
        vs,
        model,
        t,
        kd: kd_mode,
        teacher,
        ref ds,
        start_epoch,
    } = *job;
    let device = ctl.device;
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
    let teacher = teacher.filter(|_| fc.beta > 0.0);

    std::fs::create_dir_all(run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    io::write_atomic(
        &run_dir.join("run.json"),
        serde_json::to_string_pretty(fc)?.as_bytes(),
    )?;
    let save = || -> anyhow::Result<()> {
        let out = Checkpoint::from_var_store(cfg, vs);
        io::write_atomic(&run_dir.join("model.safetensors"), &out.to_bytes()?)
    };
    if start_epoch == 0 {
        save()?;
    }
    let metrics = run_dir.join("metrics.jsonl");
    let transform = bridge::transform(cfg);
    let input = Input::new(ds.clone(), transform.clone(), ctl);
    let before = department_accuracy(model, &input, Split::Val, None, true, fc.batch, ctl)?[t];
    eprintln!(
        "fine-tuning department {} ({}): val top-1 before {before:.3}",
        fc.department, t
    );

    let (loader_cfg, per_epoch) = ctl.department_train_loader(ds, t, fc.batch, fc.seed, &transform);
    let total = per_epoch * fc.epochs;
    let mut outcome = FinetuneOutcome {
        before,
        last: None,
        interrupted: false,
    };
    let mut step = per_epoch * start_epoch;
    for epoch in start_epoch..fc.epochs {
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
            let y = crate::upload(&b.classes, device);
            // BN in eval mode: running statistics used, never updated.
            let (ce, ok, kd) = crate::amp::run(ctl.amp, || -> anyhow::Result<_> {
                let f = model.forward_t(&xs, DeptSel::One(t as i64), false);
                let (ce, ok) = department_ce(&f, &depts, &y, |x, h| model.head_logits(x, h));
                let kd = match (teacher, kd_mode) {
                    (Some(teacher), Kd::Unified) => match model.unified_logits(&f) {
                        Some(zs) => distillation(&zs, &teacher.logits(&xs)?, fc.alpha) * fc.beta,
                        None => Tensor::zeros([], (Kind::Float, device)),
                    },
                    (Some(teacher), Kd::Slice { offset, classes }) => {
                        let zt = teacher.logits(&xs)?.narrow(1, offset, classes);
                        distillation(&model.head_logits(&f, t), &zt, fc.alpha) * fc.beta
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
        let val = department_accuracy(model, &input, Split::Val, None, true, fc.batch, ctl)?;
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

/// Grows `old` into `vs` (a model with one more department): every tensor of `old` is copied
/// bit for bit — whole, or into the leading rows of a variable that grew along its first
/// dimension (the `[T, …]` factor tensors, the unified head's rows) — and what `old` lacks
/// (the new department's factor slices and head) keeps the fresh initialisation `vs` was
/// built with.
///
/// # Errors
/// A tensor of `old` missing from `vs`, or shaped other than its variable (or a prefix of it).
pub fn grow_into(old: &Checkpoint, vs: &tch::nn::VarStore) -> anyhow::Result<()> {
    let vars = vs.variables();
    for (name, o) in &old.tensors {
        let v = vars
            .get(name)
            .with_context(|| format!("the grown model has no tensor `{name}`"))?;
        let (os, vsz) = (o.size(), v.size());
        let fits = os == vsz || (os.len() == vsz.len() && os[1..] == vsz[1..] && os[0] < vsz[0]);
        anyhow::ensure!(fits, "`{name}`: {os:?} does not fit {vsz:?}");
    }
    tch::no_grad(|| {
        for (name, o) in &old.tensors {
            let v = &vars[name];
            let mut dst = v.narrow(0, 0, o.size()[0]);
            dst.copy_(o);
        }
    });
    Ok(())
}

/// The department of `ds` that `cfg` lacks, with its index: `ds` must hold `cfg`'s
/// departments, in order, then exactly one more (named `want` when given).
///
/// # Errors
/// Any other relation between the two department lists.
pub fn new_department(
    cfg: &crate::config::Config,
    ds: &Dataset,
    want: Option<&str>,
) -> anyhow::Result<(usize, crate::config::Department)> {
    let data = bridge::departments(ds);
    let t = cfg.departments.len();
    let list = |v: &[crate::config::Department]| {
        v.iter()
            .map(|d| format!("{}({})", d.name, d.classes.len()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let prefix_ok = data.len() == t + 1
        && cfg
            .departments
            .iter()
            .zip(&data)
            .all(|(a, b)| a.name == b.name && a.classes.len() == b.classes.len());
    anyhow::ensure!(
        prefix_ok,
        "the data must hold the checkpoint's departments [{}] then exactly one new one; it has [{}]",
        list(&cfg.departments),
        list(&data)
    );
    let new = data[t].clone();
    if let Some(w) = want {
        anyhow::ensure!(
            new.name == w,
            "the data's new department is `{}`, not `{w}`",
            new.name
        );
    }
    Ok((t, new))
}

/// Adds department `fc.department` (or the data's one new department when empty) to the
/// checkpoint `fc.from`, training only its factors and head (see the module docs), into
/// `run_dir`. With `resume`, `run_dir` holds an interrupted run of this: it goes on from its
/// last finished epoch (its `run.json` settings; the momentum restarts at zero).
///
/// # Errors
/// As [`finetune`]; data that is not the checkpoint's departments plus one; a teacher whose
/// classes do not cover the data's.
pub fn add_department(
    fc: &FinetuneConfig,
    run_dir: &Path,
    ctl: &Control,
    resume: bool,
) -> anyhow::Result<FinetuneOutcome> {
    if !resume {
        fresh_run_dir(run_dir)?;
    }
    ctl.apply_threads();
    let ck =
        Checkpoint::load(&fc.from).with_context(|| format!("loading {}", fc.from.display()))?;
    anyhow::ensure!(
        ck.config.rank > 0,
        "{}: no department experts (rank 0, an mtl/stl model): a department cannot be added",
        fc.from.display()
    );
    let ds = Arc::new(Dataset::open_str(&fc.data)?);
    let want = (!fc.department.is_empty()).then_some(fc.department.as_str());
    let (t, new) = new_department(&ck.config, &ds, want)?;
    let mut fc = fc.clone();
    fc.method = "add-department".into();
    fc.department = new.name.clone();
    let mut cfg = ck.config.clone();
    cfg.departments.push(new);
    bridge::check_matches(&cfg, &ds)?;
    eprintln!("data: {}", ds.summary());
    let device = ctl.device;
    let vs = tch::nn::VarStore::new(device);
    // The new department's factors and head are initialised as `fit` initialises them.
    tch::manual_seed(fc.seed as i64);
    let model = crate::models::shufflenet::ShuffleNetLoRKD::new(&vs.root(), &cfg);
    let mut start_epoch = 0;
    if resume {
        let done = Checkpoint::load(run_dir.join("model.safetensors"))
            .with_context(|| format!("resuming {}", run_dir.display()))?;
        anyhow::ensure!(
            done.config.departments == cfg.departments,
            "{} holds a run for other departments",
            run_dir.display()
        );
        done.load_into(&vs)?;
        start_epoch = std::fs::read_to_string(run_dir.join("metrics.jsonl")).map_or(0, |m| {
            m.lines().filter(|l| !l.trim().is_empty()).count() as u64
        });
        eprintln!("resuming after epoch {start_epoch}");
    } else {
        grow_into(&ck, &vs)?;
    }
    let teacher = match &fc.teacher {
        Some(p) if fc.beta > 0.0 => Some(Teacher::load(p, device, ds.total_classes() as i64)?),
        _ => None,
    };
    let offset: usize = cfg.departments[..t].iter().map(|d| d.classes.len()).sum();
    let job = Job {
        cfg: &cfg,
        vs: &vs,
        model: &model,
        t,
        kd: Kd::Slice {
            offset: offset as i64,
            classes: cfg.departments[t].classes.len() as i64,
        },
        teacher: teacher.as_ref(),
        ds,
        start_epoch,
    };
    train_department(&fc, &job, run_dir, ctl)
}
