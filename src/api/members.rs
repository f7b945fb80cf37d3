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

/// The answer to `orc cluster status` while no leader is elected: how many
/// voters a quorum needs, and the voters it waits for (those not answering
/// `answering`, with their addresses), so a cluster coming back after a
/// power cut says plainly what it is missing.
pub fn waiting_for_quorum(status: &NodeStatus, state: &State, answering: &[u64]) -> String {
    let mut voters = status.voters.clone();
    voters.sort_unstable();
    let quorum = voters.len() / 2 + 1;
    let missing: Vec<String> = voters
        .iter()
        .filter(|id| **id != status.id && !answering.contains(id))
        .map(|id| match state.member_address(*id) {
            Some(address) => format!("server {id} at {address}"),
            None => format!("server {id} (address not known yet)"),
        })
        .collect();
    let up = voters.len() - missing.len();
    if missing.is_empty() {
        format!(
            "no leader is elected yet: all {} voters answer and an election is under way; retry in a moment",
            voters.len()
        )
    } else {
        format!(
            "no leader is elected yet: waiting for a quorum ({quorum} of {} voters, {up} answering); \
             waiting for {}: start them, or check the network between the servers",
            voters.len(),
            missing.join(", ")
        )
    }
}
