//! Whole-model engine tests on random ShuffleNetV2-shaped bundles (`engine::testnet`):
//! f32 against a naive reference forward, select A, B, A bit-identity, department deltas
//! changing the outputs, streaming ≈ materialized, int8 against f32, the per-layer (`auto`)
//! switch plan, and the error paths.
mod common;
use common::{ranges, seed};
use lorkd_runtime::engine::testnet::{Layer, NetSpec, TestNet};
use lorkd_runtime::engine::{Engine, EngineError};
use lorkd_runtime::format::{Bundle, DeltaDType, Mode};
use lorkd_runtime::AlignedBytes;

/// Naive f32 forward of `net` for department `t`, straight from its f32 weights and factors:
/// `W = W0 + reshape(B·A, [Cout, Cin, k, k])`, NHWC values, loops over every index.
fn reference(net: &TestNet, t: usize, x_chw: &[f32]) -> Vec<f32> {
    let mut vals: Vec<Vec<f32>> = vec![Vec::new(); net.values.len()];
    let (s, _, _) = net.values[0];
    let s = s as usize;
    vals[0] = (0..s * s * 3)
        .map(|i| x_chw[(i % 3) * s * s + i / 3])
        .collect();
    let r = net.spec.rank as usize;
    let d = &net.depts[t];
    for l in &net.layers {
        match l {
            Layer::Conv {
                input,
                output,
                cout,
                k,
                stride,
                relu,
                w,
                b,
                expert,
            } => {
                let (h, wd, cin_total) = net.values[input.value as usize];
                let (ho, wo, _) = net.values[*output as usize];
                let (k, cout, cin) = (*k as usize, *cout as usize, input.c_len as usize);
                let pad = if k == 3 { 1 } else { 0 };
                let mut weff = w.clone();
                if let Some(e) = expert {
                    let (a, bm) = &d.deltas[*e as usize];
                    let (rows, inner, cols) = (cout * k, r * k, cin * k);
                    for i in 0..rows {
                        for j in 0..cols {
                            let ba: f32 = (0..inner)
                                .map(|q| bm[i * inner + q] * a[q * cols + j])
                                .sum();
                            weff[i * cols + j] += ba; // row-major reshape: flat index i·cols + j
                        }
                    }
                }
                let x = &vals[input.value as usize];
                let mut y = vec![0.0; ho as usize * wo as usize * cout];
                for oy in 0..ho as usize {
                    for ox in 0..wo as usize {
                        for o in 0..cout {
                            let mut acc = b[o];
                            for c in 0..cin {
                                for ky in 0..k {
                                    for kx in 0..k {
                                        let iy =
                                            (oy * *stride as usize + ky) as isize - pad as isize;
                                        let ix =
                                            (ox * *stride as usize + kx) as isize - pad as isize;
                                        if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize
                                        {
                                            continue;
                                        }
                                        let xv = x[(iy as usize * wd as usize + ix as usize)
                                            * cin_total as usize
                                            + input.c_off as usize
                                            + c];
                                        acc += weff[((o * cin + c) * k + ky) * k + kx] * xv;
                                    }
                                }
                            }
                            y[(oy * wo as usize + ox) * cout + o] =
                                if *relu { acc.max(0.0) } else { acc };
                        }
                    }
                }
                vals[*output as usize] = y;
            }
            Layer::Dw {
                input,
                output,
                stride,
                relu,
                w,
                b,
            } => {
                let (h, wd, ct) = net.values[input.value as usize];
                let (ho, wo, c) = net.values[*output as usize];
                let x = &vals[input.value as usize];
                let mut y = vec![0.0; ho as usize * wo as usize * c as usize];
                for oy in 0..ho as isize {
                    for ox in 0..wo as isize {
                        for ch in 0..c as usize {
                            let mut acc = b[ch];
                            for ky in 0..3isize {
                                for kx in 0..3isize {
                                    let (iy, ix) = (
                                        oy * *stride as isize + ky - 1,
                                        ox * *stride as isize + kx - 1,
                                    );
                                    if iy >= 0 && ix >= 0 && iy < h as isize && ix < wd as isize {
                                        acc += w[((ky * 3 + kx) as usize) * c as usize + ch]
                                            * x[(iy as usize * wd as usize + ix as usize)
                                                * ct as usize
                                                + input.c_off as usize
                                                + ch];
                                    }
                                }
                            }
                            y[(oy as usize * wo as usize + ox as usize) * c as usize + ch] =
                                if *relu { acc.max(0.0) } else { acc };
                        }
                    }
                }
                vals[*output as usize] = y;
            }
            Layer::MaxPool { input, output } => {
                let (h, wd, c) = net.values[*input as usize];
                let (ho, wo, _) = net.values[*output as usize];
                let x = &vals[*input as usize];
                let mut y = vec![f32::NEG_INFINITY; ho as usize * wo as usize * c as usize];
                for oy in 0..ho as isize {
                    for ox in 0..wo as isize {
                        for ch in 0..c as usize {
                            for ky in 0..3 {
                                for kx in 0..3 {
                                    let (iy, ix) = (oy * 2 + ky - 1, ox * 2 + kx - 1);
                                    if iy >= 0 && ix >= 0 && iy < h as isize && ix < wd as isize {
                                        let v = x[(iy as usize * wd as usize + ix as usize)
                                            * c as usize
                                            + ch];
                                        let o = &mut y[(oy as usize * wo as usize + ox as usize)
                                            * c as usize
                                            + ch];
                                        *o = o.max(v);
                                    }
                                }
                            }
                        }
                    }
                }
                vals[*output as usize] = y;
            }
            Layer::Concat { a, b, output } => {
                let (h, wd, c2) = net.values[*output as usize];
                let (ca, cb) = (
                    net.values[a.value as usize].2 as usize,
                    net.values[b.value as usize].2 as usize,
                );
                let n = h as usize * wd as usize;
                let half = c2 as usize / 2;
                let mut y = vec![0.0; n * c2 as usize];
                for p in 0..n {
                    // concat then shuffle(2 groups): channel j of the concat goes to (j % half)·2 + j / half.
                    for j in 0..c2 as usize {
                        let v = if j < half {
                            vals[a.value as usize][p * ca + a.c_off as usize + j]
                        } else {
                            vals[b.value as usize][p * cb + b.c_off as usize + j - half]
                        };
                        y[p * c2 as usize + (j % half) * 2 + j / half] = v;
                    }
                }
                vals[*output as usize] = y;
            }
            Layer::Head { input } => {
                let (h, wd, c) = net.values[*input as usize];
                let x = &vals[*input as usize];
                let n = h as usize * wd as usize;
                let f: Vec<f32> = (0..c as usize)
                    .map(|ch| (0..n).map(|p| x[p * c as usize + ch]).sum::<f32>() / n as f32)
                    .collect();
                return (0..d.head_b.len())
                    .map(|o| {
                        d.head_b[o]
                            + (0..f.len())
                                .map(|i| d.head_w[o * f.len() + i] * f[i])
                                .sum::<f32>()
                    })
                    .collect();
            }
        }
    }
    unreachable!("graph ends in a head")
}

fn run(e: &mut Engine<'_, '_>, x: &[f32]) -> Vec<f32> {
    let mut logits = vec![0.0; 16];
    let n = e.infer(x, &mut logits).unwrap();
    logits.truncate(n);
    logits
}

fn close(a: &[f32], b: &[f32], rel: f32) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| (x - y).abs() <= rel * (1.0 + x.abs().max(y.abs())))
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .unwrap()
        .0
}

#[test]
fn f32_matches_reference_and_switch_is_exact() {
    let s = seed();
    let net = TestNet::random(NetSpec::small(), s);
    let bytes = AlignedBytes::new(&net.bundle_f32());
    let bundle = Bundle::parse(bytes.as_slice()).unwrap();
    let xs = net.inputs(4, s ^ 1);
    for mode in Mode::ALL {
        let mut arena = AlignedBytes::zeroed(bundle.arena_bytes(mode));
        let mut e = Engine::new(&bundle, arena.as_mut_slice(), mode).unwrap();
        for x in &xs {
            e.select(0).unwrap();
            let a = run(&mut e, x);
            e.select(1).unwrap();
            let b = run(&mut e, x);
            e.select(0).unwrap();
            let a2 = run(&mut e, x);
            assert_eq!(
                a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                a2.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "{mode:?}: select A,B,A"
            );
            let ra = reference(&net, 0, x);
            let rb = reference(&net, 1, x);
            assert!(close(&a, &ra, 1e-4), "{mode:?} dept0: {a:?} vs {ra:?}");
            assert!(close(&b, &rb, 1e-4), "{mode:?} dept1: {b:?} vs {rb:?}");
            // The delta matters: department 0's head on department 1's weights differs.
            e.select(2).unwrap();
            let c = run(&mut e, x);
            assert_eq!(c.len(), 3);
            assert!(close(&c, &reference(&net, 2, x), 1e-4));
        }
    }
}

#[test]
fn deltas_change_outputs_and_network_is_not_collapsed() {
    let s = seed();
    let mut net = TestNet::random(NetSpec::small(), s);
    // Same head for departments 0 and 1: any output difference comes from the deltas.
    net.depts[1].head_w = net.depts[0].head_w.clone();
    net.depts[1].head_b = net.depts[0].head_b.clone();
    net.depts[1].classes.truncate(4);
    net.depts[1].head_w.truncate(4 * net.spec.features as usize);
    net.depts[1].head_b.truncate(4);
    let bytes = AlignedBytes::new(&net.bundle_f32());
    let bundle = Bundle::parse(bytes.as_slice()).unwrap();
    let mut arena = AlignedBytes::zeroed(bundle.arena_bytes(Mode::Materialized));
    let mut e = Engine::new(&bundle, arena.as_mut_slice(), Mode::Materialized).unwrap();
    let xs = net.inputs(8, s ^ 2);
    let mut outs = Vec::new();
    let mut max_diff = 0.0f32;
    for x in &xs {
        e.select(0).unwrap();
        let a = run(&mut e, x);
        e.select(1).unwrap();
        let b = run(&mut e, x);
        max_diff = a
            .iter()
            .zip(&b)
            .fold(max_diff, |m, (p, q)| m.max((p - q).abs()));
        outs.push(a);
    }
    assert!(
        max_diff > 0.05,
        "deltas barely change the logits: {max_diff}"
    );
    // Not collapsed: logits vary across inputs by far more than rounding.
    let spread = (0..4).map(|c| {
        let v: Vec<f32> = outs.iter().map(|o| o[c]).collect();
        v.iter().cloned().fold(f32::MIN, f32::max) - v.iter().cloned().fold(f32::MAX, f32::min)
    });
    assert!(
        spread.fold(0.0f32, f32::max) > 0.05,
        "logits do not depend on the input"
    );
}

#[test]
fn streaming_matches_materialized_for_every_delta_dtype() {
    let s = seed();
    for dt in [DeltaDType::F32, DeltaDType::F16, DeltaDType::I8] {
        let spec = NetSpec {
            delta_dtype: dt,
            ..NetSpec::small()
        };
        let net = TestNet::random(spec, s);
        let bytes = AlignedBytes::new(&net.bundle_f32());
        let bundle = Bundle::parse(bytes.as_slice()).unwrap();
        let mut am = AlignedBytes::zeroed(bundle.arena_bytes(Mode::Materialized));
        let mut asr = AlignedBytes::zeroed(bundle.arena_bytes(Mode::Streaming));
        let mut em = Engine::new(&bundle, am.as_mut_slice(), Mode::Materialized).unwrap();
        let mut es = Engine::new(&bundle, asr.as_mut_slice(), Mode::Streaming).unwrap();
        assert_eq!(es.weight_ram_bytes(), 0);
        assert!(em.weight_ram_bytes() > 0);
        for (i, x) in net.inputs(3, s ^ 3).iter().enumerate() {
            let t = i % 3;
            em.select(t).unwrap();
            es.select(t).unwrap();
            let (a, b) = (run(&mut em, x), run(&mut es, x));
            assert!(close(&a, &b, 1e-4), "{dt:?}: {a:?} vs {b:?}");
            if dt != DeltaDType::F32 {
                // Stored factors are lossy; the reference uses the f32 originals.
                assert!(
                    close(&a, &reference(&net, t, x), 0.1),
                    "{dt:?} far from the f32 factors"
                );
            }
        }
    }
}

/// A streamed k×k expert (the stem) is rebuilt for each inference exactly as the switch
/// rebuilds a Materialized one: on a net whose only expert is the stem, Streaming gives
/// Materialized's logits bit for bit, f32 and int8, every factor dtype, every department,
/// and holds no weight RAM.
#[test]
fn streamed_stem_is_the_materialized_stem() {
    let s = seed();
    for dt in [DeltaDType::F32, DeltaDType::F16, DeltaDType::I8] {
        let spec = NetSpec {
            delta_dtype: dt,
            ..NetSpec::small()
        };
        let mut net = TestNet::random(spec, s);
        // Only the stem (expert 0, the first conv) keeps its factors.
        for l in &mut net.layers {
            if let Layer::Conv {
                expert: e @ Some(1..),
                ..
            } = l
            {
                *e = None;
            }
        }
        for d in &mut net.depts {
            d.deltas.truncate(1);
        }
        let fbytes = AlignedBytes::new(&net.bundle_f32());
        let fb = Bundle::parse(fbytes.as_slice()).unwrap();
        assert_eq!(fb.manifest().experts, 1);
        let calib = net.inputs(16, s ^ 5);
        let qbytes = AlignedBytes::new(&net.bundle_int8(&ranges(&fb, 3, &calib)));
        let qb = Bundle::parse(qbytes.as_slice()).unwrap();
        for (b, kind) in [(&fb, "f32"), (&qb, "int8")] {
            streaming_is_materialized(b, &net, s, &format!("{kind} {dt:?}"));
        }
    }
}

/// Streaming gives Materialized's logits bit for bit on `b` (six inputs, the departments in
/// turn), holding no weight RAM: the experts it rebuilds at each inference are the switch's.
fn streaming_is_materialized(b: &Bundle<'_>, net: &TestNet, s: u64, what: &str) {
    let mut am = AlignedBytes::zeroed(b.arena_bytes(Mode::Materialized));
    let mut asr = AlignedBytes::zeroed(b.arena_bytes(Mode::Streaming));
    let mut em = Engine::new(b, am.as_mut_slice(), Mode::Materialized).unwrap();
    let mut es = Engine::new(b, asr.as_mut_slice(), Mode::Streaming).unwrap();
    assert_eq!(es.weight_ram_bytes(), 0);
    for (i, x) in net.inputs(6, s ^ 6).iter().enumerate() {
        let t = i % 3;
        em.select(t).unwrap();
        es.select(t).unwrap();
        let (m, st) = (run(&mut em, x), run(&mut es, x));
        assert_eq!(bits(&m), bits(&st), "{what} dept {t}");
    }
}

/// `Streaming` rebuilds a pointwise expert into its scratch at each inference where the plan
/// prices streaming it at `REBUILD_FROM` of that rebuild or more and the rebuild fits the
/// scratch the streamed experts have anyway (`Plan::rebuilds_per_inference`; x86_64,
/// aarch64): on a
/// net of many pixels, where every expert qualifies, Streaming gives Materialized's logits
/// bit for bit (f32 and int8, every factor dtype, every department) with no weight RAM;
/// on nets of fewer pixels the plan's rule holds expert by expert, the other modes never
/// rebuild per inference, and the arena is the one the packer stored.
#[test]
fn streaming_rebuilds_the_many_pixel_experts_per_inference() {
    use lorkd_runtime::format::layout;
    use lorkd_runtime::format::plan::{self, Plan};
    let s = seed();
    // The plan's rule on one bundle; returns (rebuilt, all) pointwise expert counts.
    let check = |b: &Bundle<'_>| -> (usize, usize) {
        let m = b.manifest();
        let int8 = m.precision == lorkd_runtime::format::Precision::Int8;
        let p = Plan::new(m, Mode::Streaming);
        let r = m.rank as usize;
        let es: Vec<_> = plan::experts(m).collect();
        let fit = es
            .iter()
            .map(|e| layout::stream_scratch(e.cout, e.cin, e.k, e.hw, r, int8).unwrap())
            .max()
            .unwrap_or(0);
        let mut rebuilt = 0;
        for e in &es {
            let yes = p.rebuilds_per_inference(e.cout, e.cin, e.k, e.hw);
            if e.k == 1 {
                // The ratio of the int8 costs (both paths lay their weights out alike),
                // whatever the bundle's precision.
                let c = plan::ExpertCost::new(
                    e.cout,
                    e.cin,
                    1,
                    e.hw,
                    r,
                    lorkd_runtime::format::Precision::Int8,
                );
                let pays = c.ratio() >= plan::REBUILD_FROM;
                let fits = layout::rebuild_scratch(e.cout, e.cin, e.k, r, int8).unwrap() <= fit;
                assert_eq!(yes, pays && fits, "{e:?} pays {pays} fits {fits}");
            } else {
                assert!(yes, "{e:?}: the stem is rebuilt per inference");
            }
            for mode in [Mode::Materialized, Mode::Auto] {
                assert!(!Plan::new(m, mode).rebuilds_per_inference(e.cout, e.cin, e.k, e.hw));
            }
            rebuilt += usize::from(yes && e.k == 1);
        }
        let mut a = AlignedBytes::zeroed(b.arena_bytes(Mode::Streaming));
        let e = Engine::new(b, a.as_mut_slice(), Mode::Streaming).unwrap();
        assert_eq!(e.weight_ram_bytes(), 0);
        (rebuilt, es.iter().filter(|e| e.k == 1).count())
    };
    let bundles = |net: &TestNet| {
        let fb = net.bundle_f32();
        let f = Bundle::parse(&fb).unwrap();
        let calib = net.inputs(16, s ^ 5);
        let qb = net.bundle_int8(&ranges(&f, 3, &calib));
        (fb, qb)
    };
    for dt in [DeltaDType::F32, DeltaDType::F16, DeltaDType::I8] {
        let spec = NetSpec {
            size: 64,
            delta_dtype: dt,
            ..NetSpec::small()
        };
        let net = TestNet::random(spec, s);
        let (fb, qb) = bundles(&net);
        let (fb, qb) = (AlignedBytes::new(&fb), AlignedBytes::new(&qb));
        for (bytes, kind) in [(&fb, "f32"), (&qb, "int8")] {
            let b = Bundle::parse(bytes.as_slice()).unwrap();
            let (rebuilt, pointwise) = check(&b);
            if rebuilt == 0 {
                if cfg!(target_arch = "x86_64") {
                    panic!("{kind} {dt:?}: x86_64 rebuilds here");
                }
                println!("SKIPPED streaming_rebuilds_…: this target never rebuilds a pointwise expert per inference");
                return;
            }
            assert_eq!(
                rebuilt, pointwise,
                "{kind} {dt:?}: every pointwise expert qualifies"
            );
            streaming_is_materialized(&b, &net, s, &format!("{kind} {dt:?}"));
        }
    }
    // Fewer pixels: some experts stream, some are rebuilt (x86_64), by the rule above.
    let mut mixed = 0;
    for size in [16, 24, 32] {
        let net = TestNet::random(
            NetSpec {
                size,
                ..mixed_plan_net(s).spec
            },
            s,
        );
        let (fb, qb) = bundles(&net);
        for bytes in [fb, qb] {
            let (rebuilt, pointwise) = check(&Bundle::parse(&bytes).unwrap());
            println!(
                "size {size}: {rebuilt} of {pointwise} pointwise experts rebuilt per inference"
            );
            mixed += usize::from(rebuilt > 0 && rebuilt < pointwise);
        }
    }
    assert!(mixed > 0 || !cfg!(target_arch = "x86_64"), "no net mixes");
}

#[test]
fn int8_switch_is_exact_and_agrees_with_f32() {
    let s = seed();
    let net = TestNet::random(
        NetSpec {
            size: 24,
            ..NetSpec::small()
        },
        s,
    );
    let fbytes = AlignedBytes::new(&net.bundle_f32());
    let fb = Bundle::parse(fbytes.as_slice()).unwrap();
    let calib = net.inputs(32, s ^ 4);
    let r = ranges(&fb, 3, &calib);
    let qbytes = AlignedBytes::new(&net.bundle_int8(&r));
    let qb = Bundle::parse(qbytes.as_slice()).unwrap();
    assert!(qb.arena_bytes(Mode::Materialized) < fb.arena_bytes(Mode::Materialized));

    let mut af = AlignedBytes::zeroed(fb.arena_bytes(Mode::Materialized));
    let mut ef = Engine::new(&fb, af.as_mut_slice(), Mode::Materialized).unwrap();
    let mut am = AlignedBytes::zeroed(qb.arena_bytes(Mode::Materialized));
    let mut em = Engine::new(&qb, am.as_mut_slice(), Mode::Materialized).unwrap();
    let mut asr = AlignedBytes::zeroed(qb.arena_bytes(Mode::Streaming));
    let mut es = Engine::new(&qb, asr.as_mut_slice(), Mode::Streaming).unwrap();

    let tests = net.inputs(100, s ^ 5);
    let (mut agree_f32, mut agree_modes, mut total) = (0, 0, 0);
    // Errors are measured against the logit scale (largest |f32 logit| over all images), as
    // `lorkd verify` does: a per-image spread can be near zero and made the ratio flaky.
    let (mut worst_q, mut worst_modes, mut scale) = (0.0f32, 0.0f32, 1e-3f32);
    for t in 0..3 {
        for x in &tests {
            ef.select(t).unwrap();
            em.select(t).unwrap();
            es.select(t).unwrap();
            let f = run(&mut ef, x);
            let q = run(&mut em, x);
            let qs = run(&mut es, x);
            scale = f.iter().fold(scale, |m, a| m.max(a.abs()));
            worst_q = f
                .iter()
                .zip(&q)
                .fold(worst_q, |m, (a, b)| m.max((a - b).abs()));
            worst_modes = q
                .iter()
                .zip(&qs)
                .fold(worst_modes, |m, (a, b)| m.max((a - b).abs()));
            agree_f32 += usize::from(argmax(&f) == argmax(&q));
            agree_modes += usize::from(argmax(&q) == argmax(&qs));
            total += 1;
        }
        // select A, B, A: bit-identical (rebuilt from the pristine int8 W0 each time).
        let x = &tests[0];
        em.select(t).unwrap();
        let a = run(&mut em, x);
        em.select((t + 1) % 3).unwrap();
        let _ = run(&mut em, x);
        em.select(t).unwrap();
        assert_eq!(a, run(&mut em, x));
    }
    let (worst_q, worst_modes) = (worst_q / scale, worst_modes / scale);
    println!(
        "int8 vs f32 top-1 agreement {agree_f32}/{total}, worst |Δlogit| {worst_q:.4} of the logit \
         scale {scale:.3}; int8 streaming vs materialized agreement {agree_modes}/{total}, worst \
         {worst_modes:.4}"
    );
    assert!(
        agree_f32 * 100 >= 95 * total,
        "int8 agrees with f32 on {agree_f32}/{total}"
    );
    // Stated bound: the two int8 modes round differently (re-quantised W0 + ΔW vs W0 plus an
    // exact f32 low-rank path), each within int8 error of f32. Measured over 13 seeds: modes
    // ≤ 0.023 of the logit scale. int8 vs f32, the worst of 300 logits, has a long tail: over
    // 100 seeds (2026-12-01) median 0.045, p90 0.09, max 0.18, and one CI seed
    // (LORKD_SEED=1796141728815123649, at 299/300 top-1 agreement) 0.31; so 0.5 here, and
    // the top-1 agreement above carries the accuracy claim.
    assert!(worst_q < 0.5, "int8 vs f32: {worst_q}");
    assert!(
        worst_modes < 0.1,
        "int8 streaming vs materialized: {worst_modes}"
    );
    assert!(agree_modes * 100 >= 95 * total);
}

#[test]
fn errors_are_values() {
    let s = seed();
    let net = TestNet::random(NetSpec::small(), s);
    let bytes = AlignedBytes::new(&net.bundle_f32());
    let bundle = Bundle::parse(bytes.as_slice()).unwrap();
    for mode in Mode::ALL {
        let need = bundle.arena_bytes(mode);
        let mut small = AlignedBytes::zeroed(need - 1);
        assert_eq!(
            Engine::new(&bundle, small.as_mut_slice(), mode).err(),
            Some(EngineError::ArenaTooSmall {
                needed: need,
                got: need - 1
            })
        );
        let mut big = AlignedBytes::zeroed(need + 16);
        assert_eq!(
            Engine::new(&bundle, &mut big.as_mut_slice()[1..], mode).err(),
            Some(EngineError::Misaligned)
        );
        let mut arena = AlignedBytes::zeroed(need);
        let mut e = Engine::new(&bundle, arena.as_mut_slice(), mode).unwrap();
        let x = &net.inputs(1, s)[0];
        let mut logits = [0.0f32; 8];
        assert_eq!(e.infer(x, &mut logits), Err(EngineError::NoDepartment));
        assert_eq!(
            e.select(3),
            Err(EngineError::UnknownDepartment { index: 3, count: 3 })
        );
        e.select(1).unwrap();
        assert_eq!(
            e.infer(&x[1..], &mut logits),
            Err(EngineError::InputSize {
                expected: x.len(),
                got: x.len() - 1
            })
        );
        assert_eq!(
            e.infer(x, &mut logits[..2]),
            Err(EngineError::LogitsSize { needed: 5, got: 2 })
        );
        assert_eq!(e.infer(x, &mut logits), Ok(5));
        // A department blob from the bundle itself works through select_blob.
        e.select_blob(bundle.department(2).unwrap()).unwrap();
        assert_eq!(e.infer(x, &mut logits), Ok(3));
    }
}

/// A net whose last convs are wide at few pixels, where the `auto` plan streams some expert
/// convs and rebuilds the others.
fn mixed_plan_net(s: u64) -> TestNet {
    TestNet::random(
        NetSpec {
            size: 16,
            c0: 8,
            cb: 64,
            features: 256,
            rank: 2,
            ..NetSpec::small()
        },
        s,
    )
}

/// The `auto` plan on a net where it mixes: some experts stream, the rest are rebuilt (the
/// stem, k = 3, never streams); the arena and the weight RAM shrink by the streamed slots;
/// f32 logits match the naive reference for every department, select A, B, A is
/// bit-identical; int8 agrees with Materialized as closely as Streaming does.
#[test]
fn auto_plan_streams_the_few_pixel_experts_and_rebuilds_the_rest() {
    use lorkd_runtime::format::plan::{self, Plan};
    let s = seed();
    let net = mixed_plan_net(s);
    let fbytes = AlignedBytes::new(&net.bundle_f32());
    let fb = Bundle::parse(fbytes.as_slice()).unwrap();
    // The plan's invariants for one bundle; returns how many experts it streams.
    let check_plan = |b: &Bundle<'_>| -> usize {
        let m = b.manifest();
        let p = Plan::new(m, Mode::Auto);
        let experts: Vec<_> = plan::experts(m).collect();
        let streamed: Vec<_> = experts.iter().filter(|e| p.streams_expert(e)).collect();
        println!(
            "{:?} auto streams {:?} of {} experts",
            m.precision,
            streamed
                .iter()
                .map(|e| (e.op, e.cout, e.cin, e.hw))
                .collect::<Vec<_>>(),
            experts.len()
        );
        assert!(streamed.len() < experts.len(), "the stem is never streamed");
        assert!(streamed.iter().all(|e| e.k == 1));
        // Streamed experts are the cheapest to stream: every rebuilt 1x1 expert has a ratio
        // at least every streamed one's (equal: a tie split in graph order, the streamed
        // first), every expert below `ALWAYS` streams, and the rest fit the budget on top.
        let worst = streamed.iter().map(|e| e.cost.ratio()).max().unwrap_or(0);
        for e in experts.iter().filter(|e| !p.streams_expert(e) && e.k == 1) {
            assert!(e.cost.ratio() >= worst, "{e:?}");
            assert!(e.cost.ratio() >= plan::ALWAYS, "{e:?}");
            if e.cost.ratio() == worst {
                assert!(streamed
                    .iter()
                    .all(|s| s.cost.ratio() < worst || s.op < e.op));
            }
        }
        let added: u64 = streamed.iter().map(|e| e.cost.stream).sum();
        let always: u64 = (experts.iter())
            .filter(|e| e.k == 1 && e.cost.ratio() < plan::ALWAYS)
            .map(|e| e.cost.stream)
            .sum();
        assert!(added <= always + plan::inference_cost(m) / plan::INFER_BUDGET);
        // A streamed expert holds no weight RAM.
        let ram = |mode: Mode| {
            let mut a = AlignedBytes::zeroed(b.arena_bytes(mode));
            Engine::new(b, a.as_mut_slice(), mode)
                .unwrap()
                .weight_ram_bytes()
        };
        if !streamed.is_empty() {
            let (wa, wm) = (ram(Mode::Auto), ram(Mode::Materialized));
            assert!(wa < wm, "{wa} vs {wm}");
            assert!(b.arena_bytes(Mode::Auto) < b.arena_bytes(Mode::Materialized));
        }
        streamed.len()
    };
    let f32_streams = check_plan(&fb);
    let xs = net.inputs(4, s ^ 7);
    let mut aa = AlignedBytes::zeroed(fb.arena_bytes(Mode::Auto));
    let mut ea = Engine::new(&fb, aa.as_mut_slice(), Mode::Auto).unwrap();
    for x in &xs {
        for t in 0..3 {
            ea.select(t).unwrap();
            let a = run(&mut ea, x);
            assert!(close(&a, &reference(&net, t, x), 1e-4), "dept {t}");
        }
        ea.select(0).unwrap();
        let a = run(&mut ea, x);
        ea.select(1).unwrap();
        ea.select(0).unwrap();
        assert_eq!(bits(&a), bits(&run(&mut ea, x)), "select A, B, A");
    }
    drop(ea);

    let calib = net.inputs(32, s ^ 8);
    let qbytes = AlignedBytes::new(&net.bundle_int8(&ranges(&fb, 3, &calib)));
    let qb = Bundle::parse(qbytes.as_slice()).unwrap();
    let int8_streams = check_plan(&qb);
    if f32_streams == 0 || int8_streams == 0 {
        // A target that prices streaming high (`plan::STREAM_SCALE`, x86_64's f32 layout
        // term) may fit no expert of this small net in its budget; the mixing is checked
        // where the plan streams (f32: on the Arm targets, whose CI step runs this test).
        println!(
            "SKIPPED the mixed-plan checks of {}: this target's plan streams nothing here",
            if f32_streams == 0 { "f32" } else { "int8" }
        );
    }
    assert!(
        f32_streams + int8_streams > 0,
        "neither plan mixes: the test needs another net"
    );
    let engine = |mode: Mode| AlignedBytes::zeroed(qb.arena_bytes(mode));
    let (mut a1, mut a2, mut a3) = (
        engine(Mode::Materialized),
        engine(Mode::Streaming),
        engine(Mode::Auto),
    );
    let mut em = Engine::new(&qb, a1.as_mut_slice(), Mode::Materialized).unwrap();
    let mut es = Engine::new(&qb, a2.as_mut_slice(), Mode::Streaming).unwrap();
    let mut ea = Engine::new(&qb, a3.as_mut_slice(), Mode::Auto).unwrap();
    let (mut worst_auto, mut worst_stream, mut scale) = (0.0f32, 0.0f32, 1e-3f32);
    let worst =
        |w: f32, a: &[f32], b: &[f32]| a.iter().zip(b).fold(w, |m, (p, q)| m.max((p - q).abs()));
    for x in &net.inputs(30, s ^ 9) {
        for t in 0..3 {
            em.select(t).unwrap();
            es.select(t).unwrap();
            ea.select(t).unwrap();
            let (qm, qs, qa) = (run(&mut em, x), run(&mut es, x), run(&mut ea, x));
            scale = qm.iter().fold(scale, |m, v| m.max(v.abs()));
            worst_auto = worst(worst_auto, &qm, &qa);
            worst_stream = worst(worst_stream, &qm, &qs);
        }
    }
    let x = &xs[0];
    ea.select(2).unwrap();
    let a = run(&mut ea, x);
    ea.select(0).unwrap();
    ea.select(2).unwrap();
    assert_eq!(bits(&a), bits(&run(&mut ea, x)), "int8 select A, B, A");
    println!(
        "int8 |auto − materialized| ≤ {:.4}, |streaming − materialized| ≤ {:.4} of the logit scale",
        worst_auto / scale,
        worst_stream / scale
    );
    // The same bound as Streaming's (int8_switch_is_exact_and_agrees_with_f32).
    assert!(worst_auto / scale < 0.1, "{}", worst_auto / scale);
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}
