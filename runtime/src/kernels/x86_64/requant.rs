//! AVX2 twin of `quant::requant` for 8 output channels at once — TFLite's
//! `MultiplyByQuantizedMultiplier` (shift left, `SaturatingRoundingDoublingHighMul`,
//! `RoundingDivideByPOT`), the zero point added with saturation, the clamp — bit-exact for
//! every input (the unit test sweeps edges and random values). The high multiply runs as two
//! `vpmuldq` ([`mul_epi32`]: even and odd lanes in i64). Convs whose channels are all "plain"
//! (multiplier ≥ 0, shift ≤ 0, output zero point in i8: what calibration makes) take
//! [`requant8_plain`]: the high multiply and the rounding shift as one 64-bit floor, 14
//! instructions per 8 outputs instead of 21 plus the bias add, their parameters laid out
//! per conv call by [`RqCols`] in lanes; the AVX-512 table's 16-lane forms are
//! [`requant16_plain`] and [`requant16`] ([`Out16`] picks one per conv).
use core::arch::x86_64::*;
use core::mem::MaybeUninit;

use crate::kernels::OutQ;

/// The per-channel requant parameters as lanes: bias and multiplier, and the shift split
/// the way [`requant8`] applies it (left exponent, right exponent, the right shift's
/// remainder mask and half of it), so no lane work per call goes into the shift.
#[derive(Clone, Copy)]
pub(super) struct Rq8 {
    pub bias: __m256i,
    pub mult: __m256i,
    pub left: __m256i,
    pub right: __m256i,
    pub mask: __m256i,
    pub half: __m256i,
}

/// [`requant8_plain`]'s (`V = __m256i`: 8 channels, [`RqCols::plain8`]) and
/// [`requant16_plain`]'s (`__m512i`: 16, [`RqCols::plain16`]) parameters: the biases (the
/// 16-lane form adds them; the 8-lane form's callers start their sums at them), the
/// multipliers (and one channel on, so the odd channels' sit in the 64-bit lanes' low
/// halves), the even (`[0]`) and odd (`[1]`) channels' addends (for a product `≥ 0`, `< 0`)
/// and shifts, the unsigned clamp's ends and the add after it.
#[derive(Clone, Copy)]
pub(super) struct Plain<V> {
    pub bias: V,
    pub mult: V,
    pub mult_odd: V,
    pub pos: [V; 2],
    pub neg: [V; 2],
    pub count: [V; 2],
    pub lo: V,
    pub hi: V,
    pub add: V,
}

pub(super) type Plain8 = Plain<__m256i>;
pub(super) type Plain16 = Plain<__m512i>;

/// A vector of [`Lanes::N`] i32 lanes loaded from any address ([`RqCols::plain_lanes`]).
trait Lanes: Copy {
    const N: usize;
    /// # Safety
    /// The vector's target feature available; `p` readable for `4·N` bytes.
    unsafe fn load<T>(p: *const T) -> Self;
}

impl Lanes for __m256i {
    const N: usize = 8;
    // Inlined into target-feature callers (no feature of its own: `inline(always)`).
    #[inline(always)]
    unsafe fn load<T>(p: *const T) -> Self {
        // SAFETY: this function's contract.
        unsafe { _mm256_loadu_si256(p.cast()) }
    }
}

impl Lanes for __m512i {
    const N: usize = 16;
    #[inline(always)]
    unsafe fn load<T>(p: *const T) -> Self {
        // SAFETY: this function's contract.
        unsafe { _mm512_loadu_si512(p.cast()) }
    }
}

impl Rq8 {
    /// The parameters of channels `rq[0..8]`: the `[bias, multiplier, shift]` triples
    /// transposed into lanes ([`columns3`]), the shift split in lanes.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(super) fn gather(rq: &[[i32; 3]]) -> Self {
        let [bias, mult, shift] = columns3(rq);
        Rq8::new(bias, mult, shift)
    }

    /// The lanes of parameters `bias`, `mult`, `shift`, the shift split into the left
    /// exponent `max(shift, 0) & 31` (a wrapping shift), the right exponent
    /// `clamp(−shift, 0, 31)`, `mask = 2^right − 1` and `mask >> 1`.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn new(bias: __m256i, mult: __m256i, shift: __m256i) -> Self {
        let zero = _mm256_setzero_si256();
        let left = _mm256_and_si256(_mm256_max_epi32(shift, zero), _mm256_set1_epi32(31));
        let right = _mm256_min_epi32(
            _mm256_max_epi32(_mm256_sub_epi32(zero, shift), zero),
            _mm256_set1_epi32(31),
        );
        let one = _mm256_set1_epi32(1);
        let mask = _mm256_sub_epi32(_mm256_sllv_epi32(one, right), one);
        Rq8 {
            bias,
            mult,
            left,
            right,
            mask,
            half: _mm256_srli_epi32(mask, 1),
        }
    }
}

/// The biases, multipliers and shifts of `rq[0..8]` as lanes: the 24 words in three
/// loads, each column three permutes (`vpermd`) and two blends (three strided gathers
/// cost more, and every kernel call transposes all its channels' triples).
#[inline]
#[target_feature(enable = "avx2")]
fn columns3(rq: &[[i32; 3]]) -> [__m256i; 3] {
    let rq = &rq[..8];
    let p: *const __m256i = rq.as_ptr().cast();
    // SAFETY: `rq` holds 8 triples = 24 i32 = three 32-byte loads.
    let (a, b, c) = unsafe {
        (
            _mm256_loadu_si256(p),
            _mm256_loadu_si256(p.add(1)),
            _mm256_loadu_si256(p.add(2)),
        )
    };
    // Column `k`'s lane `j` is word `3j + k`: words 0–7 in `a`, 8–15 in `b`, 16–23 in `c`;
    // each register permuted so its words of the column sit in their lanes (`_`: a lane
    // the blends take from another), then the lanes blended.
    let perm = |v: __m256i, i: [i32; 8]| {
        _mm256_permutevar8x32_epi32(
            v,
            _mm256_setr_epi32(i[0], i[1], i[2], i[3], i[4], i[5], i[6], i[7]),
        )
    };
    const _X: i32 = 0;
    // Biases: words 0 3 6 | 9 12 15 | 18 21.
    let bias = _mm256_blend_epi32::<0b1100_0000>(
        _mm256_blend_epi32::<0b0011_1000>(
            perm(a, [0, 3, 6, _X, _X, _X, _X, _X]),
            perm(b, [_X, _X, _X, 1, 4, 7, _X, _X]),
        ),
        perm(c, [_X, _X, _X, _X, _X, _X, 2, 5]),
    );
    // Multipliers: words 1 4 7 | 10 13 | 16 19 22.
    let mult = _mm256_blend_epi32::<0b1110_0000>(
        _mm256_blend_epi32::<0b0001_1000>(
            perm(a, [1, 4, 7, _X, _X, _X, _X, _X]),
            perm(b, [_X, _X, _X, 2, 5, _X, _X, _X]),
        ),
        perm(c, [_X, _X, _X, _X, _X, 0, 3, 6]),
    );
    // Shifts: words 2 5 | 8 11 14 | 17 20 23.
    let shift = _mm256_blend_epi32::<0b1110_0000>(
        _mm256_blend_epi32::<0b0001_1100>(
            perm(a, [2, 5, _X, _X, _X, _X, _X, _X]),
            perm(b, [_X, _X, 0, 3, 6, _X, _X, _X]),
        ),
        perm(c, [_X, _X, _X, _X, _X, 1, 4, 7]),
    );
    [bias, mult, shift]
}

/// Widest conv whose parameters [`RqCols`] transposes on the stack (ShuffleNetV2: 1024).
pub(super) const MAXQ: usize = 1024;

/// [`RqCols`]' columns are this many i32 longer than [`MAXQ`] (one cache line): 4 KiB + 64 B
/// apart.
const COL_PAD: usize = 16;

/// One conv's `[bias, multiplier, shift]` triples as three columns, transposed once per
/// kernel call so that 8 channels' parameters are three plain loads (strided gathers per
/// output pixel cost more than the whole GEMM tile on some CPUs). Only the columns' first
/// [`RqCols::len`] entries are ever written or read: no 12 KB zeroing per call.
pub(super) struct RqCols {
    /// bias, multiplier, shift, then [`Rq8::new`]'s split of the shift, then (for a
    /// [`RqCols::plain`] conv) [`Plain8`]'s `lo`, `hi`, `add`. Each column
    /// [`COL_PAD`] entries longer than `MAXQ`: columns 4 KiB apart put a block's six loads
    /// in one L1 set (8 ways, with the tile's weights and inputs).
    t: [[MaybeUninit<i32>; MAXQ + COL_PAD]; 10],
    /// [`Plain8`]'s `pos`, `neg`, `count` (a plain conv only), each column split by
    /// the channel's parity — `[k][j % 2][j / 2]` — so 8 channels' even and odd lanes are
    /// one load each from any first channel.
    w: [[[MaybeUninit<i64>; MAXQ / 2 + COL_PAD]; 2]; 3],
    /// The channels given to [`Requant::new`], then zeros up to a multiple of 16 (the
    /// widest block a tile reads).
    len: usize,
    /// Every channel's shift is `≤ 0` and its multiplier `≥ 0` (every table
    /// `quant::requant_table` makes for scales with `s_x·s_w < s_y`), the output zero point
    /// and floor in [−128, 127] (as calibration makes them): the columns of
    /// [`requant8_plain`] are filled.
    plain: bool,
}

impl RqCols {
    /// Nothing filled yet; [`Requant::new`] fills the channels it is given.
    #[inline]
    pub(super) fn new() -> Self {
        RqCols {
            t: [[const { MaybeUninit::uninit() }; MAXQ + COL_PAD]; 10],
            w: [[[const { MaybeUninit::uninit() }; MAXQ / 2 + COL_PAD]; 2]; 3],
            len: 0,
            plain: false,
        }
    }

    /// Whether [`RqCols::plain8`] may be called (see the field).
    #[inline]
    pub(super) fn plain(&self) -> bool {
        self.plain
    }

    /// Column `k` (0 bias, 1 multiplier, 2 shift, 3–6 its split): its filled entries.
    #[inline]
    fn col(&self, k: usize) -> &[i32] {
        // SAFETY: `fill` wrote the first `len ≤ MAXQ` entries of every column.
        unsafe { core::slice::from_raw_parts(self.t[k].as_ptr().cast::<i32>(), self.len) }
    }

    /// The columns of `rq` (`rq.len() ≤ MAXQ`), zero past its end up to a multiple of 16;
    /// the plain form's too (for the output quantisation `q`) when every channel and `q`
    /// are plain. 8 channels a step in lanes: a conv of a few pixels fills as many
    /// channels as it requantises.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn fill(&mut self, rq: &[[i32; 3]], q: OutQ) {
        let len = rq.len().next_multiple_of(16).min(MAXQ);
        let (zp, lo) = (q.zero_point, q.lo.max(-128));
        self.plain = (-128..=127).contains(&zp)
            && lo <= 127
            && rq.iter().all(|&[_, m, sh]| m >= 0 && sh <= 0);
        for j in (0..len).step_by(8) {
            if let Some(r) = rq.get(j..j + 8) {
                self.fill8(j, r, zp, lo);
            } else {
                let mut pad = [[0i32; 3]; 8];
                let r = &rq[j.min(rq.len())..];
                pad[..r.len()].copy_from_slice(r);
                self.fill8(j, &pad, zp, lo);
            }
        }
        // `plain8` reads the multipliers one channel on (the odd lanes' low halves).
        self.t[1][len] = MaybeUninit::new(0);
        self.len = len;
    }

    /// [`RqCols::fill`] of channels `j .. j + 8` (`j` a multiple of 8) from `rq[0..8]`,
    /// output zero point `zp` and floor `lo`.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn fill8(&mut self, j: usize, rq: &[[i32; 3]], zp: i32, lo: i32) {
        let [bias, mult, shift] = columns3(rq);
        let r = Rq8::new(bias, mult, shift);
        let cols = [bias, mult, shift, r.left, r.right, r.mask, r.half];
        for (c, v) in self.t.iter_mut().zip(cols) {
            let c = &mut c[j..j + 8];
            // SAFETY: 8 i32 written into `c`'s 8.
            unsafe { _mm256_storeu_si256(c.as_mut_ptr().cast(), v) }
        }
        if !self.plain {
            return;
        }
        // The shifted value is `r' = r + k`, `k = 2^(31 − e)` ∈ [1, 2^31]; with `zp`, `lo`
        // in [−128, 127] the clamp's ends `lo − zp + k` (0 when below) and `127 − zp + k`
        // and the add `zp − k` are u32 (the low end kept ≥ 0 by a 256 offset).
        let e = r.right;
        let k = _mm256_sllv_epi32(
            _mm256_set1_epi32(1),
            _mm256_sub_epi32(_mm256_set1_epi32(31), e),
        );
        let off = _mm256_set1_epi32(256);
        let low = _mm256_add_epi32(_mm256_set1_epi32(lo - zp + 256), k);
        let low = _mm256_sub_epi32(_mm256_max_epu32(low, off), off);
        let high = _mm256_add_epi32(_mm256_set1_epi32(127 - zp), k);
        let add = _mm256_sub_epi32(_mm256_set1_epi32(zp), k);
        for (c, v) in self.t[7..].iter_mut().zip([low, high, add]) {
            let c = &mut c[j..j + 8];
            // SAFETY: 8 i32 written into `c`'s 8.
            unsafe { _mm256_storeu_si256(c.as_mut_ptr().cast(), v) }
        }
        // Per parity in 64-bit lanes: `pos = 2^62 + 2^30 + [e > 0]·2^(30+e)`, `neg = pos −
        // [e > 0]·2^31`, `count = 31 + e`.
        let evens = _mm256_and_si256(e, _mm256_set1_epi64x(0xffff_ffff));
        for (par, e) in [evens, _mm256_srli_epi64(e, 32)].into_iter().enumerate() {
            let on = _mm256_cmpgt_epi64(e, _mm256_setzero_si256());
            let half = _mm256_and_si256(_mm256_sllv_epi64(_mm256_set1_epi64x(1 << 30), e), on);
            let pos = _mm256_add_epi64(_mm256_set1_epi64x((1 << 62) + (1 << 30)), half);
            let neg = _mm256_sub_epi64(pos, _mm256_and_si256(on, _mm256_set1_epi64x(1 << 31)));
            let count = _mm256_add_epi64(e, _mm256_set1_epi64x(31));
            for (c, v) in self.w.iter_mut().zip([pos, neg, count]) {
                let c = &mut c[par][j / 2..j / 2 + 4];
                // SAFETY: 4 i64 written into `c`'s 4.
                unsafe { _mm256_storeu_si256(c.as_mut_ptr().cast(), v) }
            }
        }
    }

    /// The bias of channels `o0 .. o0 + 8` (as [`RqCols::lanes`]).
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(super) fn bias8(&self, o0: usize) -> __m256i {
        assert!(o0 + 8 <= self.len);
        // SAFETY: `o0 + 8 ≤ len`: 8 filled entries.
        unsafe { _mm256_loadu_si256(self.t[0].as_ptr().add(o0).cast()) }
    }

    /// `quant::requant` of channels `o0 .. o0 + 8` of the sums `acc` (no bias yet) as i32
    /// lanes in `[lo, 127]` (`q` the quantisation given to [`Requant::new`]): by
    /// [`requant8_plain`] when the columns are [`RqCols::plain`].
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(super) fn requant8(&self, acc: __m256i, o0: usize, q: OutQ) -> __m256i {
        let x = _mm256_add_epi32(acc, self.bias8(o0));
        if self.plain {
            requant8_plain(x, &self.plain8(o0))
        } else {
            requant8_sum(x, &self.lanes(o0), q)
        }
    }

    /// The plain form's parameters of channels `o0 .. o0 + 8` (the columns
    /// [`RqCols::plain`]).
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(super) fn plain8(&self, o0: usize) -> Plain8 {
        // SAFETY: AVX2 (this function's feature).
        unsafe { self.plain_lanes(o0) }
    }

    /// [`RqCols::plain8`] of channels `o0 .. o0 + 16` in 512-bit lanes.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) fn plain16(&self, o0: usize) -> Plain16 {
        // SAFETY: AVX-512F (this function's feature).
        unsafe { self.plain_lanes(o0) }
    }

    /// The plain form's parameters of channels `o0 .. o0 + V::N`.
    ///
    /// # Safety
    /// `V`'s target feature available.
    #[inline(always)]
    unsafe fn plain_lanes<V: Lanes>(&self, o0: usize) -> Plain<V> {
        assert!(self.plain && o0 + V::N <= self.len);
        let d = |k: usize, at: usize| self.t[k].as_ptr().wrapping_add(at);
        // Lanes `2i` are channels `o0 + 2i`, lanes `2i + 1` channels `o0 + 1 + 2i`.
        let q = |k: usize, at: usize| self.w[k][at % 2].as_ptr().wrapping_add(at / 2);
        // SAFETY: `o0 + N ≤ len`: `N` filled entries of each column from `o0` (`o0 + N + 1`
        // of the multipliers: `fill` wrote entry `len`); `N / 2` of each parity half from
        // channel `o0` and from `o0 + 1` (at most channel `o0 + N − 1`); `V`'s feature
        // (this function's contract).
        unsafe {
            Plain {
                bias: V::load(d(0, o0)),
                mult: V::load(d(1, o0)),
                mult_odd: V::load(d(1, o0 + 1)),
                pos: [V::load(q(0, o0)), V::load(q(0, o0 + 1))],
                neg: [V::load(q(1, o0)), V::load(q(1, o0 + 1))],
                count: [V::load(q(2, o0)), V::load(q(2, o0 + 1))],
                lo: V::load(d(7, o0)),
                hi: V::load(d(8, o0)),
                add: V::load(d(9, o0)),
            }
        }
    }

    /// The parameters of channels `o0 .. o0 + 8` as lanes (`o0 + 8` within the channels
    /// given to [`Requant::new`] rounded up to 16; those past the given ones read as 0).
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(super) fn lanes(&self, o0: usize) -> Rq8 {
        assert!(o0 + 8 <= self.len);
        let p = |k: usize| self.t[k].as_ptr().wrapping_add(o0).cast::<__m256i>();
        // SAFETY: `o0 + 8 ≤ len`: 8 filled entries of each column (a plain pointer offset,
        // no per-column slice: this runs once per 8 channels of every output pixel).
        unsafe {
            Rq8 {
                bias: _mm256_loadu_si256(p(0)),
                mult: _mm256_loadu_si256(p(1)),
                left: _mm256_loadu_si256(p(3)),
                right: _mm256_loadu_si256(p(4)),
                mask: _mm256_loadu_si256(p(5)),
                half: _mm256_loadu_si256(p(6)),
            }
        }
    }

    /// The parameters of channels `o0 .. o0 + 16` as 512-bit lanes (as [`RqCols::lanes`]).
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) fn lanes16(&self, o0: usize) -> Rq16 {
        assert!(o0 + 16 <= self.len);
        let p = |k: usize| self.t[k].as_ptr().wrapping_add(o0).cast::<__m512i>();
        // SAFETY: `o0 + 16 ≤ len`: 16 filled entries of each column.
        unsafe {
            Rq16 {
                bias: _mm512_loadu_si512(p(0)),
                mult: _mm512_loadu_si512(p(1)),
                left: _mm512_loadu_si512(p(3)),
                right: _mm512_loadu_si512(p(4)),
                mask: _mm512_loadu_si512(p(5)),
                half: _mm512_loadu_si512(p(6)),
            }
        }
    }

    /// The output stage of channels `o0 .. o0 + 16` for the output quantisation `q` given
    /// to [`Requant::new`].
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) fn out16(&self, o0: usize, q: OutQ) -> Out16 {
        if self.plain {
            Out16::Plain(self.plain16(o0))
        } else {
            Out16::Sum(self.lanes16(o0), q)
        }
    }

    /// `out[i] = quant::requant(acc[i], rq[o0 + i], q)` for `i < out.len()` (`acc` at least
    /// as long, `o0 + out.len()` within the channels given to [`RqCols::new`]): 8 channels
    /// per step, the tail scalar.
    #[target_feature(enable = "avx2")]
    pub(super) fn row(&self, o0: usize, acc: &[i32], q: OutQ, out: &mut [i8]) {
        let n = out.len();
        let acc = &acc[..n];
        let (b, m, s) = (self.col(0), self.col(1), self.col(2));
        let (b, m, s) = (&b[o0..o0 + n], &m[o0..o0 + n], &s[o0..o0 + n]);
        let mut i = 0;
        while i + 8 <= n {
            // SAFETY: `i + 8 <= n`: 8 i32 of `acc` read, 8 bytes written.
            unsafe {
                let a = _mm256_loadu_si256(acc.as_ptr().add(i).cast());
                let v = super::narrow8(self.requant8(a, o0 + i, q));
                _mm_storel_epi64(out.as_mut_ptr().add(i).cast(), v);
            }
            i += 8;
        }
        for j in i..n {
            out[j] = crate::quant::requant(acc[j], [b[j], m[j], s[j]], q);
        }
    }
}

/// As [`RqCols::row`] straight from the triples (transposed per 8 channels, [`columns3`]):
/// for convs wider than [`MAXQ`].
#[target_feature(enable = "avx2")]
pub(super) fn requant_row_gather(acc: &[i32], rq: &[[i32; 3]], q: OutQ, out: &mut [i8]) {
    let n = out.len();
    let (acc, rq) = (&acc[..n], &rq[..n]);
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: `i + 8 <= n`: 8 i32 of `acc` read, 8 bytes of `out` written.
        unsafe {
            let a = _mm256_loadu_si256(acc.as_ptr().add(i).cast());
            let v = requant8(a, &Rq8::gather(&rq[i..]), q);
            _mm_storel_epi64(out.as_mut_ptr().add(i).cast(), v);
        }
        i += 8;
    }
    for j in i..n {
        out[j] = crate::quant::requant(acc[j], rq[j], q);
    }
}

/// Requantises with [`RqCols`] (filled in the caller's stack buffer, no 12 KB moves) when
/// the conv fits it, else by gathers.
pub(super) enum Requant<'r> {
    Cols(&'r RqCols),
    Gather(&'r [[i32; 3]]),
}

impl<'r> Requant<'r> {
    #[inline]
    pub(super) fn new(rq: &'r [[i32; 3]], q: OutQ, cols: &'r mut RqCols) -> Self {
        if rq.len() > MAXQ {
            return Requant::Gather(rq);
        }
        // SAFETY: `Requant` is built only by the AVX2 (and AVX-512) tables' kernels, which
        // are installed after AVX2 detection (and by tests after `detected()`).
        unsafe { cols.fill(rq, q) };
        Requant::Cols(cols)
    }

    /// Channels `o0 .. o0 + out.len()`.
    ///
    /// # Safety
    /// AVX2 available.
    #[inline]
    pub(super) unsafe fn row(&self, o0: usize, acc: &[i32], q: OutQ, out: &mut [i8]) {
        // SAFETY: AVX2 by this function's contract.
        unsafe {
            match self {
                Requant::Cols(c) => c.row(o0, acc, q, out),
                Requant::Gather(rq) => requant_row_gather(acc, &rq[o0..], q, out),
            }
        }
    }
}

/// `quant::requant(acc[j], rq[j], q)` for the 8 lanes, as i8 in the low 8 bytes.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn requant8(acc: __m256i, rq: &Rq8, q: OutQ) -> __m128i {
    super::narrow8(requant8_sum(_mm256_add_epi32(acc, rq.bias), rq, q))
}

/// [`requant8`] of sums `x` with the bias already added, as i32 lanes in `[lo, 127]`.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn requant8_sum(x: __m256i, rq: &Rq8, q: OutQ) -> __m256i {
    let zero = _mm256_setzero_si256();
    // Left shift (wrapping, as `x.wrapping_mul(1 << left)`), right exponent clamped to 31.
    let x = _mm256_sllv_epi32(x, rq.left);
    let v = srdhm(x, rq.mult);
    // RoundingDivideByPOT: (v >> e) + (remainder > (mask >> 1) + (v < 0)).
    let neg = _mm256_cmpgt_epi32(zero, v);
    let rem = _mm256_and_si256(v, rq.mask);
    let thr = _mm256_sub_epi32(rq.half, neg);
    let v = _mm256_sub_epi32(_mm256_srav_epi32(v, rq.right), _mm256_cmpgt_epi32(rem, thr));
    let (zp, lo) = (q.zero_point, q.lo.max(-128));
    if let (Some(l), Some(h)) = (lo.checked_sub(zp), 127i32.checked_sub(zp)) {
        // clamp(v.saturating_add(zp), lo, 127) = clamp(v, lo − zp, 127 − zp) + zp: where
        // `v + zp` is inside i32 both saturate nothing, and past the bounds both clamp.
        let v = _mm256_min_epi32(
            _mm256_max_epi32(v, _mm256_set1_epi32(l)),
            _mm256_set1_epi32(h),
        );
        _mm256_add_epi32(v, _mm256_set1_epi32(zp))
    } else {
        // v.saturating_add(zp): on overflow (operands of one sign, sum of the other)
        // saturate.
        let zp = _mm256_set1_epi32(zp);
        let s = _mm256_add_epi32(v, zp);
        let ovf = _mm256_and_si256(_mm256_xor_si256(s, v), _mm256_xor_si256(s, zp));
        let sat = _mm256_xor_si256(_mm256_srai_epi32(v, 31), _mm256_set1_epi32(i32::MAX));
        let s = _mm256_blendv_epi8(s, sat, _mm256_srai_epi32(ovf, 31));
        _mm256_min_epi32(
            _mm256_max_epi32(s, _mm256_set1_epi32(lo)),
            _mm256_set1_epi32(127),
        )
    }
}

/// [`requant8_sum`] for plain channels ([`RqCols::plain`]: multiplier `M ≥ 0`, shift
/// `−e ≤ 0`), the doubling high multiply and the rounding shift as one 64-bit floor:
/// 14 instructions and 11 parameter loads where [`requant8_sum`] takes 21 and 5.
///
/// With `P = x·M` (`|P| < 2^62`, no saturation as `M ≠ MIN`), the high multiply is
/// `v = ⌊(P + 2^30) / 2^31⌋` and the rounding shift `⌊(v + 2^(e−1) − [v < 0]) / 2^e⌋`
/// (`e ≥ 1`; half away from zero), so with integer addends the two floors are one:
/// `r = ⌊(P + 2^30 + 2^(30+e) − 2^31·[v < 0]) / 2^(31+e)⌋` (`r = v` for `e = 0`). `[v < 0]`
/// may be `[P < 0]`: they differ only for `P ∈ [−2^30, 0)`, where both give `r = 0` — so
/// the addend is picked by the product's sign bit (`vblendvpd`). Adding `2^62` keeps the
/// sum in `[0, 2^64)` for a logical shift, which leaves `r' = r + 2^(31−e) ∈ [0, 2^32)`:
/// the clamp runs unsigned on `r'` (its ends in [`RqCols::fill8`]).
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn requant8_plain(x: __m256i, p: &Plain8) -> __m256i {
    let pd = _mm256_castsi256_pd;
    let even = mul_epi32(x, p.mult);
    let odd = mul_epi32(_mm256_srli_epi64(x, 32), p.mult_odd);
    let ce = _mm256_blendv_pd(pd(p.pos[0]), pd(p.neg[0]), pd(even));
    let co = _mm256_blendv_pd(pd(p.pos[1]), pd(p.neg[1]), pd(odd));
    let even = _mm256_srlv_epi64(_mm256_add_epi64(even, _mm256_castpd_si256(ce)), p.count[0]);
    let odd = _mm256_srlv_epi64(_mm256_add_epi64(odd, _mm256_castpd_si256(co)), p.count[1]);
    // Both below 2^32: the even lanes' high halves are 0.
    let r = _mm256_or_si256(even, _mm256_slli_epi64(odd, 32));
    _mm256_add_epi32(_mm256_min_epu32(_mm256_max_epu32(r, p.lo), p.hi), p.add)
}

/// [`Rq8`] for 16 channels in 512-bit lanes ([`requant16`]).
#[derive(Clone, Copy)]
pub(super) struct Rq16 {
    pub bias: __m512i,
    pub mult: __m512i,
    pub left: __m512i,
    pub right: __m512i,
    pub mask: __m512i,
    pub half: __m512i,
}

/// [`requant8_plain`] for 16 lanes on AVX-512 (the addend picked by a sign mask), bias
/// added, as 16 i8: 18 instructions where [`requant16`] takes 23 (both with the bias add).
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) fn requant16_plain(acc: __m512i, p: &Plain16) -> __m128i {
    let x = _mm512_add_epi32(acc, p.bias);
    let even = mul_epi32x16(x, p.mult);
    let odd = mul_epi32x16(_mm512_srli_epi64::<32>(x), p.mult_odd);
    let zero = _mm512_setzero_si512();
    let ce = _mm512_mask_blend_epi64(_mm512_cmplt_epi64_mask(even, zero), p.pos[0], p.neg[0]);
    let co = _mm512_mask_blend_epi64(_mm512_cmplt_epi64_mask(odd, zero), p.pos[1], p.neg[1]);
    let even = _mm512_srlv_epi64(_mm512_add_epi64(even, ce), p.count[0]);
    let odd = _mm512_srlv_epi64(_mm512_add_epi64(odd, co), p.count[1]);
    // Both below 2^32: the even lanes' high halves are 0.
    let r = _mm512_or_si512(even, _mm512_slli_epi64::<32>(odd));
    let v = _mm512_add_epi32(_mm512_min_epu32(_mm512_max_epu32(r, p.lo), p.hi), p.add);
    // Every lane is in [lo, 127]: the narrowing keeps it.
    _mm512_cvtepi32_epi8(v)
}

/// The output stage of 16 channels on AVX-512, its parameters loaded once
/// ([`RqCols::out16`]): [`requant16_plain`] for a plain conv, else [`requant16`].
// Vector registers a pixel loop holds, never stored: no boxing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Copy)]
pub(super) enum Out16 {
    Plain(Plain16),
    Sum(Rq16, OutQ),
}

impl Out16 {
    /// `quant::requant` of the 16 sums `acc` (no bias yet), as 16 i8.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) fn requant(&self, acc: __m512i) -> __m128i {
        match self {
            Out16::Plain(p) => requant16_plain(acc, p),
            Out16::Sum(rq, q) => requant16(acc, rq, *q),
        }
    }
}

/// `_mm256_mul_epi32` as the one instruction it names (`vpmuldq`). Where a caller's loop
/// holds the multipliers, LLVM hoists their sign extension (or the odd lanes' shift) out of
/// it and then no longer sees a 32 × 32-bit product: it multiplied in full 64 bits, six to
/// eight instructions for one.
#[inline]
#[target_feature(enable = "avx2")]
fn mul_epi32(a: __m256i, b: __m256i) -> __m256i {
    let r;
    // SAFETY: `vpmuldq` on registers only (AVX2, this function's feature): no memory,
    // stack or flags touched.
    unsafe {
        core::arch::asm!(
            "vpmuldq {r}, {a}, {b}",
            r = lateout(ymm_reg) r,
            a = in(ymm_reg) a,
            b = in(ymm_reg) b,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    r
}

/// [`mul_epi32`] on 512-bit registers.
#[inline]
#[target_feature(enable = "avx512f")]
fn mul_epi32x16(a: __m512i, b: __m512i) -> __m512i {
    let r;
    // SAFETY: `vpmuldq` on registers only (AVX-512F, this function's feature): no memory,
    // stack or flags touched.
    unsafe {
        core::arch::asm!(
            "vpmuldq {r}, {a}, {b}",
            r = lateout(zmm_reg) r,
            a = in(zmm_reg) a,
            b = in(zmm_reg) b,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    r
}

/// [`requant8`] for 16 lanes on AVX-512 (the comparisons as masks), as 16 i8: half the
/// instructions per output of two `requant8`s.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) fn requant16(acc: __m512i, rq: &Rq16, q: OutQ) -> __m128i {
    let x = _mm512_sllv_epi32(_mm512_add_epi32(acc, rq.bias), rq.left);
    // SaturatingRoundingDoublingHighMul, as `srdhm`.
    let nudge = _mm512_set1_epi64(1 << 30);
    let even = _mm512_srli_epi64(_mm512_add_epi64(mul_epi32x16(x, rq.mult), nudge), 31);
    let odd = mul_epi32x16(_mm512_srli_epi64(x, 32), _mm512_srli_epi64(rq.mult, 32));
    let odd = _mm512_slli_epi64(_mm512_add_epi64(odd, nudge), 1);
    let v = _mm512_mask_blend_epi32(0xAAAA, even, odd);
    let min = _mm512_set1_epi32(i32::MIN);
    let v = _mm512_mask_mov_epi32(
        v,
        _mm512_cmpeq_epi32_mask(v, min),
        _mm512_set1_epi32(i32::MAX),
    );
    // RoundingDivideByPOT: (v >> e) + (remainder > (mask >> 1) + (v < 0)).
    let thr = _mm512_sub_epi32(rq.half, _mm512_srai_epi32::<31>(v));
    let up = _mm512_cmpgt_epi32_mask(_mm512_and_si512(v, rq.mask), thr);
    let sh = _mm512_srav_epi32(v, rq.right);
    let v = _mm512_mask_sub_epi32(sh, up, sh, _mm512_set1_epi32(-1));
    let (zp, lo) = (q.zero_point, q.lo.max(-128));
    let s = if let (Some(l), Some(h)) = (lo.checked_sub(zp), 127i32.checked_sub(zp)) {
        // As in `requant8`: clamp, then add the zero point.
        let v = _mm512_min_epi32(
            _mm512_max_epi32(v, _mm512_set1_epi32(l)),
            _mm512_set1_epi32(h),
        );
        _mm512_add_epi32(v, _mm512_set1_epi32(zp))
    } else {
        let zpv = _mm512_set1_epi32(zp);
        let s = _mm512_add_epi32(v, zpv);
        let ovf = _mm512_and_si512(_mm512_xor_si512(s, v), _mm512_xor_si512(s, zpv));
        let sat = _mm512_xor_si512(_mm512_srai_epi32::<31>(v), _mm512_set1_epi32(i32::MAX));
        let s =
            _mm512_mask_blend_epi32(_mm512_cmplt_epi32_mask(ovf, _mm512_setzero_si512()), s, sat);
        _mm512_min_epi32(
            _mm512_max_epi32(s, _mm512_set1_epi32(lo)),
            _mm512_set1_epi32(127),
        )
    };
    // Every lane is in [−128, 127]: the saturating narrowing is a plain one.
    _mm512_cvtsepi32_epi8(s)
}

/// gemmlowp `SaturatingRoundingDoublingHighMul` per lane: `(a·b + nudge) / 2^31` truncated,
/// nudge `2^30` or `1 − 2^30` by the sign of `a·b`; `MIN·MIN` saturates to `MAX`.
///
/// Both nudges truncated toward zero are one floor, `⌊(a·b + 2^30) / 2^31⌋` (for `a·b < 0`:
/// `⌈(a·b + 1 − 2^30) / 2^31⌉ = ⌊(a·b + 2^30) / 2^31⌋`), so each i64 product takes an add
/// and a shift: bits 31..62 of `a·b + 2^30`, by a logical right shift of 31 (even lanes, the
/// low dword) or a left shift of 1 (odd lanes, the high dword). The floor reaches `2^31`
/// only at `MIN·MIN` (every other product is at most `2^62 − 2^31`) and `−2^31` never
/// (products are at least `MIN·MAX`), so a lane reading `MIN` is exactly the saturating one:
/// flipping its bits gives `MAX`.
#[inline]
#[target_feature(enable = "avx2")]
fn srdhm(a: __m256i, b: __m256i) -> __m256i {
    let nudge = _mm256_set1_epi64x(1 << 30);
    let even = _mm256_srli_epi64(_mm256_add_epi64(mul_epi32(a, b), nudge), 31);
    let odd = mul_epi32(_mm256_srli_epi64(a, 32), _mm256_srli_epi64(b, 32));
    let odd = _mm256_slli_epi64(_mm256_add_epi64(odd, nudge), 1);
    let r = _mm256_blend_epi32(even, odd, 0b1010_1010);
    _mm256_xor_si256(r, _mm256_cmpeq_epi32(r, _mm256_set1_epi32(i32::MIN)))
}

/// AVX2 twin of `quant::requant_table`, bit-identical: 4 channels at a time in f64 lanes —
/// the same correctly rounded products and divisions as `ChannelRequant::new_f64`, its
/// `round_f64` as truncate-and-compare, its `frexp` on the bit patterns — where every lane
/// is an ordinary channel (scales giving a positive finite `s_x·s_w` and a normal
/// multiplier, a bias code inside i32, a shift in [−31, 30]). A block with any other lane,
/// and the last `n mod 4` channels, take the scalar spec.
pub(crate) fn requant_table(bias: &[f32], s_x: f32, ws: &[f32], s_y: f32, out: &mut [[i32; 3]]) {
    let n = out.len();
    let (bias, ws) = (&bias[..n], &ws[..n]);
    let mut j = 0;
    while j + 4 <= n {
        let (b, w, o) = (&bias[j..j + 4], &ws[j..j + 4], &mut out[j..j + 4]);
        // SAFETY: only installed after AVX2 detection; each slice holds 4 elements.
        if !unsafe { table4(b, s_x, w, s_y, o) } {
            crate::quant::requant_table(b, s_x, w, s_y, o);
        }
        j += 4;
    }
    crate::quant::requant_table(&bias[j..], s_x, &ws[j..], s_y, &mut out[j..]);
}

/// Four channels of [`requant_table`]; `false` (nothing written) when a lane is not
/// ordinary.
///
/// # Safety
/// AVX2 available; `bias`, `ws` and `out` hold at least 4 elements.
#[target_feature(enable = "avx2")]
unsafe fn table4(bias: &[f32], s_x: f32, ws: &[f32], s_y: f32, out: &mut [[i32; 3]]) -> bool {
    debug_assert!(bias.len() >= 4 && ws.len() >= 4 && out.len() >= 4);
    // SAFETY: 4 f32 each (this function's contract).
    let (b, w) = unsafe {
        (
            _mm256_cvtps_pd(_mm_loadu_ps(bias.as_ptr())),
            _mm256_cvtps_pd(_mm_loadu_ps(ws.as_ptr())),
        )
    };
    let (zero, one, inf) = (
        _mm256_setzero_pd(),
        _mm256_set1_pd(1.0),
        _mm256_set1_pd(f64::INFINITY),
    );
    // `s_x·s_w` is exact in f64 (two 24-bit mantissas), so the order of the factors is moot.
    let sxw = _mm256_mul_pd(_mm256_set1_pd(s_x as f64), w);
    let q = _mm256_div_pd(b, sxw);
    let m = _mm256_div_pd(sxw, _mm256_set1_pd(s_y as f64));
    let mut ok = _mm256_and_pd(
        _mm256_cmp_pd::<_CMP_GT_OQ>(sxw, zero),
        _mm256_cmp_pd::<_CMP_LT_OQ>(sxw, inf),
    );
    ok = _mm256_and_pd(
        ok,
        _mm256_cmp_pd::<_CMP_GE_OQ>(m, _mm256_set1_pd(f64::MIN_POSITIVE)),
    );
    ok = _mm256_and_pd(ok, _mm256_cmp_pd::<_CMP_LT_OQ>(m, inf));
    // |q| < 2^31 − 2: the rounded code fits i32 unclamped (NaN compares false).
    let absq = _mm256_andnot_pd(_mm256_set1_pd(-0.0), q);
    ok = _mm256_and_pd(
        ok,
        _mm256_cmp_pd::<_CMP_LT_OQ>(absq, _mm256_set1_pd(2_147_483_646.0)),
    );
    // round_f64: truncate (as `x as i64 as f64` for |x| < 2^52), then ±1 by the fraction.
    let t = _mm256_round_pd::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(q);
    let f = _mm256_sub_pd(q, t);
    let up = _mm256_and_pd(_mm256_cmp_pd::<_CMP_GE_OQ>(f, _mm256_set1_pd(0.5)), one);
    let dn = _mm256_and_pd(_mm256_cmp_pd::<_CMP_LE_OQ>(f, _mm256_set1_pd(-0.5)), one);
    let bias_q = _mm256_cvttpd_epi32(_mm256_sub_pd(_mm256_add_pd(t, up), dn));
    // frexp of a positive normal m: q ∈ [0.5, 1) with m's mantissa, e = biased − 1022.
    let mi = _mm256_castpd_si256(m);
    let frac = _mm256_or_si256(
        _mm256_and_si256(mi, _mm256_set1_epi64x(0x000f_ffff_ffff_ffff)),
        _mm256_set1_epi64x(1022 << 52),
    );
    let mut shift = _mm256_sub_epi64(_mm256_srli_epi64::<52>(mi), _mm256_set1_epi64x(1022));
    // round_f64(q · 2^31) ∈ [2^30, 2^31] (exact scaling, positive: only the upward step).
    let x = _mm256_mul_pd(_mm256_castsi256_pd(frac), _mm256_set1_pd(2_147_483_648.0));
    let t = _mm256_round_pd::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(x);
    let up = _mm256_and_pd(
        _mm256_cmp_pd::<_CMP_GE_OQ>(_mm256_sub_pd(x, t), _mm256_set1_pd(0.5)),
        one,
    );
    let mut qf = _mm256_add_pd(t, up);
    // 2^31 becomes 2^30 with the shift one higher.
    let top = _mm256_cmp_pd::<_CMP_EQ_OQ>(qf, _mm256_set1_pd(2_147_483_648.0));
    qf = _mm256_blendv_pd(qf, _mm256_set1_pd(1_073_741_824.0), top);
    shift = _mm256_sub_epi64(shift, _mm256_castpd_si256(top));
    let in_range = _mm256_and_si256(
        _mm256_cmpgt_epi64(shift, _mm256_set1_epi64x(-32)),
        _mm256_cmpgt_epi64(_mm256_set1_epi64x(31), shift),
    );
    ok = _mm256_and_pd(ok, _mm256_castsi256_pd(in_range));
    if _mm256_movemask_pd(ok) != 0b1111 {
        return false;
    }
    let mult = _mm256_cvttpd_epi32(qf);
    let shift = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(
        shift,
        _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6),
    ));
    let (mut bv, mut mv, mut sv) = ([0i32; 4], [0i32; 4], [0i32; 4]);
    // SAFETY: each array holds 4 i32.
    unsafe {
        _mm_storeu_si128(bv.as_mut_ptr().cast(), bias_q);
        _mm_storeu_si128(mv.as_mut_ptr().cast(), mult);
        _mm_storeu_si128(sv.as_mut_ptr().cast(), shift);
    }
    for (i, o) in out[..4].iter_mut().enumerate() {
        *o = [bv[i], mv[i], sv[i]];
    }
    true
}

/// The AVX-512 table's `Kernels::requant_table`: [`requant_table`] 8 channels at a time
/// ([`table8`]: the same steps in 8 f64 lanes, the comparisons as masks), then 4, then the
/// scalar spec. The two f64 divisions per channel bound the table (a `vdivpd` takes about as
/// long on 8 lanes as on 4 on this family), and an `Auto` switch recomputes every int8
/// op's table: twice the lanes, half the divisions' time.
pub(crate) fn requant_table_avx512(
    bias: &[f32],
    s_x: f32,
    ws: &[f32],
    s_y: f32,
    out: &mut [[i32; 3]],
) {
    let n = out.len();
    let (bias, ws) = (&bias[..n], &ws[..n]);
    let mut j = 0;
    while j + 8 <= n {
        let (b, w, o) = (&bias[j..j + 8], &ws[j..j + 8], &mut out[j..j + 8]);
        // SAFETY: only installed after AVX-512 detection; each slice holds 8 elements.
        if !unsafe { table8(b, s_x, w, s_y, o) } {
            crate::quant::requant_table(b, s_x, w, s_y, o);
        }
        j += 8;
    }
    requant_table(&bias[j..], s_x, &ws[j..], s_y, &mut out[j..]);
}

/// Eight channels of [`requant_table_avx512`]: [`table4`]'s steps on 8 lanes; `false`
/// (nothing written) when a lane is not ordinary.
///
/// # Safety
/// AVX2 and AVX-512F available; `bias`, `ws` and `out` hold at least 8 elements.
#[target_feature(enable = "avx2,avx512f")]
unsafe fn table8(bias: &[f32], s_x: f32, ws: &[f32], s_y: f32, out: &mut [[i32; 3]]) -> bool {
    debug_assert!(bias.len() >= 8 && ws.len() >= 8 && out.len() >= 8);
    // SAFETY: 8 f32 each (this function's contract).
    let (b, w) = unsafe {
        (
            _mm512_cvtps_pd(_mm256_loadu_ps(bias.as_ptr())),
            _mm512_cvtps_pd(_mm256_loadu_ps(ws.as_ptr())),
        )
    };
    let (zero, one, inf) = (
        _mm512_setzero_pd(),
        _mm512_set1_pd(1.0),
        _mm512_set1_pd(f64::INFINITY),
    );
    const TRUNC: i32 = _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC;
    // `s_x·s_w` is exact in f64 (two 24-bit mantissas).
    let sxw = _mm512_mul_pd(_mm512_set1_pd(s_x as f64), w);
    let q = _mm512_div_pd(b, sxw);
    let m = _mm512_div_pd(sxw, _mm512_set1_pd(s_y as f64));
    let mut ok = _mm512_cmp_pd_mask::<_CMP_GT_OQ>(sxw, zero)
        & _mm512_cmp_pd_mask::<_CMP_LT_OQ>(sxw, inf)
        & _mm512_cmp_pd_mask::<_CMP_GE_OQ>(m, _mm512_set1_pd(f64::MIN_POSITIVE))
        & _mm512_cmp_pd_mask::<_CMP_LT_OQ>(m, inf);
    // |q| < 2^31 − 2: the rounded code fits i32 unclamped (NaN compares false).
    let absq = _mm512_abs_pd(q);
    ok &= _mm512_cmp_pd_mask::<_CMP_LT_OQ>(absq, _mm512_set1_pd(2_147_483_646.0));
    // round_f64: truncate, then ±1 by the fraction.
    let t = _mm512_roundscale_pd::<TRUNC>(q);
    let f = _mm512_sub_pd(q, t);
    let up = _mm512_cmp_pd_mask::<_CMP_GE_OQ>(f, _mm512_set1_pd(0.5));
    let dn = _mm512_cmp_pd_mask::<_CMP_LE_OQ>(f, _mm512_set1_pd(-0.5));
    let t = _mm512_mask_sub_pd(_mm512_mask_add_pd(t, up, t, one), dn, t, one);
    let bias_q = _mm512_cvttpd_epi32(t);
    // frexp of a positive normal m: q ∈ [0.5, 1) with m's mantissa, e = biased − 1022.
    let mi = _mm512_castpd_si512(m);
    let frac = _mm512_or_si512(
        _mm512_and_si512(mi, _mm512_set1_epi64(0x000f_ffff_ffff_ffff)),
        _mm512_set1_epi64(1022 << 52),
    );
    let mut shift = _mm512_sub_epi64(_mm512_srli_epi64::<52>(mi), _mm512_set1_epi64(1022));
    // round_f64(q · 2^31) ∈ [2^30, 2^31] (exact scaling, positive: only the upward step).
    let x = _mm512_mul_pd(_mm512_castsi512_pd(frac), _mm512_set1_pd(2_147_483_648.0));
    let t = _mm512_roundscale_pd::<TRUNC>(x);
    let up = _mm512_cmp_pd_mask::<_CMP_GE_OQ>(_mm512_sub_pd(x, t), _mm512_set1_pd(0.5));
    let qf = _mm512_mask_add_pd(t, up, t, one);
    // 2^31 becomes 2^30 with the shift one higher.
    let top = _mm512_cmp_pd_mask::<_CMP_EQ_OQ>(qf, _mm512_set1_pd(2_147_483_648.0));
    let qf = _mm512_mask_blend_pd(top, qf, _mm512_set1_pd(1_073_741_824.0));
    shift = _mm512_mask_add_epi64(shift, top, shift, _mm512_set1_epi64(1));
    ok &= _mm512_cmpgt_epi64_mask(shift, _mm512_set1_epi64(-32))
        & _mm512_cmpgt_epi64_mask(_mm512_set1_epi64(31), shift);
    if ok != 0xff {
        return false;
    }
    let (mut bv, mut mv, mut sv) = ([0i32; 8], [0i32; 8], [0i32; 8]);
    // SAFETY: each array holds 8 i32.
    unsafe {
        _mm256_storeu_si256(bv.as_mut_ptr().cast(), bias_q);
        _mm256_storeu_si256(mv.as_mut_ptr().cast(), _mm512_cvttpd_epi32(qf));
        _mm256_storeu_si256(sv.as_mut_ptr().cast(), _mm512_cvtepi64_epi32(shift));
    }
    for (i, o) in out[..8].iter_mut().enumerate() {
        *o = [bv[i], mv[i], sv[i]];
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::requant;

    /// [`requant_table`] gives `quant::requant_table`'s triples bit for bit
    /// (`kernels::requant_check`: rounding edges, special values). Seed: `LORKD_SEED`.
    #[test]
    fn requant_table_is_bit_exact() {
        if !super::super::detected() {
            println!("SKIPPED requant_table_is_bit_exact: no AVX2 on this CPU");
            return;
        }
        // SAFETY: AVX2 detected above; the checker hands 4 elements each.
        crate::kernels::requant_check::requant_table_is_bit_exact(
            requant_table,
            4,
            |b, x, w, y, o| unsafe { table4(b, x, w, y, o) },
        );
    }

    /// [`requant_table_avx512`] and its 8-lane step are bit-exact the same way.
    #[test]
    fn requant_table_avx512_is_bit_exact() {
        if !super::super::avx512_detected() {
            println!("SKIPPED requant_table_avx512_is_bit_exact: no AVX-512 on this CPU");
            return;
        }
        // SAFETY: AVX-512 detected above; the checker hands 8 elements each.
        crate::kernels::requant_check::requant_table_is_bit_exact(
            requant_table_avx512,
            8,
            |b, x, w, y, o| unsafe { table8(b, x, w, y, o) },
        );
    }

    /// [`srdhm`] is gemmlowp's `SaturatingRoundingDoublingHighMul` in every lane: every pair
    /// of edge values (`MIN·MIN` saturating among them, products at the nudge's rounding
    /// ties) in both lane parities, then random pairs. Seed: `LORKD_SEED`.
    #[test]
    fn srdhm_is_gemmlowp() {
        if !super::super::detected() {
            println!("SKIPPED srdhm_is_gemmlowp: no AVX2 on this CPU");
            return;
        }
        let mut r = crate::engine::testnet::Rng::new(crate::test_seed());
        let mut next = move || r.next_u64();
        let edges = [
            0,
            1,
            -1,
            2,
            -2,
            3,
            i32::MIN,
            i32::MIN + 1,
            i32::MAX,
            i32::MAX - 1,
            1 << 30,
            -(1 << 30),
            (1 << 30) + 1,
            (1 << 30) - 1,
            1 << 15,
            -(1 << 15),
            1 << 16,
        ];
        let check = |a: [i32; 8], b: [i32; 8]| {
            let mut got = [0i32; 8];
            // SAFETY: AVX2 detected above; 8 i32 each.
            unsafe {
                let r = srdhm(
                    _mm256_loadu_si256(a.as_ptr().cast()),
                    _mm256_loadu_si256(b.as_ptr().cast()),
                );
                _mm256_storeu_si256(got.as_mut_ptr().cast(), r);
            }
            for j in 0..8 {
                let want = crate::quant::saturating_rounding_doubling_high_mul(a[j], b[j]);
                assert_eq!(got[j], want, "lane {j}: {} · {}", a[j], b[j]);
            }
        };
        for &x in &edges {
            for &y in &edges {
                // Lane parity matters (the odd lanes take the other shift): both.
                check([x, y, y, x, x, y, y, x], [y, x, y, x, y, x, y, x]);
            }
        }
        for it in 0..200_000 {
            let mut a = [0i32; 8];
            let mut b = [0i32; 8];
            for j in 0..8 {
                let r = next();
                a[j] = match it % 3 {
                    0 => r as i32,
                    1 => (r as i32) >> (r >> 59),
                    _ => edges[(r >> 40) as usize % edges.len()].wrapping_add((r & 3) as i32 - 1),
                };
                b[j] = (r >> 32) as i32;
            }
            check(a, b);
        }
    }

    /// A random requantisation case for [`requant8_is_bit_exact`] (edges, wide and
    /// narrow values by `it`): 8 accumulators, their parameters, the output zero point and
    /// clamp, and one more random word.
    fn case(next: &mut impl FnMut() -> u64, it: i32) -> ([i32; 8], [[i32; 3]; 8], OutQ, u64) {
        let edges = [
            0,
            1,
            -1,
            i32::MIN,
            i32::MAX,
            i32::MIN + 1,
            1 << 30,
            -(1 << 30),
            i32::MAX - 1,
        ];
        let pick = |r: u64, lo: i64, hi: i64| (lo + (r % (hi - lo + 1) as u64) as i64) as i32;
        let mut acc = [0i32; 8];
        let mut rq = [[0i32; 3]; 8];
        for j in 0..8 {
            let r = next();
            acc[j] = if it % 4 == 0 {
                edges[(r % edges.len() as u64) as usize]
            } else if it % 4 == 1 {
                r as i32
            } else {
                pick(r, -200_000, 200_000)
            };
            let r = next();
            rq[j] = [
                if it % 3 == 0 {
                    r as i32
                } else {
                    pick(r, -5000, 5000)
                },
                if it % 7 == 0 {
                    edges[(r >> 40) as usize % edges.len()]
                } else {
                    pick(r >> 20, 1 << 30, i32::MAX as i64)
                },
                pick(r >> 45, -33, 33),
            ];
        }
        let r = next();
        let zp = if it % 11 == 0 {
            edges[(r % 9) as usize]
        } else {
            pick(r, -128, 127)
        };
        let q = OutQ {
            zero_point: zp,
            lo: if r & 1 == 0 {
                -128
            } else {
                pick(r >> 8, -128, 127)
            },
        };
        (acc, rq, q, r)
    }

    #[test]
    fn requant8_is_bit_exact() {
        if !super::super::detected() {
            println!("SKIPPED requant8_is_bit_exact: no AVX2 on this CPU");
            return;
        }
        let mut r = crate::engine::testnet::Rng::new(crate::test_seed());
        let mut next = move || r.next_u64();
        for it in 0..200_000 {
            let (acc, rq, q, r) = case(&mut next, it);
            let mut got = [0i8; 8];
            let len = 1 + (r >> 20) as usize % 8;
            // SAFETY: AVX2 detected above.
            unsafe {
                let mut cols = RqCols::new();
                Requant::new(&rq[..len], q, &mut cols).row(0, &acc[..len], q, &mut got[..len]);
                let mut g2 = [0i8; 8];
                requant_row_gather(&acc[..len], &rq[..len], q, &mut g2[..len]);
                assert_eq!(got, g2);
            }
            for j in 0..len {
                assert_eq!(
                    got[j],
                    requant(acc[j], rq[j], q),
                    "{:?} {:?} {q:?}",
                    acc[j],
                    rq[j]
                );
            }
        }
    }

    /// One draw of the plain tests: 24 channels' parameters from three [`case`]s made
    /// plain (multipliers `≥ 0`, shifts `≤ 0`, `MIN` among them), the first case's output
    /// quantisation (`q0`) and it with the zero point clamped to i8 (`q`, extreme ones
    /// included), a first channel `o0 ≤ 8`, and four cases' sums (two pixels of 16).
    fn plain_case(
        next: &mut impl FnMut() -> u64,
        it: i32,
    ) -> (Vec<[i32; 3]>, OutQ, OutQ, usize, [[i32; 8]; 4]) {
        let plain = |[b, m, sh]: [i32; 3], r: u64| {
            let sh = match r % 16 {
                0 => i32::MIN,
                _ => sh.min(-sh),
            };
            [b, m & i32::MAX, sh]
        };
        let (a0, r0, q0, w) = case(next, it);
        let q = OutQ {
            zero_point: q0.zero_point.clamp(-128, 127),
            ..q0
        };
        let (a1, r1, _, _) = case(next, it / 2);
        let (b0, r2, _, _) = case(next, it / 3);
        let (b1, _, _, _) = case(next, it / 5);
        let rq: Vec<[i32; 3]> = [r0, r1, r2]
            .concat()
            .into_iter()
            .enumerate()
            .map(|(j, c)| plain(c, w >> (4 * (j % 16))))
            .collect();
        (rq, q0, q, (w >> 60) as usize % 9, [a0, a1, b0, b1])
    }

    /// [`requant8_plain`] through [`RqCols::plain8`] on 16 channels from any first one
    /// `o0 ≤ 8`, of two pixels ([`plain_case`]) is the scalar spec's, and
    /// [`super::super::narrow16x2`] / [`super::super::narrow16`] put its bytes in order.
    #[test]
    fn requant8_plain_is_bit_exact() {
        if !super::super::detected() {
            println!("SKIPPED requant8_plain_is_bit_exact: no AVX2 on this CPU");
            return;
        }
        let mut r = crate::engine::testnet::Rng::new(crate::test_seed());
        let mut next = move || r.next_u64();
        for it in 0..100_000 {
            let (rq, q0, q, o0, [a0, a1, b0, b1]) = plain_case(&mut next, it);
            let mut cols = RqCols::new();
            let _ = Requant::new(&rq, q0, &mut cols);
            assert_eq!(cols.plain(), q0 == q);
            let _ = Requant::new(&rq, q, &mut cols);
            assert!(cols.plain());
            let (mut got, mut one) = ([0i8; 32], [0i8; 16]);
            // SAFETY: AVX2 detected above; each array holds 8 lanes, `got` 32 bytes, `one`
            // 16; channels `o0 + 16 ≤ 24`.
            unsafe {
                let ld = |a: &[i32; 8], o: usize| {
                    let v = _mm256_loadu_si256(a.as_ptr().cast());
                    requant8_plain(_mm256_add_epi32(v, cols.bias8(o)), &cols.plain8(o))
                };
                let (x0, x1) = (ld(&a0, o0), ld(&a1, o0 + 8));
                let v = super::super::narrow16x2([x0, x1], [ld(&b0, o0), ld(&b1, o0 + 8)]);
                _mm256_storeu_si256(got.as_mut_ptr().cast(), v);
                _mm_storeu_si128(one.as_mut_ptr().cast(), super::super::narrow16(x0, x1));
            }
            let accs = a0.iter().chain(&a1).chain(&b0).chain(&b1);
            for (j, &acc) in accs.enumerate() {
                let c = rq[o0 + j % 16];
                assert_eq!(got[j], requant(acc, c, q), "{acc} {c:?} {q:?} at {o0}");
            }
            assert_eq!(one, got[..16]);
        }
    }

    /// [`requant16_plain`] through [`RqCols::plain16`] on 16 channels from any first one
    /// `o0 ≤ 8` ([`plain_case`]) is the scalar spec's.
    #[test]
    fn requant16_plain_is_bit_exact() {
        if !super::super::avx512_detected() {
            println!("SKIPPED requant16_plain_is_bit_exact: no AVX-512 on this CPU");
            return;
        }
        let mut r = crate::engine::testnet::Rng::new(crate::test_seed());
        let mut next = move || r.next_u64();
        for it in 0..100_000 {
            let (rq, _, q, o0, [a0, a1, _, _]) = plain_case(&mut next, it);
            let mut cols = RqCols::new();
            let _ = Requant::new(&rq, q, &mut cols);
            assert!(cols.plain());
            let acc: Vec<i32> = a0.iter().chain(&a1).copied().collect();
            let mut got = [0i8; 16];
            // SAFETY: AVX-512 detected above; `got` and `acc` hold 16 lanes, channels
            // `o0 + 16 ≤ 24`.
            unsafe {
                let a = _mm512_loadu_si512(acc.as_ptr().cast());
                let v = requant16_plain(a, &cols.plain16(o0));
                _mm_storeu_si128(got.as_mut_ptr().cast(), v);
            }
            for (j, &a) in acc.iter().enumerate() {
                let c = rq[o0 + j];
                assert_eq!(got[j], requant(a, c, q), "{a} {c:?} {q:?} at {o0}");
            }
        }
    }

    /// [`requant16`] on 16 random lanes (two [`case`]s, the first one's output
    /// quantisation) is the scalar spec's.
    #[test]
    fn requant16_is_bit_exact() {
        if !super::super::avx512_detected() {
            println!("SKIPPED requant16_is_bit_exact: no AVX-512 on this CPU");
            return;
        }
        let mut r = crate::engine::testnet::Rng::new(crate::test_seed());
        let mut next = move || r.next_u64();
        for it in 0..100_000 {
            let (a0, r0, q, _) = case(&mut next, it);
            let (a1, r1, _, _) = case(&mut next, it / 2);
            let acc: Vec<i32> = a0.iter().chain(&a1).copied().collect();
            let rq: Vec<[i32; 3]> = r0.iter().chain(&r1).copied().collect();
            let mut cols = RqCols::new();
            let _ = Requant::new(&rq, q, &mut cols);
            let mut got = [0i8; 16];
            // SAFETY: AVX-512 detected above; `got` and `acc` hold 16 lanes.
            unsafe {
                let a = _mm512_loadu_si512(acc.as_ptr().cast());
                _mm_storeu_si128(got.as_mut_ptr().cast(), requant16(a, &cols.lanes16(0), q));
            }
            for j in 0..16 {
                assert_eq!(
                    got[j],
                    requant(acc[j], rq[j], q),
                    "{:?} {:?} {q:?}",
                    acc[j],
                    rq[j]
                );
            }
        }
    }
}
