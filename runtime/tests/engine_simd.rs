//! Every slot of `Kernels::best()` (the SIMD twins this CPU runs) against the scalar
//! reference on random odd shapes — channel counts around the lane widths — with one macro
//! per element type: int8 bit-exact, f32 within the reassociation bound
//! `|simd − ref| ≤ 2·cin·ε·(|b| + Σ|w·x|)`. On a CPU without twins both sides are the
//! reference and the tests still run.
use lorkd_runtime::engine::testnet::{AlignedBytes, NetSpec, TestNet};
use lorkd_runtime::engine::Engine;
use lorkd_runtime::format::{Bundle, Mode};
use lorkd_runtime::kernels::{Geom, Kernels, OutQ};
use lorkd_runtime::quant::ChannelRequant;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn rng() -> ChaCha8Rng {
    let s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    println!("seed = {s}, best kernels = {:?}", Kernels::best());
    ChaCha8Rng::seed_from_u64(s)
}

const CHANNELS: &[usize] = &[1, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 58, 116];

fn geom(r: &mut ChaCha8Rng) -> Geom {
    let cin = CHANNELS[r.gen_range(0..CHANNELS.len())];
    let extra = r.gen_range(0..3);
    let (h, w) = (r.gen_range(1..6), r.gen_range(1..6));
    let stride = r.gen_range(1..3);
    let cout = r.gen_range(1..20);
    Geom {
        h,
        w,
        in_stride: cin + extra,
        c_off: r.gen_range(0..=extra),
        cin,
        ho: Geom::out_dim(h, 1, stride, 0),
        wo: Geom::out_dim(w, 1, stride, 0),
        cout,
        k: 1,
        stride,
        pad: 0,
    }
}

macro_rules! cross_test {
    ($name:ident, $slot:ident, i8) => {
        #[test]
        fn $name() {
            let mut r = rng();
            let (best, refk) = (Kernels::best(), Kernels::reference());
            for _ in 0..500 {
                let g = geom(&mut r);
                let x: Vec<i8> = (0..g.in_len()).map(|_| r.gen()).collect();
                let w: Vec<i8> = (0..g.cout * g.cin)
                    .map(|_| r.gen_range(-127..=127))
                    .collect();
                let rq: Vec<[i32; 3]> = (0..g.cout)
                    .map(|_| {
                        ChannelRequant::new(
                            r.gen_range(-1.0..1.0),
                            0.02,
                            r.gen_range(0.001..0.01),
                            0.05,
                        )
                        .to_array()
                    })
                    .collect();
                let zx = r.gen_range(-128..=127);
                let q = OutQ {
                    zero_point: r.gen_range(-128..=127),
                    lo: -128,
                };
                let (mut a, mut b) = (vec![0i8; g.out_len()], vec![0i8; g.out_len()]);
                (best.$slot)(&g, &x, zx, &w, &rq, q, &mut a);
                (refk.$slot)(&g, &x, zx, &w, &rq, q, &mut b);
                assert_eq!(a, b, "{g:?}");
            }
        }
    };
    ($name:ident, $slot:ident, f32) => {
        #[test]
        fn $name() {
            let mut r = rng();
            let (best, refk) = (Kernels::best(), Kernels::reference());
            for _ in 0..500 {
                let g = geom(&mut r);
                let x: Vec<f32> = (0..g.in_len()).map(|_| r.gen_range(-2.0..2.0)).collect();
                let w: Vec<f32> = (0..g.cout * g.cin)
                    .map(|_| r.gen_range(-1.0..1.0))
                    .collect();
                let bias: Vec<f32> = (0..g.cout).map(|_| r.gen_range(-1.0..1.0)).collect();
                let relu = r.gen_bool(0.5);
                let (mut a, mut b) = (vec![0.0; g.out_len()], vec![0.0; g.out_len()]);
                (best.$slot)(&g, &x, &w, &bias, relu, &mut a);
                (refk.$slot)(&g, &x, &w, &bias, relu, &mut b);
                for (i, (p, q)) in a.iter().zip(&b).enumerate() {
                    let (pix, o) = (i / g.cout, i % g.cout);
                    let (oy, ox) = (pix / g.wo, pix % g.wo);
                    let base = (oy * g.stride * g.w + ox * g.stride) * g.in_stride + g.c_off;
                    let mag: f32 = bias[o].abs()
                        + (0..g.cin)
                            .map(|c| (w[o * g.cin + c] * x[base + c]).abs())
                            .sum::<f32>();
                    assert!(
                        (p - q).abs() <= 2.0 * g.cin as f32 * f32::EPSILON * mag,
                        "{g:?} {i}: {p} vs {q}"
                    );
                }
            }
        }
    };
}

cross_test!(conv1x1_i8_twin_is_bit_exact, conv1x1_i8, i8);
cross_test!(conv1x1_f32_twin_within_bound, conv1x1_f32, f32);

#[test]
fn engine_with_best_kernels_matches_reference_kernels() {
    let mut r = rng();
    let seed: u64 = r.gen();
    let net = TestNet::random(
        NetSpec {
            cb: 17,
            features: 33,
            ..NetSpec::small()
        },
        seed,
    );
    let fbytes = AlignedBytes::new(&net.bundle_f32());
    let fb = Bundle::parse(fbytes.as_slice()).unwrap();
    let ranges: Vec<Vec<(f32, f32)>> = (0..3)
        .map(|_| net.values.iter().map(|_| (-4.0, 4.0)).collect())
        .collect();
    let qbytes = AlignedBytes::new(&net.bundle_int8(&ranges));
    let qb = Bundle::parse(qbytes.as_slice()).unwrap();
    for (bundle, exact) in [(&fb, false), (&qb, true)] {
        for mode in [Mode::Materialized, Mode::Streaming] {
            let mut a1 = AlignedBytes::zeroed(bundle.arena_bytes(mode));
            let mut a2 = AlignedBytes::zeroed(bundle.arena_bytes(mode));
            let mut e1 = Engine::new(bundle, a1.as_mut_slice(), mode).unwrap();
            let mut e2 = Engine::new(bundle, a2.as_mut_slice(), mode).unwrap();
            e2.set_kernels(Kernels::reference());
            for (t, x) in net.inputs(3, seed).iter().enumerate() {
                e1.select(t).unwrap();
                e2.select(t).unwrap();
                let (mut l1, mut l2) = ([0.0f32; 8], [0.0f32; 8]);
                let n = e1.infer(x, &mut l1).unwrap();
                e2.infer(x, &mut l2).unwrap();
                if exact {
                    assert_eq!(l1[..n], l2[..n], "{mode:?}");
                } else {
                    assert!(
                        l1[..n]
                            .iter()
                            .zip(&l2[..n])
                            .all(|(p, q)| (p - q).abs() <= 1e-4 * (1.0 + p.abs())),
                        "{mode:?}"
                    );
                }
            }
        }
    }
}
