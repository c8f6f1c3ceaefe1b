//! `fit`: trains department experts with the LoRKD loss ([`super::loss`]) and, for
//! comparison, the baselines of the paper's tables:
//!
//! | method   | backbone                         | loss                     |
//! |----------|----------------------------------|--------------------------|
//! | `lorkd`  | shared `W0` + rank-r experts (EKS) | CE on department heads + β·α²·KL |
//! | `mtl`    | shared only, department heads    | CE                       |
//! | `mtl-kd` | shared only, department heads    | CE + β·α²·KL             |
//! | `stl`    | one independent network per department | CE                 |
//! | `stl-kd` | one independent network per department | CE + β·α²·KL on the department's slice of the teacher's logits |
//!
//! A run directory holds `run.json` (the settings), `model.safetensors` (the latest
//! checkpoint, the format tools read), `state.safetensors` (model + momentum + epoch: what
//! `--resume` needs), `metrics.jsonl` (one line per epoch). Both safetensors files are
//! rewritten atomically after every epoch, and once before the first, so a NaN, a crash or
//! Ctrl-C always leaves the last good epoch behind. Resuming continues exactly: the data
//! order and flips are functions of `(seed, epoch)`, the learning rate of the global step.
//! `stl` and `stl-kd` keep one such directory per department under `RUN_DIR/stl/<t>/`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use lorkd_data::{epoch_order, Dataset, LoaderConfig, Split};
use serde::{Deserialize, Serialize};
use tch::{nn, Kind, Tensor};

use super::data as bridge;
use super::input::Input;
use super::io;
use super::loss::{department_ce, distillation, feature_distillation};
use super::run::{department_accuracy, mean, Epoch};
use super::sgd::{warmup_cosine_lr, Sgd};
use super::teacher::Teacher;
use super::teacher_cache::TeacherCache;
use crate::checkpoint::Checkpoint;
use crate::config::{Arch, Config};
use crate::eks_conv::{DeptIds, DeptSel, ExpertConvMode};
use crate::models::shufflenet::ShuffleNetLoRKD;

// `fit`'s signature takes them; kept reachable here for its callers.
pub use super::run::{Control, EpochMetrics};

/// Training method (see the module table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Shared weights + low-rank department experts, CE + distillation.
    Lorkd,
    /// Multi-task: shared network, department heads.
    Mtl,
    /// Multi-task with distillation.
    MtlKd,
    /// Single-task: one network per department.
    Stl,
    /// Single-task with distillation: each department's network learns from the teacher's
    /// logits restricted to that department's classes.
    StlKd,
}

impl Method {
    /// Whether the student carries department experts.
    pub fn experts(self) -> bool {
        self == Method::Lorkd
    }
    /// Whether the loss has the distillation term (when a teacher is given).
    pub fn distills(self) -> bool {
        matches!(self, Method::Lorkd | Method::MtlKd | Method::StlKd)
    }
    /// Whether each department gets its own network.
    pub fn single_task(self) -> bool {
        matches!(self, Method::Stl | Method::StlKd)
    }
    /// The CLI spelling.
    pub fn name(self) -> &'static str {
        match self {
            Method::Lorkd => "lorkd",
            Method::Mtl => "mtl",
            Method::MtlKd => "mtl-kd",
            Method::Stl => "stl",
            Method::StlKd => "stl-kd",
        }
    }
}

/// What the student distills from the teacher.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Kd {
    /// `β·α²·KL` between the teacher's logits and the student's unified head (or, stl-kd,
    /// its department head on the department's slice).
    #[default]
    Logits,
    /// `β·‖n(P f_s) − n(f_t)‖²` between the student's pooled features through its experts
    /// and the teacher's, through a learned linear projection `P` (the paper's f^b ← f^d).
    Features,
}

/// Everything that defines a run (saved as `run.json`; `--resume` reads it back).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FitConfig {
    /// `--data` spec.
    pub data: String,
    /// Method.
    pub method: Method,
    /// Student architecture.
    pub arch: Arch,
    /// LoRA rank r (lorkd).
    pub rank: i64,
    /// lora_alpha (scaling alpha / r).
    pub lora_alpha: f64,
    /// Input side (None: the data's native size, else 224).
    pub input_size: Option<i64>,
    /// Epochs.
    pub epochs: u64,
    /// Batch size.
    pub batch: usize,
    /// Peak learning rate (cosine-annealed to 0 over the run).
    pub lr: f64,
    /// Linear warmup steps from `lr / warmup_steps` to `lr` before the cosine (0: none).
    #[serde(default)]
    pub warmup_steps: u64,
    /// SGD momentum.
    pub momentum: f64,
    /// Weight decay.
    pub weight_decay: f64,
    /// Distillation temperature α.
    pub alpha: f64,
    /// Distillation weight β (0: no distillation).
    pub beta: f64,
    /// What is distilled.
    #[serde(default)]
    pub kd: Kd,
    /// Seed of initialisation, data order and flips.
    pub seed: u64,
    /// Teacher: a `teacher` safetensors or a TorchScript `.pt` (None: no distillation).
    pub teacher: Option<PathBuf>,
    /// Expert-conv mode name (auto, eks, lowrank, looped).
    pub expert_conv_mode: String,
}

impl FitConfig {
    /// The paper's defaults for `data` and `method`.
    pub fn new(data: &str, method: Method) -> Self {
        FitConfig {
            data: data.to_string(),
            method,
            arch: Arch::ShuffleNetV2X1_0,
            rank: 8,
            lora_alpha: 16.0,
            input_size: None,
            epochs: 10,
            batch: 64,
            lr: 0.05,
            warmup_steps: 0,
            momentum: 0.9,
            weight_decay: 1e-4,
            alpha: super::loss::ALPHA,
            beta: super::loss::BETA,
            kd: Kd::Logits,
            seed: 0,
            teacher: None,
            expert_conv_mode: "auto".into(),
        }
    }
}

/// How a `fit` invocation ended.
#[derive(Clone, Debug)]
pub struct FitOutcome {
    /// Epochs completed in the run (over all invocations).
    pub epochs_done: u64,
    /// Stopped early by Ctrl-C or `stop_after_steps`.
    pub interrupted: bool,
    /// Metrics of the last epoch completed by this invocation.
    pub last: Option<EpochMetrics>,
}

const STATE_KEY: &str = "lorkd_train";

#[derive(Serialize, Deserialize)]
struct TrainState {
    epoch: u64,
    step: u64,
    fit: FitConfig,
}

/// Starts a new run in `run_dir` (which must not hold one).
///
/// # Errors
/// Bad data, a run already there, a NaN loss (the last good checkpoint stays), I/O.
pub fn fit(fc: &FitConfig, run_dir: &Path, ctl: &Control) -> anyhow::Result<FitOutcome> {
    anyhow::ensure!(
        !run_dir.join("run.json").exists(),
        "{} already holds a run: continue it with --resume {0}, or choose another directory",
        run_dir.display()
    );
    std::fs::create_dir_all(run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    io::write_atomic(
        &run_dir.join("run.json"),
        serde_json::to_string_pretty(fc)?.as_bytes(),
    )?;
    run(fc, run_dir, ctl)
}

/// Continues the run in `run_dir` from its last checkpoint, exactly.
///
/// # Errors
/// As [`fit`]; also a missing or inconsistent run.
pub fn resume(run_dir: &Path, ctl: &Control) -> anyhow::Result<FitOutcome> {
    let p = run_dir.join("run.json");
    let text = std::fs::read_to_string(&p)
        .with_context(|| format!("reading {} (is this a run directory?)", p.display()))?;
    let fc: FitConfig =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))?;
    run(&fc, run_dir, ctl)
}

fn run(fc: &FitConfig, run_dir: &Path, ctl: &Control) -> anyhow::Result<FitOutcome> {
    ctl.apply_threads();
    let ds = Arc::new(Dataset::open_str(&fc.data)?);
    eprintln!("data: {}", ds.summary());
    let teacher = match (&fc.teacher, fc.method.distills() && fc.beta > 0.0) {
        (Some(p), true) => Some(Teacher::load(p, ctl.device, ds.total_classes() as i64)?),
        _ => None,
    };
    let metrics = run_dir.join("metrics.jsonl");
    let cache_dir = run_dir.join("cache");
    if fc.method.single_task() {
        let mut outcome = FitOutcome {
            epochs_done: fc.epochs,
            interrupted: false,
            last: None,
        };
        for t in 0..ds.departments().len() {
            let sub = run_dir.join("stl").join(t.to_string());
            std::fs::create_dir_all(&sub)?;
            let o = train_one(
                fc,
                &sub,
                &metrics,
                &cache_dir,
                &ds,
                Some(t),
                teacher.as_ref(),
                ctl,
            )?;
            outcome.epochs_done = outcome.epochs_done.min(o.epochs_done);
            outcome.last = o.last.or(outcome.last);
            if o.interrupted {
                outcome.interrupted = true;
                break;
            }
        }
        return Ok(outcome);
    }
    train_one(
        fc,
        run_dir,
        &metrics,
        &cache_dir,
        &ds,
        None,
        teacher.as_ref(),
        ctl,
    )
}

fn mix_seed(seed: u64, epoch: u64) -> i64 {
    let mut z = seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    (z >> 1) as i64
}

/// The student config a run trains (`only`: the stl department; `distill`: a unified head
/// over all departments' classes for the teacher's logits, multi-department students only).
pub fn student_config(fc: &FitConfig, ds: &Dataset, only: Option<usize>, distill: bool) -> Config {
    let mut deps = bridge::departments(ds);
    if let Some(t) = only {
        deps = vec![deps[t].clone()];
    }
    let mut cfg = Config::new(fc.arch, 3, deps);
    cfg.rank = if fc.method.experts() { fc.rank } else { 0 };
    cfg.lora_alpha = fc.lora_alpha;
    cfg.input_size = fc
        .input_size
        .unwrap_or_else(|| bridge::default_input_size(ds));
    cfg.unified_head = distill && only.is_none();
    cfg
}

fn save(
    cfg: &Config,
    vs: &nn::VarStore,
    opt: &Sgd,
    state: &TrainState,
    dir: &Path,
) -> anyhow::Result<()> {
    let ckpt = Checkpoint::from_var_store(cfg, vs);
    io::write_atomic(&dir.join("model.safetensors"), &ckpt.to_bytes()?)?;
    let mut tensors: Vec<(String, Tensor)> = io::sorted_variables(vs)
        .into_iter()
        .map(|(n, t)| (format!("model.{n}"), t))
        .collect();
    tensors.extend(opt.state());
    let meta = HashMap::from([(STATE_KEY.to_string(), serde_json::to_string(state)?)]);
    io::save_tensors(&dir.join("state.safetensors"), &tensors, meta)
}

#[allow(clippy::too_many_arguments)]
fn train_one(
    fc: &FitConfig,
    dir: &Path,
    metrics: &Path,
    cache_dir: &Path,
    ds: &Arc<Dataset>,
    only: Option<usize>,
    teacher: Option<&Teacher>,
    ctl: &Control,
) -> anyhow::Result<FitOutcome> {
    let device = ctl.device;
    // stl-kd distills each single-department network on its slice of the teacher's logits;
    // plain stl never sees the teacher.
    let distill = teacher.is_some() && (only.is_none() || fc.method == Method::StlKd);
    let slice = only.map(|t| {
        let offset: usize = ds.departments()[..t].iter().map(|d| d.classes.len()).sum();
        (offset as i64, ds.departments()[t].classes.len() as i64)
    });
    let features_kd = distill && fc.kd == Kd::Features;
    anyhow::ensure!(
        !features_kd || only.is_none(),
        "--kd features is for multi-department students (lorkd, mtl-kd), not stl-kd"
    );
    let cfg = student_config(fc, ds, only, distill && !features_kd);
    cfg.validate().map_err(|e| anyhow::anyhow!(e))?;
    let t_count = cfg.num_departments();
    // Global department → index in this model.
    let local = |g: i64| -> i64 { only.map_or(g, |t| g - t as i64) };
    let dept_name = only.map(|t| ds.departments()[t].name.clone());

    tch::manual_seed(mix_seed(fc.seed, u64::MAX));
    let vs = nn::VarStore::new(device);
    let mut model = ShuffleNetLoRKD::new(&vs.root(), &cfg);
    model.set_expert_conv_mode(
        fc.expert_conv_mode
            .parse::<ExpertConvMode>()
            .map_err(|e| anyhow::anyhow!(e))?,
    );
    // Feature KD's projection lives in the same store (trained, saved in state.safetensors
    // for --resume) under a training-only name that checkpoints leave out.
    let proj = match (features_kd, teacher.and_then(Teacher::feature_dim)) {
        (true, Some(td)) => Some(nn::linear(
            vs.root() / crate::checkpoint::TRAINING_ONLY.trim_end_matches('.'),
            model.backbone.feature_dim,
            td,
            Default::default(),
        )),
        (true, None) => anyhow::bail!(
            "--kd features needs a `lorkd-train teacher` ResNet, not a TorchScript module"
        ),
        _ => None,
    };
    if ctl.channels_last {
        crate::amp::var_store_channels_last(&vs);
    }
    let mut opt = Sgd::new(&vs, fc.momentum, fc.weight_decay);

    let state_path = dir.join("state.safetensors");
    let (mut epoch, mut step) = (0u64, 0u64);
    if state_path.exists() {
        let (meta, tensors) = io::load_tensors(&state_path)?;
        let st: TrainState = serde_json::from_str(
            meta.get(STATE_KEY)
                .with_context(|| format!("{}: no training state", state_path.display()))?,
        )?;
        anyhow::ensure!(
            st.fit == *fc,
            "{}: saved settings differ from run.json",
            state_path.display()
        );
        let model_tensors = tensors
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix("model.")
                    .map(|n| (n.to_string(), v.shallow_clone()))
            })
            .collect();
        io::load_into(&vs, &model_tensors, &state_path)?;
        opt.load_state(&tensors)?;
        (epoch, step) = (st.epoch, st.step);
        if epoch < fc.epochs {
            eprintln!(
                "resuming {} at epoch {epoch}/{} (step {step})",
                dir.display(),
                fc.epochs
            );
        }
    } else {
        save(
            &cfg,
            &vs,
            &opt,
            &TrainState {
                epoch,
                step,
                fit: fc.clone(),
            },
            dir,
        )?;
    }

    let transform = bridge::transform(&cfg);
    let input = Input::new(ds.clone(), transform.clone(), ctl);
    let tcache = match (teacher, &fc.teacher) {
        (Some(t), Some(p)) if distill && !features_kd && ctl.teacher_cache && epoch < fc.epochs => {
            Some(TeacherCache::build(t, p, &input, cache_dir, fc.batch, ctl)?)
        }
        _ => None,
    };
    let loader_cfg = |epoch: u64| LoaderConfig {
        batch_size: fc.batch,
        shuffle: true,
        flip: true,
        drop_last: false,
        seed: fc.seed,
        epoch,
        workers: ctl.workers.max(1),
        prefetch: 2 * ctl.workers.max(1),
        departments: only.map(|t| vec![t]),
        transform: transform.clone(),
    };
    let per_epoch = epoch_order(ds, Split::Train, &loader_cfg(0))
        .len()
        .div_ceil(fc.batch.max(1)) as u64;
    let total = per_epoch * fc.epochs;
    let mut outcome = FitOutcome {
        epochs_done: epoch,
        interrupted: false,
        last: None,
    };
    let mut steps_here = 0u64;

    while epoch < fc.epochs {
        tch::manual_seed(mix_seed(fc.seed, epoch));
        let loader = input.loader(Split::Train, loader_cfg(epoch))?;
        let mut ep = Epoch::start(
            ctl,
            loader.batches() as u64,
            &format!("epoch {}/{}", epoch + 1, fc.epochs),
        );
        let mut lr = fc.lr;
        let non_finite = |loss: f64, at: u64| {
            anyhow::anyhow!(
                "loss is {loss} at epoch {} by step {at}: stopping. The last good checkpoint is {} (epoch {epoch}); \
                 lower --lr (now {}) and resume or restart",
                epoch + 1,
                dir.join("model.safetensors").display(),
                fc.lr
            )
        };
        for batch in loader {
            let b = batch?;
            let xs = input.images(&b);
            let depts: Vec<i64> = b.departments.iter().map(|&g| local(g)).collect();
            let y = crate::upload(&b.classes, device);
            let ids;
            let sel = if cfg.rank > 0 {
                ids = DeptIds::new(&depts, t_count, device)?;
                DeptSel::Mixed(&ids)
            } else {
                DeptSel::Shared
            };
            let (ce, ok, kd) = crate::amp::run(ctl.amp, || -> anyhow::Result<_> {
                let f = model.forward_t(&xs, sel, true);
                let (ce, ok) = department_ce(&f, &depts, &y, |x, t| model.head_logits(x, t));
                // The student's logits over the teacher's classes: the unified head, or
                // (stl-kd) the one department head against its slice of the teacher's.
                let zs = match slice {
                    Some(_) => Some(model.head_logits(&f, 0)),
                    None => model.unified_logits(&f),
                };
                let kd = match (teacher, zs, &proj) {
                    (Some(teacher), _, Some(proj)) => {
                        let ft = teacher.features(&xs)?;
                        feature_distillation(&f.apply(proj), &ft) * fc.beta
                    }
                    (Some(teacher), Some(zs), None) if distill => {
                        let mut zt = match &tcache {
                            Some(c) => c.logits(&b.indices, &b.flips),
                            None => teacher.logits(&xs)?,
                        };
                        if let Some((offset, n)) = slice {
                            zt = zt.narrow(1, offset, n);
                        }
                        distillation(&zs, &zt, fc.alpha) * fc.beta
                    }
                    _ => Tensor::zeros([], (Kind::Float, device)),
                };
                Ok((ce, ok, kd))
            })?;
            let loss = &ce + &kd;
            lr = warmup_cosine_lr(fc.lr, step, total, fc.warmup_steps);
            opt.zero_grad();
            loss.backward();
            opt.step(lr);
            step += 1;
            steps_here += 1;
            ep.record(b.len(), &loss, &ce, &kd, &ok)
                .map_err(|e| non_finite(e.loss, step))?;
            if Epoch::stop_requested(ctl, steps_here) {
                outcome.interrupted = true;
                break;
            }
        }
        if outcome.interrupted {
            ep.abandon();
            eprintln!(
                "stopped during epoch {}; checkpoint of epoch {epoch} kept in {}; continue with --resume",
                epoch + 1,
                dir.display()
            );
            return Ok(outcome);
        }
        let tot = ep.finish().map_err(|e| non_finite(e.loss, step))?;
        let val = department_accuracy(&model, &input, Split::Val, only, true, fc.batch, ctl)?;
        epoch += 1;
        let m = EpochMetrics {
            department: dept_name.clone(),
            epoch,
            step,
            lr,
            loss: tot.loss,
            ce: tot.ce,
            kd: tot.kd,
            train_acc: tot.train_acc,
            val_mean: mean(&val),
            val_acc: val,
            images_per_sec: tot.images_per_sec(),
            seconds: tot.seconds,
        };
        save(
            &cfg,
            &vs,
            &opt,
            &TrainState {
                epoch,
                step,
                fit: fc.clone(),
            },
            dir,
        )?;
        m.append_to(metrics)?;
        eprintln!(
            "{}epoch {epoch}/{}: loss {:.4} (ce {:.4} kd {:.4}) train acc {:.3} val acc {:.3} {:.0} img/s",
            dept_name.as_ref().map(|n| format!("[{n}] ")).unwrap_or_default(),
            fc.epochs,
            m.loss,
            m.ce,
            m.kd,
            m.train_acc,
            m.val_mean,
            m.images_per_sec
        );
        outcome.epochs_done = epoch;
        outcome.last = Some(m);
    }
    Ok(outcome)
}
