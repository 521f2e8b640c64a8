//! A small persistent pool of worker threads for the E-step.
//!
//! [`Pool::run`] runs tasks `0..n` of one closure on the pool's workers and
//! on the calling thread, and returns when every task has finished. Which
//! thread runs which task varies from run to run; callers keep results
//! deterministic by writing each task's result to its own slot and
//! combining the slots in task order afterwards (see [`super::em`]).
//!
//! The workers live as long as the pool, so a mini-batch of 1,000 points
//! costs a wake-up, not a thread spawn: after a run they spin briefly for
//! the next one before sleeping.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker polls for the next run before it sleeps: longer
/// than the gap between two mini-batches of the learner, short enough not
/// to matter when the stream pauses.
const SPIN: Duration = Duration::from_micros(200);

/// A closure of one run, its lifetime erased (see the safety argument in
/// [`Pool::run`]).
#[derive(Clone, Copy)]
struct Job(*const (dyn Fn(usize) + Sync));

// SAFETY: the pointee is `Sync`, and `Pool::run` keeps it alive until no
// worker uses it any more.
unsafe impl Send for Job {}

struct State {
    job: Option<Job>,
    tasks: usize,
    panicked: bool,
    shutdown: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    done: Condvar,
    /// Bumped for every run, polled by spinning workers.
    generation: AtomicU64,
    /// Next unclaimed task of the current run.
    next: AtomicUsize,
    /// Workers running the current job. Changed only under the state's
    /// lock (the condition variables' waits read it there too); the
    /// caller polls it without the lock before sleeping.
    active: AtomicUsize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking task is caught before it can poison the lock, so a
        // poisoned lock still holds a consistent state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Claims and runs tasks of `job` until none is left; false when one
    /// of them panicked.
    fn work(&self, job: &(dyn Fn(usize) + Sync), tasks: usize) -> bool {
        catch_unwind(AssertUnwindSafe(|| loop {
            let t = self.next.fetch_add(1, Ordering::Relaxed);
            if t >= tasks {
                break;
            }
            job(t);
        }))
        .is_ok()
    }
}

/// A fixed set of worker threads (see the module docs).
pub(crate) struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// One run at a time (clones of a learner share their pool).
    run_lock: Mutex<()>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pool({} threads)", self.threads())
    }
}

impl Pool {
    /// A pool that runs tasks on `threads` threads: the caller's and
    /// `threads - 1` workers.
    pub(crate) fn new(threads: usize) -> Pool {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                job: None,
                tasks: 0,
                panicked: false,
                shutdown: false,
            }),
            wake: Condvar::new(),
            done: Condvar::new(),
            generation: AtomicU64::new(0),
            next: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
        });
        let workers = (1..threads.max(1))
            .map(|i| {
                let s = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("emstream-estep-{i}"))
                    .spawn(move || worker(&s))
                    .expect("cannot start an E-step worker thread")
            })
            .collect();
        Pool {
            shared,
            workers,
            run_lock: Mutex::new(()),
        }
    }

    /// Threads that run tasks (workers and the caller).
    pub(crate) fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `f(0)`, …, `f(tasks - 1)`, each once, on the workers and the
    /// calling thread; returns when all have finished.
    ///
    /// # Panics
    ///
    /// When a task panicked (after every other task has finished).
    pub(crate) fn run(&self, tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        if tasks <= 1 || self.workers.is_empty() {
            (0..tasks).for_each(f);
            return;
        }
        let _one = self.run_lock.lock().unwrap_or_else(|e| e.into_inner());
        let sh = &*self.shared;
        // SAFETY: only the lifetime is erased. The pointer is published
        // below and withdrawn by `Finish` (also when the caller unwinds),
        // which then waits until every worker that took it is done, so no
        // worker uses it after `f`'s borrow ends.
        let job: Job = unsafe {
            Job(std::mem::transmute::<
                *const (dyn Fn(usize) + Sync + '_),
                *const (dyn Fn(usize) + Sync + 'static),
            >(f as *const _))
        };
        {
            let mut st = sh.lock();
            st.job = Some(job);
            st.tasks = tasks;
            st.panicked = false;
            sh.next.store(0, Ordering::Relaxed);
            sh.generation.fetch_add(1, Ordering::Release);
        }
        sh.wake.notify_all();
        let finish = Finish(sh);
        let ok = sh.work(f, tasks);
        let worker_panicked = finish.wait();
        assert!(ok && !worker_panicked, "an E-step task panicked");
    }
}

/// Withdraws the current job and waits for the workers running it.
struct Finish<'a>(&'a Shared);

impl Finish<'_> {
    /// Whether a worker's task panicked.
    fn wait(self) -> bool {
        let panicked = self.withdraw();
        std::mem::forget(self);
        panicked
    }

    fn withdraw(&self) -> bool {
        let sh = self.0;
        let busy = || sh.active.load(Ordering::Acquire) > 0;
        let mut st = sh.lock();
        st.job = None;
        if busy() {
            // The workers' last tasks end soon after the caller's: poll
            // briefly rather than sleep at once (a sleep and a wake-up per
            // run were a few per cent of a two-thread learner).
            drop(st);
            spin_while(busy);
            st = sh.lock();
        }
        while busy() {
            st = self.0.done.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        st.panicked
    }
}

impl Drop for Finish<'_> {
    fn drop(&mut self) {
        // Only reached when the caller's own task unwinds.
        self.withdraw();
    }
}

/// Polls `cond` until it is false or [`SPIN`] has passed.
fn spin_while(cond: impl Fn() -> bool) {
    let start = Instant::now();
    while cond() && start.elapsed() < SPIN {
        std::hint::spin_loop();
    }
}

fn worker(sh: &Shared) {
    let mut seen = sh.generation.load(Ordering::Acquire);
    loop {
        // Poll briefly for the next run, then sleep until woken.
        spin_while(|| sh.generation.load(Ordering::Acquire) == seen);
        let (job, tasks) = {
            let mut st = sh.lock();
            loop {
                if st.shutdown {
                    return;
                }
                let g = sh.generation.load(Ordering::Acquire);
                if g != seen {
                    seen = g;
                    if let Some(job) = st.job {
                        sh.active.fetch_add(1, Ordering::Release);
                        break (job, st.tasks);
                    }
                    // That run is already over.
                    continue;
                }
                st = sh.wake.wait(st).unwrap_or_else(|e| e.into_inner());
            }
        };
        // SAFETY: `active` counts this worker, so the run that published
        // `job` waits for it before its closure goes away.
        let ok = sh.work(unsafe { &*job.0 }, tasks);
        let mut st = sh.lock();
        st.panicked |= !ok;
        if sh.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            sh.done.notify_all();
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.lock().shutdown = true;
        self.shared.wake.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[test]
    fn every_task_runs_once_in_every_run() {
        for threads in [1, 2, 3, 8] {
            let pool = Pool::new(threads);
            assert_eq!(pool.threads(), threads);
            for tasks in [0, 1, 2, 5, 64] {
                let hits: Vec<AtomicU32> = (0..tasks).map(|_| AtomicU32::new(0)).collect();
                pool.run(tasks, &|t| {
                    hits[t].fetch_add(1, Ordering::Relaxed);
                });
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
            }
        }
    }

    #[test]
    fn a_panicking_task_reaches_the_caller_and_the_pool_still_works() {
        let pool = Pool::new(3);
        let r = catch_unwind(AssertUnwindSafe(|| {
            pool.run(16, &|t| assert!(t != 11, "task 11 fails"));
        }));
        assert!(r.is_err());
        let sum = AtomicUsize::new(0);
        pool.run(10, &|t| {
            sum.fetch_add(t, Ordering::Relaxed);
        });
        assert_eq!(sum.load(Ordering::Relaxed), 45);
    }
}
