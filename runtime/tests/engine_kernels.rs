//! Reference kernels against straightforward loops written here (signed index arithmetic,
//! explicit bounds tests), on random odd shapes; the switch's `ΔW` against an explicit
//! `B·A` product and row-major reshape.
mod common;

use lorkd_runtime::format::{DeltaDType, DeltaRef, TensorRef};
use lorkd_runtime::kernels::reference::conv1x1::dot_i8 as dot_i8_ref;
use lorkd_runtime::kernels::reference::*;
use lorkd_runtime::kernels::{Geom, OutQ};
use lorkd_runtime::quant::{requant, ChannelRequant, QParams};
use lorkd_runtime::switch::{self, Delta};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn rng() -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(common::seed())
}

fn fvec(r: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| r.gen_range(-1.0..1.0)).collect()
}
fn qvec(r: &mut ChaCha8Rng, n: usize, lo: i8) -> Vec<i8> {
    (0..n).map(|_| r.gen_range(lo..=127)).collect()
}

/// A random conv problem: input slice of a wider tensor, odd sizes.
fn geom(r: &mut ChaCha8Rng, k: usize, stride: usize, pad: usize, depthwise: bool) -> Geom {
    let (h, w) = (r.gen_range(1..12), r.gen_range(1..12));
    // Up to 39 channels: 3x3 patches longer than `conv::PATCH` take the fallback path.
    let cin = if depthwise {
        r.gen_range(1..20)
    } else {
        r.gen_range(1..40)
    };
    let extra = r.gen_range(0..5);
    let c_off = r.gen_range(0..=extra);
    let cout = if depthwise { cin } else { r.gen_range(1..20) };
    Geom {
        h,
        w,
        in_stride: cin + extra,
        c_off,
        cin,
        ho: Geom::out_dim(h, k, stride, pad),
        wo: Geom::out_dim(w, k, stride, pad),
        cout,
        k,
        stride,
        pad,
    }
}

/// `x[iy, ix, c_off + c]` or `None` outside the image.
fn at<T: Copy>(g: &Geom, x: &[T], iy: isize, ix: isize, c: usize) -> Option<T> {
    (iy >= 0 && ix >= 0 && iy < g.h as isize && ix < g.w as isize)
        .then(|| x[(iy as usize * g.w + ix as usize) * g.in_stride + g.c_off + c])
}

/// Naive conv accumulator (f64 for f32 data) for one output element.
fn conv_acc(g: &Geom, x: &[f32], w: &[f32], oy: usize, ox: usize, o: usize) -> f64 {
    let mut acc = 0.0f64;
    for c in 0..g.cin {
        for ky in 0..g.k {
            for kx in 0..g.k {
                let iy = (oy * g.stride + ky) as isize - g.pad as isize;
                let ix = (ox * g.stride + kx) as isize - g.pad as isize;
                if let Some(v) = at(g, x, iy, ix, c) {
                    acc += w[((o * g.cin + c) * g.k + ky) * g.k + kx] as f64 * v as f64;
                }
            }
        }
    }
    acc
}

fn conv_acc_i8(g: &Geom, x: &[i8], zx: i32, w: &[i8], oy: usize, ox: usize, o: usize) -> i32 {
    let mut acc = 0i32;
    for c in 0..g.cin {
        for ky in 0..g.k {
            for kx in 0..g.k {
                let iy = (oy * g.stride + ky) as isize - g.pad as isize;
                let ix = (ox * g.stride + kx) as isize - g.pad as isize;
                if let Some(v) = at(g, x, iy, ix, c) {
                    acc += w[((o * g.cin + c) * g.k + ky) * g.k + kx] as i32 * (v as i32 - zx);
                }
            }
        }
    }
    acc
}

fn rq(r: &mut ChaCha8Rng, n: usize) -> Vec<[i32; 3]> {
    (0..n)
        .map(|_| {
            ChannelRequant::new(
                r.gen_range(-1.0..1.0),
                r.gen_range(0.005..0.05),
                r.gen_range(0.002..0.02),
                r.gen_range(0.01..0.1),
            )
            .to_array()
        })
        .collect()
}

#[test]
fn conv_and_conv1x1_match_naive() {
    let mut r = rng();
    for case in 0..300 {
        let (k, stride, pad) = [(3, 2, 1), (3, 1, 1), (1, 1, 0), (1, 2, 0), (3, 2, 0)][case % 5];
        let g = geom(&mut r, k, stride, pad, false);
        let relu = r.gen_bool(0.5);
        let x = fvec(&mut r, g.in_len());
        let w = fvec(&mut r, g.cout * g.cin * k * k);
        let b = fvec(&mut r, g.cout);
        let mut y = vec![f32::NAN; g.out_len()];
        conv::conv_f32(&g, &x, &w, &b, relu, &mut y);
        let mut y1 = vec![f32::NAN; g.out_len()];
        if k == 1 {
            conv1x1::conv1x1_f32(&g, &x, &w, &b, relu, &mut y1);
        }
        // int8
        let zx = r.gen_range(-128..=127);
        let xq = qvec(&mut r, g.in_len(), -128);
        let wq = qvec(&mut r, w.len(), -127);
        let rqs = rq(&mut r, g.cout);
        let q = OutQ {
            zero_point: r.gen_range(-128..=127),
            lo: if relu { 5 } else { -128 },
        };
        let mut yq = vec![0i8; g.out_len()];
        conv::conv_i8(&g, &xq, zx, &wq, &rqs, q, &mut yq);
        let mut yq1 = vec![0i8; g.out_len()];
        if k == 1 {
            conv1x1::conv1x1_i8(&g, &xq, zx, &wq, &rqs, q, &mut yq1);
        }
        for oy in 0..g.ho {
            for ox in 0..g.wo {
                for o in 0..g.cout {
                    let i = (oy * g.wo + ox) * g.cout + o;
                    let mut e = (conv_acc(&g, &x, &w, oy, ox, o) + b[o] as f64) as f32;
                    if relu {
                        e = e.max(0.0);
                    }
                    assert!(
                        (y[i] - e).abs() <= 1e-5 * (1.0 + e.abs()),
                        "{g:?} {i}: {} vs {e}",
                        y[i]
                    );
                    let eq = requant(conv_acc_i8(&g, &xq, zx, &wq, oy, ox, o), rqs[o], q);
                    assert_eq!(yq[i], eq, "{g:?} {i}");
                    if k == 1 {
                        assert_eq!(y1[i].to_bits(), y[i].to_bits());
                        assert_eq!(yq1[i], eq);
                    }
                }
            }
        }
    }
}

#[test]
fn dwconv3x3_matches_naive() {
    let mut r = rng();
    for case in 0..300 {
        let g = geom(&mut r, 3, 1 + case % 2, 1, true);
        let relu = r.gen_bool(0.5);
        let c = g.cout;
        let (x, w, b) = (
            fvec(&mut r, g.in_len()),
            fvec(&mut r, 9 * c),
            fvec(&mut r, c),
        );
        let mut y = vec![f32::NAN; g.out_len()];
        dwconv3x3::dwconv3x3_f32(&g, &x, &w, &b, relu, &mut y);
        let zx = r.gen_range(-128..=127);
        let (xq, wq) = (qvec(&mut r, g.in_len(), -128), qvec(&mut r, 9 * c, -127));
        let rqs = rq(&mut r, c);
        let q = OutQ {
            zero_point: r.gen_range(-128..=127),
            lo: -128,
        };
        let mut yq = vec![0i8; g.out_len()];
        dwconv3x3::dwconv3x3_i8(&g, &xq, zx, &wq, &rqs, q, &mut yq);
        for oy in 0..g.ho {
            for ox in 0..g.wo {
                for ch in 0..c {
                    let (mut e, mut acc) = (b[ch] as f64, 0i32);
                    for ky in 0..3 {
                        for kx in 0..3 {
                            let (iy, ix) = (
                                (oy * g.stride + ky) as isize - 1,
                                (ox * g.stride + kx) as isize - 1,
                            );
                            if let Some(v) = at(&g, &x, iy, ix, ch) {
                                e += w[(ky * 3 + kx) * c + ch] as f64 * v as f64;
                            }
                            if let Some(v) = at(&g, &xq, iy, ix, ch) {
                                acc += wq[(ky * 3 + kx) * c + ch] as i32 * (v as i32 - zx);
                            }
                        }
                    }
                    let e = if relu { (e as f32).max(0.0) } else { e as f32 };
                    let i = (oy * g.wo + ox) * c + ch;
                    assert!((y[i] - e).abs() <= 1e-5 * (1.0 + e.abs()));
                    assert_eq!(yq[i], requant(acc, rqs[ch], q));
                }
            }
        }
    }
}

#[test]
fn maxpool_gap_concat_linear_relu_match_naive() {
    let mut r = rng();
    for _ in 0..200 {
        let (h, w, c) = (r.gen_range(1..14), r.gen_range(1..14), r.gen_range(1..9));
        let x = fvec(&mut r, h * w * c);
        let (ho, wo) = (Geom::out_dim(h, 3, 2, 1), Geom::out_dim(w, 3, 2, 1));
        let mut y = vec![0.0; ho * wo * c];
        maxpool::maxpool3x3s2(h, w, c, &x, &mut y);
        for oy in 0..ho {
            for ox in 0..wo {
                for ch in 0..c {
                    let mut m = f32::NEG_INFINITY;
                    for iy in (2 * oy).saturating_sub(1)..(2 * oy + 2).min(h) {
                        for ix in (2 * ox).saturating_sub(1)..(2 * ox + 2).min(w) {
                            m = m.max(x[(iy * w + ix) * c + ch]);
                        }
                    }
                    assert_eq!(y[(oy * wo + ox) * c + ch], m);
                }
            }
        }
        let mut g = vec![0.0; c];
        gap::gap_f32(h * w, c, &x, &mut g);
        let xq = qvec(&mut r, h * w * c, -128);
        let qp = QParams {
            scale: r.gen_range(0.01..0.1),
            zero_point: r.gen_range(-128..=127),
        };
        let mut gq = vec![0.0; c];
        gap::gap_i8(h * w, c, &xq, qp, &mut gq);
        for ch in 0..c {
            let mean = (0..h * w).map(|p| x[p * c + ch] as f64).sum::<f64>() / (h * w) as f64;
            assert!((g[ch] as f64 - mean).abs() < 1e-5);
            let mq = (0..h * w)
                .map(|p| qp.dequantize(xq[p * c + ch]) as f64)
                .sum::<f64>()
                / (h * w) as f64;
            assert!((gq[ch] as f64 - mq).abs() < 1e-4, "{} vs {mq}", gq[ch]);
        }
        // concat + shuffle from two slices
        let (ca, cb) = (c + r.gen_range(0..3), c + r.gen_range(0..3));
        let (oa, ob) = (r.gen_range(0..=ca - c), r.gen_range(0..=cb - c));
        let (a, b) = (fvec(&mut r, h * w * ca), fvec(&mut r, h * w * cb));
        let mut y = vec![0.0; h * w * 2 * c];
        concat_shuffle::concat_shuffle(h * w, c, &a, ca, oa, &b, cb, ob, &mut y);
        for p in 0..h * w {
            let cat: Vec<f32> = (0..c)
                .map(|i| a[p * ca + oa + i])
                .chain((0..c).map(|i| b[p * cb + ob + i]))
                .collect();
            // shuffle with 2 groups: view [2, c] -> transpose -> [c, 2]
            let shuffled: Vec<f32> = (0..2 * c).map(|j| cat[(j % 2) * c + j / 2]).collect();
            assert_eq!(&y[p * 2 * c..(p + 1) * 2 * c], &shuffled[..]);
        }
        // linear
        let (n, m) = (r.gen_range(1..30), r.gen_range(1..10));
        let (xv, wv, bv) = (fvec(&mut r, n), fvec(&mut r, n * m), fvec(&mut r, m));
        let mut out = vec![0.0; m];
        linear::linear_f32(&xv, &wv, &bv, &mut out);
        for o in 0..m {
            let e = bv[o] as f64
                + (0..n)
                    .map(|i| wv[o * n + i] as f64 * xv[i] as f64)
                    .sum::<f64>();
            assert!((out[o] as f64 - e).abs() < 1e-5);
        }
        let mut rr = xv.clone();
        relu::relu_f32(&mut rr);
        assert!(rr.iter().zip(&xv).all(|(a, b)| *a == b.max(0.0)));
        let mut rq8 = xq.clone();
        relu::relu_i8(&mut rq8, qp.zero_point);
        assert!(rq8
            .iter()
            .zip(&xq)
            .all(|(a, b)| *a as i32 == (*b as i32).max(qp.zero_point)));
    }
}

/// Stores `v` as an f32 factor tensor in `payload`.
fn put(payload: &mut Vec<u8>, v: &[f32]) -> TensorRef {
    while !payload.len().is_multiple_of(16) {
        payload.push(0);
    }
    let t = TensorRef {
        offset: payload.len() as u32,
        len: 4 * v.len() as u32,
    };
    payload.extend(v.iter().flat_map(|x| x.to_le_bytes()));
    t
}

#[test]
fn delta_is_reshaped_b_times_a_and_lowrank_path_matches() {
    let mut r = rng();
    for case in 0..60 {
        let k = if case % 2 == 0 { 1 } else { 3 };
        let (cout, cin, rank) = (r.gen_range(1..9), r.gen_range(1..9), r.gen_range(1..4));
        let (a, b) = (
            fvec(&mut r, rank * k * cin * k),
            fvec(&mut r, cout * k * rank * k),
        );
        let mut payload = Vec::new();
        let d = DeltaRef {
            a: put(&mut payload, &a),
            b: put(&mut payload, &b),
        };
        let delta = Delta::new(&payload, d, DeltaDType::F32, cout, cin, k, rank).unwrap();
        assert!(Delta::new(&payload, d, DeltaDType::F32, cout + 1, cin, k, rank).is_none());
        // Explicit product [cout·k, cin·k], flattened row-major = OIHW.
        let (rows, inner, cols) = (cout * k, rank * k, cin * k);
        let ba: Vec<f32> = (0..rows * cols)
            .map(|f| {
                (0..inner)
                    .map(|q| b[(f / cols) * inner + q] * a[q * cols + f % cols])
                    .sum()
            })
            .collect();
        let n = cin * k * k;
        let mut ch = vec![0.0; n];
        for o in 0..cout {
            delta.channel_into(o, &mut ch);
            for j in 0..n {
                assert!((ch[j] - ba[o * n + j]).abs() < 1e-5);
            }
        }
        let w0 = fvec(&mut r, cout * n);
        let mut wm = vec![0.0; cout * n];
        switch::materialize_f32(&w0, &delta, &mut wm);
        assert!(wm
            .iter()
            .zip(w0.iter().zip(&ba))
            .all(|(m, (w, d))| (m - (w + d)).abs() < 1e-5));
        // int8 materialisation: within half a step of the new per-channel scale.
        let (w0q, s0): (Vec<i8>, Vec<f32>) = {
            let s: Vec<f32> = (0..cout).map(|_| r.gen_range(0.001..0.02)).collect();
            ((0..cout * n).map(|_| r.gen_range(-127..=127)).collect(), s)
        };
        let (mut q, mut s, mut scratch) = (vec![0i8; cout * n], vec![0.0; cout], vec![0.0; n]);
        switch::materialize_i8(&w0q, &s0, &delta, &mut scratch, &mut q, &mut s);
        for o in 0..cout {
            for j in 0..n {
                let exact = s0[o] * w0q[o * n + j] as f32 + ba[o * n + j];
                assert!((s[o] * q[o * n + j] as f32 - exact).abs() <= 0.5 * s[o] + 1e-6);
            }
        }
        if k == 1 {
            // Streaming: W0 conv + B·(A·x) == conv with W0 + ΔW.
            let g = Geom {
                h: 5,
                w: 3,
                in_stride: cin + 1,
                c_off: 1,
                cin,
                ho: 5,
                wo: 3,
                cout,
                k: 1,
                stride: 1,
                pad: 0,
            };
            let x = fvec(&mut r, g.in_len());
            let bias = fvec(&mut r, cout);
            let (mut ys, mut ym, mut u) = (
                vec![0.0; g.out_len()],
                vec![0.0; g.out_len()],
                vec![0.0; 15 * rank],
            );
            conv1x1::conv1x1_f32(&g, &x, &w0, &bias, false, &mut ys);
            switch::lowrank_u(&g, &x, |v| v, &delta.a, &mut u);
            switch::lowrank_add_f32(&g, &u, &delta.b, true, &mut ys);
            conv1x1::conv1x1_f32(&g, &x, &wm, &bias, true, &mut ym);
            assert!(ys.iter().zip(&ym).all(|(p, q)| (p - q).abs() < 1e-4));
        }
    }
}

/// `payload` gains `v` as f16 (`f16 == true`) or as f32 at an odd byte offset, so neither
/// takes the aligned-f32 fast path of the switch loops.
fn put_slow(payload: &mut Vec<u8>, v: &[f32], f16: bool) -> TensorRef {
    payload.push(0);
    let offset = payload.len() as u32;
    if f16 {
        payload.extend(
            v.iter()
                .flat_map(|x| half::f16::from_f32(*x).to_bits().to_le_bytes()),
        );
    } else {
        payload.extend(v.iter().flat_map(|x| x.to_le_bytes()));
    }
    TensorRef {
        offset,
        len: payload.len() as u32 - offset,
    }
}

#[test]
fn decoded_delta_rebuilds_the_same_bits() {
    let mut r = rng();
    for case in 0..80 {
        let k = if case % 2 == 0 { 1 } else { 3 };
        let f16 = case % 4 < 2;
        let dtype = if f16 {
            DeltaDType::F16
        } else {
            DeltaDType::F32
        };
        let (cout, cin, rank) = (r.gen_range(1..20), r.gen_range(1..40), r.gen_range(1..10));
        let (a, b) = (
            fvec(&mut r, rank * k * cin * k),
            fvec(&mut r, cout * k * rank * k),
        );
        let mut payload = Vec::new();
        let d = DeltaRef {
            a: put_slow(&mut payload, &a, f16),
            b: put_slow(&mut payload, &b, f16),
        };
        let slow = Delta::new(&payload, d, dtype, cout, cin, k, rank).unwrap();
        assert!(slow.a.as_f32().is_none() && slow.b.as_f32().is_none());
        let mut buf = vec![f32::NAN; slow.decoded_len()];
        let fast = slow.decoded(&mut buf, switch::decode_factors);
        assert!(fast.a.as_f32().is_some() && fast.b.as_f32().is_some());
        let n = cin * k * k;
        let w0 = fvec(&mut r, cout * n);
        let (mut m1, mut m2) = (vec![0.0; cout * n], vec![0.0; cout * n]);
        switch::materialize_f32(&w0, &slow, &mut m1);
        switch::materialize_f32(&w0, &fast, &mut m2);
        assert!(m1.iter().zip(&m2).all(|(p, q)| p.to_bits() == q.to_bits()));
        let w0q: Vec<i8> = (0..cout * n).map(|_| r.gen_range(-127..=127)).collect();
        let s0: Vec<f32> = (0..cout).map(|_| r.gen_range(0.001..0.02)).collect();
        let mut scratch = vec![0.0; n];
        let (mut q1, mut s1) = (vec![0i8; cout * n], vec![0.0; cout]);
        let (mut q2, mut s2) = (vec![0i8; cout * n], vec![0.0; cout]);
        switch::materialize_i8(&w0q, &s0, &slow, &mut scratch, &mut q1, &mut s1);
        switch::materialize_i8(&w0q, &s0, &fast, &mut scratch, &mut q2, &mut s2);
        assert_eq!(q1, q2);
        assert!(s1.iter().zip(&s2).all(|(p, q)| p.to_bits() == q.to_bits()));
        // Streaming paths: the same bits from either view.
        let g = Geom {
            h: 3,
            w: 4,
            in_stride: cin + 2,
            c_off: 1,
            cin,
            ho: 3,
            wo: 4,
            cout,
            k,
            stride: 1,
            pad: k / 2,
        };
        let x = fvec(&mut r, g.in_len());
        let bias = fvec(&mut r, cout);
        if k == 1 {
            let (mut u1, mut u2) = (vec![0.0; 12 * rank], vec![0.0; 12 * rank]);
            switch::lowrank_u(&g, &x, |v| v, &slow.a, &mut u1);
            switch::lowrank_u(&g, &x, |v| v, &fast.a, &mut u2);
            assert!(u1.iter().zip(&u2).all(|(p, q)| p.to_bits() == q.to_bits()));
            let (mut y1, mut y2) = (bias.repeat(12), bias.repeat(12));
            switch::lowrank_add_f32(&g, &u1, &slow.b, true, &mut y1);
            switch::lowrank_add_f32(&g, &u2, &fast.b, true, &mut y2);
            assert!(y1.iter().zip(&y2).all(|(p, q)| p.to_bits() == q.to_bits()));
        }
        let xq = qvec(&mut r, g.in_len(), -128);
        let st = switch::StreamI8 {
            x: QParams {
                scale: 0.05,
                zero_point: 3,
            },
            y: QParams {
                scale: 0.1,
                zero_point: -7,
            },
            relu: case % 3 == 0,
        };
        let (mut y1, mut y2) = (vec![0i8; g.out_len()], vec![0i8; g.out_len()]);
        let mut u = vec![0.0; (12 * rank).max(cout * n)];
        if k == 1 {
            let dot = dot_i8_ref;
            switch::stream_conv1x1_i8(dot, &g, &xq, &w0q, &s0, &bias, &slow, st, &mut u, &mut y1);
            switch::stream_conv1x1_i8(dot, &g, &xq, &w0q, &s0, &bias, &fast, st, &mut u, &mut y2);
            // The GEMM path (every kernel table) gives the same bytes.
            for k in lorkd_runtime::kernels::Kernels::available()
                .into_iter()
                .flatten()
            {
                let mut y3 = vec![0i8; g.out_len()];
                let mut scratch = vec![0.0; slow.decoded_len() + 12 * rank];
                switch::stream_conv1x1_i8_gemm(
                    &k,
                    &g,
                    &xq,
                    &w0q,
                    &s0,
                    &bias,
                    &slow,
                    st,
                    &mut scratch,
                    &mut y3,
                )
                .unwrap();
                assert_eq!(y1, y3, "{k:?} {g:?}");
            }
            assert_eq!(y1, y2, "{g:?}");
        }
    }
}
