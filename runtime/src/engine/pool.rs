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
}

struct Shared {
    /// Bumped once per job (and to stop the workers): a worker joins each job once.
    epoch: AtomicU64,
    /// Bumped by [`Pool::wake`]: parked workers go back to spinning.
    wakes: AtomicU64,
    /// The current job; read only by a worker counted in `active` while `open`.
    job: AtomicPtr<Job<'static>>,
    /// Per thread (the caller 0, worker `i` `i`), the next chunk of its region.
    next: Box<[Next]>,
    /// The current job takes workers: set when published, cleared once every chunk is
    /// taken; a worker that comes later leaves without reading the job.
    open: AtomicBool,
    /// Workers inside the current job.
    active: AtomicUsize,
    /// A worker's chunk panicked (reported by the caller of [`Pool::run`]).
    panicked: AtomicBool,
    /// A job is in flight: `run` is not re-entrant (nor callable from two threads at once,
    /// which the protocol below does not support), and says so instead of racing.
    busy: AtomicBool,
    /// Park instead of spinning (between inferences).
    resting: AtomicBool,
    quit: AtomicBool,
    /// Workers parked (or about to park) on `cv`.
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    cv: Condvar,
}

/// A region's next chunk, alone on its cache line (its owner takes from it all the time).
#[repr(align(64))]
struct Next(AtomicUsize);

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
}

impl Pool {
    /// A pool of `threads − 1` workers (`threads ≥ 2`).
    pub(crate) fn new(threads: usize) -> std::io::Result<Self> {
        let threads = threads.max(2);
        let shared = Arc::new(Shared {
            epoch: AtomicU64::new(0),
            wakes: AtomicU64::new(0),
            job: AtomicPtr::new(core::ptr::null_mut()),
            next: (0..threads).map(|_| Next(AtomicUsize::new(0))).collect(),
            open: AtomicBool::new(false),
            active: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            busy: AtomicBool::new(false),
            resting: AtomicBool::new(true),
            quit: AtomicBool::new(false),
            sleepers: AtomicUsize::new(0),
            lock: Mutex::new(()),
            cv: Condvar::new(),
        });
        let mut pool = Pool {
            shared,
            workers: Vec::new(),
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
        if s.resting.swap(false, SeqCst) {
            s.wakes.fetch_add(1, SeqCst);
            self.notify();
        }
    }

    /// Workers park [`LINGER`] after their last job (an inference ended).
    pub(crate) fn rest(&self) {
        self.shared.resting.store(true, SeqCst);
    }

    /// New epoch; unparks sleeping workers.
    fn bump(&self) {
        self.shared.epoch.fetch_add(1, SeqCst);
        self.notify();
    }

    /// Unparks sleeping workers. A worker counts itself a sleeper under the lock and then
    /// re-reads the epoch and `wakes`, so either it sees the caller's change or the caller
    /// sees it here and notifies after it waits.
    fn notify(&self) {
        let s = &*self.shared;
        if s.sleepers.load(SeqCst) > 0 {
            let _g = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.cv.notify_all();
        }
    }

    /// `f(i)` for every chunk `i < chunks`, each exactly once, on this thread and whichever
    /// workers join; returns when every chunk is done. A worker's panic is re-raised here.
    pub(crate) fn run(&self, chunks: usize, f: &(dyn Fn(usize) + Sync)) {
        if chunks <= 1 {
            if chunks == 1 {
                f(0);
            }
            return;
        }
        let s = &*self.shared;
        assert!(!s.busy.swap(true, Acquire), "Pool::run re-entered");
        s.panicked.store(false, Relaxed);
        let job = Job { f, chunks };
        // No worker is inside the previous job (`active` was 0 when it returned).
        let threads = s.next.len();
        for (r, next) in s.next.iter().enumerate() {
            next.0.store(region(chunks, threads, r).start, SeqCst);
        }
        s.job
            .store(&job as *const Job<'_> as *mut Job<'static>, SeqCst);
        s.open.store(true, SeqCst);
        self.bump();
        // Closes the job and waits for the workers inside it, even if a chunk here panics:
        // they hold a pointer to `job`.
        struct Close<'s>(&'s Shared);
        impl Drop for Close<'_> {
            fn drop(&mut self) {
                let s = self.0;
                s.open.store(false, SeqCst);
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
                s.busy.store(false, Release);
            }
        }
        let close = Close(s);
        take_chunks(s, &job, 0, f);
        drop(close);
        if s.panicked.swap(false, SeqCst) {
            panic!("an engine worker thread panicked");
        }
    }
}

/// `run(i)` for chunks taken by thread `me`: its own region's, then the others' in turn,
/// until none is left.
fn take_chunks(s: &Shared, job: &Job<'_>, me: usize, run: impl Fn(usize)) {
    let threads = s.next.len();
    for k in 0..threads {
        let r = (me + k) % threads;
        let end = region(job.chunks, threads, r).end;
        loop {
            let i = s.next[r].0.fetch_add(1, Relaxed);
            if i >= end {
                break;
            }
            run(i);
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.quit.store(true, SeqCst);
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
        let mut wakes = s.wakes.load(SeqCst);
        let mut t0 = Instant::now();
        let mut spins = 0u32;
        loop {
            if s.epoch.load(Acquire) != seen {
                break;
            }
            // The clock and `wakes` every 256 spins (a `wake` restarts the spin budget).
            spins = spins.wrapping_add(1);
            let tick = spins.is_multiple_of(256);
            if tick {
                let w = s.wakes.load(Relaxed);
                if w != wakes {
                    (wakes, t0) = (w, Instant::now());
                }
            }
            // A resting pool lingers (from the last job or wake) before it parks.
            let budget = if s.resting.load(Relaxed) {
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
            s.sleepers.fetch_add(1, SeqCst);
            while s.epoch.load(SeqCst) == seen && s.wakes.load(SeqCst) == wakes {
                g = s.cv.wait(g).unwrap_or_else(|e| e.into_inner());
            }
            s.sleepers.fetch_sub(1, SeqCst);
            drop(g);
            (wakes, t0) = (s.wakes.load(SeqCst), Instant::now());
        }
        seen = s.epoch.load(Acquire);
        if s.quit.load(SeqCst) {
            return;
        }
        // Counted in before looking at `open`: the caller clears `open` and then waits for
        // `active` to reach 0, so either it waits for us or we see the job closed.
        s.active.fetch_add(1, SeqCst);
        if s.open.load(SeqCst) {
            // SAFETY: `open` is set after `job` is stored and cleared before `run` waits
            // for `active` to reach 0 and returns (freeing the `Job` on its stack, and the
            // closure it borrows), so the job lives until our `fetch_sub` below, after our
            // last use of it.
            #[allow(unsafe_code)]
            let job = unsafe { &*s.job.load(SeqCst) };
            take_chunks(s, job, me, |i| {
                if catch_unwind(AssertUnwindSafe(|| (job.f)(i))).is_err() {
                    s.panicked.store(true, SeqCst);
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
