//! Per-department activation calibration (DESIGN.md, "Activation ranges are calibrated per
//! department: each department sees different images"): run each department's f32 expert
//! (`W0 + B_t·A_t`, Materialized) on its own images and record every activation value's
//! `(min, max)`; the packer turns them into int8 `(scale, zero_point)` per value.
//!
//! As TFLite's int8 spec requires, a max pool's output shares its input's quantisation (the
//! union of both ranges, i.e. the input's), so the pool works on codes with no rescale.
//! A concat input that no other op reads (a branch's last conv: both sides of a stride-2
//! unit, the second of a stride-1 unit) shares the concat output's quantisation: its conv
//! requantises straight to the output's scale — one rounding where a rescale made two, so
//! the output's codes are at least as close — and the concat copies that side's codes.
//! The other inputs are not tied: unifying a ShuffleNetV2 stage's concat chain (the
//! pass-through halves, which the next unit's convs also read) was measured to lose more to
//! coarser scales than the engine's per-concat rescale costs.
use anyhow::{ensure, Context, Result};
use lorkd_runtime::engine::{AlignedBytes, Engine};
use lorkd_runtime::format::{Bundle, Manifest, Mode, Op, Precision};
use ndarray::{Array2, ArrayView1};

/// Union-find root of `i`.
fn root(parent: &mut [usize], mut i: usize) -> usize {
    while parent[i] != i {
        parent[i] = parent[parent[i]];
        i = parent[i];
    }
    i
}

/// For each value, a representative of the values that must share its quantisation: max
/// pool input and output, and a concat's output with each of its inputs that no other op
/// reads (never the graph input, value 0).
pub fn shared_quant_groups(m: &Manifest<'_>) -> Vec<usize> {
    quant_groups(m, true)
}

/// [`shared_quant_groups`]; without `tie_concat` only the max pools (the rule before
/// concat inputs were tied, kept for the experiment that compares the two).
fn quant_groups(m: &Manifest<'_>, tie_concat: bool) -> Vec<usize> {
    let n = m.values.len();
    let mut parent: Vec<usize> = (0..n).collect();
    let union = |p: &mut Vec<usize>, a: usize, b: usize| {
        if a < n && b < n {
            let (ra, rb) = (root(p, a), root(p, b));
            p[ra] = rb;
        }
    };
    // How many reads each value has (a concat reading one value twice counts two).
    let mut reads = vec![0usize; n];
    for op in m.ops.iter() {
        let read: &[u16] = match &op {
            Op::Conv { input, .. } | Op::DwConv { input, .. } => &[input.value],
            Op::MaxPool { input, .. } | Op::PoolHead { input, .. } => &[*input],
            Op::ConcatShuffle { a, b, .. } => &[a.value, b.value],
        };
        for &v in read {
            if let Some(r) = reads.get_mut(v as usize) {
                *r += 1;
            }
        }
    }
    for op in m.ops.iter() {
        match op {
            Op::MaxPool { input, output } => union(&mut parent, input as usize, output as usize),
            Op::ConcatShuffle { a, b, output } if tie_concat => {
                for v in [a.value as usize, b.value as usize] {
                    if v != 0 && reads.get(v) == Some(&1) {
                        union(&mut parent, v, output as usize);
                    }
                }
            }
            _ => {}
        }
    }
    (0..n).map(|i| root(&mut parent, i)).collect()
}

/// Per department, per value `(min, max)` over `images[t]` (CHW, normalised) run through
/// department `t` of the f32 bundle. A value no image reached reads `(0, 0)`.
pub fn activation_ranges(
    f32_bundle: &[u8],
    images: &[Vec<Vec<f32>>],
) -> Result<Vec<Vec<(f32, f32)>>> {
    ranges_grouped(f32_bundle, images, true)
}

/// [`activation_ranges`] with the groups of [`quant_groups`]`(_, tie_concat)`.
fn ranges_grouped(
    f32_bundle: &[u8],
    images: &[Vec<Vec<f32>>],
    tie_concat: bool,
) -> Result<Vec<Vec<(f32, f32)>>> {
    // The engine reads tensors in place: give it 16-aligned bytes.
    let bytes = AlignedBytes::new(f32_bundle);
    let bundle = Bundle::parse(bytes.as_slice()).context("calibration bundle")?;
    ensure!(
        bundle.manifest().precision == Precision::F32,
        "calibration needs the f32 bundle"
    );
    ensure!(
        images.len() == bundle.department_count(),
        "calibration images for {} departments, bundle has {}",
        images.len(),
        bundle.department_count()
    );
    let n = bundle.manifest().values.len();
    let mut arena = AlignedBytes::zeroed(bundle.arena_bytes(Mode::Materialized));
    let mut engine = Engine::new(&bundle, arena.as_mut_slice(), Mode::Materialized)?;
    let mut logits = vec![0.0f32; 1 << 16];
    let mut out = Vec::with_capacity(images.len());
    for (t, imgs) in images.iter().enumerate() {
        engine.select(t)?;
        // Per value: row 0 the minimum, row 1 the maximum seen so far.
        let mut r = Array2::from_shape_fn((2, n), |(i, _)| [f32::INFINITY, f32::NEG_INFINITY][i]);
        for (i, x) in imgs.iter().enumerate() {
            engine
                .infer_observe(x, &mut logits, |v, data| {
                    let (lo, hi) = ArrayView1::from(data)
                        .fold((r[[0, v]], r[[1, v]]), |(lo, hi), &z| {
                            (lo.min(z), hi.max(z))
                        });
                    r[[0, v]] = lo;
                    r[[1, v]] = hi;
                })
                .with_context(|| format!("department {t}, calibration image {i}"))?;
        }
        // Values that share a quantisation get the union of their ranges.
        let groups = quant_groups(bundle.manifest(), tie_concat);
        let mut union =
            Array2::from_shape_fn((2, n), |(i, _)| [f32::INFINITY, f32::NEG_INFINITY][i]);
        for (v, &g) in groups.iter().enumerate() {
            union[[0, g]] = union[[0, g]].min(r[[0, v]]);
            union[[1, g]] = union[[1, g]].max(r[[1, v]]);
        }
        let r: Vec<(f32, f32)> = groups
            .iter()
            .map(|&g| match (union[[0, g]], union[[1, g]]) {
                (lo, hi) if lo > hi => (0.0, 0.0),
                e => e,
            })
            .collect();
        out.push(r);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lorkd_runtime::engine::testnet::{NetSpec, TestNet};

    #[test]
    fn ranges_cover_every_value_and_differ_by_department() {
        let seed: u64 = rand::random();
        println!("seed {seed}");
        let net = TestNet::random(NetSpec::small(), seed);
        let bytes = net.bundle_f32();
        let imgs: Vec<Vec<Vec<f32>>> = (0..3).map(|t| net.inputs(6, seed ^ t)).collect();
        let r = activation_ranges(&bytes, &imgs).unwrap();
        assert_eq!(r.len(), 3);
        assert!(r.iter().all(|d| d.len() == net.values.len()));
        // The input value's range is the images' range.
        let (lo, hi) = imgs[0]
            .iter()
            .flatten()
            .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
        assert_eq!(r[0][0], (lo, hi));
        // ReLU outputs are non-negative and not collapsed.
        assert!(r[0][1].0 >= 0.0 && r[0][1].1 > 0.1);
        // Shared quantisation: maxpool in/out (v1, v2).
        assert_eq!(r[0][1], r[0][2]);
        assert_ne!(r[0][2], r[0][3]);
        // Shared quantisation: a concat input only the concat reads has the output's range
        // (both sides of a stride-2 unit, the branch of a stride-1 unit); the pass-through
        // half, which the next unit's conv reads too, keeps its own.
        let aligned = AlignedBytes::new(&bytes);
        let bundle = Bundle::parse(aligned.as_slice()).unwrap();
        let groups = shared_quant_groups(bundle.manifest());
        let (mut tied, mut own) = (0, 0);
        for op in bundle.manifest().ops.iter() {
            if let Op::ConcatShuffle { a, b, output } = op {
                for v in [a.value as usize, b.value as usize] {
                    let o = output as usize;
                    if groups[v] == groups[o] {
                        tied += 1;
                        assert!(r.iter().all(|d| d[v] == d[o]), "value {v}");
                    } else {
                        own += 1;
                    }
                }
            }
        }
        assert!(tied > own && own > 0, "tied {tied}, own {own}");
        // Departments differ (different deltas, different images).
        assert_ne!(r[0][13], r[1][13]);
        assert!(activation_ranges(&bytes, &imgs[..2]).is_err());
        // The ranges make a working int8 bundle.
        let q = net.bundle_int8(&r);
        assert!(Bundle::parse(AlignedBytes::new(&q).as_slice()).is_ok());
    }

    /// The experiment behind tying a concat input that only the concat reads to the
    /// output's quantisation: per seed, a random ShuffleNetV2 0.5x @64 checkpoint (rank 8,
    /// departments of 10 and 4 classes) packed int8 twice — concat inputs tied and not —
    /// from the same 4 calibration images a department; on 64 other images a department,
    /// each int8 bundle's logits against the f32 bundle's (Materialized): mean |Δ| and
    /// top-1 agreement. Prints a row per seed and mean ± std over seeds; asserts nothing.
    /// `LORKD_SEEDS=5 cargo test -p lorkd-tools --release --lib -- --ignored --nocapture concat_tie_experiment`
    #[test]
    #[ignore]
    fn concat_tie_experiment() {
        use crate::checkpoint::{random_checkpoint, Checkpoint, RandomSpec};
        use crate::pack::{pack, synthetic_images, PackOptions};
        use lorkd_runtime::format::{DeltaDType, Mode, Precision};
        let seeds: u64 = std::env::var("LORKD_SEEDS").map_or(3, |v| v.parse().unwrap());
        let mut rows = Vec::new();
        println!("seed | untied mean |Δ| | tied mean |Δ| | untied top-1 | tied top-1");
        for seed in 0..seeds {
            let spec = RandomSpec {
                arch: "shufflenet_v2_x0_5".into(),
                in_channels: 3,
                input_size: 64,
                rank: 8,
                classes: vec![10, 4],
                seed,
            };
            let ck = Checkpoint::from_bytes(&random_checkpoint(&spec).unwrap()).unwrap();
            let opts = |weights, delta| PackOptions {
                weights,
                delta,
                calib_count: 4,
                calib_seed: 1,
                ..PackOptions::default()
            };
            let f32b = pack(
                &ck,
                &opts(Precision::F32, DeltaDType::F32),
                None,
                None,
                &|b, i| ranges_grouped(b, i, true),
            )
            .unwrap();
            let int8 = |tie: bool| {
                let o = opts(Precision::Int8, DeltaDType::F32);
                pack(&ck, &o, None, None, &|b, i| ranges_grouped(b, i, tie)).unwrap()
            };
            let (untied, tied) = (int8(false), int8(true));
            let test = synthetic_images(&ck, 64, 1000 + seed);
            let logits = |bytes: &[u8]| -> Vec<Vec<f32>> {
                let a = AlignedBytes::new(bytes);
                let b = Bundle::parse(a.as_slice()).unwrap();
                let mut arena = AlignedBytes::zeroed(b.arena_bytes(Mode::Materialized));
                let mut e = Engine::new(&b, arena.as_mut_slice(), Mode::Materialized).unwrap();
                let mut out = Vec::new();
                for (t, imgs) in test.iter().enumerate() {
                    e.select(t).unwrap();
                    for x in imgs {
                        let mut l = vec![0.0f32; 64];
                        let n = e.infer(x, &mut l).unwrap();
                        l.truncate(n);
                        out.push(l);
                    }
                }
                out
            };
            let (want, lu, lt) = (logits(&f32b), logits(&untied), logits(&tied));
            let argmax = |l: &[f32]| (0..l.len()).max_by(|&i, &j| l[i].total_cmp(&l[j])).unwrap();
            let score = |got: &[Vec<f32>]| {
                let (mut sum, mut n, mut agree) = (0.0f64, 0usize, 0usize);
                for (g, w) in got.iter().zip(&want) {
                    for (a, b) in g.iter().zip(w) {
                        sum += (a - b).abs() as f64;
                        n += 1;
                    }
                    agree += usize::from(argmax(g) == argmax(w));
                }
                (sum / n as f64, agree as f64 / want.len() as f64)
            };
            let ((eu, au), (et, at)) = (score(&lu), score(&lt));
            println!(
                "{seed} | {eu:.5} | {et:.5} | {:.1} % | {:.1} %",
                100.0 * au,
                100.0 * at
            );
            rows.push([eu, et, au, at]);
        }
        // Mean and sample standard deviation.
        let mean_sd = |v: &[f64]| {
            let m = v.iter().sum::<f64>() / v.len() as f64;
            let var =
                v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (v.len() - 1).max(1) as f64;
            (m, var.sqrt())
        };
        let stat = |k: usize| mean_sd(&rows.iter().map(|r| r[k]).collect::<Vec<_>>());
        let (rm, rs) = mean_sd(&rows.iter().map(|r| r[1] / r[0]).collect::<Vec<_>>());
        for (name, k) in [
            ("untied mean |Δ|", 0),
            ("tied mean |Δ|", 1),
            ("untied top-1", 2),
            ("tied top-1", 3),
        ] {
            let (m, sd) = stat(k);
            println!("{name}: {m:.5} ± {sd:.5}");
        }
        println!("tied / untied mean |Δ|: {rm:.3} ± {rs:.3} over {seeds} seeds");
    }
}
