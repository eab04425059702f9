//! The bridge from the synchronous store traits to the backends' async APIs.
//!
//! The pipeline's threads are plain std threads: they use stores through the synchronous
//! traits ([`crate::records::RecordStore`], [`crate::history::HistoryStore`],
//! [`crate::counters::WindowedCounters`], [`crate::users::UserStore`]), while every
//! backend's own API is `async`. [`BlockingRuntime`] is the one place where a backend's
//! future is driven to completion from a synchronous call: it owns a tokio runtime and
//! runs each call with `block_on`. Each backend crate wraps its stores in a `Blocking<S>`
//! that implements the synchronous trait with it (and builds the store on that runtime,
//! whose reactor its sockets belong to).
//!
//! Invariant: a blocking call on a thread that is inside a tokio runtime (an axum handler,
//! a task) MUST NOT block: it is refused with [`StorageError::InsideRuntime`] — never a
//! panic, never a stalled runtime. Async callers use the backend's async API directly.

use std::future::Future;

use crate::error::StorageError;

/// A tokio runtime owned by one blocking store, driving its calls one at a time.
pub struct BlockingRuntime {
    /// `Some` until dropped.
    runtime: Option<tokio::runtime::Runtime>,
}

/// Refuses to go on if the calling thread is inside a tokio runtime.
fn refuse_inside_runtime(operation: &'static str) -> Result<(), StorageError> {
    match tokio::runtime::Handle::try_current() {
        Ok(_) => Err(StorageError::InsideRuntime { operation }),
        Err(_) => Ok(()),
    }
}

impl BlockingRuntime {
    /// A runtime on the calling thread: the store's IO runs only inside its calls.
    pub fn current_thread() -> Result<BlockingRuntime, StorageError> {
        refuse_inside_runtime("start a blocking store")?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| StorageError::Io { context: "start a store's client runtime".into(), source })?;
        Ok(BlockingRuntime { runtime: Some(runtime) })
    }

    /// A runtime with one worker thread named `thread_name`: a driver's background tasks
    /// (its control connection, reconnecting its pool after a node restarts) run between
    /// calls too, not only inside them.
    pub fn with_worker_thread(thread_name: &str) -> Result<BlockingRuntime, StorageError> {
        refuse_inside_runtime("start a blocking store")?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(thread_name)
            .enable_all()
            .build()
            .map_err(|source| StorageError::Io { context: format!("start the {thread_name} runtime"), source })?;
        Ok(BlockingRuntime { runtime: Some(runtime) })
    }

    /// Runs `future` to completion on this runtime, blocking the calling thread; refused
    /// ([`StorageError::InsideRuntime`], naming `operation`) inside a tokio runtime.
    pub fn block_on<F: Future>(&self, operation: &'static str, future: F) -> Result<F::Output, StorageError> {
        refuse_inside_runtime(operation)?;
        Ok(self.runtime.as_ref().expect("present until dropped").block_on(future))
    }
}

impl Drop for BlockingRuntime {
    /// Dropping a runtime waits for its tasks, which tokio forbids (a panic) inside
    /// another runtime: there, the tasks are left to end in the background instead.
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take()
            && tokio::runtime::Handle::try_current().is_ok()
        {
            runtime.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocking_works_on_plain_threads_and_is_refused_inside_a_runtime() {
        let blocking = BlockingRuntime::current_thread().unwrap();
        assert_eq!(blocking.block_on("add", async { 1 + 1 }).unwrap(), 2);
        let worker = BlockingRuntime::with_worker_thread("paystream-test").unwrap();
        assert_eq!(worker.block_on("add", async { 2 + 2 }).unwrap(), 4);

        let outer = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        outer.block_on(async {
            // As an axum handler would: a store made outside, called inside.
            let refused = blocking.block_on("apply a slice", async { 0 });
            assert!(matches!(refused, Err(StorageError::InsideRuntime { operation: "apply a slice" })), "{refused:?}");
            assert!(matches!(worker.block_on("read", async {}), Err(StorageError::InsideRuntime { .. })));
            assert!(matches!(BlockingRuntime::current_thread(), Err(StorageError::InsideRuntime { .. })));
            assert!(matches!(BlockingRuntime::with_worker_thread("x"), Err(StorageError::InsideRuntime { .. })));
        });
        // A thread that merely entered a runtime's context is inside it too.
        let _entered = outer.enter();
        assert!(matches!(blocking.block_on("read", async {}), Err(StorageError::InsideRuntime { .. })));
        drop(_entered);
        assert_eq!(blocking.block_on("add", async { 3 }).unwrap(), 3, "usable again outside");
        // Dropped inside a runtime (a handler dropping a store): no panic either.
        outer.block_on(async move {
            drop(blocking);
            drop(worker);
        });
        let message = StorageError::InsideRuntime { operation: "apply a slice" }.to_string();
        assert!(message.contains("apply a slice") && message.contains("async API"), "{message}");
    }
}
