//! When the workers of an until-idle run may stop: all at once, when none has input left.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// With `UntilIdle`, a worker may stop only when every worker is idle at once: workers
/// write transfer legs to each other's partitions, so one worker running out of input
/// does not mean no more will come. A worker is idle when its commits are done and its
/// partitions' inputs are read; it records the number of commits (by any worker) it saw
/// before looking. All may stop when all have recorded the current number: nobody
/// committed anything after anybody looked.
#[derive(Default)]
pub(super) struct IdleBarrier {
    /// Durable commits of any worker (counted by the committers, after the commit).
    pub(super) commits: AtomicU64,
    /// Per worker: the commit count before it last found itself idle; `None`: busy.
    pub(super) idle_at: Mutex<Vec<Option<u64>>>,
}

impl IdleBarrier {
    pub(super) fn new(workers: usize) -> IdleBarrier {
        IdleBarrier { commits: Default::default(), idle_at: Mutex::new(vec![None; workers]) }
    }

    pub(super) fn committed(&self) {
        self.commits.fetch_add(1, Ordering::SeqCst);
    }

    pub(super) fn commits(&self) -> u64 {
        self.commits.load(Ordering::SeqCst)
    }

    /// `worker` is idle as of `commits_seen`; true if every worker is, and nothing was
    /// committed since.
    pub(super) fn idle(&self, worker: usize, commits_seen: u64) -> bool {
        let mut idle_at = self.idle_at.lock().expect("idle lock");
        if let Some(slot) = idle_at.get_mut(worker) {
            *slot = Some(commits_seen);
        }
        idle_at.iter().all(|seen| *seen == Some(commits_seen)) && self.commits() == commits_seen
    }

    pub(super) fn busy(&self, worker: usize) {
        if let Some(slot) = self.idle_at.lock().expect("idle lock").get_mut(worker) {
            *slot = None;
        }
    }
}
