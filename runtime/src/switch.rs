//! Department switch: `W_t = W0 + reshape(B_t·A_t, [Cout, Cin, k, k])` (the paper's Eq. 1
//! at deployment, BN scale and LoRA scaling already folded into `B_t`'s rows).
//!
//! Never unmerge: every switch rebuilds `W_t` from the pristine `W0` of the bundle, so
//! select A, B, A gives A's weights bit for bit (subtracting a delta from rounded or
//! quantised weights drifts with every switch). int8 weights are dequantised per output
//! channel, the delta added in f32, and the sum re-quantised per output channel
//! (symmetric, ±127).
//!
//! Row-major reshape means output channel `o`'s `Cin·k·k` weights (OIHW order) are exactly
//! rows `o·k .. o·k + k` of `B·A` laid end to end, so one channel is `B[o·k..o·k+k, :] · A`.
//! Streaming mode never forms `ΔW` for 1x1 convs: it adds the low-rank path `B·(A·x)`.
#![deny(unsafe_code)]

use crate::format::{DeltaDType, DeltaRef, TensorRef};
use crate::kernels::Geom;
use crate::quant::{round_f32, QParams};

/// A low-rank factor `[rows, cols]` read in place from a delta payload (f32, f16 or int8
/// rows with one f16 scale per row after them). Elements are decoded on read, so the
/// payload needs no alignment.
#[derive(Clone, Copy, Debug)]
pub struct Factor<'a> {
    bytes: &'a [u8],
    dtype: DeltaDType,
    pub rows: usize,
    pub cols: usize,
}

impl<'a> Factor<'a> {
    /// The factor at `t` in `payload`; `None` if `t` does not hold exactly `rows·cols`
    /// elements of `dtype` (plus the row scales for int8).
    pub fn new(
        payload: &'a [u8],
        t: TensorRef,
        dtype: DeltaDType,
        rows: usize,
        cols: usize,
    ) -> Option<Self> {
        let n = rows.checked_mul(cols)?;
        let need = match dtype {
            DeltaDType::F32 => n.checked_mul(4)?,
            DeltaDType::F16 => n.checked_mul(2)?,
            DeltaDType::I8 => n.checked_add(rows.checked_mul(2)?)?,
        };
        let start = t.offset as usize;
        let bytes = payload.get(start..start.checked_add(t.len as usize)?)?;
        (bytes.len() == need).then_some(Factor {
            bytes,
            dtype,
            rows,
            cols,
        })
    }

    /// Element `(i, j)`; callers keep `i < rows`, `j < cols`.
    #[inline]
    pub fn get(&self, i: usize, j: usize) -> f32 {
        let n = i * self.cols + j;
        match self.dtype {
            DeltaDType::F32 => {
                let b = &self.bytes[4 * n..4 * n + 4];
                f32::from_le_bytes([b[0], b[1], b[2], b[3]])
            }
            DeltaDType::F16 => half::f16::from_bits(u16::from_le_bytes([
                self.bytes[2 * n],
                self.bytes[2 * n + 1],
            ]))
            .to_f32(),
            DeltaDType::I8 => self.bytes[n] as i8 as f32 * self.row_scale(i),
        }
    }

    #[inline]
    fn row_scale(&self, i: usize) -> f32 {
        let o = self.rows * self.cols + 2 * i;
        half::f16::from_le_bytes([self.bytes[o], self.bytes[o + 1]]).to_f32()
    }

    /// The elements as an f32 slice when stored as f32 and 4-aligned in memory (the fast
    /// path of the loops below; other storage decodes per element).
    #[inline]
    pub fn as_f32(&self) -> Option<&'a [f32]> {
        match self.dtype {
            DeltaDType::F32 => bytemuck::try_cast_slice(self.bytes).ok(),
            _ => None,
        }
    }

    /// Decodes row `i` into `out[..cols]`.
    pub fn row_into(&self, i: usize, out: &mut [f32]) {
        match self.dtype {
            DeltaDType::F32 => {
                let b = &self.bytes[4 * i * self.cols..][..4 * self.cols];
                for (o, c) in out.iter_mut().zip(b.chunks_exact(4)) {
                    *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                }
            }
            _ => {
                for (j, o) in out[..self.cols].iter_mut().enumerate() {
                    *o = self.get(i, j);
                }
            }
        }
    }
}

/// The two factors of one expert conv: `A [r·k, Cin·k]`, `B [Cout·k, r·k]`.
#[derive(Clone, Copy, Debug)]
pub struct Delta<'a> {
    pub a: Factor<'a>,
    pub b: Factor<'a>,
    pub cout: usize,
    pub cin: usize,
    pub k: usize,
}

impl<'a> Delta<'a> {
    /// Views the factors of `d`, checking their byte lengths against the conv's shape.
    pub fn new(
        payload: &'a [u8],
        d: DeltaRef,
        dtype: DeltaDType,
        cout: usize,
        cin: usize,
        k: usize,
        rank: usize,
    ) -> Option<Self> {
        let rk = rank.checked_mul(k)?;
        let a = Factor::new(payload, d.a, dtype, rk, cin.checked_mul(k)?)?;
        let b = Factor::new(payload, d.b, dtype, cout.checked_mul(k)?, rk)?;
        Some(Delta { a, b, cout, cin, k })
    }

    /// `ΔW[o]` (the `Cin·k·k` weights of output channel `o`, OIHW order) into `out`:
    /// rows `o·k .. o·k+k` of `B·A`.
    pub fn channel_into(&self, o: usize, out: &mut [f32]) {
        let (rk, ck) = (self.a.rows, self.a.cols);
        let out = &mut out[..self.k * ck];
        out.fill(0.0);
        let a32 = self.a.as_f32();
        for r in 0..self.k {
            let row = &mut out[r * ck..][..ck];
            for j in 0..rk {
                let bij = self.b.get(o * self.k + r, j);
                if bij == 0.0 {
                    continue;
                }
                match a32 {
                    Some(a) => {
                        for (v, &aj) in row.iter_mut().zip(&a[j * ck..][..ck]) {
                            *v += bij * aj;
                        }
                    }
                    None => {
                        for (c, v) in row.iter_mut().enumerate() {
                            *v += bij * self.a.get(j, c);
                        }
                    }
                }
            }
        }
    }

    /// Elements of one output channel's weight: `Cin·k·k`.
    pub const fn channel_len(&self) -> usize {
        self.cin * self.k * self.k
    }
}

/// f32 materialisation: `out = W0 + ΔW`, channel by channel, from the pristine `w0`.
/// `out` and `w0` hold `Cout·Cin·k·k` elements.
pub fn materialize_f32(w0: &[f32], d: &Delta<'_>, out: &mut [f32]) {
    let n = d.channel_len();
    for o in 0..d.cout {
        let dst = &mut out[o * n..][..n];
        d.channel_into(o, dst);
        for (v, &w) in dst.iter_mut().zip(&w0[o * n..][..n]) {
            *v += w;
        }
    }
}

/// int8 materialisation, per output channel `o`: `w = s0[o]·W0q[o] + ΔW[o]` in f32 (in
/// `scratch`, `Cin·k·k` elements), then `s[o] = max|w| / 127` and `q = round(w / s[o])`
/// clamped to ±127. A channel that is all zero gets `s = 1`.
/// (`w / s` is computed as `w · (1/s)`; the result stays within half a step plus an ulp.)
pub fn materialize_i8(
    w0: &[i8],
    s0: &[f32],
    d: &Delta<'_>,
    scratch: &mut [f32],
    out: &mut [i8],
    out_scale: &mut [f32],
) {
    let n = d.channel_len();
    let scratch = &mut scratch[..n];
    for o in 0..d.cout {
        d.channel_into(o, scratch);
        let mut amax = 0.0f32;
        for (v, &q) in scratch.iter_mut().zip(&w0[o * n..][..n]) {
            *v += s0[o] * q as f32;
            amax = amax.max(v.abs());
        }
        let s = if amax > 0.0 { amax / 127.0 } else { 1.0 };
        out_scale[o] = s;
        let inv = 1.0 / s;
        for (q, &v) in out[o * n..][..n].iter_mut().zip(scratch.iter()) {
            *q = round_f32(v * inv).clamp(-127.0, 127.0) as i8;
        }
    }
}

/// Streaming low-rank path, first half (k = 1): `u[p, j] = Σ_c A[j, c] · x[p, c]` over the
/// (strided) output pixels `p`; `x` read through `load` (identity for f32, dequantise for
/// int8). `u` holds `ho·wo·r` elements.
pub fn lowrank_u<T: Copy>(
    g: &Geom,
    x: &[T],
    load: impl Fn(T) -> f32,
    a: &Factor<'_>,
    u: &mut [f32],
) {
    let r = a.rows;
    for oy in 0..g.ho {
        for ox in 0..g.wo {
            let px = &x[(oy * g.stride * g.w + ox * g.stride) * g.in_stride + g.c_off..][..g.cin];
            let up = &mut u[(oy * g.wo + ox) * r..][..r];
            for (j, uj) in up.iter_mut().enumerate() {
                let mut acc = 0.0;
                match a.as_f32() {
                    Some(a) => {
                        for (&aj, &xv) in a[j * g.cin..][..g.cin].iter().zip(px) {
                            acc += aj * load(xv);
                        }
                    }
                    None => {
                        for (c, &xv) in px.iter().enumerate() {
                            acc += a.get(j, c) * load(xv);
                        }
                    }
                }
                *uj = acc;
            }
        }
    }
}

/// Streaming low-rank path, second half (k = 1): `y[p, o] += Σ_j B[o, j] · u[p, j]`, then
/// ReLU if asked (the W0 path ran without it).
pub fn lowrank_add_f32(g: &Geom, u: &[f32], b: &Factor<'_>, relu: bool, y: &mut [f32]) {
    let r = b.cols;
    for p in 0..g.ho * g.wo {
        let up = &u[p * r..][..r];
        for (o, yo) in y[p * g.cout..][..g.cout].iter_mut().enumerate() {
            let mut acc = *yo;
            match b.as_f32() {
                Some(b) => {
                    for (&bj, &uj) in b[o * r..][..r].iter().zip(up) {
                        acc += bj * uj;
                    }
                }
                None => {
                    for (j, &uj) in up.iter().enumerate() {
                        acc += b.get(o, j) * uj;
                    }
                }
            }
            *yo = if relu { acc.max(0.0) } else { acc };
        }
    }
}

/// Streaming k×k conv, f32 (the stem): for each output channel `o`, `ΔW[o]` is formed on
/// the fly in `wbuf` (`Cin·k·k`) and its conv added to `y` (which holds the `W0` conv,
/// without ReLU); then ReLU if asked.
pub fn stream_conv_add_f32(
    g: &Geom,
    x: &[f32],
    d: &Delta<'_>,
    relu: bool,
    wbuf: &mut [f32],
    y: &mut [f32],
) {
    let wbuf = &mut wbuf[..d.channel_len()];
    for o in 0..g.cout {
        d.channel_into(o, wbuf);
        for oy in 0..g.ho {
            for ox in 0..g.wo {
                let acc = window_dot(g, oy, ox, wbuf, x, |v| v);
                let yo = &mut y[(oy * g.wo + ox) * g.cout + o];
                let v = *yo + acc;
                *yo = if relu { v.max(0.0) } else { v };
            }
        }
    }
}

/// `Σ_{c,ky,kx} w[c,ky,kx] · load(x[oy·s+ky−p, ox·s+kx−p, c_off+c])` over the taps inside.
#[inline]
fn window_dot<T: Copy>(
    g: &Geom,
    oy: usize,
    ox: usize,
    w: &[f32],
    x: &[T],
    load: impl Fn(T) -> f32,
) -> f32 {
    let kk = g.k * g.k;
    let mut acc = 0.0;
    for ky in 0..g.k {
        let Some(iy) = Geom::tap(oy, ky, g.stride, g.pad, g.h) else {
            continue;
        };
        for kx in 0..g.k {
            let Some(ix) = Geom::tap(ox, kx, g.stride, g.pad, g.w) else {
                continue;
            };
            let px = &x[(iy * g.w + ix) * g.in_stride + g.c_off..][..g.cin];
            for (c, &xv) in px.iter().enumerate() {
                acc += w[c * kk + ky * g.k + kx] * load(xv);
            }
        }
    }
    acc
}

/// Quantisation of the streaming int8 convs: input and output activations, fused ReLU.
#[derive(Clone, Copy, Debug)]
pub struct StreamI8 {
    pub x: QParams,
    pub y: QParams,
    pub relu: bool,
}

impl StreamI8 {
    #[inline]
    fn out(&self, v: f32) -> i8 {
        self.y.quantize(if self.relu { v.max(0.0) } else { v })
    }
}

/// Streaming int8 1x1 expert conv: the `W0` path in integers (`acc = Σ W0q·(x − zx)`), the
/// low-rank path in f32 on the dequantised input, summed in f32 and quantised once:
/// `y = q(s_x·s_w[o]·acc + bias[o] + Σ_j B[o,j]·u[p,j])`, `u = A·deq(x)` (in `u`).
/// Not bit-equal to the materialized path (which re-quantises `W0 + ΔW`); see the tests
/// for the bound.
#[allow(clippy::too_many_arguments)]
pub fn stream_conv1x1_i8(
    g: &Geom,
    x: &[i8],
    w0: &[i8],
    ws: &[f32],
    bias: &[f32],
    d: &Delta<'_>,
    st: StreamI8,
    u: &mut [f32],
    y: &mut [i8],
) {
    lowrank_u(g, x, |q| st.x.dequantize(q), &d.a, u);
    let (zx, r) = (st.x.zero_point, d.a.rows);
    let b32 = d.b.as_f32();
    for oy in 0..g.ho {
        for ox in 0..g.wo {
            let p = oy * g.wo + ox;
            let px = &x[(oy * g.stride * g.w + ox * g.stride) * g.in_stride + g.c_off..][..g.cin];
            let up = &u[p * r..][..r];
            for (o, yo) in y[p * g.cout..][..g.cout].iter_mut().enumerate() {
                let mut acc = 0i32;
                for (&a, &b) in w0[o * g.cin..][..g.cin].iter().zip(px) {
                    acc += a as i32 * (b as i32 - zx);
                }
                let mut v = acc as f32 * (st.x.scale * ws[o]) + bias[o];
                match b32 {
                    Some(b) => {
                        for (&bj, &uj) in b[o * r..][..r].iter().zip(up) {
                            v += bj * uj;
                        }
                    }
                    None => {
                        for (j, &uj) in up.iter().enumerate() {
                            v += d.b.get(o, j) * uj;
                        }
                    }
                }
                *yo = st.out(v);
            }
        }
    }
}

/// Streaming int8 k×k expert conv (the stem): per output channel `o` the f32 weight
/// `s_w[o]·W0q[o] + ΔW[o]` is formed in `wbuf` and applied to the dequantised input.
#[allow(clippy::too_many_arguments)]
pub fn stream_conv_i8(
    g: &Geom,
    x: &[i8],
    w0: &[i8],
    ws: &[f32],
    bias: &[f32],
    d: &Delta<'_>,
    st: StreamI8,
    wbuf: &mut [f32],
    y: &mut [i8],
) {
    let n = d.channel_len();
    let wbuf = &mut wbuf[..n];
    for o in 0..g.cout {
        d.channel_into(o, wbuf);
        for (v, &q) in wbuf.iter_mut().zip(&w0[o * n..][..n]) {
            *v += ws[o] * q as f32;
        }
        for oy in 0..g.ho {
            for ox in 0..g.wo {
                let v = bias[o] + window_dot(g, oy, ox, wbuf, x, |q| st.x.dequantize(q));
                y[(oy * g.wo + ox) * g.cout + o] = st.out(v);
            }
        }
    }
}
