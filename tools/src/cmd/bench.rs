//! `lorkd bench model.lorkd [--dept NAME] [--mode materialized|streaming|auto] [--iters N]
//! [--threads N] [--kernels ISA] [--profile] [--json]`: median latency of one inference and of
//! one department switch (and with `--json` their minima, the steadier figure for A/B on a
//! shared machine), and the memory the engine needs (arena, of which rebuilt weights).
//! `--kernels` picks one of the kernel tables this CPU runs (default the fastest), so the
//! tables can be compared on one machine.
//! `--profile` adds the median (and minimum) time of every op (per layer) and their sums per
//! op kind, read at the engine's op boundaries (`Engine::infer_timed`). `--vs-one-thread` (with
//! `--threads N`, N ≥ 2) times a one-thread engine in the same run, in blocks alternating
//! with the N-thread one (and with an N-thread engine whose splits are cut in learned
//! shares, `Engine::set_balanced_cuts`), and reports the speed-up per round of blocks: a shared machine's speed
//! drifts by tens of percent between runs (and processes), which back-to-back blocks
//! mostly cancel.
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use lorkd_runtime::engine::testnet::Rng;
use lorkd_runtime::engine::{AlignedBytes, Engine};
use lorkd_runtime::format::{Bundle, Mode, Op, Precision};
use lorkd_runtime::kernels::Kernels;
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
    /// Threads per inference (each large conv split across them; results do not change).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Kernel table by name (`reference`, `x86_64-avx2`, `x86_64-avx512`, `aarch64-neon`,
    /// …: one this CPU runs; default the fastest).
    #[arg(long)]
    pub kernels: Option<String>,
    #[arg(long)]
    pub json: bool,
    /// Also time tract on the same department's fused f32 expert, exported as ONNX.
    #[arg(long)]
    pub vs_tract: bool,
    /// Also report the time per op (each layer) and per op kind.
    #[arg(long)]
    pub profile: bool,
    /// With `--threads N` (N ≥ 2): also time a one-thread engine in the same run, in
    /// alternating blocks, and report the speed-up (one thread / N threads) per round of
    /// blocks — also that of N threads with balanced cuts (`Engine::set_balanced_cuts`).
    #[arg(long)]
    pub vs_one_thread: bool,
}

/// What `lorkd bench --json` prints.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct BenchReport {
    pub arch: String,
    pub precision: String,
    pub mode: String,
    pub department: String,
    pub iters: usize,
    pub threads: usize,
    /// The kernel table that ran (`Kernels::isa`).
    pub kernels: String,
    pub infer_ms_median: f64,
    pub switch_ms_median: f64,
    /// The fastest timed inference and switch: on a shared machine noise only adds time, so
    /// builds compared by their minima (`scripts/op-ab.py --stat min`) differ less by chance.
    pub infer_ms_min: f64,
    pub switch_ms_min: f64,
    pub arena_bytes: usize,
    pub weight_ram_bytes: usize,
    /// tract's median on the fused f32 expert (ONNX), with `--vs-tract`.
    pub tract_ms_median: Option<f64>,
    pub cpu: String,
    /// Per-op and per-kind times, with `--profile`.
    pub profile: Option<Profile>,
    /// The N-thread engine against one thread, with `--vs-one-thread`.
    pub speedup: Option<Speedup>,
}

/// `--threads N` against one thread in the same run: `blocks` rounds of blocks (the
/// one-thread engine's, then the N-thread engine's and the N-thread engine's with balanced
/// cuts, in turn first, each `iters` inferences), each block's median, and per round the ratio one
/// thread / N threads.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Speedup {
    pub threads: usize,
    pub blocks: usize,
    pub iters: usize,
    /// Medians over all blocks' runs (ms).
    pub one_thread_ms_median: f64,
    pub threads_ms_median: f64,
    /// The per-round ratios: median, lowest, highest.
    pub ratio_median: f64,
    pub ratio_min: f64,
    pub ratio_max: f64,
    /// The same N threads with cuts in learned shares (`Engine::set_balanced_cuts(true)`):
    /// median over its blocks' runs (ms), and the per-round ratios' median.
    pub balanced_cuts_ms_median: f64,
    pub balanced_cuts_ratio_median: f64,
}

/// Where one inference's time goes: each op's median and minimum (µs over the timed runs,
/// read at the op boundaries), and those summed per op kind.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Profile {
    /// Median of the whole timed inference with the clock reads (µs).
    pub total_us_median: f64,
    /// Per kind, largest first.
    pub kinds: Vec<KindTime>,
    /// Per op in graph order; the input quantisation first (index `null`).
    pub ops: Vec<OpTime>,
    /// Ops that ran inside a conv's parts (with threads, the concat + shuffle after a conv
    /// and an int8 depthwise conv before a pointwise one: `Engine::fused_ops`); their time
    /// is that conv's.
    pub fused_ops: usize,
    /// Of those, the depthwise convs (`Engine::fused_depthwise`).
    pub fused_depthwise: usize,
}

/// The time of one op kind.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct KindTime {
    pub kind: String,
    pub ops: usize,
    pub us: f64,
    /// The ops' minima summed.
    pub us_min: f64,
    /// Share of the sum over all kinds.
    pub share: f64,
}

/// The time of one op.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct OpTime {
    pub index: Option<usize>,
    pub kind: String,
    /// Shape: `Cin→Cout` channels, output `H×W`.
    pub shape: String,
    pub us_median: f64,
    pub us_min: f64,
}

/// The smallest of `v` (NaN when empty).
fn min(v: &[f64]) -> f64 {
    v.iter().copied().reduce(f64::min).unwrap_or(f64::NAN)
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

/// What [`bench`] measures and how.
#[derive(Clone, Copy, Debug)]
pub struct BenchOpts {
    pub mode: Mode,
    /// Timed runs of each measurement.
    pub iters: usize,
    /// Also time every op ([`Profile`]).
    pub profile: bool,
    /// Engine threads (1: the caller's thread only).
    pub threads: usize,
    /// Also time one thread against `threads` ([`Speedup`]).
    pub vs_one_thread: bool,
    /// The kernel table (`None`: `Kernels::best()`).
    pub kernels: Option<Kernels>,
}

/// The kernel table named `isa` among those this CPU runs ([`Kernels::available`]).
pub fn kernels_named(isa: &str) -> Result<Kernels> {
    let all: Vec<Kernels> = Kernels::available().into_iter().flatten().collect();
    all.iter().find(|k| k.isa == isa).copied().with_context(|| {
        let names: Vec<&str> = all.iter().map(|k| k.isa).collect();
        format!(
            "no kernel table `{isa}` on this CPU (it runs: {})",
            names.join(", ")
        )
    })
}

impl BenchOpts {
    /// `iters` runs in `mode`, one thread, no profile.
    pub fn new(mode: Mode, iters: usize) -> Self {
        BenchOpts {
            mode,
            iters,
            profile: false,
            threads: 1,
            vs_one_thread: false,
            kernels: None,
        }
    }
}

/// Benchmarks department `dept` of `bundle` as `o` says.
pub fn bench(bundle: &Bundle<'_>, dept: Option<&str>, o: &BenchOpts) -> Result<BenchReport> {
    let (mode, iters) = (o.mode, o.iters);
    ensure!(iters > 0, "--iters must be at least 1");
    ensure!(
        !o.vs_one_thread || o.threads >= 2,
        "--vs-one-thread needs --threads 2 or more"
    );
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
    let mut engine = new_engine(bundle, &mut arena, o, o.threads)?;
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
    let infer = timed_infers(&mut engine, &x, &mut logits, iters)?;
    let profile = if o.profile {
        Some(profile(bundle, &mut engine, &x, &mut logits, iters)?)
    } else {
        None
    };
    let speedup = if o.vs_one_thread {
        let mut arena1 = AlignedBytes::zeroed(arena_bytes);
        let mut one = new_engine(bundle, &mut arena1, o, 1)?;
        one.select(t)?;
        let mut arena_bal = AlignedBytes::zeroed(arena_bytes);
        let mut balanced = new_engine(bundle, &mut arena_bal, o, o.threads)?;
        balanced.set_balanced_cuts(true);
        balanced.select(t)?;
        Some(speedup(
            &mut one,
            &mut engine,
            &mut balanced,
            &x,
            &mut logits,
            iters,
        )?)
    } else {
        None
    };
    Ok(BenchReport {
        arch: m.arch.to_string(),
        precision: match m.precision {
            Precision::F32 => "f32",
            Precision::Int8 => "int8",
        }
        .into(),
        mode: mode.name().into(),
        department: d.manifest.name.to_string(),
        iters,
        threads: engine.threads(),
        kernels: engine.kernels().isa.into(),
        infer_ms_min: min(&infer),
        switch_ms_min: min(&switch),
        infer_ms_median: median(infer),
        switch_ms_median: median(switch),
        arena_bytes,
        weight_ram_bytes: engine.weight_ram_bytes(),
        tract_ms_median: None,
        cpu: cpu_model(),
        profile,
        speedup,
    })
}

/// The latency of each of `iters` inferences of `e` on `x` (ms).
fn timed_infers(
    e: &mut Engine<'_, '_>,
    x: &[f32],
    logits: &mut [f32],
    iters: usize,
) -> Result<Vec<f64>> {
    let mut v = Vec::with_capacity(iters);
    for _ in 0..iters {
        let s = Instant::now();
        e.infer(x, logits)?;
        v.push(s.elapsed().as_secs_f64() * 1e3);
    }
    Ok(v)
}

/// An engine on `bundle` in `arena` with `o`'s mode and kernels, and `threads` threads.
fn new_engine<'b, 'a>(
    bundle: &'b Bundle<'a>,
    arena: &'b mut AlignedBytes,
    o: &BenchOpts,
    threads: usize,
) -> Result<Engine<'b, 'a>> {
    let mut engine = Engine::new(bundle, arena.as_mut_slice(), o.mode)?;
    if let Some(k) = o.kernels {
        engine.set_kernels(k);
    }
    engine
        .set_threads(threads)
        .context("starting the engine's threads")?;
    Ok(engine)
}

/// [`Speedup`]: `one` (one thread), `many` and `balanced` (N threads, cutting evenly and in
/// learned shares; the same department selected), 10 rounds of blocks of `iters` timed
/// inferences each, the two N-thread engines taking turns to go first. Each block starts after a few
/// milliseconds' rest, so the N-thread engines' workers have parked before a one-thread
/// block (a spinning worker would take a core from it), and with one untimed inference
/// (which wakes them before an N-thread block).
fn speedup(
    one: &mut Engine<'_, '_>,
    many: &mut Engine<'_, '_>,
    balanced: &mut Engine<'_, '_>,
    x: &[f32],
    logits: &mut [f32],
    iters: usize,
) -> Result<Speedup> {
    const BLOCKS: usize = 10;
    let rest = std::time::Duration::from_millis(3);
    let mut block = |e: &mut Engine<'_, '_>, all: &mut Vec<f64>| -> Result<f64> {
        std::thread::sleep(rest);
        e.infer(x, logits)?;
        let v = timed_infers(e, x, logits, iters)?;
        all.extend_from_slice(&v);
        Ok(median(v))
    };
    let threads = many.threads();
    let (mut all1, mut alln, mut allb) = (Vec::new(), Vec::new(), Vec::new());
    let (mut ratios, mut bal_ratios) = (Vec::new(), Vec::new());
    for round in 0..BLOCKS {
        let a = block(one, &mut all1)?;
        let (b, c) = if round % 2 == 0 {
            let b = block(many, &mut alln)?;
            (b, block(balanced, &mut allb)?)
        } else {
            let c = block(balanced, &mut allb)?;
            (block(many, &mut alln)?, c)
        };
        ratios.push(a / b);
        bal_ratios.push(a / c);
    }
    let (lo, hi) = (min(&ratios), ratios.iter().copied().fold(0f64, f64::max));
    Ok(Speedup {
        threads,
        blocks: BLOCKS,
        iters,
        one_thread_ms_median: median(all1),
        threads_ms_median: median(alln),
        ratio_median: median(ratios),
        ratio_min: lo,
        ratio_max: hi,
        balanced_cuts_ms_median: median(allb),
        balanced_cuts_ratio_median: median(bal_ratios),
    })
}

/// Op `op`'s kind and shape for the profile.
fn op_label(m: &lorkd_runtime::format::Manifest<'_>, op: &Op) -> (&'static str, String) {
    let hw = |v: u16| {
        m.values
            .get(v as usize)
            .map(|d| format!("{}x{}", d.h, d.w))
            .unwrap_or_default()
    };
    match *op {
        Op::Conv {
            input,
            output,
            cout,
            k,
            expert,
            ..
        } => {
            let kind = match (k, expert.is_some()) {
                (1, true) => "conv1x1 expert",
                (1, false) => "conv1x1 shared",
                (_, true) => "conv kxk expert",
                (_, false) => "conv kxk (stem)",
            };
            (kind, format!("{}→{} @{}", input.c_len, cout, hw(output)))
        }
        Op::DwConv { input, output, .. } => {
            ("dwconv3x3", format!("{} @{}", input.c_len, hw(output)))
        }
        Op::MaxPool { output, .. } => ("maxpool", hw(output)),
        Op::ConcatShuffle { a, output, .. } => {
            ("concat_shuffle", format!("2x{} @{}", a.c_len, hw(output)))
        }
        Op::PoolHead { input } => ("pool_head", hw(input)),
    }
}

/// Profiles `iters` inferences of department `t` (after one warm-up): [`Profile`].
pub fn profile(
    bundle: &Bundle<'_>,
    engine: &mut Engine<'_, '_>,
    x: &[f32],
    logits: &mut [f32],
    iters: usize,
) -> Result<Profile> {
    let m = bundle.manifest();
    let n = m.ops.len();
    let t0 = Instant::now();
    let now = || t0.elapsed().as_nanos() as u64;
    let mut per_op: Vec<Vec<f64>> = vec![Vec::with_capacity(iters); n + 1];
    let mut total = Vec::with_capacity(iters);
    let mut ticks = vec![0u64; n + 1];
    engine.infer_timed(x, logits, now, &mut ticks)?;
    for _ in 0..iters {
        ticks.fill(0);
        let s = Instant::now();
        engine.infer_timed(x, logits, now, &mut ticks)?;
        total.push(s.elapsed().as_secs_f64() * 1e6);
        for (v, &t) in per_op.iter_mut().zip(&ticks) {
            v.push(t as f64 / 1e3);
        }
    }
    let mut ops = Vec::with_capacity(n + 1);
    ops.push(OpTime {
        index: None,
        kind: "input".into(),
        shape: format!("{}x{}", m.input.size, m.input.size),
        us_median: median(per_op[n].clone()),
        us_min: min(&per_op[n]),
    });
    for (i, op) in m.ops.iter().enumerate() {
        let (kind, shape) = op_label(m, &op);
        ops.push(OpTime {
            index: Some(i),
            kind: kind.into(),
            shape,
            us_median: median(per_op[i].clone()),
            us_min: min(&per_op[i]),
        });
    }
    let mut kinds: Vec<KindTime> = Vec::new();
    for o in &ops {
        match kinds.iter_mut().find(|k| k.kind == o.kind) {
            Some(k) => {
                k.ops += 1;
                k.us += o.us_median;
                k.us_min += o.us_min;
            }
            None => kinds.push(KindTime {
                kind: o.kind.clone(),
                ops: 1,
                us: o.us_median,
                us_min: o.us_min,
                share: 0.0,
            }),
        }
    }
    let sum: f64 = kinds.iter().map(|k| k.us).sum();
    for k in &mut kinds {
        k.share = if sum > 0.0 { k.us / sum } else { 0.0 };
    }
    kinds.sort_by(|a, b| b.us.total_cmp(&a.us));
    Ok(Profile {
        total_us_median: median(total),
        kinds,
        ops,
        fused_ops: engine.fused_ops(),
        fused_depthwise: engine.fused_depthwise(),
    })
}

/// The profile as text: kinds, then the ops.
pub fn render_profile(p: &Profile) -> String {
    let mut s = format!(
        "profile (median µs; whole timed inference {:.1} µs)\n",
        p.total_us_median
    );
    for k in &p.kinds {
        s += &format!(
            "  {:<18} {:>3} ops {:>10.1} µs {:>5.1} %\n",
            k.kind,
            k.ops,
            k.us,
            100.0 * k.share
        );
    }
    let cats = p.fused_ops - p.fused_depthwise.min(p.fused_ops);
    if cats > 0 {
        s += &format!(
            "  ({cats} concat_shuffle ops ran inside the conv before them: their time is the conv's)\n"
        );
    }
    if p.fused_depthwise > 0 {
        s += &format!(
            "  ({} dwconv3x3 ops ran inside the pointwise conv after them: their time is the conv's)\n",
            p.fused_depthwise
        );
    }
    s += "per op:\n";
    for o in &p.ops {
        let i = o.index.map(|i| i.to_string()).unwrap_or_else(|| "-".into());
        s += &format!(
            "  {:>4} {:<18} {:<18} {:>9.1} µs\n",
            i, o.kind, o.shape, o.us_median
        );
    }
    s
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
    ensure!(a.threads >= 1, "--threads must be at least 1");
    let bytes = read_bundle(&a.bundle)?;
    let bundle = Bundle::parse(bytes.as_slice())
        .with_context(|| format!("bundle {}", a.bundle.display()))?;
    let opts = BenchOpts {
        mode: a.mode.into(),
        iters: a.iters,
        profile: a.profile,
        threads: a.threads,
        vs_one_thread: a.vs_one_thread,
        kernels: a.kernels.as_deref().map(kernels_named).transpose()?,
    };
    let mut r = bench(&bundle, a.dept.as_deref(), &opts)?;
    if a.vs_tract {
        r.tract_ms_median = Some(bench_tract(&bundle, a.dept.as_deref(), a.iters)?);
    }
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "{} {} {} dept {}: infer {:.3} ms, switch {:.3} ms (medians of {}, {} thread(s), {}), arena {} B, weight RAM {} B ({})",
            r.arch, r.precision, r.mode, r.department, r.infer_ms_median, r.switch_ms_median, r.iters, r.threads, r.kernels, r.arena_bytes, r.weight_ram_bytes, r.cpu
        );
        if let Some(t) = r.tract_ms_median {
            println!("tract (fused f32 expert, ONNX): infer {t:.3} ms");
        }
        if let Some(s) = &r.speedup {
            println!(
                "{} threads vs 1 in the same run: {:.3} ms vs {:.3} ms, speed-up {:.2}× [{:.2}–{:.2}]; balanced cuts {:.3} ms, {:.2}× ({} rounds of blocks of {})",
                s.threads, s.threads_ms_median, s.one_thread_ms_median, s.ratio_median, s.ratio_min, s.ratio_max, s.balanced_cuts_ms_median, s.balanced_cuts_ratio_median, s.blocks, s.iters
            );
        }
        if let Some(p) = &r.profile {
            print!("{}", render_profile(p));
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
        let m = bench(
            &bundle,
            Some("dept2"),
            &BenchOpts::new(Mode::Materialized, 3),
        )
        .unwrap();
        let s = bench(&bundle, None, &BenchOpts::new(Mode::Streaming, 3)).unwrap();
        assert!(m.profile.is_none());
        assert_eq!(m.department, "dept2");
        assert_eq!(m.arena_bytes, bundle.arena_bytes(Mode::Materialized));
        assert!(m.weight_ram_bytes > 0 && m.weight_ram_bytes < m.arena_bytes);
        assert_eq!(s.weight_ram_bytes, 0);
        assert!(m.infer_ms_median >= 0.0 && m.switch_ms_median >= 0.0);
        assert!(m.infer_ms_min <= m.infer_ms_median && m.switch_ms_min <= m.switch_ms_median);
        let v = serde_json::to_value(&m).unwrap();
        for k in [
            "infer_ms_median",
            "switch_ms_median",
            "infer_ms_min",
            "switch_ms_min",
            "arena_bytes",
            "weight_ram_bytes",
        ] {
            assert!(v.get(k).is_some(), "{k}");
        }
        assert!(bench(
            &bundle,
            Some("nope"),
            &BenchOpts::new(Mode::Materialized, 3)
        )
        .is_err());
        assert!(bench(&bundle, None, &BenchOpts::new(Mode::Materialized, 0)).is_err());
        // Every table this CPU runs can be picked by name, and the report names it.
        assert_eq!(m.kernels, lorkd_runtime::kernels::Kernels::best().isa);
        for k in lorkd_runtime::kernels::Kernels::available()
            .into_iter()
            .flatten()
        {
            let o = BenchOpts {
                kernels: Some(kernels_named(k.isa).unwrap()),
                ..BenchOpts::new(Mode::Materialized, 2)
            };
            assert_eq!(bench(&bundle, None, &o).unwrap().kernels, k.isa);
        }
        assert!(kernels_named("no-such-isa").is_err());
        // The profile: one row per op plus the input, kinds summing to the ops' times.
        for mode in [Mode::Materialized, Mode::Streaming] {
            let o = BenchOpts {
                profile: true,
                ..BenchOpts::new(mode, 3)
            };
            let p = bench(&bundle, None, &o).unwrap().profile.unwrap();
            let nops = bundle.manifest().ops.len();
            assert_eq!(p.ops.len(), nops + 1);
            assert_eq!(p.ops[0].index, None);
            assert_eq!(p.ops[nops].kind, "pool_head");
            assert_eq!(p.kinds.iter().map(|k| k.ops).sum::<usize>(), nops + 1);
            let by_ops: f64 = p.ops.iter().map(|o| o.us_median).sum();
            let by_kinds: f64 = p.kinds.iter().map(|k| k.us).sum();
            assert!((by_ops - by_kinds).abs() <= 1e-6 * by_ops.max(1.0));
            assert!(p.ops.iter().all(|o| o.us_median >= 0.0));
            // Minima: each op's at most its median, the kinds' the sums of their ops'.
            assert!(p
                .ops
                .iter()
                .all(|o| 0.0 <= o.us_min && o.us_min <= o.us_median));
            let mins_by_ops: f64 = p.ops.iter().map(|o| o.us_min).sum();
            let mins_by_kinds: f64 = p.kinds.iter().map(|k| k.us_min).sum();
            assert!((mins_by_ops - mins_by_kinds).abs() <= 1e-6 * mins_by_ops.max(1.0));
            assert!(p.ops.iter().any(|o| o.kind == "conv1x1 expert"));
            assert!(!render_profile(&p).is_empty());
            let v = serde_json::to_value(&p).unwrap();
            assert!(v["kinds"][0]["share"].as_f64().unwrap() > 0.0);
        }
        assert!(bench_tract(&bundle, Some("dept1"), 2).unwrap() >= 0.0);
        // Two threads against one in the same run: every block timed, ratios consistent.
        let o = BenchOpts {
            threads: 2,
            vs_one_thread: true,
            ..BenchOpts::new(Mode::Materialized, 3)
        };
        let s = bench(&bundle, None, &o).unwrap().speedup.unwrap();
        assert_eq!((s.threads, s.blocks, s.iters), (2, 10, 3));
        assert!(s.one_thread_ms_median > 0.0 && s.threads_ms_median > 0.0);
        assert!(s.ratio_min > 0.0 && s.ratio_min <= s.ratio_median);
        assert!(s.ratio_median <= s.ratio_max && s.ratio_max.is_finite());
        assert!(s.balanced_cuts_ms_median > 0.0 && s.balanced_cuts_ratio_median > 0.0);
        let one = BenchOpts {
            vs_one_thread: true,
            ..BenchOpts::new(Mode::Materialized, 3)
        };
        assert!(bench(&bundle, None, &one).is_err());
    }

    /// Writes the BENCHMARKS.md bundles (random ShuffleNetV2 1.0x at 224 and 0.5x at 64,
    /// f32 and int8 with f32 deltas; 0.5x at 32, int8 with int8 deltas; 2 departments,
    /// rank 8) into `$LORKD_BENCH_DIR`, with `TAG-calib.npy`: the first department's
    /// calibration images `[N, C, H, W]` (what the int8 bundle was calibrated on; ONNX
    /// Runtime's static quantisation calibrates on them too, `scripts/bench-ort.sh`).
    /// Run with `--ignored`.
    #[test]
    #[ignore]
    fn write_bench_bundles() {
        use crate::checkpoint::{random_checkpoint, Checkpoint, RandomSpec};
        use crate::pack::{pack, PackOptions};
        use lorkd_runtime::format::DeltaDType;
        let Ok(dir) = std::env::var("LORKD_BENCH_DIR") else {
            return;
        };
        std::fs::create_dir_all(&dir).unwrap();
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
            let calib = crate::pack::synthetic_images(&ck, 4, 1).swap_remove(0);
            let flat =
                ndarray::Array4::from_shape_vec((calib.len(), 3, size, size), calib.concat())
                    .unwrap();
            std::fs::write(
                format!("{dir}/{tag}-calib.npy"),
                lorkd_data::npy::write_f32(&flat),
            )
            .unwrap();
            let variants: &[(Precision, DeltaDType, &str)] = if size == 32 {
                &[(Precision::Int8, DeltaDType::I8, "int8-i8delta")]
            } else {
                &[
                    (Precision::F32, DeltaDType::F32, "f32"),
                    (Precision::Int8, DeltaDType::F32, "int8"),
                ]
            };
            for &(w, delta, name) in variants {
                // Calibration: `synthetic_images(ck, 4, 1)`, as written above.
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
