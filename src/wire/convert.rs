//! Protobuf ⇄ domain conversions. ECS documents travel as JSON strings
//! inside protobuf and are typed where they are used (`model`, `taskdef`);
//! this module converts the typed messages.

use crate::model::{ControlPlaneStatus, Membership, ServerMember};
use crate::store::Change;
use crate::wire::proto::{ClusterStatusResponse, Member, MembershipResponse, WatchEvent};

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

impl From<ServerMember> for Member {
    fn from(m: ServerMember) -> Self {
        Member {
            id: m.id,
            address: m.address,
            role: m.role,
            voter: m.voter,
            matched_index: m.matched_index,
            healthy: m.healthy,
            failure: m.failure,
        }
    }
}

impl From<Member> for ServerMember {
    fn from(m: Member) -> Self {
        ServerMember {
            id: m.id,
            address: m.address,
            role: m.role,
            voter: m.voter,
            matched_index: m.matched_index,
            healthy: m.healthy,
            failure: m.failure,
        }
    }
}

impl From<ControlPlaneStatus> for ClusterStatusResponse {
    fn from(s: ControlPlaneStatus) -> Self {
        ClusterStatusResponse {
            cluster_id: s.cluster_id,
            answering_node_id: s.answering_node_id,
            leader_id: s.leader_id,
            leader_address: s.leader_address,
            term: s.term,
            commit_index: s.commit_index,
            applied_index: s.applied_index,
            members: s.members.into_iter().map(Member::from).collect(),
            revision: s.revision,
            snapshot_index: s.snapshot_index,
        }
    }
}

impl From<ClusterStatusResponse> for ControlPlaneStatus {
    fn from(s: ClusterStatusResponse) -> Self {
        ControlPlaneStatus {
            cluster_id: s.cluster_id,
            answering_node_id: s.answering_node_id,
            leader_id: s.leader_id,
            leader_address: s.leader_address,
            term: s.term,
            commit_index: s.commit_index,
            applied_index: s.applied_index,
            members: s.members.into_iter().map(ServerMember::from).collect(),
            revision: s.revision,
            snapshot_index: s.snapshot_index,
        }
    }
}

impl From<Membership> for MembershipResponse {
    fn from(m: Membership) -> Self {
        MembershipResponse {
            cluster_id: m.cluster_id,
            members: m.members.into_iter().map(Member::from).collect(),
        }
    }
}

impl From<MembershipResponse> for Membership {
    fn from(m: MembershipResponse) -> Self {
        Membership {
            cluster_id: m.cluster_id,
            members: m.members.into_iter().map(ServerMember::from).collect(),
        }
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
