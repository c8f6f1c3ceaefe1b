//! The per-layer switch plan: which expert convs a department switch rebuilds
//! (`W0 + B·A` into the arena) and which run `W0` plus the low-rank path at each inference.
//!
//! Rebuilding a 1x1 expert costs `Cout·Cin·r` multiply-adds plus a re-quantisation per weight
//! at every switch; streaming it costs `H·W·r·(Cin + Cout)` plus an f32 epilogue per output
//! at every inference. Where `H·W` is small (the last stages, the wide conv before the
//! pool) the rebuild dwarfs the conv itself, so [`Mode::Auto`] streams the experts with the
//! lowest streaming-to-rebuild cost ratio for as long as their added inference cost stays
//! within [`INFER_BUDGET`] of the whole inference, and rebuilds the rest. The plan is a
//! pure function of the manifest, so the packer's and the engine's arena rule
//! ([`super::layout`]) and the engine's dispatch agree without storing it.
//!
//! Costs are in units of one int8 multiply-add of the tiled GEMM; the constants below were
//! fitted to `scripts/plan-check.py` on x86_64 AVX2 and to the Cortex-M instruction counts
//! of `firmware/run-qemu --bench` (BENCHMARKS.md, "Per-layer switch plan"): the plan only
//! needs the order of magnitude. Each target plans for its own kernels, so a Cortex-M
//! device may stream fewer experts than `lorkd inspect` on a PC reports.
use super::{Manifest, Mode, Op};

/// One output element's epilogue in a rebuilt (Materialized) conv: requantisation.
const OUT: u64 = 2;
/// One f32 multiply-add of the low-rank path (`A·x` or `B·u`).
const LOWRANK_MAC: u64 = 1;
/// One f32 multiply-add of the rebuild's `B·A` (long contiguous rows).
const REBUILD_MAC: u64 = 1;
/// One output of a streamed conv beyond [`OUT`]: dequantise the sum, add the correction,
/// quantise in f32.
const STREAM_OUT: u64 = 3;
/// One input element a streamed conv dequantises for `A·x`.
const DEQUANT: u64 = 1;
/// One rebuilt weight beyond its `B·A` sum: add `s0·W0q`, track `max|w|`, re-quantise.
const REBUILD_WEIGHT: u64 = 4;
/// One factor element decoded to f32 (per switch when rebuilt, per inference when streamed).
const DECODE: u64 = 1;
/// Each op's fixed cost at inference (dispatch, tables, packing, small loops): what makes
/// small models slower per multiply-add than the GEMMs alone.
const OP: u64 = if cfg!(target_arch = "arm") {
    5_000
} else {
    16_000
};
/// The streamed path's cost relative to the constants above, per target, fitted to the
/// instruction counts of `firmware/run-qemu --bench`: on x86_64 its GEMMs run in AVX2 lanes
/// as fast per unit as the int8 GEMM; on Cortex-M the `W0` sums take the DSP tiles but the
/// f32 correction has no SIMD (2×); on aarch64 the `W0` sums take the NEON GEMM but the
/// correction and its epilogue cost more per unit than the `sdot` GEMM (3×, fitted when
/// auto inference stayed ≤ 1.1× Materialized on both NEON tables at 0.5x @32 and @64 —
/// +5.5 … +9.2 %, a switch −76 %. The Materialized GEMMs have since got faster and the
/// streamed path not: `firmware/insnprof-a64` counts auto / Materialized per inference of
/// 1.29 / 1.23 (cortex-a72, @32 / @64) and 1.37 / 1.32 (`sdot`) at 3×, 1.17 / 1.16 and
/// 1.21 / 1.19 at 6× with the auto switch doubled (606 K → 1.25 M instructions, about two
/// @32 inferences), so it stays at 3×: the switch is what `Auto` is for).
const STREAM_SCALE: u64 = if cfg!(target_arch = "arm") {
    2
} else if cfg!(target_arch = "aarch64") {
    3
} else {
    1
};
/// Streamed experts may add at most `1 / INFER_BUDGET` of the Materialized inference.
pub const INFER_BUDGET: u64 = 12;
/// Ratios are `stream · 2^16 / rebuild`: an expert whose streaming costs more per inference
/// than its rebuild per switch is never streamed by `Auto`.
const ONE: u64 = 1 << 16;

/// What one expert conv costs each way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpertCost {
    /// Per switch when rebuilt.
    pub rebuild: u64,
    /// Added to each inference when streamed (`u64::MAX` for k > 1: `Auto` always rebuilds
    /// those at the switch; `Streaming` rebuilds them at each inference).
    pub stream: u64,
    /// The conv's own Materialized inference cost.
    pub infer: u64,
}

impl ExpertCost {
    /// Cost of expert conv `cout × cin × k × k` at rank `rank` with `hw` output pixels.
    pub fn new(cout: usize, cin: usize, k: usize, hw: usize, rank: usize) -> Self {
        let [cout, cin, k, hw, r] = [cout, cin, k, hw, rank].map(|v| v as u64);
        let weights = cout.saturating_mul(cin).saturating_mul(k * k);
        let factors = r
            .saturating_mul(k)
            .saturating_mul(cin.saturating_mul(k).saturating_add(cout.saturating_mul(k)));
        let decode = factors.saturating_mul(DECODE);
        let rebuild = weights
            .saturating_mul(
                r.saturating_mul(k)
                    .saturating_mul(REBUILD_MAC)
                    .saturating_add(REBUILD_WEIGHT),
            )
            .saturating_add(decode);
        let infer = hw.saturating_mul(weights.saturating_add(cout.saturating_mul(OUT)));
        let stream = if k == 1 {
            let per_px = r
                .saturating_mul(cin.saturating_add(cout))
                .saturating_mul(LOWRANK_MAC)
                .saturating_add(cin.saturating_mul(DEQUANT))
                .saturating_add(cout.saturating_mul(STREAM_OUT));
            hw.saturating_mul(per_px)
                .saturating_add(decode)
                .saturating_mul(STREAM_SCALE)
        } else {
            u64::MAX
        };
        ExpertCost {
            rebuild,
            stream,
            infer,
        }
    }

    /// `ratio() < theta` without the 128-bit division (`ratio` is `⌊stream·2^16 / rebuild⌋`,
    /// which is below an integer `theta` exactly when `stream·2^16 < theta·rebuild`): the
    /// engine asks it for every expert at each inference and twice per switch.
    pub fn ratio_below(&self, theta: u64) -> bool {
        self.stream != u64::MAX
            && self.rebuild != 0
            && ((self.stream as u128) << 16) < theta as u128 * self.rebuild as u128
    }

    /// `stream / rebuild` in 16.16 fixed point (saturating; `u64::MAX` when not streamable).
    pub fn ratio(&self) -> u64 {
        if self.stream == u64::MAX {
            return u64::MAX;
        }
        ((self.stream as u128) << 16)
            .checked_div(self.rebuild as u128)
            .map_or(u64::MAX, |v| u64::try_from(v).unwrap_or(u64::MAX))
    }
}

/// Which expert convs stream, for one manifest and mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    mode: Mode,
    rank: usize,
    /// `Auto`: an expert with k = 1 streams iff its [`ExpertCost::ratio`] is below this.
    theta: u64,
}

impl Plan {
    /// The plan of `mode` for `m`: `Materialized` rebuilds every expert, `Streaming` streams
    /// every expert, `Auto` chooses per expert (see the module).
    pub fn new(m: &Manifest<'_>, mode: Mode) -> Self {
        let rank = m.rank as usize;
        let theta = match mode {
            Mode::Auto => auto_theta(m),
            _ => 0,
        };
        Plan { mode, rank, theta }
    }

    /// The mode planned for.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Does the expert conv `cout × cin × k × k` with `hw` output pixels stream (true) or get
    /// rebuilt at switch time (false)?
    pub fn streams(&self, cout: usize, cin: usize, k: usize, hw: usize) -> bool {
        match self.mode {
            Mode::Materialized => false,
            Mode::Streaming => true,
            Mode::Auto => {
                k == 1 && ExpertCost::new(cout, cin, k, hw, self.rank).ratio_below(self.theta)
            }
        }
    }
}

/// One expert conv of a manifest, as the plan sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expert {
    /// Index of its op.
    pub op: usize,
    /// Output channels.
    pub cout: usize,
    /// Input channels.
    pub cin: usize,
    /// Kernel side.
    pub k: usize,
    /// Output pixels.
    pub hw: usize,
    /// Its costs.
    pub cost: ExpertCost,
}

impl Plan {
    /// Does expert `e` stream?
    pub fn streams_expert(&self, e: &Expert) -> bool {
        self.streams(e.cout, e.cin, e.k, e.hw)
    }
}

/// Every expert conv of `m`, in graph order (experts whose output value is missing are
/// skipped; `Bundle::parse` rejects such manifests).
pub fn experts<'m>(m: &'m Manifest<'_>) -> impl Iterator<Item = Expert> + 'm {
    let rank = m.rank as usize;
    m.ops
        .iter()
        .enumerate()
        .filter_map(move |(i, op)| match op {
            Op::Conv {
                input,
                output,
                cout,
                k,
                expert: Some(_),
                ..
            } => {
                let v = m.values.get(output as usize)?;
                let (cout, cin, k) = (cout as usize, input.c_len as usize, k as usize);
                let hw = v.h as usize * v.w as usize;
                Some(Expert {
                    op: i,
                    cout,
                    cin,
                    k,
                    hw,
                    cost: ExpertCost::new(cout, cin, k, hw, rank),
                })
            }
            _ => None,
        })
}

/// The Materialized inference cost of `m`: every conv's and depthwise conv's multiply-adds
/// and outputs, plus [`OP`] per op.
pub fn inference_cost(m: &Manifest<'_>) -> u64 {
    let mut total = 0u64;
    for op in m.ops.iter() {
        total = total.saturating_add(OP);
        let (output, per_px) = match op {
            Op::Conv {
                input,
                output,
                cout,
                k,
                ..
            } => {
                let (cout, cin, k) = (cout as u64, input.c_len as u64, k as u64);
                (output, cout * (cin * k * k + OUT))
            }
            Op::DwConv { input, output, .. } => (output, input.c_len as u64 * (9 + OUT)),
            _ => continue,
        };
        if let Some(v) = m.values.get(output as usize) {
            total = total.saturating_add((v.h as u64 * v.w as u64).saturating_mul(per_px));
        }
    }
    total
}

/// `Auto`'s threshold: the largest `t ≤ 1.0` such that the experts with ratio below `t`
/// add at most `inference_cost / INFER_BUDGET` per inference (a binary search over `t`;
/// equal ratios stream together).
fn auto_theta(m: &Manifest<'_>) -> u64 {
    let budget = inference_cost(m) / INFER_BUDGET;
    let added = |t: u64| -> u64 {
        experts(m)
            .filter(|e| e.cost.ratio() < t)
            .fold(0u64, |s, e| s.saturating_add(e.cost.stream))
    };
    let (mut lo, mut hi) = (0u64, ONE);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if added(mid) <= budget {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cost model's shape: a 1x1 expert at one pixel is far cheaper to stream than to
    /// rebuild, at 56×56 far dearer; the ratio grows with the pixels; k > 1 never streams.
    #[test]
    fn streaming_pays_where_pixels_are_few() {
        let late = ExpertCost::new(1024, 192, 1, 1, 4);
        let early = ExpertCost::new(58, 58, 1, 56 * 56, 4);
        assert!(late.ratio() < ONE / 2, "{late:?}"); // every target's scale
        assert!(early.ratio() > ONE, "{early:?}");
        let mut last = 0;
        for hw in [1, 4, 16, 64, 256] {
            let r = ExpertCost::new(96, 96, 1, hw, 4).ratio();
            assert!(r > last, "hw {hw}");
            last = r;
        }
        assert_eq!(ExpertCost::new(24, 3, 3, 1, 4).ratio(), u64::MAX);
    }

    /// `ratio_below(t)` is `ratio() < t` on random costs (zero, huge and unstreamable ones
    /// among them) and thresholds at, around and far from the ratio. Seed: `LORKD_SEED`.
    #[test]
    fn ratio_below_is_ratio_compared() {
        let mut rng = crate::engine::testnet::Rng::new(crate::test_seed());
        let any = |rng: &mut crate::engine::testnet::Rng| match rng.below(5) {
            0 => 0,
            1 => u64::MAX,
            2 => rng.next_u64() >> rng.below(64),
            _ => rng.below(1 << 20) as u64,
        };
        for _ in 0..200_000 {
            let c = ExpertCost {
                rebuild: any(&mut rng),
                stream: any(&mut rng),
                infer: 0,
            };
            let r = c.ratio();
            let t = match rng.below(4) {
                0 => r.saturating_add(rng.below(3) as u64).saturating_sub(1),
                1 => rng.below(ONE as usize + 2) as u64,
                2 => ONE,
                _ => rng.next_u64(),
            };
            assert_eq!(c.ratio_below(t), r < t, "{c:?} theta {t}");
        }
    }
}
