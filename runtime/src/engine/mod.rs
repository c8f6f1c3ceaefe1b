//! The inference engine: department switch and op execution over a caller-owned arena.
//!
//! `Engine::new` carves the arena by [`layout::regions`]; `select` makes a department
//! current (Materialized: rebuilds every expert conv's weight `W0 + B_t·A_t` into the arena,
//! see [`crate::switch`], and for int8 computes the requantisation tables that fit the
//! rebuild scratch, which inference leaves idle); `infer` runs the graph: NHWC values at their planned arena
//! offsets, the ops in order through a dispatch loop over `ops/` (one file per op), the
//! department's head last.
//!
//! The bundle is validated by `Bundle::parse` (the shape rules live in
//! [`crate::format::validate`]); each op still checks its slices against the same rules (an
//! inconsistency gives [`EngineError::Malformed`], never a panic), which costs a few
//! comparisons per op. Shared weights are read in place, so the bundle bytes and the arena
//! must be 16-aligned in memory (see `AlignedBytes` under `std`).

mod ops;
mod par;
#[cfg(feature = "threads")]
mod pool;
#[cfg(feature = "std")]
pub mod testnet;
#[cfg(feature = "std")]
pub use crate::aligned::AlignedBytes;

use crate::format::layout::{self, Regions};
use crate::format::plan::Plan;
use crate::format::{Bundle, Dept, Manifest, Mode, Op, Precision};
use crate::kernels::Kernels;
use crate::switch::{self, Delta};
use ops::{expect_len, f32s, f32s_mut, i8s, i8s_mut, tensor, Ctx, DeltaCursor};

#[cfg(target_endian = "big")]
compile_error!("lorkd-runtime reads little-endian tensors in place");

/// Why the engine refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EngineError {
    /// The arena is smaller than `bundle.arena_bytes(mode)`.
    ArenaTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes given.
        got: usize,
    },
    /// The arena or the bundle bytes do not start 16-aligned in memory.
    Misaligned,
    /// `select` of a department index the bundle does not have.
    UnknownDepartment {
        /// The index asked for.
        index: usize,
        /// Departments in the bundle.
        count: usize,
    },
    /// `infer` before any successful `select`.
    NoDepartment,
    /// The input has the wrong number of elements (`channels · size · size`).
    InputSize {
        /// Elements expected.
        expected: usize,
        /// Elements given.
        got: usize,
    },
    /// The logits buffer is shorter than the department's class count.
    LogitsSize {
        /// The department's classes.
        needed: usize,
        /// Length of the buffer given.
        got: usize,
    },
    /// Op `op` (or, for `usize::MAX`, the graph as a whole) does not fit its tensors.
    Malformed {
        /// Index of the op (`usize::MAX`: the graph).
        op: usize,
    },
    /// The department's deltas or head do not fit this bundle's graph.
    DeptMismatch,
}

impl core::fmt::Display for EngineError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            EngineError::ArenaTooSmall { needed, got } => {
                write!(f, "arena too small: needs {needed} bytes, got {got}")
            }
            EngineError::Misaligned => {
                f.write_str("arena or bundle bytes not 16-byte aligned in memory")
            }
            EngineError::UnknownDepartment { index, count } => {
                write!(f, "unknown department {index} (bundle has {count})")
            }
            EngineError::NoDepartment => f.write_str("no department selected"),
            EngineError::InputSize { expected, got } => {
                write!(f, "input has {got} elements, the model expects {expected}")
            }
            EngineError::LogitsSize { needed, got } => {
                write!(
                    f,
                    "logits buffer holds {got}, the department has {needed} classes"
                )
            }
            EngineError::Malformed { op } => write!(f, "op {op} does not fit its tensors"),
            EngineError::DeptMismatch => f.write_str("department deltas do not fit the graph"),
        }
    }
}

impl core::error::Error for EngineError {}

type R<T> = Result<T, EngineError>;

/// Runs one bundle's graph for one department at a time over a caller-owned arena.
pub struct Engine<'b, 'a> {
    bundle: &'b Bundle<'a>,
    arena: &'b mut [u8],
    plan: Plan,
    reg: Regions,
    dept: Option<Dept<'a>>,
    kernels: Kernels,
    /// Requantisation tables `select` left in the scratch region: `(room, used)` in bytes
    /// (see `ops::RqCache`).
    rq_cached: (usize, usize),
    /// `select` folds the pointwise convs' zero points into their cached tables
    /// ([`FOLD_ZX`]; tests turn it on for every table).
    fold_zx: bool,
    #[cfg(feature = "threads")]
    pool: Option<par::Pool>,
    /// Ops the last inference ran inside another op's parts (`Engine::fused_ops`).
    #[cfg(feature = "threads")]
    fused: usize,
    /// Of those, depthwise convs run in the pointwise conv's parts.
    #[cfg(feature = "threads")]
    fused_dw: usize,
}

/// Whether `select` folds the input zero point of the int8 pointwise convs into their
/// cached requantisation biases (`ops::FOLDED`: `b − zx·Σw`, the conv then runs with zero
/// point 0): on aarch64, whose pointwise kernels then skip the `Σw` they would sum at every
/// call (39 K instructions of the 0.5x @64 inference, for ~0.1 M more at the switch). Exact
/// for every table (the bias add wraps), so any target could; the others' kernels are not
/// written to skip their sums, and their switch would pay for them.
const FOLD_ZX: bool = cfg!(target_arch = "aarch64");

/// The arena split into its regions (disjoint borrows).
struct Parts<'x> {
    act: &'x mut [u8],
    table: &'x [u8],
    weights: &'x mut [u8],
    scratch: &'x mut [u8],
    /// The int8 requant scratch, then (at the `PoolHead`) the pooled feature vector.
    requant: &'x mut [u8],
}

/// The arena split into its regions.
fn parts(arena: &mut [u8], r: Regions) -> Parts<'_> {
    let (act, rest) = arena.split_at_mut(r.values);
    let (table, rest) = rest.split_at_mut(r.weights - r.values);
    let (weights, rest) = rest.split_at_mut(r.scratch - r.weights);
    let (scratch, rest) = rest.split_at_mut(r.requant - r.scratch);
    // The pooled features live in the requant scratch's bytes (`layout::Regions::requant`).
    let requant = &mut rest[..r.total - r.requant];
    Parts {
        act,
        table,
        weights,
        scratch,
        requant,
    }
}

fn is_aligned(p: *const u8) -> bool {
    (p as usize) & (crate::format::ALIGN - 1) == 0
}

impl<'b, 'a> Engine<'b, 'a> {
    /// An engine over `arena` (at least `bundle.arena_bytes(mode)` bytes, 16-aligned; with
    /// threads, best on a cache line: the arena plan starts values and split ops' parts on
    /// line boundaries of the arena, which `AlignedBytes` gives — from `mmap`, a 16-aligned
    /// arena ran 1.0x @224 at 2 threads ~2 % slower, session 56).
    ///
    /// # Errors
    /// [`EngineError::ArenaTooSmall`] with the needed and given sizes; `Misaligned`.
    pub fn new(bundle: &'b Bundle<'a>, arena: &'b mut [u8], mode: Mode) -> R<Self> {
        let m = bundle.manifest();
        let plan = Plan::new(m, mode);
        let reg =
            layout::regions_with(m, &plan).ok_or(EngineError::Malformed { op: usize::MAX })?;
        let planned = match mode {
            Mode::Auto => reg.total, // the same rule; not worth planning twice
            _ => bundle.arena_bytes(mode),
        };
        let needed = reg.total.max(planned);
        if arena.len() < needed {
            return Err(EngineError::ArenaTooSmall {
                needed,
                got: arena.len(),
            });
        }
        if !is_aligned(arena.as_ptr()) || !is_aligned(bundle.shared().as_ptr()) {
            return Err(EngineError::Misaligned);
        }
        let table = &mut arena[reg.values..reg.weights];
        let mut n = 0;
        for (i, v) in m.values.iter().enumerate() {
            let e = table
                .get_mut(16 * i..16 * i + 16)
                .ok_or(EngineError::Malformed { op: usize::MAX })?;
            for (j, x) in [v.h as u32, v.w as u32, v.c as u32, v.offset]
                .into_iter()
                .enumerate()
            {
                e[4 * j..4 * j + 4].copy_from_slice(&x.to_le_bytes());
            }
            n += 1;
        }
        if n != m.values.len() {
            return Err(EngineError::Malformed { op: usize::MAX });
        }
        Ok(Engine {
            bundle,
            arena,
            plan,
            reg,
            dept: None,
            kernels: Kernels::best(),
            rq_cached: (0, 0),
            fold_zx: FOLD_ZX,
            #[cfg(feature = "threads")]
            pool: None,
            #[cfg(feature = "threads")]
            fused: 0,
            #[cfg(feature = "threads")]
            fused_dw: 0,
        })
    }

    /// Runs each large enough conv on `threads` threads (the caller's and `threads − 1`
    /// workers of the engine's own pool; `0` and `1`: the caller's only). Outputs are
    /// bit-identical for any count, and the arena does not change (the parts that need a
    /// buffer take it from the heap). Feature `threads` (std).
    ///
    /// # Errors
    /// The operating system refused a worker thread.
    #[cfg(feature = "threads")]
    pub fn set_threads(&mut self, threads: usize) -> std::io::Result<()> {
        self.pool = if threads > 1 {
            Some(par::Pool::new(threads)?)
        } else {
            None
        };
        Ok(())
    }

    /// The smallest share of a conv worth a thread, in multiply-adds (default 128 Ki; a
    /// conv splits into at most `macs / min_macs` parts). Tests set 1 to split every conv.
    /// Does nothing without a pool. Feature `threads`.
    #[cfg(feature = "threads")]
    pub fn set_split_min_macs(&mut self, min_macs: usize) {
        if let Some(p) = &mut self.pool {
            p.min_macs = min_macs;
        }
    }

    /// Whether a split op's parts follow shares learned from their measured times (the
    /// threads' chunks then take equal time on cores of unequal speed, a big.LITTLE cart's)
    /// or are cut evenly (the default: consecutive ops cut at the same rows, so each thread
    /// reads back what it wrote; see `engine::pool`). Results are the same bits either way.
    /// Does nothing without a pool. Feature `threads`.
    #[cfg(feature = "threads")]
    pub fn set_balanced_cuts(&mut self, on: bool) {
        if let Some(p) = &self.pool {
            p.set_balanced(on);
        }
    }

    /// Ops the last inference ran inside another op's parts rather than on their own: with
    /// threads, the concat + shuffle after the conv that computes one of its sides, and an
    /// int8 depthwise conv before the pointwise conv that reads it, run in that conv's
    /// parts (0 on one thread). Feature `threads`.
    #[cfg(feature = "threads")]
    pub fn fused_ops(&self) -> usize {
        self.fused
    }

    /// Of [`Engine::fused_ops`], the depthwise convs (run in the parts of the pointwise
    /// conv that reads them). Feature `threads`.
    #[cfg(feature = "threads")]
    pub fn fused_depthwise(&self) -> usize {
        self.fused_dw
    }

    /// Threads an inference runs on (1 without the `threads` feature).
    pub fn threads(&self) -> usize {
        #[cfg(feature = "threads")]
        if let Some(p) = &self.pool {
            return p.threads();
        }
        1
    }

    /// Replaces the kernel table (`Kernels::best()` by default; tests compare against
    /// `Kernels::reference()`). No department is current afterwards — a Materialized
    /// expert's weights may be laid out for the old table's kernels
    /// (`Kernels::conv1x1_f32_packed`, `conv1x1_i8_packed`) — so `select` one again.
    pub fn set_kernels(&mut self, kernels: Kernels) {
        self.kernels = kernels;
        self.dept = None;
    }

    /// The kernel table in use.
    pub fn kernels(&self) -> Kernels {
        self.kernels
    }

    /// The switching mode.
    pub fn mode(&self) -> Mode {
        self.plan.mode()
    }

    /// The per-layer plan: which expert convs `select` rebuilds and which stream.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The current department, if any.
    pub fn department(&self) -> Option<&Dept<'a>> {
        self.dept.as_ref()
    }

    /// Arena bytes holding rebuilt weights (0 in Streaming mode; in Auto, the rebuilt
    /// experts' only).
    pub fn weight_ram_bytes(&self) -> usize {
        self.reg.scratch - self.reg.weights
    }

    /// Makes department `dept` of the bundle current.
    ///
    /// # Errors
    /// [`EngineError::UnknownDepartment`] for an index the bundle does not have.
    pub fn select(&mut self, dept: usize) -> R<()> {
        let count = self.bundle.department_count();
        let d = self
            .bundle
            .department(dept)
            .ok_or(EngineError::UnknownDepartment { index: dept, count })?;
        self.select_blob(d)
    }

    /// Makes `dept` current: a department of this bundle, or a delta from an update slot
    /// (already checked against this bundle by `Dept::parse_blob`). Materialized mode
    /// rebuilds every expert weight from the pristine `W0`.
    pub fn select_blob(&mut self, dept: Dept<'a>) -> R<()> {
        self.dept = None;
        let m = *self.bundle.manifest();
        let dm = &dept.manifest;
        if dm.deltas.len() != m.experts as usize || dm.classes.is_empty() {
            return Err(EngineError::DeptMismatch);
        }
        self.rebuild_and_cache(&m, &dept, usize::MAX)?;
        self.dept = Some(dept);
        Ok(())
    }

    /// The switch's work for `dept`: the rebuild of the experts the plan does not stream,
    /// then (int8) the requantisation tables cached in at most `room` bytes of the idle
    /// scratch (`usize::MAX`: all of it; tests pass less).
    fn rebuild_and_cache(&mut self, m: &Manifest<'a>, dept: &Dept<'a>, room: usize) -> R<()> {
        self.rq_cached = (0, 0);
        // With the zero-point fold the cache walk reads the rebuilt pointwise experts' rows
        // and lays them out for the packed slot after.
        let fold = (self.fold_zx && m.precision == Precision::Int8).then_some(ops::Fold {
            packed: self.kernels.conv1x1_i8_packed,
        });
        if self.plan.mode() != Mode::Streaming {
            self.materialize(m, dept, fold.is_none())?;
        }
        if m.precision == Precision::Int8 {
            // The per-channel requantisation depends only on the department: computed here
            // once, for as many ops as the scratch region's part that inference leaves idle
            // holds, instead of at every inference: whole rows while they fit (read in
            // place); past that Auto caches no more (its switch is the one kept cheap), the
            // others pack them (8 bytes a row, a rebuilt expert's 4), more tables in the
            // room, each unpacked at every inference.
            let (shared, plan, at) = (self.bundle.shared(), self.plan, self.reg.stream_scratch);
            let table = self.kernels.requant_table;
            let p = self.parts();
            let cache = p.scratch.get_mut(at..).unwrap_or_default();
            let n = room.min(cache.len());
            let cache = &mut cache[..n];
            let pack = plan.mode() != Mode::Auto;
            self.rq_cached = ops::fill_requant_cache(
                table, m, shared, dept, &plan, p.table, p.weights, cache, p.requant, pack, fold,
            )?;
        }
        Ok(())
    }

    fn parts(&mut self) -> Parts<'_> {
        parts(self.arena, self.reg)
    }

    /// The switch's driver: rebuilds every expert conv's weight `W0 + B·A` the plan does not
    /// stream from the pristine `W0` into its slot of the weights region
    /// ([`layout::expert_slot`]): in graph order, or with a pool (feature `threads`) the
    /// layers across its threads, each thread with a scratch of its own on the heap (the same
    /// bytes: every layer is rebuilt alone). `pack_i8`: int8 pointwise experts take the
    /// packed slot's layout here (else the requantisation walk lays them out).
    fn materialize(&mut self, m: &Manifest<'a>, dept: &Dept<'a>, pack_i8: bool) -> R<()> {
        let (kernels, plan) = (self.kernels, self.plan);
        let p = parts(self.arena, self.reg);
        #[cfg(feature = "threads")]
        if let Some(pool) = &self.pool {
            let mut jobs = std::vec::Vec::new();
            expert_layers(self.bundle, m, dept, &plan, p.table, p.weights, |l| {
                jobs.push(l);
                Ok(())
            })?;
            let _busy = pool.busy();
            let cost = |l: &Layer<'_, '_>| l.cout * l.cin * l.kk * l.kk;
            return par::rebuild(pool, jobs, cost, p.scratch.len(), |l, scratch| {
                rebuild_layer(&kernels, plan.mode(), pack_i8, l, scratch)
            });
        }
        let scratch = p.scratch;
        expert_layers(self.bundle, m, dept, &plan, p.table, p.weights, |l| {
            rebuild_layer(&kernels, plan.mode(), pack_i8, l, scratch)
        })
    }

    /// Runs the current department on one image (`input_chw`: normalised, `[C, H, W]` f32)
    /// and writes its logits; returns the number of classes.
    ///
    /// # Errors
    /// `NoDepartment`, `InputSize`, `LogitsSize`.
    pub fn infer(&mut self, input_chw: &[f32], logits: &mut [f32]) -> R<usize> {
        self.run(input_chw, logits, &mut |_, _| {}, &mut ())
    }

    /// As [`Engine::infer`], and adds to `ticks[i]` the time op `i` took, read from the
    /// caller's clock `now` (any monotonic counter: `Instant` nanoseconds, a cycle counter)
    /// at each op boundary; `ticks[ops.len()]` gets the input quantisation. Slots beyond
    /// `ticks.len()` are not recorded. Plain `infer` runs the same loop with the hook
    /// compiled out.
    pub fn infer_timed(
        &mut self,
        input_chw: &[f32],
        logits: &mut [f32],
        now: impl FnMut() -> u64,
        ticks: &mut [u64],
    ) -> R<usize> {
        let mut clock = Ticks {
            last: 0,
            now,
            ticks,
        };
        clock.last = (clock.now)();
        self.run(input_chw, logits, &mut |_, _| {}, &mut clock)
    }

    /// As [`Engine::infer`], and calls `observe(value, data)` with every f32 value (NHWC)
    /// right after it is computed, the input (value 0) first — the calibration hook.
    /// int8 bundles observe nothing.
    pub fn infer_observe(
        &mut self,
        input_chw: &[f32],
        logits: &mut [f32],
        mut observe: impl FnMut(usize, &[f32]),
    ) -> R<usize> {
        self.run(input_chw, logits, &mut observe, &mut ())
    }

    /// The interpreter: the input into value 0, then one op `eval` per op in order (a
    /// dispatch loop over `ops/`), ending at the head.
    fn run<H: OpHook>(
        &mut self,
        input: &[f32],
        logits: &mut [f32],
        observe: &mut dyn FnMut(usize, &[f32]),
        hook: &mut H,
    ) -> R<usize> {
        let dept = self.dept.ok_or(EngineError::NoDepartment)?;
        let m = *self.bundle.manifest();
        let classes = dept.manifest.classes.len();
        if logits.len() < classes {
            return Err(EngineError::LogitsSize {
                needed: classes,
                got: logits.len(),
            });
        }
        let (plan, kern, shared) = (self.plan, self.kernels, self.bundle.shared());
        let at = self.reg.stream_scratch;
        let used = self.rq_cached.1;
        #[cfg(feature = "threads")]
        let (p, par, _busy) = {
            let r = self.reg;
            let pool = self.pool.as_ref();
            (
                parts(self.arena, r),
                par::Par::pool(pool),
                pool.map(par::Pool::busy),
            )
        };
        #[cfg(not(feature = "threads"))]
        let (p, par) = (self.parts(), par::Par::serial());
        // Streamed experts' buffers first, the cached tables after them.
        let (scratch, cache) = p.scratch.split_at_mut(at.min(p.scratch.len()));
        let cached = &cache[..used.min(cache.len())];
        let rq = ops::RqCache {
            words: bytemuck::try_cast_slice(cached).map_err(|_| EngineError::Misaligned)?,
            table: kern.requant_table,
        };
        let mut cx = Ctx {
            act: p.act,
            table: p.table,
            weights: p.weights,
            scratch,
            requant: p.requant,
            m: &m,
            shared,
            dept: &dept,
            plan,
            kern,
            int8: m.precision == Precision::Int8,
            wofs: 0,
            cursor: DeltaCursor::new(dept.manifest.deltas),
            observe,
            rq,
            par,
        };
        load_input(&mut cx, input)?;
        hook.done(m.ops.len());
        let (mut fused, mut fused_dw) = (0, 0);
        // The output of the op just run where it was a concat: a conv that reads it keeps
        // its requantisation table at the requant region's end, where it goes when it runs
        // in the concat's parts (`ops::conv::eval`'s `at_end`).
        let mut after_cat: Option<u16> = None;
        let mut all = m.ops.iter().enumerate().peekable();
        while let Some((i, op)) = all.next() {
            match op {
                Op::Conv { .. } | Op::DwConv { .. } => {
                    // An int8 depthwise conv goes with the pointwise conv that reads it: with
                    // threads it runs in that conv's parts (`Par::dw_conv_i8`), their
                    // requantisation tables side by side in the requant region for any
                    // thread count. Split across threads, the concat after a conv runs in
                    // its parts.
                    let (j, conv, pre) = match op {
                        Op::DwConv { output, .. } => {
                            let read = |n: &Op| matches!(n, Op::Conv { input, .. } if input.value == output);
                            let fuse = cx.int8 && all.peek().is_some_and(|n| read(&n.1));
                            let Some((j, conv)) = all.next_if(|_| fuse) else {
                                ops::dwconv::eval(&mut cx, i, &op)?;
                                hook.done(i);
                                continue;
                            };
                            (j, conv, Some(ops::dwconv::prepare(&cx, i, &op)?))
                        }
                        _ => (i, op, None),
                    };
                    // With threads the concat after it and the pointwise conv after that go
                    // with it too.
                    let with = cx.par.threaded();
                    let cat_out = match all.peek() {
                        Some((_, Op::ConcatShuffle { output, .. })) if with => Some(*output),
                        _ => None,
                    };
                    // The op after a concat, decoded once: `ahead` stands past the concat with
                    // it peeked, and takes over where it runs in the conv's parts.
                    let mut ahead = cat_out.map(|_| {
                        let mut a = all.clone();
                        a.next();
                        a
                    });
                    let post = ahead.as_mut().and_then(|a| a.peek().copied());
                    let next = all.peek().filter(|_| with).map(|(_, n)| n);
                    let at_end = matches!(conv, Op::Conv { input, .. } if after_cat.take() == Some(input.value));
                    let mut pre_done = || hook.done(i);
                    let pre = pre.as_ref().map(|d| (d, &mut pre_done as &mut dyn FnMut()));
                    let post_op = post.as_ref().map(|(_, n)| n);
                    let f = ops::conv::eval(&mut cx, j, &conv, next, post_op, at_end, pre)?;
                    // Run in the conv's parts, an op's time is the conv's.
                    hook.done(j);
                    if f.pre {
                        (fused, fused_dw) = (fused + 1, fused_dw + 1);
                        hook.done(i);
                    }
                    if f.cat {
                        fused += 1;
                        all.next();
                        hook.done(j + 1);
                    }
                    if let (true, Some(mut a)) = (f.post, ahead) {
                        fused += 1;
                        a.next();
                        all = a;
                        hook.done(j + 2);
                    }
                    after_cat = cat_out.filter(|_| f.cat && !f.post);
                    continue;
                }
                Op::MaxPool { .. } => ops::maxpool::eval(&mut cx, i, &op)?,
                Op::ConcatShuffle { output, .. } => {
                    ops::concat_shuffle::eval(&mut cx, i, &op)?;
                    hook.done(i);
                    after_cat = Some(output);
                    continue;
                }
                Op::PoolHead { .. } => {
                    let n = ops::pool_head::eval(&mut cx, i, &op, logits)?;
                    hook.done(i);
                    #[cfg(feature = "threads")]
                    {
                        (self.fused, self.fused_dw) = (fused, fused_dw);
                    }
                    let _ = (fused, fused_dw);
                    return Ok(n);
                }
            }
            hook.done(i);
        }
        Err(EngineError::Malformed { op: usize::MAX })
    }
}

/// One expert conv's rebuild: its delta, pristine weights and slot (the switch's unit of
/// work; layers are independent).
struct Layer<'a, 'w> {
    op: usize,
    delta: Delta<'a>,
    /// `W0`: int8 codes or f32.
    w0: &'a [u8],
    /// int8: `W0`'s per-channel scales.
    s0: Option<&'a [f32]>,
    /// The slot in the weights region.
    dst: &'w mut [u8],
    /// Bytes of the weights in the slot (int8: its scales follow).
    wlen: usize,
    cout: usize,
    cin: usize,
    kk: usize,
    pad: usize,
    /// Output pixels (whether the packed slot takes it).
    hw: usize,
}

/// `each(layer)` for every expert conv the plan does not stream, in graph order, each with
/// its slot of `weights` (slots are consecutive).
fn expert_layers<'a, 'w>(
    bundle: &Bundle<'a>,
    m: &Manifest<'a>,
    dept: &Dept<'a>,
    plan: &Plan,
    table: &[u8],
    mut weights: &'w mut [u8],
    mut each: impl FnMut(Layer<'a, 'w>) -> R<()>,
) -> R<()> {
    let shared = bundle.shared();
    let int8 = m.precision == Precision::Int8;
    let rank = m.rank as usize;
    let mut cursor = DeltaCursor::new(dept.manifest.deltas);
    for (i, op) in m.ops.iter().enumerate() {
        let Op::Conv {
            input,
            output,
            cout,
            k,
            pad,
            weight,
            wscale,
            expert: Some(e),
            ..
        } = op
        else {
            continue;
        };
        let (cout, kk, cin) = (cout as usize, k as usize, input.c_len as usize);
        let bad = EngineError::Malformed { op: i };
        let v = ops::value(table, output, i)?;
        let hw = v.h as usize * v.w as usize;
        if plan.streams(i, cout, cin, kk, hw) {
            continue;
        }
        let (wlen, slot) = layout::expert_slot(cout, cin, kk, int8).ok_or(bad)?;
        let dref = cursor.get(e as usize).ok_or(EngineError::DeptMismatch)?;
        let delta = Delta::new(
            dept.payload,
            dref,
            dept.manifest.delta_dtype,
            cout,
            cin,
            kk,
            rank,
        )
        .ok_or(EngineError::DeptMismatch)?;
        let w0 = tensor(shared, weight, i)?;
        let s0 = if int8 {
            Some(expect_len(f32s(tensor(shared, wscale, i)?)?, cout, i)?)
        } else {
            None
        };
        if weights.len() < slot {
            return Err(bad);
        }
        let (dst, rest) = core::mem::take(&mut weights).split_at_mut(slot);
        weights = rest;
        each(Layer {
            op: i,
            delta,
            w0,
            s0,
            dst,
            wlen,
            cout,
            cin,
            kk,
            pad: pad as usize,
            hw,
        })?;
    }
    Ok(())
}

/// Rebuilds one expert conv into its slot, with `scratch` for the decoded factors. A
/// pointwise expert is then laid out once for the table's tiles (`ops::conv` reads it with
/// the packed slot), not at every inference.
fn rebuild_layer(
    kernels: &Kernels,
    mode: Mode,
    pack_i8: bool,
    l: Layer<'_, '_>,
    scratch: &mut [u8],
) -> R<()> {
    let (i, cout, cin, kk) = (l.op, l.cout, l.cin, l.kk);
    let bad = EngineError::Malformed { op: i };
    // Fits: `expert_slot` multiplied it checked.
    let n = cout * cin * kk * kk;
    // Decode both factors once; the rebuild then runs on contiguous f32.
    let (delta, scratch) = ops::conv::decode(kernels, &l.delta, scratch, i)?;
    let packed = |min_pixels| ops::conv::packed(mode, kk, l.pad, l.hw, min_pixels);
    match l.s0 {
        Some(s0) => {
            let (dw, ds) = l.dst.split_at_mut(l.wlen);
            if scratch.len() < delta.channel_len() {
                return Err(bad);
            }
            let ds = &mut f32s_mut(ds)?[..cout];
            let out = &mut i8s_mut(dw)[..n];
            let w0 = expect_len(i8s(l.w0), n, i)?;
            switch::materialize_i8_with(kernels, w0, s0, &delta, scratch, out, ds);
            match kernels.conv1x1_i8_packed {
                Some(p) if pack_i8 && packed(p.min_pixels) => (p.pack)(cout, cin, out),
                _ => {}
            }
        }
        None => {
            let out = &mut f32s_mut(l.dst)?[..n];
            (kernels.materialize_f32)(expect_len(f32s(l.w0)?, n, i)?, &delta, out);
            match kernels.conv1x1_f32_packed {
                Some(p) if packed(p.min_pixels) => (p.pack)(cout, cin, out),
                _ => {}
            }
        }
    }
    Ok(())
}

/// The dispatch loop's per-op hook: `done(slot)` right after op `slot` (or, for
/// `ops.len()`, the input) finished. `()` does nothing and compiles away.
trait OpHook {
    fn done(&mut self, slot: usize);
}

impl OpHook for () {
    #[inline(always)]
    fn done(&mut self, _: usize) {}
}

/// [`Engine::infer_timed`]'s hook: the clock's advance since the previous boundary.
struct Ticks<'t, F> {
    now: F,
    last: u64,
    ticks: &'t mut [u64],
}

impl<F: FnMut() -> u64> OpHook for Ticks<'_, F> {
    #[inline]
    fn done(&mut self, slot: usize) {
        let t = (self.now)();
        if let Some(v) = self.ticks.get_mut(slot) {
            *v = v.wrapping_add(t.wrapping_sub(self.last));
        }
        self.last = t;
    }
}

/// The input (CHW f32) into value 0 (NHWC), quantised with value 0's parameters for int8;
/// f32 inputs are observed as value 0.
fn load_input(cx: &mut Ctx<'_, '_>, input: &[f32]) -> R<()> {
    let bad = EngineError::Malformed { op: usize::MAX };
    let v0 = cx.value(0, usize::MAX)?;
    let (c, hw) = (v0.c as usize, v0.h as usize * v0.w as usize);
    let expected = c * hw;
    if input.len() != expected {
        return Err(EngineError::InputSize {
            expected,
            got: input.len(),
        });
    }
    let r = cx.range(&v0, usize::MAX)?;
    if cx.int8 {
        let q = cx.qparams(0, usize::MAX)?;
        let x = i8s_mut(cx.act.get_mut(r).ok_or(bad)?);
        if c == 3 {
            // RGB: pixel runs across the pool (a few operations a value).
            let x = x.get_mut(..3 * hw).ok_or(bad)?;
            let planes: [&[f32]; 3] = core::array::from_fn(|ch| &input[ch * hw..][..hw]);
            let kern = cx.kern.quantize_rgb_i8;
            cx.par.rows(x, 3, 4 * x.len(), |p0, x| {
                let m = x.len() / 3;
                let planes = planes.map(|p| &p[p0..p0 + m]);
                match kern {
                    Some(f) => f(planes, q, x),
                    None => quantize_planes_n(planes, q, x),
                }
            });
        } else {
            quantize_planes(input, q, c, hw, x);
        }
    } else {
        let x = f32s_mut(cx.act.get_mut(r).ok_or(bad)?)?;
        let x = x.get_mut(..c * hw).ok_or(bad)?;
        cx.par.rows(x, c, x.len(), |p0, x| {
            if c == 3 {
                // RGB: the three planes zipped into whole pixels (no index per value).
                let m = x.len() / 3;
                let [r, g, b]: [&[f32]; 3] = core::array::from_fn(|ch| &input[ch * hw + p0..][..m]);
                let px = x.as_chunks_mut::<3>().0;
                for (p, ((&r, &g), &b)) in px.iter_mut().zip(r.iter().zip(g).zip(b)) {
                    *p = [r, g, b];
                }
                return;
            }
            for (pix, px) in x.chunks_exact_mut(c).enumerate() {
                for (ch, v) in px.iter_mut().enumerate() {
                    *v = input[ch * hw + p0 + pix];
                }
            }
        });
        (cx.observe)(0, x);
    }
    Ok(())
}

/// The engine's int8 input step on its own: `x[pix·c + ch] = q.quantize(input[ch·hw +
/// pix])` for a CHW `input` of `c` planes of `hw` values into NHWC `x` (the same bytes as
/// `QParams::quantize` element by element; the firmware's self-checks run it on the board,
/// whose form differs). `false` (nothing written) unless `input.len() = c·hw ≤ x.len()`.
pub fn quantize_chw(
    input: &[f32],
    q: crate::quant::QParams,
    c: usize,
    hw: usize,
    x: &mut [i8],
) -> bool {
    let fits = c
        .checked_mul(hw)
        .is_some_and(|n| n == input.len() && n <= x.len());
    if fits {
        quantize_planes(input, q, c, hw, &mut x[..input.len()]);
    }
    fits
}

/// `x[pix·c + ch] = q.quantize(input[ch·hw + pix])`: each CHW input plane quantised in
/// order, in vector-friendly runs (`switch::quantize_row`, the same bytes), written at
/// stride `c` into the NHWC activation. Three channels (RGB images) go through
/// [`quantize_planes_n`].
fn quantize_planes(input: &[f32], q: crate::quant::QParams, c: usize, hw: usize, x: &mut [i8]) {
    if c == 3 {
        let planes: [&[f32]; 3] = core::array::from_fn(|ch| &input[ch * hw..][..hw]);
        return quantize_planes_n(planes, q, &mut x[..3 * hw]);
    }
    const RUN: usize = 256;
    let mut run = [0i8; RUN];
    for (ch, plane) in input.chunks_exact(hw.max(1)).enumerate() {
        for (k, part) in plane.chunks(RUN).enumerate() {
            let run = &mut run[..part.len()];
            crate::switch::quantize_row(q, false, part, run);
            // Pixel by pixel (a `step_by` iterator cost more than the quantising).
            for (px, &b) in x[k * RUN * c..].chunks_exact_mut(c).zip(run.iter()) {
                if let Some(v) = px.get_mut(ch) {
                    *v = b;
                }
            }
        }
    }
}

/// [`quantize_planes`] for `C` channels, the pixels of `x` (`[i8; C]` each, so the
/// stride-`C` stores carry no index checks) from the `C` planes. 32-bit Arm quantises each
/// value straight into its pixel (`switch::quantize_vcvt_with`, no vectors to batch for);
/// elsewhere each plane's run is quantised as a row first (`switch::quantize_row`,
/// vectorised).
fn quantize_planes_n<const C: usize>(planes: [&[f32]; C], q: crate::quant::QParams, x: &mut [i8]) {
    let px = x.as_chunks_mut::<C>().0;
    if cfg!(target_arch = "arm") {
        // Input zero points are bytes: the form without the clamp of `|t|`, tested once.
        let near = crate::switch::near_zero_point(q);
        for (ch, plane) in planes.iter().enumerate() {
            for (p, &v) in px.iter_mut().zip(plane.iter()) {
                p[ch] = if near {
                    crate::switch::quantize_vcvt_with::<false>(q, v)
                } else {
                    crate::switch::quantize_vcvt(q, v)
                };
            }
        }
        return;
    }
    const RUN: usize = 256;
    let mut runs = [[0i8; RUN]; C];
    for (k, pxs) in px.chunks_mut(RUN).enumerate() {
        let m = pxs.len();
        for (run, plane) in runs.iter_mut().zip(&planes) {
            crate::switch::quantize_row(q, false, &plane[k * RUN..][..m], &mut run[..m]);
        }
        // Whole pixels from the runs.
        #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
        if C == 3 {
            interleave3_neon(
                [&runs[0][..m], &runs[1][..m], &runs[2][..m]],
                pxs.as_flattened_mut(),
            );
            continue;
        }
        for (i, p) in pxs.iter_mut().enumerate() {
            *p = core::array::from_fn(|ch| runs[ch][i]);
        }
    }
}

/// `out[3i + ch] = r[ch][i]` for the `out.len() / 3` pixels, 16 a step with one `ST3` (LLVM
/// emits byte loads and stores for the portable loop: 8 instructions a pixel).
#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
#[allow(unsafe_code)]
fn interleave3_neon(r: [&[i8]; 3], out: &mut [i8]) {
    use core::arch::aarch64::*;
    let m = out.len() / 3;
    let r = r.map(|r| &r[..m]);
    let mut i = 0;
    while i + 16 <= m {
        // SAFETY: NEON is baseline on this target (the fn is cfg'd on it); `i + 16 ≤ m`
        // bytes of each run, and `out` holds `3m ≥ 3i + 48` bytes.
        unsafe {
            let v = int8x16x3_t(
                vld1q_s8(r[0].as_ptr().add(i)),
                vld1q_s8(r[1].as_ptr().add(i)),
                vld1q_s8(r[2].as_ptr().add(i)),
            );
            vst3q_s8(out.as_mut_ptr().add(3 * i), v);
        }
        i += 16;
    }
    for (k, p) in out[3 * i..3 * m].chunks_exact_mut(3).enumerate() {
        p.copy_from_slice(&[r[0][i + k], r[1][i + k], r[2][i + k]]);
    }
}

#[cfg(test)]
mod tests {
    use super::testnet::{NetSpec, TestNet};
    use super::*;
    use crate::format::Bundle;

    /// The int8 input is `QParams::quantize` of every element, transposed CHW → NHWC, for
    /// plane sizes below, at and across the quantiser's runs. Seed: `LORKD_SEED`.
    #[test]
    fn input_planes_quantise_element_by_element() {
        let mut r = testnet::Rng::new(crate::test_seed());
        for case in 0..60 {
            let c = 1 + r.next_u64() as usize % 6;
            let hw = [1, 7, 255, 256, 257, 600][case % 6];
            let q = crate::quant::QParams {
                scale: 0.001 + (r.next_u64() % 1000) as f32 / 10_000.0,
                zero_point: (r.next_u64() % 256) as i32 - 128,
            };
            let input: std::vec::Vec<f32> = (0..c * hw)
                .map(|_| ((r.next_u64() % 20_001) as f32 - 10_000.0) / 2_000.0)
                .collect();
            let mut x = std::vec![0i8; c * hw];
            quantize_planes(&input, q, c, hw, &mut x);
            for pix in 0..hw {
                for ch in 0..c {
                    assert_eq!(
                        x[pix * c + ch],
                        q.quantize(input[ch * hw + pix]),
                        "case {case}: c {c} hw {hw} pixel {pix} channel {ch}"
                    );
                }
            }
        }
    }

    /// The Materialized pointwise experts laid out for the table's packed convs at `select`
    /// (f32 and int8) give the logits of the same table with rows (`conv1x1_f32_packed`,
    /// `conv1x1_i8_packed: None`), bit for bit; `set_kernels` drops the department (its
    /// layout was the old table's).
    #[test]
    fn packed_experts_are_the_row_experts() {
        let seed = crate::test_seed();
        let best = Kernels::best();
        if best.conv1x1_f32_packed.is_none() && best.conv1x1_i8_packed.is_none() {
            std::println!("skipped: {best:?} has no packed pointwise conv");
            return;
        }
        let rows = Kernels {
            conv1x1_f32_packed: None,
            conv1x1_i8_packed: None,
            ..best
        };
        // Pointwise convs of 18, 36 and 40 channels: whole panels / blocks and short tails.
        let spec = NetSpec {
            cb: 18,
            features: 40,
            ..NetSpec::small()
        };
        let net = TestNet::random(spec, seed);
        let ranges: std::vec::Vec<std::vec::Vec<(f32, f32)>> = (0..spec.classes.len())
            .map(|_| net.values.iter().map(|_| (-4.0, 4.0)).collect())
            .collect();
        for bytes in [net.bundle_f32(), net.bundle_int8(&ranges)] {
            let bytes = AlignedBytes::new(&bytes);
            let b = Bundle::parse(bytes.as_slice()).unwrap();
            for mode in [Mode::Materialized, Mode::Auto] {
                let mut a = AlignedBytes::zeroed(b.arena_bytes(mode));
                let mut e = Engine::new(&b, a.as_mut_slice(), mode).unwrap();
                for (t, x) in net.inputs(b.department_count(), seed).iter().enumerate() {
                    let mut logits = [[0.0f32; 16]; 2];
                    for (k, table) in [best, rows].into_iter().enumerate() {
                        e.select(t).unwrap();
                        e.set_kernels(table);
                        assert!(matches!(
                            e.infer(x, &mut logits[k]),
                            Err(EngineError::NoDepartment)
                        ));
                        e.select(t).unwrap();
                        e.infer(x, &mut logits[k]).unwrap();
                    }
                    let bits = |l: &[f32; 16]| l.map(f32::to_bits);
                    assert_eq!(
                        bits(&logits[0]),
                        bits(&logits[1]),
                        "{:?} {mode:?} department {t}",
                        b.manifest().precision
                    );
                }
            }
        }
    }

    /// The requantisation tables `select` caches in the scratch region give the logits of
    /// tables computed per op, bit for bit: with every table cached, with only those that
    /// fit smaller rooms (1/24 to 23/24 of the rows: some ops left to compute per
    /// inference), and with none — in Materialized mode, in Auto (where streamed experts use
    /// the scratch's start) and in Streaming (whose room is only the bytes above its busy
    /// scratch). Every walk keeps whole rows while they fit; past that the Materialized and
    /// Streaming walks pack tables (8-byte rows; Materialized's rebuilt experts 4 bytes
    /// here, the multipliers over their scales), the Auto walk none.
    #[test]
    fn cached_requant_tables_match_per_op_tables() {
        let seed = crate::test_seed();
        let small = NetSpec {
            size: 24,
            ..NetSpec::small()
        };
        // Few pixels at the wide last conv: the auto plan streams it.
        let mixed = NetSpec {
            size: 16,
            cb: 64,
            features: 256,
            ..NetSpec::small()
        };
        for (mode, spec, squeeze) in [
            (Mode::Materialized, small, false),
            (Mode::Auto, mixed, false),
            (Mode::Materialized, small, true),
            (Mode::Streaming, mixed, false),
            (Mode::Streaming, mixed, true),
        ] {
            cached_tables_case(mode, TestNet::random(spec, seed), seed, squeeze);
        }
    }

    /// `squeeze`: every other value's calibrated range narrowed 1000× (multipliers above
    /// one, so shifts above zero: tables that stay whole in the cache beside packed ones).
    fn cached_tables_case(mode: Mode, net: TestNet, seed: u64, squeeze: bool) {
        let qbytes = AlignedBytes::new(&calibrated_int8(&net, seed, squeeze));
        let qb = Bundle::parse(qbytes.as_slice()).unwrap();
        let mut arena = AlignedBytes::zeroed(qb.arena_bytes(mode));
        let mut e = Engine::new(&qb, arena.as_mut_slice(), mode).unwrap();
        if mode == Mode::Materialized {
            assert_eq!(e.reg.stream_scratch, 0);
        } else if e.reg.stream_scratch == 0 {
            // aarch64 prices streaming 8×: this small net streams nothing there.
            std::println!(
                "SKIPPED the streamed-scratch part: this target's plan streams nothing here"
            );
        }
        let tests = net.inputs(6, seed ^ 2);
        // Which kinds of entry the walk wrote.
        let kinds = |e: &mut Engine<'_, '_>| {
            let mut k = [0usize; 3];
            for (_, _, kind) in cache_entries(e) {
                k[kind as usize] += 1;
            }
            k
        };
        for t in 0..qb.department_count() {
            e.select(t).unwrap();
            let (room, used) = e.rq_cached;
            assert!(used > 0 && used <= room, "({room}, {used})");
            // The whole room: whole rows first, while they fit.
            let full = kinds(&mut e);
            assert!(full[0] > 0, "no whole table: {full:?}");
            if mode == Mode::Auto {
                assert_eq!(full[1..], [0, 0], "Auto packs none: {full:?}");
            }
            let logits = |e: &mut Engine<'_, '_>| logit_bits(e, &tests);
            let cached = logits(&mut e);
            // Smaller rooms: the walk caches the first ops whole, then (not Auto) packs an
            // op where whole rows no longer fit, skips others. Each walk follows a rebuild,
            // as at `select`: split entries wrote their multipliers over the slots' scales,
            // which the walk (and inference without a cache) reads.
            let m = *qb.manifest();
            let dept = e.dept.unwrap();
            let (mut seen, mut partials) = ([0usize; 3], std::vec::Vec::new());
            for k in 1..24 {
                e.rebuild_and_cache(&m, &dept, used * k / 24).unwrap();
                let c = e.rq_cached;
                assert!(c.1 <= c.0 && c.1 < used, "{c:?} of {used}");
                let n = kinds(&mut e);
                seen.iter_mut().zip(n).for_each(|(s, n)| *s += n);
                partials.push(logits(&mut e));
            }
            match mode {
                Mode::Auto => assert_eq!(seen[1..], [0, 0], "Auto packs none: {seen:?}"),
                // Streaming rebuilds no expert: nothing to split.
                Mode::Streaming => assert_eq!(seen[2], 0, "{seen:?}"),
                Mode::Materialized => assert!(seen[2] > 0, "no split table: {seen:?}"),
            }
            if mode != Mode::Auto {
                assert!(seen[1] > 0, "no packed table: {seen:?}");
            }
            e.rebuild_and_cache(&m, &dept, 0).unwrap();
            assert_eq!(e.rq_cached, (0, 0));
            let uncached = logits(&mut e);
            assert_eq!(cached, uncached, "department {t}");
            for (k, partial) in partials.iter().enumerate() {
                assert_eq!(partial, &uncached, "department {t}, room {}/24", k + 1);
            }
        }
    }

    /// Every logit `e` gives on `xs`, as bits.
    fn logit_bits(e: &mut Engine<'_, '_>, xs: &[std::vec::Vec<f32>]) -> std::vec::Vec<u32> {
        let mut out = std::vec::Vec::new();
        for x in xs {
            let mut l = [0.0f32; 16];
            let k = e.infer(x, &mut l).unwrap();
            out.extend(l[..k].iter().map(|v| v.to_bits()));
        }
        out
    }

    /// The requantisation cache's entries as `(op word, rows, kind)`, walked by their
    /// `[op, rows << 2 | kind]` headers (a header and rows of 3, 2 or 1 words by kind); the
    /// walk must end where the cache's used bytes do.
    fn cache_entries(e: &mut Engine<'_, '_>) -> std::vec::Vec<(u32, usize, u32)> {
        let (at, used) = (e.reg.stream_scratch, e.rq_cached.1);
        let words: std::vec::Vec<u32> =
            bytemuck::cast_slice(&e.parts().scratch[at..][..used]).to_vec();
        let (mut out, mut w) = (std::vec::Vec::new(), 0);
        while w < words.len() {
            let (op, n, kind) = (words[w], (words[w + 1] >> 2) as usize, words[w + 1] & 3);
            out.push((op, n, kind));
            w += 2 + n * [3, 2, 1][kind as usize];
        }
        assert_eq!(w, words.len(), "the entries overrun the cache's used bytes");
        out
    }

    /// An int8 bundle of `net` calibrated per department on a few of its images (`squeeze`:
    /// every other value's range narrowed 1000×).
    fn calibrated_int8(net: &TestNet, seed: u64, squeeze: bool) -> std::vec::Vec<u8> {
        let fbytes = AlignedBytes::new(&net.bundle_f32());
        let fb = Bundle::parse(fbytes.as_slice()).unwrap();
        let n = fb.manifest().values.len();
        // Calibration: per-department (min, max) of every value over a few images.
        let calib = net.inputs(8, seed ^ 1);
        let mut af = AlignedBytes::zeroed(fb.arena_bytes(Mode::Materialized));
        let mut ef = Engine::new(&fb, af.as_mut_slice(), Mode::Materialized).unwrap();
        let mut ranges = std::vec::Vec::new();
        for t in 0..fb.department_count() {
            ef.select(t).unwrap();
            let mut r = std::vec![(f32::MAX, f32::MIN); n];
            let mut logits = [0.0; 16];
            for x in &calib {
                ef.infer_observe(x, &mut logits, |v, d| {
                    for &z in d {
                        r[v] = (r[v].0.min(z), r[v].1.max(z));
                    }
                })
                .unwrap();
            }
            if squeeze {
                for (lo, hi) in r.iter_mut().skip(1).step_by(2) {
                    (*lo, *hi) = (*lo / 1000.0, *hi / 1000.0);
                }
            }
            ranges.push(r);
        }
        net.bundle_int8(&ranges)
    }

    /// The Materialized, Auto and Streaming int8 engines with the zero-point fold forced on
    /// (`FOLD_ZX`: aarch64's default) give the logits of the same table without it, bit for
    /// bit, on every table this CPU runs (packed and row pointwise convs, cache full, half
    /// and empty); the walk marks folded entries, pointwise ones only.
    #[test]
    fn folded_zero_points_keep_the_logits() {
        let seed = crate::test_seed();
        let mixed = NetSpec {
            size: 16,
            cb: 20,
            features: 72,
            ..NetSpec::small()
        };
        let net = TestNet::random(mixed, seed);
        let qbytes = AlignedBytes::new(&calibrated_int8(&net, seed, false));
        let qb = Bundle::parse(qbytes.as_slice()).unwrap();
        let tests = net.inputs(3, seed ^ 2);
        let logits = |e: &mut Engine<'_, '_>| logit_bits(e, &tests);
        let mut folded_ops = 0;
        for mode in [Mode::Materialized, Mode::Auto, Mode::Streaming] {
            let mut arena = AlignedBytes::zeroed(qb.arena_bytes(mode));
            let mut e = Engine::new(&qb, arena.as_mut_slice(), mode).unwrap();
            for table in Kernels::available().into_iter().flatten() {
                let rows = Kernels {
                    conv1x1_i8_packed: None,
                    ..table
                };
                for k in [table, rows] {
                    e.set_kernels(k);
                    for t in 0..qb.department_count() {
                        e.fold_zx = false;
                        e.select(t).unwrap();
                        let want = logits(&mut e);
                        e.fold_zx = true;
                        e.select(t).unwrap();
                        let (_, used) = e.rq_cached;
                        for (op, _, _) in cache_entries(&mut e) {
                            if op & ops::FOLDED != 0 {
                                folded_ops += 1;
                                let i = (op & !ops::FOLDED) as usize;
                                assert!(
                                    matches!(
                                        qb.manifest().ops.get(i),
                                        Some(Op::Conv { k: 1, pad: 0, .. })
                                    ),
                                    "op {i} folded"
                                );
                            }
                        }
                        assert_eq!(logits(&mut e), want, "{k:?} {mode:?} department {t}");
                        // Half the room, then none: the ops left out compute theirs per
                        // inference with the zero point as it is.
                        let (m, dept) = (*qb.manifest(), e.dept.unwrap());
                        e.rebuild_and_cache(&m, &dept, used / 8 * 4).unwrap();
                        assert_eq!(logits(&mut e), want, "{k:?} {mode:?} half, department {t}");
                        e.rebuild_and_cache(&m, &dept, 0).unwrap();
                        assert_eq!(logits(&mut e), want, "{k:?} {mode:?} none, department {t}");
                    }
                }
            }
        }
        assert!(folded_ops > 0);
    }
}
