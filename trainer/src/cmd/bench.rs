//! `lorkd-train bench`: median training-step time, plain MTL vs. each expert-conv mode; with
//! `--e2e`, loader-only, step-only and end-to-end `fit` images/s for one data spec.
use crate::bench::{e2e, run as run_bench, BenchOptions, E2eOptions};
use crate::config::Arch;
use crate::train::fit::{FitConfig, Method};

/// Arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Student architecture.
    #[arg(long, default_value = "shufflenet_v2_x0_5")]
    pub arch: Arch,
    /// Departments T.
    #[arg(long, default_value_t = 10)]
    pub departments: i64,
    /// Rank r.
    #[arg(long, default_value_t = 4)]
    pub rank: i64,
    /// Input size.
    #[arg(long, default_value_t = 64)]
    pub input: i64,
    /// Batch size.
    #[arg(long, default_value_t = 64)]
    pub batch: i64,
    /// libtorch intra-op threads (default: libtorch's choice).
    #[arg(long)]
    pub threads: Option<i32>,
    /// Timed steps per variant.
    #[arg(long, default_value_t = 5)]
    pub iters: usize,
    /// Untimed warm-up steps per variant.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Input channels.
    #[arg(long, default_value_t = 3)]
    pub in_channels: i64,
    /// RNG seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Numeric format on CUDA: off (f32), bf16 (autocast), bf16-cl (autocast +
    /// channels_last). Ignored on the CPU.
    #[arg(long, value_enum, default_value = "off")]
    pub amp: crate::amp::Amp,
    /// Measure the whole pipeline on `--data`: the loader alone (decoding, and prepared
    /// uint8), the step alone, and `fit` end to end (2 epochs in a scratch directory).
    #[arg(long)]
    pub e2e: bool,
    /// `--data` spec for --e2e (default: synthetic with --departments, 5 classes, at --input).
    #[arg(long)]
    pub data: Option<String>,
    /// Method for --e2e.
    #[arg(long, value_enum, default_value = "lorkd")]
    pub method: Method,
    /// Teacher for --e2e (distillation; its logits cached unless --teacher-cache off).
    #[arg(long)]
    pub teacher: Option<std::path::PathBuf>,
    /// Loader threads for --e2e (default: cores, up to 8).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Prepared-image cache for --e2e: a directory, `memory` (default) or `off`.
    #[arg(long, default_value = "memory")]
    pub data_cache: String,
    /// Teacher logits cache for --e2e.
    #[arg(long, value_enum, default_value = "on")]
    pub teacher_cache: super::OnOff,
    /// Batches timed by the loader-only passes of --e2e (0: one epoch).
    #[arg(long, default_value_t = 0)]
    pub loader_batches: usize,
    /// Run on the CPU even when CUDA is available.
    #[arg(long)]
    pub cpu: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs and prints the benchmark.
pub fn run(a: &Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.departments >= 1 && a.rank >= 1 && a.batch >= 1 && a.iters >= 1,
        "bad sizes"
    );
    if let Some(n) = a.threads {
        tch::set_num_threads(n);
    }
    let device = if a.cpu {
        tch::Device::Cpu
    } else {
        crate::default_device()
    };
    crate::amp::cudnn_benchmark_from_env(device);
    if a.e2e {
        return run_e2e(a, device);
    }
    let opts = BenchOptions {
        arch: a.arch,
        departments: a.departments,
        rank: a.rank,
        input: a.input,
        batch: a.batch,
        in_channels: a.in_channels,
        classes: 5,
        iters: a.iters,
        warmup: a.warmup,
        device,
        seed: a.seed,
        amp: a.amp.enabled(device),
        channels_last: a.amp.channels_last(device),
    };
    let r = run_bench(&opts)?;
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "{} @{} T={} r={} batch={} threads={} {}{}: mtl {:.1} ms | eks {:.1} | lowrank {:.1} | looped {:.1} | auto {:.1} ({:.2}x mtl, {:.0} images/s)",
            r.arch, r.input, r.departments, r.rank, r.batch, r.threads, r.device,
            match (r.amp, r.channels_last) {
                (true, true) => " bf16 autocast + channels_last",
                (true, false) => " bf16 autocast",
                _ => "",
            },
            r.mtl_ms, r.eks_ms, r.lowrank_ms, r.looped_ms, r.auto_ms, r.auto_over_mtl, r.auto_images_per_sec
        );
    }
    Ok(())
}

fn run_e2e(a: &Args, device: tch::Device) -> anyhow::Result<()> {
    let data = a.data.clone().unwrap_or_else(|| {
        format!(
            "synthetic:departments={},classes=5,size={},per_class={}",
            a.departments,
            a.input,
            (4 * a.batch as usize)
                .div_ceil(5 * a.departments as usize)
                .max(8)
        )
    });
    let mut fc = FitConfig::new(&data, a.method);
    fc.arch = a.arch;
    fc.rank = a.rank;
    fc.lora_alpha = 2.0 * a.rank as f64;
    fc.input_size = Some(a.input);
    fc.batch = a.batch as usize;
    fc.seed = a.seed;
    fc.teacher = a.teacher.clone();
    let mut ctl = crate::train::run::Control {
        device,
        progress: false,
        threads: a.threads,
        amp: a.amp.enabled(device),
        channels_last: a.amp.channels_last(device),
        data_cache: lorkd_data::CacheMode::parse(&a.data_cache),
        teacher_cache: a.teacher_cache == super::OnOff::On,
        ..Default::default()
    };
    if let Some(w) = a.workers {
        ctl.workers = w.max(1);
    }
    let r = e2e(&E2eOptions {
        fit: fc,
        ctl,
        loader_batches: a.loader_batches,
        iters: a.iters,
    })?;
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "{} {} @{} batch {} on {} ({} workers, {} threads): loader decode {:.0} img/s | loader prepared {:.0} img/s (prepare {:.1} s) | step {:.0} img/s | fit end to end {:.0} img/s ({:.2}x step)",
            r.method, r.data, r.input, r.batch, r.device, r.workers, r.threads,
            r.loader_decode_images_per_sec, r.loader_prepared_images_per_sec, r.prepare_s,
            r.step_images_per_sec, r.e2e_images_per_sec, r.e2e_over_step
        );
    }
    Ok(())
}
