//! `eval`: top-1 accuracy per department and the average, for the decomposed experts
//! (`W0 + s·B_t·A_t`, head t) and for the shared weights alone (`W0`, head t) — the
//! decomposition's gain over its own shared part. An `stl` run is scored model by model.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use lorkd_data::{Dataset, Split};
use serde::{Deserialize, Serialize};
use tch::Device;

use super::data as bridge;
use super::fit::{department_accuracy, mean, Control, FitConfig, Method};
use crate::checkpoint::Checkpoint;

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
    let (run_dir, file) = if ckpt.is_dir() {
        (Some(ckpt), ckpt.join("model.safetensors"))
    } else {
        (None, ckpt.to_path_buf())
    };
    let fit = run_dir.and_then(read_method);
    let mut departments = Vec::new();
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
            let acc = department_accuracy(&model, &ds, split, Some(t), true, batch, ctl)?[0];
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
        let experts = department_accuracy(&model, &ds, split, None, true, batch, ctl)?;
        let shared = department_accuracy(&model, &ds, split, None, false, batch, ctl)?;
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
