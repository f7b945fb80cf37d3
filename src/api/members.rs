//! The control plane's membership and status answers, built from the raft
//! status and the replicated member addresses.

use crate::model::{ControlPlaneStatus, ServerMember};
use crate::raft::node::{NodeStatus, Role};
use crate::store::State;

/// Builds the member list from the raft status and the replicated addresses.
pub fn members(status: &NodeStatus, state: &State) -> Vec<ServerMember> {
    let mut ids: Vec<u64> = status
        .voters
        .iter()
        .chain(&status.learners)
        .copied()
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids.into_iter()
        .map(|id| {
            let progress = status.progress.iter().find(|(member, _, _)| *member == id);
            let learner = status.learners.contains(&id);
            let failure = if id == status.id {
                status.failed.clone().unwrap_or_default()
            } else {
                String::new()
            };
            let role = if !failure.is_empty() {
                "failed"
            } else if id == status.leader_id {
                "leader"
            } else if learner {
                "learner"
            } else if id == status.id && status.role == Role::Candidate {
                "candidate"
            } else {
                "follower"
            };
            let healthy = match progress {
                Some((_, _, active)) => *active,
                // Only the leader knows its followers' health; a member answers for itself.
                None => (id == status.id || id == status.leader_id) && failure.is_empty(),
            };
            ServerMember {
                id,
                address: state.member_address(id).unwrap_or_default().to_string(),
                role: role.to_string(),
                voter: !learner,
                matched_index: progress.map(|(_, matched, _)| *matched).unwrap_or(0),
                healthy,
                failure,
            }
        })
        .collect()
}

/// The `orc cluster status` answer of this server.
pub fn cluster_status(status: &NodeStatus, state: &State) -> ControlPlaneStatus {
    ControlPlaneStatus {
        cluster_id: state.meta.control_plane_id.clone(),
        answering_node_id: status.id,
        leader_id: status.leader_id,
        leader_address: state
            .member_address(status.leader_id)
            .unwrap_or_default()
            .to_string(),
        term: status.term,
        commit_index: status.commit_index,
        applied_index: status.applied_index,
        members: members(status, state),
        revision: state.meta.revision,
        snapshot_index: status.snapshot_index,
    }
}
