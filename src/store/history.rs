//! The recent history of the replicated state, for watchers that resume: a
//! bounded ring of compact `Change`s, one per revision, newest last.
//!
//! Every revision the state machine moves to (an applied proposal, even a
//! refused one, or a membership change) is one `Change` naming the action,
//! the request id, the ids the command touched and the error it was refused
//! with; the command itself is not kept, so the ring stays small. A watcher
//! asks for the changes after the revision it saw last, like etcd's watch
//! from a revision. What fell out of the ring, and everything before the
//! state a server loaded from a checkpoint or snapshot, is compacted: the
//! watcher is told to read the state again.
//!
//! Pure data: `Store` records changes under the state's write lock, so a
//! reader never sees a revision without its change. This module does no I/O
//! and knows nothing of Raft or gRPC.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::command::{Outcome, Proposal};
use crate::Error;

/// The changes a watch receives, until an error ends it.
pub type ChangeStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = crate::Result<Change>> + Send>>;

/// How many changes a server keeps by default.
pub const CAPACITY: usize = 4096;
/// About how many bytes the kept changes may take by default (a command
/// touching thousands of tasks names them all); the newest change is kept
/// whatever its size.
pub const BYTE_BUDGET: usize = 1024 * 1024;

/// One revision of the replicated state, as a watcher sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    /// The revision the state moved to.
    pub revision: u64,
    /// The raft index of the entry that moved it.
    pub raft_index: u64,
    /// The ECS-shaped action, e.g. `RunTask`, or `AddServer` / `RemoveServer`
    /// for a membership change.
    pub action: String,
    /// The proposal's request id (empty for membership changes and internal
    /// proposals without one).
    pub request_id: String,
    /// The ids the command touched, each `kind/id` (`Command::subjects`).
    pub subjects: Vec<String>,
    /// Why the command was refused, if it was (the revision moves anyway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Change {
    /// The change an applied proposal made.
    pub fn of_proposal(
        revision: u64,
        raft_index: u64,
        proposal: &Proposal,
        outcome: &Outcome,
    ) -> Change {
        Change {
            revision,
            raft_index,
            action: proposal.command.action().to_string(),
            request_id: proposal.request_id.clone(),
            subjects: proposal.command.subjects(),
            error: outcome.as_ref().err().map(Error::to_string),
        }
    }

    /// The change a membership change made: member `id` added (or promoted)
    /// when `added`, removed otherwise.
    pub fn of_membership(revision: u64, raft_index: u64, id: u64, added: bool) -> Change {
        Change {
            revision,
            raft_index,
            action: if added { "AddServer" } else { "RemoveServer" }.to_string(),
            request_id: String::new(),
            subjects: vec![format!("member/{id}")],
            error: None,
        }
    }

    /// Roughly what the change occupies in memory, for the byte budget.
    fn approximate_bytes(&self) -> usize {
        std::mem::size_of::<Change>()
            + self.action.len()
            + self.request_id.len()
            + self
                .subjects
                .iter()
                .map(|subject| std::mem::size_of::<String>() + subject.len())
                .sum::<usize>()
            + self.error.as_ref().map_or(0, String::len)
    }
}

/// A watch asked for changes this server no longer holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Compacted {
    /// The revision the watcher asked to resume after.
    pub after: u64,
    /// The oldest revision whose change this server still holds (or will
    /// hold next, when it holds none).
    pub oldest: u64,
}

impl std::fmt::Display for Compacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the changes after revision {} were compacted (this server holds changes from revision {} on): take the revision from `orc cluster status`, read the state again, then watch after that revision",
            self.after, self.oldest
        )
    }
}

impl From<Compacted> for Error {
    fn from(compacted: Compacted) -> Error {
        Error::Conflict(compacted.to_string())
    }
}

/// The newest changes, with consecutive revisions.
#[derive(Debug)]
pub struct History {
    /// The kept changes, oldest first; their revisions are consecutive.
    changes: VecDeque<Change>,
    /// The revision of the first kept change, or of the next change to be
    /// recorded when none is kept: everything before it is compacted.
    oldest: u64,
    /// At most this many changes are kept.
    capacity: usize,
    /// The kept changes take about this many bytes at most (the newest is
    /// kept whatever its size).
    byte_budget: usize,
    /// What the kept changes take, by `Change::approximate_bytes`.
    bytes: usize,
}

impl History {
    /// An empty history of a state at `revision`: the next change recorded
    /// is `revision + 1`, and everything up to `revision` is compacted.
    pub fn new(revision: u64, capacity: usize, byte_budget: usize) -> History {
        History {
            changes: VecDeque::new(),
            oldest: revision + 1,
            capacity: capacity.max(1),
            byte_budget,
            bytes: 0,
        }
    }

    /// Forgets every change: the state was replaced by one at `revision`.
    pub fn reset(&mut self, revision: u64) {
        self.changes.clear();
        self.bytes = 0;
        self.oldest = revision + 1;
    }

    /// The oldest revision a watcher can still receive.
    pub fn oldest(&self) -> u64 {
        self.oldest
    }

    /// The revision the next recorded change must carry.
    pub fn next_revision(&self) -> u64 {
        self.oldest + self.changes.len() as u64
    }

    /// How many changes are kept.
    pub fn len(&self) -> usize {
        self.changes.len()
    }

    /// Whether no change is kept.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Records the newest change, evicting the oldest beyond the capacity or
    /// the byte budget. A change that does not follow the newest one (which
    /// the store never records) starts the history over at it, so the kept
    /// revisions stay consecutive.
    pub fn record(&mut self, change: Change) {
        if change.revision != self.next_revision() {
            self.reset(change.revision.saturating_sub(1));
        }
        self.bytes += change.approximate_bytes();
        self.changes.push_back(change);
        while self.changes.len() > self.capacity
            || (self.bytes > self.byte_budget && self.changes.len() > 1)
        {
            if let Some(evicted) = self.changes.pop_front() {
                self.bytes -= evicted.approximate_bytes();
                self.oldest += 1;
            }
        }
    }

    /// Every kept change with a revision above `after`, oldest first; an
    /// error when one of them was compacted. Asking after a revision not
    /// reached yet gives no change (they come once applied).
    pub fn changes_after(&self, after: u64) -> Result<Vec<Change>, Compacted> {
        let first_needed = after.saturating_add(1);
        if first_needed < self.oldest {
            return Err(Compacted {
                after,
                oldest: self.oldest,
            });
        }
        let skip = (first_needed - self.oldest).min(self.changes.len() as u64) as usize;
        Ok(self.changes.range(skip..).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(revision: u64) -> Change {
        Change {
            revision,
            raft_index: revision + 10,
            action: "CreateCluster".into(),
            request_id: format!("r{revision}"),
            subjects: vec![format!("cluster/c{revision}")],
            error: None,
        }
    }

    fn revisions(changes: &[Change]) -> Vec<u64> {
        changes.iter().map(|c| c.revision).collect()
    }

    fn filled(start: u64, count: u64, capacity: usize) -> History {
        let mut history = History::new(start, capacity, BYTE_BUDGET);
        for revision in start + 1..=start + count {
            history.record(change(revision));
        }
        history
    }

    #[test]
    fn a_new_history_holds_nothing_and_everything_before_it_is_compacted() {
        let history = History::new(7, CAPACITY, BYTE_BUDGET);
        assert!(history.is_empty());
        assert_eq!(history.oldest(), 8);
        assert_eq!(history.next_revision(), 8);
        assert_eq!(history.changes_after(7), Ok(vec![]));
        assert_eq!(history.changes_after(100), Ok(vec![]));
        assert_eq!(
            history.changes_after(6),
            Err(Compacted {
                after: 6,
                oldest: 8
            })
        );
    }

    #[test]
    fn changes_after_gives_exactly_the_later_revisions() {
        let history = filled(0, 5, CAPACITY);
        assert_eq!(
            revisions(&history.changes_after(0).unwrap()),
            [1, 2, 3, 4, 5]
        );
        assert_eq!(revisions(&history.changes_after(1).unwrap()), [2, 3, 4, 5]);
        assert_eq!(revisions(&history.changes_after(4).unwrap()), [5]);
        assert_eq!(history.changes_after(5), Ok(vec![]));
        assert_eq!(history.changes_after(6), Ok(vec![]));
        assert_eq!(history.changes_after(u64::MAX), Ok(vec![]));
    }

    #[test]
    fn the_ring_evicts_the_oldest_beyond_its_capacity() {
        let history = filled(0, 10, 4);
        assert_eq!(history.len(), 4);
        assert_eq!(history.oldest(), 7);
        assert_eq!(history.next_revision(), 11);
        // Resuming right before the oldest kept change misses nothing.
        assert_eq!(revisions(&history.changes_after(6).unwrap()), [7, 8, 9, 10]);
        let compacted = history.changes_after(5).unwrap_err();
        assert_eq!(
            compacted,
            Compacted {
                after: 5,
                oldest: 7
            }
        );
        assert_eq!(history.changes_after(0).unwrap_err().oldest, 7);
    }

    #[test]
    fn the_ring_stays_within_its_byte_budget_but_keeps_the_newest_change() {
        let mut history = History::new(0, CAPACITY, 3 * change(1).approximate_bytes());
        for revision in 1..=5 {
            history.record(change(revision));
        }
        assert_eq!(revisions(&history.changes_after(2).unwrap()), [3, 4, 5]);
        let mut big = change(6);
        big.subjects = (0..1000).map(|i| format!("task/{i:032x}")).collect();
        history.record(big);
        assert_eq!(revisions(&history.changes_after(5).unwrap()), [6]);
        assert!(history.changes_after(4).is_err());
        history.record(change(7));
        assert_eq!(revisions(&history.changes_after(6).unwrap()), [7]);
    }

    #[test]
    fn reset_compacts_everything_up_to_the_new_state() {
        let mut history = filled(0, 3, CAPACITY);
        history.reset(40);
        assert!(history.is_empty());
        assert_eq!(history.changes_after(40), Ok(vec![]));
        assert_eq!(history.changes_after(3).unwrap_err().oldest, 41);
        history.record(change(41));
        assert_eq!(revisions(&history.changes_after(40).unwrap()), [41]);
    }

    #[test]
    fn a_change_that_skips_revisions_starts_the_history_over() {
        let mut history = filled(0, 3, CAPACITY);
        history.record(change(9));
        assert_eq!(revisions(&history.changes_after(8).unwrap()), [9]);
        assert!(history.changes_after(3).is_err());
    }

    #[test]
    fn the_compacted_error_is_a_sentence_that_says_what_to_do() {
        let error = Error::from(Compacted {
            after: 12,
            oldest: 4000,
        });
        let text = error.to_string();
        assert!(matches!(error, Error::Conflict(_)));
        assert!(text.starts_with("the changes after revision 12 were compacted"));
        assert!(text.contains("4000"));
        assert!(text.contains("watch after that revision"));
        assert!(!text.ends_with('.'));
    }
}
