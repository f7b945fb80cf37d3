//! Idle client connections: each HTTP connection keeps when its last
//! request ended and how many are in flight, and its task closes it once it
//! has had no request in flight for its load balancer's idle time-out
//! (`idle_timeout.timeout_seconds`, read again whenever the routes change).
//! The per-request cost is two atomic updates on the connection's own
//! counters; the connection's one timer is reset only when it fires or the
//! routes change, never per request.

use std::sync::atomic::Ordering::{Acquire, Release};
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// One client connection's activity.
pub(super) struct Activity {
    opened: Instant,
    in_flight: AtomicUsize,
    /// When the last request ended (or the connection opened), in ms after
    /// `opened`.
    last_ms: AtomicU64,
}

impl Activity {
    pub(super) fn new() -> Arc<Activity> {
        Arc::new(Activity {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
        })
    }

    /// Counts a request in flight until the returned guard is dropped (with
    /// its response body).
    pub(super) fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Acquire);
        InFlight(self.clone())
    }

    /// When the connection will have been idle for `timeout`, or `None`
    /// when it already has. A connection with a request in flight is
    /// looked at again `timeout` from now.
    pub(super) fn deadline(&self, timeout: Duration, now: Instant) -> Option<Instant> {
        if self.in_flight.load(Acquire) > 0 {
            return Some(now + timeout);
        }
        let idle_since = self.opened + Duration::from_millis(self.last_ms.load(Acquire));
        let deadline = idle_since + timeout;
        (deadline > now).then_some(deadline)
    }
}

/// A request in flight on a connection; its drop marks the request's end.
pub(super) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        let elapsed = u64::try_from(activity.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        activity.last_ms.store(elapsed, Release);
        activity.in_flight.fetch_sub(1, Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_only_counts_from_the_last_request_and_never_while_one_is_in_flight() {
        let activity = Activity::new();
        let timeout = Duration::from_secs(5);
        let opened = Instant::now();
        assert_eq!(activity.deadline(timeout, opened), Some(opened + timeout));
        let request = activity.start();
        tokio::time::advance(Duration::from_secs(9)).await;
        let now = Instant::now();
        assert_eq!(activity.deadline(timeout, now), Some(now + timeout));
        drop(request);
        assert_eq!(activity.deadline(timeout, now), Some(now + timeout));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(activity.deadline(timeout, Instant::now()), None);
    }
}
