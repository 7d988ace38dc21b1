//! The threads plugin calls from async code run on first: one per core, started with the
//! runtime, outside tokio.
//!
//! Why not tokio's own threads: a call is synchronous wasm, and WASI's synchronous streams
//! (a guest writing to stderr, a Rust panic message) block on a tokio runtime of their own,
//! which tokio refuses on a runtime's worker thread. Why not tokio's blocking pool for every
//! call: it grows a thread per concurrent call, each with its own allocator heap (the
//! benchmark's peak RSS in the drain went from 133 to 328 MB with it), and a hop there is no
//! cheaper than a hop here. Calls that outgrow their slice on these threads go to the
//! blocking pool after all (see [`Plugin::run`]), so a slow plugin holds one of these threads
//! for one slice at most.
//!
//! [`Plugin::run`]: super::Plugin::run

use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};

pub(crate) type Job = Box<dyn FnOnce() + Send>;

pub(crate) struct CallThreads {
    /// Shared by every caller (a `Sender` is `Sync`); the threads share the receiving end.
    jobs: Sender<Job>,
}

impl CallThreads {
    /// Starts `count` threads; they end when this is dropped (never before: a job that
    /// panics ends, its thread goes on).
    pub(crate) fn start(count: usize) -> std::io::Result<CallThreads> {
        let (jobs, queue) = channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..count.max(1) {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("canopy-plugin-{n}"))
                .spawn(move || work(&queue))?;
        }
        Ok(CallThreads { jobs })
    }

    /// Queues `job`; gives it back if the threads are gone.
    pub(crate) fn submit(&self, job: Job) -> Result<(), Job> {
        self.jobs.send(job).map_err(|refused| refused.0)
    }
}

fn work(queue: &Mutex<Receiver<Job>>) {
    loop {
        let job = queue.lock().unwrap_or_else(|p| p.into_inner()).recv();
        match job {
            // A panic ends its call (the caller's answer is dropped, and it is told the call
            // was lost), not the thread.
            Ok(job) => drop(std::panic::catch_unwind(std::panic::AssertUnwindSafe(job))),
            Err(_) => break, // the runtime is gone
        }
    }
}
