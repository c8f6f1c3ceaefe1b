//! Threads for std builds (feature `threads`): an op's output split across a pool.
//!
//! Every output element is computed by the same kernel slot from the same inputs whatever
//! the thread count, so results are bit-identical for any N; the split only decides which
//! thread runs which part. Each part meets the kernels' tiles as the whole would:
//! - a pointwise conv (`k = 1`, stride 1, no padding) splits its output **pixels** into
//!   runs of a multiple of the table's `pix_align_f32` pixels (int8: `PIX_ALIGN_EXACT`,
//!   integer sums are exact however tiled), each a `1 × n` image of its own written in
//!   place; where that cuts unevenly (a 7×7 map in 48-pixel runs) it splits its output
//!   **channels** at multiples of `CH_ALIGN` instead, each part's outputs scattered into
//!   `y` from a buffer ([`Pool::scratch`]);
//! - a k×k conv (the stem, depthwise) splits its output **rows**: a part computes its
//!   pixels alone through the table's pixels twin ([`ConvPixelsI8`]), or else is the same
//!   kernel on the input rows it reads, starting a row or two early so that the kernel's
//!   top padding falls on rows it then drops (`row_part`); the rest is written in place;
//! - input quantisation, concat + shuffle and max pool split their output pixel rows
//!   ([`Par::rows`]; the int8 max pool through the table's pixels twin, else with the same
//!   early-row start as a k×k conv);
//! - the switch's rebuild runs one chunk per expert layer ([`rebuild`]);
//! - the concat + shuffle after a conv (ShuffleNetV2's every block ends so) runs in the
//!   conv's pixel parts, on the pixels each part just wrote ([`Then`]): one fork-join for
//!   both ops;
//! - an int8 depthwise conv runs in the parts of the pointwise conv that reads it
//!   ([`Par::dw_conv_i8`]): each part computes its pixels of the depthwise output (any
//!   run of pixels through the pixels twin, so a 7×7 map cuts 25 + 24, not in rows of 4 +
//!   3), then the pointwise conv (and its concat) on those pixels — one fork-join for the
//!   three ops;
//! - an int8 pointwise conv that reads the concat's output runs after it in the same parts
//!   ([`Then::post`]: the next ShuffleNetV2 block's first conv), so a block from its depthwise
//!   conv to the next block's first conv is one job. Its requantisation table lies at the
//!   requant region's end, where such a conv keeps it when it runs on its own too, so the
//!   arena after an inference does not depend on the thread count.
//!
//! Where a cut falls is the pool's ([`Pool::runs`]): even, or in shares it learns from the
//! parts' measured times ([`super::pool`], `Engine::set_balanced_cuts`); it never changes
//! a result.
//!
//! The arena holds no per-thread state, so `arena_bytes` does not depend on N; the few
//! buffers a part needs come from the heap. The workers spin while an inference or a switch
//! runs ([`super::pool`], [`Pool::busy`]), and every op is cut into one chunk a thread, each
//! thread's the same part of the image op after op (its own region of the job, see
//! [`super::pool`]): it reads back what it wrote, from its own cache.
//!
//! Without the feature [`Par`] is a zero-sized pass-through: the no_std engine stays
//! single-threaded and allocation-free.
use crate::kernels::{ConvF32, ConvI8, ConvPixelsI8, Geom, OutQ};

/// Pixel split points of a streamed expert's path and, per table, of an f32 pointwise
/// conv ([`crate::kernels::PIX_ALIGN`]).
#[cfg(feature = "threads")]
use crate::kernels::PIX_ALIGN;
/// Pixel split points of an exact (int8) conv, whose sums are the same bits however its
/// pixels are tiled: a multiple of the widest int8 pixel tile that keeps small maps (7×7)
/// in even parts.
#[cfg(feature = "threads")]
pub(crate) const PIX_ALIGN_EXACT: usize = 4;
/// A split op has at most this many chunks per thread. One: a thread that finished its
/// region steals a whole chunk only from a thread that has not started it (a late or
/// descheduled core), and two a thread cost a second kernel setup, more edges (rows read
/// twice, tiles cut) and, when the thief took the other's second chunk a moment before its
/// owner came for it, a chunk's worth of imbalance (the 14×14 pointwise convs of 1.0x @224
/// at 2 threads: ~1.4× with two, 1.6–1.7× with one, session 43).
#[cfg(feature = "threads")]
pub(crate) const CHUNKS_PER_THREAD: usize = 1;
/// Channel split points are multiples of this (every kernel's channel lanes divide it).
#[cfg(feature = "threads")]
pub(crate) const CH_ALIGN: usize = 16;
/// By default a part gets at least this many multiply-adds (~3 µs of int8 VNNI GEMM; a
/// fork-join with spinning workers costs ~1 µs, and each part pays its kernels' set-up
/// again). Half as many split 0.5x @64's small maps too: 2 threads 1.03× against 1.09×
/// with these (session 56, same runs); 1.0x @224 alike either way.
#[cfg(feature = "threads")]
pub(crate) const MIN_MACS: usize = 128 * 1024;

/// A job's parts (one a thread) without the heap up to this many threads, the carts' cores
/// (a fork-join allocated ~5 small vectors, ~0.2 µs of its ~0.8 µs; more inline room only
/// lengthens every move of a part list, which holds its slices and slots by value).
#[cfg(feature = "threads")]
pub(crate) const INLINE_PARTS: usize = 4;
/// A job's parts, inline up to [`INLINE_PARTS`].
#[cfg(feature = "threads")]
pub(crate) type Parts<T> = smallvec::SmallVec<[T; INLINE_PARTS]>;

/// A depthwise multiply-add costs about this many of a GEMM's (int8 AVX2, 1.0x @224: the
/// depthwise convs run 3.4–5.5 G a second, the pointwise ones ~19 G): its work for the split.
#[cfg(feature = "threads")]
const DW_COST: usize = 4;

/// The engine's thread pool ([`super::pool`]) and its split threshold.
#[cfg(feature = "threads")]
pub(crate) struct Pool {
    pool: super::pool::Pool,
    /// The smallest part worth a thread, in multiply-adds.
    pub(crate) min_macs: usize,
    /// Heap buffers the parts borrow ([`Pool::scratch`]), kept between ops and inferences.
    spare: std::sync::Mutex<Vec<Vec<u64>>>,
}

#[cfg(feature = "threads")]
impl Pool {
    /// A pool for `threads ≥ 2` threads in all.
    pub(crate) fn new(threads: usize) -> std::io::Result<Self> {
        Ok(Pool {
            pool: super::pool::Pool::new(threads)?,
            min_macs: MIN_MACS,
            spare: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// `f` on a buffer of `len` `T`s with arbitrary contents: a heap buffer kept from one use
    /// to the next, so a part that computes into a buffer (a row cut's early rows, a
    /// channel cut, a max pool's) neither allocates nor zeroes it once warm (a zeroed `Vec`
    /// per part, ~600 KB for the f32 stem's, cost as much as a tenth of the part).
    pub(crate) fn scratch<T: bytemuck::Pod, R>(
        &self,
        len: usize,
        f: impl FnOnce(&mut [T]) -> R,
    ) -> R {
        let words = (len * core::mem::size_of::<T>()).div_ceil(8);
        let take = || self.spare.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut v = take().unwrap_or_default();
        if v.len() < words {
            v.resize(words, 0);
        }
        let r = f(&mut bytemuck::cast_slice_mut(&mut v[..words])[..len]);
        self.spare.lock().unwrap_or_else(|e| e.into_inner()).push(v);
        r
    }

    pub(crate) fn threads(&self) -> usize {
        self.pool.threads()
    }

    /// Cuts in learned shares or evenly (the default; [`super::pool::Pool::cut`]).
    pub(crate) fn set_balanced(&self, on: bool) {
        self.pool.set_balanced(on)
    }

    /// Workers spin for chunks while the guard lives (an inference, a switch), and park
    /// when it drops.
    pub(crate) fn busy(&self) -> Busy<'_> {
        self.pool.wake();
        self.pool.begin();
        Busy(self)
    }

    /// The next job's cut of `n` items into `parts` runs, each a multiple of `align` but
    /// the last: `(start, len)` of each — even, or balanced in the shares the pool learned
    /// for the job ([`super::pool::Pool::cut`]).
    fn runs(&self, n: usize, parts: usize, align: usize) -> Parts<(usize, usize)> {
        let align = align.max(1);
        let units = n.div_ceil(align);
        let parts = parts.clamp(1, units.max(1));
        self.pool
            .cut(units, parts)
            .into_iter()
            .map(|r| {
                let s = (r.start * align).min(n);
                (s, (r.end * align).min(n) - s)
            })
            .collect()
    }

    /// `f(part)` for every `part` of `parts` (chunks that the threads take in turn).
    fn run<P: Send>(&self, parts: impl IntoIterator<Item = P>, f: impl Fn(P) + Sync) {
        // A line per part: the threads take theirs at once.
        #[repr(align(64))]
        struct Slot<P>(std::sync::Mutex<Option<P>>);
        let slots: Parts<Slot<P>> = parts
            .into_iter()
            .map(|p| Slot(std::sync::Mutex::new(Some(p))))
            .collect();
        self.pool.run(slots.len(), &|i| {
            let p = slots[i].0.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(p) = p {
                f(p);
            }
        });
    }

    /// Chunks for `work` multiply-adds: at least `min_macs` each, at most
    /// [`CHUNKS_PER_THREAD`] per thread.
    fn chunks(&self, work: usize) -> usize {
        (work / self.min_macs.max(1)).min(CHUNKS_PER_THREAD * self.threads())
    }
}

/// [`Pool::busy`]'s guard.
#[cfg(feature = "threads")]
pub(crate) struct Busy<'p>(&'p Pool);

#[cfg(feature = "threads")]
impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.pool.rest();
    }
}

/// How an op's kernels run: on the calling thread, or split across the pool.
#[derive(Clone, Copy)]
pub(crate) struct Par<'p> {
    #[cfg(feature = "threads")]
    pool: Option<&'p Pool>,
    _p: core::marker::PhantomData<&'p ()>,
}

/// A [`Stage`]'s op: `f(p0, x, out)`, `x` its input from pixel `p0` (whole pixels: the op
/// before it's output) and `out` its output's run of the same pixels.
pub(crate) type ThenFn<'a, T> = dyn Fn(usize, &[T], &mut [T]) + Sync + 'a;

/// An op on the pixels of the op before it: its output, `unit` elements a pixel (as many
/// pixels as the one before), its work (as [`Par::rows`] takes it, for its split when run
/// alone) and its [`ThenFn`].
pub(crate) struct Stage<'a, T> {
    pub out: &'a mut [T],
    pub unit: usize,
    pub work: usize,
    pub f: &'a ThenFn<'a, T>,
}

impl<'a, T: Send + Sync> Stage<'a, T> {
    /// Runs alone, split by pixel rows as it would be alone, after the op before it wrote
    /// all of `x` (`xunit` elements a pixel); returns its output.
    fn after(self, par: Par<'_>, x: &[T], xunit: usize) -> &'a [T] {
        let (f, out) = (self.f, self.out);
        par.rows(&mut *out, self.unit, self.work, |p0, o| {
            f(p0, &x[p0 * xunit..], o)
        });
        out
    }
}

/// The ops fused after a conv: the concat + shuffle that reads the conv's output
/// (`ops::concat_shuffle`), and the pointwise conv that reads the concat's (`post`, as
/// ShuffleNetV2's next block starts: a block's ops from its depthwise conv on run as one
/// job). Where the conv splits by pixels they run in each part right after the conv wrote
/// the part's pixels (the threads meet once for all the ops, and the part's outputs are
/// still in cache); otherwise after the whole conv, each split by rows as it would be alone.
pub(crate) struct Then<'a, T> {
    pub cat: Stage<'a, T>,
    pub post: Option<Stage<'a, T>>,
}

impl<T: Send + Sync> Then<'_, T> {
    /// Runs alone, after the conv wrote all of `y` (`cout` elements a pixel).
    fn after(self, par: Par<'_>, y: &[T], cout: usize) {
        let unit = self.cat.unit;
        let out = self.cat.after(par, y, cout);
        if let Some(p) = self.post {
            p.after(par, out, unit);
        }
    }
}

/// A [`Then`]'s ops in each part ([`then_parts`]).
#[cfg(feature = "threads")]
struct ThenFns<'a, T> {
    f: &'a ThenFn<'a, T>,
    post: Option<&'a ThenFn<'a, T>>,
}

// (Not derived: that would ask `T: Copy`.)
#[cfg(feature = "threads")]
impl<T> Clone for ThenFns<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

#[cfg(feature = "threads")]
impl<T> Copy for ThenFns<'_, T> {}

#[cfg(feature = "threads")]
impl<T> ThenFns<'_, T> {
    /// The ops on the part from pixel `p0` whose conv output is `y`.
    fn run(&self, p0: usize, y: &[T], (out, post): (&mut [T], Option<&mut [T]>)) {
        (self.f)(p0, y, out);
        if let (Some(f), Some(py)) = (self.post, post) {
            f(p0, out, py)
        }
    }
}

/// An int8 depthwise conv run in the parts of the pointwise conv that reads its output
/// ([`Par::dw_conv_i8`]): the operands of the `dwconv3x3_i8` slot.
pub(crate) struct Pre<'a> {
    pub g: Geom,
    pub x: &'a [i8],
    pub zx: i32,
    pub w: &'a [i8],
    pub rq: &'a [[i32; 3]],
    pub q: OutQ,
    /// Its output: the pointwise conv's input.
    pub y: &'a mut [i8],
}

/// `n` items in at most `parts` runs, each a multiple of `align` except the last:
/// `(start, len)` of each.
#[cfg(feature = "threads")]
pub(crate) fn split(n: usize, parts: usize, align: usize) -> impl Iterator<Item = (usize, usize)> {
    let units = n.div_ceil(align);
    let parts = parts.clamp(1, units.max(1));
    // The pool's even cut of `units` (larger runs first); only the last run can be short.
    (0..parts).map(move |i| {
        let r = super::pool::region(units, parts, i);
        let s = (r.start * align).min(n);
        (s, (r.end * align).min(n) - s)
    })
}

/// `y` cut at `runs` ([`Pool::runs`], of `unit` elements an item): `(start, len, run of y)`
/// of each (disjoint, so each part can write its own).
#[cfg(feature = "threads")]
fn split_mut<'y, T>(
    y: &'y mut [T],
    unit: usize,
    runs: &[(usize, usize)],
) -> Parts<(usize, usize, &'y mut [T])> {
    let n: usize = runs.iter().map(|r| r.1).sum();
    let mut rest = &mut y[..n * unit];
    runs.iter()
        .map(|&(s, len)| {
            let (run, tail) = core::mem::take(&mut rest).split_at_mut(len * unit);
            rest = tail;
            (s, len, run)
        })
        .collect()
}

/// The input of output pixels `p0 .. p0 + n` of a pointwise stride-1 conv.
#[cfg(feature = "threads")]
fn pixels_of<'x, T>(g: &Geom, x: &'x [T], p0: usize, n: usize) -> &'x [T] {
    &x[p0 * g.in_stride..(p0 + n) * g.in_stride]
}

/// Geometry of output pixels `p0 .. p0 + n` of a pointwise stride-1 conv, as a `1 × n`
/// image whose input starts at pixel `p0`.
pub(in crate::engine) fn pixel_part(g: &Geom, n: usize) -> Geom {
    Geom {
        h: 1,
        w: n,
        ho: 1,
        wo: n,
        ..*g
    }
}

/// Copies a part's dense `[P, n]` output into channels `c0 .. c0 + n` of `y` (`[P, cout]`).
#[cfg(feature = "threads")]
fn scatter<T: Copy>(part: &[T], c0: usize, n: usize, cout: usize, y: &mut [T]) {
    for (src, dst) in part.chunks_exact(n).zip(y.chunks_exact_mut(cout)) {
        dst[c0..c0 + n].copy_from_slice(src);
    }
}

impl<'p> Par<'p> {
    /// Everything on the calling thread.
    #[cfg(not(feature = "threads"))]
    pub(crate) fn serial() -> Self {
        Par {
            #[cfg(feature = "threads")]
            pool: None,
            _p: core::marker::PhantomData,
        }
    }

    /// Split across `pool` when there is one.
    #[cfg(feature = "threads")]
    pub(crate) fn pool(pool: Option<&'p Pool>) -> Self {
        Par {
            pool,
            _p: core::marker::PhantomData,
        }
    }

    /// `f` on a buffer of `len` `T`s with arbitrary contents ([`Pool::scratch`]'s, or a
    /// new one without a pool).
    #[cfg(feature = "threads")]
    pub(crate) fn scratch<T: bytemuck::Pod, R>(
        self,
        len: usize,
        f: impl FnOnce(&mut [T]) -> R,
    ) -> R {
        match self.pool {
            Some(p) => p.scratch(len, f),
            None => f(&mut vec![T::zeroed(); len]),
        }
    }

    /// Whether ops may split across threads (a pool of 2 or more).
    pub(crate) fn threaded(&self) -> bool {
        #[cfg(feature = "threads")]
        return self.pool.is_some();
        #[cfg(not(feature = "threads"))]
        false
    }

    /// Parts for `g` (`depthwise`: a `DwConv`; `align`: a pointwise conv's pixel split
    /// points are multiples of it — [`PIX_ALIGN_EXACT`] for integer sums, the same bits
    /// however its pixels are tiled, the table's `pix_align_f32` for f32): `None` to run
    /// whole. A pointwise conv splits its pixels or, where they cut unevenly (a 7×7 map in
    /// 48-pixel runs), its output channels; a k×k conv its output rows.
    #[cfg(feature = "threads")]
    fn plan(&self, g: &Geom, depthwise: bool, align: usize) -> Option<(&'p Pool, Cut, usize)> {
        let pool = self.pool?;
        let npix = g.ho * g.wo;
        let macs = npix * g.cout * g.k * g.k * if depthwise { DW_COST } else { g.cin };
        let parts = pool.chunks(macs);
        if parts < 2 {
            return None;
        }
        // The largest part's share of `n` cut in `parts` runs of `align` (lower is better).
        let share = |n: usize, align: usize| {
            let big = split(n, parts, align)
                .map(|(_, len)| len)
                .max()
                .unwrap_or(n);
            (
                big as f32 / n.max(1) as f32,
                Some(n.div_ceil(align)).filter(|&u| u >= 2),
            )
        };
        let pointwise = !depthwise && g.k == 1 && g.stride == 1 && g.pad == 0;
        let align = align.max(1);
        let (by_pix, by_ch) = (share(npix, align), share(g.cout, CH_ALIGN));
        // Channel parts cost a scatter of their outputs: only for a clearly better balance.
        let (cut, units) = if pointwise && (by_pix.0 <= by_ch.0 + 0.05 || by_ch.1.is_none()) {
            (Cut::Pixels(align), by_pix.1)
        } else if pointwise {
            (Cut::Channels, by_ch.1)
        } else {
            (Cut::Rows, Some(g.ho).filter(|&u| u >= 2))
        };
        let parts = parts.min(units?);
        Some((pool, cut, parts))
    }

    /// `f(first_row, rows)` over `y` cut into runs of whole `row`-element rows (pixels of
    /// an elementwise op, whose outputs do not depend on the cut), split across the pool
    /// when `work` (in multiply-add equivalents) warrants it.
    pub(crate) fn rows<T: Send>(
        self,
        y: &mut [T],
        row: usize,
        work: usize,
        f: impl Fn(usize, &mut [T]) + Sync,
    ) {
        #[cfg(feature = "threads")]
        if let Some(pool) = self.pool {
            let n = y.len() / row.max(1);
            let parts = pool.chunks(work).min(n);
            if parts >= 2 {
                let jobs = split_mut(y, row, &pool.runs(n, parts, 1));
                return pool.run(jobs, |(r0, _, part)| f(r0, part));
            }
        }
        let _ = (row, work);
        f(0, y)
    }

    /// `f(sub, x, u, y)` over the pixels of pointwise stride-1 geometry `g` (a streamed
    /// expert's low-rank path and `W0` GEMM, pixel by pixel, `u` holding `ur` values a
    /// pixel): whole, or cut like a pointwise conv's pixels (runs of `PIX_ALIGN`, so each
    /// part's tiles are the whole's), each part on its runs of `x`, `u` and `y`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn pixels<T: Sync, U: Send + Sync>(
        self,
        g: &Geom,
        x: &[T],
        (u, ur): (&mut [f32], usize),
        y: &mut [U],
        work: usize,
        then: Option<Then<'_, U>>,
        f: impl Fn(&Geom, &[T], &mut [f32], &mut [U]) + Sync,
    ) {
        #[cfg(feature = "threads")]
        if let Some(pool) = self.pool {
            let npix = g.ho * g.wo;
            let parts = pool.chunks(work).min(npix.div_ceil(PIX_ALIGN));
            if parts >= 2 && g.k == 1 && g.stride == 1 && g.pad == 0 {
                let runs = pool.runs(npix, parts, PIX_ALIGN);
                let ys = split_mut(y, g.cout, &runs);
                let us = split_mut(u, ur, &runs);
                let (outs, t) = then_parts(then, &runs);
                let jobs: Parts<_> = ys
                    .into_iter()
                    .zip(us)
                    .zip(outs)
                    .map(|(((p0, n, yp), (_, _, up)), out)| {
                        (p0, pixel_part(g, n), pixels_of(g, x, p0, n), up, yp, out)
                    })
                    .collect();
                return pool.run(jobs, |(p0, sub, xs, up, yp, out)| {
                    f(&sub, xs, up, yp);
                    if let (Some(t), Some(out)) = (t, out) {
                        t.run(p0, yp, out)
                    }
                });
            }
        }
        let _ = (ur, work);
        f(g, x, u, y);
        if let Some(t) = then {
            t.after(self, y, g.cout)
        }
    }

    /// Runs the f32 conv slot `f` (contract of [`ConvF32`]) over `g`, split if worth it
    /// (a pointwise conv's pixels at multiples of `pix_align`: its table's `pix_align_f32`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn conv_f32(
        self,
        f: ConvF32,
        pix_align: usize,
        depthwise: bool,
        g: &Geom,
        x: &[f32],
        w: &[f32],
        bias: &[f32],
        relu: bool,
        y: &mut [f32],
        then: Option<Then<'_, f32>>,
    ) {
        #[cfg(feature = "threads")]
        if let Some(plan) = self.plan(g, depthwise, pix_align) {
            return split_conv(self, plan, g, x, w, y, then, None, |g, x, w, c0, y| {
                f(g, x, w, &bias[c0..c0 + g.cout], relu, y)
            });
        }
        let _ = (depthwise, pix_align);
        f(g, x, w, bias, relu, y);
        if let Some(t) = then {
            t.after(self, y, g.cout)
        }
    }

    /// Runs the int8 conv slot `f` (contract of [`ConvI8`]) over `g`, split if worth it;
    /// `pixels`: for a k×k conv, the table's [`ConvPixelsI8`] twin of `f` (a row cut's
    /// parts then compute their rows alone, in place).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn conv_i8(
        self,
        f: ConvI8,
        (depthwise, pixels): (bool, Option<ConvPixelsI8>),
        g: &Geom,
        x: &[i8],
        zx: i32,
        w: &[i8],
        rq: &[[i32; 3]],
        q: OutQ,
        y: &mut [i8],
        then: Option<Then<'_, i8>>,
    ) {
        #[cfg(feature = "threads")]
        if let Some(plan) = self.plan(g, depthwise, PIX_ALIGN_EXACT) {
            let px = pixels.map(|f| pixels_i8(f, zx, w, rq, q));
            let px = px.as_ref().map(|f| f as &PixelsFn<'_, i8>);
            return split_conv(self, plan, g, x, w, y, then, px, |g, x, w, c0, y| {
                f(g, x, zx, w, &rq[c0..c0 + g.cout], q, y)
            });
        }
        let _ = (depthwise, pixels);
        f(g, x, zx, w, rq, q, y);
        if let Some(t) = then {
            t.after(self, y, g.cout)
        }
    }

    /// `pre` (with `dw`: the table's `dwconv3x3_i8` slot and its pixels twin), then the
    /// pointwise int8 conv slot `f` over `g` on `pre`'s output, then `then`: split, one job
    /// for the three ops, each part `pre`'s output pixels (any run with the pixels twin,
    /// else whole rows, cut as alone) and then the pointwise conv on those pixels (integer
    /// sums: the same bytes however its pixels are cut) — each part's pointwise input is
    /// what it just wrote, in its own cache, and the threads meet once; returns `true`. Otherwise (one thread, too little work to split)
    /// one op after the other, `done()` between them; returns `false`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn dw_conv_i8(
        self,
        pre: Pre<'_>,
        dw: (ConvI8, Option<ConvPixelsI8>),
        done: &mut dyn FnMut(),
        f: ConvI8,
        g: &Geom,
        zx: i32,
        w: &[i8],
        rq: &[[i32; 3]],
        q: OutQ,
        y: &mut [i8],
        then: Option<Then<'_, i8>>,
    ) -> bool {
        let (dwf, pixels) = dw;
        let d = pre.g;
        #[cfg(feature = "threads")]
        if let Some(pool) = self.pool {
            let work = d.ho * d.wo * d.cout * 9 * DW_COST + g.ho * g.wo * g.cout * g.cin;
            // Pixels through the pixels twin (integer sums, so any cut), else whole rows.
            let (units, unit) = match pixels {
                Some(_) => (d.ho * d.wo, 1),
                None => (d.ho, d.wo),
            };
            let parts = pool.chunks(work).min(units);
            let reads = g.k == 1 && g.stride == 1 && g.pad == 0 && g.c_off == 0;
            let reads = reads && g.in_stride == d.cout && (g.ho, g.wo) == (d.ho, d.wo);
            if parts >= 2 && reads {
                let px: Parts<_> = (pool.runs(units, parts, 1).into_iter())
                    .map(|(r, n)| (r * unit, n * unit))
                    .collect();
                let (outs, t) = then_parts(then, &px);
                let jobs: Parts<_> = split_mut(pre.y, d.cout, &px)
                    .into_iter()
                    .zip(split_mut(y, g.cout, &px))
                    .zip(outs)
                    .collect();
                let pf = pixels.map(|f| pixels_i8(f, pre.zx, pre.w, pre.rq, pre.q));
                let (xd, zd, wd, rqd, qd) = (pre.x, pre.zx, pre.w, pre.rq, pre.q);
                pool.run(jobs, |(((p0, n, xs), (_, _, ys)), out)| {
                    match &pf {
                        Some(pf) => pf(&d, p0..p0 + n, xd, xs),
                        None => rows_into(pool, &d, (p0 / d.wo, n / d.wo), xd, xs, None, {
                            |s, x, o| dwf(s, x, zd, wd, rqd, qd, o)
                        }),
                    }
                    f(&pixel_part(g, n), xs, zx, w, rq, q, ys);
                    if let (Some(t), Some(out)) = (t, out) {
                        t.run(p0, ys, out)
                    }
                });
                return true;
            }
        }
        self.conv_i8(
            dwf,
            (true, pixels),
            &d,
            pre.x,
            pre.zx,
            pre.w,
            pre.rq,
            pre.q,
            pre.y,
            None,
        );
        done();
        self.conv_i8(f, (false, None), g, pre.y, zx, w, rq, q, y, then);
        false
    }
}

/// A [`ConvPixelsI8`] slot on its conv's operands: a [`PixelsFn`].
#[cfg(feature = "threads")]
fn pixels_i8<'a>(
    f: ConvPixelsI8,
    zx: i32,
    w: &'a [i8],
    rq: &'a [[i32; 3]],
    q: OutQ,
) -> impl Fn(&Geom, core::ops::Range<usize>, &[i8], &mut [i8]) + Sync + 'a {
    move |g, p, x, y| f(g, p, x, zx, w, rq, q, y)
}

/// The switch's rebuild across the pool: one chunk per layer, the largest first (layers vary
/// ~100× in size: the threads take them in turn, so each takes on until the big ones are
/// spread), each with a heap scratch of `scratch_len` bytes (the arena's scratch region is
/// one) reused from chunk to chunk. `cost` orders the layers; the first error any layer meets
/// is returned.
#[cfg(feature = "threads")]
pub(crate) fn rebuild<L: Send>(
    pool: &Pool,
    mut layers: Vec<L>,
    cost: impl Fn(&L) -> usize,
    scratch_len: usize,
    run: impl Fn(L, &mut [u8]) -> Result<(), super::EngineError> + Sync,
) -> Result<(), super::EngineError> {
    use std::sync::{Mutex, MutexGuard};
    fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|e| e.into_inner())
    }
    layers.sort_by_key(|l| core::cmp::Reverse(cost(l)));
    let spare: Mutex<Vec<Vec<u32>>> = Mutex::new(Vec::new());
    let first_err = Mutex::new(None);
    pool.run(layers, |l| {
        // f32-aligned, as the decoded factors are read in place.
        let mut words = lock(&spare)
            .pop()
            .unwrap_or_else(|| vec![0u32; scratch_len.div_ceil(4)]);
        let scratch = &mut bytemuck::cast_slice_mut(&mut words)[..scratch_len];
        if let Err(e) = run(l, scratch) {
            lock(&first_err).get_or_insert(e);
        }
        lock(&spare).push(words);
    });
    match first_err.into_inner().unwrap_or_else(|e| e.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// How a conv splits (see the module doc).
#[cfg(feature = "threads")]
#[derive(Clone, Copy, Debug)]
enum Cut {
    /// Runs of pixels, a multiple of this long.
    Pixels(usize),
    Rows,
    Channels,
}

/// `then`'s outputs cut at `runs` (its stages'; one `None` a part without them), and its
/// ops.
#[cfg(feature = "threads")]
#[allow(clippy::type_complexity)]
fn then_parts<'a, T>(
    then: Option<Then<'a, T>>,
    runs: &[(usize, usize)],
) -> (
    Parts<Option<(&'a mut [T], Option<&'a mut [T]>)>>,
    Option<ThenFns<'a, T>>,
) {
    let Some(Then { cat, post }) = then else {
        return (runs.iter().map(|_| None).collect(), None);
    };
    let cut = |s: Stage<'a, T>| {
        split_mut(s.out, s.unit, runs)
            .into_iter()
            .map(|(_, _, o)| o)
    };
    let (f, pf) = (cat.f, post.as_ref().map(|p| p.f));
    let posts: Parts<_> = match post {
        Some(p) => cut(p).map(Some).collect(),
        None => runs.iter().map(|_| None).collect(),
    };
    let parts = cut(cat).zip(posts).map(Some).collect();
    (parts, Some(ThenFns { f, post: pf }))
}

/// A k×k conv's output pixels alone: `(g, pixels, x, y)`, `y` holding those pixels
/// ([`ConvPixelsI8`]).
#[cfg(feature = "threads")]
type PixelsFn<'a, T> = dyn Fn(&Geom, core::ops::Range<usize>, &[T], &mut [T]) + Sync + 'a;

/// The split itself: `run(sub_geometry, x, w, first_channel, y_part)` per part (a row
/// part through `px` where given); `then` in each pixel part, or after the whole conv.
#[cfg(feature = "threads")]
#[allow(clippy::too_many_arguments)]
fn split_conv<T: bytemuck::Pod + Send + Sync>(
    par: Par<'_>,
    (pool, cut, parts): (&Pool, Cut, usize),
    g: &Geom,
    x: &[T],
    w: &[T],
    y: &mut [T],
    then: Option<Then<'_, T>>,
    px: Option<&PixelsFn<'_, T>>,
    run: impl Fn(&Geom, &[T], &[T], usize, &mut [T]) + Sync,
) {
    let npix = g.ho * g.wo;
    match cut {
        Cut::Pixels(align) => {
            let runs = pool.runs(npix, parts, align);
            let (outs, t) = then_parts(then, &runs);
            let jobs: Parts<_> = split_mut(y, g.cout, &runs).into_iter().zip(outs).collect();
            pool.run(jobs, |((p0, n, part), out)| {
                run(&pixel_part(g, n), pixels_of(g, x, p0, n), w, 0, part);
                if let (Some(t), Some(out)) = (t, out) {
                    t.run(p0, part, out)
                }
            });
            return;
        }
        Cut::Rows => {
            let jobs = split_mut(y, g.wo * g.cout, &pool.runs(g.ho, parts, 1));
            pool.run(jobs, |(r0, n, part)| {
                rows_into(pool, g, (r0, n), x, part, px, |sub, x, out| {
                    run(sub, x, w, 0, out)
                })
            });
        }
        Cut::Channels => {
            // Pointwise only: output channel `o`'s weights are row `o` of `[cout, cin]`
            // (a packed slot's layout is closed under these cuts).
            let per = w.len() / g.cout.max(1);
            let jobs: Parts<(usize, Geom)> = pool
                .runs(g.cout, parts, CH_ALIGN)
                .into_iter()
                .map(|(c0, n)| (c0, Geom { cout: n, ..*g }))
                .collect();
            // One buffer for all parts' outputs (`npix·cout` in all), cut at the parts.
            pool.scratch(npix * g.cout, |out: &mut [T]| {
                let mut rest = &mut *out;
                let outs: Parts<_> = jobs
                    .iter()
                    .map(|&(c0, sub)| {
                        let (o, tail) = core::mem::take(&mut rest).split_at_mut(npix * sub.cout);
                        rest = tail;
                        (c0, sub, o)
                    })
                    .collect();
                pool.run(outs, |(c0, sub, o)| {
                    run(&sub, x, &w[c0 * per..][..sub.cout * per], c0, o)
                });
                // Into `y` once every part is done (the parts' columns interleave there).
                let mut at = 0;
                for &(c0, sub) in &jobs {
                    scatter(&out[at..at + npix * sub.cout], c0, sub.cout, g.cout, y);
                    at += npix * sub.cout;
                }
            });
        }
    }
    if let Some(t) = then {
        t.after(par, y, g.cout)
    }
}

/// Output rows `r0 .. r0 + n` of k×k conv `g` into `part`: through `px` where given
/// (their pixels computed alone, in place), else `run(sub, x, out)` on their [`row_part`]
/// window (its early rows, dropped, through a scratch buffer).
#[cfg(feature = "threads")]
fn rows_into<T: bytemuck::Pod + Send + Sync>(
    pool: &Pool,
    g: &Geom,
    (r0, n): (usize, usize),
    x: &[T],
    part: &mut [T],
    px: Option<&PixelsFn<'_, T>>,
    run: impl Fn(&Geom, &[T], &mut [T]),
) {
    if let Some(px) = px {
        return px(g, r0 * g.wo..(r0 + n) * g.wo, x, part);
    }
    let (sub, x0, lead) = row_part(g, r0, n);
    let xs = &x[x0..];
    if lead == 0 {
        run(&sub, xs, part)
    } else {
        pool.scratch(sub.out_len(), |out: &mut [T]| {
            run(&sub, xs, out);
            part.copy_from_slice(&out[lead * g.wo * g.cout..]);
        })
    }
}

/// Output rows `r0 .. r0 + n` of a k×k conv as a conv of its own, on the input rows from
/// `(r0 − lead)·stride` on: `(geometry, first input element, lead)`. The kernel pads the
/// top of that window, which is not the image's top unless it starts at row 0, so the part
/// starts `lead` output rows early (those read the false padding and are dropped; from row
/// `lead` on every tap is the whole conv's): `lead·stride ≥ pad`. The window ends where the
/// part's last row stops reading, or at the image's bottom, so the bottom padding is the
/// whole conv's. Every kept output is the whole conv's sum, exactly (int8). (Also the max
/// pool's row cut, whose padding never wins.)
pub(in crate::engine) fn row_part(g: &Geom, r0: usize, n: usize) -> (Geom, usize, usize) {
    let lead = g.pad.div_ceil(g.stride).min(r0);
    // (A window past the image's bottom, possible where `pad ≥ k`, reads padding only.)
    let top = ((r0 - lead) * g.stride).min(g.h);
    let ho = n + lead;
    let rows = ((ho - 1) * g.stride + g.k)
        .saturating_sub(g.pad)
        .min(g.h - top);
    let sub = Geom { h: rows, ho, ..*g };
    (sub, top * g.w * g.in_stride, lead)
}

#[cfg(all(test, feature = "threads"))]
mod tests {
    use super::*;

    #[test]
    fn split_covers_in_aligned_runs() {
        for n in [0, 1, 15, 16, 17, 47, 48, 49, 58, 116, 784, 3136, 12544] {
            for parts in 1..6 {
                for align in [1, 16, 48] {
                    let v: Vec<_> = split(n, parts, align).collect();
                    assert!(v.len() <= parts.max(1));
                    let mut next = 0;
                    for (i, &(s, len)) in v.iter().enumerate() {
                        assert_eq!(s, next);
                        if i + 1 < v.len() {
                            assert_eq!(len % align, 0, "{n} {parts} {align}");
                        }
                        next += len;
                    }
                    assert_eq!(next, n);
                }
            }
        }
    }

    /// Every cut of a conv across a pool gives the whole conv's bits — rows of k×k and
    /// depthwise convs, pixels and output channels of pointwise ones, int8 and f32, with
    /// every kernel table on this CPU — on random geometries (stride 1 and 2, padding 0–2,
    /// one-row parts, channel windows of a wider value) and random data. Also the plan's
    /// own choice through [`Par`]. Seed: `LORKD_SEED`.
    #[test]
    fn every_cut_is_the_whole_conv() {
        use crate::engine::testnet::Rng;
        use crate::kernels::{Kernels, OutQ};
        let seed = crate::test_seed();
        let mut r = Rng::new(seed);
        let mut pools: Vec<Pool> = (2..=4).map(|t| Pool::new(t).unwrap()).collect();
        for p in &mut pools {
            p.min_macs = 1;
            // Cut in the random shares preset below.
            p.set_balanced(true);
        }
        for kern in Kernels::available().into_iter().flatten() {
            for round in 0..90 {
                let dw = round % 3 == 0;
                let pointwise = round % 3 == 1;
                let (k, pad, stride) = match (dw, pointwise) {
                    (true, _) => (3, 1, 1 + r.below(2)),
                    (_, true) => (1, 0, 1),
                    _ => (1 + 2 * r.below(2), r.below(3), 1 + r.below(2)),
                };
                let (h, w) = (1 + r.below(14), 1 + r.below(11));
                let cin = 1 + r.below(20);
                let extra = r.below(2) * (1 + r.below(5));
                let (cout, in_stride, c_off) = if dw {
                    (cin, cin + extra, extra)
                } else {
                    (1 + r.below(40), cin, 0)
                };
                let out = |n| Geom::out_dim(n, k, stride, pad);
                let (ho, wo) = (out(h), out(w));
                if ho * wo == 0 {
                    continue;
                }
                let g = Geom {
                    h,
                    w,
                    in_stride,
                    c_off,
                    cin,
                    ho,
                    wo,
                    cout,
                    k,
                    stride,
                    pad,
                };
                let byte = |r: &mut Rng| r.below(256) as u8 as i8;
                let real = |r: &mut Rng| r.below(2001) as f32 / 1000.0 - 1.0;
                let wn = if dw { 9 * cin } else { cout * cin * k * k };
                let (xq, wq): (Vec<i8>, Vec<i8>) = (
                    (0..g.in_len()).map(|_| byte(&mut r)).collect(),
                    (0..wn).map(|_| byte(&mut r)).collect(),
                );
                let (xf, wf): (Vec<f32>, Vec<f32>) = (
                    (0..g.in_len()).map(|_| real(&mut r)).collect(),
                    (0..wn).map(|_| real(&mut r)).collect(),
                );
                let bias: Vec<f32> = (0..cout).map(|_| real(&mut r)).collect();
                let rq: Vec<[i32; 3]> = (0..cout)
                    .map(|_| {
                        let m = (1 << 30) + r.below(1 << 29) as i32;
                        [r.below(2000) as i32 - 1000, m, -(r.below(12) as i32)]
                    })
                    .collect();
                let zx = byte(&mut r) as i32;
                let q = OutQ {
                    zero_point: byte(&mut r) as i32,
                    lo: -128,
                };
                let relu = r.below(2) == 0;
                let (fq, ff) = match (dw, pointwise) {
                    (true, _) => (kern.dwconv3x3_i8, kern.dwconv3x3_f32),
                    (_, true) => (kern.conv1x1_i8, kern.conv1x1_f32),
                    _ => (kern.conv_i8, kern.conv_f32),
                };
                let mut whole_q = vec![0i8; g.out_len()];
                fq(&g, &xq, zx, &wq, &rq, q, &mut whole_q);
                // The k×k conv's pixels slot alone (depthwise, stem): any run of pixels (rows
                // cut anywhere) is the whole's, and nothing past its pixels is written.
                let px_slot = match (dw, pointwise) {
                    (true, _) => kern.dwconv3x3_i8_pixels,
                    (_, false) => kern.conv_i8_pixels,
                    _ => None,
                };
                if let Some(px) = px_slot {
                    let npix = ho * wo;
                    let p0 = r.below(npix + 1);
                    let p1 = p0 + r.below(npix - p0 + 1);
                    let mut part = vec![0x55i8; (p1 - p0 + 1) * cout];
                    px(&g, p0..p1, &xq, zx, &wq, &rq, q, &mut part);
                    assert_eq!(
                        first_diff(&whole_q[p0 * cout..p1 * cout], &part[..(p1 - p0) * cout]),
                        None,
                        "{} pixels {p0}..{p1} of {g:?} (seed {seed})",
                        kern.isa
                    );
                    assert!(part[(p1 - p0) * cout..].iter().all(|&b| b == 0x55));
                }
                let mut whole_f = vec![0f32; g.out_len()];
                ff(&g, &xf, &wf, &bias, relu, &mut whole_f);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                // The first output that differs, if any (not the whole vectors).
                fn first_diff<T: PartialEq>(a: &[T], b: &[T]) -> Option<usize> {
                    a.iter().zip(b).position(|(x, y)| x != y)
                }
                // A fused op after the conv (`Then`): each output pixel's `unit` codes from
                // its conv outputs and its index, so a part that ran on the wrong pixels or
                // twice (`^=`) shows.
                let unit = 1 + r.below(5);
                let f = |p0: usize, ys: &[i8], out: &mut [i8]| {
                    for (j, o) in out.chunks_exact_mut(unit).enumerate() {
                        for (t, v) in o.iter_mut().enumerate() {
                            *v ^= ys[j * cout + t % cout].wrapping_add((p0 + j) as i8);
                        }
                    }
                };
                let fused_of = |y: &[i8]| {
                    let mut out = vec![0i8; ho * wo * unit];
                    f(0, y, &mut out);
                    out
                };
                // The cuts the plan makes (a k×k f32 kernel may tile channels unlike its
                // parts: the plan never cuts those by channel).
                let cuts: &[(Cut, Cut)] = if pointwise {
                    &[
                        (
                            Cut::Pixels(PIX_ALIGN_EXACT),
                            Cut::Pixels(kern.pix_align_f32),
                        ),
                        (Cut::Channels, Cut::Channels),
                    ]
                } else {
                    &[(Cut::Rows, Cut::Rows)]
                };
                for pool in &pools {
                    let at = |cut: &dyn core::fmt::Debug| {
                        format!(
                            "{} {g:?} {cut:?} {} (seed {seed})",
                            kern.isa,
                            pool.threads()
                        )
                    };
                    for &(cq, cf) in cuts {
                        let units = |cut| match cut {
                            Cut::Pixels(a) => (ho * wo).div_ceil(a),
                            Cut::Rows => ho,
                            Cut::Channels => cout.div_ceil(CH_ALIGN),
                        };
                        // Any shares the pool may learn: a random cut of the parts.
                        let shares = |r: &mut Rng| {
                            let v: Vec<f32> = (0..pool.threads())
                                .map(|_| 1.0 + r.below(20) as f32)
                                .collect();
                            let sum: f32 = v.iter().sum();
                            pool.pool
                                .preset(&v.iter().map(|x| x / sum).collect::<Vec<_>>());
                        };
                        shares(&mut r);
                        let par = Par::pool(Some(pool));
                        let mut y = vec![0i8; g.out_len()];
                        let mut fused = vec![0i8; ho * wo * unit];
                        let parts = (CHUNKS_PER_THREAD * pool.threads()).min(units(cq));
                        let t = Then {
                            cat: Stage {
                                out: &mut fused,
                                unit,
                                work: 1 << 20,
                                f: &f,
                            },
                            post: None,
                        };
                        split_conv(
                            par,
                            (pool, cq, parts),
                            &g,
                            &xq,
                            &wq,
                            &mut y,
                            Some(t),
                            None,
                            |g, x, w, c0, y| fq(g, x, zx, w, &rq[c0..c0 + g.cout], q, y),
                        );
                        assert_eq!(first_diff(&whole_q, &y), None, "int8 {}", at(&cq));
                        assert_eq!(
                            first_diff(&fused_of(&whole_q), &fused),
                            None,
                            "then {}",
                            at(&cq)
                        );
                        // A row cut through the pixels slot (no row twice).
                        if let (Some(f), Cut::Rows) = (px_slot, cq) {
                            shares(&mut r);
                            let (wq, rq) = (&wq, &rq);
                            let px = move |g: &Geom, rr, x: &[i8], y: &mut [i8]| {
                                f(g, rr, x, zx, wq, rq, q, y)
                            };
                            let mut y = vec![0i8; g.out_len()];
                            split_conv(
                                par,
                                (pool, cq, parts),
                                &g,
                                &xq,
                                wq,
                                &mut y,
                                None,
                                Some(&px),
                                |_, _, _, _, _| unreachable!("a row cut with a pixels slot"),
                            );
                            assert_eq!(first_diff(&whole_q, &y), None, "rows {}", at(&cq));
                        }
                        shares(&mut r);
                        let mut y = vec![0f32; g.out_len()];
                        let parts = (CHUNKS_PER_THREAD * pool.threads()).min(units(cf));
                        split_conv(par, (pool, cf, parts), &g, &xf, &wf, &mut y, None, None, {
                            |g, x, w, c0, y| ff(g, x, w, &bias[c0..c0 + g.cout], relu, y)
                        });
                        assert_eq!(
                            first_diff(&bits(&whole_f), &bits(&y)),
                            None,
                            "f32 {}",
                            at(&cf)
                        );
                    }
                    // The plan's own cut.
                    let par = Par::pool(Some(pool));
                    let mut y = vec![0i8; g.out_len()];
                    let mut fused = vec![0i8; ho * wo * unit];
                    let t = Then {
                        cat: Stage {
                            out: &mut fused,
                            unit,
                            work: 1 << 20,
                            f: &f,
                        },
                        post: None,
                    };
                    par.conv_i8(fq, (dw, px_slot), &g, &xq, zx, &wq, &rq, q, &mut y, Some(t));
                    assert_eq!(
                        first_diff(&whole_q, &y),
                        None,
                        "int8 {}",
                        at(&"the plan's cut")
                    );
                    assert_eq!(
                        first_diff(&fused_of(&whole_q), &fused),
                        None,
                        "then {}",
                        at(&"the plan's cut")
                    );
                    let mut y = vec![0f32; g.out_len()];
                    par.conv_f32(
                        ff,
                        kern.pix_align_f32,
                        dw,
                        &g,
                        &xf,
                        &wf,
                        &bias,
                        relu,
                        &mut y,
                        None,
                    );
                    assert_eq!(
                        first_diff(&bits(&whole_f), &bits(&y)),
                        None,
                        "f32 {}",
                        at(&"the plan's cut")
                    );
                }
            }
        }
    }

    /// A depthwise conv run in the parts of the pointwise conv after it
    /// ([`Par::dw_conv_i8`]) gives both convs' bytes — the depthwise output the pointwise
    /// conv reads, the pointwise output, a fused op after it and a pointwise conv on that
    /// op's output ([`Then::post`]) — with every kernel table
    /// on this CPU, through its rows slot and through the row-early window without it,
    /// in random shares at 2–4 threads, on random geometries (stride 1 and 2, one-row
    /// parts, a channel window of a wider input) and random data; and whole, one op after
    /// the other, where the work is too small to split. Seed: `LORKD_SEED`.
    #[test]
    fn dw_then_pointwise_is_the_two_convs() {
        use crate::engine::testnet::Rng;
        use crate::kernels::{Kernels, OutQ};
        let seed = crate::test_seed();
        let mut r = Rng::new(seed);
        // Every op split (a threshold of 1), and none (the whole path).
        let pools: Vec<Pool> = [1, usize::MAX]
            .into_iter()
            .flat_map(|min_macs| {
                (2..=4).map(move |t| {
                    let p = Pool {
                        min_macs,
                        ..Pool::new(t).unwrap()
                    };
                    p.set_balanced(true);
                    p
                })
            })
            .collect();
        let byte = |r: &mut Rng| r.below(256) as u8 as i8;
        let table = |r: &mut Rng, c: usize| -> Vec<[i32; 3]> {
            (0..c)
                .map(|_| {
                    let m = (1 << 30) + r.below(1 << 29) as i32;
                    [r.below(2000) as i32 - 1000, m, -(r.below(12) as i32)]
                })
                .collect()
        };
        let mut split = 0;
        for kern in Kernels::available().into_iter().flatten() {
            for _ in 0..40 {
                let (h, w, c) = (1 + r.below(14), 1 + r.below(11), 1 + r.below(40));
                let extra = r.below(2) * (1 + r.below(5));
                let stride = 1 + r.below(2);
                let (ho, wo) = (
                    Geom::out_dim(h, 3, stride, 1),
                    Geom::out_dim(w, 3, stride, 1),
                );
                let d = Geom {
                    h,
                    w,
                    in_stride: c + extra,
                    c_off: extra,
                    cin: c,
                    ho,
                    wo,
                    cout: c,
                    k: 3,
                    stride,
                    pad: 1,
                };
                let cout = 1 + r.below(40);
                let g = Geom {
                    h: ho,
                    w: wo,
                    in_stride: c,
                    c_off: 0,
                    cin: c,
                    ho,
                    wo,
                    cout,
                    k: 1,
                    stride: 1,
                    pad: 0,
                };
                let x: Vec<i8> = (0..d.in_len()).map(|_| byte(&mut r)).collect();
                let wd: Vec<i8> = (0..9 * c).map(|_| byte(&mut r)).collect();
                let wp: Vec<i8> = (0..cout * c).map(|_| byte(&mut r)).collect();
                let (rqd, rqp) = (table(&mut r, c), table(&mut r, cout));
                let (zx, zm) = (byte(&mut r) as i32, byte(&mut r) as i32);
                let q = |r: &mut Rng| OutQ {
                    zero_point: byte(r) as i32,
                    lo: -128,
                };
                let (qd, qp) = (q(&mut r), q(&mut r));
                // The two convs one after the other, and an op after them as `Then` runs
                // it (each output pixel from its conv outputs and its index).
                let mut mid = vec![0i8; d.out_len()];
                (kern.dwconv3x3_i8)(&d, &x, zx, &wd, &rqd, qd, &mut mid);
                let mut want = vec![0i8; g.out_len()];
                (kern.conv1x1_i8)(&g, &mid, zm, &wp, &rqp, qp, &mut want);
                // (`u` elements a pixel, each from the conv's outputs, its pixel and its lane;
                // XORed in, so an element written twice would read 0.)
                let u = 1 + r.below(6);
                let then = |p0: usize, ys: &[i8], out: &mut [i8]| {
                    for (j, o) in out.iter_mut().enumerate() {
                        let (px, k) = (j / u, j % u);
                        *o ^= ys[px * cout + k % cout].wrapping_add((p0 + px + 3 * k) as i8);
                    }
                };
                let want_then: Vec<i8> = (0..ho * wo * u)
                    .map(|j| {
                        let (px, k) = (j / u, j % u);
                        want[px * cout + k % cout].wrapping_add((px + 3 * k) as i8)
                    })
                    .collect();
                // And a pointwise conv on a channel window of that op's output, as `post`
                // runs it.
                let (po, pc) = {
                    let o = r.below(u);
                    (o, 1 + r.below(u - o))
                };
                let pg = Geom {
                    h: ho,
                    w: wo,
                    in_stride: u,
                    c_off: po,
                    cin: pc,
                    ho,
                    wo,
                    cout: 1 + r.below(20),
                    k: 1,
                    stride: 1,
                    pad: 0,
                };
                let wq: Vec<i8> = (0..pg.cout * pc).map(|_| byte(&mut r)).collect();
                let (rqq, zq, qq) = (table(&mut r, pg.cout), byte(&mut r) as i32, q(&mut r));
                let mut want_post = vec![0i8; pg.out_len()];
                (kern.conv1x1_i8)(&pg, &want_then, zq, &wq, &rqq, qq, &mut want_post);
                let post = |_: usize, x: &[i8], y: &mut [i8]| {
                    let part = pixel_part(&pg, y.len() / pg.cout);
                    (kern.conv1x1_i8)(&part, x, zq, &wq, &rqq, qq, y)
                };
                for pool in &pools {
                    for px in [kern.dwconv3x3_i8_pixels, None] {
                        // Any shares the pool may learn: a random cut.
                        let v: Vec<f32> = (0..pool.threads())
                            .map(|_| 1.0 + r.below(20) as f32)
                            .collect();
                        let sum: f32 = v.iter().sum();
                        pool.pool
                            .preset(&v.iter().map(|x| x / sum).collect::<Vec<_>>());
                        let (mut m, mut y) = (vec![0i8; d.out_len()], vec![0i8; g.out_len()]);
                        let mut out = vec![0i8; ho * wo * u];
                        let mut py = vec![0i8; pg.out_len()];
                        let t = Then {
                            cat: Stage {
                                out: &mut out,
                                unit: u,
                                work: ho * wo,
                                f: &then,
                            },
                            post: Some(Stage {
                                out: &mut py,
                                unit: pg.cout,
                                work: pg.out_len() * pc,
                                f: &post,
                            }),
                        };
                        let pre = Pre {
                            g: d,
                            x: &x,
                            zx,
                            w: &wd,
                            rq: &rqd,
                            q: qd,
                            y: &mut m,
                        };
                        let mut between = 0;
                        let par = Par::pool(Some(pool));
                        let dw = (kern.dwconv3x3_i8, px);
                        let f = kern.conv1x1_i8;
                        let parts = par.dw_conv_i8(
                            pre,
                            dw,
                            &mut || between += 1,
                            f,
                            &g,
                            zm,
                            &wp,
                            &rqp,
                            qp,
                            &mut y,
                            Some(t),
                        );
                        let at = format!(
                            "{} {d:?} → {cout}, {} threads, pixels slot {}, {} (seed {seed})",
                            kern.isa,
                            pool.threads(),
                            px.is_some(),
                            pool.min_macs
                        );
                        assert_eq!(m, mid, "depthwise output: {at}");
                        assert_eq!(y, want, "pointwise output: {at}");
                        assert_eq!(out, want_then, "the op after: {at}");
                        assert_eq!(py, want_post, "the pointwise conv after that: {at}");
                        // Split (one job) or one op after the other, `done` between.
                        assert_eq!(between, usize::from(!parts), "{at}");
                        // (Pixels through the pixels slot, else whole rows.)
                        let units = if px.is_some() { ho * wo } else { ho };
                        assert_eq!(parts, pool.min_macs == 1 && units >= 2, "{at}");
                        split += usize::from(parts);
                    }
                }
            }
        }
        assert!(split > 100, "only {split} split");
    }
}

/// The benchmarks run by hand below: the median of their timings, and one call timed.
#[cfg(all(test, feature = "threads"))]
mod timing {
    /// The median of `v` (not empty).
    pub(super) fn median(mut v: Vec<f64>) -> f64 {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    }

    /// How long `f` takes, in ns.
    pub(super) fn ns(f: impl FnOnce()) -> f64 {
        let t = std::time::Instant::now();
        f();
        t.elapsed().as_secs_f64() * 1e9
    }
}

/// A benchmark run by hand (`cargo test --release -p lorkd-runtime --features threads --lib
/// -- --ignored split_speed --nocapture`): one conv of the 1.0x @224 network's shapes, split
/// across 2 threads, against one thread, 2,000 times each on the same data (the op alone,
/// its input and output in cache), medians printed; the outputs must be the same bytes.
/// What it separates from `lorkd bench --vs-one-thread`: the split's own cost from what the
/// network around it adds (BENCHMARKS.md, session 43).
#[cfg(all(test, feature = "threads"))]
mod split_speed {
    use super::*;
    use crate::kernels::{Kernels, OutQ};

    #[test]
    #[ignore]
    fn split_speed() {
        let kern = Kernels::best();
        let pool = Pool::new(2).unwrap();
        let _busy = pool.busy();
        let shapes = [
            (116, 116, 14, false),
            (58, 58, 28, false),
            (24, 58, 56, false),
            (232, 232, 7, false),
            (116, 116, 14, true),
            (58, 58, 28, true),
            (232, 232, 7, true),
            // The stem (3×3, stride 2).
            (3, 24, 224, false),
        ];
        for (cin, cout, h, dw) in shapes {
            let stem = cin == 3;
            let (k, pad, s) = match (dw, stem) {
                (true, _) => (3, 1, 1),
                (_, true) => (3, 1, 2),
                _ => (1, 0, 1),
            };
            let g = Geom {
                h,
                w: h,
                in_stride: cin,
                c_off: 0,
                cin,
                ho: Geom::out_dim(h, k, s, pad),
                wo: Geom::out_dim(h, k, s, pad),
                cout,
                k,
                stride: s,
                pad,
            };
            let x: Vec<i8> = (0..g.in_len()).map(|i| (i * 7 % 251) as i8).collect();
            let wn = if dw { 9 * cin } else { cin * cout * k * k };
            let w: Vec<i8> = (0..wn).map(|i| (i * 13 % 255) as i8).collect();
            let rq: Vec<[i32; 3]> = (0..cout).map(|i| [i as i32 - 50, 1 << 30, -8]).collect();
            let q = OutQ {
                zero_point: 3,
                lo: -128,
            };
            let f = match (dw, stem) {
                (true, _) => kern.dwconv3x3_i8,
                (_, true) => kern.conv_i8,
                _ => kern.conv1x1_i8,
            };
            let time = |par: Par<'_>, y: &mut [i8], rows| {
                let us = (0..2000).map(|_| {
                    // Each call the first job of an inference (its learned shares).
                    pool.pool.begin();
                    timing::ns(|| par.conv_i8(f, (dw, rows), &g, &x, 5, &w, &rq, q, y, None)) / 1e3
                });
                timing::median(us.collect())
            };
            let (mut y1, mut y2) = (vec![0i8; g.out_len()], vec![1i8; g.out_len()]);
            let rows = match (dw, stem) {
                (true, _) => kern.dwconv3x3_i8_pixels,
                (_, true) => kern.conv_i8_pixels,
                _ => None,
            };
            for _ in 0..3 {
                let one = time(Par::pool(None), &mut y1, None);
                let two = time(Par::pool(Some(&pool)), &mut y2, rows);
                print!(
                    "{cin}→{cout} @{h}x{h} {}: 1 thread {one:.1} µs, 2 threads {two:.1} µs, {:.2}×",
                    match (dw, stem) {
                        (true, _) => "depthwise",
                        (_, true) => "stem",
                        _ => "pointwise",
                    },
                    one / two
                );
                if rows.is_some() {
                    // The row cut without the rows slot: each part from a row early.
                    let lead = time(Par::pool(Some(&pool)), &mut y2, None);
                    print!("; from a row early {lead:.1} µs, {:.2}×", one / lead);
                }
                println!();
            }
            assert_eq!(y1, y2, "{g:?}");
        }
    }
}

/// A benchmark run by hand (`cargo test --release -p lorkd-runtime --features threads --lib
/// -- --ignored line_owner_speed --nocapture`): what a part pays to write lines the other
/// thread wrote last (they come from its cache) — two parts of a buffer written job after job
/// by the same threads, and by the threads in turn; the slower part's median time. Why the
/// arena plan keeps a value's parts where the same thread wrote last (`tools::arena_plan`).
#[cfg(all(test, feature = "threads"))]
mod line_owner_speed {
    use super::*;

    #[test]
    #[ignore]
    fn line_owner_speed() {
        let pool = Pool::new(2).unwrap();
        let _busy = pool.busy();
        for kb in [16usize, 64, 256] {
            let n = kb * 1024;
            let mut buf = vec![0u8; 2 * n];
            let mut time = |turns: bool| {
                let v: Vec<f64> = (0..400u32)
                    .map(|it| {
                        let (a, b) = buf.split_at_mut(n);
                        let took = std::sync::Mutex::new([0f64; 2]);
                        let mut parts = vec![(0, a), (1, b)];
                        if turns && it % 2 == 1 {
                            parts.reverse();
                        }
                        pool.pool.begin();
                        pool.run(parts, |(k, s): (usize, &mut [u8])| {
                            let t0 = std::time::Instant::now();
                            // A line at a time, as the kernels store (a whole-slice fill
                            // takes the string-store path, which skips most of the reads).
                            for line in s.chunks_mut(64) {
                                line.fill(it as u8);
                            }
                            let us = t0.elapsed().as_secs_f64() * 1e6;
                            took.lock().unwrap()[k] = us;
                        });
                        let t = took.into_inner().unwrap();
                        t[0].max(t[1])
                    })
                    .skip(10)
                    .collect();
                timing::median(v)
            };
            let (same, turns) = (time(false), time(true));
            println!(
                "{kb} KiB a part: written by the same thread {same:.2} µs, by the threads in turn \
                 {turns:.2} µs"
            );
            assert!(buf.iter().all(|&b| b == buf[0]));
        }
    }
}

/// A benchmark run by hand (`cargo test --release -p lorkd-runtime --features threads --lib
/// -- --ignored fork_speed --nocapture`): one fork-join of 2 threads with empty parts, the
/// pool's alone and through [`Par::rows`] (the cut, the parts' slices and slots): the fixed
/// cost each split op pays, median ns.
#[cfg(all(test, feature = "threads"))]
mod fork_speed {
    use super::*;

    #[test]
    #[ignore]
    fn fork_speed() {
        let pool = Pool::new(2).unwrap();
        let _busy = pool.busy();
        let mut y = vec![0u8; 4096];
        let time =
            |f: &mut dyn FnMut()| timing::median((0..20000).map(|_| timing::ns(&mut *f)).collect());
        for _ in 0..3 {
            let raw = time(&mut || {
                pool.pool.run(2, &|i| {
                    core::hint::black_box(i);
                })
            });
            let rows = time(&mut || {
                Par::pool(Some(&pool)).rows(&mut y, 64, 1 << 30, |r, p| {
                    core::hint::black_box((r, p.len()));
                })
            });
            println!("Pool::run {raw:.0} ns, Par::rows {rows:.0} ns");
        }
    }
}

/// A benchmark run by hand (`cargo test --release -p lorkd-runtime --features threads --lib
/// -- --ignored call_cost --nocapture`): the int8 depthwise (pixels slot) and packed
/// pointwise kernels of ShuffleNetV2's block shapes on a row, half and all of the map; twice
/// the half less the whole is about what a call costs beyond its pixels (its output stage's
/// columns, weight pairs…), which each thread's part pays again.
#[cfg(all(test, feature = "threads"))]
mod call_cost {
    use super::*;
    use crate::kernels::{Kernels, OutQ};

    #[test]
    #[ignore]
    fn call_cost() {
        let kern = Kernels::best();
        let q = OutQ {
            zero_point: 3,
            lo: -128,
        };
        for (c, h) in [(116usize, 14usize), (232, 7), (58, 28)] {
            let g = Geom {
                h,
                w: h,
                in_stride: c,
                c_off: 0,
                cin: c,
                ho: h,
                wo: h,
                cout: c,
                k: 3,
                stride: 1,
                pad: 1,
            };
            let x: Vec<i8> = (0..g.in_len()).map(|i| (i * 7 % 251) as i8).collect();
            let w: Vec<i8> = (0..9 * c).map(|i| (i * 13 % 255) as i8).collect();
            let rq: Vec<[i32; 3]> = (0..c).map(|i| [i as i32 - 50, 1 << 30, -8]).collect();
            let mut y = vec![0i8; g.out_len()];
            let f = kern.dwconv3x3_i8_pixels.unwrap();
            let time = |n: usize, y: &mut [i8]| {
                let ns = (0..3000).map(|_| timing::ns(|| f(&g, 0..n, &x, 5, &w, &rq, q, y)));
                timing::median(ns.collect())
            };
            let npix = h * h;
            let (t1, th, tw) = (time(h, &mut y), time(npix / 2, &mut y), time(npix, &mut y));
            println!(
                "dw {c}@{h}x{h}: one row {t1:.0} ns, half {th:.0}, whole {tw:.0}; fixed ≈ {:.0} ns",
                2.0 * th - tw
            );
            let gp = Geom { k: 1, pad: 0, ..g };
            let wp: Vec<i8> = (0..c * c).map(|i| (i * 13 % 255) as i8).collect();
            let mut wpk = wp.clone();
            let pk = kern.conv1x1_i8_packed.unwrap();
            (pk.pack)(c, c, &mut wpk);
            let timep = |n: usize, y: &mut [i8]| {
                let sub = pixel_part(&gp, n);
                let ns = (0..3000).map(|_| timing::ns(|| (pk.conv)(&sub, &x, 5, &wpk, &rq, q, y)));
                timing::median(ns.collect())
            };
            let (th, tw) = (timep(npix / 2, &mut y), timep(npix, &mut y));
            println!(
                "pw {c}→{c} @{h}x{h}: half {th:.0}, whole {tw:.0}; fixed ≈ {:.0} ns",
                2.0 * th - tw
            );
        }
    }
}
