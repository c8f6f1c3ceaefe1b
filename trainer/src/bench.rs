//! Training-step benchmark: median time of forward + backward + SGD step for
//! plain multi-task learning (shared weights, per-department heads, no factors) and for
//! LoRKD in each [`ExpertConvMode`], on the same random batch.
use std::time::Instant;

use serde::Serialize;
use tch::{nn, nn::OptimizerConfig, Device, Kind, Tensor};

use crate::config::{Arch, Config};
use crate::eks_conv::{DeptIds, DeptSel, ExpertConvMode};
use crate::models::shufflenet::ShuffleNetLoRKD;
use crate::testing::randomize_factors;

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Student architecture.
    pub arch: Arch,
    /// Departments `T`.
    pub departments: i64,
    /// Rank `r`.
    pub rank: i64,
    /// Square input size.
    pub input: i64,
    /// Batch size.
    pub batch: i64,
    /// Input channels.
    pub in_channels: i64,
    /// Classes per department head.
    pub classes: usize,
    /// Timed steps per variant (after `warmup`).
    pub iters: usize,
    /// Untimed steps per variant.
    pub warmup: usize,
    /// Device.
    pub device: Device,
    /// RNG seed for data, ids and weights.
    pub seed: u64,
    /// Forward passes under bf16 autocast ([`crate::amp`]; CUDA only).
    pub amp: bool,
    /// Input and conv weights channels_last ([`crate::amp::to_channels_last`]; CUDA only).
    pub channels_last: bool,
}

/// Median step times in milliseconds (JSON keys as in `lorkd-train bench --json`).
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Architecture name.
    pub arch: String,
    /// Departments.
    pub departments: i64,
    /// Rank.
    pub rank: i64,
    /// Input size.
    pub input: i64,
    /// Batch size.
    pub batch: i64,
    /// libtorch intra-op threads.
    pub threads: i32,
    /// Device, as `{:?}`.
    pub device: String,
    /// Timed steps per variant.
    pub iters: usize,
    /// Plain MTL (no factors).
    pub mtl_ms: f64,
    /// LoRKD, EKS grouped conv everywhere.
    pub eks_ms: f64,
    /// LoRKD, low-rank correction on k = 1 convs, EKS on the stem.
    pub lowrank_ms: f64,
    /// LoRKD, per-department loop everywhere.
    pub looped_ms: f64,
    /// LoRKD, `auto` (lowrank on k = 1, EKS on the stem, fused path for one-department batches).
    pub auto_ms: f64,
    /// `auto_ms / mtl_ms` (target ≤ 1.3 at T = 10).
    pub auto_over_mtl: f64,
    /// Whether the forward passes ran under bf16 autocast.
    pub amp: bool,
    /// Training images per second of the `auto` mode (`batch / auto_ms`).
    pub auto_images_per_sec: f64,
    /// Whether input and weights were channels_last.
    #[serde(default)]
    pub channels_last: bool,
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// Median time of `iters` training steps of `model` on (`xs`, `ys`, `ids`).
fn time_steps(
    model: &ShuffleNetLoRKD,
    vs: &nn::VarStore,
    xs: &Tensor,
    ys: &Tensor,
    ids: &DeptIds,
    shared: bool,
    opts: &BenchOptions,
) -> Result<f64, tch::TchError> {
    let mut opt = nn::Sgd {
        momentum: 0.9,
        dampening: 0.0,
        wd: 1e-4,
        nesterov: false,
    }
    .build(vs, 0.05)?;
    let sel = if shared {
        DeptSel::Shared
    } else {
        DeptSel::Mixed(ids)
    };
    let groups: Vec<(usize, Tensor)> = (0..opts.departments)
        .filter_map(|t| {
            let idx: Vec<i64> = ids
                .as_slice()
                .iter()
                .enumerate()
                .filter(|(_, &d)| d == t)
                .map(|(i, _)| i as i64)
                .collect();
            (!idx.is_empty()).then(|| (t as usize, Tensor::from_slice(&idx).to_device(opts.device)))
        })
        .collect();
    let mut times = Vec::with_capacity(opts.iters);
    for i in 0..opts.warmup + opts.iters {
        sync(opts.device);
        let start = Instant::now();
        let loss = crate::amp::run(opts.amp, || {
            let f = model.forward_t(xs, sel, true);
            // Per-department heads on their own samples; mean CE over the batch.
            let mut loss = Tensor::zeros([], (Kind::Float, opts.device));
            for (t, idx) in &groups {
                let logits = model
                    .head_logits(&f.index_select(0, idx), *t)
                    .to_kind(Kind::Float);
                loss += logits.cross_entropy_for_logits(&ys.index_select(0, idx))
                    * (idx.size()[0] as f64);
            }
            loss
        });
        opt.backward_step(&(loss / opts.batch as f64));
        sync(opts.device);
        if i >= opts.warmup {
            times.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// The random batch, department ids and config every variant is timed on.
fn setup(opts: &BenchOptions) -> Result<(Tensor, Tensor, DeptIds, Config), tch::TchError> {
    tch::manual_seed(opts.seed as i64);
    let xs = Tensor::randn(
        [opts.batch, opts.in_channels, opts.input, opts.input],
        (Kind::Float, opts.device),
    );
    let xs = if opts.channels_last {
        crate::amp::to_channels_last(&xs)
    } else {
        xs
    };
    let ys = Tensor::randint(
        opts.classes as i64,
        [opts.batch],
        (Kind::Int64, opts.device),
    );
    let host_ids: Vec<i64> = Vec::<i64>::try_from(&Tensor::randint(
        opts.departments,
        [opts.batch],
        (Kind::Int64, Device::Cpu),
    ))?;
    let ids = DeptIds::new(&host_ids, opts.departments, opts.device)
        .map_err(|e| tch::TchError::Kind(e.to_string()))?;
    let mut cfg = Config::numbered(
        opts.arch,
        opts.in_channels,
        opts.departments as usize,
        opts.classes,
    );
    cfg.input_size = opts.input;
    cfg.rank = opts.rank;
    cfg.unified_head = false;
    Ok((xs, ys, ids, cfg))
}

/// Median step time (ms) of one variant: plain MTL (`None`) or LoRKD in `mode`.
///
/// # Errors
/// libtorch errors.
pub fn step_ms(opts: &BenchOptions, mode: Option<ExpertConvMode>) -> Result<f64, tch::TchError> {
    let (xs, ys, ids, mut cfg) = setup(opts)?;
    if mode.is_none() {
        cfg.rank = 0;
    }
    let vs = nn::VarStore::new(opts.device);
    let mut model = ShuffleNetLoRKD::new(&vs.root(), &cfg);
    if let Some(mode) = mode {
        randomize_factors(&vs, cfg.scaling(), 0.1, opts.seed);
        model.set_expert_conv_mode(mode);
    }
    if opts.channels_last {
        crate::amp::var_store_channels_last(&vs);
    }
    time_steps(&model, &vs, &xs, &ys, &ids, mode.is_none(), opts)
}

/// Runs every variant on one random batch.
pub fn run(opts: &BenchOptions) -> Result<BenchReport, tch::TchError> {
    let mtl_ms = step_ms(opts, None)?;
    let mut ms = [0.0; 4];
    for (slot, mode) in ExpertConvMode::ALL.into_iter().enumerate() {
        ms[slot] = step_ms(opts, Some(mode))?;
    }
    let [auto_ms, eks_ms, lowrank_ms, looped_ms] = ms;
    Ok(BenchReport {
        arch: opts.arch.name().into(),
        departments: opts.departments,
        rank: opts.rank,
        input: opts.input,
        batch: opts.batch,
        threads: tch::get_num_threads(),
        device: format!("{:?}", opts.device),
        iters: opts.iters,
        mtl_ms,
        eks_ms,
        lowrank_ms,
        looped_ms,
        auto_ms,
        auto_over_mtl: auto_ms / mtl_ms,
        amp: opts.amp,
        auto_images_per_sec: opts.batch as f64 / (auto_ms / 1e3),
        channels_last: opts.channels_last,
    })
}

/// What `bench --e2e` measures: the loader alone, the step alone and `fit` end to end, for
/// one data spec and run configuration.
#[derive(Debug, Clone)]
pub struct E2eOptions {
    /// The run (data, method, arch, rank, batch, input size, teacher).
    pub fit: crate::train::fit::FitConfig,
    /// How to run (device, workers, data cache, amp, teacher cache).
    pub ctl: crate::train::run::Control,
    /// Batches timed in the loader-only passes (0: a whole epoch).
    pub loader_batches: usize,
    /// Timed steps of the step-only bench.
    pub iters: usize,
}

/// Images per second of each part, in the same process one after the other.
#[derive(Debug, Clone, Serialize)]
pub struct E2eReport {
    /// Data spec.
    pub data: String,
    /// Method.
    pub method: String,
    /// Input side.
    pub input: i64,
    /// Batch size.
    pub batch: usize,
    /// Departments.
    pub departments: usize,
    /// Loader threads.
    pub workers: usize,
    /// libtorch threads.
    pub threads: i32,
    /// Device.
    pub device: String,
    /// bf16 autocast.
    pub amp: bool,
    /// channels_last.
    pub channels_last: bool,
    /// With a teacher, and whether its logits were cached.
    pub teacher: Option<bool>,
    /// Seconds to prepare the training split as uint8 (0 when the cache file existed).
    pub prepare_s: f64,
    /// Loader that decodes and normalises on the CPU (`--data-cache off`), to device tensors.
    pub loader_decode_images_per_sec: f64,
    /// Loader gathering prepared uint8 images, flipped and normalised on the device.
    pub loader_prepared_images_per_sec: f64,
    /// The step bench's images/s for this method on a random batch (`auto` for lorkd).
    pub step_images_per_sec: f64,
    /// `fit`'s last epoch (of 2), loading and stepping together.
    pub e2e_images_per_sec: f64,
    /// `e2e / step` (target ≥ 0.9).
    pub e2e_over_step: f64,
}

fn loader_ips(
    input: &crate::train::input::Input,
    cfg: lorkd_data::LoaderConfig,
    max_batches: usize,
    device: Device,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut n = 0usize;
    let mut last = None;
    for (i, b) in input.loader(lorkd_data::Split::Train, cfg)?.enumerate() {
        if max_batches > 0 && i >= max_batches {
            break;
        }
        let b = b?;
        n += b.len();
        last = Some(input.images(&b));
    }
    if let Some(x) = last {
        let _ = x.sum(Kind::Float).double_value(&[]);
    }
    sync(device);
    Ok(n as f64 / started.elapsed().as_secs_f64().max(1e-9))
}

/// Runs the three measurements.
///
/// # Errors
/// Bad data or settings, libtorch errors, I/O of the scratch run directory.
pub fn e2e(o: &E2eOptions) -> anyhow::Result<E2eReport> {
    use crate::train::{data as bridge, fit, input::Input};
    use lorkd_data::{CacheMode, Dataset, LoaderConfig};
    use std::sync::Arc;

    o.ctl.apply_threads();
    let fc = &o.fit;
    let ds = Arc::new(Dataset::open_str(&fc.data)?);
    eprintln!("data: {}", ds.summary());
    let cfg = fit::student_config(fc, &ds, None, false);
    let transform = bridge::transform(&cfg);
    let lc = || {
        let mut l = LoaderConfig::train(fc.batch, transform.clone(), fc.seed, 0);
        l.workers = o.ctl.workers.max(1);
        l.prefetch = 2 * l.workers;
        l
    };
    let device = o.ctl.device;
    let decode = Input::new(
        ds.clone(),
        transform.clone(),
        &crate::train::run::Control {
            data_cache: CacheMode::Off,
            ..o.ctl.clone()
        },
    );
    let loader_decode = loader_ips(&decode, lc(), o.loader_batches, device)?;
    let prepared = Input::new(ds.clone(), transform.clone(), &o.ctl);
    let t0 = Instant::now();
    prepared.prepared(lorkd_data::Split::Train)?;
    let prepare_s = t0.elapsed().as_secs_f64();
    let loader_prepared = loader_ips(&prepared, lc(), o.loader_batches, device)?;

    let bench = BenchOptions {
        arch: fc.arch,
        departments: ds.departments().len() as i64,
        rank: fc.rank.max(1),
        input: cfg.input_size,
        batch: fc.batch as i64,
        in_channels: cfg.in_channels,
        classes: ds.classes_per_department().into_iter().max().unwrap_or(2),
        iters: o.iters.max(1),
        warmup: 2,
        device,
        seed: fc.seed,
        amp: o.ctl.amp,
        channels_last: o.ctl.channels_last,
    };
    let mode = if fc.method.experts() {
        Some(
            fc.expert_conv_mode
                .parse::<ExpertConvMode>()
                .map_err(|e| anyhow::anyhow!(e))?,
        )
    } else {
        None
    };
    let step = fc.batch as f64 / (step_ms(&bench, mode)? / 1e3);

    let dir = std::env::temp_dir().join(format!("lorkd-bench-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut run = fc.clone();
    run.epochs = 2;
    let outcome = fit::fit(&run, &dir, &o.ctl);
    let _ = std::fs::remove_dir_all(&dir);
    let e2e = outcome?.last.map_or(0.0, |m| m.images_per_sec);
    Ok(E2eReport {
        data: fc.data.clone(),
        method: fc.method.name().into(),
        input: cfg.input_size,
        batch: fc.batch,
        departments: ds.departments().len(),
        workers: o.ctl.workers,
        threads: tch::get_num_threads(),
        device: format!("{device:?}"),
        amp: o.ctl.amp,
        channels_last: o.ctl.channels_last,
        teacher: fc.teacher.as_ref().map(|_| o.ctl.teacher_cache),
        prepare_s,
        loader_decode_images_per_sec: loader_decode,
        loader_prepared_images_per_sec: loader_prepared,
        step_images_per_sec: step,
        e2e_images_per_sec: e2e,
        e2e_over_step: e2e / step,
    })
}
