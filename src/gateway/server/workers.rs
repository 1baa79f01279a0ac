//! Connection workers: each one thread running its own single-threaded tokio runtime, serving
//! whole connections (nginx's worker model).
//!
//! A proxied request is a chain of hand-offs: the client's connection, the handler, the pooled
//! upstream connection's task, back. On tokio's work-stealing runtime those tasks land on
//! different threads, and every hand-off between threads is a futex wake and, on an idle core,
//! a scheduler wake-up (at concurrency 1 on a 2-core VM that was about a third of the added
//! latency). Here a connection is handed to one worker when it is accepted and everything it
//! does (its requests, their upstream connections from that worker's own pool, its timers)
//! stays on that thread. Workers share the gateway's state (metrics, breakers, routing) as
//! before; only connections and upstream pools are per worker.
//!
//! Worker 0 is the runtime that calls [`Workers::start`] (it also runs the accept loop, reloads
//! and signals); the others are threads started here and stopped when [`Workers`] is dropped.

use std::cell::Cell;
use std::future::Future;
use std::sync::mpsc;

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

thread_local! {
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// The worker this thread is (0 outside the extra worker threads).
pub fn current() -> usize {
    INDEX.with(Cell::get)
}

/// How many workers `--workers 0` means: one per core the process may use.
pub fn auto() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

pub struct Workers {
    handles: Vec<Handle>,
    next: usize,
    stop: CancellationToken,
}

impl Workers {
    /// `n` workers (at least one): the current runtime and `n - 1` new threads.
    pub fn start(n: usize) -> std::io::Result<Workers> {
        let stop = CancellationToken::new();
        let mut handles = vec![Handle::current()];
        for index in 1..n.max(1) {
            let (tx, rx) = mpsc::channel();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name(format!("aigw-worker-{index}"))
                .spawn(move || {
                    INDEX.with(|c| c.set(index));
                    let runtime = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt,
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = tx.send(Ok(runtime.handle().clone()));
                    // Runs this worker's connections until the gateway stops; dropping the
                    // runtime then ends whatever is left on it.
                    runtime.block_on(stop.cancelled());
                })?;
            let handle = rx
                .recv()
                .map_err(|_| std::io::Error::other("a worker thread ended while starting"))??;
            handles.push(handle);
        }
        Ok(Workers {
            handles,
            next: 0,
            stop,
        })
    }

    pub fn len(&self) -> usize {
        self.handles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// Runs `task` on the next worker, round robin.
    pub fn spawn<F>(&mut self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let handle = &self.handles[self.next % self.handles.len()];
        self.next = self.next.wrapping_add(1);
        handle.spawn(task);
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tasks_run_on_every_worker_in_turn() {
        let mut workers = Workers::start(3).unwrap();
        assert_eq!(workers.len(), 3);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for _ in 0..6 {
            let tx = tx.clone();
            workers.spawn(async move {
                let _ = tx.send((current(), std::thread::current().name().map(String::from)));
            });
        }
        let mut seen = Vec::new();
        for _ in 0..6 {
            seen.push(rx.recv().await.unwrap());
        }
        seen.sort();
        let indices: Vec<usize> = seen.iter().map(|(i, _)| *i).collect();
        assert_eq!(indices, vec![0, 0, 1, 1, 2, 2]);
        assert_eq!(seen[2].1.as_deref(), Some("aigw-worker-1"));
        assert_eq!(seen[4].1.as_deref(), Some("aigw-worker-2"));
    }
}
