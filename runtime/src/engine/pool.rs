//! The engine's worker threads (feature `threads`): one fork-join per split op, with workers
//! that **spin** between the ops of an inference.
//!
//! An inference is a chain of ~50–75 ops, each a few tens of µs at 224 px, each needing every
//! part done before the next op reads it. A worker that sleeps between ops pays an OS wake-up
//! per op (on a VM an inter-processor interrupt, ~50–100 µs: a general pool parks its idle
//! workers and made `--threads 2` slower than one thread). Here a worker that finished a part
//! spins on the job counter until the next job, up to [`SPIN`], and only then parks on a
//! condition variable; [`Pool::rest`] (the end of an inference) sends the workers to sleep
//! at once and [`Pool::wake`] (its start) gets them spinning before the first split op.
//!
//! Every worker acknowledges every job (even one with fewer parts than workers), so the
//! caller returning from [`Pool::run`] means no worker still reads that job.
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a worker spins for the next job before it parks.
const SPIN: Duration = Duration::from_millis(2);

/// One job: `f(i)` for parts `i < parts`, part 0 on the calling thread.
struct Job<'a> {
    f: &'a (dyn Fn(usize) + Sync),
    parts: usize,
}

struct Shared {
    /// Bumped once per job (and to stop the workers): a worker sees each job's epoch,
    /// since the next job waits for every worker's acknowledgement of this one.
    epoch: AtomicU64,
    /// Bumped by [`Pool::wake`]: parked workers go back to spinning.
    wakes: AtomicU64,
    /// The current job; valid while `left > 0` for the epoch it was published with.
    job: AtomicPtr<Job<'static>>,
    /// Workers yet to acknowledge the current job.
    left: AtomicUsize,
    /// A worker's part panicked (reported by the caller of [`Pool::run`]).
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

/// `threads − 1` spinning workers; the calling thread runs part 0 of every job.
pub(crate) struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    /// A pool of `threads − 1` workers (`threads ≥ 2`).
    pub(crate) fn new(threads: usize) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            epoch: AtomicU64::new(0),
            wakes: AtomicU64::new(0),
            job: AtomicPtr::new(core::ptr::null_mut()),
            left: AtomicUsize::new(0),
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
        for i in 1..threads.max(2) {
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

    /// Workers park after their current job (an inference ended).
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

    /// `f(i)` for every `i < parts`: part 0 here, part `i` on worker `i` (`parts ≤
    /// threads()`); returns when every part is done. A worker's panic is re-raised here.
    pub(crate) fn run(&self, parts: usize, f: &(dyn Fn(usize) + Sync)) {
        assert!(parts <= self.threads(), "more parts than threads");
        if parts <= 1 {
            if parts == 1 {
                f(0);
            }
            return;
        }
        let s = &*self.shared;
        assert!(!s.busy.swap(true, Acquire), "Pool::run re-entered");
        s.panicked.store(false, Relaxed);
        let job = Job { f, parts };
        // No worker reads the previous job: `run` returned only after all acknowledged it.
        s.left.store(self.workers.len(), SeqCst);
        s.job
            .store(&job as *const Job<'_> as *mut Job<'static>, SeqCst);
        self.bump();
        // Waits for the workers even if part 0 panics: they hold a pointer to `job`.
        struct Wait<'s>(&'s Shared);
        impl Drop for Wait<'_> {
            fn drop(&mut self) {
                let t0 = Instant::now();
                while self.0.left.load(Acquire) > 0 {
                    if t0.elapsed() < SPIN {
                        core::hint::spin_loop();
                    } else {
                        std::thread::yield_now();
                    }
                }
                self.0.busy.store(false, Release);
            }
        }
        let wait = Wait(s);
        f(0);
        drop(wait);
        if s.panicked.swap(false, SeqCst) {
            panic!("an engine worker thread panicked");
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

/// Worker `i`'s loop: wait for a new epoch (spinning, then parked), run part `i` of its job.
fn worker(s: &Shared, i: usize) {
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
            let park = s.resting.load(Relaxed) || (tick && t0.elapsed() > SPIN);
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
        seen += 1;
        if s.quit.load(SeqCst) {
            return;
        }
        // SAFETY: epoch `seen` was bumped by `run` after it stored `job` (a `Job` on its
        // stack) and `left`; `run` returns, and publishes the next job, only after `left`
        // reaches 0, i.e. after this worker's `fetch_sub` below, its last use of `*job`.
        #[allow(unsafe_code)]
        let job = unsafe { &*s.job.load(Acquire) };
        if i < job.parts && catch_unwind(AssertUnwindSafe(|| (job.f)(i))).is_err() {
            s.panicked.store(true, SeqCst);
        }
        s.left.fetch_sub(1, Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_part_runs_once_per_job() {
        for threads in 2..=4 {
            let pool = Pool::new(threads).unwrap();
            assert_eq!(pool.threads(), threads);
            pool.wake();
            let hits: Vec<AtomicUsize> = (0..threads).map(|_| AtomicUsize::new(0)).collect();
            for round in 0..600 {
                let parts = 1 + round % threads;
                pool.run(parts, &|i| {
                    hits[i].fetch_add(round + 1, SeqCst);
                });
                if round % 150 == 0 {
                    // Parked workers are woken for the next job.
                    pool.rest();
                    std::thread::sleep(Duration::from_millis(3));
                    if round % 300 == 0 {
                        pool.wake();
                    }
                }
            }
            for (i, h) in hits.iter().enumerate() {
                let want: usize = (0..600)
                    .filter(|r| i < 1 + r % threads)
                    .map(|r| r + 1)
                    .sum();
                assert_eq!(h.load(SeqCst), want, "part {i} at {threads} threads");
            }
        }
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
        // Both parts tried; the pool is free again after the caller's.
        pool.run(2, &|_| ());
    }

    #[test]
    fn a_workers_panic_reaches_the_caller_and_the_pool_goes_on() {
        let pool = Pool::new(2).unwrap();
        let r = catch_unwind(AssertUnwindSafe(|| {
            pool.run(2, &|i| assert!(i == 0, "worker part"));
        }));
        assert!(r.is_err());
        let n = AtomicUsize::new(0);
        pool.run(2, &|_| {
            n.fetch_add(1, SeqCst);
        });
        assert_eq!(n.load(SeqCst), 2);
    }
}
