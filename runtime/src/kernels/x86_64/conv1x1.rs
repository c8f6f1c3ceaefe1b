//! AVX2 pointwise conv (the GEMM that dominates ShuffleNetV2), as outer products: the
//! weights are packed into panels whose vector lanes are output channels — per call, or
//! once per department switch for a Materialized expert (`pack_conv1x1_*` in place, read
//! by the `*_packed` convs: the same bits) — each
//! broadcast input feeds two 8-channel blocks of several pixels, and the output stage
//! (bias + ReLU for f32, the requantisation for int8) runs on the finished accumulators in
//! registers — no horizontal sums. Dot-product tiles (`P` pixels × 4 channels, each
//! accumulator a dot over `cin`, reduced by an `hadd` tree) remain for inputs past the
//! stack panels and, in int8, for convs of under 4 pixels, where packing would cost more
//! than the multiply-adds.
//!
//! int8: `w` and `x − zx` sign-extended to i16, `_mm256_madd_epi16` into i32 — exact
//! (`|w·(x − zx)| ≤ 128·255`, pair sums far from overflow), so bit-exact to the reference.
//! f32: FMA in 8 lanes: differs from the sequential reference by reassociation only
//! (`|Δ| ≤ 2·cin·ε·(|b| + Σ|w·x|)`, the bound `tests/engine_simd.rs` checks); which path a
//! conv takes depends on `cin` only, so a pixel split across threads gives the same bits.
use core::arch::x86_64::*;

use super::lane_mask;
use core::mem::MaybeUninit;

use super::requant::{requant8_plain, requant8_sum, Requant, RqCols, MAXQ};
use crate::kernels::{Geom, OutQ, SumTile};

/// Output pixels per f32 tile: 3×4 accumulators + 4 weight vectors fill the 16 registers.
const PF: usize = 3;
/// Output pixels per int8 tile (8 accumulators, 4 widened weights, the input, `zx`).
const PI: usize = 2;

/// Start of output pixel `p`'s input channels.
#[inline]
pub(super) fn src(g: &Geom, p: usize) -> usize {
    let (oy, ox) = (p / g.wo, p % g.wo);
    (oy * g.stride * g.w + ox * g.stride) * g.in_stride + g.c_off
}

/// Output channels of one f32 panel (two 8-lane blocks).
pub(super) const FO: usize = 16;
/// Output pixels per f32 outer-product tile: 6 × 2 accumulators, the two weight vectors
/// and the broadcast input fill 15 of the 16 registers.
const FP: usize = 6;
/// Widest input whose f32 weight panel ([`FO`] channels) is packed on the stack (64 KiB).
pub(super) const FMAXC: usize = 1024;
/// f32 weights packed per group of panels (128 KiB on the stack): each pixel tile runs
/// every panel of a group while its inputs are in L1, so the inputs stream from memory
/// once per group instead of once per 16 output channels.
const FGROUP: usize = 32 * 1024;

/// AVX2 f32 pointwise conv; same contract as `reference::conv1x1::conv1x1_f32`.
///
/// An outer product, as the int8 conv: per panel of [`FO`] output channels the weights are
/// packed once as `[cin][FO]`; each tile of up to [`FP`] pixels broadcasts one input and
/// adds it times the panel's two weight vectors into its accumulators, whose lanes are
/// output channels — no horizontal sums, and bias + ReLU applied in registers at the store.
/// Inputs wider than [`FMAXC`] take the dot-product tiles. (The choice must not depend on
/// the pixel count: the two sum in different orders, and a conv split across threads by
/// pixels has to give the bits of the whole.)
pub(crate) fn conv1x1_f32(g: &Geom, x: &[f32], w: &[f32], bias: &[f32], relu: bool, y: &mut [f32]) {
    outer_f32(g, x, w, false, bias, relu, y)
}

/// [`conv1x1_f32`] on weights that [`pack_conv1x1_f32`] laid out at `select`: the whole
/// panels are read where they lie (a Materialized expert's panels are packed once per
/// switch instead of at every call); the same bits as [`conv1x1_f32`] on the rows.
pub(crate) fn conv1x1_f32_packed(
    g: &Geom,
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    relu: bool,
    y: &mut [f32],
) {
    outer_f32(g, x, w, true, bias, relu, y)
}

/// Lays a `[cout, cin]` weight out in place for [`conv1x1_f32_packed`]: every whole panel
/// of [`FO`] output channels becomes its `[cin][FO]` panel (the bytes [`pack_panel_f32`]
/// writes per call), the last `cout % FO` rows stay rows at the same offset. The length is
/// unchanged, and the layout of channels `c0 .. c0 + m` (`c0`, and `m` unless it reaches
/// `cout`, multiples of `FO`) is that slice: a conv split by channels at multiples of 16
/// gets packed parts. Inputs wider than [`FMAXC`] are left as rows (the dot tiles read them).
pub(crate) fn pack_conv1x1_f32(cout: usize, cin: usize, w: &mut [f32]) {
    if cin == 0 || cin > FMAXC {
        return;
    }
    let mut store = [const { MaybeUninit::<f32>::uninit() }; FMAXC * FO];
    let whole = cout / FO * FO * cin;
    for panel in w[..whole].chunks_exact_mut(FO * cin) {
        let packed = pack_panel_f32(panel, cin, FO, &mut store[..cin * FO]);
        panel.copy_from_slice(packed);
    }
}

/// One [`FO`]-channel panel of a group ([`groups_f32`]): `[n][FO]` weights, the bias
/// (zero-padded past `no`), output channels `o0 .. o0 + no`.
#[derive(Clone, Copy)]
pub(super) struct PanelF32<'a> {
    pub(super) w: &'a [f32],
    pub(super) bias: &'a [f32; FO],
    pub(super) o0: usize,
    pub(super) no: usize,
}

/// Most panels in one group (1,024 output channels).
pub(super) const MAXPAN: usize = 64;

/// Hands `f` the output channels of a conv of `n = w.len() / bias.len() ≤ FMAXC` inputs as
/// groups of [`PanelF32`]s, in order: each group's panels fit [`FGROUP`] (so a pixel
/// tile's inputs stay in L1 across them, and stream from memory once per group instead of
/// once per 16 output channels). `prepacked`: `w` is [`pack_conv1x1_f32`]'s layout (whole
/// panels read where they lie, a short last one packed here); otherwise every panel is
/// packed here from the rows. Only the grouping is shared: how a tile sums is the caller's.
pub(super) fn groups_f32(
    n: usize,
    w: &[f32],
    prepacked: bool,
    bias: &[f32],
    f: &mut dyn FnMut(&[PanelF32<'_>]),
) {
    let cout = bias.len();
    debug_assert!(n > 0 && n <= FMAXC && w.len() == cout * n);
    let mut store = [const { MaybeUninit::<f32>::uninit() }; FGROUP];
    // Panels per group: as many as fit `store` (at least one: `n·FO ≤ FMAXC·FO ≤ FGROUP`).
    let gp = (FGROUP / (n * FO)).min(MAXPAN);
    let mut g0 = 0;
    while g0 < cout {
        let gn = (gp * FO).min(cout - g0);
        let npan = gn.div_ceil(FO);
        // Panels packed into `store` for this group: all of them, or with `prepacked` only
        // a short last one (at most one, at the front).
        let mut packed_n = 0;
        for k in 0..npan {
            let (o0, no) = (g0 + k * FO, FO.min(gn - k * FO));
            if !(prepacked && no == FO) {
                let st = &mut store[packed_n * n * FO..][..n * FO];
                pack_panel_f32(&w[o0 * n..][..no * n], n, no, st);
                packed_n += 1;
            }
        }
        // Only the layer's last panel can be short of `FO` channels: its bias, zero-padded.
        let mut short_b = [0.0f32; FO];
        let tail = gn % FO;
        short_b[..tail].copy_from_slice(&bias[g0 + gn - tail..g0 + gn]);
        // SAFETY: `pack_panel_f32` wrote every element of the first `packed_n` panels;
        // `MaybeUninit<f32>` has the layout of `f32`.
        let packed =
            unsafe { &*(&store[..packed_n * n * FO] as *const [MaybeUninit<f32>] as *const [f32]) };
        let mut panels = [PanelF32 {
            w: &[],
            bias: &short_b,
            o0: 0,
            no: 0,
        }; MAXPAN];
        for (k, pan) in panels.iter_mut().enumerate().take(npan) {
            let (o0, no) = (g0 + k * FO, FO.min(gn - k * FO));
            pan.w = match (prepacked, no == FO) {
                (true, true) => &w[o0 * n..][..n * FO],
                (true, false) => &packed[..n * FO],
                (false, _) => &packed[k * n * FO..][..n * FO],
            };
            if let Ok(full) = bias[o0..o0 + no].try_into() {
                pan.bias = full;
            }
            (pan.o0, pan.no) = (o0, no);
        }
        f(&panels[..npan]);
        g0 += gn;
    }
}

/// The outer-product conv; `prepacked`: `w` is [`pack_conv1x1_f32`]'s layout.
fn outer_f32(
    g: &Geom,
    x: &[f32],
    w: &[f32],
    prepacked: bool,
    bias: &[f32],
    relu: bool,
    y: &mut [f32],
) {
    let (n, npix, cout) = (g.cin, g.ho * g.wo, g.cout);
    if n > FMAXC {
        return conv1x1_f32_dots(g, x, w, bias, relu, y);
    }
    let (w, bias, y) = (&w[..cout * n], &bias[..cout], &mut y[..npix * cout]);
    groups_f32(n, w, prepacked, bias, &mut |panels| {
        let mut p = 0;
        while p < npix {
            let np = FP.min(npix - p);
            let row = |i: usize| &x[src(g, p + i)..][..n];
            let out = &mut y[p * cout..];
            // The tile's inputs stay in L1 across the group's panels.
            for pan in panels {
                let (panel, b, o0, no) = (pan.w, pan.bias, pan.o0, pan.no);
                macro_rules! tile {
                    ($p:literal, $b:literal) => {
                        // SAFETY: only installed after AVX2+FMA detection; `panel` holds
                        // `n·FO`, every row `n`; `out` holds `$p` pixels of `cout` channels
                        // from `o0`, `o0 + no ≤ cout`, `no ≤ 8·$b`.
                        unsafe {
                            tile_outer_f32::<$p, $b>(
                                panel,
                                core::array::from_fn(row),
                                b,
                                relu,
                                &mut *out,
                                cout,
                                o0,
                                no,
                            )
                        }
                    };
                    ($p:literal) => {
                        if no > 8 {
                            tile!($p, 2)
                        } else {
                            tile!($p, 1)
                        }
                    };
                }
                match np {
                    1 => tile!(1),
                    2 => tile!(2),
                    3 => tile!(3),
                    4 => tile!(4),
                    5 => tile!(5),
                    _ => tile!(6),
                }
            }
            p += np;
        }
    });
}

/// Rows `0 .. no` (`no ≤ FO`) of `w` (`[no, n]`) as `[n][FO]` into `store` (exactly `n·FO`
/// long), the channels past `no` as 0; every element is written. Whole 8-channel blocks
/// go 8 inputs at a time through [`transpose_8x8`], the rest element by element.
fn pack_panel_f32<'s>(
    w: &[f32],
    n: usize,
    no: usize,
    store: &'s mut [MaybeUninit<f32>],
) -> &'s [f32] {
    debug_assert!(no <= FO && store.len() == n * FO && w.len() >= no * n);
    for l0 in [0, 8] {
        let mut k = 0;
        if l0 + 8 <= no {
            while k + 8 <= n {
                let rows: [&[f32]; 8] = core::array::from_fn(|l| &w[(l0 + l) * n + k..][..8]);
                // SAFETY: only installed after AVX2+FMA detection; each row holds 8 f32,
                // and rows `k .. k + 8` of the panel (`k + 8 ≤ n`) hold lanes `l0 .. l0 + 8`.
                unsafe { transpose_8x8(rows, &mut store[k * FO + l0..][..7 * FO + 8]) };
                k += 8;
            }
        }
        for kk in k..n {
            for l in l0..l0 + 8 {
                let v = if l < no { w[l * n + kk] } else { 0.0 };
                store[kk * FO + l].write(v);
            }
        }
    }
    // SAFETY: every one of the `n·FO` elements was written above (lanes 0–7 and 8–15 of
    // every row `k < n`); `MaybeUninit<f32>` has the layout of `f32`.
    unsafe { &*(store as *const [MaybeUninit<f32>] as *const [f32]) }
}

/// `out[FO·j + l] = rows[l][j]` for `j, l < 8`: an 8×8 transpose ([`super::transpose8`])
/// into 8 rows of a panel.
///
/// # Safety
/// AVX available; every row holds 8 f32, `out` at least `7·FO + 8`.
#[target_feature(enable = "avx2,fma")]
unsafe fn transpose_8x8(rows: [&[f32]; 8], out: &mut [MaybeUninit<f32>]) {
    debug_assert!(rows.iter().all(|r| r.len() >= 8) && out.len() >= 7 * FO + 8);
    let mut r = [_mm256_setzero_ps(); 8];
    for (v, row) in r.iter_mut().zip(rows) {
        // SAFETY: each row holds 8 f32 (this function's contract).
        *v = unsafe { _mm256_loadu_ps(row.as_ptr()) };
    }
    let t = super::transpose8(r);
    for (j, v) in t.into_iter().enumerate() {
        // SAFETY: column `j < 8` lands at `FO·j`, 8 f32, inside `out` (`FO·7 + 8` long).
        unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(FO * j).cast(), v) };
    }
}

/// `P` pixels × `B` 8-channel blocks of one panel: `acc[p][b] = Σ_k panel[k][8b..] ·
/// xs[p][k]` (FMA, `k` ascending), then `+ bias`, ReLU, stored to channels `o0 .. o0 + no`
/// of `out`'s pixel rows (`cout` apart).
///
/// # Safety
/// AVX2 and FMA available; `panel` holds `n·FO` for `n = xs[0].len()`, every row of `xs`
/// `n`; `out` holds `(P − 1)·cout + o0 + no`, `no ≤ 8·B`.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_outer_f32<const P: usize, const B: usize>(
    panel: &[f32],
    xs: [&[f32]; P],
    bias: &[f32; FO],
    relu: bool,
    out: &mut [f32],
    cout: usize,
    o0: usize,
    no: usize,
) {
    let n = xs[0].len();
    debug_assert!(panel.len() >= n * FO && xs.iter().all(|r| r.len() >= n));
    debug_assert!(no <= 8 * B && out.len() >= (P - 1) * cout + o0 + no);
    let mut acc = [[_mm256_setzero_ps(); B]; P];
    let xp = xs.map(|r| r.as_ptr());
    for k in 0..n {
        // SAFETY: `k < n`: panel row `k` (`FO` f32) and element `k` of every input row.
        unsafe {
            let mut wv = [_mm256_setzero_ps(); B];
            for (b, v) in wv.iter_mut().enumerate() {
                *v = _mm256_loadu_ps(panel.as_ptr().add(k * FO + 8 * b));
            }
            for p in 0..P {
                let xb = _mm256_broadcast_ss(&*xp[p].add(k));
                for b in 0..B {
                    acc[p][b] = _mm256_fmadd_ps(wv[b], xb, acc[p][b]);
                }
            }
        }
    }
    let mut bv = [_mm256_setzero_ps(); B];
    for (b, v) in bv.iter_mut().enumerate() {
        // SAFETY: `bias` holds `FO ≥ 8·B` f32.
        *v = unsafe { _mm256_loadu_ps(bias.as_ptr().add(8 * b)) };
    }
    for (p, ap) in acc.iter().enumerate() {
        let mut v = [_mm256_setzero_ps(); B];
        for b in 0..B {
            v[b] = _mm256_add_ps(ap[b], bv[b]);
            if relu {
                // `max_ps` returns its second operand for a NaN lane: 0, as `f32::max`.
                v[b] = _mm256_max_ps(v[b], _mm256_setzero_ps());
            }
        }
        let o = &mut out[p * cout + o0..][..no];
        if no == 8 * B {
            for (b, &vb) in v.iter().enumerate() {
                // SAFETY: `o` holds `8·B` f32, `8b + 8 ≤ 8·B`.
                unsafe { _mm256_storeu_ps(o.as_mut_ptr().add(8 * b), vb) };
            }
        } else {
            // A short last panel: through a buffer (no call to copy a whole panel).
            let mut t = [0.0f32; 16];
            for (b, &vb) in v.iter().enumerate() {
                // SAFETY: `t` holds 16 f32, `8b + 8 ≤ 8·B ≤ 16`.
                unsafe { _mm256_storeu_ps(t.as_mut_ptr().add(8 * b), vb) };
            }
            o.copy_from_slice(&t[..no]);
        }
    }
}

/// The dot-product tiles for inputs wider than [`FMAXC`] (same contract).
pub(super) fn conv1x1_f32_dots(
    g: &Geom,
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    relu: bool,
    y: &mut [f32],
) {
    let (n, npix) = (g.cin, g.ho * g.wo);
    let (w, bias, y) = (&w[..g.cout * n], &bias[..g.cout], &mut y[..npix * g.cout]);
    let mut p = 0;
    while p < npix {
        let row = |i: usize| &x[src(g, p + i)..][..n];
        match npix - p {
            1 => rows_f32::<1>([row(0)], w, bias, relu, &mut y[p * g.cout..]),
            2 => rows_f32::<2>([row(0), row(1)], w, bias, relu, &mut y[p * g.cout..]),
            _ => rows_f32::<PF>(
                [row(0), row(1), row(2)],
                w,
                bias,
                relu,
                &mut y[p * g.cout..],
            ),
        }
        p += PF.min(npix - p);
    }
}

/// All output channels of `P` pixels (`xs`, each `cin` long) into `y[..P·cout]`.
#[inline]
fn rows_f32<const P: usize>(xs: [&[f32]; P], w: &[f32], bias: &[f32], relu: bool, y: &mut [f32]) {
    let (n, cout) = (xs[0].len(), bias.len());
    let act = |v: f32| if relu { v.max(0.0) } else { v };
    let mut o = 0;
    while o < cout {
        if o + 4 <= cout {
            let ws = rows4(w, o, n);
            // SAFETY: only installed after AVX2+FMA detection (`x86_64::detected`); every
            // row in `xs` and `ws` holds exactly `n` elements.
            let d = unsafe { tile_f32::<P, 4>(xs, ws, n) };
            for (p, dp) in d.iter().enumerate() {
                for (j, v) in dp.iter().enumerate() {
                    y[p * cout + o + j] = act(bias[o + j] + v);
                }
            }
            o += 4;
        } else {
            // SAFETY: as above, one row.
            let d = unsafe { tile_f32::<P, 1>(xs, [&w[o * n..][..n]], n) };
            for (p, dp) in d.iter().enumerate() {
                y[p * cout + o] = act(bias[o] + dp[0]);
            }
            o += 1;
        }
    }
}

/// `P × O` dot products of length `n`: `out[p][o] = Σ_i xs[p][i]·ws[o][i]`.
///
/// # Safety
/// AVX2 and FMA available; every slice in `xs` and `ws` holds at least `n` elements.
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_f32<const P: usize, const O: usize>(
    xs: [&[f32]; P],
    ws: [&[f32]; O],
    n: usize,
) -> [[f32; O]; P] {
    debug_assert!(xs.iter().all(|s| s.len() >= n) && ws.iter().all(|s| s.len() >= n));
    let mut acc = [[_mm256_setzero_ps(); O]; P];
    let body = n & !7;
    let mut i = 0;
    while i < body {
        // SAFETY: `i + 8 <= n` and every row holds `n` elements: unaligned 8-lane loads.
        unsafe {
            let mut wv = [_mm256_setzero_ps(); O];
            for o in 0..O {
                wv[o] = _mm256_loadu_ps(ws[o].as_ptr().add(i));
            }
            for p in 0..P {
                let xv = _mm256_loadu_ps(xs[p].as_ptr().add(i));
                for o in 0..O {
                    acc[p][o] = _mm256_fmadd_ps(wv[o], xv, acc[p][o]);
                }
            }
        }
        i += 8;
    }
    if i < n {
        let m = lane_mask(n - i);
        // SAFETY: the mask enables only lanes `< n − i`, which are in bounds; masked-off
        // lanes are not accessed (and read as 0, so they add 0·0).
        unsafe {
            let m = _mm256_loadu_si256(m.as_ptr().cast());
            let mut wv = [_mm256_setzero_ps(); O];
            for o in 0..O {
                wv[o] = _mm256_maskload_ps(ws[o].as_ptr().add(i), m);
            }
            for p in 0..P {
                let xv = _mm256_maskload_ps(xs[p].as_ptr().add(i), m);
                for o in 0..O {
                    acc[p][o] = _mm256_fmadd_ps(wv[o], xv, acc[p][o]);
                }
            }
        }
    }
    let mut out = [[0.0f32; O]; P];
    for p in 0..P {
        if O == 4 {
            let s = hsum4_ps(acc[p][0], acc[p][1], acc[p][2], acc[p][3]);
            let mut t = [0.0f32; 4];
            // SAFETY: `t` holds 4 f32.
            unsafe { _mm_storeu_ps(t.as_mut_ptr(), s) };
            out[p].copy_from_slice(&t[..O]);
        } else {
            for o in 0..O {
                out[p][o] = hsum_ps(acc[p][o]);
            }
        }
    }
    out
}

/// `[Σa, Σb, Σc, Σd]` of four 8-lane vectors (three `hadd`s and one cross-lane add).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn hsum4_ps(a: __m256, b: __m256, c: __m256, d: __m256) -> __m128 {
    let s = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
    _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1))
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn hsum_ps(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)))
}

/// AVX2 exact `Σ w·(x − zx)` over the common length; twin of `reference::conv1x1::dot_i8`.
pub(crate) fn dot_i8(w: &[i8], x: &[i8], zx: i32) -> i32 {
    let n = w.len().min(x.len());
    // SAFETY: only installed after AVX2 detection; both slices hold at least `n` bytes.
    unsafe { tile_i8::<1, 1>([&x[..n]], [&w[..n]], n, zx)[0][0] }
}

/// Output pixels per int8 outer-product tile ([`conv1x1_i8`]).
const PO: usize = 4;
/// Smallest conv (output pixels) whose int8 **rows** the outer product packs per call
/// ([`conv1x1_i8`], the streamed `W0` sums): below, the dot tiles on the rows win. Per call
/// the packing costs about as much as [`PO`] pixels of multiply-adds, so at 4 pixels it
/// doubled the work (4 → 8: the 2×2 layers of 0.5x @64 in Streaming and Auto, and its
/// 192 → 1024 conv, −10 % of their 1x1 time; BENCHMARKS.md, 2026-12-02). Weights packed at
/// the switch ([`PACKED_I8_MIN_PIXELS`]) are read where they lie, and keep [`PO`].
pub(super) const ROWS_MIN_PIXELS: usize = 8;
/// Widest input the int8 outer-product path widens on the stack.
const MAXC: usize = 1024;
/// Packed weight bytes the outer-product path holds on the stack (32 KiB): a panel of
/// channels at a time for wider convs.
const WCAP: usize = 32 * 1024;

/// AVX2 int8 pointwise conv; bit-exact twin of `reference::conv1x1::conv1x1_i8`.
///
/// An outer product, so no horizontal sums, and the requantisation fused into the tile's
/// store: the lanes of one accumulator are 8 **output channels** of one pixel. The weights
/// are packed as byte pairs `[block of 8 channels][cin/2][8][2]` once per call and panel
/// ([`outer_i8`]; at the switch for a Materialized expert); per tile of [`PO`] pixels the
/// inputs are widened once to `x − zx` (i16); then for two blocks at a time every input
/// pair `(x_i, x_{i+1})` is broadcast and one `madd` per block (its weights sign-extended
/// as loaded) adds `w[o][i]·x_i + w[o][i+1]·x_{i+1}` to its 8 channels (exact:
/// `|w·(x − zx)| ≤ 128·255`, sums far from overflow). The finished accumulators go through
/// the requantisation ([`requant8_plain`] or [`requant8_sum`]) straight to the output bytes. Inputs
/// wider than [`MAXC`], and convs of fewer than [`ROWS_MIN_PIXELS`] pixels (there packing
/// the weights would cost more than the multiply-adds: ShuffleNetV2's last stages at small
/// inputs), take the dot-product tiles ([`conv1x1_i8_dots`]), which read the weights as
/// they lie.
pub(crate) fn conv1x1_i8(
    g: &Geom,
    x: &[i8],
    zx: i32,
    w: &[i8],
    rq: &[[i32; 3]],
    q: OutQ,
    y: &mut [i8],
) {
    let (n, npix, cout) = (g.cin, g.ho * g.wo, g.cout);
    if n > MAXC || cout > MAXQ || npix < ROWS_MIN_PIXELS {
        return conv1x1_i8_dots(g, x, zx, w, rq, q, y);
    }
    conv1x1_i8_outer(g, x, zx, w, false, rq, q, y)
}

/// Smallest conv (output pixels) whose weights the switch packs for
/// [`conv1x1_i8_packed`]: below, the dot tiles reading int8 rows beat sign-extending every
/// weight per call for a tile of mostly idle rows (the 1-pixel last stages at small inputs).
pub(crate) const PACKED_I8_MIN_PIXELS: usize = PO;

/// Whether [`pack_conv1x1_i8`] lays out (and [`conv1x1_i8_packed`] reads) a weight of
/// `cin` inputs: the outer product's widths with whole input pairs (an odd `cin` would
/// need a padding byte per channel). It must not depend on `cout`: a conv split by
/// channels hands its parts slices of the whole's layout.
fn packs_i8(cin: usize) -> bool {
    cin > 0 && cin <= MAXC && cin.is_multiple_of(2)
}

/// Lays a `[cout, cin]` int8 weight out in place for [`conv1x1_i8_packed`]: every whole
/// block of 8 output channels becomes `[cin/2][8][2]` — the order [`pack_pairs`] gives
/// the outer product's panel — so a call reads it where it lies, without the per-call
/// transposes; the last `cout % 8` rows stay rows at the same offset. The length is
/// unchanged, and channels `c0 .. c0 + m` (`c0`, and `m` unless it reaches `cout`,
/// multiples of 8) are that slice's own layout. Shapes [`packs_i8`] refuses stay rows.
pub(crate) fn pack_conv1x1_i8(cout: usize, cin: usize, w: &mut [i8]) {
    if !packs_i8(cin) {
        return;
    }
    let mut rows = [0i8; 8 * MAXC];
    for blk in w[..cout / 8 * 8 * cin].chunks_exact_mut(8 * cin) {
        rows[..8 * cin].copy_from_slice(blk);
        let rows = &rows[..8 * cin];
        let mut k = 0;
        while 2 * k + 16 <= cin {
            let r: [&[i8]; 8] = core::array::from_fn(|l| &rows[l * cin + 2 * k..][..16]);
            // SAFETY: only installed after AVX2 detection; each row holds 16 bytes.
            let t = unsafe { transpose_pairs_8x8(r) };
            for (j, v) in t.into_iter().enumerate() {
                let dst = &mut blk[16 * (k + j)..][..16];
                // SAFETY: `dst` holds 16 bytes.
                unsafe { _mm_storeu_si128(dst.as_mut_ptr().cast(), v) };
            }
            k += 8;
        }
        for kk in k..cin / 2 {
            for l in 0..8 {
                for j in 0..2 {
                    blk[16 * kk + 2 * l + j] = rows[l * cin + 2 * kk + j];
                }
            }
        }
    }
}

/// [`conv1x1_i8`] on weights [`pack_conv1x1_i8`] laid out at `select` (bit-exact to it on
/// the rows). Every shape it packs takes the outer product, at any pixel count (the dot
/// tiles read rows); the others run [`conv1x1_i8`].
pub(crate) fn conv1x1_i8_packed(
    g: &Geom,
    x: &[i8],
    zx: i32,
    w: &[i8],
    rq: &[[i32; 3]],
    q: OutQ,
    y: &mut [i8],
) {
    if !packs_i8(g.cin) {
        return conv1x1_i8(g, x, zx, w, rq, q, y);
    }
    conv1x1_i8_outer(g, x, zx, w, true, rq, q, y)
}

/// The outer-product int8 conv; `prepacked`: `w` is [`pack_conv1x1_i8`]'s layout.
#[allow(clippy::too_many_arguments)]
fn conv1x1_i8_outer(
    g: &Geom,
    x: &[i8],
    zx: i32,
    w: &[i8],
    prepacked: bool,
    rq: &[[i32; 3]],
    q: OutQ,
    y: &mut [i8],
) {
    let (n, npix, cout) = (g.cin, g.ho * g.wo, g.cout);
    let (w, rq, y) = (&w[..cout * n], &rq[..cout], &mut y[..npix * cout]);
    // The requantisation lanes hold `MAXQ` channels: wider convs go `MAXQ` at a time (a
    // multiple of 16, so each run of a packed weight is that run's own layout).
    let mut c0 = 0;
    while c0 < cout {
        let m = MAXQ.min(cout - c0);
        let sub = Geom { cout: m, ..*g };
        let mut cols = RqCols::new();
        let _ = Requant::new(&rq[c0..c0 + m], q, &mut cols);
        let wsub = &w[c0 * n..(c0 + m) * n];
        outer_i8(&sub, x, zx, wsub, prepacked, &mut |t: OuterTile<'_>| {
            let out = Out {
                y: &mut *y,
                at: t.p * cout + c0 + t.ob,
                stride: cout,
                np: t.np,
                nb: t.nb,
            };
            // SAFETY: only installed after AVX2 detection; `OuterTile`'s invariants, and
            // `ob + 16 ≤ MAXQ` when two blocks (`m ≤ MAXQ`).
            unsafe {
                if t.nb > 8 {
                    tile_outer::<2>(t.wp, t.xw, t.pairs, &cols, t.ob, q, out)
                } else {
                    tile_outer::<1>(t.wp, t.xw, t.pairs, &cols, t.ob, q, out)
                }
            };
        });
        c0 += m;
    }
}

/// One call of [`outer_i8`]'s tile function: channels `ob .. ob + nb` (two 8-channel
/// blocks, or one at a panel's end) of output pixels `p .. p + np`, inside the packed
/// panel of channels `panel.0 .. panel.1`.
struct OuterTile<'t> {
    /// The tile's inputs, widened: rows `0 .. np` hold `x − zx`, each at least `2·pairs`.
    xw: &'t [[MaybeUninit<i16>; MAXC + 2]; PO],
    pairs: usize,
    /// The tile's blocks' packed weights, `16·pairs` bytes each (the second only when
    /// `nb > 8`).
    wp: [&'t [i8]; 2],
    ob: usize,
    nb: usize,
    p: usize,
    np: usize,
    panel: (usize, usize),
}

/// The int8 outer product's driver (shared by the conv and the `W0` sums): the weights
/// packed by [`pack_pairs`] a panel of up to [`WCAP`] i16 at a time (one panel for all but
/// the widest convs), the inputs of each [`PO`]-pixel tile widened once per panel, then
/// `tile` on every [`OuterTile`], a panel's pixel tiles in order, a pixel tile's channel
/// blocks in order.
fn outer_i8(
    g: &Geom,
    x: &[i8],
    zx: i32,
    w: &[i8],
    prepacked: bool,
    tile: &mut dyn FnMut(OuterTile<'_>),
) {
    let (n, npix, cout) = (g.cin, g.ho * g.wo, g.cout);
    let (pairs, blocks) = (n.div_ceil(2), cout.div_ceil(8));
    // `n ≤ MAXC` gives `16·pairs ≤ 8192`: at least 4 blocks a panel.
    let panel = (WCAP / (16 * pairs)).min(blocks);
    let mut store = [const { MaybeUninit::<i8>::uninit() }; WCAP];
    // Only each row's first `2·pairs` are ever written or read (no 8 KiB zeroing per call).
    let mut xw = [[const { MaybeUninit::<i16>::uninit() }; MAXC + 2]; PO];
    let mut b0 = 0;
    while b0 < blocks {
        let nbk = panel.min(blocks - b0);
        let (lo, hi) = (8 * b0, cout.min(8 * (b0 + nbk)));
        // The panel's blocks in pair order: with `prepacked` its whole blocks read where
        // they lie (`8·pairs = n` bytes a channel, `n` even: `packs_i8`) and a short last
        // block (still rows) packed; otherwise all packed here.
        let whole = if prepacked { (hi - lo) / 8 } else { 0 };
        let direct = &w[lo * n..(lo + 8 * whole) * n];
        let packed = pack_pairs(
            &w[(lo + 8 * whole) * n..hi * n],
            n,
            hi - lo - 8 * whole,
            &mut store[..(nbk - whole) * 16 * pairs],
        );
        let blk = |b: usize| match b.checked_sub(whole) {
            None => &direct[b * 16 * pairs..][..16 * pairs],
            Some(k) => &packed[k * 16 * pairs..][..16 * pairs],
        };
        let mut p = 0;
        while p < npix {
            let np = PO.min(npix - p);
            for (t, row) in xw.iter_mut().enumerate() {
                let row = &mut row[..2 * pairs];
                if t < np {
                    // SAFETY: only installed after AVX2 detection; `row` holds `2·pairs`.
                    unsafe { widen(&x[src(g, p + t)..][..n], zx, row) };
                } else {
                    // A short tile's spare rows: summed like the others, never stored.
                    row.fill(MaybeUninit::new(0));
                }
            }
            let mut b = 0;
            while b < nbk {
                let two = b + 2 <= nbk;
                let ob = lo + 8 * b;
                let nb = (if two { 16 } else { 8 }).min(cout - ob);
                tile(OuterTile {
                    xw: &xw,
                    pairs,
                    wp: [blk(b), if two { blk(b + 1) } else { blk(b) }],
                    ob,
                    nb,
                    p,
                    np,
                    panel: (lo, hi),
                });
                b += if two { 2 } else { 1 };
            }
            p += np;
        }
        b0 += nbk;
    }
}

/// `dst.copy_from_slice(&src[..dst.len()])` for `dst.len() ≤ 16` by at most four fixed-size
/// moves (16, or 8 + 4 + 2 + 1 as the length's bits say): a variable-length copy is a
/// `memcpy` call, once per pixel and block of a pointwise conv's last channels.
#[inline]
fn put_bytes(dst: &mut [i8], src: &[i8; 16]) {
    let n = dst.len();
    if let Ok(d) = <&mut [i8; 16]>::try_from(&mut *dst) {
        *d = *src;
        return;
    }
    let mut at = 0;
    for step in [8, 4, 2, 1] {
        if n & step != 0 {
            dst[at..at + step].copy_from_slice(&src[at..at + step]);
            at += step;
        }
    }
}

/// Packs `w` (`[cout, n]`) as `[cout/8][n/2][8][2]` bytes into `store` (exactly that long),
/// missing channels and the odd input's partner as 0; every element is written.
///
/// Runs once per conv call, so at a few pixels it costs as much as the GEMM itself: whole
/// blocks of 8 channels × 8 pairs go through [`pack_8x8`], the edges element by element.
fn pack_pairs<'s>(w: &[i8], n: usize, cout: usize, store: &'s mut [MaybeUninit<i8>]) -> &'s [i8] {
    let pairs = n.div_ceil(2);
    for (b, blk) in store.chunks_exact_mut(16 * pairs).enumerate() {
        let mut k = 0;
        if 8 * b + 8 <= cout {
            while 2 * k + 16 <= n {
                let rows: [&[i8]; 8] =
                    core::array::from_fn(|l| &w[(8 * b + l) * n + 2 * k..][..16]);
                // SAFETY: only installed after AVX2 detection; each row holds 16 bytes and
                // the destination `16·8` elements (`k + 8 ≤ pairs`).
                unsafe { pack_8x8(rows, &mut blk[16 * k..][..128]) };
                k += 8;
            }
        }
        for (kk, pair) in blk.chunks_exact_mut(16).enumerate().skip(k) {
            for (l, lane) in pair.chunks_exact_mut(2).enumerate() {
                let o = 8 * b + l;
                for (j, v) in lane.iter_mut().enumerate() {
                    let i = 2 * kk + j;
                    let val = if o < cout && i < n { w[o * n + i] } else { 0 };
                    v.write(val);
                }
            }
        }
    }
    debug_assert_eq!(store.len() % (16 * pairs.max(1)), 0);
    // SAFETY: the loops above wrote every element of `store` (its length is a whole
    // number of `16·pairs` blocks, the caller sized it so; [`pack_8x8`] writes all 128 of
    // its elements); `MaybeUninit<i8>` has the layout of `i8`.
    unsafe { &*(store as *const [MaybeUninit<i8>] as *const [i8]) }
}

/// 8 channels × 8 input pairs: `rows[l]` is channel `l`'s 16 inputs; writes pair `j`'s
/// `[(w_0, w_0'), …, (w_7, w_7')]` at `out[16j..16j + 16]`.
///
/// # Safety
/// AVX2 available; every row holds 16 bytes, `out` 128 elements.
#[target_feature(enable = "avx2")]
unsafe fn pack_8x8(rows: [&[i8]; 8], out: &mut [MaybeUninit<i8>]) {
    debug_assert!(out.len() >= 128);
    // SAFETY: this function's contract.
    let t = unsafe { transpose_pairs_8x8(rows) };
    for (j, v) in t.into_iter().enumerate() {
        // SAFETY: pair `j < 8`: 16 bytes inside `out`'s 128.
        unsafe { _mm_storeu_si128(out.as_mut_ptr().add(16 * j).cast(), v) };
    }
}

/// 8 channels × 8 input pairs as bytes: `rows[l]` is channel `l`'s 16 inputs; vector `j`
/// is pair `j`'s `[(w_0, w_0'), …, (w_7, w_7')]` — an 8×8 transpose of 16-bit pairs (three
/// rounds of unpacks).
///
/// # Safety
/// AVX2 available; every row holds 16 bytes.
#[target_feature(enable = "avx2")]
unsafe fn transpose_pairs_8x8(rows: [&[i8]; 8]) -> [__m128i; 8] {
    debug_assert!(rows.iter().all(|r| r.len() >= 16));
    let mut r = [_mm_setzero_si128(); 8];
    for (v, row) in r.iter_mut().zip(rows) {
        // SAFETY: each row holds 16 bytes (this function's contract).
        *v = unsafe { _mm_loadu_si128(row.as_ptr().cast()) };
    }
    let t = [
        _mm_unpacklo_epi16(r[0], r[1]),
        _mm_unpackhi_epi16(r[0], r[1]),
        _mm_unpacklo_epi16(r[2], r[3]),
        _mm_unpackhi_epi16(r[2], r[3]),
        _mm_unpacklo_epi16(r[4], r[5]),
        _mm_unpackhi_epi16(r[4], r[5]),
        _mm_unpacklo_epi16(r[6], r[7]),
        _mm_unpackhi_epi16(r[6], r[7]),
    ];
    // u[0..4]: rows 0–3 of pairs (0,1), (2,3), (4,5), (6,7); u[4..8]: rows 4–7.
    let u = [
        _mm_unpacklo_epi32(t[0], t[2]),
        _mm_unpackhi_epi32(t[0], t[2]),
        _mm_unpacklo_epi32(t[1], t[3]),
        _mm_unpackhi_epi32(t[1], t[3]),
        _mm_unpacklo_epi32(t[4], t[6]),
        _mm_unpackhi_epi32(t[4], t[6]),
        _mm_unpacklo_epi32(t[5], t[7]),
        _mm_unpackhi_epi32(t[5], t[7]),
    ];
    let mut out = [_mm_setzero_si128(); 8];
    for j in 0..4 {
        out[2 * j] = _mm_unpacklo_epi64(u[j], u[j + 4]);
        out[2 * j + 1] = _mm_unpackhi_epi64(u[j], u[j + 4]);
    }
    out
}

/// `out[i] = x[i] − zx` as i16 for `i < x.len()`, then 0 up to `out.len()`.
///
/// # Safety
/// AVX2 available; `out.len() ≥ x.len()`.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn widen(x: &[i8], zx: i32, out: &mut [MaybeUninit<i16>]) {
    let n = x.len();
    debug_assert!(out.len() >= n);
    let z = _mm256_set1_epi16(zx as i16);
    let mut i = 0;
    while i < n && n >= 16 {
        // The last step ends at `n` (overlapping the one before: the same values again), so
        // no element goes one at a time once there are 16.
        let at = i.min(n - 16);
        // SAFETY: `at + 16 <= n ≤ out.len()`: 16 bytes read, 16 i16 written.
        unsafe {
            let v = _mm_loadu_si128(x.as_ptr().add(at).cast());
            let v = _mm256_sub_epi16(_mm256_cvtepi8_epi16(v), z);
            _mm256_storeu_si256(out.as_mut_ptr().add(at).cast(), v);
        }
        i = at + 16;
    }
    for j in i..n {
        out[j].write(x[j] as i16 - zx as i16);
    }
    out[n..].fill(MaybeUninit::new(0));
}

/// Where [`tile_outer`] writes: channels `at .. at + nb` of the first `np` pixel rows of
/// `y`, `stride` apart.
struct Out<'y> {
    y: &'y mut [i8],
    at: usize,
    stride: usize,
    np: usize,
    nb: usize,
}

/// [`PO`] pixels × `B` blocks of 8 channels: `acc[p][o] = bias[o] + Σ_k madd(wp[b][k],
/// (xw[p][2k], xw[p][2k+1]))`, requantised with the parameters of channels `ob .. ob + 8·B`
/// ([`requant8_plain`] when the conv's channels are plain, a block's parameters loaded once
/// for its 4 pixels) and stored to `out`: two pixels' 16 channels narrowed by one byte
/// pack and stored straight into their rows, a partial tile's bytes copied.
///
/// # Safety
/// AVX2 available; every `wp[b]` (`b < B`) at least `16·pairs` long, `2·pairs ≤ MAXC +
/// 2`, `ob + 8·B ≤ MAXQ`, `ob` a multiple of 8; `out.np ≤ PO`, `out.nb ≤ 8·B`.
#[target_feature(enable = "avx2")]
unsafe fn tile_outer<const B: usize>(
    wp: [&[i8]; 2],
    xw: &[[MaybeUninit<i16>; MAXC + 2]; PO],
    pairs: usize,
    cols: &RqCols,
    ob: usize,
    q: OutQ,
    out: Out<'_>,
) {
    // The accumulators start at the bias (wrapping adds: the same sums).
    let mut bias = [_mm256_setzero_si256(); B];
    for (b, v) in bias.iter_mut().enumerate() {
        *v = cols.bias8(ob + 8 * b);
    }
    // SAFETY: this function's contract.
    let acc = unsafe { tile_sums::<B>(wp, xw, pairs, bias) };
    let mut r = [[_mm256_setzero_si256(); B]; PO];
    for b in 0..B {
        if cols.plain() {
            let rq = cols.plain8(ob + 8 * b);
            for p in 0..PO {
                r[p][b] = requant8_plain(acc[p][b], &rq);
            }
        } else {
            let rq = cols.lanes(ob + 8 * b);
            for p in 0..PO {
                r[p][b] = requant8_sum(acc[p][b], &rq, q);
            }
        }
    }
    let Out {
        y,
        at,
        stride,
        np,
        nb,
    } = out;
    assert!(np <= PO && nb <= 8 * B);
    if B == 2 && nb == 16 {
        // (`B − 1` is block 1 here, written so that the one-block form compiles.)
        for p in (0..np).step_by(2) {
            let v = super::narrow16x2([r[p][0], r[p][B - 1]], [r[p + 1][0], r[p + 1][B - 1]]);
            let d = &mut y[at + p * stride..][..16];
            // SAFETY: `d` holds 16 bytes.
            unsafe { _mm_storeu_si128(d.as_mut_ptr().cast(), _mm256_castsi256_si128(v)) };
            if p + 1 < np {
                let d = &mut y[at + (p + 1) * stride..][..16];
                // SAFETY: `d` holds 16 bytes.
                unsafe {
                    _mm_storeu_si128(d.as_mut_ptr().cast(), _mm256_extracti128_si256::<1>(v))
                };
            }
        }
        return;
    }
    for (p, rp) in r.iter().enumerate().take(np) {
        let mut bytes = [0i8; 16];
        for (b, &v) in rp.iter().enumerate() {
            // SAFETY: `bytes` holds 16 bytes, `8b + 8 ≤ 16`.
            unsafe { _mm_storel_epi64(bytes.as_mut_ptr().add(8 * b).cast(), super::narrow8(v)) };
        }
        put_bytes(&mut y[at + p * stride..][..nb], &bytes);
    }
}

/// The exact sums of [`tile_outer`], one 8-channel vector per pixel and block: each
/// broadcast input pair feeds `B` blocks, whose weight pairs are sign-extended as they are
/// loaded (`vpmovsxbw`: no widened copy of the weights per call).
///
/// # Safety
/// As [`tile_outer`].
#[target_feature(enable = "avx2")]
unsafe fn tile_sums<const B: usize>(
    wp: [&[i8]; 2],
    xw: &[[MaybeUninit<i16>; MAXC + 2]; PO],
    pairs: usize,
    init: [__m256i; B],
) -> [[__m256i; B]; PO] {
    debug_assert!(wp[..B].iter().all(|w| w.len() >= 16 * pairs) && 2 * pairs <= MAXC + 2);
    let mut acc = [init; PO];
    let xp: [*const i32; PO] = [0, 1, 2, 3].map(|p| xw[p].as_ptr().cast::<i32>());
    for k in 0..pairs {
        // SAFETY: `16·k + 16 ≤ 16·pairs ≤ wp[b].len()`; pair `k` of each row is i16 `2k,
        // 2k+1` (`2k + 2 ≤ 2·pairs ≤ MAXC + 2`), read unaligned as one i32.
        unsafe {
            let mut wv = [_mm256_setzero_si256(); B];
            for (v, w) in wv.iter_mut().zip(wp) {
                *v = _mm256_cvtepi8_epi16(_mm_loadu_si128(w.as_ptr().add(16 * k).cast()));
            }
            for p in 0..PO {
                let xb = _mm256_set1_epi32(xp[p].add(k).read_unaligned());
                for b in 0..B {
                    acc[p][b] = _mm256_add_epi32(acc[p][b], _mm256_madd_epi16(wv[b], xb));
                }
            }
        }
    }
    acc
}

/// [`tile_sums`] stored as i32 lanes straight into the sum rows of a panel: rows `0 .. np`
/// at `dst + i·stride`, the `nb` channels of the tile's blocks (a partial last block by
/// masked stores, so nothing past them is touched — the next row's first channels were
/// written by the panel's earlier blocks). Inside the AVX2 body, so the stores inline.
///
/// # Safety
/// As [`tile_outer`]; `np ≤ PO`, `nb ≤ 8·B`, and `dst + i·stride` writable for `nb` i32
/// for every `i < np`.
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_sums_into<const B: usize>(
    wp: [&[i8]; 2],
    xw: &[[MaybeUninit<i16>; MAXC + 2]; PO],
    pairs: usize,
    dst: *mut i32,
    stride: usize,
    np: usize,
    nb: usize,
) {
    // SAFETY: this function's contract.
    let s = unsafe { tile_sums::<B>(wp, xw, pairs, [_mm256_setzero_si256(); B]) };
    debug_assert!(np <= PO && nb <= 8 * B);
    for (i, v) in s.iter().enumerate().take(np) {
        for (b, vb) in v.iter().enumerate() {
            let n = nb.saturating_sub(8 * b).min(8);
            // SAFETY: row `i < np`, lanes `8b .. 8b + n` with `8b + n ≤ nb` (this
            // function's contract); a masked store writes only the first `n`.
            unsafe {
                let p = dst.add(i * stride + 8 * b);
                if n == 8 {
                    _mm256_storeu_si256(p.cast(), *vb)
                } else if n > 0 {
                    let m = _mm256_loadu_si256(super::lane_mask(n).as_ptr().cast());
                    _mm256_maskstore_epi32(p, m, *vb)
                }
            }
        }
    }
}

/// AVX2 twin of `reference::conv1x1::conv1x1_sums_i8` (exact, so equal): the outer-product
/// tiles of [`conv1x1_i8`] without the output stage, one [`PO`]-pixel × panel tile (all
/// channels but in the widest convs) per `sink` call; inputs past [`MAXC`] and convs of
/// fewer than [`ROWS_MIN_PIXELS`] pixels take the dot-product tiles, as in [`conv1x1_i8`].
pub(crate) fn conv1x1_sums_i8(
    g: &Geom,
    x: &[i8],
    zx: i32,
    w: &[i8],
    sink: &mut dyn FnMut(SumTile<'_>),
) {
    let (n, cout) = (g.cin, g.cout);
    if n > MAXC || cout > MAXQ || g.ho * g.wo < ROWS_MIN_PIXELS {
        return sums_dots(g, x, zx, w, sink);
    }
    // A panel's tile rows, each written by its blocks before the panel's last block hands
    // them on (no 16 KiB zeroing per call).
    let mut acc = [const { MaybeUninit::<i32>::uninit() }; PO * MAXQ];
    outer_i8(g, x, zx, &w[..cout * n], false, &mut |t: OuterTile<'_>| {
        let (lo, hi) = t.panel;
        let no = hi - lo;
        // The tile's rows: `np ≤ PO` rows of `no ≤ MAXQ` sums, from column `ob − lo`
        // (`ob − lo + nb ≤ no`).
        let dst = acc[t.ob - lo..(t.np - 1) * no + t.ob - lo + t.nb]
            .as_mut_ptr()
            .cast::<i32>();
        // SAFETY: only installed after AVX2 detection; `OuterTile`'s invariants; row `i <
        // np` of the tile's `nb` sums is inside the slice `dst` was taken from.
        unsafe {
            if t.nb > 8 {
                tile_sums_into::<2>(t.wp, t.xw, t.pairs, dst, no, t.np, t.nb)
            } else {
                tile_sums_into::<1>(t.wp, t.xw, t.pairs, dst, no, t.np, t.nb)
            }
        }
        if t.ob + t.nb == hi {
            // SAFETY: `outer_i8` hands a pixel tile's blocks in order from `lo` to `hi`, so
            // rows `0 .. np` of channels `lo .. hi` were all written above;
            // `MaybeUninit<i32>` has the layout of `i32`.
            let acc = unsafe { &*(&acc[..t.np * no] as *const [MaybeUninit<i32>] as *const [i32]) };
            sink(SumTile {
                p0: t.p,
                np: t.np,
                o0: lo,
                no,
                acc,
            });
        }
    });
}

/// [`conv1x1_sums_i8`] where [`conv1x1_i8`] takes its dot-product tiles: those tiles —
/// [`PI`] pixels × 4 channels a tile — handed out in blocks of [`PI`] pixels × [`OB`]
/// channels (exact sums, so the reference's).
fn sums_dots(g: &Geom, x: &[i8], zx: i32, w: &[i8], sink: &mut dyn FnMut(SumTile<'_>)) {
    let (n, npix, cout) = (g.cin, g.ho * g.wo, g.cout);
    let w = &w[..cout * n];
    let mut acc = [0i32; PI * OB];
    let mut p = 0;
    while p < npix {
        let np = PI.min(npix - p);
        let row = |i: usize| &x[src(g, p + i)..][..n];
        let mut o0 = 0;
        while o0 < cout {
            let no = OB.min(cout - o0);
            let acc = &mut acc[..np * no];
            if np == PI {
                sums_block::<PI>(core::array::from_fn(row), zx, w, n, o0, no, acc);
            } else {
                sums_block::<1>([row(0)], zx, w, n, o0, no, acc);
            }
            sink(SumTile {
                p0: p,
                np,
                o0,
                no,
                acc,
            });
            o0 += no;
        }
        p += np;
    }
}

/// Channels `o0 .. o0 + no` of the `P` pixels `xs` into `acc[p·no + j]` by [`tile_i8`]
/// tiles of 4 channels (then single channels).
fn sums_block<const P: usize>(
    xs: [&[i8]; P],
    zx: i32,
    w: &[i8],
    n: usize,
    o0: usize,
    no: usize,
    acc: &mut [i32],
) {
    let mut o = 0;
    while o < no {
        if o + 4 <= no {
            let ws = rows4(w, o0 + o, n);
            // SAFETY: only installed after AVX2 detection; every row holds `n` bytes.
            let d = unsafe { tile_i8::<P, 4>(xs, ws, n, zx) };
            for (p, dp) in d.iter().enumerate() {
                acc[p * no + o..][..4].copy_from_slice(dp);
            }
            o += 4;
        } else {
            // SAFETY: as above, one row.
            let d = unsafe { tile_i8::<P, 1>(xs, [&w[(o0 + o) * n..][..n]], n, zx) };
            for (p, dp) in d.iter().enumerate() {
                acc[p * no + o] = dp[0];
            }
            o += 1;
        }
    }
}

/// Weight rows `o .. o + 4` of `n` elements: one bounds check, and an array literal where
/// `[0, 1, 2, 3].map(…)` stayed an out-of-line `try_map` call per tile (2.4 % of a streamed
/// 0.5x @32 inference, whose few-pixel layers run these tiles).
#[inline(always)]
fn rows4<T>(w: &[T], o: usize, n: usize) -> [&[T]; 4] {
    let w = &w[o * n..][..4 * n];
    let (a, rest) = w.split_at(n);
    let (b, rest) = rest.split_at(n);
    let (c, d) = rest.split_at(n);
    [a, b, c, d]
}

/// AVX2 int8 pointwise conv by dot-product tiles (inputs wider than [`MAXC`], or fewer than
/// [`ROWS_MIN_PIXELS`] pixels); bit-exact twin of `reference::conv1x1::conv1x1_i8`.
fn conv1x1_i8_dots(g: &Geom, x: &[i8], zx: i32, w: &[i8], rq: &[[i32; 3]], q: OutQ, y: &mut [i8]) {
    let (n, npix) = (g.cin, g.ho * g.wo);
    let (w, y) = (&w[..g.cout * n], &mut y[..npix * g.cout]);
    let mut cols = RqCols::new();
    let req = Requant::new(&rq[..g.cout], q, &mut cols);
    let mut p = 0;
    while p < npix {
        let row = |i: usize| &x[src(g, p + i)..][..n];
        let y = &mut y[p * g.cout..];
        if npix - p >= PI {
            rows_i8::<PI>([row(0), row(1)], zx, w, g.cout, &req, q, y);
        } else {
            rows_i8::<1>([row(0)], zx, w, g.cout, &req, q, y);
        }
        p += PI.min(npix - p);
    }
}

/// Output channels per requant block.
const OB: usize = 64;

/// All output channels of `P` pixels into `y[..P·cout]`, in blocks of [`OB`] channels: the
/// exact sums into a stack block, then requantised 8 channels at a time.
#[allow(clippy::too_many_arguments)]
#[inline]
fn rows_i8<const P: usize>(
    xs: [&[i8]; P],
    zx: i32,
    w: &[i8],
    cout: usize,
    rq: &Requant<'_>,
    q: OutQ,
    y: &mut [i8],
) {
    let n = xs[0].len();
    let mut acc = [[0i32; OB]; P];
    let mut o0 = 0;
    while o0 < cout {
        let nb = OB.min(cout - o0);
        let mut o = 0;
        while o < nb {
            if o + 4 <= nb {
                let ws = rows4(w, o0 + o, n);
                // SAFETY: only installed after AVX2 detection; every row holds `n` bytes.
                let d = unsafe { tile_i8::<P, 4>(xs, ws, n, zx) };
                for (p, dp) in d.iter().enumerate() {
                    acc[p][o..o + 4].copy_from_slice(dp);
                }
                o += 4;
            } else {
                // SAFETY: as above, one row.
                let d = unsafe { tile_i8::<P, 1>(xs, [&w[(o0 + o) * n..][..n]], n, zx) };
                for (p, dp) in d.iter().enumerate() {
                    acc[p][o] = dp[0];
                }
                o += 1;
            }
        }
        for (p, a) in acc.iter().enumerate() {
            let out = &mut y[p * cout + o0..][..nb];
            // SAFETY: only installed after AVX2 detection.
            unsafe { rq.row(o0, &a[..nb], q, out) };
        }
        o0 += nb;
    }
}

/// `P × O` exact sums `out[p][o] = Σ_i ws[o][i]·(xs[p][i] − zx)`.
///
/// # Safety
/// AVX2 available; every slice in `xs` and `ws` holds at least `n` bytes.
#[target_feature(enable = "avx2")]
unsafe fn tile_i8<const P: usize, const O: usize>(
    xs: [&[i8]; P],
    ws: [&[i8]; O],
    n: usize,
    zx: i32,
) -> [[i32; O]; P] {
    debug_assert!(xs.iter().all(|s| s.len() >= n) && ws.iter().all(|s| s.len() >= n));
    let z = _mm256_set1_epi16(zx as i16);
    let mut acc = [[_mm256_setzero_si256(); O]; P];
    // One 16-lane step over rows already loaded as bytes.
    macro_rules! step {
        ($wv:expr, $xv:expr) => {{
            let (wv, xv): ([__m128i; O], [__m128i; P]) = ($wv, $xv);
            let mut w16 = [_mm256_setzero_si256(); O];
            for o in 0..O {
                w16[o] = _mm256_cvtepi8_epi16(wv[o]);
            }
            for p in 0..P {
                let xp = _mm256_sub_epi16(_mm256_cvtepi8_epi16(xv[p]), z);
                for o in 0..O {
                    acc[p][o] = _mm256_add_epi32(acc[p][o], _mm256_madd_epi16(w16[o], xp));
                }
            }
        }};
    }
    let body = n & !15;
    let mut i = 0;
    while i < body {
        let (mut wv, mut xv) = ([_mm_setzero_si128(); O], [_mm_setzero_si128(); P]);
        for o in 0..O {
            // SAFETY: `i + 16 <= n` and every row holds `n` bytes: unaligned 128-bit load.
            wv[o] = unsafe { _mm_loadu_si128(ws[o].as_ptr().add(i).cast()) };
        }
        for p in 0..P {
            // SAFETY: as above.
            xv[p] = unsafe { _mm_loadu_si128(xs[p].as_ptr().add(i).cast()) };
        }
        step!(wv, xv);
        i += 16;
    }
    if i < n {
        // Tail through zero-padded copies: a padded weight of 0 adds 0 whatever the input.
        let (mut wv, mut xv) = ([_mm_setzero_si128(); O], [_mm_setzero_si128(); P]);
        for o in 0..O {
            wv[o] = load_padded(&ws[o][i..n]);
        }
        for p in 0..P {
            xv[p] = load_padded(&xs[p][i..n]);
        }
        step!(wv, xv);
    }
    let mut out = [[0i32; O]; P];
    for p in 0..P {
        if O == 4 {
            let s = _mm256_hadd_epi32(
                _mm256_hadd_epi32(acc[p][0], acc[p][1]),
                _mm256_hadd_epi32(acc[p][2], acc[p][3]),
            );
            let s = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
            let mut t = [0i32; 4];
            // SAFETY: `t` holds 4 i32.
            unsafe { _mm_storeu_si128(t.as_mut_ptr().cast(), s) };
            out[p].copy_from_slice(&t[..O]);
        } else {
            for o in 0..O {
                out[p][o] = hsum_epi32(acc[p][o]);
            }
        }
    }
    out
}

#[inline]
#[target_feature(enable = "avx2")]
fn hsum_epi32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
    _mm_cvtsi128_si32(s)
}

/// Up to 16 bytes as one vector, zero-padded.
#[inline]
#[target_feature(enable = "avx2")]
fn load_padded(r: &[i8]) -> __m128i {
    let mut b = [0i8; 16];
    b[..r.len()].copy_from_slice(r);
    // SAFETY: `b` holds 16 bytes.
    unsafe { _mm_loadu_si128(b.as_ptr().cast()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectorised [`pack_pairs`] writes exactly the layout its doc states, on random
    /// weights and shapes with partial channel blocks, odd inputs and inputs below, at and
    /// past the 16-input transpose width. Seed: `LORKD_SEED`.
    #[test]
    fn pack_pairs_is_the_stated_layout() {
        if !super::super::detected() {
            println!("SKIPPED pack_pairs_is_the_stated_layout: no AVX2 on this CPU");
            return;
        }
        let mut rng = crate::engine::testnet::Rng::new(crate::test_seed());
        for case in 0..400 {
            let n = 1 + rng.next_u64() as usize % 70;
            let cout = 1 + rng.next_u64() as usize % 40;
            let w: std::vec::Vec<i8> = (0..n * cout).map(|_| rng.next_u64() as i8).collect();
            let (pairs, blocks) = (n.div_ceil(2), cout.div_ceil(8));
            let mut store = std::vec![MaybeUninit::<i8>::uninit(); blocks * 16 * pairs];
            let got = pack_pairs(&w, n, cout, &mut store);
            for b in 0..blocks {
                for k in 0..pairs {
                    for l in 0..8 {
                        for j in 0..2 {
                            let (o, i) = (8 * b + l, 2 * k + j);
                            let want = if o < cout && i < n { w[o * n + i] } else { 0 };
                            assert_eq!(
                                got[((b * pairs + k) * 8 + l) * 2 + j],
                                want,
                                "case {case}: n {n} cout {cout} block {b} pair {k} lane {l}"
                            );
                        }
                    }
                }
            }
        }
    }
}

/// A benchmark run by hand (`cargo test --release -p lorkd-runtime --lib -- --ignored
/// tile_peak --nocapture`): this table's two pointwise register tiles alone, data in L1 —
/// the int8 one ([`tile_sums`]: 4 pixels × 16 channels, `vpmaddwd` on i16 pairs) and the
/// f32 one ([`tile_outer_f32`], 4 × 16, FMA: the shape of ONNX Runtime's f32 GEMM kernels)
/// — in G multiply-adds a second at the input depths of the 1.0x @224 network's pointwise
/// convs (median of 7 runs each). Without VNNI the int8 product is 16 multiply-adds an
/// instruction plus an add, an FMA 8 with none: what bounds lorkd int8 against ORT f32 on
/// an AVX2-only CPU (BENCHMARKS.md, session 45).
#[cfg(test)]
mod tile_peak {
    use super::*;

    fn median_rate(macs: f64, mut run: impl FnMut()) -> f64 {
        let reps = (4e8 / macs) as usize + 1;
        let mut r: std::vec::Vec<f64> = (0..7)
            .map(|_| {
                let t0 = std::time::Instant::now();
                for _ in 0..reps {
                    run();
                }
                reps as f64 * macs / t0.elapsed().as_secs_f64() / 1e9
            })
            .collect();
        r.sort_by(f64::total_cmp);
        r[3]
    }

    /// The materialised int8 pointwise conv (`conv1x1_i8_packed`, requantisation
    /// included) on ShuffleNetV2 1.0x @224's shapes, in G MAC/s: where a conv's rate falls
    /// short of [`tile_peak`]'s, the time goes outside the register tile.
    /// `cargo test --release -p lorkd-runtime --lib -- --ignored conv_peak --nocapture`
    #[test]
    #[ignore = "a benchmark: run by hand"]
    fn conv_peak() {
        if !super::super::detected() {
            println!("SKIPPED conv_peak: no AVX2 on this CPU");
            return;
        }
        println!("| conv | G MAC/s |");
        println!("|---|---:|");
        for (cin, cout, side, in_stride) in [
            (24, 58, 56, 24),
            (58, 58, 28, 116),
            (116, 116, 28, 116),
            (116, 116, 14, 232),
            (232, 232, 7, 464),
            (464, 1024, 7, 464),
        ] {
            let g = Geom {
                h: side,
                w: side,
                in_stride,
                c_off: in_stride - cin,
                cin,
                ho: side,
                wo: side,
                cout,
                k: 1,
                stride: 1,
                pad: 0,
            };
            // 16 copies of the inputs, weights and outputs in turn (≥ 2 MB): from L3, as
            // in a network, not from L1.
            let xs: std::vec::Vec<std::vec::Vec<i8>> = (0..16)
                .map(|k| (0..g.in_len()).map(|i| ((i + k) * 7 % 251) as i8).collect())
                .collect();
            let mut ws: std::vec::Vec<std::vec::Vec<i8>> = (0..16)
                .map(|k| {
                    (0..cout * cin)
                        .map(|i| ((i + k) * 13 % 253) as i8)
                        .collect()
                })
                .collect();
            for w in &mut ws {
                pack_conv1x1_i8(cout, cin, w);
            }
            let mut ys = std::vec![std::vec![0i8; g.out_len()]; 16];
            let mut k = 0;
            let rq: std::vec::Vec<[i32; 3]> = (0..cout as i32)
                .map(|o| [o * 100 - 3000, (1 << 30) + o * 12345, -9 - o % 3])
                .collect();
            let q = OutQ {
                zero_point: -3,
                lo: -128,
            };
            let macs = (side * side * cin * cout) as f64;
            let rate = median_rate(macs, || {
                k = (k + 1) % 16;
                conv1x1_i8_packed(&g, &xs[k], 5, &ws[k], &rq, q, &mut ys[k]);
                std::hint::black_box(&ys[k]);
            });
            println!("| {cin}→{cout} @{side}×{side} | {rate:.1} |");
        }
    }

    #[test]
    #[ignore]
    fn tile_peak() {
        if !super::super::detected() {
            println!("SKIPPED tile_peak: no AVX2 on this CPU");
            return;
        }
        println!("| input depth | int8 tile G MAC/s | + requant | f32 tile G MAC/s | int8 / f32 |");
        println!("|---:|---:|---:|---:|---:|");
        // Calibration-like parameters (plain: `requant8_plain`).
        let rq: std::vec::Vec<[i32; 3]> = (0..16)
            .map(|o| [o * 1000 - 8000, (1 << 30) + o * 12345, -7 - o % 3])
            .collect();
        let q = OutQ {
            zero_point: -3,
            lo: -128,
        };
        let mut cols = RqCols::new();
        let _ = Requant::new(&rq, q, &mut cols);
        for n in [24usize, 58, 116, 232, 464] {
            let pairs = n.div_ceil(2);
            let wp: std::vec::Vec<i8> = (0..32 * pairs).map(|i| (i * 7 % 255) as i8).collect();
            let mut xw = [[MaybeUninit::new(0i16); MAXC + 2]; PO];
            for (p, row) in xw.iter_mut().enumerate() {
                for (i, v) in row.iter_mut().enumerate().take(2 * pairs) {
                    *v = MaybeUninit::new(((i * 5 + p) % 255) as i16 - 127);
                }
            }
            let (w0, w1) = wp.split_at(16 * pairs);
            let int8 = median_rate((128 * pairs) as f64, || {
                // SAFETY: AVX2 detected; each block holds `16·pairs` bytes, every row
                // `2·pairs ≤ MAXC + 2` values.
                std::hint::black_box(unsafe {
                    tile_sums::<2>([w0, w1], &xw, pairs, [_mm256_setzero_si256(); 2])
                });
            });
            let mut ys = [0i8; 16 * PO];
            let full = median_rate((128 * pairs) as f64, || {
                let out = Out {
                    y: &mut ys,
                    at: 0,
                    stride: 16,
                    np: PO,
                    nb: 16,
                };
                // SAFETY: as above; `cols` holds 16 channels, `ys` 4 rows of 16.
                unsafe { tile_outer::<2>([w0, w1], &xw, pairs, &cols, 0, q, out) };
                std::hint::black_box(&ys);
            });
            let panel: std::vec::Vec<f32> = (0..n * FO).map(|i| (i % 13) as f32 * 1e-3).collect();
            let xs: std::vec::Vec<std::vec::Vec<f32>> = (0..4)
                .map(|p| (0..n).map(|i| ((i + p) % 17) as f32 * 1e-2).collect())
                .collect();
            let bias = [0.5f32; FO];
            let mut out = std::vec![0.0f32; 4 * FO];
            let f32_rate = median_rate((64 * n) as f64, || {
                // SAFETY: AVX2 + FMA detected; the panel holds `n·FO`, every row `n`, `out`
                // 4 pixels of `FO` channels.
                unsafe {
                    tile_outer_f32::<4, 2>(
                        &panel,
                        [&xs[0][..], &xs[1][..], &xs[2][..], &xs[3][..]],
                        &bias,
                        false,
                        &mut out,
                        FO,
                        0,
                        FO,
                    )
                };
            });
            std::hint::black_box(&out);
            println!(
                "| {n} | {int8:.1} | {full:.1} | {f32_rate:.1} | {:.2} |",
                full / f32_rate
            );
        }
    }
}
