//! The foundation model ("teacher") whose logits over all departments' classes the students
//! distil: a ResNet-18/50 trained here with one unified head (`lorkd-train teacher`), saved as
//! safetensors with torchvision names and a `lorkd_teacher` metadata JSON; or a TorchScript
//! module exported from PyTorch whose output is `[B, total classes]` logits for the same
//! normalised input (ImageNet mean/std unless the data says otherwise).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use lorkd_data::{Dataset, LoaderConfig, Split};
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};

use super::data as bridge;
use super::input::Input;
use super::io;
use super::run::{mean, top1, Control, Epoch, EpochMetrics, Labels, INTERRUPTED};
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

    /// Pooled features `[B, feature_dim]` for a normalised batch, without gradients (feature
    /// distillation; a `lorkd-train teacher` ResNet only).
    ///
    /// # Errors
    /// A TorchScript teacher (its features are not reachable).
    pub fn features(&self, xs: &Tensor) -> anyhow::Result<Tensor> {
        match self {
            Teacher::ResNet { net, .. } => Ok(tch::no_grad(|| net.features_t(xs, false))),
            Teacher::Script(_) => {
                anyhow::bail!(
                    "--kd features needs a `lorkd-train teacher` ResNet, not a TorchScript module"
                )
            }
        }
    }

    /// Width of [`Teacher::features`] (None for a TorchScript teacher).
    pub fn feature_dim(&self) -> Option<i64> {
        match self {
            Teacher::ResNet { net, .. } => Some(net.feature_dim),
            Teacher::Script(_) => None,
        }
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
    ctl.apply_threads();
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
    let input = Input::new(ds.clone(), transform.clone(), ctl);
    tch::manual_seed(tc.seed as i64);
    let vs = nn::VarStore::new(ctl.device);
    let net = ResNet::new(&vs.root(), tc.arch, 3, classes, meta.bn_eps);
    if ctl.channels_last {
        crate::amp::var_store_channels_last(&vs);
    }
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
        let mut lr = tc.lr;
        let mut ep = Epoch::start(
            ctl,
            ds.len(Split::Train).div_ceil(tc.batch.max(1)) as u64,
            &format!("teacher epoch {}/{}", epoch + 1, tc.epochs),
        );
        let non_finite = |loss: f64, at: u64| {
            anyhow::anyhow!(
                "teacher loss is {loss} at epoch {} by step {at}; the last good teacher is {}",
                epoch + 1,
                out_file.display()
            )
        };
        let zero = Tensor::zeros([], (Kind::Float, ctl.device));
        for b in input.loader(Split::Train, lc(epoch))? {
            let b = b?;
            let xs = input.images(&b);
            let y = crate::upload(&b.global_classes, ctl.device);
            let z = crate::amp::run(ctl.amp, || net.forward_t(&xs, true)).to_kind(Kind::Float);
            let loss = z.cross_entropy_for_logits(&y);
            lr = cosine_lr(tc.lr, step, total);
            opt.zero_grad();
            loss.backward();
            opt.step(lr);
            step += 1;
            let ok = z.argmax(-1, false).eq_tensor(&y).sum(Kind::Int64);
            ep.record(b.len(), &loss, &loss, &zero, &ok)
                .map_err(|e| non_finite(e.loss, step))?;
            if INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst) {
                ep.abandon();
                anyhow::bail!(
                    "interrupted; the last saved teacher is {}",
                    out_file.display()
                );
            }
        }
        let tot = ep.finish().map_err(|e| non_finite(e.loss, step))?;
        val = teacher_accuracy(&net, &input, Split::Val, tc.batch, ctl)?;
        let per_dept = department_slice_accuracy(
            |xs| Ok(tch::no_grad(|| net.forward_t(xs, false))),
            &input,
            Split::Val,
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
            loss: tot.loss,
            ce: tot.ce,
            kd: 0.0,
            train_acc: tot.train_acc,
            val_mean: mean(&per_dept),
            val_acc: per_dept,
            images_per_sec: tot.images_per_sec(),
            seconds: tot.seconds,
        };
        em.append_to(&metrics_file)?;
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
    input: &Input,
    split: Split,
    offsets: &[i64],
    batch: usize,
    ctl: &Control,
) -> anyhow::Result<Vec<f64>> {
    let ds = &input.ds;
    let groups: Vec<Option<usize>> = (0..ds.departments().len()).map(Some).collect();
    top1(
        input,
        split,
        &groups,
        Labels::Department,
        batch,
        ctl,
        |xs, t| {
            let n_cls = ds.departments()[t].classes.len() as i64;
            Ok(logits(xs)?.narrow(1, offsets[t], n_cls).argmax(-1, false))
        },
    )
}

/// Top-1 of the unified head over all classes, all departments together (the paper's
/// protocol for its Foundation row: other departments' classes are candidates too).
pub fn teacher_accuracy(
    net: &ResNet,
    input: &Input,
    split: Split,
    batch: usize,
    ctl: &Control,
) -> anyhow::Result<f64> {
    let acc = top1(
        input,
        split,
        &[None],
        Labels::Global,
        batch,
        ctl,
        |xs, _| Ok(net.forward_t(xs, false).argmax(-1, false)),
    )?;
    Ok(acc[0])
}
