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

/// Runs every variant on one random batch.
pub fn run(opts: &BenchOptions) -> Result<BenchReport, tch::TchError> {
    tch::manual_seed(opts.seed as i64);
    let xs = Tensor::randn(
        [opts.batch, opts.in_channels, opts.input, opts.input],
        (Kind::Float, opts.device),
    );
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

    let mut mtl_cfg = cfg.clone();
    mtl_cfg.rank = 0;
    let vs = nn::VarStore::new(opts.device);
    let mtl = ShuffleNetLoRKD::new(&vs.root(), &mtl_cfg);
    let mtl_ms = time_steps(&mtl, &vs, &xs, &ys, &ids, true, opts)?;

    let mut ms = [0.0; 4];
    for (slot, mode) in ExpertConvMode::ALL.into_iter().enumerate() {
        let vs = nn::VarStore::new(opts.device);
        let mut model = ShuffleNetLoRKD::new(&vs.root(), &cfg);
        randomize_factors(&vs, cfg.scaling(), 0.1, opts.seed);
        model.set_expert_conv_mode(mode);
        ms[slot] = time_steps(&model, &vs, &xs, &ys, &ids, false, opts)?;
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
    })
}
