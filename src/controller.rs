//! The leader's control loops. They run only while this server leads: they
//! start when leadership is won and stop when it is lost. Each tick reads a
//! fresh view of the state, asks pure decision functions what should change
//! and proposes those changes through Raft (level-triggered: a missed tick
//! is repaired by the next one).

use std::time::{Duration, Instant};

use crate::api::agent::Liveness;
use crate::api::ecs::now_ms;
use crate::raft::node::{RaftHandle, Role};
use crate::store::{Command, Proposal, State};

/// Timing of the control loops.
#[derive(Clone, Debug)]
pub struct ControllerOptions {
    /// How often the loops look at the state.
    pub interval: Duration,
    /// How long an instance may go without a heartbeat before it is DISCONNECTED.
    pub heartbeat_grace: Duration,
    /// How long stopped tasks stay describable.
    pub keep_stopped_tasks: Duration,
}

impl Default for ControllerOptions {
    fn default() -> Self {
        ControllerOptions {
            interval: Duration::from_millis(500),
            heartbeat_grace: Duration::from_secs(10),
            keep_stopped_tasks: Duration::from_secs(3600),
        }
    }
}

/// Which instances changed connectivity. `last_seen` says when this leader
/// last heard each instance; an instance never heard since this server
/// became leader counts from `leader_since`, so a new leader gives every
/// agent a full grace period.
pub fn connectivity_changes(
    state: &State,
    last_seen: impl Fn(&str, &str) -> Option<Instant>,
    leader_since: Instant,
    now: Instant,
    grace: Duration,
) -> Vec<Command> {
    let mut commands = Vec::new();
    for instance in state.container_instances.values() {
        if instance.status == "INACTIVE" {
            continue;
        }
        let seen = last_seen(&instance.cluster, instance.id()).map_or(leader_since, |seen| seen.max(leader_since));
        let alive = now.saturating_duration_since(seen) <= grace;
        if alive != instance.agent_connected {
            commands.push(Command::SetInstanceConnected {
                cluster: instance.cluster.clone(),
                instance_id: instance.id().to_string(),
                connected: alive,
            });
        }
    }
    commands
}

/// Runs the leader loops for the life of the server.
pub async fn run(raft: RaftHandle, liveness: Liveness, options: ControllerOptions) {
    let mut status = raft.watch_status();
    loop {
        if status.wait_for(|s| s.role == Role::Leader).await.is_err() {
            return;
        }
        let leader_since = Instant::now();
        tracing::info!(node = raft.status().id, "leading: control loops started");
        let mut ticker = tokio::time::interval(options.interval);
        let mut last_prune = Instant::now();
        while raft.status().role == Role::Leader {
            tokio::select! {
                _ = ticker.tick() => {}
                changed = status.changed() => if changed.is_err() { return },
            }
            if raft.status().role != Role::Leader {
                break;
            }
            let now = Instant::now();
            let mut commands = raft.store().read(|state| {
                connectivity_changes(
                    state,
                    |cluster, id| liveness.last_seen(cluster, id),
                    leader_since,
                    now,
                    options.heartbeat_grace,
                )
            });
            if now.duration_since(last_prune) > Duration::from_secs(60) {
                last_prune = now;
                let cutoff = now_ms().saturating_sub(options.keep_stopped_tasks.as_millis() as u64);
                let any = raft.store().read(|state| {
                    state.tasks.values().any(|t| {
                        t.last_status == crate::model::TaskStatus::Stopped
                            && t.stopped_at.is_some_and(|at| at * 1000.0 < cutoff as f64)
                    })
                });
                if any {
                    commands.push(Command::PruneStoppedTasks { stopped_before_ms: cutoff });
                }
            }
            for command in commands {
                let proposal = Proposal {
                    request_id: crate::client::request_id(),
                    command,
                };
                if let Err(error) = raft.propose(proposal).await {
                    tracing::debug!(%error, "a control-loop proposal failed; the next tick retries");
                    break;
                }
            }
        }
        tracing::info!(node = raft.status().id, "no longer leading: control loops stopped");
    }
}
