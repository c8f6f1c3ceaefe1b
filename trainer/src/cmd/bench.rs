//! `lorkd-train bench`: median training-step time, plain MTL vs. each expert-conv mode.
use crate::bench::{run as run_bench, BenchOptions};
use crate::config::Arch;

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
    /// Mixed precision on CUDA: bf16 autocast of the forward passes, or off (default: off, so
    /// numbers compare with earlier runs; ignored on the CPU).
    #[arg(long, value_enum, default_value = "off")]
    pub amp: crate::amp::Amp,
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
    };
    let r = run_bench(&opts)?;
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "{} @{} T={} r={} batch={} threads={} {}{}: mtl {:.1} ms | eks {:.1} | lowrank {:.1} | looped {:.1} | auto {:.1} ({:.2}x mtl, {:.0} images/s)",
            r.arch, r.input, r.departments, r.rank, r.batch, r.threads, r.device,
            if r.amp { " bf16 autocast" } else { "" },
            r.mtl_ms, r.eks_ms, r.lowrank_ms, r.looped_ms, r.auto_ms, r.auto_over_mtl, r.auto_images_per_sec
        );
    }
    Ok(())
}
