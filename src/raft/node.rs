//! The one place that drives raft-rs. A `RaftNode` runs on its own thread
//! (so an fsync on a slow SD card blocks nothing else) and owns the
//! `RawNode`. Everything else talks to it through a cloneable `RaftHandle`:
//! proposals, read barriers (ReadIndex), membership changes, inbound peer
//! messages. The loop follows raft-rs's Ready cycle: send messages, install a
//! snapshot, apply committed entries (the leader, to answer clients early),
//! append entries and save the hard state, flush once (group commit: every
//! proposal that arrived meanwhile shares that fsync), send the messages that
//! had to wait for the flush, apply committed entries (a follower, after its
//! acknowledgement is on its way), advance.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use protobuf::Message as _;
use raft::eraftpb::{
    ConfChange, ConfChangeType, ConfState, Entry, EntryType, Message, MessageType,
};
use raft::{RawNode, SnapshotStatus, StateRole, Storage as _};
use tokio::sync::{mpsc, oneshot, watch};

use super::storage::SledStorage;
use super::transport::Transport;
use crate::metrics;
use crate::store::{Outcome, Proposal, Store};
use crate::{Error, Result};

/// Timing and compaction settings of a control-plane member.
#[derive(Clone, Debug)]
pub struct RaftConfig {
    /// This member's raft id.
    pub node_id: u64,
    /// How often the leader sends heartbeats; also the tick length.
    pub heartbeat_interval: Duration,
    /// How long followers wait without a heartbeat before an election
    /// (randomized per election between 1.0 and 1.3 times this).
    pub election_timeout: Duration,
    /// Compact the log once this many entries were applied since the last compaction.
    pub snapshot_threshold: u64,
    /// How long a proposal or read waits before it is answered "unavailable".
    pub request_timeout: Duration,
    /// The data dir, named when its storage fails.
    pub data_dir: std::path::PathBuf,
}

impl RaftConfig {
    fn raft_config(&self, applied: u64) -> raft::Config {
        let heartbeat_ms = self.heartbeat_interval.as_millis().max(1);
        let election_ticks = (self.election_timeout.as_millis() / heartbeat_ms).max(3) as usize;
        raft::Config {
            id: self.node_id,
            election_tick: election_ticks,
            // raft-rs randomizes the time-out in [min, max) ticks; orc sets
            // it itself instead, staggered by rank (`election_slot`), and
            // this window holds every slot.
            min_election_tick: election_ticks,
            max_election_tick: election_ticks + 2 + 2 * MAX_ELECTION_RANK,
            heartbeat_tick: 1,
            applied,
            max_size_per_msg: 1024 * 1024,
            // A restart replays the log after the state checkpoint: in
            // slices, so the entries in memory at once stay small next to
            // the state (raft-rs's default hands over all of them at once).
            max_committed_size_per_ready: MAX_COMMITTED_BYTES_PER_READY,
            max_inflight_msgs: 256,
            check_quorum: true,
            pre_vote: true,
            ..Default::default()
        }
    }
}

/// Ranks past this one share the last election slot.
const MAX_ELECTION_RANK: usize = 6;

/// The election time-out of a member, in ticks: `base` (the time-out after
/// which a follower stops honouring the leader it heard from) plus one tick,
/// plus two ticks per member whose id ranks below this one among the voters
/// other than the leader it followed.
///
/// raft-rs draws the time-out at random, and two followers of a dead leader
/// that fire within one message delay of each other both stand, split the
/// vote and wait a whole further time-out (about 1 in 30 failovers on a
/// loaded 2-core machine). Distinct slots two ticks apart cannot collide
/// while a message takes less than a tick, so the first survivor wins in
/// about `base + 1` ticks. The extra tick lets the other followers' own
/// lease (`base` ticks since the last heartbeat) run out first, so they
/// grant the pre-vote instead of ignoring it.
pub(crate) fn election_slot(
    own: u64,
    leader: u64,
    voters: impl IntoIterator<Item = u64>,
    base: usize,
) -> usize {
    let rank = voters
        .into_iter()
        .filter(|&id| id < own && id != leader)
        .count()
        .min(MAX_ELECTION_RANK);
    base + 1 + 2 * rank
}

/// At most about this many bytes of committed entries are applied per Ready.
const MAX_COMMITTED_BYTES_PER_READY: u64 = 1024 * 1024;

/// At most this many decoded proposals are held before they are applied.
const APPLY_BATCH: usize = 256;

/// What the node reports about itself; updated after every loop turn.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeStatus {
    /// This member's id.
    pub id: u64,
    /// The leader's id, 0 when unknown.
    pub leader_id: u64,
    /// The current term.
    pub term: u64,
    /// Leader, follower, candidate or pre-candidate.
    pub role: Role,
    /// The highest index known committed.
    pub commit_index: u64,
    /// The highest index applied to the state machine.
    pub applied_index: u64,
    /// The compaction (snapshot) point of the local log.
    pub snapshot_index: u64,
    /// Voting members.
    pub voters: Vec<u64>,
    /// Non-voting members catching up.
    pub learners: Vec<u64>,
    /// On the leader: per member, (id, matched index, recently active).
    pub progress: Vec<(u64, u64, bool)>,
    /// Set once this member has been removed from the control plane.
    pub removed: bool,
    /// Set when the node stopped because its storage failed: the sentence
    /// every request is refused with (names the data dir and the error).
    pub failed: Option<String>,
}

impl NodeStatus {
    /// Whether `other` has the same role, leader, term, membership and
    /// removal: the fields whose change wakes status watchers.
    fn same_leadership(&self, other: &NodeStatus) -> bool {
        self.id == other.id
            && self.leader_id == other.leader_id
            && self.term == other.term
            && self.role == other.role
            && self.voters == other.voters
            && self.learners == other.learners
            && self.removed == other.removed
            && self.failed == other.failed
    }
}

/// A member's raft role, in words.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Role {
    /// Serves writes and reads.
    Leader,
    /// Replicates the leader's log.
    #[default]
    Follower,
    /// Asking for votes.
    Candidate,
}

impl Role {
    /// The lowercase name shown by `orc cluster status`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Candidate => "candidate",
        }
    }
}

/// How long a retried proposal or read waits for a leadership change before
/// it tries again anyway.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Requests into the node's loop.
enum NodeMessage {
    Step(Vec<Message>),
    Propose(Box<Proposal>, oneshot::Sender<Outcome>),
    ReadIndex(oneshot::Sender<Result<u64>>),
    ConfChange(ConfChange, Vec<u8>, oneshot::Sender<Outcome>),
    TransferLeader(u64),
    Unreachable(u64),
    SnapshotDone(u64, bool),
    Campaign,
    Checkpoint(oneshot::Sender<Result<u64>>),
}

/// A cheap, cloneable door into the raft node.
#[derive(Clone)]
pub struct RaftHandle {
    tx: mpsc::UnboundedSender<NodeMessage>,
    status: watch::Receiver<NodeStatus>,
    store: Arc<Store>,
    request_timeout: Duration,
}

impl RaftHandle {
    /// The replicated state machine.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The node's latest status.
    pub fn status(&self) -> NodeStatus {
        self.status.borrow().clone()
    }

    /// A receiver of status changes. It is woken when the role, leader,
    /// term, membership or removal changes; the indexes and the leader's
    /// progress are kept current without waking anyone (they move with
    /// every write), so read them with `status()` or `borrow()`.
    pub fn watch_status(&self) -> watch::Receiver<NodeStatus> {
        self.status.clone()
    }

    fn send(&self, message: NodeMessage) -> Result<()> {
        self.tx.send(message).map_err(|_| {
            Error::Unavailable(
                self.status
                    .borrow()
                    .failed
                    .clone()
                    .unwrap_or_else(|| "this server is shutting down".into()),
            )
        })
    }

    /// Hands inbound peer messages to raft.
    pub fn step(&self, messages: Vec<Message>) -> Result<()> {
        self.send(NodeMessage::Step(messages))
    }

    /// Proposes a command and waits until it is committed on a quorum and
    /// applied here. A follower forwards the proposal to the leader. When the
    /// node learns that no answer will come (the leader changed, or the
    /// leader it was forwarded to became unreachable), the same proposal is
    /// proposed again at the new leader: its request id makes the state
    /// machine apply it once, whichever copy commits first.
    pub async fn propose(&self, proposal: Proposal) -> Outcome {
        let started = Instant::now();
        let outcome = self
            .ask_until_answered("commit the write", |reply| {
                NodeMessage::Propose(Box::new(proposal.clone()), reply)
            })
            .await;
        metrics::record_proposal(started.elapsed(), outcome.is_ok());
        outcome
    }

    /// Waits until this server has applied everything committed before the
    /// call (ReadIndex), so a read that follows is linearizable.
    pub async fn read_barrier(&self) -> Result<()> {
        let started = Instant::now();
        let index = self
            .ask_until_answered("confirm the leader for a read", NodeMessage::ReadIndex)
            .await?;
        let remaining = self.request_timeout.saturating_sub(started.elapsed());
        self.store
            .wait_applied(index, remaining.max(Duration::from_millis(1)))
            .await
    }

    /// Sends a request into the node and waits for its answer; a retryable
    /// answer (no leader yet, leader changed, leader unreachable) is retried
    /// once the leadership changes, or after a short pause, until
    /// `request_timeout` has passed since the first attempt.
    async fn ask_until_answered<T>(
        &self,
        what: &str,
        request: impl Fn(oneshot::Sender<Result<T>>) -> NodeMessage,
    ) -> Result<T> {
        let deadline = Instant::now() + self.request_timeout;
        let mut status = self.status.clone();
        loop {
            if let Some(failure) = &status.borrow_and_update().failed {
                return Err(Error::Unavailable(failure.clone()));
            }
            let (reply, receive) = oneshot::channel();
            self.send(request(reply))?;
            let remaining = deadline.saturating_duration_since(Instant::now());
            let error = match tokio::time::timeout(remaining, receive).await {
                Ok(Ok(Ok(value))) => return Ok(value),
                Ok(Ok(Err(error))) if error.is_retryable() => error,
                Ok(Ok(Err(error))) => return Err(error),
                Ok(Err(_)) => return Err(self.stopped(what)),
                Err(_) => return Err(self.timed_out(what)),
            };
            let pause = RETRY_PAUSE.min(deadline.saturating_duration_since(Instant::now()));
            if pause.is_zero() {
                return Err(error);
            }
            tracing::debug!(node = status.borrow().id, %error, "retrying at the current leader");
            // A leadership change (seen since this attempt began) wakes the
            // retry at once; otherwise (a forward to a leader that is still
            // unreachable, no leader yet) it waits a moment.
            if let Ok(Err(_)) = tokio::time::timeout(pause, status.changed()).await {
                return Err(self.stopped(what));
            }
        }
    }

    fn stopped(&self, what: &str) -> Error {
        match &self.status.borrow().failed {
            Some(failure) => Error::Unavailable(failure.clone()),
            None => Error::Unavailable(format!("the server stopped before it could {what}; retry")),
        }
    }

    fn timed_out(&self, what: &str) -> Error {
        Error::Unavailable(format!(
            "timed out after {:?} waiting to {what}: the control plane may have lost its quorum; check `orc cluster status` and retry",
            self.request_timeout
        ))
    }

    /// Proposes a membership change; `address` travels with it.
    pub async fn change_membership(
        &self,
        change_type: ConfChangeType,
        node_id: u64,
        address: &str,
    ) -> Outcome {
        let mut change = ConfChange::default();
        change.set_change_type(change_type);
        change.node_id = node_id;
        let (reply, receive) = oneshot::channel();
        self.send(NodeMessage::ConfChange(
            change,
            address.as_bytes().to_vec(),
            reply,
        ))?;
        self.wait(receive, "commit the membership change").await
    }

    /// Asks the leader (this node) to hand leadership to `to`.
    pub fn transfer_leader(&self, to: u64) -> Result<()> {
        self.send(NodeMessage::TransferLeader(to))
    }

    /// Writes a state checkpoint of everything applied and flushes it (a
    /// graceful stop asks, so the next start replays nothing); returns the
    /// raft index it reflects.
    pub async fn checkpoint(&self) -> Result<u64> {
        let (reply, receive) = oneshot::channel();
        self.send(NodeMessage::Checkpoint(reply))?;
        self.wait(receive, "write a state checkpoint").await
    }

    /// Starts an election now (used once by a freshly bootstrapped server).
    pub fn campaign(&self) -> Result<()> {
        self.send(NodeMessage::Campaign)
    }

    pub(crate) fn report_unreachable(&self, id: u64) {
        let _ = self.tx.send(NodeMessage::Unreachable(id));
    }

    pub(crate) fn report_snapshot(&self, id: u64, delivered: bool) {
        let _ = self.tx.send(NodeMessage::SnapshotDone(id, delivered));
    }

    async fn wait<T>(&self, receive: oneshot::Receiver<Result<T>>, what: &str) -> Result<T> {
        match tokio::time::timeout(self.request_timeout, receive).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(self.stopped(what)),
            Err(_) => Err(self.timed_out(what)),
        }
    }
}

/// The raft loop's own state.
struct RaftNode {
    raw: RawNode<SledStorage>,
    storage: SledStorage,
    store: Arc<Store>,
    transport: Arc<Transport>,
    config: RaftConfig,
    rx: mpsc::UnboundedReceiver<NodeMessage>,
    status_tx: watch::Sender<NodeStatus>,
    next_sequence: u64,
    pending_proposals: HashMap<u64, (oneshot::Sender<Outcome>, Instant)>,
    pending_reads: HashMap<u64, (oneshot::Sender<Result<u64>>, Instant)>,
    removed: bool,
    /// Bytes of entries applied since the newest state checkpoint.
    applied_bytes: u64,
    /// The (term, leader) the pending requests were made under.
    leadership: (u64, u64),
    /// On the leader, while a follower's forwarded proposal is not yet
    /// committed: the last log index it may sit at. Until the commit index
    /// reaches it, every commit is broadcast at once (instead of riding on
    /// the next heartbeat), so the follower applies the write and answers
    /// its client one message later. 0 when no forwarded proposal waits.
    broadcast_commits_until: u64,
}

/// Starts the raft node on its own thread and returns its handle.
pub fn start(
    config: RaftConfig,
    storage: SledStorage,
    store: Arc<Store>,
    transport: Arc<Transport>,
) -> Result<RaftHandle> {
    let applied = store.applied_index();
    // The state machine is only ever fed committed entries, but its rows may
    // reach the disk before the hard state's commit index does (that index is
    // not worth an fsync of its own). Whatever was applied was committed.
    let last_index = storage.last_index().unwrap_or(0);
    storage.set_commit(applied.min(last_index))?;
    let raw = RawNode::new(
        &config.raft_config(applied),
        storage.clone(),
        &super::log::logger(config.node_id),
    )
    .map_err(|e| Error::Internal(format!("cannot start raft: {e}")))?;
    // Followers learn the commit index from the next append or heartbeat
    // instead of an extra broadcast per commit: half the messages per write.
    let mut raw = raw;
    raw.skip_bcast_commit(true);
    let (tx, rx) = mpsc::unbounded_channel();
    let (status_tx, status) = watch::channel(NodeStatus {
        id: config.node_id,
        ..Default::default()
    });
    let handle = RaftHandle {
        tx,
        status,
        store: store.clone(),
        request_timeout: config.request_timeout,
    };
    transport.attach(handle.clone());
    let mut node = RaftNode {
        raw,
        storage,
        store,
        transport,
        config,
        rx,
        status_tx,
        next_sequence: 1,
        pending_proposals: HashMap::new(),
        pending_reads: HashMap::new(),
        removed: false,
        applied_bytes: 0,
        leadership: (0, 0),
        broadcast_commits_until: 0,
    };
    std::thread::Builder::new()
        .name(format!("raft-{}", node.config.node_id))
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime always builds");
            runtime.block_on(async move {
                if let Err(error) = node.run().await {
                    node.stop_failed(&error);
                }
            });
        })
        .map_err(|e| Error::Internal(format!("cannot start the raft thread: {e}")))?;
    Ok(handle)
}

/// Lets the raft thread's runtime write what was just queued for peers.
/// The peer connections live on that runtime (`Transport::send` makes them
/// from this thread), so the raft thread writes to the sockets itself, with
/// no hand-off to another thread; a turn of its scheduler polls the stream
/// body and the connection.
async fn pump_transport() {
    for _ in 0..2 {
        tokio::task::yield_now().await;
    }
}

fn context(node_id: u64, sequence: u64, extra: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(16 + extra.len());
    bytes.extend_from_slice(&node_id.to_be_bytes());
    bytes.extend_from_slice(&sequence.to_be_bytes());
    bytes.extend_from_slice(extra);
    bytes
}

/// Splits a proposal's context into (proposer, sequence, extra bytes: the
/// address of a member a conf change adds).
pub(crate) fn parse_context(bytes: &[u8]) -> Option<(u64, u64, &[u8])> {
    if bytes.len() < 16 {
        return None;
    }
    let node = u64::from_be_bytes(bytes[0..8].try_into().ok()?);
    let sequence = u64::from_be_bytes(bytes[8..16].try_into().ok()?);
    Some((node, sequence, &bytes[16..]))
}

impl RaftNode {
    /// Puts this member's election time-out in its slot (raft-rs draws a
    /// random one at every term change; see `election_slot`).
    fn stagger_election(&mut self) {
        let raft = &mut self.raw.raft;
        let slot = election_slot(
            raft.id,
            raft.leader_id,
            raft.prs().conf().voters().ids().iter(),
            raft.election_timeout(),
        );
        if raft.randomized_election_timeout() != slot {
            raft.set_randomized_election_timeout(slot);
        }
    }

    async fn run(&mut self) -> Result<()> {
        let mut ticker = tokio::time::interval(self.config.heartbeat_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    self.stagger_election();
                    self.raw.tick();
                    self.expire_pending();
                    self.maybe_promote_learners();
                }
                message = self.rx.recv() => match message {
                    Some(message) => self.handle(message),
                    None => return Ok(()),
                },
            }
            // Group commit: take everything already queued before the next Ready.
            let mut drained = 0;
            while drained < 4096 {
                match self.rx.try_recv() {
                    Ok(message) => self.handle(message),
                    Err(_) => break,
                }
                drained += 1;
            }
            self.on_ready().await?;
            // Committed entries come in slices of about
            // MAX_COMMITTED_BYTES_PER_READY (a restart replaying its log):
            // take the next slices now, not at the next tick.
            let mut slices = 0;
            while slices < 64 && self.raw.has_ready() {
                self.on_ready().await?;
                slices += 1;
            }
            self.after_turn();
            self.publish_status();
        }
    }

    /// The loop ended with an error (every error it returns comes from
    /// storage: a full disk, an I/O error): this server can no longer keep
    /// its promises, so it says so in its status, which stops it claiming
    /// health and makes every request fail at once with the reason, and
    /// answers what was pending the same way.
    fn stop_failed(&mut self, error: &Error) {
        let reason = format!(
            "this server's storage in {} failed ({}): it no longer serves requests; free space or fix the disk, then restart it (other servers carry on)",
            self.config.data_dir.display(),
            error.to_string().trim_start_matches("internal error: ")
        );
        tracing::error!(node = self.config.node_id, data_dir = %self.config.data_dir.display(), %error, "raft node stopped: storage failed");
        self.fail_pending(&reason);
        self.status_tx.send_modify(|status| {
            status.failed = Some(reason.clone());
            status.role = Role::Follower;
            status.leader_id = 0;
            status.progress.clear();
        });
        // Requests that arrive from now on are refused by the handle (it
        // reads `failed`); those already queued are answered here.
        self.rx.close();
        while let Ok(message) = self.rx.try_recv() {
            match message {
                NodeMessage::Propose(_, reply) | NodeMessage::ConfChange(_, _, reply) => {
                    let _ = reply.send(Err(Error::Unavailable(reason.clone())));
                }
                NodeMessage::ReadIndex(reply) => {
                    let _ = reply.send(Err(Error::Unavailable(reason.clone())));
                }
                _ => {}
            }
        }
    }

    fn sequence(&mut self) -> u64 {
        self.next_sequence += 1;
        self.next_sequence
    }

    fn not_leader(&self) -> Error {
        let leader = self.raw.raft.leader_id;
        if leader == 0 || leader == self.config.node_id {
            Error::Unavailable(
                "no leader is elected right now (is a majority of servers up?); retry in a moment"
                    .into(),
            )
        } else {
            Error::NotLeader {
                leader_address: self
                    .store
                    .read(|s| s.member_address(leader).map(str::to_string)),
            }
        }
    }

    fn handle(&mut self, message: NodeMessage) {
        match message {
            NodeMessage::Step(messages) => {
                for message in messages {
                    let forwarded_proposal = message.get_msg_type() == MessageType::MsgPropose
                        && message.from != self.config.node_id;
                    if let Err(error) = self.raw.step(message) {
                        tracing::debug!(node = self.config.node_id, %error, "dropped a raft message");
                    } else if forwarded_proposal && self.raw.raft.state == StateRole::Leader {
                        self.raw.skip_bcast_commit(false);
                        self.broadcast_commits_until = self.raw.raft.raft_log.last_index();
                    }
                }
            }
            NodeMessage::Propose(proposal, reply) => {
                let data = match serde_json::to_vec(&proposal) {
                    Ok(data) => data,
                    Err(error) => {
                        let _ = reply.send(Err(Error::Internal(format!(
                            "cannot encode a proposal: {error}"
                        ))));
                        return;
                    }
                };
                let sequence = self.sequence();
                match self
                    .raw
                    .propose(context(self.config.node_id, sequence, &[]), data)
                {
                    Ok(()) => {
                        self.pending_proposals
                            .insert(sequence, (reply, Instant::now()));
                    }
                    Err(_) => {
                        let _ = reply.send(Err(self.not_leader()));
                    }
                }
            }
            NodeMessage::ReadIndex(reply) => {
                if self.raw.raft.leader_id == 0 {
                    let _ = reply.send(Err(self.not_leader()));
                    return;
                }
                let sequence = self.sequence();
                self.raw
                    .read_index(context(self.config.node_id, sequence, &[]));
                self.pending_reads.insert(sequence, (reply, Instant::now()));
            }
            NodeMessage::ConfChange(change, address, reply) => {
                if self.raw.raft.state != StateRole::Leader {
                    let _ = reply.send(Err(self.not_leader()));
                    return;
                }
                if self.raw.raft.has_pending_conf() {
                    let _ = reply.send(Err(Error::Unavailable(
                        "another membership change is in progress; retry when it completes".into(),
                    )));
                    return;
                }
                let sequence = self.sequence();
                match self
                    .raw
                    .propose_conf_change(context(self.config.node_id, sequence, &address), change)
                {
                    Ok(()) => {
                        self.pending_proposals
                            .insert(sequence, (reply, Instant::now()));
                    }
                    Err(error) => {
                        let _ = reply.send(Err(Error::InvalidInput(format!(
                            "the membership change was refused: {error}"
                        ))));
                    }
                }
            }
            NodeMessage::TransferLeader(to) => self.raw.transfer_leader(to),
            NodeMessage::Unreachable(id) => {
                self.raw.report_unreachable(id);
                // What this follower forwarded to an unreachable leader gets
                // no answer: tell the waiters now, they propose again.
                if id == self.raw.raft.leader_id && self.raw.raft.state != StateRole::Leader {
                    self.fail_pending(&format!(
                        "the leader (server {id}) became unreachable before the request was answered; retry"
                    ));
                }
            }
            NodeMessage::SnapshotDone(id, delivered) => {
                let status = if delivered {
                    SnapshotStatus::Finish
                } else {
                    SnapshotStatus::Failure
                };
                self.raw.report_snapshot(id, status);
            }
            NodeMessage::Campaign => {
                if let Err(error) = self.raw.campaign() {
                    tracing::warn!(node = self.config.node_id, %error, "could not start an election");
                }
            }
            NodeMessage::Checkpoint(reply) => {
                let _ = reply.send(self.checkpoint_now());
            }
        }
    }

    /// Answers every pending proposal and read with a retryable error: no
    /// answer will come for them (a retry under the same request id is safe).
    fn fail_pending(&mut self, why: &str) {
        if self.pending_proposals.is_empty() && self.pending_reads.is_empty() {
            return;
        }
        tracing::debug!(
            node = self.config.node_id,
            proposals = self.pending_proposals.len(),
            reads = self.pending_reads.len(),
            why,
            "failing pending requests"
        );
        for (_, (reply, _)) in self.pending_proposals.drain() {
            let _ = reply.send(Err(Error::Unavailable(why.to_string())));
        }
        for (_, (reply, _)) in self.pending_reads.drain() {
            let _ = reply.send(Err(Error::Unavailable(why.to_string())));
        }
    }

    /// After each turn: a new term or leader (this server lost leadership,
    /// or the leader it forwarded to was replaced) means the pending
    /// requests may never be answered, so they are failed for a retry; and
    /// commits go back to riding on heartbeats once no forwarded proposal waits.
    fn after_turn(&mut self) {
        let leadership = (self.raw.raft.term, self.raw.raft.leader_id);
        if leadership != self.leadership {
            let (term, leader) = leadership;
            if self.leadership != (0, 0) {
                self.fail_pending(&format!(
                    "the leader changed (term {term}, leader {leader}) before the request was answered; retry"
                ));
            }
            self.leadership = leadership;
        }
        if self.broadcast_commits_until != 0
            && (self.raw.raft.state != StateRole::Leader
                || self.raw.raft.raft_log.committed >= self.broadcast_commits_until)
        {
            self.raw.skip_bcast_commit(true);
            self.broadcast_commits_until = 0;
        }
    }

    /// Answers proposals and reads that waited too long (their entries may
    /// have been lost with a leader change; a retry with the same request id
    /// is safe).
    fn expire_pending(&mut self) {
        let timeout = self.config.request_timeout;
        self.pending_proposals
            .retain(|_, (reply, since)| since.elapsed() < timeout && !reply.is_closed());
        self.pending_reads
            .retain(|_, (reply, since)| since.elapsed() < timeout && !reply.is_closed());
    }

    /// On the leader: a learner that caught up becomes a voter.
    fn maybe_promote_learners(&mut self) {
        if self.raw.raft.state != StateRole::Leader || self.raw.raft.has_pending_conf() {
            return;
        }
        let committed = self.raw.raft.raft_log.committed;
        let learners = self
            .raw
            .raft
            .prs()
            .conf()
            .learners()
            .iter()
            .copied()
            .collect::<Vec<u64>>();
        for learner in learners {
            let caught_up = self.raw.raft.prs().get(learner).is_some_and(|progress| {
                progress.matched + 5 >= committed && progress.recent_active
            });
            if caught_up {
                let address = self
                    .store
                    .read(|s| s.member_address(learner).map(str::to_string))
                    .unwrap_or_default();
                let mut change = ConfChange::default();
                change.set_change_type(ConfChangeType::AddNode);
                change.node_id = learner;
                let sequence = self.sequence();
                match self.raw.propose_conf_change(
                    context(self.config.node_id, sequence, address.as_bytes()),
                    change,
                ) {
                    Ok(()) => tracing::info!(
                        node = self.config.node_id,
                        learner,
                        "promoting a caught-up learner to voter"
                    ),
                    Err(error) => {
                        tracing::warn!(node = self.config.node_id, learner, %error, "could not promote a learner")
                    }
                }
                return;
            }
        }
    }

    async fn on_ready(&mut self) -> Result<()> {
        if !self.raw.has_ready() {
            return Ok(());
        }
        let mut ready = self.raw.ready();
        if !ready.messages().is_empty() {
            self.transport.send(ready.take_messages());
            // Appends leave before this server's own fsync, so a follower's
            // fsync runs during it.
            pump_transport().await;
        }
        let mut must_flush = false;
        if !ready.snapshot().is_empty() {
            let snapshot = ready.snapshot().clone();
            let index = snapshot.get_metadata().index;
            tracing::info!(
                node = self.config.node_id,
                index,
                "installing a snapshot from the leader"
            );
            self.storage.apply_snapshot(&snapshot)?;
            self.applied_bytes = 0;
            must_flush = true;
        }
        // The leader answers clients for committed entries before its own
        // fsync; a follower acknowledges the new entries first (the leader
        // waits on that) and applies after.
        let leader = self.raw.raft.state == StateRole::Leader;
        if leader {
            self.apply_committed(ready.take_committed_entries())?;
        }
        if !ready.entries().is_empty() {
            self.storage.append(ready.entries())?;
            must_flush = true;
        }
        if let Some(hard_state) = ready.hs() {
            // A new term or vote must be durable before anyone hears of it; a
            // commit index alone can be learned again, so it costs neither a
            // write nor an fsync (etcd's MustSync rule).
            if self.storage.term_or_vote_differs(hard_state) {
                self.storage.set_hard_state(hard_state)?;
            } else {
                self.storage.note_commit(hard_state.commit);
            }
            must_flush |= ready.must_sync();
        }
        if must_flush {
            let started = Instant::now();
            self.storage.flush()?;
            metrics::record_fsync(started.elapsed(), ready.entries().len());
        }
        if !ready.persisted_messages().is_empty() {
            self.transport.send(ready.take_persisted_messages());
            pump_transport().await;
        }
        if !leader {
            self.apply_committed(ready.take_committed_entries())?;
        }
        for read_state in ready.take_read_states() {
            if let Some((node, sequence, _)) = parse_context(&read_state.request_ctx) {
                if node == self.config.node_id {
                    if let Some((reply, _)) = self.pending_reads.remove(&sequence) {
                        let _ = reply.send(Ok(read_state.index));
                    }
                }
            }
        }
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.storage.note_commit(commit);
        }
        self.transport.send(light.take_messages());
        self.apply_committed(light.take_committed_entries())?;
        self.raw.advance_apply();
        self.maybe_compact()?;
        Ok(())
    }

    fn apply_committed(&mut self, entries: Vec<Entry>) -> Result<()> {
        let mut batch: Vec<(u64, Option<Proposal>)> = Vec::new();
        let mut contexts: HashMap<u64, u64> = HashMap::new();
        for entry in entries {
            self.applied_bytes += (entry.data.len() + entry.context.len()) as u64;
            match entry.get_entry_type() {
                EntryType::EntryNormal => {
                    if entry.data.is_empty() {
                        batch.push((entry.index, None));
                        continue;
                    }
                    match serde_json::from_slice::<Proposal>(&entry.data) {
                        Ok(proposal) => {
                            if let Some((node, sequence, _)) = parse_context(&entry.context) {
                                if node == self.config.node_id {
                                    contexts.insert(entry.index, sequence);
                                }
                            }
                            batch.push((entry.index, Some(proposal)));
                            if batch.len() >= APPLY_BATCH {
                                self.flush_batch(&mut batch, &mut contexts)?;
                            }
                        }
                        Err(error) => {
                            // Every server skips it the same way, so state stays identical.
                            tracing::error!(node = self.config.node_id, index = entry.index, %error, "skipping an undecodable entry");
                            batch.push((entry.index, None));
                        }
                    }
                }
                EntryType::EntryConfChange => {
                    self.flush_batch(&mut batch, &mut contexts)?;
                    self.apply_conf_change(&entry)?;
                }
                EntryType::EntryConfChangeV2 => {
                    self.flush_batch(&mut batch, &mut contexts)?;
                    tracing::error!(
                        node = self.config.node_id,
                        index = entry.index,
                        "joint conf changes are not used by orc; skipped"
                    );
                    self.store.advance_applied(entry.index);
                }
            }
        }
        self.flush_batch(&mut batch, &mut contexts)
    }

    fn flush_batch(
        &mut self,
        batch: &mut Vec<(u64, Option<Proposal>)>,
        contexts: &mut HashMap<u64, u64>,
    ) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let outcomes = self.store.apply_entries(std::mem::take(batch));
        for (index, outcome) in outcomes {
            if let Some(sequence) = contexts.remove(&index) {
                if let Some((reply, _)) = self.pending_proposals.remove(&sequence) {
                    let _ = reply.send(outcome);
                }
            }
        }
        contexts.clear();
        Ok(())
    }

    fn apply_conf_change(&mut self, entry: &Entry) -> Result<()> {
        let change = ConfChange::parse_from_bytes(&entry.data).map_err(|e| {
            Error::Internal(format!(
                "undecodable conf change at index {}: {e}",
                entry.index
            ))
        })?;
        let (proposer, sequence, address) = parse_context(&entry.context).unwrap_or((0, 0, &[]));
        let address = String::from_utf8_lossy(address).to_string();
        let removed = change.get_change_type() == ConfChangeType::RemoveNode;
        if entry.index <= self.storage.conf_index() {
            // Re-applied after a restart (the state checkpoint is older than
            // this entry): raft-rs already started from the conf state that
            // includes it, so only the state machine's member list is replayed.
            self.store.apply_membership(
                entry.index,
                change.node_id,
                if removed { None } else { Some(address) },
            );
            return Ok(());
        }
        let before = self.storage.conf_state();
        let outcome = match self.raw.apply_conf_change(&change) {
            Ok(conf_state) => {
                self.storage.set_conf_state(&conf_state, entry.index)?;
                self.store.apply_membership(
                    entry.index,
                    change.node_id,
                    if removed { None } else { Some(address.clone()) },
                );
                if !removed && !address.is_empty() {
                    self.transport.set_address(change.node_id, &address);
                }
                tracing::info!(
                    node = self.config.node_id,
                    member = change.node_id,
                    change = ?change.get_change_type(),
                    voters = ?conf_state.voters,
                    learners = ?conf_state.learners,
                    "membership changed"
                );
                if conf_state.voters.len() == 2 && before.voters.len() != 2 {
                    tracing::warn!(
                        node = self.config.node_id,
                        voters = ?conf_state.voters,
                        "the control plane now has 2 voters, which tolerate no failure: if either stops, nothing can be written or read until it returns; add a third server (`orc server --join ADDRESS`)"
                    );
                }
                if removed
                    && change.node_id == self.config.node_id
                    && was_member(&before, self.config.node_id)
                {
                    tracing::warn!(
                        node = self.config.node_id,
                        "this server was removed from the control plane"
                    );
                    self.removed = true;
                }
                if proposer == self.config.node_id {
                    if let Some((reply, _)) = self.pending_proposals.remove(&sequence) {
                        let _ = reply.send(Ok(serde_json::json!({"voters": conf_state.voters, "learners": conf_state.learners})));
                    }
                }
                Ok(())
            }
            Err(error) => {
                tracing::warn!(node = self.config.node_id, %error, "conf change rejected");
                self.store.advance_applied(entry.index);
                Ok(())
            }
        };
        outcome
    }

    /// A checkpoint of everything applied, flushed (unless the newest one
    /// already reflects it). The log is left as it is: the next compaction
    /// cuts it.
    fn checkpoint_now(&mut self) -> Result<u64> {
        if self.store.checkpoint_index() >= self.store.applied_index() {
            return Ok(self.store.checkpoint_index());
        }
        let index = self.store.checkpoint()?;
        self.storage.flush()?;
        self.applied_bytes = 0;
        Ok(index)
    }

    fn maybe_compact(&mut self) -> Result<()> {
        let applied = self.store.applied_index();
        let compacted = self.storage.compacted_index();
        if applied <= compacted + self.config.snapshot_threshold {
            return Ok(());
        }
        // A checkpoint writes the whole state: wait until at least as many
        // bytes of log were applied since the last one, so checkpoints cost
        // at most one byte per byte written to the log however big the state
        // grows (the log then holds about one state's worth at most).
        if self.applied_bytes < self.store.checkpoint_bytes() {
            return Ok(());
        }
        // Keep a tail so a briefly lagging follower catches up from the log.
        let keep = self.config.snapshot_threshold / 4;
        let to = applied.saturating_sub(keep);
        if to <= compacted {
            return Ok(());
        }
        // The state machine must be durable before its log entries go: write
        // a checkpoint of it (as of `applied`, past `to`) and flush.
        let started = Instant::now();
        self.store.checkpoint()?;
        self.storage.flush()?;
        self.storage.compact(to)?;
        self.applied_bytes = 0;
        let elapsed = started.elapsed();
        metrics::record_compaction(elapsed);
        tracing::debug!(
            node = self.config.node_id,
            to,
            checkpoint_bytes = self.store.checkpoint_bytes(),
            elapsed_ms = elapsed.as_secs_f64() * 1e3,
            "compacted the raft log"
        );
        Ok(())
    }

    fn publish_status(&mut self) {
        let raft = &self.raw.raft;
        let conf: ConfState = self.storage.conf_state();
        let progress = if raft.state == StateRole::Leader {
            raft.prs()
                .iter()
                .map(|(id, progress)| {
                    (
                        *id,
                        progress.matched,
                        progress.recent_active || *id == self.config.node_id,
                    )
                })
                .collect()
        } else {
            Vec::new()
        };
        let status = NodeStatus {
            id: self.config.node_id,
            leader_id: raft.leader_id,
            term: raft.term,
            role: match raft.state {
                StateRole::Leader => Role::Leader,
                StateRole::Follower => Role::Follower,
                StateRole::Candidate | StateRole::PreCandidate => Role::Candidate,
            },
            commit_index: raft.raft_log.committed,
            applied_index: self.store.applied_index(),
            snapshot_index: self.storage.first_index().unwrap_or(1).saturating_sub(1),
            voters: conf.voters,
            learners: conf.learners,
            progress,
            removed: self.removed,
            failed: None,
        };
        metrics::record_raft(metrics::RaftGauges {
            node_id: status.id,
            term: status.term,
            commit_index: status.commit_index,
            applied_index: status.applied_index,
            is_leader: status.role == Role::Leader,
        });
        self.status_tx.send_if_modified(|current| {
            let wake = !current.same_leadership(&status);
            *current = status;
            wake
        });
    }
}

fn was_member(conf_state: &ConfState, id: u64) -> bool {
    conf_state.voters.contains(&id) || conf_state.learners.contains(&id)
}

#[cfg(test)]
mod tests {
    use super::election_slot;

    #[test]
    fn the_followers_of_a_dead_leader_get_slots_two_ticks_apart() {
        // Voters 7, 3 and 9; 3 led and died.
        assert_eq!(election_slot(7, 3, [7, 3, 9], 10), 11);
        assert_eq!(election_slot(9, 3, [7, 3, 9], 10), 13);
        // 9 led: 3 and 7 survive.
        assert_eq!(election_slot(3, 9, [7, 3, 9], 10), 11);
        assert_eq!(election_slot(7, 9, [7, 3, 9], 10), 13);
    }

    #[test]
    fn with_no_leader_known_every_voter_counts_and_slots_stay_distinct() {
        let voters = [5, 1, 4, 2, 3];
        let mut slots: Vec<usize> = voters
            .iter()
            .map(|&own| election_slot(own, 0, voters, 10))
            .collect();
        slots.sort();
        assert_eq!(slots, vec![11, 13, 15, 17, 19]);
    }

    #[test]
    fn slots_stay_inside_the_window_raft_rs_accepts() {
        let voters: Vec<u64> = (1..=20).collect();
        let config = super::RaftConfig {
            node_id: 20,
            heartbeat_interval: std::time::Duration::from_millis(100),
            election_timeout: std::time::Duration::from_millis(1000),
            snapshot_threshold: 1,
            request_timeout: std::time::Duration::from_secs(1),
            data_dir: std::path::PathBuf::new(),
        }
        .raft_config(0);
        let slot = election_slot(20, 0, voters, config.election_tick);
        assert!(config.min_election_tick <= slot && slot < config.max_election_tick);
    }
}
