//! The engine's worker threads (feature `threads`): one fork-join per split op, with workers
//! that **spin** between the ops of an inference and **claim** the op's chunks.
//!
//! An inference is a chain of ~50–75 ops, each a few tens of µs at 224 px, each needing every
//! chunk done before the next op reads it. A worker that sleeps between ops pays an OS wake-up
//! per op (on a VM an inter-processor interrupt, ~50–100 µs: a general pool parks its idle
//! workers and made `--threads 2` slower than one thread). Here a worker that finished spins
//! for the next job, up to [`SPIN`], and only then parks on a condition variable;
//! [`Pool::rest`] (the end of an inference) shortens that to [`LINGER`] after the worker's
//! last job, and [`Pool::wake`] (an inference's start) gets parked workers spinning before
//! the first split op. The linger is for back-to-back inferences (a cart's frame loop, a
//! benchmark): a worker parked at every inference's end paid a wake-up (tens of µs on a VM)
//! at the next one's start, a fifth of a 0.5x @64 inference, while the caller ran the first
//! ops alone.
//!
//! Each thread owns a contiguous **region** of a job's chunks (the caller the first, worker
//! `i` the `i`-th) and takes its own first, then steals what is left of the others', so a
//! core that is late (descheduled, busy with another process) takes fewer and nobody waits
//! for it: the caller waits only for the chunks that were taken, never for a worker that
//! did not join. The regions are for **locality**: consecutive ops cut the same image at
//! about the same pixels, so each thread reads back the part it wrote, from its own cache.
//! With one shared counter a chunk went to whichever thread came first and about half of
//! every op's input crossed between cores (BENCHMARKS.md, session 43: the 1.0x @224
//! pointwise convs at 2 threads 1.46× before, 1.55× after; the op alone splits at ~1.8×).
//!
//! The regions can be **balanced by measurement** ([`Pool::set_balanced`], off by default):
//! a job the pool cuts is then cut in shares learned for that job of the inference (its
//! ordinal since [`Pool::begin`]: the same op each inference), from the threads' own chunks
//! timed (in one inference in [`SAMPLE`]), so that their chunks take equal time — for
//! cores of unequal speed (a big.LITTLE cart's; on the 2-vCPU benchmark host one vCPU ran
//! a VNNI loop 17–25 % slower than the other at times) and parts of unequal cost. It is not
//! the default because each op's cut then falls at its own rows, and what a thread wrote
//! and the next op's part reads drift apart: on the benchmark host (1.0x @224 int8, 2
//! threads, BENCHMARKS.md session 53) it won ~1 % while the vCPUs exchanged data quickly
//! and lost ~3 % while they did not (a cache line's round trip ~0.4 µs), against even cuts
//! in the same runs. The cut decides only who computes what, never a result.
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a worker spins for the next job before it parks.
const SPIN: Duration = Duration::from_millis(2);
/// How long a worker spins after its last job once the pool rests (between inferences).
const LINGER: Duration = Duration::from_micros(500);

/// One job: `f(i)` for chunks `i < chunks`, each taken by whichever thread comes first.
struct Job<'a> {
    f: &'a (dyn Fn(usize) + Sync),
    chunks: usize,
    /// The threads time their own chunks ([`Pool::cut`]'s shares learn from this job).
    timed: bool,
}

/// The state the threads share, laid out by who writes it when (a line that one core writes
/// while another reads it in a loop moves between their caches on every write, ~0.15 µs on
/// the benchmark host; with every field on one or two lines and each store sequentially
/// consistent, the caller spent ~1.1 µs of each job publishing it, before its own part):
/// - [`Publish`], the line the workers spin on: the caller writes it once a job;
/// - `active`, written by the workers, read by the caller only when it closes a job;
/// - [`Caller`], the caller's alone but for a worker's panic;
/// - [`Park`], written only where an inference starts or ends.
struct Shared {
    publish: Publish,
    active: Line<AtomicUsize>,
    caller: Caller,
    park: Park,
    /// Per thread (the caller 0, worker `i` `i`), the next chunk of its region.
    next: Box<[Line<AtomicUsize>]>,
    /// Per thread, the nanoseconds its own region's chunk took in the current job (where the
    /// region is one chunk; 0: not run by it, or not timed).
    took: Box<[Line<AtomicU64>]>,
    lock: Mutex<()>,
    cv: Condvar,
}

/// What a worker reads to join a job, on one line: a spinning worker's one miss brings all.
#[repr(align(64))]
struct Publish {
    /// Bumped once per job (and to stop the workers): a worker joins each job once.
    epoch: AtomicU64,
    /// The current job; read only by a worker counted in `active` while `open`.
    job: AtomicPtr<Job<'static>>,
    /// The current job takes workers: set when published, cleared once every chunk is
    /// taken; a worker that comes later leaves without reading the job.
    open: AtomicBool,
}

#[repr(align(64))]
struct Caller {
    /// A job is in flight: `run` is not re-entrant (nor callable from two threads at once,
    /// which the protocol below does not support), and says so instead of racing.
    busy: AtomicBool,
    /// A worker's chunk panicked (reported by the caller of [`Pool::run`]).
    panicked: AtomicBool,
}

#[repr(align(64))]
struct Park {
    /// Bumped by [`Pool::wake`]: parked workers go back to spinning.
    wakes: AtomicU64,
    /// Park instead of spinning (between inferences).
    resting: AtomicBool,
    quit: AtomicBool,
    /// Workers parked (or about to park) on `cv`.
    sleepers: AtomicUsize,
}

/// A value alone on its cache line.
#[repr(align(64))]
struct Line<T>(T);

impl<T> core::ops::Deref for Line<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// Thread `r`'s region of a job of `chunks` chunks among `threads`: contiguous, sizes
/// differing by at most one, the larger ones first (with fewer chunks than threads the
/// caller, thread 0, still has one, and the last workers none). Also `par::split`'s cut.
pub(super) fn region(chunks: usize, threads: usize, r: usize) -> core::ops::Range<usize> {
    let (q, rem) = (chunks / threads, chunks % threads);
    let at = |r: usize| r * q + r.min(rem);
    at(r)..at(r + 1)
}

/// `threads − 1` spinning workers beside the calling thread.
pub(crate) struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// The learned shares (only the calling thread uses them; the lock is never contended).
    balance: Mutex<Balance>,
}

/// How far a job's shares move toward the shares its measured speeds ask for, per timed
/// job: a chunk's time varies ±10 % from one inference to the next on a shared host (a
/// step's jitter ~1 % of the cut), and an eighth follows a host's change of pace within ~20
/// timed inferences (1/32 measured the same on a steady host).
const STEP: f32 = 0.125;
/// Jobs are timed in one inference (or switch) in this many: two clock reads a chunk cost
/// ~0.1 µs (about 0.5 % of a 1.0x @224 inference at 2 threads, were each timed).
const SAMPLE: usize = 4;
/// No thread's share falls below this fraction of an even one (a thread descheduled for a
/// while keeps a part to be measured by).
const FLOOR: f32 = 0.25;

/// [`Pool::cut`]'s state.
#[derive(Default)]
struct Balance {
    /// The next job's ordinal since [`Pool::begin`].
    ordinal: usize,
    /// [`Pool::begin`]s so far; the jobs of one in [`SAMPLE`] are timed.
    begun: usize,
    /// Cuts follow learned shares ([`Pool::set_balanced`]); otherwise even, nothing learned.
    learn: bool,
    /// Per ordinal, each thread's share of the job's units (summing to 1; empty: not yet cut).
    shares: Vec<Vec<f32>>,
    /// The last cut handed out: its ordinal and each chunk's units.
    pending: Option<(usize, super::par::Parts<usize>)>,
}

impl Balance {
    /// Moves job `ord`'s shares toward the threads' speeds (`units[r] / ns[r]`).
    fn learn(&mut self, ord: usize, units: &[usize], ns: &[u64]) {
        let Some(sh) = self.shares.get_mut(ord) else {
            return;
        };
        let speed: Vec<f32> = units
            .iter()
            .zip(ns)
            .map(|(&u, &t)| u as f32 / t.max(1) as f32)
            .collect();
        let total: f32 = speed.iter().sum();
        if sh.len() != speed.len() || !total.is_normal() {
            return;
        }
        let floor = FLOOR / sh.len() as f32;
        for (s, v) in sh.iter_mut().zip(&speed) {
            *s = (*s + STEP * (v / total - *s)).max(floor);
        }
        let sum: f32 = sh.iter().sum();
        sh.iter_mut().for_each(|s| *s /= sum);
    }
}

impl Pool {
    /// A pool of `threads − 1` workers (`threads ≥ 2`).
    pub(crate) fn new(threads: usize) -> std::io::Result<Self> {
        let threads = threads.max(2);
        let shared = Arc::new(Shared {
            publish: Publish {
                epoch: AtomicU64::new(0),
                job: AtomicPtr::new(core::ptr::null_mut()),
                open: AtomicBool::new(false),
            },
            active: Line(AtomicUsize::new(0)),
            caller: Caller {
                busy: AtomicBool::new(false),
                panicked: AtomicBool::new(false),
            },
            park: Park {
                wakes: AtomicU64::new(0),
                resting: AtomicBool::new(true),
                quit: AtomicBool::new(false),
                sleepers: AtomicUsize::new(0),
            },
            next: (0..threads).map(|_| Line(AtomicUsize::new(0))).collect(),
            took: (0..threads).map(|_| Line(AtomicU64::new(0))).collect(),
            lock: Mutex::new(()),
            cv: Condvar::new(),
        });
        let mut pool = Pool {
            shared,
            workers: Vec::new(),
            balance: Mutex::new(Balance::default()),
        };
        for i in 1..threads {
            let s = Arc::clone(&pool.shared);
            let h = std::thread::Builder::new()
                .name(format!("lorkd-engine-{i}"))
                .spawn(move || worker(&s, i))?;
            pool.workers.push(h);
        }
        Ok(pool)
    }

    /// Threads in all (workers and the caller).
    pub(crate) fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Workers spin for jobs from now on (an inference starts).
    pub(crate) fn wake(&self) {
        let s = &*self.shared;
        if s.park.resting.swap(false, SeqCst) {
            s.park.wakes.fetch_add(1, SeqCst);
            self.notify();
        }
    }

    /// An inference (or a switch) starts: job ordinals count from 0 again (and one in
    /// [`SAMPLE`] is timed).
    pub(crate) fn begin(&self) {
        let mut b = self.lock_balance();
        b.ordinal = 0;
        b.begun = b.begun.wrapping_add(1);
    }

    fn lock_balance(&self) -> std::sync::MutexGuard<'_, Balance> {
        self.balance.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next job's `parts` chunks over `units` work units: contiguous ranges covering
    /// `0 .. units` in order. Balanced ([`Pool::set_balanced`]), with a chunk per thread
    /// (and at least a unit each), they follow the shares learned for this job's ordinal
    /// (even at first, sizes within one), and [`Pool::run`] of the next job may time them;
    /// otherwise an even cut, larger first ([`region`]).
    pub(crate) fn cut(
        &self,
        units: usize,
        parts: usize,
    ) -> super::par::Parts<core::ops::Range<usize>> {
        let threads = self.threads();
        let mut b = self.lock_balance();
        if parts != threads || units < parts || !b.learn {
            b.pending = None;
            return (0..parts).map(|r| region(units, parts, r)).collect();
        }
        let ord = b.ordinal;
        if b.shares.len() <= ord {
            b.shares.resize(ord + 1, Vec::new());
        }
        let sh = &mut b.shares[ord];
        if sh.len() != parts {
            *sh = vec![1.0 / parts as f32; parts];
        }
        let mut cuts = super::par::Parts::with_capacity(parts);
        let (mut start, mut acc) = (0, 0.0f32);
        for (r, &s) in sh.iter().enumerate() {
            acc += s;
            let end = if r + 1 == parts {
                units
            } else {
                // Rounded half up, so an even cut of an odd count gives the first the more.
                let at = (acc * units as f32 + 0.5) as usize;
                at.clamp(start + 1, units - (parts - 1 - r))
            };
            cuts.push(start..end);
            start = end;
        }
        b.pending = Some((ord, cuts.iter().map(|c| c.len()).collect()));
        cuts
    }

    /// Whether [`Pool::cut`] follows learned shares or cuts evenly (the default).
    pub(crate) fn set_balanced(&self, on: bool) {
        self.lock_balance().learn = on;
    }

    /// Sets the next job's shares (tests: any cut must give the same results).
    #[cfg(test)]
    pub(crate) fn preset(&self, shares: &[f32]) {
        let mut b = self.lock_balance();
        let ord = b.ordinal;
        if b.shares.len() <= ord {
            b.shares.resize(ord + 1, Vec::new());
        }
        b.shares[ord] = shares.to_vec();
    }

    /// Workers park [`LINGER`] after their last job (an inference ended).
    pub(crate) fn rest(&self) {
        self.shared.park.resting.store(true, SeqCst);
    }

    /// New epoch; unparks sleeping workers.
    fn bump(&self) {
        self.shared.publish.epoch.fetch_add(1, SeqCst);
        self.notify();
    }

    /// Unparks sleeping workers. A worker counts itself a sleeper under the lock and then
    /// re-reads the epoch and `wakes`, so either it sees the caller's change or the caller
    /// sees it here and notifies after it waits.
    fn notify(&self) {
        let s = &*self.shared;
        if s.park.sleepers.load(SeqCst) > 0 {
            let _g = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.cv.notify_all();
        }
    }

    /// `f(i)` for every chunk `i < chunks`, each exactly once, on this thread and whichever
    /// workers join; returns when every chunk is done. A worker's panic is re-raised here.
    pub(crate) fn run(&self, chunks: usize, f: &(dyn Fn(usize) + Sync)) {
        // This job's ordinal, and the cut made for it if [`Pool::cut`] made one, in an
        // inference whose jobs are timed.
        let cut = {
            let mut b = self.lock_balance();
            let ord = b.ordinal;
            b.ordinal += 1;
            let timed = b.begun.is_multiple_of(SAMPLE);
            b.pending
                .take()
                .filter(|(o, units)| timed && *o == ord && units.len() == chunks)
        };
        if chunks <= 1 {
            if chunks == 1 {
                f(0);
            }
            return;
        }
        let s = &*self.shared;
        assert!(!s.caller.busy.swap(true, Acquire), "Pool::run re-entered");
        s.caller.panicked.store(false, Relaxed);
        let job = Job {
            f,
            chunks,
            timed: cut.is_some(),
        };
        // No worker is inside the previous job (`active` was 0 when it returned). Plain
        // stores, published by the epoch's bump (a release): sequentially consistent ones
        // each waited for their line to come back from a worker's cache.
        let threads = s.next.len();
        for (r, next) in s.next.iter().enumerate() {
            next.store(region(chunks, threads, r).start, Relaxed);
            if job.timed {
                s.took[r].store(0, Relaxed);
            }
        }
        s.publish
            .job
            .store(&job as *const Job<'_> as *mut Job<'static>, Relaxed);
        // A worker that sees `open` (acquire) sees this job's pointer.
        s.publish.open.store(true, Release);
        // Published by a plain store (only this thread writes the epoch while a pool runs):
        // a locked add waited for the line to come back from the spinning workers' caches
        // before this thread started its own chunks. Parked workers are woken after those
        // (the caller takes their chunks meanwhile; spinning workers never wait for it).
        let e = s.publish.epoch.load(Relaxed);
        s.publish.epoch.store(e.wrapping_add(1), Release);
        // Closes the job and waits for the workers inside it, even if a chunk here panics:
        // they hold a pointer to `job`.
        struct Close<'s>(&'s Shared);
        impl Drop for Close<'_> {
            fn drop(&mut self) {
                let s = self.0;
                s.publish.open.store(false, SeqCst);
                let (t0, mut spins) = (Instant::now(), 0u32);
                while s.active.load(SeqCst) > 0 {
                    // The clock every 256 spins; past the budget, yield to the late worker.
                    spins = spins.wrapping_add(1);
                    if spins.is_multiple_of(256) && t0.elapsed() > SPIN {
                        std::thread::yield_now();
                    } else {
                        core::hint::spin_loop();
                    }
                }
                s.caller.busy.store(false, Release);
            }
        }
        let close = Close(s);
        take_chunks(s, &job, 0, f);
        // (The fence orders the epoch's store before reading `sleepers`, see `notify`.)
        core::sync::atomic::fence(SeqCst);
        self.notify();
        drop(close);
        if s.caller.panicked.swap(false, SeqCst) {
            panic!("an engine worker thread panicked");
        }
        if let Some((ord, units)) = cut {
            // Every thread ran its own chunk (none was late and had it taken).
            let ns: Vec<u64> = s.took.iter().map(|t| t.load(Relaxed)).collect();
            if ns.iter().all(|&t| t > 0) {
                self.lock_balance().learn(ord, &units, &ns);
            }
        }
    }
}

/// `run(i)` for chunks taken by thread `me`: its own region's, then the others' in turn,
/// until none is left. In a job of a chunk a thread (an inference's ops) only the caller
/// steals: there stealing is for a worker that is late, which the caller, never late,
/// covers, and a worker that probed the others' counters pulled each line from its owner's
/// cache on every job (~0.1 µs a job on the benchmark host) for nothing.
fn take_chunks(s: &Shared, job: &Job<'_>, me: usize, run: impl Fn(usize)) {
    let threads = s.next.len();
    let steal = me == 0 || job.chunks > threads;
    for k in 0..if steal { threads } else { 1 } {
        let r = (me + k) % threads;
        let own = region(job.chunks, threads, r);
        loop {
            let i = s.next[r].fetch_add(1, Relaxed);
            if i >= own.end {
                break;
            }
            // The region's last chunk: no claim needs to say so afterwards.
            let last = i + 1 == own.end;
            if job.timed && k == 0 && own.len() == 1 {
                // The thread's own single chunk: its time for `Pool::cut`'s shares.
                let t0 = Instant::now();
                run(i);
                let ns = u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
                s.took[me].store(ns.max(1), Relaxed);
            } else {
                run(i);
            }
            if last {
                break;
            }
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.park.quit.store(true, SeqCst);
        self.bump();
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
    }
}

/// A worker's loop: wait for a new epoch (spinning, then parked), join its job if it is
/// still open, take chunks until none is left.
fn worker(s: &Shared, me: usize) {
    // Epochs count from 0 at `new`, so a job published before this thread started counts.
    let mut seen = 0;
    loop {
        let mut wakes = s.park.wakes.load(SeqCst);
        let mut t0 = Instant::now();
        let mut spins = 0u32;
        loop {
            if s.publish.epoch.load(Acquire) != seen {
                break;
            }
            // The clock and `wakes` every 256 spins (a `wake` restarts the spin budget).
            spins = spins.wrapping_add(1);
            let tick = spins.is_multiple_of(256);
            if tick {
                let w = s.park.wakes.load(Relaxed);
                if w != wakes {
                    (wakes, t0) = (w, Instant::now());
                }
            }
            // A resting pool lingers (from the last job or wake) before it parks.
            let budget = if s.park.resting.load(Relaxed) {
                LINGER
            } else {
                SPIN
            };
            let park = tick && t0.elapsed() > budget;
            if !park {
                core::hint::spin_loop();
                continue;
            }
            let mut g = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.park.sleepers.fetch_add(1, SeqCst);
            while s.publish.epoch.load(SeqCst) == seen && s.park.wakes.load(SeqCst) == wakes {
                g = s.cv.wait(g).unwrap_or_else(|e| e.into_inner());
            }
            s.park.sleepers.fetch_sub(1, SeqCst);
            drop(g);
            (wakes, t0) = (s.park.wakes.load(SeqCst), Instant::now());
        }
        seen = s.publish.epoch.load(Acquire);
        if s.park.quit.load(SeqCst) {
            return;
        }
        // Counted in before looking at `open`: the caller clears `open` and then waits for
        // `active` to reach 0, so either it waits for us or we see the job closed.
        s.active.fetch_add(1, SeqCst);
        if s.publish.open.load(SeqCst) {
            // SAFETY: `open` is set after `job` is stored and cleared before `run` waits
            // for `active` to reach 0 and returns (freeing the `Job` on its stack, and the
            // closure it borrows), so the job lives until our `fetch_sub` below, after our
            // last use of it.
            #[allow(unsafe_code)]
            let job = unsafe { &*s.publish.job.load(SeqCst) };
            take_chunks(s, job, me, |i| {
                if catch_unwind(AssertUnwindSafe(|| (job.f)(i))).is_err() {
                    s.caller.panicked.store(true, SeqCst);
                }
            });
        }
        s.active.fetch_sub(1, SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every chunk of every job runs exactly once, for more and fewer chunks than threads,
    /// with the workers spinning, parked between jobs, and woken.
    #[test]
    fn every_chunk_runs_once_per_job() {
        for threads in 2..=4 {
            let pool = Pool::new(threads).unwrap();
            assert_eq!(pool.threads(), threads);
            pool.wake();
            let most = 3 * threads;
            let hits: Vec<AtomicUsize> = (0..most).map(|_| AtomicUsize::new(0)).collect();
            for round in 0..3000 {
                let chunks = 1 + round % most;
                pool.run(chunks, &|i| {
                    hits[i].fetch_add(round + 1, SeqCst);
                });
                if round % 700 == 0 {
                    // Parked workers are woken for the next job (or by `wake`).
                    pool.rest();
                    std::thread::sleep(Duration::from_millis(3));
                    if round % 1400 == 0 {
                        pool.wake();
                    }
                }
            }
            for (i, h) in hits.iter().enumerate() {
                let want: usize = (0..3000).filter(|r| i < 1 + r % most).map(|r| r + 1).sum();
                assert_eq!(h.load(SeqCst), want, "chunk {i} at {threads} threads");
            }
        }
    }

    /// The regions cover every chunk once, in order, evenly, the larger first.
    #[test]
    fn regions_cut_a_job_evenly() {
        for threads in 1..=5 {
            for chunks in 0..40 {
                let rs: Vec<_> = (0..threads).map(|r| region(chunks, threads, r)).collect();
                assert_eq!(rs[0].start, 0);
                assert_eq!(rs[threads - 1].end, chunks);
                for w in rs.windows(2) {
                    assert_eq!(w[0].end, w[1].start);
                }
                let (lo, hi) = (chunks / threads, chunks.div_ceil(threads));
                assert!(
                    rs.iter().all(|r| (lo..=hi).contains(&r.len())),
                    "{chunks} {threads}"
                );
                // Larger first: the caller works whenever there is work.
                assert!(rs.windows(2).all(|w| w[0].len() >= w[1].len()));
                assert_eq!(rs[0].is_empty(), chunks == 0);
            }
        }
    }

    /// Each thread works its own region first: the caller runs the first chunks of a job
    /// and the worker the last, job after job (with one shared counter the two interleave,
    /// and the worker took chunk 1). A worker may be descheduled now and then and the caller
    /// take its chunks, so the test asks for most jobs, not all.
    #[test]
    fn the_caller_keeps_its_own_region() {
        let pool = Pool::new(2).unwrap();
        pool.wake();
        let caller = std::thread::current().id();
        let (mut own, jobs) = (0, 200);
        for _ in 0..jobs {
            let ran: Vec<Mutex<Option<std::thread::ThreadId>>> =
                (0..4).map(|_| Mutex::new(None)).collect();
            pool.run(4, &|i| {
                let t0 = Instant::now();
                while t0.elapsed() < Duration::from_micros(20) {
                    core::hint::spin_loop();
                }
                *ran[i].lock().unwrap() = Some(std::thread::current().id());
            });
            let by = |i: usize| ran[i].lock().unwrap().unwrap();
            own += usize::from(by(0) == caller && by(1) == caller);
        }
        assert!(
            2 * own > jobs,
            "the caller ran chunks 0 and 1 in {own} of {jobs} jobs"
        );
    }

    /// A job's shares converge to the threads' speeds, where their chunks take equal time
    /// (a fixed cost per chunk included), and no share falls below the floor.
    #[test]
    fn balance_learns_the_threads_speeds() {
        // ns per unit and per chunk of each thread: thread 0 twice as slow.
        let (per_unit, fixed) = ([2.0f32, 1.0], [300.0f32, 300.0]);
        let mut b = Balance {
            shares: vec![Vec::new(), vec![0.5, 0.5]],
            ..Balance::default()
        };
        let units = 1000usize;
        let mut times = [0.0f32; 2];
        for _ in 0..200 {
            let u0 = (b.shares[1][0] * units as f32).round() as usize;
            let us = [u0, units - u0];
            times = core::array::from_fn(|r| fixed[r] + per_unit[r] * us[r] as f32);
            b.learn(1, &us, &times.map(|t| t as u64));
        }
        let sh = &b.shares[1];
        assert!((sh[0] + sh[1] - 1.0).abs() < 1e-4, "{sh:?}");
        assert!((0.32..0.35).contains(&sh[0]), "{sh:?}");
        assert!((times[0] - times[1]).abs() < 0.02 * times[1], "{times:?}");
        // Jobs it has no shares for, or of another thread count, are left alone; a thread
        // that stalls keeps a floor.
        b.learn(7, &[1, 1], &[1, 1]);
        b.learn(1, &[1, 1, 1], &[1, 1, 1]);
        assert_eq!((b.shares.len(), b.shares[1].len()), (2, 2));
        for _ in 0..200 {
            b.learn(1, &[500, 500], &[1_000_000_000, 1]);
        }
        assert!(b.shares[1][0] >= 0.9 * FLOOR / 2.0, "{:?}", b.shares[1]);
    }

    /// `cut` covers the units in order, a unit at least each, in the job's shares (even at
    /// first, the larger first), and evenly where it does not learn (fewer parts than
    /// threads, or balancing off).
    #[test]
    fn cuts_follow_the_shares() {
        let even = Pool::new(2).unwrap();
        even.begin();
        even.preset(&[0.9, 0.1]);
        assert_eq!(even.cut(10, 2)[..], [0..5, 5..10], "even unless balanced");
        let pool = Pool::new(2).unwrap();
        pool.set_balanced(true);
        pool.begin();
        assert_eq!(pool.cut(7, 2)[..], [0..4, 4..7]);
        pool.run(2, &|_| ());
        pool.preset(&[0.9, 0.1]);
        assert_eq!(pool.cut(10, 2)[..], [0..9, 9..10]);
        pool.run(2, &|_| ());
        pool.preset(&[0.999, 0.001]);
        assert_eq!(pool.cut(3, 2)[..], [0..2, 2..3]);
        pool.run(2, &|_| ());
        let whole = pool.cut(5, 1);
        assert_eq!((whole.len(), whole[0].clone()), (1, 0..5));
        pool.run(1, &|_| ());
        // The next inference's second job is cut in its shares again; off, evenly.
        pool.begin();
        pool.run(2, &|_| ());
        assert_eq!(pool.cut(10, 2)[..], [0..9, 9..10]);
        pool.set_balanced(false);
        assert_eq!(pool.cut(10, 2)[..], [0..5, 5..10]);
        let pool3 = Pool::new(3).unwrap();
        pool3.set_balanced(true);
        pool3.begin();
        assert_eq!(pool3.cut(10, 2)[..], [0..5, 5..10]);
        let c = pool3.cut(11, 3);
        assert_eq!(
            (c[0].start, c[0].end, c[1].end, c[2].end),
            (0, c[1].start, c[2].start, 11)
        );
        assert!(c.iter().all(|r| (3..=4).contains(&r.len())), "{c:?}");
    }

    /// Through `cut` and `run`: where the caller's core does a unit's work at half the
    /// worker's speed, the caller's share of a job moves from a half toward a third.
    #[test]
    fn run_learns_a_slower_core() {
        let pool = Pool::new(2).unwrap();
        pool.set_balanced(true);
        pool.wake();
        let caller = std::thread::current().id();
        let spin = |units: usize, slow: bool| {
            let t0 = Instant::now();
            let ns = units as u128 * if slow { 400 } else { 200 };
            while t0.elapsed().as_nanos() < ns {
                core::hint::spin_loop();
            }
        };
        let share = || pool.lock_balance().shares[0][0];
        // Enough jobs for the worker to run its own chunk in some (it may be descheduled
        // while other tests run) and for the shares to settle.
        for _ in 0..4000 {
            pool.begin();
            let cuts = pool.cut(100, 2);
            pool.run(2, &|i| {
                spin(cuts[i].len(), std::thread::current().id() == caller)
            });
            if share() <= 0.4 {
                break;
            }
        }
        let s = share();
        assert!((0.25..=0.4).contains(&s), "caller's share {s}");
    }

    #[test]
    fn a_part_borrows_the_callers_stack() {
        let pool = Pool::new(3).unwrap();
        let mut out = [0u64; 3];
        for k in 0..100u64 {
            let slots: Vec<Mutex<&mut u64>> = out.iter_mut().map(Mutex::new).collect();
            pool.run(3, &|i| **slots[i].lock().unwrap() += k * (i as u64 + 1));
        }
        assert_eq!(out, [4950, 9900, 14850]);
    }

    #[test]
    fn a_part_cannot_run_the_pool_again() {
        let pool = Pool::new(2).unwrap();
        let r = catch_unwind(AssertUnwindSafe(|| pool.run(2, &|_| pool.run(2, &|_| ()))));
        assert!(r.is_err());
        // The pool is free again.
        pool.run(2, &|_| ());
    }

    #[test]
    fn a_panic_in_any_chunk_reaches_the_caller_and_the_pool_goes_on() {
        let pool = Pool::new(2).unwrap();
        // Whichever thread takes chunk 1 (a worker, or the caller if it is quicker).
        let r = catch_unwind(AssertUnwindSafe(|| {
            pool.run(2, &|i| assert!(i == 0, "chunk 1"));
        }));
        assert!(r.is_err());
        let n = AtomicUsize::new(0);
        pool.run(2, &|_| {
            n.fetch_add(1, SeqCst);
        });
        assert_eq!(n.load(SeqCst), 2);
    }
}
