//! `eval`: top-1 accuracy per department and the average, for the decomposed experts
//! (`W0 + s·B_t·A_t`, head t) and for the shared weights alone (`W0`, head t) — the
//! decomposition's gain over its own shared part. An `stl` run is scored model by model.
//!
//! A teacher file (`lorkd-train teacher` output) is scored too, both ways: each sample counts
//! as correct when the argmax of the logits restricted to ITS department's class slice is its
//! class — the same per-department question the students answer with their department heads
//! (`experts` and `shared` then both hold that accuracy; `method` is `teacher`) — and, as the
//! paper scores its Foundation row, by the argmax over the unified head's classes of every
//! department (`unified_top1`).
//!
//! Every department also gets `metrics` ([`ClassMetrics`]): confusion matrix, balanced
//! accuracy and one-vs-rest AUC of the experts (of the department's own network for stl runs,
//! of the department's slice for a teacher).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use lorkd_data::metrics::ClassMetrics;
use lorkd_data::{Dataset, Split};
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use super::data as bridge;
use super::fit::FitConfig;
use super::input::Input;
use super::run::{department_accuracy, mean, Control};
use super::teacher::{teacher_accuracy, Teacher, TEACHER_KEY};
use crate::checkpoint::Checkpoint;
use crate::config::Config;
use crate::eks_conv::DeptSel;

/// One department's scores.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DepartmentScore {
    /// Department name.
    pub name: String,
    /// Images scored.
    pub images: usize,
    /// Top-1 with the department's experts.
    pub experts: f64,
    /// Top-1 with the shared weights alone.
    pub shared: f64,
    /// Confusion matrix, balanced accuracy and AUC of the experts' logits.
    pub metrics: ClassMetrics,
}

/// The report `eval` prints.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalReport {
    /// Checkpoint or run scored.
    pub checkpoint: String,
    /// Split scored.
    pub split: String,
    /// Method of the run, when known.
    pub method: Option<String>,
    /// Per department.
    pub departments: Vec<DepartmentScore>,
    /// Mean of `experts`.
    pub mean_experts: f64,
    /// Mean of `shared`.
    pub mean_shared: f64,
    /// Mean balanced accuracy of the experts.
    pub mean_balanced_accuracy: f64,
    /// Mean one-vs-rest AUC of the experts.
    pub mean_auc: f64,
    /// A teacher's top-1 over the unified head's classes of all departments (the paper's
    /// Foundation protocol); absent for students.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unified_top1: Option<f64>,
}

impl EvalReport {
    /// A plain-text table.
    pub fn table(&self) -> String {
        let w = self
            .departments
            .iter()
            .map(|d| d.name.len())
            .max()
            .unwrap_or(4)
            .max(10);
        let mut s = format!(
            "{} on {} ({})\n{:<w$}  {:>7}  {:>8}  {:>8}  {:>8}  {:>8}\n",
            self.checkpoint,
            self.split,
            self.method.as_deref().unwrap_or("checkpoint"),
            "department",
            "images",
            "experts",
            "shared",
            "bal.acc",
            "AUC"
        );
        for d in &self.departments {
            s += &format!(
                "{:<w$}  {:>7}  {:>8.4}  {:>8.4}  {:>8.4}  {:>8.4}\n",
                d.name, d.images, d.experts, d.shared, d.metrics.balanced_accuracy, d.metrics.auc
            );
        }
        s += &format!(
            "{:<w$}  {:>7}  {:>8.4}  {:>8.4}  {:>8.4}  {:>8.4}\n",
            "mean",
            "",
            self.mean_experts,
            self.mean_shared,
            self.mean_balanced_accuracy,
            self.mean_auc
        );
        if let Some(u) = self.unified_top1 {
            s += &format!("unified head over all classes (paper protocol): top-1 {u:.4}\n");
        }
        s
    }
}

fn read_method(run_dir: &Path) -> Option<FitConfig> {
    let text = std::fs::read_to_string(run_dir.join("run.json")).ok()?;
    serde_json::from_str(&text).ok()
}

/// Scores `ckpt` (a `model.safetensors`, or a run directory) on `data`'s `split`.
///
/// # Errors
/// Unreadable checkpoint, data that does not match its departments.
pub fn evaluate(
    ckpt: &Path,
    data: &str,
    split: Split,
    batch: usize,
    ctl: &Control,
) -> anyhow::Result<EvalReport> {
    let ds = Arc::new(Dataset::open_str(data)?);
    let (run_dir, file) = if ckpt.is_dir() && ckpt.join("teacher.safetensors").exists() {
        (Some(ckpt), ckpt.join("teacher.safetensors"))
    } else if ckpt.is_dir() {
        (Some(ckpt), ckpt.join("model.safetensors"))
    } else {
        (None, ckpt.to_path_buf())
    };
    let fit = run_dir.and_then(read_method);
    let mut departments = Vec::new();
    if is_teacher_file(&file) {
        let (per_dept, unified) = teacher_scores(&file, &ds, split, batch, ctl)?;
        for (t, (d, m)) in ds.departments().iter().zip(per_dept).enumerate() {
            departments.push(DepartmentScore {
                name: d.name.clone(),
                images: ds.indices_of(split, t).len(),
                experts: m.top1,
                shared: m.top1,
                metrics: m,
            });
        }
        return Ok(report(
            ckpt,
            split,
            Some("teacher".into()),
            departments,
            Some(unified),
        ));
    }
    if let (Some(dir), true) = (
        run_dir,
        fit.as_ref().is_some_and(|f| f.method.single_task()),
    ) {
        for (t, d) in ds.departments().iter().enumerate() {
            let p = dir
                .join("stl")
                .join(t.to_string())
                .join("model.safetensors");
            let (cfg, model) = load(&p, ctl.device)?;
            anyhow::ensure!(
                cfg.departments.len() == 1 && cfg.departments[0].name == d.name,
                "{}: trained for {:?}, not {}",
                p.display(),
                cfg.departments.iter().map(|d| &d.name).collect::<Vec<_>>(),
                d.name
            );
            let input = Input::new(ds.clone(), bridge::transform(&cfg), ctl);
            let m = outputs(&input, split, t, batch, ctl, |xs| {
                Ok(model.head_logits(&model.forward_t(xs, DeptSel::Shared, false), 0))
            })?;
            departments.push(DepartmentScore {
                name: d.name.clone(),
                images: ds.indices_of(split, t).len(),
                experts: m.top1,
                shared: m.top1,
                metrics: m,
            });
        }
    } else {
        let (cfg, model) = load(&file, ctl.device)?;
        // (data department, model department): all of them, or the one department of a
        // single-department model (a transfer run) found by name among the data's.
        let pairs: Vec<(usize, usize)> = match bridge::check_matches(&cfg, &ds) {
            Ok(()) => (0..ds.departments().len()).map(|t| (t, t)).collect(),
            Err(e) => match single_department(&cfg, &ds) {
                Some(t) => vec![(t, 0)],
                None => return Err(e),
            },
        };
        let input = Input::new(ds.clone(), bridge::transform(&cfg), ctl);
        let only = (pairs.len() == 1 && ds.departments().len() > 1).then_some(pairs[0].0);
        let shared = department_accuracy(&model, &input, split, only, false, batch, ctl)?;
        for (i, (t, m_t)) in pairs.into_iter().enumerate() {
            let d = &ds.departments()[t];
            let sel = if model.config.rank > 0 {
                DeptSel::One(m_t as i64)
            } else {
                DeptSel::Shared
            };
            let m = outputs(&input, split, t, batch, ctl, |xs| {
                Ok(model.head_logits(&model.forward_t(xs, sel, false), m_t))
            })?;
            departments.push(DepartmentScore {
                name: d.name.clone(),
                images: ds.indices_of(split, t).len(),
                experts: m.top1,
                shared: shared[i],
                metrics: m,
            });
        }
    }
    Ok(report(
        ckpt,
        split,
        fit.map(|f| f.method.name().to_string()),
        departments,
        None,
    ))
}

/// The data department a single-department model was trained for (same name and classes).
fn single_department(cfg: &Config, ds: &Dataset) -> Option<usize> {
    let [d] = cfg.departments.as_slice() else {
        return None;
    };
    ds.departments()
        .iter()
        .position(|x| x.name == d.name && x.classes.len() == d.classes.len())
}

fn report(
    ckpt: &Path,
    split: Split,
    method: Option<String>,
    departments: Vec<DepartmentScore>,
    unified_top1: Option<f64>,
) -> EvalReport {
    let avg = |f: fn(&DepartmentScore) -> f64| mean(&departments.iter().map(f).collect::<Vec<_>>());
    EvalReport {
        checkpoint: ckpt.display().to_string(),
        split: split.to_string(),
        method,
        mean_experts: avg(|d| d.experts),
        mean_shared: avg(|d| d.shared),
        mean_balanced_accuracy: avg(|d| d.metrics.balanced_accuracy),
        mean_auc: avg(|d| d.metrics.auc),
        unified_top1,
        departments,
    }
}

/// Metrics of `logits(xs)` (`[B, classes]`) on every image of department `t` in `split`,
/// against the class within the department.
///
/// # Errors
/// Data errors, or `logits`'s.
pub fn outputs(
    input: &Input,
    split: Split,
    t: usize,
    batch: usize,
    ctl: &Control,
    mut logits: impl FnMut(&Tensor) -> anyhow::Result<Tensor>,
) -> anyhow::Result<ClassMetrics> {
    let classes = input.ds.departments()[t].classes.len();
    let (mut labels, mut all) = (Vec::new(), Vec::new());
    super::run::eval_batches(input, split, Some(t), batch, ctl, |xs, b| {
        let z = tch::no_grad(|| logits(xs))?;
        anyhow::ensure!(
            z.size() == [b.len() as i64, classes as i64],
            "logits of shape {:?} for {} images of {classes} classes",
            z.size(),
            b.len()
        );
        let z: Vec<f32> = Vec::try_from(
            z.to_kind(tch::Kind::Float)
                .to_device(Device::Cpu)
                .reshape([-1]),
        )?;
        all.extend(z);
        labels.extend(b.classes.iter().map(|&c| c as usize));
        Ok(())
    })?;
    Ok(ClassMetrics::from_logits(&labels, &all, classes))
}

/// Whether `p` is a teacher safetensors (it carries the `lorkd_teacher` metadata).
pub fn is_teacher_file(p: &Path) -> bool {
    super::io::load_tensors_metadata(p)
        .map(|m| m.contains_key(TEACHER_KEY))
        .unwrap_or(false)
}

/// A teacher's metrics per department (argmax over the department's slice of the unified
/// head) and its top-1 over all classes (argmax over the whole unified head).
///
/// # Errors
/// Unreadable teacher, a teacher trained on other departments, data errors.
pub fn teacher_scores(
    p: &Path,
    ds: &Arc<Dataset>,
    split: Split,
    batch: usize,
    ctl: &Control,
) -> anyhow::Result<(Vec<ClassMetrics>, f64)> {
    let teacher = Teacher::load(p, ctl.device, ds.total_classes() as i64)?;
    let Teacher::ResNet { meta, net, .. } = &teacher else {
        anyhow::bail!("{}: not a ResNet teacher", p.display());
    };
    let mut cfg = Config::new(
        crate::config::Arch::ShuffleNetV2X1_0,
        meta.in_channels,
        meta.departments.clone(),
    );
    bridge::check_matches(&cfg, ds)
        .with_context(|| format!("{}: teacher trained on other departments", p.display()))?;
    cfg.input_size = meta.input_size;
    cfg.mean = meta.mean.clone();
    cfg.std = meta.std.clone();
    let transform = bridge::transform(&cfg);
    let offsets: Vec<i64> = (0..ds.departments().len())
        .map(|t| cfg.class_offset(t))
        .collect();
    let input = Input::new(ds.clone(), transform, ctl);
    let per_dept = (0..ds.departments().len())
        .map(|t| {
            let n = ds.departments()[t].classes.len() as i64;
            outputs(&input, split, t, batch, ctl, |xs| {
                Ok(teacher.logits(xs)?.narrow(1, offsets[t], n))
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let unified = teacher_accuracy(net, &input, split, batch, ctl)?;
    Ok((per_dept, unified))
}

fn load(
    p: &Path,
    device: Device,
) -> anyhow::Result<(
    crate::config::Config,
    crate::models::shufflenet::ShuffleNetLoRKD,
)> {
    let ck = Checkpoint::load(p).with_context(|| format!("loading {}", p.display()))?;
    let (vs, model) = ck.into_model(device)?;
    // The model's variables live as long as the VarStore's tensors, which the model holds.
    drop(vs);
    Ok((ck.config, model))
}
