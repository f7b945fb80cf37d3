//! Protobuf ⇄ domain conversions. ECS documents travel as JSON strings
//! inside protobuf and are typed where they are used (`model`, `taskdef`);
//! this module converts the typed messages.

use crate::model::{ControlPlaneStatus, Membership, ServerMember};
use crate::store::Change;
use crate::tls::ca::Issued;
use crate::wire::proto::{
    ClusterStatusResponse, JoinResponse, Member, MembershipResponse, WatchEvent,
};

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

/// Converts between a domain type and its protobuf message both ways, field
/// by field; `; lists` are repeated fields whose items convert too.
macro_rules! both_ways {
    ($domain:ident <=> $wire:ident { $($field:ident),* $(; $($list:ident),*)? }) => {
        impl From<$domain> for $wire {
            fn from(value: $domain) -> Self {
                $wire {
                    $($field: value.$field,)*
                    $($($list: value.$list.into_iter().map(Into::into).collect(),)*)?
                }
            }
        }

        impl From<$wire> for $domain {
            fn from(value: $wire) -> Self {
                $domain {
                    $($field: value.$field,)*
                    $($($list: value.$list.into_iter().map(Into::into).collect(),)*)?
                }
            }
        }
    };
}

both_ways!(ServerMember <=> Member { id, address, role, voter, matched_index, healthy, failure });

both_ways!(ControlPlaneStatus <=> ClusterStatusResponse {
    cluster_id,
    answering_node_id,
    leader_id,
    leader_address,
    term,
    commit_index,
    applied_index,
    revision,
    snapshot_index;
    members
});

both_ways!(Membership <=> MembershipResponse { cluster_id; members });

both_ways!(Issued <=> JoinResponse {
    certificate,
    ca,
    ca_key,
    container_instance_id,
    cluster_id,
    seal_key
});

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
