//! `lorkd bench model.lorkd [--dept NAME] [--mode materialized|streaming] [--iters N]
//! [--threads 1] [--json]`: median single-thread latency of one inference and of one
//! department switch, and the memory the engine needs (arena, of which rebuilt weights).
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use lorkd_runtime::engine::testnet::Rng;
use lorkd_runtime::engine::{AlignedBytes, Engine};
use lorkd_runtime::format::{Bundle, Mode, Precision};
use serde::Serialize;

use super::run::{read_bundle, ModeArg};

/// Time inference and department switch.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The bundle.
    pub bundle: PathBuf,
    /// Department to run (default: the first); switches alternate with another one.
    #[arg(long)]
    pub dept: Option<String>,
    #[arg(long, value_enum, default_value = "materialized")]
    pub mode: ModeArg,
    /// Timed iterations (after one warm-up).
    #[arg(long, default_value_t = 50)]
    pub iters: usize,
    /// Threads (the engine is single-threaded; only 1 is accepted).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    #[arg(long)]
    pub json: bool,
    /// Also time tract on the same department's fused f32 expert, exported as ONNX.
    #[arg(long)]
    pub vs_tract: bool,
}

/// What `lorkd bench --json` prints.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct BenchReport {
    pub arch: String,
    pub precision: String,
    pub mode: String,
    pub department: String,
    pub iters: usize,
    pub infer_ms_median: f64,
    pub switch_ms_median: f64,
    pub arena_bytes: usize,
    pub weight_ram_bytes: usize,
    /// tract's median on the fused f32 expert (ONNX), with `--vs-tract`.
    pub tract_ms_median: Option<f64>,
    pub cpu: String,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => 0.5 * (v[n / 2 - 1] + v[n / 2]),
    }
}

/// The CPU model name (`/proc/cpuinfo`), or the architecture.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// Benchmarks department `dept` of `bundle` in `mode` over `iters` timed runs.
pub fn bench(
    bundle: &Bundle<'_>,
    dept: Option<&str>,
    mode: Mode,
    iters: usize,
) -> Result<BenchReport> {
    ensure!(iters > 0, "--iters must be at least 1");
    ensure!(bundle.department_count() > 0, "bundle has no department");
    let t = match dept {
        Some(name) => bundle
            .find_department(name)
            .with_context(|| format!("no department `{name}`"))?,
        None => 0,
    };
    let other = (t + 1) % bundle.department_count();
    let d = bundle.department(t).context("department")?;
    let m = bundle.manifest();
    let arena_bytes = bundle.arena_bytes(mode);
    let mut arena = AlignedBytes::zeroed(arena_bytes);
    let mut engine = Engine::new(bundle, arena.as_mut_slice(), mode)?;
    let n = m.input.channels as usize * m.input.size as usize * m.input.size as usize;
    let mut rng = Rng::new(0x5eed);
    let x = rng.vec(n, 1.0);
    let mut logits = vec![0.0; d.manifest.classes.len()];

    // Switch latency: `select(t)` right after `select(other)`, so the rebuild is real.
    let mut switch = Vec::with_capacity(iters);
    engine.select(other)?;
    engine.select(t)?;
    for _ in 0..iters {
        engine.select(other)?;
        let s = Instant::now();
        engine.select(t)?;
        switch.push(s.elapsed().as_secs_f64() * 1e3);
    }
    engine.infer(&x, &mut logits)?;
    let mut infer = Vec::with_capacity(iters);
    for _ in 0..iters {
        let s = Instant::now();
        engine.infer(&x, &mut logits)?;
        infer.push(s.elapsed().as_secs_f64() * 1e3);
    }
    Ok(BenchReport {
        arch: m.arch.to_string(),
        precision: match m.precision {
            Precision::F32 => "f32",
            Precision::Int8 => "int8",
        }
        .into(),
        mode: match mode {
            Mode::Materialized => "materialized",
            Mode::Streaming => "streaming",
        }
        .into(),
        department: d.manifest.name.to_string(),
        iters,
        infer_ms_median: median(infer),
        switch_ms_median: median(switch),
        arena_bytes,
        weight_ram_bytes: engine.weight_ram_bytes(),
        tract_ms_median: None,
        cpu: cpu_model(),
    })
}

/// Median latency of tract on department `dept`'s fused f32 expert (exported to ONNX by
/// `crate::onnx`, int8 weights dequantised), batch 1, same seeded input as [`bench`].
pub fn bench_tract(bundle: &Bundle<'_>, dept: Option<&str>, iters: usize) -> Result<f64> {
    use crate::verify::TractExpert;
    let t = match dept {
        Some(name) => bundle
            .find_department(name)
            .with_context(|| format!("no department `{name}`"))?,
        None => 0,
    };
    let d = bundle.department(t).context("department")?;
    let m = bundle.manifest();
    let onnx = crate::onnx::export(bundle, &d)?;
    let (c, hw) = (m.input.channels as usize, m.input.size as usize);
    let tract = TractExpert::load(&onnx, 1, c, hw)?;
    let x = Rng::new(0x5eed).vec(c * hw * hw, 1.0);
    tract.run(&x)?;
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters {
        let s = Instant::now();
        tract.run(&x)?;
        times.push(s.elapsed().as_secs_f64() * 1e3);
    }
    Ok(median(times))
}

pub fn run(a: Args) -> Result<()> {
    ensure!(
        a.threads == 1,
        "the engine is single-threaded: --threads 1 only"
    );
    let bytes = read_bundle(&a.bundle)?;
    let bundle = Bundle::parse(bytes.as_slice())
        .with_context(|| format!("bundle {}", a.bundle.display()))?;
    let mut r = bench(&bundle, a.dept.as_deref(), a.mode.into(), a.iters)?;
    if a.vs_tract {
        r.tract_ms_median = Some(bench_tract(&bundle, a.dept.as_deref(), a.iters)?);
    }
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "{} {} {} dept {}: infer {:.3} ms, switch {:.3} ms (medians of {}), arena {} B, weight RAM {} B ({})",
            r.arch, r.precision, r.mode, r.department, r.infer_ms_median, r.switch_ms_median, r.iters, r.arena_bytes, r.weight_ram_bytes, r.cpu
        );
        if let Some(t) = r.tract_ms_median {
            println!("tract (fused f32 expert, ONNX): infer {t:.3} ms");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use lorkd_runtime::engine::testnet::{NetSpec, TestNet};

    #[test]
    fn reports_memory_and_positive_times() {
        let seed: u64 = rand::random();
        println!("seed {seed}");
        let net = TestNet::random(NetSpec::small(), seed);
        let bytes = AlignedBytes::new(&net.bundle_f32());
        let bundle = Bundle::parse(bytes.as_slice()).unwrap();
        let m = bench(&bundle, Some("dept2"), Mode::Materialized, 3).unwrap();
        let s = bench(&bundle, None, Mode::Streaming, 3).unwrap();
        assert_eq!(m.department, "dept2");
        assert_eq!(m.arena_bytes, bundle.arena_bytes(Mode::Materialized));
        assert!(m.weight_ram_bytes > 0 && m.weight_ram_bytes < m.arena_bytes);
        assert_eq!(s.weight_ram_bytes, 0);
        assert!(m.infer_ms_median >= 0.0 && m.switch_ms_median >= 0.0);
        let v = serde_json::to_value(&m).unwrap();
        for k in [
            "infer_ms_median",
            "switch_ms_median",
            "arena_bytes",
            "weight_ram_bytes",
        ] {
            assert!(v.get(k).is_some(), "{k}");
        }
        assert!(bench(&bundle, Some("nope"), Mode::Materialized, 3).is_err());
        assert!(bench(&bundle, None, Mode::Materialized, 0).is_err());
        assert!(bench_tract(&bundle, Some("dept1"), 2).unwrap() >= 0.0);
    }

    /// Writes the BENCHMARKS.md bundles (random ShuffleNetV2 1.0x at 224 and 0.5x at 64,
    /// f32 and int8 with f32 deltas; 0.5x at 32, int8 with int8 deltas; 2 departments,
    /// rank 8) into `$LORKD_BENCH_DIR`. Run with `--ignored`.
    #[test]
    #[ignore]
    fn write_bench_bundles() {
        use crate::checkpoint::{random_checkpoint, Checkpoint, RandomSpec};
        use crate::pack::{pack, PackOptions};
        use lorkd_runtime::format::DeltaDType;
        let Ok(dir) = std::env::var("LORKD_BENCH_DIR") else {
            return;
        };
        let cal = |b: &[u8], imgs: &[Vec<Vec<f32>>]| crate::calibrate::activation_ranges(b, imgs);
        // The last one is shaped like the demo bundle (0.5x @32, int8 deltas): only its
        // int8-delta variant is written.
        for (arch, size, tag) in [
            ("shufflenet_v2_x1_0", 224, "x1_0-224"),
            ("shufflenet_v2_x0_5", 64, "x0_5-64"),
            ("shufflenet_v2_x0_5", 32, "x0_5-32"),
        ] {
            let spec = RandomSpec {
                arch: arch.into(),
                in_channels: 3,
                input_size: size,
                rank: 8,
                classes: vec![10, 4],
                seed: 7,
            };
            let ck = Checkpoint::from_bytes(&random_checkpoint(&spec).unwrap()).unwrap();
            let variants: &[(Precision, DeltaDType, &str)] = if size == 32 {
                &[(Precision::Int8, DeltaDType::I8, "int8-i8delta")]
            } else {
                &[
                    (Precision::F32, DeltaDType::F32, "f32"),
                    (Precision::Int8, DeltaDType::F32, "int8"),
                ]
            };
            for &(w, delta, name) in variants {
                let opts = PackOptions {
                    weights: w,
                    delta,
                    calib_count: 4,
                    calib_seed: 1,
                    ..PackOptions::default()
                };
                let bytes = pack(&ck, &opts, None, None, &cal).unwrap();
                std::fs::write(format!("{dir}/{tag}-{name}.lorkd"), bytes).unwrap();
            }
        }
    }
}
