//! Protobuf ⇄ domain conversions. ECS documents travel as JSON strings
//! inside protobuf and are typed where they are used (`model`, `taskdef`);
//! this module converts the typed messages.

use crate::store::Change;
use crate::wire::proto::WatchEvent;

/// A recorded change as a watch event.
pub fn watch_event(change: Change) -> WatchEvent {
    WatchEvent {
        revision: change.revision,
        raft_index: change.raft_index,
        action: change.action,
        request_id: change.request_id,
        subjects: change.subjects,
        error: change.error.unwrap_or_default(),
    }
}

/// A watch event as the change it reports.
pub fn change(event: WatchEvent) -> Change {
    Change {
        revision: event.revision,
        raft_index: event.raft_index,
        action: event.action,
        request_id: event.request_id,
        subjects: event.subjects,
        error: (!event.error.is_empty()).then_some(event.error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_survives_the_wire() {
        let refused = Change {
            revision: 9,
            raft_index: 12,
            action: "DeleteCluster".into(),
            request_id: "r".into(),
            subjects: vec!["cluster/default".into()],
            error: Some("the default cluster cannot be deleted: it always exists in orc".into()),
        };
        let applied = Change {
            error: None,
            ..refused.clone()
        };
        for change in [refused, applied] {
            assert_eq!(super::change(watch_event(change.clone())), change);
        }
    }
}
