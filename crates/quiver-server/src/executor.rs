//! [`BatchExecutor`]: a tokio runtime of its own for batch work — materializations and
//! offline pushes, whose DataFusion sorts and Parquet writes would otherwise occupy the
//! threads that answer lookups (InfluxDB 3's `DedicatedExecutor` is the model).
//!
//! Work spawned here runs to completion even when the HTTP client that asked for it
//! disconnects or its request times out: a materialization is recorded in the registry,
//! a push is written in full (pushes are idempotent, so a client may retry).

use std::future::Future;
use std::sync::Mutex;

use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A multi-threaded runtime on its own threads, stopped when dropped.
#[derive(Debug)]
pub struct BatchExecutor {
    handle: Handle,
    /// Dropping the sender ends the runtime's thread, which then drops the runtime.
    stop: Mutex<Option<oneshot::Sender<()>>>,
}

impl BatchExecutor {
    /// Starts a runtime with `threads` worker threads (named `quiver-batch`).
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("quiver-batch".to_string())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(threads.max(1))
                    .thread_name("quiver-batch")
                    .enable_all()
                    .build();
                match runtime {
                    Ok(runtime) => {
                        let _ = handle_tx.send(Ok(runtime.handle().clone()));
                        runtime.block_on(async {
                            let _ = stop_rx.await;
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
            stop: Mutex::new(Some(stop_tx)),
        })
    }

    /// Runs `work` on the batch runtime.
    pub fn spawn<F>(&self, work: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(work)
    }
}

impl Drop for BatchExecutor {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = stop.send(());
        }
    }
}
