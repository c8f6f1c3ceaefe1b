//! Every slot of every SIMD table this CPU runs (`Kernels::available()`: e.g. AVX2, or NEON
//! with and without `sdot`) against the scalar reference on random odd shapes — channel
//! counts around the lane widths, strides 1 and 2, padding — with one macro per element
//! type: int8 bit-exact, f32 within the reassociation bound
//! `|simd − ref| ≤ 2·n·ε·(|b| + Σ|w·x|)`, `n` the dot length (`cin·k·k`, or 9 taps for
//! depthwise). On a CPU without twins the loops are empty. The seed is printed.
mod common;

use lorkd_runtime::engine::testnet::{NetSpec, TestNet};
use lorkd_runtime::engine::Engine;
use lorkd_runtime::format::{Bundle, Mode};
use lorkd_runtime::kernels::{ConvI8, Geom, Kernels, OutQ};
use lorkd_runtime::quant::ChannelRequant;
use lorkd_runtime::AlignedBytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn rng() -> ChaCha8Rng {
    let s = common::seed();
    println!("kernels = {:?}", Kernels::available());
    ChaCha8Rng::seed_from_u64(s)
}

const CHANNELS: &[usize] = &[1, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 58, 116];

/// The shape families: pointwise, depthwise 3x3 (stride 1 or 2), the k×k stem.
#[derive(Clone, Copy, Debug)]
enum Family {
    Pointwise,
    Depthwise,
    Stem,
}

fn geom(r: &mut ChaCha8Rng, f: Family) -> Geom {
    let cin = match f {
        // The stem's patch `cin·9` must stay ≤ `conv::PATCH` for the SIMD path; bigger ones
        // (up to 31·9) exercise the fallback.
        Family::Stem => r.gen_range(1..32),
        // A few pointwise inputs wider than the 1024 channels of the x86 int8 outer-product
        // path's stack buffers (its dot-product fallback).
        Family::Pointwise if r.gen_range(0..100) == 0 => r.gen_range(1025..1030),
        _ => CHANNELS[r.gen_range(0..CHANNELS.len())],
    };
    let extra = r.gen_range(0..3);
    let (h, w) = match f {
        // Now and then a wide row: several strips of the x86 stem's row buffers.
        Family::Stem if r.gen_range(0..6) == 0 => (r.gen_range(1..4), r.gen_range(100..400)),
        _ => (r.gen_range(1..8), r.gen_range(1..8)),
    };
    let stride = r.gen_range(1..3);
    let (k, pad, cout) = match f {
        // Mostly narrow; some wider than the 64-channel requant blocks, a few wider than
        // the 1024 channels the x86 requant transposes on the stack (the gather fallback).
        Family::Pointwise => {
            let cout = match r.gen_range(0..100) {
                0..=1 => r.gen_range(1025..1040),
                2..=21 => r.gen_range(60..140),
                _ => r.gen_range(1..20),
            };
            (1, 0, cout)
        }
        Family::Depthwise => (3, 1, cin),
        Family::Stem => (3, r.gen_range(0..2), r.gen_range(1..40)),
    };
    Geom {
        h,
        w,
        in_stride: cin + extra,
        c_off: r.gen_range(0..=extra),
        cin,
        ho: Geom::out_dim(h, k, stride, pad),
        wo: Geom::out_dim(w, k, stride, pad),
        cout,
        k,
        stride,
        pad,
    }
}

/// Weights of a problem: `[cout, cin, k, k]`, or `[3, 3, C]` for depthwise.
fn wlen(g: &Geom, f: Family) -> usize {
    match f {
        Family::Depthwise => 9 * g.cout,
        _ => g.cout * g.cin * g.k * g.k,
    }
}

/// `|b| + Σ|w·x|` of output `(pix, o)`: the scale of the f32 rounding bound.
fn magnitude(g: &Geom, f: Family, x: &[f32], w: &[f32], b: f32, pix: usize, o: usize) -> f32 {
    let (oy, ox) = (pix / g.wo, pix % g.wo);
    let mut m = b.abs();
    for ky in 0..g.k {
        for kx in 0..g.k {
            let (iy, ix) = (
                (oy * g.stride + ky) as isize - g.pad as isize,
                (ox * g.stride + kx) as isize - g.pad as isize,
            );
            if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                continue;
            }
            let base = (iy as usize * g.w + ix as usize) * g.in_stride + g.c_off;
            match f {
                Family::Depthwise => m += (w[(ky * 3 + kx) * g.cout + o] * x[base + o]).abs(),
                _ => {
                    for c in 0..g.cin {
                        let wi = ((o * g.cin + c) * g.k + ky) * g.k + kx;
                        m += (w[wi] * x[base + c]).abs();
                    }
                }
            }
        }
    }
    m
}

/// `cout` requantisation rows `[bias, multiplier, shift]` of a conv with input scale 0.02,
/// biases in ±1, weight scales drawn from `ws` and output scale `s_y`.
fn rq_rows(r: &mut ChaCha8Rng, cout: usize, ws: std::ops::Range<f32>, s_y: f32) -> Vec<[i32; 3]> {
    (0..cout)
        .map(|_| {
            ChannelRequant::new(r.gen_range(-1.0..1.0), 0.02, r.gen_range(ws.clone()), s_y)
                .to_array()
        })
        .collect()
}

/// `n` int8 weights in one of three forms: 0 the whole range, 1 the packer's ±127 (the
/// product-pair paths), 2 those with one −128 planted (its block falls back); with `ends`
/// only the extremes of the form (−128 / 127, or ±127).
fn weight_form(r: &mut ChaCha8Rng, n: usize, form: u8, ends: bool) -> Vec<i8> {
    let mut w: Vec<i8> = (0..n)
        .map(|_| match (ends, form) {
            (true, 0) => [-128, 127][r.gen_range(0..2)],
            (true, _) => [-127, 127][r.gen_range(0..2)],
            (false, 0) => r.gen(),
            _ => r.gen_range(-127..=127),
        })
        .collect();
    if form == 2 {
        let at = r.gen_range(0..w.len());
        w[at] = -128;
    }
    w
}

/// The int8 output stage with zero point `zy`: under a fused ReLU (the floor at `zy`) half
/// the time, else the plain −128 floor.
fn out_q(r: &mut ChaCha8Rng, zy: i32) -> OutQ {
    OutQ {
        zero_point: zy,
        lo: if r.gen_bool(0.5) { zy } else { -128 },
    }
}

/// The output bytes of int8 conv slot `best` (a twin's) and of the reference's slot
/// `reference` on the same arguments: `(twin, reference)`.
#[allow(clippy::too_many_arguments)]
fn both_i8(
    best: ConvI8,
    reference: ConvI8,
    g: &Geom,
    x: &[i8],
    zx: i32,
    w: &[i8],
    rq: &[[i32; 3]],
    q: OutQ,
) -> (Vec<i8>, Vec<i8>) {
    let (mut a, mut b) = (vec![0i8; g.out_len()], vec![0i8; g.out_len()]);
    best(g, x, zx, w, rq, q, &mut a);
    reference(g, x, zx, w, rq, q, &mut b);
    (a, b)
}

/// Every SIMD table this CPU runs (the reference itself excluded); says loudly which x86_64
/// table this CPU cannot check (the AVX-512 one needs AVX-512 F/BW/VL/VNNI).
fn twins() -> Vec<Kernels> {
    let t: Vec<Kernels> = Kernels::available()
        .into_iter()
        .flatten()
        .filter(|k| k.isa != "reference")
        .collect();
    if cfg!(target_arch = "x86_64") && !t.iter().any(|k| k.isa == "x86_64-avx512") {
        println!("SKIPPED x86_64-avx512: this CPU has no AVX-512 (F/BW/VL/VNNI), its twins are not checked here");
    }
    t
}

macro_rules! cross_test {
    ($name:ident, $slot:ident, $fam:expr, i8) => {
        #[test]
        fn $name() {
            let mut r = rng();
            let refk = Kernels::reference();
            for best in twins() {
                for _ in 0..400 {
                    let g = geom(&mut r, $fam);
                    let x: Vec<i8> = (0..g.in_len()).map(|_| r.gen()).collect();
                    let w: Vec<i8> = (0..wlen(&g, $fam))
                        .map(|_| r.gen_range(-127..=127))
                        .collect();
                    let rq = rq_rows(&mut r, g.cout, 0.001..0.01, 0.05);
                    let zx = r.gen_range(-128..=127);
                    let zy = r.gen_range(-128..=127);
                    let q = out_q(&mut r, zy);
                    let (a, b) = both_i8(best.$slot, refk.$slot, &g, &x, zx, &w, &rq, q);
                    assert_eq!(a, b, "{best:?} {g:?}");
                }
            }
        }
    };
    ($name:ident, $slot:ident, $fam:expr, f32) => {
        #[test]
        fn $name() {
            let mut r = rng();
            let refk = Kernels::reference();
            for best in twins() {
                for _ in 0..400 {
                    let g = geom(&mut r, $fam);
                    let x: Vec<f32> = (0..g.in_len()).map(|_| r.gen_range(-2.0..2.0)).collect();
                    let w: Vec<f32> = (0..wlen(&g, $fam))
                        .map(|_| r.gen_range(-1.0..1.0))
                        .collect();
                    let bias: Vec<f32> = (0..g.cout).map(|_| r.gen_range(-1.0..1.0)).collect();
                    let relu = r.gen_bool(0.5);
                    let (mut a, mut b) = (vec![0.0; g.out_len()], vec![0.0; g.out_len()]);
                    (best.$slot)(&g, &x, &w, &bias, relu, &mut a);
                    (refk.$slot)(&g, &x, &w, &bias, relu, &mut b);
                    let n = (wlen(&g, $fam) / g.cout).max(1) as f32;
                    for (i, (p, q)) in a.iter().zip(&b).enumerate() {
                        let mag =
                            magnitude(&g, $fam, &x, &w, bias[i % g.cout], i / g.cout, i % g.cout);
                        assert!(
                            (p - q).abs() <= 2.0 * n * f32::EPSILON * mag,
                            "{best:?} {g:?} {i}: {p} vs {q}"
                        );
                    }
                }
            }
        }
    };
}

cross_test!(
    conv1x1_i8_twin_is_bit_exact,
    conv1x1_i8,
    Family::Pointwise,
    i8
);
cross_test!(
    conv1x1_f32_twin_within_bound,
    conv1x1_f32,
    Family::Pointwise,
    f32
);
cross_test!(
    dwconv3x3_i8_twin_is_bit_exact,
    dwconv3x3_i8,
    Family::Depthwise,
    i8
);
/// The pointwise int8 twins on the shapes the packed `sdot` path and the lone-pixel path
/// take on aarch64 (more than 4 pixels, or one; `cin` a multiple of 4 in 16..=256; `cout` a
/// multiple of 4: blocks of 16 channels and their 4-, 8- and 12-channel tails, row tails of
/// 4, 8 and 12 bytes) and their neighbours, with weights and inputs over the whole i8 range,
/// zero points at both ends and output stages of every form (left shifts, zero right
/// shifts, zero points outside i8), against the reference. A third of the weights are the
/// packer's (±127, the plain-NEON product-pair path), a third those plus one −128 (its
/// block falls back to the widened path, the others not), and a tenth of the problems take
/// only the extremes (weights ±127, inputs −128 / 127: two products a lane at ±32512; or
/// weights −128 / 127, where two products make 32768 and only the fallback is exact).
#[test]
fn conv1x1_i8_twin_is_bit_exact_on_packed_shapes() {
    let mut r = rng();
    let refk = Kernels::reference();
    for best in twins() {
        for _ in 0..300 {
            let cin = if r.gen_bool(0.9) {
                4 * r.gen_range(4..=64)
            } else {
                r.gen_range(1..300)
            };
            let cout = if r.gen_bool(0.9) {
                4 * r.gen_range(1..=20)
            } else {
                r.gen_range(1..80)
            };
            let (extra, stride) = (r.gen_range(0..3), r.gen_range(1..3));
            // A fifth are lone pixels (the matrix-times-vector path).
            let (h, w) = if r.gen_bool(0.2) {
                (1, 1)
            } else {
                (r.gen_range(1..9), r.gen_range(1..9))
            };
            let g = Geom {
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
            };
            let ends = r.gen_bool(0.1);
            let x: Vec<i8> = (0..g.in_len())
                .map(|_| match ends {
                    true => [-128, 127][r.gen_range(0..2)],
                    false => r.gen(),
                })
                .collect();
            let form = r.gen_range(0..3);
            let wq = weight_form(&mut r, cout * cin, form, ends);
            // Output scales from far below to above the product of the input scales: right
            // shifts of 1..16, of 0 (multiplier in [1/2, 1)) and left shifts.
            let s_y = [0.05, 1e-4, 2e-5, 1e-6][r.gen_range(0..4)];
            let rq = rq_rows(&mut r, cout, 0.001..0.01, s_y);
            let zx = [-128, 127, r.gen_range(-128..=127)][r.gen_range(0..3)];
            let zy = if r.gen_bool(0.9) {
                r.gen_range(-128..=127)
            } else {
                r.gen_range(-400..400)
            };
            let q = OutQ {
                zero_point: zy,
                lo: if r.gen_bool(0.5) {
                    zy.clamp(-128, 127)
                } else {
                    -128
                },
            };
            let (a, b) = both_i8(best.conv1x1_i8, refk.conv1x1_i8, &g, &x, zx, &wq, &rq, q);
            assert_eq!(a, b, "{best:?} {g:?} zx {zx} zy {zy} s_y {s_y}");
        }
    }
}

/// The int8 stem twins on stem shapes (3×3 and 5×5 kernels over 1–7 input channels, whole
/// groups of 4 output channels, images from 1×1 to 40×40 so that chunks of patches and
/// their tails run, and rows up to 700 wide (several strips of the x86 row buffers),
/// strides 1 and 2, padding 0..=k/2, dense and offset inputs), with the packer's weights
/// (±127: aarch64's product-pair path), those plus one −128 (its block falls back), or the
/// whole range, against the reference. Seed: `LORKD_SEED`.
#[test]
fn conv_i8_twin_is_bit_exact_on_stem_shapes() {
    let mut r = rng();
    let refk = Kernels::reference();
    for best in twins() {
        for _ in 0..150 {
            let k = if r.gen_bool(0.8) { 3 } else { 5 };
            let cin = r.gen_range(1..=7);
            let cout = 4 * r.gen_range(1..=10);
            let (h, w) = match r.gen_range(0..10) {
                0 | 1 => (r.gen_range(1..6), r.gen_range(1..6)),
                // Wide rows: the x86 int8 stem buffers input rows in strips of columns.
                2 => (r.gen_range(1..5), r.gen_range(120..=700)),
                _ => (r.gen_range(6..=40), r.gen_range(6..=40)),
            };
            let (stride, pad) = (r.gen_range(1..3), r.gen_range(0..=k / 2));
            let extra = if r.gen_bool(0.7) {
                0
            } else {
                r.gen_range(1..3)
            };
            let g = Geom {
                h,
                w,
                in_stride: cin + extra,
                c_off: r.gen_range(0..=extra),
                cin,
                ho: Geom::out_dim(h, k, stride, pad),
                wo: Geom::out_dim(w, k, stride, pad),
                cout,
                k,
                stride,
                pad,
            };
            if g.ho == 0 || g.wo == 0 {
                continue;
            }
            let x: Vec<i8> = (0..g.in_len()).map(|_| r.gen()).collect();
            let form = r.gen_range(0..3);
            let wq = weight_form(&mut r, cout * cin * k * k, form, false);
            let rq = rq_rows(&mut r, cout, 0.001..0.01, 0.05);
            let zx = [-128, 127, r.gen_range(-128..=127)][r.gen_range(0..3)];
            let zy = r.gen_range(-128..=127);
            let q = out_q(&mut r, zy);
            let (a, b) = both_i8(best.conv_i8, refk.conv_i8, &g, &x, zx, &wq, &rq, q);
            assert_eq!(a, b, "{best:?} {g:?} zx {zx} form {form}");
        }
    }
}

/// The pointwise int8 twins where two products of one i16 lane would overflow: weights
/// mostly −128 and inputs mostly −128 (`(−128)·(−128) + (−128)·(−128) = 32768`), on the
/// packed shapes. Every pixel reads the same input and each channel's bias is minus its
/// exact sum, so the reference writes the zero point everywhere and an accumulator off by
/// any multiple of 2^16 saturates instead: a path that let such a lane wrap (the product
/// pairs without their −128 fallback) fails here, where random scales would clamp it away.
#[test]
fn conv1x1_i8_twin_is_exact_where_product_pairs_overflow_i16() {
    let mut r = rng();
    let refk = Kernels::reference();
    for best in twins() {
        for _ in 0..60 {
            let (cin, cout) = (4 * r.gen_range(4..=64), 4 * r.gen_range(1..=12));
            let (h, w) = (r.gen_range(2..7), r.gen_range(3..7));
            let g = Geom {
                h,
                w,
                in_stride: cin,
                c_off: 0,
                cin,
                ho: h,
                wo: w,
                cout,
                k: 1,
                stride: 1,
                pad: 0,
            };
            let edge = |r: &mut ChaCha8Rng| if r.gen_bool(0.8) { -128i8 } else { 127 };
            let row: Vec<i8> = (0..cin).map(|_| edge(&mut r)).collect();
            let x: Vec<i8> = row.iter().copied().cycle().take(g.in_len()).collect();
            let wq: Vec<i8> = (0..cout * cin).map(|_| edge(&mut r)).collect();
            let rq: Vec<[i32; 3]> = wq
                .chunks(cin)
                .map(|wo| {
                    let acc: i32 = wo
                        .iter()
                        .zip(&row)
                        .map(|(&a, &b)| a as i32 * b as i32)
                        .sum();
                    [-acc, 1 << 30, 1]
                })
                .collect();
            let q = OutQ {
                zero_point: 0,
                lo: -128,
            };
            let (mut a, mut b) = (vec![1i8; g.out_len()], vec![1i8; g.out_len()]);
            (refk.conv1x1_i8)(&g, &x, 0, &wq, &rq, q, &mut b);
            assert!(b.iter().all(|&v| v == 0), "the reference's sums cancel");
            (best.conv1x1_i8)(&g, &x, 0, &wq, &rq, q, &mut a);
            assert_eq!(a, b, "{best:?} {g:?}");
        }
    }
}

/// The depthwise twins at the int8 edges: weights over the whole i8 range with runs of
/// −128 (where two products no longer sum in i16), inputs biased to −128 and zero points at
/// both ends, against the reference.
#[test]
fn dwconv3x3_i8_twin_is_bit_exact_at_the_edges() {
    let mut r = rng();
    let refk = Kernels::reference();
    for best in twins() {
        for _ in 0..300 {
            let g = geom(&mut r, Family::Depthwise);
            let x: Vec<i8> = (0..g.in_len())
                .map(|_| if r.gen_bool(0.5) { i8::MIN } else { r.gen() })
                .collect();
            let minus = r.gen_range(0.0..0.6);
            let w: Vec<i8> = (0..9 * g.cout)
                .map(|_| if r.gen_bool(minus) { i8::MIN } else { r.gen() })
                .collect();
            let rq = rq_rows(&mut r, g.cout, 0.0005..0.01, 0.05);
            let zx = [-128, 127, r.gen_range(-128..=127)][r.gen_range(0..3)];
            let zy = r.gen_range(-128..=127);
            let q = out_q(&mut r, zy);
            let (a, b) = both_i8(best.dwconv3x3_i8, refk.dwconv3x3_i8, &g, &x, zx, &w, &rq, q);
            assert_eq!(a, b, "{best:?} {g:?} zx {zx}");
        }
    }
}

cross_test!(
    dwconv3x3_f32_twin_within_bound,
    dwconv3x3_f32,
    Family::Depthwise,
    f32
);
cross_test!(conv_i8_twin_is_bit_exact, conv_i8, Family::Stem, i8);
cross_test!(conv_f32_twin_within_bound, conv_f32, Family::Stem, f32);

/// A random channel part `(c0, m)` of a `cout`-channel conv as the threads cut it: `c0` a
/// multiple of 16, `m` a multiple of 16 or the rest; `None` when empty.
fn channel_part(r: &mut ChaCha8Rng, cout: usize) -> Option<(usize, usize)> {
    let c0 = r.gen_range(0..=cout / 16) * 16;
    let m = if c0 < cout && r.gen_bool(0.5) {
        cout - c0
    } else {
        r.gen_range(0..=(cout - c0) / 16) * 16
    };
    (m > 0).then_some((c0, m))
}

/// Channels `c0 .. c0 + m` of every pixel of a dense `[pixels, cout]` output.
fn channels<T: Copy>(y: &[T], cout: usize, (c0, m): (usize, usize)) -> Vec<T> {
    y.chunks_exact(cout)
        .flat_map(|px| px[c0..c0 + m].iter().copied())
        .collect()
}

/// A table's pre-packed pointwise f32 conv on its `pack`ed weights gives the bits of the
/// table's row conv, for the whole conv and for channel parts cut at multiples of 16 (the
/// threads' split) out of the packed weights.
#[test]
fn packed_conv1x1_f32_is_the_row_conv() {
    let mut r = rng();
    let mut checked = 0;
    for k in twins() {
        let Some(p) = k.conv1x1_f32_packed else {
            println!("{k:?}: no packed pointwise f32 conv");
            continue;
        };
        for _ in 0..300 {
            let mut g = geom(&mut r, Family::Pointwise);
            if r.gen_bool(0.3) {
                // Whole panels, a short tail, and groups of panels past the stack store.
                g.cout = [16, 32, 48, 232, 240, 464, 1024][r.gen_range(0..7)] + r.gen_range(0..3);
            }
            let x: Vec<f32> = (0..g.in_len()).map(|_| r.gen_range(-2.0..2.0)).collect();
            let w: Vec<f32> = (0..g.cout * g.cin)
                .map(|_| r.gen_range(-1.0..1.0))
                .collect();
            let bias: Vec<f32> = (0..g.cout).map(|_| r.gen_range(-1.0..1.0)).collect();
            let relu = r.gen_bool(0.5);
            let mut packed = w.clone();
            (p.pack)(g.cout, g.cin, &mut packed);
            if g.cout >= 16 && (2..=1024).contains(&g.cin) {
                assert_ne!(packed, w, "{g:?}: nothing was packed");
            }
            let (mut a, mut b) = (vec![0.0f32; g.out_len()], vec![0.0f32; g.out_len()]);
            (k.conv1x1_f32)(&g, &x, &w, &bias, relu, &mut a);
            (p.conv)(&g, &x, &packed, &bias, relu, &mut b);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&a), bits(&b), "{k:?} {g:?}");
            // A part: channels c0 .. c0 + m of the packed weights.
            let Some((c0, m)) = channel_part(&mut r, g.cout) else {
                continue;
            };
            let sub = Geom { cout: m, ..g };
            let mut part = vec![0.0f32; sub.out_len()];
            let wp = &packed[c0 * g.cin..(c0 + m) * g.cin];
            (p.conv)(&sub, &x, wp, &bias[c0..c0 + m], relu, &mut part);
            let whole = channels(&a, g.cout, (c0, m));
            assert_eq!(bits(&part), bits(&whole), "{k:?} {g:?} part {c0}+{m}");
            checked += 1;
        }
    }
    if twins().iter().all(|k| k.conv1x1_f32_packed.is_none()) {
        println!("skipped: no kernel table on this CPU has a packed pointwise f32 conv");
    } else {
        assert!(checked > 100, "{checked}");
    }
}

/// The x86_64 AVX-512 table's pointwise f32 convs and f32 stem (16-lane FMA tiles) give the
/// AVX2 table's bits, rows and packed, on random shapes: every lane sums in the same order.
#[test]
fn avx512_f32_convs_are_the_avx2_bits() {
    let t = twins();
    let (Some(a2), Some(a5)) = (
        t.iter().find(|k| k.isa == "x86_64-avx2"),
        t.iter().find(|k| k.isa == "x86_64-avx512"),
    ) else {
        println!("SKIPPED avx512_f32_convs_are_the_avx2_bits: no AVX-512 table on this CPU");
        return;
    };
    let (p2, p5) = (
        a2.conv1x1_f32_packed.unwrap(),
        a5.conv1x1_f32_packed.unwrap(),
    );
    let mut r = rng();
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    for _ in 0..300 {
        let mut g = geom(&mut r, Family::Pointwise);
        if r.gen_bool(0.3) {
            g.cout = [16, 58, 116, 232, 464, 1024][r.gen_range(0..6)] + r.gen_range(0..3);
        }
        let x: Vec<f32> = (0..g.in_len()).map(|_| r.gen_range(-2.0..2.0)).collect();
        let w: Vec<f32> = (0..g.cout * g.cin)
            .map(|_| r.gen_range(-1.0..1.0))
            .collect();
        let bias: Vec<f32> = (0..g.cout).map(|_| r.gen_range(-1.0..1.0)).collect();
        let relu = r.gen_bool(0.5);
        let (mut a, mut b) = (vec![0.0f32; g.out_len()], vec![f32::NAN; g.out_len()]);
        (a2.conv1x1_f32)(&g, &x, &w, &bias, relu, &mut a);
        (a5.conv1x1_f32)(&g, &x, &w, &bias, relu, &mut b);
        assert_eq!(bits(&a), bits(&b), "rows {g:?}");
        let (mut w2, mut w5) = (w.clone(), w.clone());
        (p2.pack)(g.cout, g.cin, &mut w2);
        (p5.pack)(g.cout, g.cin, &mut w5);
        b.fill(f32::NAN);
        (p5.conv)(&g, &x, &w5, &bias, relu, &mut b);
        assert_eq!(bits(&a), bits(&b), "packed {g:?}");
    }
    // The k×k stem likewise (16-lane tiles, the same order per lane).
    for _ in 0..200 {
        let g = geom(&mut r, Family::Stem);
        let x: Vec<f32> = (0..g.in_len()).map(|_| r.gen_range(-2.0..2.0)).collect();
        let w: Vec<f32> = (0..wlen(&g, Family::Stem))
            .map(|_| r.gen_range(-1.0..1.0))
            .collect();
        let bias: Vec<f32> = (0..g.cout).map(|_| r.gen_range(-1.0..1.0)).collect();
        let relu = r.gen_bool(0.5);
        let (mut a, mut b) = (vec![0.0f32; g.out_len()], vec![f32::NAN; g.out_len()]);
        (a2.conv_f32)(&g, &x, &w, &bias, relu, &mut a);
        (a5.conv_f32)(&g, &x, &w, &bias, relu, &mut b);
        assert_eq!(bits(&a), bits(&b), "stem {g:?}");
    }
}

/// A table's pre-packed pointwise int8 conv on its `pack`ed weights gives the bytes of the
/// table's row conv (hence the reference's), for the whole conv — any pixel count, odd
/// `cin` and wide shapes the packer leaves as rows — and for channel parts cut at multiples
/// of 16 out of the packed weights. The weights are as the switch writes them (±127).
#[test]
fn packed_conv1x1_i8_is_the_row_conv() {
    let mut r = rng();
    let mut checked = 0;
    for k in twins() {
        let Some(p) = k.conv1x1_i8_packed else {
            println!("{k:?}: no packed pointwise int8 conv");
            continue;
        };
        let mut packed_some = 0;
        for _ in 0..400 {
            let mut g = geom(&mut r, Family::Pointwise);
            if r.gen_bool(0.5) {
                g.cin = 2 * r.gen_range(1..70);
                g.in_stride = g.cin + r.gen_range(0..3);
                g.c_off = r.gen_range(0..=g.in_stride - g.cin);
            }
            if r.gen_bool(0.3) {
                g.cout = [8, 16, 24, 58, 116, 232, 1024][r.gen_range(0..7)] + r.gen_range(0..3);
            }
            let x: Vec<i8> = (0..g.in_len()).map(|_| r.gen()).collect();
            // The switch's codes (the slot's contract: never −128), a tenth at ±127.
            let ends = r.gen_bool(0.1);
            let w: Vec<i8> = (0..g.cout * g.cin)
                .map(|_| match ends {
                    true => [-127, 127][r.gen_range(0..2)],
                    false => r.gen_range(-127..=127),
                })
                .collect();
            let rq = rq_rows(&mut r, g.cout, 0.001..0.01, 0.05);
            let (zx, zy) = (r.gen_range(-128..=127), r.gen_range(-128..=127));
            let q = out_q(&mut r, zy);
            let mut packed = w.clone();
            (p.pack)(g.cout, g.cin, &mut packed);
            // Each table packs its own shapes (x86_64 AVX2: even `cin` up to 1024 and 8-channel
            // blocks, AVX-512: any `cin` up to 1024 and 16-channel blocks; aarch64 `sdot` and product pairs: `cin` a multiple of 4 in 16..=256 and
            // 4-channel groups); most here are among them.
            packed_some += usize::from(packed != w);
            let (mut a, mut b) = (vec![0i8; g.out_len()], vec![0i8; g.out_len()]);
            (k.conv1x1_i8)(&g, &x, zx, &w, &rq, q, &mut a);
            (p.conv)(&g, &x, zx, &packed, &rq, q, &mut b);
            assert_eq!(a, b, "{k:?} {g:?}");
            let Some((c0, m)) = channel_part(&mut r, g.cout) else {
                continue;
            };
            let sub = Geom { cout: m, ..g };
            let mut part = vec![0i8; sub.out_len()];
            let wp = &packed[c0 * g.cin..(c0 + m) * g.cin];
            (p.conv)(&sub, &x, zx, wp, &rq[c0..c0 + m], q, &mut part);
            let whole = channels(&a, g.cout, (c0, m));
            assert_eq!(part, whole, "{k:?} {g:?} part {c0}+{m}");
            checked += 1;
        }
        // aarch64 packs about a quarter of these shapes (~110 of 400, σ ≈ 9): a tenth is
        // far enough below that to never fail by chance, and still a real check.
        assert!(
            packed_some > 40,
            "{k:?}: only {packed_some} of 400 weights were packed"
        );
    }
    if twins().iter().all(|k| k.conv1x1_i8_packed.is_none()) {
        println!("skipped: no kernel table on this CPU has a packed pointwise int8 conv");
    } else {
        assert!(checked > 100, "{checked}");
    }
}

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
        for mode in Mode::ALL {
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

#[test]
fn requant_weights_twin_is_bit_identical() {
    let mut r = rng();
    let refk = Kernels::reference();
    for best in twins() {
        for case in 0..2000 {
            let n = r.gen_range(1..300);
            let scale = [1e-3f32, 0.05, 1.0, 30.0][case % 4];
            let mut w: Vec<f32> = (0..n).map(|_| r.gen_range(-1.0..1.0) * scale).collect();
            let w0: Vec<i8> = (0..n).map(|_| r.gen_range(-127..=127)).collect();
            let s0 = r.gen_range(0.0..0.02) * scale;
            match case % 10 {
                0 => w.iter_mut().for_each(|v| *v = 0.0), // all-zero delta
                1 => w[r.gen_range(0..n)] = f32::NAN,
                2 => w[r.gen_range(0..n)] = f32::INFINITY,
                _ => {}
            }
            let w0z = if case % 20 == 0 { vec![0i8; n] } else { w0 };
            let (mut wa, mut wb) = (w.clone(), w.clone());
            let (mut qa, mut qb) = (vec![0i8; n], vec![0i8; n]);
            let sa = (best.requant_weights)(&mut wa, &w0z, s0, &mut qa);
            let sb = (refk.requant_weights)(&mut wb, &w0z, s0, &mut qb);
            assert_eq!(sa.to_bits(), sb.to_bits(), "{best:?} n={n}");
            assert_eq!(qa, qb, "{best:?} n={n}");
            assert!(wa.iter().zip(&wb).all(|(p, q)| p.to_bits() == q.to_bits()));
        }
    }
}

/// The int8 rebuild of every table (`switch::materialize_i8_with`: its whole-expert and
/// per-channel slots, or `B·A` and its `requant_weights`) gives the reference's codes and
/// scale bits on random experts: 1x1 and 3x3 (stems of 1..5 inputs among them), row widths
/// around the 4- and 8-lane blocks and the whole-expert slot's stack row (256), ranks 1..9, f32 and f16 factors, zero
/// `W0` channels, a few NaN / infinite factor entries.
#[test]
fn rebuild_twins_are_bit_identical() {
    use lorkd_runtime::format::{factor, DeltaDType};
    use lorkd_runtime::switch::{materialize_i8, materialize_i8_with, Delta, Factor};
    let mut r = rng();
    for best in twins() {
        for case in 0..600 {
            let k = [1, 1, 3][case % 3];
            let cin = match case % 4 {
                0 => 8 * r.gen_range(1..13),
                1 => r.gen_range(250..262),
                2 if k > 1 => r.gen_range(1..6),
                _ => r.gen_range(1..40),
            };
            let (cout, rank) = (r.gen_range(1..10), [4, 4, r.gen_range(1..10)][case % 3]);
            let (rk, ck, n) = (rank * k, cin * k, cin * k * k);
            let scale = [1e-3f32, 0.05, 1.0, 30.0][case % 4];
            let mut val = || match r.gen_range(0..500) {
                0 => f32::NAN,
                1 => f32::INFINITY,
                2..=40 => 0.0,
                _ => r.gen_range(-1.0..1.0) * scale,
            };
            let a: Vec<f32> = (0..rk * ck).map(|_| val()).collect();
            let b: Vec<f32> = (0..cout * k * rk).map(|_| val()).collect();
            let w0: Vec<i8> = (0..cout * n)
                .map(|i| {
                    if (i / n) % 3 == 2 {
                        0
                    } else {
                        r.gen_range(-127..=127)
                    }
                })
                .collect();
            let s0: Vec<f32> = (0..cout).map(|_| r.gen_range(0.0..0.02) * scale).collect();
            // (Not `case % 3`: that is `k`, and every 3x3 case would be f16.)
            let dt = if case % 7 == 6 {
                DeltaDType::F16
            } else {
                DeltaDType::F32
            };
            let (ea, eb) = match dt {
                DeltaDType::F32 => (Vec::new(), Vec::new()),
                _ => (
                    factor::encode(&a, rk, ck, dt).unwrap(),
                    factor::encode(&b, cout * k, rk, dt).unwrap(),
                ),
            };
            // f32 factors straight from the (aligned) f32 vectors: the slots' fast paths.
            let (ra, rb): (&[u8], &[u8]) = match dt {
                DeltaDType::F32 => (bytemuck::cast_slice(&a), bytemuck::cast_slice(&b)),
                _ => (&ea, &eb),
            };
            let d = Delta {
                a: Factor::from_bytes(ra, dt, rk, ck).unwrap(),
                b: Factor::from_bytes(rb, dt, cout * k, rk).unwrap(),
                cout,
                cin,
                k,
            };
            // The f32 rebuild slot: `switch::materialize_f32`'s bits.
            let w0f: Vec<f32> = w0.iter().map(|&q| q as f32 * 0.01).collect();
            let (mut fa, mut fb) = (vec![f32::NAN; cout * n], vec![0f32; cout * n]);
            (best.materialize_f32)(&w0f, &d, &mut fa);
            lorkd_runtime::switch::materialize_f32(&w0f, &d, &mut fb);
            // Bits, but one NaN for all: a NaN's sign is whichever operand x86 propagated
            // (an FMA's operand order differs between the twins), not part of the result.
            let fbits = |s: &[f32]| {
                s.iter()
                    .map(|v| if v.is_nan() { f32::NAN } else { *v }.to_bits())
                    .collect::<Vec<_>>()
            };
            assert_eq!(fbits(&fa), fbits(&fb), "{best:?} case {case}: f32 rebuild");
            let mut scratch = vec![0f32; n];
            let (mut qa, mut sa) = (vec![0i8; cout * n], vec![0f32; cout]);
            let (mut qb, mut sb) = (vec![0i8; cout * n], vec![0f32; cout]);
            materialize_i8_with(&best, &w0, &s0, &d, &mut scratch, &mut qa, &mut sa);
            materialize_i8(&w0, &s0, &d, &mut scratch, &mut qb, &mut sb);
            let at =
                format!("{best:?} case {case}: cout {cout} cin {cin} k {k} rank {rank} {dt:?}");
            assert_eq!(qa, qb, "{at}");
            let bits = |s: &[f32]| s.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&sa), bits(&sb), "{at}");
        }
    }
}

/// Every (pixel, channel) sum a `conv1x1_sums_i8` slot hands out, and how often.
fn all_sums(k: &Kernels, g: &Geom, x: &[i8], zx: i32, w: &[i8]) -> (Vec<i32>, Vec<u32>) {
    let (mut acc, mut seen) = (vec![0i32; g.out_len()], vec![0u32; g.out_len()]);
    (k.conv1x1_sums_i8)(g, x, zx, w, &mut |t| {
        for i in 0..t.np {
            for j in 0..t.no {
                let at = (t.p0 + i) * g.cout + t.o0 + j;
                acc[at] = t.acc[i * t.no + j];
                seen[at] += 1;
            }
        }
    });
    (acc, seen)
}

#[test]
fn conv1x1_sums_i8_twin_is_exact_and_covers_once() {
    let mut r = rng();
    let refk = Kernels::reference();
    for best in twins() {
        for _ in 0..300 {
            let g = geom(&mut r, Family::Pointwise);
            let x: Vec<i8> = (0..g.in_len()).map(|_| r.gen()).collect();
            let w: Vec<i8> = (0..g.cout * g.cin).map(|_| r.gen()).collect();
            let zx = r.gen_range(-128..=127);
            let (a, sa) = all_sums(&best, &g, &x, zx, &w);
            let (b, sb) = all_sums(&refk, &g, &x, zx, &w);
            assert!(sa.iter().all(|&c| c == 1), "{best:?} {g:?}: coverage");
            assert!(sb.iter().all(|&c| c == 1), "reference {g:?}: coverage");
            assert_eq!(a, b, "{best:?} {g:?}");
        }
    }
}

/// A pointwise shape past the x86 outer product's single weight panel (`cin·cout` beyond
/// 32 Ki packed weights, as ShuffleNetV2's widest 1x1 convs: packed a panel of channels at
/// a time), with odd pixel counts and channel counts off the 8- and 16-channel blocks.
fn wide_geom(r: &mut ChaCha8Rng) -> Geom {
    let (cin, cout) = (r.gen_range(180..480), r.gen_range(150..300));
    let (h, w, extra) = (r.gen_range(1..6), r.gen_range(1..6), r.gen_range(0..3));
    let stride = r.gen_range(1..3);
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

/// [`wide_geom`] shapes: exact sums, each once.
#[test]
fn conv1x1_sums_i8_twin_is_exact_on_wide_convs() {
    let mut r = rng();
    let refk = Kernels::reference();
    for best in twins() {
        for _ in 0..12 {
            let g = wide_geom(&mut r);
            let x: Vec<i8> = (0..g.in_len()).map(|_| r.gen()).collect();
            let w: Vec<i8> = (0..g.cout * g.cin).map(|_| r.gen()).collect();
            let zx = r.gen_range(-128..=127);
            let (a, sa) = all_sums(&best, &g, &x, zx, &w);
            let (b, _) = all_sums(&refk, &g, &x, zx, &w);
            assert!(sa.iter().all(|&c| c == 1), "{best:?} {g:?}: coverage");
            assert_eq!(a, b, "{best:?} {g:?}");
        }
    }
}

/// Rows longer than the plain-NEON tile's i16 weight sums hold (`cin` past 2032: 127 steps
/// of 16 bytes), with weights mostly −128 so that every lane's `Σw` would wrap without its
/// periodic widening, and zero points away from 0 so that a wrong `Σw` shows in the sums;
/// 1–5 pixels (the lone-pixel path too). Exact sums, each once; the conv's bytes at unit
/// scale (every output its exact sum, clamped) against the reference.
#[test]
fn conv1x1_i8_twins_exact_past_the_i16_weight_sums() {
    let mut r = rng();
    let refk = Kernels::reference();
    for best in twins() {
        for _ in 0..8 {
            let cin = r.gen_range(2033..4200);
            let (cout, w) = (4 * r.gen_range(1..4), r.gen_range(1..6));
            let g = Geom {
                h: 1,
                w,
                in_stride: cin,
                c_off: 0,
                cin,
                ho: 1,
                wo: w,
                cout,
                k: 1,
                stride: 1,
                pad: 0,
            };
            let x: Vec<i8> = (0..g.in_len()).map(|_| r.gen_range(-3..=3)).collect();
            let wq: Vec<i8> = (0..cout * cin)
                .map(|_| if r.gen_bool(0.9) { -128 } else { r.gen() })
                .collect();
            let zx = [-128, 127, r.gen_range(-128..=127)][r.gen_range(0..3)];
            let (a, sa) = all_sums(&best, &g, &x, zx, &wq);
            let (b, _) = all_sums(&refk, &g, &x, zx, &wq);
            assert!(sa.iter().all(|&c| c == 1), "{best:?} {g:?}: coverage");
            assert_eq!(a, b, "{best:?} {g:?} zx {zx}: sums");
            // Biases bring each channel's pixel-0 sum near 0, so outputs show the sums.
            let rq: Vec<[i32; 3]> = (0..cout).map(|o| [-b[o], 1 << 30, 1]).collect();
            let q = OutQ {
                zero_point: 0,
                lo: -128,
            };
            let (mut ya, mut yb) = (vec![0i8; g.out_len()], vec![0i8; g.out_len()]);
            (best.conv1x1_i8)(&g, &x, zx, &wq, &rq, q, &mut ya);
            (refk.conv1x1_i8)(&g, &x, zx, &wq, &rq, q, &mut yb);
            assert_eq!(ya, yb, "{best:?} {g:?} zx {zx}: bytes");
        }
    }
}

/// [`wide_geom`] shapes: the int8 conv's bytes are the reference's.
#[test]
fn conv1x1_i8_twin_is_bit_exact_on_wide_convs() {
    let mut r = rng();
    let refk = Kernels::reference();
    for best in twins() {
        for _ in 0..12 {
            let g = wide_geom(&mut r);
            let x: Vec<i8> = (0..g.in_len()).map(|_| r.gen()).collect();
            let w: Vec<i8> = (0..g.cout * g.cin)
                .map(|_| r.gen_range(-127..=127))
                .collect();
            let rq = rq_rows(&mut r, g.cout, 0.0002..0.002, 0.05);
            // An output zero point near +127 under ReLU clamps every output to 127 (a
            // constant output, ~1 run in 13 with any zero point): keep room above it.
            let (zx, zy) = (r.gen_range(-128..=127), r.gen_range(-128..=96));
            let q = out_q(&mut r, zy);
            let (a, b) = both_i8(best.conv1x1_i8, refk.conv1x1_i8, &g, &x, zx, &w, &rq, q);
            assert_eq!(a, b, "{best:?} {g:?}");
            // Not all saturated: the check sees real values.
            assert!(a.iter().any(|&v| v != a[0]), "{g:?}: constant output");
        }
    }
}

/// The f32 max pool twins give the reference's bits, NaNs and signed zeros included.
#[test]
fn maxpool_f32_twin_is_bit_identical() {
    let mut r = rng();
    let refk = Kernels::reference();
    for best in twins() {
        for _ in 0..300 {
            let (h, w) = (r.gen_range(1..12), r.gen_range(1..12));
            let c = if r.gen_bool(0.5) {
                CHANNELS[r.gen_range(0..CHANNELS.len())]
            } else {
                r.gen_range(1..70)
            };
            let x: Vec<f32> = (0..h * w * c)
                .map(|_| match r.gen_range(0..40) {
                    0 => f32::NAN,
                    1 => -0.0,
                    2 => 0.0,
                    _ => r.gen_range(-3.0..3.0),
                })
                .collect();
            let n = Geom::out_dim(h, 3, 2, 1) * Geom::out_dim(w, 3, 2, 1) * c;
            let (mut a, mut b) = (vec![0f32; n], vec![0f32; n]);
            (best.maxpool_f32)(h, w, c, &x, &mut a);
            (refk.maxpool_f32)(h, w, c, &x, &mut b);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&a), bits(&b), "{best:?} h={h} w={w} c={c}");
        }
    }
}

/// The int8 max pool slot (3x3/2, padding 1) and its pixels twin against the reference on
/// random sizes — channel counts around the 16-lane steps, odd and even sides, interior and
/// edge pixels, random runs of pixels: exact.
#[test]
fn maxpool_i8_twin_is_exact() {
    let mut r = rng();
    let refk = Kernels::reference();
    for best in twins() {
        for _ in 0..300 {
            let (h, w) = (r.gen_range(1..12), r.gen_range(1..12));
            let c = if r.gen_bool(0.5) {
                CHANNELS[r.gen_range(0..CHANNELS.len())]
            } else {
                r.gen_range(1..70)
            };
            let x: Vec<i8> = (0..h * w * c).map(|_| r.gen()).collect();
            let n = Geom::out_dim(h, 3, 2, 1) * Geom::out_dim(w, 3, 2, 1) * c;
            let (mut a, mut b) = (vec![0i8; n], vec![0i8; n]);
            (best.maxpool_i8)(h, w, c, &x, &mut a);
            (refk.maxpool_i8)(h, w, c, &x, &mut b);
            assert_eq!(a, b, "{best:?} h={h} w={w} c={c}");
            // The pixels twin (a thread's share): any run of output pixels is the whole's,
            // nothing past it written.
            for k in [best, refk] {
                // (A table without the twin runs whole rows through `maxpool_i8`.)
                let Some(px) = k.maxpool_i8_pixels else {
                    continue;
                };
                let npix = n / c;
                let p0 = r.gen_range(0..=npix);
                let p1 = r.gen_range(p0..=npix);
                let mut part = vec![0x55i8; (p1 - p0 + 1) * c];
                px(h, w, c, p0..p1, &x, &mut part);
                assert_eq!(
                    part[..(p1 - p0) * c],
                    b[p0 * c..p1 * c],
                    "{} {p0}..{p1}",
                    k.isa
                );
                assert!(part[(p1 - p0) * c..].iter().all(|&v| v == 0x55));
            }
        }
    }
}

/// The int8 global average pool slot against the reference on random shapes — pixel
/// counts from 1 past the 16-bit sums' 255 (powers of two among them: a multiplication
/// instead of a division), channel counts around the 16-lane steps, extreme codes, scales
/// and zero points: bit-identical.
#[test]
fn gap_i8_twin_is_bit_identical() {
    use lorkd_runtime::quant::QParams;
    let mut r = rng();
    let refk = Kernels::reference();
    for best in twins() {
        for case in 0..400 {
            let n = match case % 4 {
                0 => 1 << r.gen_range(0..9),
                1 => r.gen_range(250..300),
                _ => r.gen_range(1..80),
            };
            let c = if r.gen_bool(0.5) {
                CHANNELS[r.gen_range(0..CHANNELS.len())]
            } else {
                r.gen_range(1..1100)
            };
            let x: Vec<i8> = match case % 3 {
                0 => vec![if r.gen_bool(0.5) { -128 } else { 127 }; n * c],
                _ => (0..n * c).map(|_| r.gen()).collect(),
            };
            let qp = QParams {
                scale: 2f32.powf(r.gen_range(-12.0..4.0)),
                zero_point: r.gen_range(-128..128),
            };
            let (mut a, mut b) = (vec![0f32; c], vec![0f32; c]);
            (best.gap_i8)(n, c, &x, qp, &mut a);
            (refk.gap_i8)(n, c, &x, qp, &mut b);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&a), bits(&b), "{} n={n} c={c} {qp:?}", best.isa);
        }
    }
}

/// The f32 linear head slot against the reference on random shapes — output counts
/// around the 4-lane groups, input counts around the 4-input steps, empty inputs, values
/// over many magnitudes (so a fused multiply-add or a reordered sum shows) and the odd
/// infinity: bit-identical.
#[test]
fn linear_f32_twin_is_bit_identical() {
    let mut r = rng();
    let refk = Kernels::reference();
    for best in twins() {
        for case in 0..600 {
            let m = [1, 3, 4, 5, 8, 9, r.gen_range(0..40)][case % 7];
            let n = [0, 1, 3, 4, 5, 7, 1024, r.gen_range(0..300)][r.gen_range(0..8)];
            let v = |r: &mut ChaCha8Rng| match r.gen_range(0..200) {
                0 if case % 5 == 0 => f32::INFINITY,
                _ => r.gen_range(-1.0f32..1.0) * 2f32.powi(r.gen_range(-20..20)),
            };
            let x: Vec<f32> = (0..n).map(|_| v(&mut r)).collect();
            let w: Vec<f32> = (0..m * n).map(|_| v(&mut r)).collect();
            let bias: Vec<f32> = (0..m).map(|_| v(&mut r)).collect();
            let (mut a, mut b) = (vec![f32::NAN; m], vec![0.0f32; m]);
            (best.linear_f32)(&x, &w, &bias, &mut a);
            (refk.linear_f32)(&x, &w, &bias, &mut b);
            let bits = |y: &[f32]| y.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&a), bits(&b), "{best:?} m={m} n={n}");
        }
    }
}

/// The int8 concat + shuffle slot (rescaling to the output's quantisation) against the
/// reference on random shapes — channel counts around the 16-lane steps, pixel counts on
/// both sides of the table rescale's threshold, channel offsets, wider strides, equal and
/// unequal quantisations, scales over many octaves (rounding ties and saturation), zero
/// points far out, a NaN scale now and then: the same bytes, or `false` with nothing
/// written.
#[test]
fn concat_shuffle_i8_twin_is_exact() {
    use lorkd_runtime::kernels::reference::concat_shuffle::{concat_shuffle_i8, ConcatIn};
    use lorkd_runtime::quant::QParams;
    let mut r = rng();
    for best in twins() {
        let Some(f) = best.concat_shuffle_i8 else {
            continue;
        };
        let mut taken = 0;
        for case in 0..1500 {
            // A fifth big enough for the aarch64 table rescale (`n·c ≥ 512`).
            let n = if r.gen_bool(0.2) {
                r.gen_range(12..48)
            } else {
                r.gen_range(0..12)
            };
            let c = if r.gen_bool(0.5) {
                CHANNELS[r.gen_range(0..CHANNELS.len())]
            } else {
                r.gen_range(0..70)
            };
            let q = |r: &mut ChaCha8Rng| QParams {
                scale: match r.gen_range(0..40) {
                    0 if case % 3 == 0 => f32::NAN,
                    1 => 1e-38,
                    _ => 2f32.powf(r.gen_range(-12.0..12.0)) * r.gen_range(1.0f32..1.5),
                },
                zero_point: match r.gen_range(0..12) {
                    0 => r.gen_range(-(1 << 25)..(1 << 25)),
                    1 => [i32::MIN, i32::MAX, 1 << 22, -(1 << 22)][r.gen_range(0..4)],
                    _ => r.gen_range(-128..128),
                },
            };
            let qy = q(&mut r);
            let side = |r: &mut ChaCha8Rng| {
                let off = r.gen_range(0..5);
                let stride = c + off + r.gen_range(0..3);
                let qs = if r.gen_bool(0.3) { qy } else { q(r) };
                let x: Vec<i8> = (0..n * stride).map(|_| r.gen()).collect();
                (x, stride, off, qs)
            };
            let (a, b) = (side(&mut r), side(&mut r));
            let ia = ConcatIn {
                x: &a.0,
                stride: a.1,
                off: a.2,
                q: a.3,
            };
            let ib = ConcatIn {
                x: &b.0,
                stride: b.1,
                off: b.2,
                q: b.3,
            };
            let (mut got, mut want) = (vec![0x55i8; n * 2 * c + 2], vec![0x55i8; n * 2 * c + 2]);
            if f(n, c, ia, ib, qy, &mut got) {
                taken += 1;
                concat_shuffle_i8(n, c, ia, ib, qy, &mut want);
            }
            assert_eq!(
                got, want,
                "{best:?} n={n} c={c} {:?} {:?} -> {qy:?}",
                ia.q, ib.q
            );
        }
        assert!(taken > 500, "{best:?}: only {taken} cases taken");
    }
}

#[test]
fn dot_i8_twin_is_exact() {
    let mut r = rng();
    let refk = Kernels::reference();
    for best in twins() {
        for _ in 0..2000 {
            let n = r.gen_range(0..300);
            let w: Vec<i8> = (0..n).map(|_| r.gen()).collect();
            let x: Vec<i8> = (0..n + r.gen_range(0..3)).map(|_| r.gen()).collect();
            let zx = r.gen_range(-128..=127);
            assert_eq!(
                (best.dot_i8)(&w, &x, zx),
                (refk.dot_i8)(&w, &x, zx),
                "{best:?} n={n}"
            );
        }
    }
}

/// Both factor decodes of every table — row-major for a rebuild (`decode_factors`) and
/// transposed for the streaming GEMMs (`streaming.decode`: `Aᵀ`, `Bᵀ`) — are the spec's
/// bits for every dtype, with row counts around the 8-row blocks and widths around the 8-
/// and 4-column steps, on encoded values and on raw random bytes (f16 / f32 NaNs, infinities
/// and subnormals, int8 rows with such scales); nothing past either matrix is written.
#[test]
fn factor_decode_twins_are_bit_exact() {
    use lorkd_runtime::format::factor::{encode, factor_bytes, Factor};
    use lorkd_runtime::format::DeltaDType;
    let mut r = rng();
    let dims = |r: &mut ChaCha8Rng| match r.gen_range(0..4) {
        0 => r.gen_range(0..13),
        1 => r.gen_range(1..4) * 8,
        _ => r.gen_range(9..1100),
    };
    let ranks = [1, 3, 4, 7, 8, 9, 12, 16, 24, 40];
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for best in twins() {
        for case in 0..400 {
            let rank = ranks[r.gen_range(0..ranks.len())];
            let (cin, cout) = (dims(&mut r), dims(&mut r));
            let scale = [1e-3f32, 1.0, 300.0][r.gen_range(0..3)];
            for dt in [DeltaDType::I8, DeltaDType::F16, DeltaDType::F32] {
                let mut bytes = |rows: usize, cols: usize| {
                    if case % 4 == 3 {
                        let n = factor_bytes(dt, rows, cols).unwrap();
                        return (0..n).map(|_| r.gen()).collect::<Vec<u8>>();
                    }
                    let mut x: Vec<f32> = (0..rows * cols)
                        .map(|_| r.gen_range(-1.0f32..1.0) * scale)
                        .collect();
                    if rows > 2 && cols > 0 {
                        x[cols..2 * cols].fill(0.0); // a zero row: scale 0
                    }
                    encode(&x, rows, cols, dt).unwrap()
                };
                let (ba, bb) = (bytes(rank, cin), bytes(cout, rank));
                let fa = Factor::from_bytes(&ba, dt, rank, cin).unwrap();
                let fb = Factor::from_bytes(&bb, dt, cout, rank).unwrap();
                let (na, nb) = (rank * cin, cout * rank);
                let what = format!("{best:?} {dt:?} r={rank} cin={cin} cout={cout} case {case}");
                let slots = [
                    (
                        "rows",
                        lorkd_runtime::switch::decode_factors as fn(&_, &_, &mut _, &mut _),
                        best.decode_factors,
                    ),
                    (
                        "transposed",
                        lorkd_runtime::switch::decode_lowrank,
                        best.streaming.decode,
                    ),
                ];
                for (name, spec, twin) in slots {
                    let (mut wa, mut wb) = (vec![f32::NAN; na + 3], vec![f32::NAN; nb + 3]);
                    let (mut ga, mut gb) = (wa.clone(), wb.clone());
                    spec(&fa, &fb, &mut wa, &mut wb);
                    twin(&fa, &fb, &mut ga, &mut gb);
                    assert_eq!(bits(&ga), bits(&wa), "{name} A {what}");
                    assert_eq!(bits(&gb), bits(&wb), "{name} B {what}");
                    assert!(
                        ga[na..].iter().chain(&gb[nb..]).all(|v| v.is_nan()),
                        "{name} {what}"
                    );
                }
            }
        }
    }
}

/// The int8 slots with requantisation parameters far from what calibration makes: random
/// and `MIN` multipliers, shifts past ±31, full-range biases and zero points — the output
/// stages the twins vectorise must saturate and clamp where the reference does. Half the
/// problems draw only "plain" channels (multiplier ≥ 0, shift ≤ 0: what calibration
/// makes, and the form some twins requantise by a shorter path), still at the extremes.
#[test]
fn int8_twins_bit_exact_on_extreme_requant() {
    for_int8_twins(0.0, |r, g, fam| {
        let x: Vec<i8> = (0..g.in_len()).map(|_| r.gen()).collect();
        let w: Vec<i8> = (0..wlen(g, fam)).map(|_| r.gen()).collect();
        let plain = r.gen_bool(0.5);
        let rq: Vec<[i32; 3]> = (0..g.cout)
            .map(|_| {
                let mult = match (plain, r.gen_range(0..10)) {
                    (false, 0) => i32::MIN,
                    (true, 0) => [0, 1, i32::MAX][r.gen_range(0..3)],
                    (false, 1..=4) => r.gen(),
                    (true, 1..=4) => r.gen_range(0..=i32::MAX),
                    _ => r.gen_range(1 << 30..i32::MAX),
                };
                let shift = match r.gen_range(0..10) {
                    0 => r.gen_range(-45..if plain { 1 } else { 45 }),
                    1 => i32::MIN,
                    _ => r.gen_range(-20..if plain { 1 } else { 4 }),
                };
                [r.gen::<i32>() >> r.gen_range(0..20), mult, shift]
            })
            .collect();
        let zx = r.gen_range(-128..=127);
        let zy = match r.gen_range(0..4) {
            0 => r.gen(),
            _ => r.gen_range(-128..=127),
        };
        let q = OutQ {
            zero_point: zy,
            lo: r.gen_range(-300..=127),
        };
        (x, zx, w, rq, q)
    });
}

/// Requantisation at unit scale (`[0, 2^30, 1]` maps an accumulator to itself) on inputs
/// small enough that most sums stay inside i8: every output then shows its exact sum, so an
/// accumulator off by one fails — random scales mostly round such errors away.
#[test]
fn int8_twins_exact_sums_at_unit_scale() {
    for_int8_twins(0.5, |r, g, fam| {
        let x: Vec<i8> = (0..g.in_len()).map(|_| r.gen_range(-3..=3)).collect();
        let w: Vec<i8> = (0..wlen(g, fam)).map(|_| r.gen_range(-2..=2)).collect();
        let q = OutQ {
            zero_point: 0,
            lo: -128,
        };
        (x, r.gen_range(-2..=2), w, vec![[0, 1 << 30, 1]; g.cout], q)
    });
}

/// Every int8 conv twin (pointwise, depthwise, stem in turn, 600 problems a table) against
/// the reference on the inputs `case` makes for a random geometry: `(x, zx, w, rq, q)`;
/// at least the fraction `inside` of a table's outputs must be unclamped.
#[allow(clippy::type_complexity)]
fn for_int8_twins(
    inside: f64,
    mut case: impl FnMut(&mut ChaCha8Rng, &Geom, Family) -> (Vec<i8>, i32, Vec<i8>, Vec<[i32; 3]>, OutQ),
) {
    let mut r = rng();
    let refk = Kernels::reference();
    for best in twins() {
        let (mut unclamped, mut total) = (0, 0);
        for n in 0..600 {
            let fam = [Family::Pointwise, Family::Depthwise, Family::Stem][n % 3];
            let g = geom(&mut r, fam);
            let (x, zx, w, rq, q) = case(&mut r, &g, fam);
            let (mut a, mut b) = (vec![0i8; g.out_len()], vec![0i8; g.out_len()]);
            let (fast, slow) = match fam {
                Family::Pointwise => (best.conv1x1_i8, refk.conv1x1_i8),
                Family::Depthwise => (best.dwconv3x3_i8, refk.dwconv3x3_i8),
                Family::Stem => (best.conv_i8, refk.conv_i8),
            };
            fast(&g, &x, zx, &w, &rq, q, &mut a);
            slow(&g, &x, zx, &w, &rq, q, &mut b);
            unclamped += b.iter().filter(|&&v| v > -128 && v < 127).count();
            total += b.len();
            assert_eq!(a, b, "{best:?} {fam:?} {g:?} {q:?}");
        }
        assert!(
            unclamped as f64 >= inside * total as f64,
            "{unclamped} of {total} unclamped"
        );
    }
}

/// Instruction-count workload for `scripts/bench-aarch64.sh` (run under `qemu-aarch64`
/// with the count plugin): `LORKD_INSN_BENCH=FIXTURE:WHAT:N:TABLE` loads the bundle and the
/// first image of a QEMU-board fixture (`firmware/run-qemu --bench` writes them), then
/// runs `WHAT` (`infer` or `switch`) `N` times on kernel table `TABLE` (an index into
/// `Kernels::available()`); `WHAT = macs` prints the multiply-accumulates of one inference.
#[test]
#[ignore = "a workload for the instruction counter, not a check"]
fn insn_bench() {
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    static MACS: AtomicUsize = AtomicUsize::new(0);
    fn c1(g: &Geom, x: &[i8], zx: i32, w: &[i8], rq: &[[i32; 3]], q: OutQ, y: &mut [i8]) {
        MACS.fetch_add(g.ho * g.wo * g.cout * g.cin, Relaxed);
        (Kernels::reference().conv1x1_i8)(g, x, zx, w, rq, q, y)
    }
    fn ck(g: &Geom, x: &[i8], zx: i32, w: &[i8], rq: &[[i32; 3]], q: OutQ, y: &mut [i8]) {
        MACS.fetch_add(g.ho * g.wo * g.cout * g.cin * g.k * g.k, Relaxed);
        (Kernels::reference().conv_i8)(g, x, zx, w, rq, q, y)
    }
    fn cd(g: &Geom, x: &[i8], zx: i32, w: &[i8], rq: &[[i32; 3]], q: OutQ, y: &mut [i8]) {
        MACS.fetch_add(g.ho * g.wo * g.cout * 9, Relaxed);
        (Kernels::reference().dwconv3x3_i8)(g, x, zx, w, rq, q, y)
    }
    let Ok(spec) = std::env::var("LORKD_INSN_BENCH") else {
        return;
    };
    let parts: Vec<&str> = spec.split(':').collect();
    let [path, what, n, table] = parts[..] else {
        panic!("LORKD_INSN_BENCH=FIXTURE:WHAT:N:TABLE, got {spec}");
    };
    let (n, table): (usize, usize) = (n.parse().unwrap(), table.parse().unwrap());
    let fx = std::fs::read(path).unwrap();
    let u32_at = |o: usize| u32::from_le_bytes(fx[o..o + 4].try_into().unwrap()) as usize;
    let (depts, len) = (u32_at(4), u32_at(12));
    let bundle = AlignedBytes::new(&fx[u32_at(20)..][..u32_at(24)]);
    let x: Vec<f32> = fx[u32_at(28)..][..4 * len]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let b = Bundle::parse(bundle.as_slice()).unwrap();
    // `infer-auto` / `switch-auto`: the same work with the per-layer switch plan;
    // `infer-stream` / `switch-stream` in Streaming.
    let (what, mode) = match (what.strip_suffix("-auto"), what.strip_suffix("-stream")) {
        (Some(w), _) => (w, Mode::Auto),
        (_, Some(w)) => (w, Mode::Streaming),
        _ => (what, Mode::Materialized),
    };
    let mut arena = AlignedBytes::zeroed(b.arena_bytes(mode));
    let mut e = Engine::new(&b, arena.as_mut_slice(), mode).unwrap();
    let k = if what == "macs" {
        Kernels {
            conv1x1_i8: c1,
            conv_i8: ck,
            dwconv3x3_i8: cd,
            ..Kernels::reference()
        }
    } else {
        Kernels::available()[table].expect("no such kernel table on this CPU")
    };
    e.set_kernels(k);
    e.select(0).unwrap();
    let mut logits = [0f32; 64];
    for i in 0..n {
        match what {
            "switch" => e.select((i + 1) % depts).unwrap(),
            _ => {
                e.infer(&x, &mut logits).unwrap();
            }
        }
    }
    if what == "macs" {
        e.infer(&x, &mut logits).unwrap();
        println!("insn_bench macs {}", MACS.load(Relaxed));
    }
    println!("insn_bench {what} x{n} on {} ({mode:?})", k.isa);
}

/// The requantisation-table slot of every table gives `quant::requant_table`'s triples on
/// random conv-like tables (typical scales, a few extreme ones); the x86 twin's own test
/// covers its rounding edges.
#[test]
fn requant_table_twin_is_bit_exact() {
    let mut r = rng();
    for best in twins() {
        for _ in 0..2000 {
            let n = r.gen_range(1..70);
            let s_x = 2f32.powf(r.gen_range(-12.0..2.0));
            let s_y = if r.gen_range(0..50) == 0 {
                [0.0, -1.0, f32::INFINITY, 1e-30][r.gen_range(0..4)]
            } else {
                2f32.powf(r.gen_range(-12.0..2.0))
            };
            let ws: Vec<f32> = (0..n)
                .map(|_| 2f32.powf(r.gen_range(-16.0..-2.0)))
                .collect();
            let bias: Vec<f32> = (0..n)
                .map(|_| match r.gen_range(0..40) {
                    0 => 1e12,
                    1 => f32::NAN,
                    _ => r.gen_range(-5.0..5.0),
                })
                .collect();
            let (mut a, mut b) = (vec![[0i32; 3]; n], vec![[0i32; 3]; n]);
            (best.requant_table)(&bias, s_x, &ws, s_y, &mut a);
            lorkd_runtime::quant::requant_table(&bias, s_x, &ws, s_y, &mut b);
            assert_eq!(
                a, b,
                "{best:?} s_x {s_x:e} s_y {s_y:e} ws {ws:?} bias {bias:?}"
            );
        }
    }
}
