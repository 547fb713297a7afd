//! [`BatchExecutor`]: a tokio runtime of its own for batch work — materializations and
//! offline pushes, whose DataFusion sorts and Parquet writes would otherwise occupy the
//! threads that answer lookups (InfluxDB 3's `DedicatedExecutor` is the model).
//!
//! Work spawned here runs to completion even when the HTTP client that asked for it
//! disconnects or its request times out: a materialization is recorded in the registry,
//! a push is written in full (pushes are idempotent, so a client may retry).

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

/// How long the runtime's thread lets unfinished work run after the executor is dropped.
const FINISH_AFTER_DROP: Duration = Duration::from_secs(300);

/// Blocking threads (file reads and writes: DataFusion's local object store runs each on
/// one) per worker thread. Tokio's default, 512, lets a burst of small reads start dozens
/// of threads, and each keeps its own allocator heap: under steady offline pushes the
/// server's memory grew with the thread count. Batch work is bound by the cores anyway.
const BLOCKING_THREADS_PER_WORKER: usize = 2;

/// A multi-threaded runtime on its own threads, stopped when dropped.
#[derive(Debug)]
pub struct BatchExecutor {
    handle: Handle,
    /// Tasks spawned and not finished, and a signal each time one finishes.
    running: Arc<(AtomicUsize, Notify)>,
    /// Dropping the sender ends the runtime's thread, which then drops the runtime.
    stop: Mutex<Option<oneshot::Sender<()>>>,
}

impl BatchExecutor {
    /// Starts a runtime with `threads` worker threads (named `quiver-batch`).
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let running = Arc::new((AtomicUsize::new(0), Notify::new()));
        let tasks = Arc::clone(&running);
        std::thread::Builder::new()
            .name("quiver-batch".to_string())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(threads.max(1))
                    .max_blocking_threads(BLOCKING_THREADS_PER_WORKER * threads.max(1))
                    .thread_name("quiver-batch")
                    .enable_all()
                    .build();
                match runtime {
                    Ok(runtime) => {
                        let _ = handle_tx.send(Ok(runtime.handle().clone()));
                        runtime.block_on(async {
                            let _ = stop_rx.await;
                            // Work already started finishes (a materialization is
                            // recorded) unless the process exits first.
                            let _ = tokio::time::timeout(FINISH_AFTER_DROP, idle(&tasks)).await;
                        });
                        runtime.shutdown_background();
                    }
                    Err(e) => {
                        let _ = handle_tx.send(Err(e));
                    }
                }
            })?;
        let handle = handle_rx
            .recv()
            .map_err(|e| std::io::Error::other(e.to_string()))??;
        Ok(BatchExecutor {
            handle,
            running,
            stop: Mutex::new(Some(stop_tx)),
        })
    }

    /// Runs `work` on the batch runtime.
    pub fn spawn<F>(&self, work: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let running = Arc::clone(&self.running);
        running.0.fetch_add(1, Ordering::AcqRel);
        self.handle.spawn(async move {
            let output = work.await;
            running.0.fetch_sub(1, Ordering::AcqRel);
            running.1.notify_waiters();
            output
        })
    }

    /// How many spawned tasks have not finished.
    pub fn running(&self) -> usize {
        self.running.0.load(Ordering::Acquire)
    }

    /// Waits until no spawned work runs, at most `limit`; returns whether it is idle.
    pub async fn drain(&self, limit: Duration) -> bool {
        tokio::time::timeout(limit, idle(&self.running))
            .await
            .is_ok()
    }
}

/// Completes when no spawned task runs.
async fn idle(running: &(AtomicUsize, Notify)) {
    let (count, finished) = running;
    loop {
        let notified = finished.notified();
        if count.load(Ordering::Acquire) == 0 {
            return;
        }
        notified.await;
    }
}

impl Drop for BatchExecutor {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = stop.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A burst of blocking work (as a read of many small files is) runs on a bounded
    /// number of threads: every thread keeps an allocator heap, so an unbounded pool is
    /// memory that grows with the burst.
    #[test]
    fn blocking_work_runs_on_a_bounded_pool() {
        let executor = BatchExecutor::new(2).unwrap();
        let burst = executor.spawn(async {
            let tasks: Vec<_> = (0..64)
                .map(|_| {
                    tokio::task::spawn_blocking(|| {
                        std::thread::sleep(Duration::from_millis(20));
                        std::thread::current().id()
                    })
                })
                .collect();
            let mut threads = std::collections::HashSet::new();
            for task in tasks {
                threads.insert(task.await.unwrap());
            }
            threads.len()
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let threads = runtime.block_on(burst).unwrap();
        assert!(
            threads <= 2 * BLOCKING_THREADS_PER_WORKER,
            "64 blocking tasks ran on {threads} threads"
        );
    }
}
