//! What every training command shares: how a run is controlled ([`Control`], Ctrl-C through
//! [`INTERRUPTED`]), one epoch's bookkeeping ([`Epoch`]: progress bar, running sums kept on
//! the device, non-finite loss stop, interrupt), the `metrics.jsonl` line ([`EpochMetrics`])
//! and the one top-1 accuracy loop ([`top1`]). `fit`, `teacher`, `finetune` and `eval` use it.
//!
//! The running sums (loss, CE, KD, correct) are accumulated as one device tensor and read back
//! only when the progress bar is redrawn (at most every [`READ_EVERY`]) and at the epoch's
//! end: reading a scalar per step would wait for the GPU after every step.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use lorkd_data::{CacheMode, LoaderConfig, Split, Transform};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use super::input::Input;
use crate::eks_conv::DeptSel;
use crate::models::shufflenet::ShuffleNetLoRKD;

/// Set by the Ctrl-C handler; the training loops stop after the current step.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Installs the Ctrl-C handler once (a second Ctrl-C quits at once).
pub fn install_ctrlc() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = ctrlc::set_handler(|| {
            if INTERRUPTED.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
            eprintln!("\ninterrupted: stopping after this step; the last epoch's checkpoint stays (Ctrl-C again quits now)");
        });
    });
}

/// How to run (not part of the run's identity).
#[derive(Clone, Debug)]
pub struct Control {
    /// Where to train.
    pub device: Device,
    /// Draw a progress bar.
    pub progress: bool,
    /// Data loader threads.
    pub workers: usize,
    /// Stop (as on Ctrl-C) after this many optimisation steps of this invocation.
    pub stop_after_steps: Option<u64>,
    /// libtorch intra-op threads (None: libtorch's default, one per core). On a shared or
    /// busy machine 1 is often much faster: spinning OpenMP threads starve each other.
    pub threads: Option<i32>,
    /// Forward passes under bf16 autocast ([`crate::amp`]; only ever true on CUDA).
    pub amp: bool,
    /// Activations and conv weights channels_last ([`crate::amp::to_channels_last`]; CUDA).
    pub channels_last: bool,
    /// Where splits are prepared as `uint8` once ([`super::input`]; `Off`: decode every epoch).
    pub data_cache: CacheMode,
    /// Distil from teacher logits computed once per image and flip
    /// ([`super::teacher_cache`]) instead of running the teacher every step.
    pub teacher_cache: bool,
}

impl Default for Control {
    fn default() -> Self {
        Control {
            device: crate::default_device(),
            progress: true,
            workers: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .min(8),
            stop_after_steps: None,
            threads: None,
            amp: crate::amp::Amp::default().enabled(crate::default_device()),
            channels_last: crate::amp::Amp::default().channels_last(crate::default_device()),
            data_cache: CacheMode::default_dir(),
            teacher_cache: true,
        }
    }
}

impl Control {
    /// Applies [`Control::threads`] to libtorch (and `LORKD_CUDNN_BENCHMARK`).
    pub fn apply_threads(&self) {
        crate::amp::cudnn_benchmark_from_env(self.device);
        if let Some(n) = self.threads {
            tch::set_num_threads(n.max(1));
        }
    }

    /// An evaluation loader config over `departments` (None: all) of a split.
    pub fn eval_loader(
        &self,
        batch: usize,
        transform: &Transform,
        departments: Option<Vec<usize>>,
    ) -> LoaderConfig {
        let mut lc = LoaderConfig::eval(batch.max(1), transform.clone());
        lc.workers = self.workers.max(1);
        lc.prefetch = 2 * lc.workers;
        lc.departments = departments;
        lc
    }

    /// The shuffled, mirrored training loader of one department (`finetune`,
    /// `add-department`, `transfer`) for each epoch, and its batches per epoch.
    pub fn department_train_loader(
        &self,
        ds: &lorkd_data::Dataset,
        dept: usize,
        batch: usize,
        seed: u64,
        transform: &Transform,
    ) -> (impl Fn(u64) -> LoaderConfig, u64) {
        let (workers, transform) = (self.workers.max(1), transform.clone());
        let per_epoch = ds
            .indices_of(Split::Train, dept)
            .len()
            .div_ceil(batch.max(1)) as u64;
        let cfg = move |epoch: u64| LoaderConfig {
            workers,
            prefetch: 2 * workers,
            departments: Some(vec![dept]),
            ..LoaderConfig::train(batch, transform.clone(), seed, epoch)
        };
        (cfg, per_epoch)
    }
}

/// Runs `f` on every evaluation batch of `split` (of department `dept`, or all): the images
/// on the device as the model takes them, and the batch (labels). The one evaluation loop of
/// [`top1`] and `eval::outputs`.
///
/// # Errors
/// Data errors, and `f`'s.
pub fn eval_batches(
    input: &Input,
    split: Split,
    dept: Option<usize>,
    batch: usize,
    ctl: &Control,
    mut f: impl FnMut(&Tensor, &lorkd_data::Batch) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let lc = ctl.eval_loader(batch, &input.transform, dept.map(|d| vec![d]));
    for b in input.loader(split, lc)? {
        let b = b?;
        f(&input.images(&b), &b)?;
    }
    Ok(())
}

/// One line of `metrics.jsonl`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// Department trained (stl) or None (all).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub department: Option<String>,
    /// Epochs completed (1-based).
    pub epoch: u64,
    /// Optimisation steps so far.
    pub step: u64,
    /// Learning rate of the epoch's last step.
    pub lr: f64,
    /// Mean training loss.
    pub loss: f64,
    /// Mean cross-entropy term.
    pub ce: f64,
    /// Mean distillation term (β·α²·KL).
    pub kd: f64,
    /// Training top-1 accuracy on department heads.
    pub train_acc: f64,
    /// Validation top-1 per department (experts).
    pub val_acc: Vec<f64>,
    /// Mean of `val_acc`.
    pub val_mean: f64,
    /// Training images per second (loading + step).
    pub images_per_sec: f64,
    /// Wall time of the epoch.
    pub seconds: f64,
}

impl EpochMetrics {
    /// Appends this line to `path` (created when absent).
    ///
    /// # Errors
    /// I/O.
    pub fn append_to(&self, path: &Path) -> anyhow::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        writeln!(f, "{}", serde_json::to_string(self)?)?;
        Ok(())
    }
}

/// A progress bar (hidden when `show` is false).
pub fn progress_bar(show: bool, len: u64, prefix: &str) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(len);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg}")
    {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_prefix(prefix.to_string());
    pb
}

/// Mean of a slice (0 when empty).
pub fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// Longest time between two reads of the device-side sums (progress redraw, loss check).
pub const READ_EVERY: Duration = Duration::from_millis(500);

/// The epoch's means, read back from the device once.
#[derive(Clone, Copy, Debug, Default)]
pub struct EpochTotals {
    /// Images seen.
    pub seen: usize,
    /// Mean loss.
    pub loss: f64,
    /// Mean CE term.
    pub ce: f64,
    /// Mean distillation term.
    pub kd: f64,
    /// Top-1 on the training batches.
    pub train_acc: f64,
    /// Wall time.
    pub seconds: f64,
}

impl EpochTotals {
    /// Images per second over the epoch.
    pub fn images_per_sec(&self) -> f64 {
        self.seen as f64 / self.seconds.max(1e-9)
    }
}

/// A non-finite mean loss seen when the sums were read (`step`: the last step recorded).
#[derive(Clone, Copy, Debug)]
pub struct NonFinite {
    /// The mean loss read.
    pub loss: f64,
    /// Steps recorded in this epoch when it was seen.
    pub step_in_epoch: u64,
}

/// One epoch's bookkeeping: progress bar, device-side sums, stop conditions.
pub struct Epoch {
    pb: indicatif::ProgressBar,
    started: Instant,
    last_read: Instant,
    /// `[loss·n, ce·n, kd·n, correct]` as f64 on the training device.
    sums: Option<Tensor>,
    seen: usize,
    steps: u64,
}

impl Epoch {
    /// Starts an epoch of `batches` steps; the bar reads `prefix`.
    pub fn start(ctl: &Control, batches: u64, prefix: &str) -> Self {
        let now = Instant::now();
        Epoch {
            pb: progress_bar(ctl.progress, batches, prefix),
            started: now,
            last_read: now,
            sums: None,
            seen: 0,
            steps: 0,
        }
    }

    /// Records a step over `n` images: `loss`, `ce`, `kd` are batch means (scalars), `correct`
    /// a count (scalar). Nothing is read from the device unless [`READ_EVERY`] has passed.
    ///
    /// # Errors
    /// A non-finite mean loss, when the sums were read.
    pub fn record(
        &mut self,
        n: usize,
        loss: &Tensor,
        ce: &Tensor,
        kd: &Tensor,
        correct: &Tensor,
    ) -> Result<(), NonFinite> {
        let nf = n as f64;
        let row = Tensor::stack(
            &[
                loss.detach().to_kind(Kind::Double) * nf,
                ce.detach().to_kind(Kind::Double) * nf,
                kd.detach().to_kind(Kind::Double) * nf,
                correct.to_kind(Kind::Double),
            ],
            0,
        );
        self.sums = Some(match self.sums.take() {
            Some(s) => s + row,
            None => row,
        });
        self.seen += n;
        self.steps += 1;
        self.pb.inc(1);
        if self.last_read.elapsed() >= READ_EVERY {
            self.last_read = Instant::now();
            let t = self.read()?;
            self.pb.set_message(format!(
                "loss {:.4} acc {:.3} {:.0} img/s",
                t.loss,
                t.train_acc,
                t.images_per_sec()
            ));
        }
        Ok(())
    }

    /// Steps recorded so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    fn read(&self) -> Result<EpochTotals, NonFinite> {
        let v: Vec<f64> = match &self.sums {
            Some(s) => Vec::try_from(&s.to_device(Device::Cpu)).unwrap_or_default(),
            None => vec![0.0; 4],
        };
        let per = |i: usize| v.get(i).copied().unwrap_or(f64::NAN) / self.seen.max(1) as f64;
        let t = EpochTotals {
            seen: self.seen,
            loss: per(0),
            ce: per(1),
            kd: per(2),
            train_acc: per(3),
            seconds: self.started.elapsed().as_secs_f64(),
        };
        if t.loss.is_finite() {
            Ok(t)
        } else {
            self.pb.abandon();
            Err(NonFinite {
                loss: t.loss,
                step_in_epoch: self.steps,
            })
        }
    }

    /// Whether the loop should stop now: Ctrl-C, or `stop_after_steps` of this invocation
    /// (`steps_here` counts them) reached.
    pub fn stop_requested(ctl: &Control, steps_here: u64) -> bool {
        INTERRUPTED.load(Ordering::SeqCst) || ctl.stop_after_steps.is_some_and(|s| steps_here >= s)
    }

    /// Leaves the bar where it is (an interrupted epoch).
    pub fn abandon(self) {
        self.pb.abandon();
    }

    /// Ends the epoch: clears the bar and reads the sums once.
    ///
    /// # Errors
    /// A non-finite mean loss.
    pub fn finish(self) -> Result<EpochTotals, NonFinite> {
        let t = self.read()?;
        self.pb.finish_and_clear();
        Ok(t)
    }
}

/// Which label a prediction is compared with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Labels {
    /// The class within the image's department (department heads).
    Department,
    /// The class in the unified head (all departments' classes concatenated).
    Global,
}

/// Top-1 accuracy of `predict` on a split of `input`: one score per entry of `groups` (a
/// department, or None for all images together). `predict(xs, g)` returns the predicted labels `[B]` for the
/// normalised batch `xs` of group `g` (its index in `groups`); correct counts stay on the
/// device until the group ends. A group without images scores NaN.
///
/// # Errors
/// Data errors and what `predict` returns.
#[allow(clippy::too_many_arguments)]
pub fn top1(
    input: &Input,
    split: Split,
    groups: &[Option<usize>],
    labels: Labels,
    batch: usize,
    ctl: &Control,
    mut predict: impl FnMut(&Tensor, usize) -> anyhow::Result<Tensor>,
) -> anyhow::Result<Vec<f64>> {
    let mut acc = Vec::with_capacity(groups.len());
    for (g, dept) in groups.iter().enumerate() {
        let mut ok = Tensor::zeros([], (Kind::Int64, ctl.device));
        let mut n = 0usize;
        eval_batches(input, split, *dept, batch, ctl, |xs, b| {
            let y = match labels {
                Labels::Department => &b.classes,
                Labels::Global => &b.global_classes,
            };
            let y = crate::upload(y, ctl.device);
            let pred = tch::no_grad(|| predict(xs, g))?;
            ok += pred.eq_tensor(&y).sum(Kind::Int64);
            n += b.len();
            Ok(())
        })?;
        acc.push(if n == 0 {
            f64::NAN
        } else {
            ok.int64_value(&[]) as f64 / n as f64
        });
    }
    Ok(acc)
}

/// Top-1 accuracy per department of a split: with each department's experts (`experts`)
/// or with the shared weights alone, always through the department's own head. `only`: the
/// model holds just that (global) department. `input` must hold the model's transform.
///
/// # Errors
/// Data errors.
pub fn department_accuracy(
    model: &ShuffleNetLoRKD,
    input: &Input,
    split: Split,
    only: Option<usize>,
    experts: bool,
    batch: usize,
    ctl: &Control,
) -> anyhow::Result<Vec<f64>> {
    let groups: Vec<Option<usize>> = match only {
        Some(t) => vec![Some(t)],
        None => (0..input.ds.departments().len()).map(Some).collect(),
    };
    top1(
        input,
        split,
        &groups,
        Labels::Department,
        batch,
        ctl,
        |xs, t| {
            let sel = if experts && model.config.rank > 0 {
                DeptSel::One(t as i64)
            } else {
                DeptSel::Shared
            };
            Ok(model
                .head_logits(&model.forward_t(xs, sel, false), t)
                .argmax(-1, false))
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_sums_are_means_and_non_finite_stops() {
        let ctl = Control {
            device: Device::Cpu,
            progress: false,
            ..Control::default()
        };
        let mut e = Epoch::start(&ctl, 2, "t");
        let s = |v: f64| Tensor::from(v);
        e.record(2, &s(1.0), &s(0.5), &s(0.5), &Tensor::from(1i64))
            .unwrap();
        e.record(6, &s(3.0), &s(2.0), &s(1.0), &Tensor::from(3i64))
            .unwrap();
        let t = e.finish().unwrap();
        assert_eq!(t.seen, 8);
        assert!((t.loss - (2.0 + 18.0) / 8.0).abs() < 1e-12, "{t:?}");
        assert!((t.ce - (1.0 + 12.0) / 8.0).abs() < 1e-12);
        assert!((t.kd - (1.0 + 6.0) / 8.0).abs() < 1e-12);
        assert!((t.train_acc - 0.5).abs() < 1e-12);

        let mut e = Epoch::start(&ctl, 2, "t");
        e.record(1, &s(f64::NAN), &s(0.0), &s(0.0), &Tensor::from(0i64))
            .unwrap_or(());
        e.record(1, &s(1.0), &s(0.0), &s(0.0), &Tensor::from(0i64))
            .unwrap_or(());
        let err = e.finish().expect_err("NaN must stop");
        assert!(err.loss.is_nan());
        assert_eq!(err.step_in_epoch, 2);
    }
}
