//! The foundation model ("teacher") whose logits over all departments' classes the students
//! distil: a ResNet-18/50 trained here with one unified head (`lorkd-train teacher`), saved as
//! safetensors with torchvision names and a `lorkd_teacher` metadata JSON; or a TorchScript
//! module exported from PyTorch whose output is `[B, total classes]` logits for the same
//! normalised input (ImageNet mean/std unless the data says otherwise).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use lorkd_data::{Dataset, Loader, LoaderConfig, Split};
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};

use super::data as bridge;
use super::fit::{mean, progress_bar, Control, EpochMetrics, INTERRUPTED};
use super::io;
use super::sgd::{cosine_lr, Sgd};
use crate::config::{Arch, Config, Department};
use crate::models::resnet::{ResNet, ResNetArch};

/// The teacher's file in a teacher run directory.
pub const TEACHER_FILE: &str = "teacher.safetensors";

/// Metadata key of a teacher file.
pub const TEACHER_KEY: &str = "lorkd_teacher";

/// What a teacher file says about its network and data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TeacherMeta {
    /// `resnet18` or `resnet50`.
    pub arch: String,
    /// Input channels.
    pub in_channels: i64,
    /// Square input side.
    pub input_size: i64,
    /// Per-channel mean.
    pub mean: Vec<f64>,
    /// Per-channel std.
    pub std: Vec<f64>,
    /// BatchNorm epsilon.
    pub bn_eps: f64,
    /// Departments; the unified head is their classes concatenated in this order.
    pub departments: Vec<Department>,
}

impl TeacherMeta {
    fn total_classes(&self) -> i64 {
        self.departments
            .iter()
            .map(|d| d.classes.len() as i64)
            .sum()
    }
}

/// A loaded teacher, used in evaluation mode without gradients.
// One teacher per run: the variants' size difference does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Teacher {
    /// Trained by `lorkd-train teacher`.
    ResNet {
        /// Holds the weights.
        vs: nn::VarStore,
        /// The network.
        net: ResNet,
        /// Its metadata.
        meta: TeacherMeta,
    },
    /// A TorchScript module.
    Script(tch::CModule),
}

impl Teacher {
    /// Loads `path` (`.pt`/`.pth`/`.ts`: TorchScript; else a teacher safetensors) and checks
    /// that it outputs `classes` logits.
    ///
    /// # Errors
    /// Unreadable file, wrong metadata, or a class count that is not `classes`.
    pub fn load(path: &Path, device: Device, classes: i64) -> anyhow::Result<Teacher> {
        let dir_file;
        let path = if path.is_dir() {
            dir_file = path.join(TEACHER_FILE);
            dir_file.as_path()
        } else {
            path
        };
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if matches!(ext, "pt" | "pth" | "ts" | "jit") {
            let mut m = tch::CModule::load_on_device(path, device)
                .with_context(|| format!("loading TorchScript teacher {}", path.display()))?;
            m.set_eval();
            return Ok(Teacher::Script(m));
        }
        let (meta, tensors) = io::load_tensors(path)?;
        let meta: TeacherMeta = serde_json::from_str(meta.get(TEACHER_KEY).with_context(|| {
            format!(
                "{}: not a teacher file (no `{TEACHER_KEY}` metadata)",
                path.display()
            )
        })?)
        .with_context(|| format!("{}: bad teacher metadata", path.display()))?;
        anyhow::ensure!(
            meta.total_classes() == classes,
            "{}: the teacher has {} classes, the data {classes}",
            path.display(),
            meta.total_classes()
        );
        let arch: ResNetArch = meta
            .arch
            .parse()
            .map_err(|e: String| anyhow::anyhow!("{}: {e}", path.display()))?;
        let vs = nn::VarStore::new(device);
        let net = ResNet::new(&vs.root(), arch, meta.in_channels, classes, meta.bn_eps);
        io::load_into(&vs, &tensors, path)?;
        Ok(Teacher::ResNet { vs, net, meta })
    }

    /// Logits `[B, classes]` for a normalised batch, without gradients.
    ///
    /// # Errors
    /// A TorchScript module that fails or returns something else than a 2-D tensor.
    pub fn logits(&self, xs: &Tensor) -> anyhow::Result<Tensor> {
        tch::no_grad(|| match self {
            Teacher::ResNet { net, .. } => Ok(net.forward_t(xs, false)),
            Teacher::Script(m) => {
                let z = m
                    .forward_ts(&[xs.shallow_clone()])
                    .context("TorchScript teacher forward")?;
                anyhow::ensure!(
                    z.dim() == 2 && z.size()[0] == xs.size()[0],
                    "teacher output shape {:?}",
                    z.size()
                );
                Ok(z.to_kind(Kind::Float))
            }
        })
    }

    /// The variable store of a trained ResNet teacher.
    pub fn var_store(&self) -> Option<&nn::VarStore> {
        match self {
            Teacher::ResNet { vs, .. } => Some(vs),
            Teacher::Script(_) => None,
        }
    }
}

/// Settings of `lorkd-train teacher`.
#[derive(Clone, Debug)]
pub struct TeacherConfig {
    /// `--data` spec.
    pub data: String,
    /// ResNet depth.
    pub arch: ResNetArch,
    /// Epochs.
    pub epochs: u64,
    /// Batch size.
    pub batch: usize,
    /// Peak learning rate (cosine).
    pub lr: f64,
    /// Seed.
    pub seed: u64,
    /// Input side (None: the data's native size, else 224).
    pub input_size: Option<i64>,
    /// Output: a run directory (`teacher.safetensors`, `metrics.jsonl`), or a `.safetensors`
    /// file (metrics then go to `<file stem>.metrics.jsonl` beside it).
    pub output: PathBuf,
}

impl TeacherConfig {
    /// `(teacher file, metrics.jsonl)` for [`TeacherConfig::output`].
    pub fn paths(&self) -> (PathBuf, PathBuf) {
        let o = &self.output;
        if o.extension().is_some_and(|e| e == "safetensors") {
            let stem = o.file_stem().and_then(|s| s.to_str()).unwrap_or("teacher");
            (o.clone(), o.with_file_name(format!("{stem}.metrics.jsonl")))
        } else {
            (o.join(TEACHER_FILE), o.join("metrics.jsonl"))
        }
    }
}

/// Trains a ResNet with one unified head over all departments' classes (plain CE on the
/// global class), saving the teacher after every epoch and appending one [`EpochMetrics`]
/// line per epoch to its `metrics.jsonl` (`val_acc`: per department, argmax over the
/// department's class slice; `val_mean` their mean). Returns validation top-1 (unified head,
/// argmax over all classes, all departments together).
///
/// # Errors
/// Bad data, NaN loss, I/O.
pub fn train_teacher(tc: &TeacherConfig, ctl: &Control) -> anyhow::Result<f64> {
    if let Some(n) = ctl.threads {
        tch::set_num_threads(n.max(1));
    }
    let ds = Arc::new(Dataset::open_str(&tc.data)?);
    eprintln!("data: {}", ds.summary());
    let (out_file, metrics_file) = tc.paths();
    if let Some(dir) = out_file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // A new run: start the metrics afresh.
    let _ = std::fs::remove_file(&metrics_file);
    if out_file != tc.output {
        let run = serde_json::json!({
            "method": "teacher",
            "data": tc.data,
            "arch": tc.arch.to_string(),
            "epochs": tc.epochs,
            "batch": tc.batch,
            "lr": tc.lr,
            "seed": tc.seed,
            "input_size": tc.input_size,
        });
        io::write_atomic(
            &tc.output.join("run.json"),
            serde_json::to_string_pretty(&run)?.as_bytes(),
        )?;
    }
    let classes = ds.total_classes() as i64;
    let input_size = tc
        .input_size
        .unwrap_or_else(|| bridge::default_input_size(&ds));
    let c = Config::new(Arch::ShuffleNetV2X1_0, 3, bridge::departments(&ds));
    let meta = TeacherMeta {
        arch: tc.arch.to_string(),
        in_channels: 3,
        input_size,
        mean: c.mean.clone(),
        std: c.std.clone(),
        bn_eps: 1e-5,
        departments: c.departments.clone(),
    };
    let mut tcfg = c;
    tcfg.input_size = input_size;
    let transform = bridge::transform(&tcfg);
    tch::manual_seed(tc.seed as i64);
    let vs = nn::VarStore::new(ctl.device);
    let net = ResNet::new(&vs.root(), tc.arch, 3, classes, meta.bn_eps);
    let mut opt = Sgd::new(&vs, 0.9, 1e-4);
    let lc = |epoch: u64| {
        let mut l = LoaderConfig::train(tc.batch, transform.clone(), tc.seed, epoch);
        l.workers = ctl.workers.max(1);
        l.prefetch = 2 * l.workers;
        l
    };
    let per_epoch = ds.len(Split::Train).div_ceil(tc.batch.max(1)) as u64;
    let total = per_epoch * tc.epochs;
    let mut step = 0u64;
    let mut val = 0.0;
    let offsets: Vec<i64> = (0..ds.departments().len())
        .map(|t| ds.class_offset(t) as i64)
        .collect();
    for epoch in 0..tc.epochs {
        let started = Instant::now();
        let (mut sum, mut ok, mut seen) = (0f64, 0i64, 0usize);
        let mut lr = tc.lr;
        let pb = progress_bar(
            ctl.progress,
            ds.len(Split::Train).div_ceil(tc.batch.max(1)) as u64,
            &format!("teacher epoch {}/{}", epoch + 1, tc.epochs),
        );
        for b in Loader::new(ds.clone(), Split::Train, lc(epoch)) {
            let b = b?;
            let xs = bridge::images(&b, ctl.device);
            let y = Tensor::from_slice(&b.global_classes).to_device(ctl.device);
            let z = crate::amp::run(ctl.amp, || net.forward_t(&xs, true)).to_kind(Kind::Float);
            let loss = z.cross_entropy_for_logits(&y);
            let lv = loss.double_value(&[]);
            anyhow::ensure!(
                lv.is_finite(),
                "teacher loss is {lv} at epoch {} step {step}; the last good teacher is {}",
                epoch + 1,
                out_file.display()
            );
            lr = cosine_lr(tc.lr, step, total);
            opt.zero_grad();
            loss.backward();
            opt.step(lr);
            step += 1;
            seen += b.len();
            sum += lv * b.len() as f64;
            ok += z
                .argmax(-1, false)
                .eq_tensor(&y)
                .sum(Kind::Int64)
                .int64_value(&[]);
            pb.set_message(format!(
                "loss {:.4} acc {:.3} {:.0} img/s",
                sum / seen as f64,
                ok as f64 / seen as f64,
                seen as f64 / started.elapsed().as_secs_f64().max(1e-9)
            ));
            pb.inc(1);
            if INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst) {
                pb.abandon();
                anyhow::bail!(
                    "interrupted; the last saved teacher is {}",
                    out_file.display()
                );
            }
        }
        pb.finish_and_clear();
        let secs = started.elapsed().as_secs_f64();
        val = teacher_accuracy(&net, &ds, Split::Val, &transform, tc.batch, ctl)?;
        let per_dept = department_slice_accuracy(
            |xs| Ok(tch::no_grad(|| net.forward_t(xs, false))),
            &ds,
            Split::Val,
            &transform,
            &offsets,
            tc.batch,
            ctl,
        )?;
        let tensors = io::sorted_variables(&vs);
        let m = HashMap::from([(TEACHER_KEY.to_string(), serde_json::to_string(&meta)?)]);
        io::save_tensors(&out_file, &tensors, m)?;
        let em = EpochMetrics {
            department: None,
            epoch: epoch + 1,
            step,
            lr,
            loss: sum / seen.max(1) as f64,
            ce: sum / seen.max(1) as f64,
            kd: 0.0,
            train_acc: ok as f64 / seen.max(1) as f64,
            val_mean: mean(&per_dept),
            val_acc: per_dept,
            images_per_sec: seen as f64 / secs.max(1e-9),
            seconds: secs,
        };
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&metrics_file)
            .with_context(|| format!("opening {}", metrics_file.display()))?;
        writeln!(f, "{}", serde_json::to_string(&em)?)?;
        eprintln!(
            "teacher epoch {}/{}: loss {:.4} train acc {:.3} val acc {:.3} (per department {:.3}) {:.0} img/s",
            epoch + 1,
            tc.epochs,
            em.loss,
            em.train_acc,
            val,
            em.val_mean,
            em.images_per_sec
        );
    }
    Ok(val)
}

/// Top-1 per department where each sample's prediction is the argmax of `logits` restricted
/// to its department's class slice (`offsets[t]`, the department's class count).
///
/// # Errors
/// Data or model errors.
pub fn department_slice_accuracy(
    logits: impl Fn(&Tensor) -> anyhow::Result<Tensor>,
    ds: &Arc<Dataset>,
    split: Split,
    transform: &lorkd_data::Transform,
    offsets: &[i64],
    batch: usize,
    ctl: &Control,
) -> anyhow::Result<Vec<f64>> {
    let mut acc = Vec::new();
    for (t, d) in ds.departments().iter().enumerate() {
        let (off, n_cls) = (offsets[t], d.classes.len() as i64);
        let mut lc = LoaderConfig::eval(batch.max(1), transform.clone());
        lc.workers = ctl.workers.max(1);
        lc.prefetch = 2 * lc.workers;
        lc.departments = Some(vec![t]);
        let (mut ok, mut n) = (0i64, 0i64);
        for b in Loader::new(ds.clone(), split, lc) {
            let b = b?;
            let xs = bridge::images(&b, ctl.device);
            let y = Tensor::from_slice(&b.classes).to_device(ctl.device);
            let pred = logits(&xs)?.narrow(1, off, n_cls).argmax(-1, false);
            ok += pred.eq_tensor(&y).sum(Kind::Int64).int64_value(&[]);
            n += b.len() as i64;
        }
        acc.push(if n == 0 {
            f64::NAN
        } else {
            ok as f64 / n as f64
        });
    }
    Ok(acc)
}

fn teacher_accuracy(
    net: &ResNet,
    ds: &Arc<Dataset>,
    split: Split,
    transform: &lorkd_data::Transform,
    batch: usize,
    ctl: &Control,
) -> anyhow::Result<f64> {
    let mut lc = LoaderConfig::eval(batch.max(1), transform.clone());
    lc.workers = ctl.workers.max(1);
    let (mut ok, mut n) = (0i64, 0i64);
    for b in Loader::new(ds.clone(), split, lc) {
        let b = b?;
        let xs = bridge::images(&b, ctl.device);
        let y = Tensor::from_slice(&b.global_classes).to_device(ctl.device);
        let pred = tch::no_grad(|| net.forward_t(&xs, false).argmax(-1, false));
        ok += pred.eq_tensor(&y).sum(Kind::Int64).int64_value(&[]);
        n += b.len() as i64;
    }
    Ok(if n == 0 {
        f64::NAN
    } else {
        ok as f64 / n as f64
    })
}
