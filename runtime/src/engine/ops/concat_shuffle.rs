//! `Op::ConcatShuffle`: `concat(a, b)` then channel shuffle with 2 groups
//! (`out[2i] = a[i]`, `out[2i+1] = b[i]`); an int8 input not already in the output's
//! quantisation is rescaled to it on the way.

use super::{f32s, f32s_mut, i8s, i8s_mut, io, rescale_into, rescale_one, rescale_table, Ctx, R};
use crate::engine::par::{Stage, Then, ThenFn};
use crate::engine::EngineError;
use crate::format::{validate, Op};
use crate::kernels::reference as k;
use crate::kernels::ConcatShuffleI8;
use crate::quant::QParams;
use core::ops::Range;
use k::concat_shuffle::ConcatIn;

/// A `ConcatShuffle` checked and ready to run: its geometry, quantisation and arena ranges.
pub(in crate::engine) struct Prepared {
    /// Its output value.
    pub output: u16,
    /// Arena byte ranges of `a`, `b` and the output.
    pub ra: Range<usize>,
    pub rb: Range<usize>,
    pub rout: Range<usize>,
    /// Channels from each side, output pixels.
    pub c: usize,
    pub n: usize,
    /// Each side's first channel and pixel stride.
    ao: usize,
    bo: usize,
    pub sa: usize,
    pub sb: usize,
    /// int8: the quantisation of `a`, `b` and the output.
    q: Option<(QParams, QParams, QParams)>,
    /// int8: rescale through a 256-entry table (decided for the whole op, so a split runs the
    /// same form in every part).
    table: bool,
}

/// Checks op `i`, a `ConcatShuffle`.
pub(in crate::engine) fn prepare(cx: &Ctx<'_, '_>, i: usize, op: &Op) -> R<Prepared> {
    let bad = EngineError::Malformed { op: i };
    let Op::ConcatShuffle { a, b, output } = *op else {
        return Err(bad);
    };
    let (va, vb, vout) = (
        cx.value(a.value, i)?,
        cx.value(b.value, i)?,
        cx.value(output, i)?,
    );
    if !validate::concat_shape_ok(&va, &a, &vb, &b, &vout) {
        return Err(bad);
    }
    let q = if cx.int8 {
        Some((
            cx.qparams(a.value, i)?,
            cx.qparams(b.value, i)?,
            cx.qparams(output, i)?,
        ))
    } else {
        None
    };
    let (c, n) = (a.c_len as usize, vout.h as usize * vout.w as usize);
    Ok(Prepared {
        output,
        ra: cx.range(&va, i)?,
        rb: cx.range(&vb, i)?,
        rout: cx.range(&vout, i)?,
        c,
        n,
        ao: a.c_off as usize,
        bo: b.c_off as usize,
        sa: va.c as usize,
        sb: vb.c as usize,
        q,
        table: n * c > 256,
    })
}

impl Prepared {
    /// Output elements (both sides' channels a pixel).
    pub fn out_len(&self) -> usize {
        self.n * 2 * self.c
    }

    /// int8: the output pixels in `y` (whole pixels), `xa` and `xb` starting at their first.
    pub fn run_i8(&self, kern: Option<ConcatShuffleI8>, xa: &[i8], xb: &[i8], y: &mut [i8]) {
        let Some((qa, qb, qy)) = self.q else {
            return;
        };
        let (c, n) = (self.c, y.len() / (2 * self.c).max(1));
        let side = |x, stride, off, q| ConcatIn { x, stride, off, q };
        let (ia, ib) = (
            side(xa, self.sa, self.ao, qa),
            side(xb, self.sb, self.bo, qb),
        );
        if !kern.is_some_and(|f| f(n, c, ia, ib, qy, y)) {
            portable_i8(n, c, ia, ib, qy, self.table, y);
        }
    }

    /// f32: as [`Self::run_i8`].
    pub fn run_f32(&self, xa: &[f32], xb: &[f32], y: &mut [f32]) {
        let (c, n) = (self.c, y.len() / (2 * self.c).max(1));
        k::concat_shuffle::concat_shuffle(n, c, xa, self.sa, self.ao, xb, self.sb, self.bo, y)
    }

    /// The work of output pixels `y` for [`crate::engine::par::Par::rows`]: a copy with a
    /// rescale, a few operations a byte.
    pub fn work(&self) -> usize {
        4 * self.out_len()
    }

    /// This op fused after the conv that writes its side `b` ([`Then`]): `f` runs it on a
    /// run of pixels into `out`, the op's output.
    pub fn then<'a, T>(&self, out: &'a mut [T], f: &'a ThenFn<'a, T>) -> Then<'a, T> {
        Then {
            cat: Stage {
                out,
                unit: 2 * self.c,
                work: self.work(),
                f,
            },
            post: None,
        }
    }
}

/// Runs op `i`, a `ConcatShuffle`.
pub(in crate::engine) fn eval(cx: &mut Ctx<'_, '_>, i: usize, op: &Op) -> R<()> {
    let bad = EngineError::Malformed { op: i };
    let p = prepare(cx, i, op)?;
    let (y, [xa, xb]) = io(cx.act, p.rout.clone(), [p.ra.clone(), p.rb.clone()], i)?;
    let (len, work, sa, sb) = (p.out_len(), p.work(), p.sa, p.sb);
    if cx.int8 {
        let y = i8s_mut(y).get_mut(..len).ok_or(bad)?;
        let (xa, xb, kern) = (i8s(xa), i8s(xb), cx.kern.concat_shuffle_i8);
        cx.par.rows(y, 2 * p.c, work, |p0, y| {
            p.run_i8(kern, &xa[p0 * sa..], &xb[p0 * sb..], y)
        });
    } else {
        let y = f32s_mut(y)?.get_mut(..len).ok_or(bad)?;
        let (xa, xb) = (f32s(xa)?, f32s(xb)?);
        cx.par.rows(y, 2 * p.c, work, |p0, y| {
            p.run_f32(&xa[p0 * sa..], &xb[p0 * sb..], y)
        });
        (cx.observe)(p.output as usize, y);
    }
    Ok(())
}

/// `k::concat_shuffle::concat_shuffle_i8`'s bytes, portably: a side already in `qy` copied,
/// the other rescaled — with `table`, through a 256-entry table of [`rescale_one`] in the
/// copy itself (a few hundred values to build against thousands of codes), else code by
/// code (on x86_64 a block of a pixel's channels at a time, vectorised; Cortex-M counts
/// fewer instructions one code at a time straight into `y`).
pub(super) fn portable_i8(
    n: usize,
    c: usize,
    a: ConcatIn<'_>,
    b: ConcatIn<'_>,
    qy: QParams,
    table: bool,
    y: &mut [i8],
) {
    if c == 0 {
        return;
    }
    let (ca, cb) = (a.q == qy, b.q == qy);
    let (xa, sa, ao, xb, sb, bo) = (a.x, a.stride, a.off, b.x, b.stride, b.off);
    // One loop per mix, a copied side's map the identity (`$fa`/`$fb` are built only in
    // the arms that use them).
    macro_rules! each {
        ($fa:expr, $fb:expr) => {
            match (ca, cb) {
                (true, true) => k::concat_shuffle::concat_shuffle(n, c, xa, sa, ao, xb, sb, bo, y),
                (true, false) => interleave_each(n, c, xa, sa, ao, xb, sb, bo, y, |v| v, $fb),
                (false, true) => interleave_each(n, c, xa, sa, ao, xb, sb, bo, y, $fa, |v| v),
                (false, false) => interleave_each(n, c, xa, sa, ao, xb, sb, bo, y, $fa, $fb),
            }
        };
    }
    let lut = |q| {
        let t = rescale_table(q, qy);
        move |v: i8| t[v as u8 as usize]
    };
    if table || ca && cb {
        each!(lut(a.q), lut(b.q));
    } else if cfg!(target_arch = "x86_64") {
        let f = |q, copy| {
            move |x: &[i8], o: &mut [i8]| {
                if copy {
                    o.copy_from_slice(x)
                } else {
                    rescale_into(x, q, qy, o)
                }
            }
        };
        interleave(n, c, xa, sa, ao, xb, sb, bo, y, f(a.q, ca), f(b.q, cb));
    } else {
        let f = |q| move |v| rescale_one(v, q, qy);
        each!(f(a.q), f(b.q));
    }
}

/// [`k::concat_shuffle::concat_shuffle`] with each side's codes mapped on the way
/// (`y[p, 2i] = fa(a[p, i])`, `y[p, 2i+1] = fb(b[p, i])`, a pixel's channels in blocks of
/// [`BLK`]): one pass instead of a copy and a rescale pass over `y`.
#[allow(clippy::too_many_arguments)]
fn interleave(
    n: usize,
    c: usize,
    a: &[i8],
    a_stride: usize,
    a_off: usize,
    b: &[i8],
    b_stride: usize,
    b_off: usize,
    y: &mut [i8],
    fa: impl Fn(&[i8], &mut [i8]),
    fb: impl Fn(&[i8], &mut [i8]),
) {
    const BLK: usize = 64;
    let (mut ma, mut mb) = ([0i8; BLK], [0i8; BLK]);
    for (p, out) in y.chunks_exact_mut(2 * c).take(n).enumerate() {
        let pa = &a[p * a_stride + a_off..][..c];
        let pb = &b[p * b_stride + b_off..][..c];
        for ((out, xa), xb) in out
            .chunks_mut(2 * BLK)
            .zip(pa.chunks(BLK))
            .zip(pb.chunks(BLK))
        {
            let m = xa.len();
            fa(xa, &mut ma[..m]);
            fb(xb, &mut mb[..m]);
            let pairs = out.as_chunks_mut::<2>().0.iter_mut();
            for ((o, &va), &vb) in pairs.zip(&ma[..m]).zip(&mb[..m]) {
                *o = [va, vb];
            }
        }
    }
}

/// [`k::concat_shuffle::concat_shuffle`] with each element mapped on the way
/// (`y[p, 2i] = fa(a[p, i])`, `y[p, 2i+1] = fb(b[p, i])`): one pass instead of a copy and
/// a rescale pass over `y`.
#[allow(clippy::too_many_arguments)]
fn interleave_each(
    n: usize,
    c: usize,
    a: &[i8],
    a_stride: usize,
    a_off: usize,
    b: &[i8],
    b_stride: usize,
    b_off: usize,
    y: &mut [i8],
    fa: impl Fn(i8) -> i8,
    fb: impl Fn(i8) -> i8,
) {
    for (p, out) in y.chunks_exact_mut(2 * c).take(n).enumerate() {
        let pa = &a[p * a_stride + a_off..][..c];
        let pb = &b[p * b_stride + b_off..][..c];
        for ((o, &va), &vb) in out.as_chunks_mut::<2>().0.iter_mut().zip(pa).zip(pb) {
            *o = [fa(va), fb(vb)];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::testnet::Rng;

    /// The engine's portable int8 concat gives the reference's bytes in every form (table,
    /// code by code) and every mix of copied and rescaled sides, on random shapes with
    /// channel offsets and wider strides, scales over many octaves and near the f32 ends
    /// (where a copy and a rescale differ), zero points far out; nothing past `n · 2c`.
    #[test]
    fn portable_i8_is_the_reference() {
        let seed = crate::test_seed();
        let mut r = Rng::new(seed);
        let mut mixes = [0usize; 4];
        for _ in 0..3000 {
            let (n, c) = (r.below(24), r.below(48));
            let mut q = || QParams {
                scale: match r.below(20) {
                    0 => 1e-38,
                    1 => 3e38,
                    _ => 2f32.powf(r.uniform(12.0)) * (1.0 + r.uniform(0.5)),
                },
                zero_point: match r.below(8) {
                    0 => r.below(1 << 20) as i32 - (1 << 19),
                    _ => r.below(256) as i32 - 128,
                },
            };
            let qy = q();
            let (qa, qb) = (q(), q());
            let (ca, cb) = (r.below(2) == 0, r.below(2) == 0);
            let (qa, qb) = (if ca { qy } else { qa }, if cb { qy } else { qb });
            mixes[2 * ca as usize + cb as usize] += 1;
            let mut side = |q| {
                let off = r.below(5);
                let stride = c + off + r.below(3);
                let x: std::vec::Vec<i8> =
                    (0..n * stride).map(|_| r.below(256) as u8 as i8).collect();
                (x, stride, off, q)
            };
            let (a, b) = (side(qa), side(qb));
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
            let mut want = std::vec![0x55i8; n * 2 * c + 3];
            k::concat_shuffle::concat_shuffle_i8(n, c, ia, ib, qy, &mut want);
            for table in [false, true] {
                let mut got = std::vec![0x55i8; n * 2 * c + 3];
                portable_i8(n, c, ia, ib, qy, table, &mut got[..n * 2 * c]);
                assert_eq!(
                    got, want,
                    "seed {seed}: table {table}, n {n} c {c} {qa:?} {qb:?} -> {qy:?}"
                );
            }
        }
        assert!(mixes.iter().all(|&m| m > 500), "{mixes:?}");
    }
}
