//! The proxy's worker threads, as HAProxy's `nbthread` and nginx's worker
//! processes: each runs a single-threaded tokio runtime of its own, takes
//! whole client connections (handed over by the accept loop, round-robin)
//! and keeps its own idle connections to targets. A request then never
//! leaves its thread: the client connection, the target connection and the
//! pool it comes from are all on the same event loop, so nothing is woken
//! across threads and no lock is contended on the way through.
//!
//! With no workers (`ProxyOptions::workers` 0) connections are served on
//! the runtime of whoever calls `Proxy::apply`, as tasks like any other.

use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::OnceLock;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

thread_local! {
    /// This thread's worker number (its slot in every target pool); 0 off
    /// the workers.
    static SLOT: Cell<usize> = const { Cell::new(0) };
}

/// The slot of the thread calling: each worker's own in every pool.
pub(super) fn slot() -> usize {
    SLOT.with(Cell::get)
}

/// The worker threads; they end when this is dropped (their connections
/// are dropped with their runtimes). They start with the first client
/// connection, so a server, `orc up` or an agent with no load balancer
/// listener spends no thread, runtime or descriptor on them.
pub(super) struct Workers {
    count: usize,
    started: OnceLock<Started>,
    next: AtomicUsize,
}

/// The running workers.
struct Started {
    handles: Vec<Handle>,
    /// Dropping these ends the threads.
    _stops: Vec<oneshot::Sender<()>>,
}

impl Workers {
    /// Workers to start, `count` of them (none for 0), once a connection comes.
    pub(super) fn start(count: usize) -> Workers {
        Workers {
            count,
            started: OnceLock::new(),
            next: AtomicUsize::new(0),
        }
    }

    /// The worker threads, started on the first call.
    fn handles(&self) -> &[Handle] {
        &self.started.get_or_init(|| launch(self.count)).handles
    }

    /// How many pool slots the proxy needs: one per worker (at least one).
    pub(super) fn slots(&self) -> usize {
        self.count.max(1)
    }

    /// Runs `work` on the next worker, or on the caller's runtime when
    /// there is none. `work` gets its client socket as a std socket and
    /// registers it on the runtime it runs on.
    pub(super) fn spawn<F>(&self, work: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let handles = self.handles();
        if handles.is_empty() {
            tokio::spawn(work);
        } else {
            let next = self.next.fetch_add(1, Relaxed) % handles.len();
            handles[next].spawn(work);
        }
    }

    /// Whether connections move to worker threads.
    pub(super) fn any(&self) -> bool {
        self.count > 0 && !self.handles().is_empty()
    }
}

/// Starts `count` worker threads; fewer when the system refuses one.
fn launch(count: usize) -> Started {
    let mut handles = Vec::with_capacity(count);
    let mut stops = Vec::with_capacity(count);
    for slot in 0..count {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(error) => {
                tracing::warn!(%error, "cannot start a load balancer worker; serving on the caller's runtime");
                break;
            }
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = runtime.handle().clone();
        let started = std::thread::Builder::new()
            .name(format!("orc-lb-{slot}"))
            .spawn(move || {
                SLOT.with(|s| s.set(slot));
                crate::metrics::set_thread_shard(slot);
                let _ = runtime.block_on(stopped);
            });
        if let Err(error) = started {
            tracing::warn!(%error, "cannot start a load balancer worker thread; serving on the caller's runtime");
            break;
        }
        handles.push(handle);
        stops.push(stop);
    }
    Started {
        handles,
        _stops: stops,
    }
}
