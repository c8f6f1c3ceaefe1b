//! `eval`: top-1 accuracy per department and the average, for the decomposed experts
//! (`W0 + s·B_t·A_t`, head t) and for the shared weights alone (`W0`, head t) — the
//! decomposition's gain over its own shared part. An `stl` run is scored model by model.
//!
//! A teacher file (`lorkd-train teacher` output) is scored too: its unified head covers every
//! department's classes, and each sample counts as correct when the argmax of the logits
//! restricted to ITS department's class slice is its class — the same per-department question
//! the students answer with their department heads. (`experts` and `shared` then both hold
//! that accuracy; `method` is `teacher`.)

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use lorkd_data::{Dataset, Split};
use serde::{Deserialize, Serialize};
use tch::Device;

use super::data as bridge;
use super::fit::{FitConfig, Method};
use super::input::Input;
use super::run::{department_accuracy, mean, Control};
use super::teacher::{department_slice_accuracy, Teacher, TEACHER_KEY};
use crate::checkpoint::Checkpoint;
use crate::config::Config;

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
            "{} on {} ({})\n{:<w$}  {:>7}  {:>8}  {:>8}\n",
            self.checkpoint,
            self.split,
            self.method.as_deref().unwrap_or("checkpoint"),
            "department",
            "images",
            "experts",
            "shared"
        );
        for d in &self.departments {
            s += &format!(
                "{:<w$}  {:>7}  {:>8.4}  {:>8.4}\n",
                d.name, d.images, d.experts, d.shared
            );
        }
        s += &format!(
            "{:<w$}  {:>7}  {:>8.4}  {:>8.4}\n",
            "mean", "", self.mean_experts, self.mean_shared
        );
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
        let acc = teacher_department_accuracy(&file, &ds, split, batch, ctl)?;
        for (t, d) in ds.departments().iter().enumerate() {
            departments.push(DepartmentScore {
                name: d.name.clone(),
                images: ds.indices_of(split, t).len(),
                experts: acc[t],
                shared: acc[t],
            });
        }
        let e: Vec<f64> = acc.clone();
        return Ok(EvalReport {
            checkpoint: ckpt.display().to_string(),
            split: split.to_string(),
            method: Some("teacher".into()),
            mean_experts: mean(&e),
            mean_shared: mean(&e),
            departments,
        });
    }
    if let (Some(dir), Some(Method::Stl)) = (run_dir, fit.as_ref().map(|f| f.method)) {
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
            let acc = department_accuracy(&model, &input, split, Some(t), true, batch, ctl)?[0];
            departments.push(DepartmentScore {
                name: d.name.clone(),
                images: ds.indices_of(split, t).len(),
                experts: acc,
                shared: acc,
            });
        }
    } else {
        let (cfg, model) = load(&file, ctl.device)?;
        bridge::check_matches(&cfg, &ds)?;
        let input = Input::new(ds.clone(), bridge::transform(&cfg), ctl);
        let experts = department_accuracy(&model, &input, split, None, true, batch, ctl)?;
        let shared = department_accuracy(&model, &input, split, None, false, batch, ctl)?;
        for (t, d) in ds.departments().iter().enumerate() {
            departments.push(DepartmentScore {
                name: d.name.clone(),
                images: ds.indices_of(split, t).len(),
                experts: experts[t],
                shared: shared[t],
            });
        }
    }
    let e: Vec<f64> = departments.iter().map(|d| d.experts).collect();
    let s: Vec<f64> = departments.iter().map(|d| d.shared).collect();
    Ok(EvalReport {
        checkpoint: ckpt.display().to_string(),
        split: split.to_string(),
        method: fit.map(|f| f.method.name().to_string()),
        mean_experts: mean(&e),
        mean_shared: mean(&s),
        departments,
    })
}

/// Whether `p` is a teacher safetensors (it carries the `lorkd_teacher` metadata).
pub fn is_teacher_file(p: &Path) -> bool {
    super::io::load_tensors_metadata(p)
        .map(|m| m.contains_key(TEACHER_KEY))
        .unwrap_or(false)
}

/// Per-department top-1 of a teacher: argmax over the department's slice of the unified head.
///
/// # Errors
/// Unreadable teacher, a teacher trained on other departments, data errors.
pub fn teacher_department_accuracy(
    p: &Path,
    ds: &Arc<Dataset>,
    split: Split,
    batch: usize,
    ctl: &Control,
) -> anyhow::Result<Vec<f64>> {
    let teacher = Teacher::load(p, ctl.device, ds.total_classes() as i64)?;
    let Teacher::ResNet { meta, .. } = &teacher else {
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
    department_slice_accuracy(|xs| teacher.logits(xs), &input, split, &offsets, batch, ctl)
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
