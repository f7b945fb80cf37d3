//! The `Orc.Watch` stream: every change of the replicated state after a
//! revision, read from this server's `store::history` and sent in revision
//! order, never with a gap and never twice.
//!
//! A watch is served from the answering server's own applied state, leader
//! or follower: a follower's stream may lag the leader's but carries the
//! same changes in the same order. When a change the watcher still needs
//! was compacted (it fell out of the ring while the watcher was slow, or
//! predates the server's last restart or snapshot), the stream ends with
//! `Error::Conflict` (FAILED_PRECONDITION) saying to read the state again.
//! Handlers stay thin: this module only reads the store and waits on its
//! revision watch; it never proposes.

use std::sync::Arc;

use crate::store::{ChangeStream, Store};
use crate::Result;

/// Opens a watch of the changes after `after_revision` (0: only changes
/// applied from now on). A compacted start is refused at once; a watcher
/// that falls behind the ring later gets the same error as the stream's end.
pub fn open(store: Arc<Store>, after_revision: u64) -> Result<ChangeStream> {
    // Subscribe before the first read so no change is missed.
    let mut revisions = store.subscribe();
    let after = match after_revision {
        0 => store.revision(),
        after => after,
    };
    let backlog = store.changes_after(after)?;
    tracing::debug!(after, backlog = backlog.len(), "watch opened");
    Ok(super::async_stream(move |sender| async move {
        // Counted in /metrics until this task ends, whichever way it ends.
        let _open = crate::metrics::watch_opened();
        let mut after = after;
        let mut changes = backlog;
        loop {
            for change in changes {
                after = change.revision;
                if sender.send(Ok(change)).await.is_err() {
                    return;
                }
            }
            tokio::select! {
                moved = revisions.changed() => {
                    if moved.is_err() {
                        return;
                    }
                }
                _ = sender.closed() => return,
            }
            changes = match store.changes_after(after) {
                Ok(changes) => changes,
                Err(compacted) => {
                    tracing::debug!(
                        after,
                        oldest = compacted.oldest,
                        "watcher fell behind the history"
                    );
                    crate::metrics::record_watch_fell_behind();
                    let _ = sender.send(Err(compacted.into())).await;
                    return;
                }
            };
        }
    }))
}

#[cfg(test)]
mod tests {
    use futures::StreamExt as _;
    use tonic::Code;

    use super::*;
    use crate::store::create_cluster_proposal as create;
    use crate::wire::status::to_status;

    fn store(dir: &tempfile::TempDir, capacity: usize) -> Arc<Store> {
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        Arc::new(Store::open_with_history(&db, &dir.path().join("state"), capacity).unwrap())
    }

    /// Applies one create-cluster per raft index in `indexes`.
    fn write(store: &Store, indexes: std::ops::RangeInclusive<u64>) {
        for index in indexes {
            store.apply_entries(vec![(index, Some(create(&format!("c{index}"))))]);
        }
    }

    async fn next_revisions(stream: &mut ChangeStream, count: usize) -> Vec<u64> {
        let mut revisions = Vec::new();
        for _ in 0..count {
            let event = tokio::time::timeout(std::time::Duration::from_secs(10), stream.next())
                .await
                .expect("a change within 10 s")
                .expect("the stream goes on")
                .expect("a change, not an error");
            revisions.push(event.revision);
        }
        revisions
    }

    #[tokio::test]
    async fn the_backlog_then_each_new_change_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir, 100);
        write(&store, 1..=3);
        let mut stream = open(store.clone(), 1).unwrap();
        assert_eq!(next_revisions(&mut stream, 2).await, [2, 3]);
        write(&store, 4..=5);
        // A retried request moves nothing and sends nothing.
        store.apply_entries(vec![(6, Some(create("c4")))]);
        write(&store, 7..=7);
        assert_eq!(next_revisions(&mut stream, 3).await, [4, 5, 6]);
        let sixth = store.changes_after(5).unwrap();
        assert_eq!(sixth[0].raft_index, 7);
    }

    #[tokio::test]
    async fn after_revision_zero_sends_only_new_changes() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir, 100);
        write(&store, 1..=3);
        let mut stream = open(store.clone(), 0).unwrap();
        write(&store, 4..=4);
        assert_eq!(next_revisions(&mut stream, 1).await, [4]);
    }

    #[tokio::test]
    async fn a_compacted_start_is_refused_with_a_sentence() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir, 3);
        write(&store, 1..=10);
        let error = open(store.clone(), 2).err().expect("compacted");
        let status = to_status(error);
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(
            status.message(),
            "the changes after revision 2 were compacted (this server holds changes from revision 8 on): take the revision from `orc cluster status`, read the state again, then watch after that revision"
        );
        assert!(open(store, 7).is_ok());
    }

    /// Polls `metrics::watches_open` until it equals `want` (10 s at most).
    async fn wait_open_watches(want: u64) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while crate::metrics::watches_open() != want {
            assert!(
                tokio::time::Instant::now() < deadline,
                "open watches stayed at {} instead of {want}",
                crate::metrics::watches_open()
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn metrics_count_a_watch_while_it_is_open() {
        // nextest runs each test in its own process, so the gauge is ours.
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir, 100);
        let before = crate::metrics::watches_open();
        let mut stream = open(store.clone(), 0).unwrap();
        write(&store, 1..=1);
        assert_eq!(next_revisions(&mut stream, 1).await, [1]);
        wait_open_watches(before + 1).await;
        assert!(crate::metrics::render().contains(&format!("orc_watch_streams {}", before + 1)));
        drop(stream);
        // The stream's task notices the closed channel and ends.
        wait_open_watches(before).await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_watcher_that_falls_behind_the_ring_gets_the_compacted_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir, 3);
        let mut stream = open(store.clone(), 0).unwrap();
        // The watch's task runs only when this test awaits: by then the ring
        // has moved past everything it still needs.
        write(&store, 1..=10);
        let error = to_status(stream.next().await.unwrap().unwrap_err());
        assert_eq!(error.code(), Code::FailedPrecondition);
        assert!(error
            .message()
            .starts_with("the changes after revision 0 were compacted"));
        assert!(stream.next().await.is_none());
    }
}
