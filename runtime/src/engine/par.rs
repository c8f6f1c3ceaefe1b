//! Threads for std builds (feature `threads`): a conv's output split across a pool.
//!
//! Every output element is computed by the same kernel slot from the same inputs whatever
//! the thread count, so results are bit-identical for any N; the split only decides which
//! thread runs which part. The split points are aligned so that each part meets the
//! kernels' register tiles exactly as the whole would:
//! - a pointwise conv (`k = 1`, stride 1, no padding) splits its output **pixels** into
//!   runs of a multiple of `PIX_ALIGN` pixels, each a `1 × n` image of its own; the parts
//!   are disjoint ranges of `y`, written in place;
//! - any other conv (the k×k stem, depthwise) splits its output **channels** at multiples
//!   of `CH_ALIGN`; each part runs on a sub-geometry into a heap buffer that the calling
//!   thread then scatters into `y` (the arena holds no per-thread state, so `arena_bytes`
//!   does not depend on N).
//!
//! Without the feature [`Par`] is a zero-sized pass-through: the no_std engine stays
//! single-threaded and allocation-free.
use crate::kernels::{ConvF32, ConvI8, Geom, OutQ};

/// Pixel split points are multiples of this (a multiple of every pixel tile: 1, 2, 3, 4, 8, 16).
#[cfg(feature = "threads")]
pub(crate) const PIX_ALIGN: usize = 48;
/// Channel split points are multiples of this (every kernel's channel lanes divide it).
#[cfg(feature = "threads")]
pub(crate) const CH_ALIGN: usize = 16;
/// By default a part gets at least this many multiply-adds (~25 µs of int8 GEMM on one
/// AVX2 core): below it waking a worker costs about what it saves, more on a busy machine.
#[cfg(feature = "threads")]
pub(crate) const MIN_MACS: usize = 256 * 1024;

/// The engine's thread pool: `threads − 1` workers; the calling thread runs one part itself.
#[cfg(feature = "threads")]
pub(crate) struct Pool {
    pool: rayon::ThreadPool,
    threads: usize,
    /// The smallest part worth a thread, in multiply-adds.
    pub(crate) min_macs: usize,
}

#[cfg(feature = "threads")]
impl Pool {
    /// A pool for `threads ≥ 2` threads in all.
    pub(crate) fn new(threads: usize) -> Result<Self, rayon::ThreadPoolBuildError> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads - 1)
            .thread_name(|i| format!("lorkd-engine-{i}"))
            .build()?;
        Ok(Pool {
            pool,
            threads,
            min_macs: MIN_MACS,
        })
    }

    pub(crate) fn threads(&self) -> usize {
        self.threads
    }

    /// `f(i, part_i)` for every `part` of `parts`, the first on the calling thread.
    fn run<P: Send>(&self, parts: Vec<P>, f: impl Fn(P) + Sync) {
        let mut it = parts.into_iter();
        let first = it.next();
        let f = &f;
        self.pool.in_place_scope(|s| {
            for p in it {
                s.spawn(move |_| f(p));
            }
            if let Some(p) = first {
                f(p);
            }
        });
    }
}

/// How an op's kernels run: on the calling thread, or split across the pool.
#[derive(Clone, Copy)]
pub(crate) struct Par<'p> {
    #[cfg(feature = "threads")]
    pool: Option<&'p Pool>,
    _p: core::marker::PhantomData<&'p ()>,
}

/// `n` items in at most `parts` runs, each a multiple of `align` except the last:
/// `(start, len)` of each.
#[cfg(feature = "threads")]
pub(crate) fn split(n: usize, parts: usize, align: usize) -> impl Iterator<Item = (usize, usize)> {
    let units = n.div_ceil(align);
    let parts = parts.clamp(1, units.max(1));
    let (q, r) = (units / parts, units % parts);
    (0..parts).scan(0usize, move |start, i| {
        let len = ((q + usize::from(i < r)) * align).min(n - *start);
        let s = *start;
        *start += len;
        Some((s, len))
    })
}

/// Geometry of output pixels `p0 .. p0 + n` of a pointwise stride-1 conv, as a `1 × n`
/// image whose input starts at pixel `p0`.
#[cfg(feature = "threads")]
fn pixel_part(g: &Geom, n: usize) -> Geom {
    Geom {
        h: 1,
        w: n,
        ho: 1,
        wo: n,
        ..*g
    }
}

/// Channels `c0 .. c0 + n` of a conv (`depthwise`: input channels too).
#[cfg(feature = "threads")]
fn channel_part(g: &Geom, c0: usize, n: usize, depthwise: bool) -> Geom {
    if depthwise {
        Geom {
            c_off: g.c_off + c0,
            cin: n,
            cout: n,
            ..*g
        }
    } else {
        Geom { cout: n, ..*g }
    }
}

/// Copies a part's dense `[P, n]` output into channels `c0 .. c0 + n` of `y` (`[P, cout]`).
#[cfg(feature = "threads")]
fn scatter<T: Copy>(part: &[T], c0: usize, n: usize, cout: usize, y: &mut [T]) {
    for (src, dst) in part.chunks_exact(n).zip(y.chunks_exact_mut(cout)) {
        dst[c0..c0 + n].copy_from_slice(src);
    }
}

/// A conv's weights for output channels `c0 .. c0 + n`: rows `[cout, per]` (ungrouped) or
/// the `[taps, C]` columns of a depthwise weight.
#[cfg(feature = "threads")]
fn weight_part<T: Copy>(w: &[T], c0: usize, n: usize, cout: usize, depthwise: bool) -> Vec<T> {
    if depthwise {
        w.chunks_exact(cout)
            .flat_map(|tap| tap[c0..c0 + n].iter().copied())
            .collect()
    } else {
        let per = w.len() / cout;
        w[c0 * per..(c0 + n) * per].to_vec()
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

    /// Parts for `g` (`depthwise`: a `DwConv`): `None` to run whole.
    #[cfg(feature = "threads")]
    fn plan(&self, g: &Geom, depthwise: bool) -> Option<(&'p Pool, bool, usize)> {
        let pool = self.pool?;
        let npix = g.ho * g.wo;
        let macs = npix * g.cout * g.k * g.k * if depthwise { 1 } else { g.cin };
        let parts = pool.threads().min(macs / pool.min_macs.max(1));
        if parts < 2 {
            return None;
        }
        let pixels = !depthwise && g.k == 1 && g.stride == 1 && g.pad == 0;
        let align = if pixels { PIX_ALIGN } else { CH_ALIGN };
        let n = if pixels { npix } else { g.cout };
        let parts = parts.min(n.div_ceil(align));
        (parts >= 2).then_some((pool, pixels, parts))
    }

    /// Runs the f32 conv slot `f` (contract of [`ConvF32`]) over `g`, split if worth it.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn conv_f32(
        self,
        f: ConvF32,
        depthwise: bool,
        g: &Geom,
        x: &[f32],
        w: &[f32],
        bias: &[f32],
        relu: bool,
        y: &mut [f32],
    ) {
        #[cfg(feature = "threads")]
        if let Some(plan) = self.plan(g, depthwise) {
            return split_conv(plan, depthwise, g, x, w, y, |g, x, w, c0, y| {
                f(g, x, w, &bias[c0..c0 + g.cout], relu, y)
            });
        }
        let _ = depthwise;
        f(g, x, w, bias, relu, y)
    }

    /// Runs the int8 conv slot `f` (contract of [`ConvI8`]) over `g`, split if worth it.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn conv_i8(
        self,
        f: ConvI8,
        depthwise: bool,
        g: &Geom,
        x: &[i8],
        zx: i32,
        w: &[i8],
        rq: &[[i32; 3]],
        q: OutQ,
        y: &mut [i8],
    ) {
        #[cfg(feature = "threads")]
        if let Some(plan) = self.plan(g, depthwise) {
            return split_conv(plan, depthwise, g, x, w, y, |g, x, w, c0, y| {
                f(g, x, zx, w, &rq[c0..c0 + g.cout], q, y)
            });
        }
        let _ = depthwise;
        f(g, x, zx, w, rq, q, y)
    }
}

/// The split itself: `run(sub_geometry, x, w, first_channel, y_part)` per part.
#[cfg(feature = "threads")]
fn split_conv<T: Copy + Default + Send + Sync>(
    (pool, pixels, parts): (&Pool, bool, usize),
    depthwise: bool,
    g: &Geom,
    x: &[T],
    w: &[T],
    y: &mut [T],
    run: impl Fn(&Geom, &[T], &[T], usize, &mut [T]) + Sync,
) {
    if pixels {
        let npix = g.ho * g.wo;
        let mut jobs = Vec::with_capacity(parts);
        let mut rest = &mut y[..npix * g.cout];
        for (p0, n) in split(npix, parts, PIX_ALIGN) {
            let (part, tail) = core::mem::take(&mut rest).split_at_mut(n * g.cout);
            rest = tail;
            let xs = &x[p0 * g.in_stride..(p0 + n) * g.in_stride];
            jobs.push((pixel_part(g, n), xs, part));
        }
        pool.run(jobs, |(sub, xs, part)| run(&sub, xs, w, 0, part));
    } else {
        let npix = g.ho * g.wo;
        let mut jobs: Vec<(usize, Geom, Vec<T>, Vec<T>)> = split(g.cout, parts, CH_ALIGN)
            .map(|(c0, n)| {
                let wp = weight_part(w, c0, n, g.cout, depthwise);
                (
                    c0,
                    channel_part(g, c0, n, depthwise),
                    wp,
                    vec![T::default(); npix * n],
                )
            })
            .collect();
        pool.run(jobs.iter_mut().collect(), |(c0, sub, wp, out)| {
            run(sub, x, wp, *c0, out)
        });
        for (c0, sub, _, out) in &jobs {
            scatter(out, *c0, sub.cout, g.cout, y);
        }
    }
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
}
