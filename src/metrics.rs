//! Prometheus metrics in the text exposition format, kept in process-wide
//! atomics so recording is a few relaxed adds on hot paths. `render` is what
//! `GET /metrics` returns on every server's listener. It takes plain numbers
//! and imports nothing from the crate, so every layer may record into it.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds, in seconds, of the latency histogram buckets.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// A latency histogram: each observation adds to one bucket (so recording
/// is one add, not one per bucket); `render` makes the counts cumulative.
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    const fn new() -> Self {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; BUCKETS.len()],
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        if let Some(bucket) = BUCKETS.iter().position(|bound| seconds <= *bound) {
            self.buckets[bucket].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_micros
            .fetch_add(elapsed.as_micros() as u64, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        self.render_series(out, name, "");
    }

    /// The samples of one series; `labels` is empty or `a="x",b="y",`.
    fn render_series(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}le=\"+Inf\"}} {count}");
        let plain = labels.trim_end_matches(',');
        let braces = if plain.is_empty() {
            String::new()
        } else {
            format!("{{{plain}}}")
        };
        let _ = writeln!(
            out,
            "{name}_sum{braces} {}",
            self.sum_micros.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

static PROPOSALS_OK: AtomicU64 = AtomicU64::new(0);
static PROPOSALS_FAILED: AtomicU64 = AtomicU64::new(0);
static PROPOSAL_LATENCY: Histogram = Histogram::new();
static FSYNCS: AtomicU64 = AtomicU64::new(0);
static FSYNC_ENTRIES: AtomicU64 = AtomicU64::new(0);
static FSYNC_LATENCY: Histogram = Histogram::new();
static COMPACTION_LATENCY: Histogram = Histogram::new();
static TERM: AtomicU64 = AtomicU64::new(0);
static COMMIT: AtomicU64 = AtomicU64::new(0);
static APPLIED: AtomicU64 = AtomicU64::new(0);
static IS_LEADER: AtomicU64 = AtomicU64::new(0);
static NODE_ID: AtomicU64 = AtomicU64::new(0);
static WATCHES_OPEN: AtomicU64 = AtomicU64::new(0);
static WATCHES_FELL_BEHIND: AtomicU64 = AtomicU64::new(0);
static CONNECTIONS_OPEN: AtomicU64 = AtomicU64::new(0);
static CONNECTIONS_CLOSED_IDLE: AtomicU64 = AtomicU64::new(0);
static ACCEPTS_REFUSED: AtomicU64 = AtomicU64::new(0);
static AWS_REQUESTS: AtomicU64 = AtomicU64::new(0);
static AWS_REQUESTS_FAILED: AtomicU64 = AtomicU64::new(0);
static BLOBS_COPIED: AtomicU64 = AtomicU64::new(0);
static BLOB_BYTES_COPIED: AtomicU64 = AtomicU64::new(0);

/// Counts one open API connection for as long as it lives.
pub struct OpenConnection(());

impl Drop for OpenConnection {
    fn drop(&mut self) {
        CONNECTIONS_OPEN.fetch_sub(1, Relaxed);
    }
}

/// Records an accepted API connection; it holds the guard until it closes.
pub fn connection_opened() -> OpenConnection {
    CONNECTIONS_OPEN.fetch_add(1, Relaxed);
    OpenConnection(())
}

/// Records a connection closed for idleness (or to free its descriptor).
pub fn record_idle_closed() {
    CONNECTIONS_CLOSED_IDLE.fetch_add(1, Relaxed);
}

/// Records a failed accept for lack of file descriptors.
pub fn record_accept_refused() {
    ACCEPTS_REFUSED.fetch_add(1, Relaxed);
}

/// Records one request to the AWS door (`POST /`) and whether it succeeded.
pub fn record_aws_request(ok: bool) {
    AWS_REQUESTS.fetch_add(1, Relaxed);
    if !ok {
        AWS_REQUESTS_FAILED.fetch_add(1, Relaxed);
    }
}

/// Records one registry blob copied from another server, of `size` bytes.
pub fn record_blob_copied(size: u64) {
    BLOBS_COPIED.fetch_add(1, Relaxed);
    BLOB_BYTES_COPIED.fetch_add(size, Relaxed);
}

/// Counts one open `Orc.Watch` stream for as long as it lives.
pub struct OpenWatch(());

impl Drop for OpenWatch {
    fn drop(&mut self) {
        WATCHES_OPEN.fetch_sub(1, Relaxed);
    }
}

/// Records a watch stream opening; the stream holds the guard until it ends.
pub fn watch_opened() -> OpenWatch {
    WATCHES_OPEN.fetch_add(1, Relaxed);
    OpenWatch(())
}

/// Records a watch ended because its watcher fell behind the history.
pub fn record_watch_fell_behind() {
    WATCHES_FELL_BEHIND.fetch_add(1, Relaxed);
}

/// How many watch streams are open in this process.
pub fn watches_open() -> u64 {
    WATCHES_OPEN.load(Relaxed)
}

/// Records one client proposal's commit latency.
pub fn record_proposal(elapsed: Duration, ok: bool) {
    if ok {
        PROPOSALS_OK.fetch_add(1, Relaxed);
    } else {
        PROPOSALS_FAILED.fetch_add(1, Relaxed);
    }
    PROPOSAL_LATENCY.observe(elapsed);
}

/// Records one fsync of the raft log and how many entries it made durable.
pub fn record_fsync(elapsed: Duration, entries: usize) {
    FSYNCS.fetch_add(1, Relaxed);
    FSYNC_ENTRIES.fetch_add(entries as u64, Relaxed);
    FSYNC_LATENCY.observe(elapsed);
}

/// Records a log compaction.
pub fn record_compaction(elapsed: Duration) {
    COMPACTION_LATENCY.observe(elapsed);
}

/// The raft node's gauges as plain numbers, so that this module needs
/// nothing from `raft`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RaftGauges {
    /// This server's raft node id.
    pub node_id: u64,
    /// The current term.
    pub term: u64,
    /// The highest committed index.
    pub commit_index: u64,
    /// The highest applied index.
    pub applied_index: u64,
    /// Whether this server leads.
    pub is_leader: bool,
}

/// Records the raft node's latest gauges.
pub fn record_raft(gauges: RaftGauges) {
    NODE_ID.store(gauges.node_id, Relaxed);
    TERM.store(gauges.term, Relaxed);
    COMMIT.store(gauges.commit_index, Relaxed);
    APPLIED.store(gauges.applied_index, Relaxed);
    IS_LEADER.store(u64::from(gauges.is_leader), Relaxed);
}

fn gauge(out: &mut String, name: &str, help: &str, kind: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

/// The whole exposition text.
pub fn render() -> String {
    let mut out = String::new();
    // A raft id is a u64; as a sample value (a float) it would lose its
    // low digits, so it is a label of an info metric.
    let _ = writeln!(
        out,
        "# HELP orc_raft_node_info This server's raft node id, as a label.\n# TYPE orc_raft_node_info gauge\norc_raft_node_info{{node_id=\"{}\"}} 1",
        NODE_ID.load(Relaxed)
    );
    gauge(
        &mut out,
        "orc_raft_term",
        "Current raft term.",
        "gauge",
        TERM.load(Relaxed),
    );
    gauge(
        &mut out,
        "orc_raft_commit_index",
        "Highest committed raft index.",
        "gauge",
        COMMIT.load(Relaxed),
    );
    gauge(
        &mut out,
        "orc_raft_applied_index",
        "Highest applied raft index.",
        "gauge",
        APPLIED.load(Relaxed),
    );
    gauge(
        &mut out,
        "orc_raft_is_leader",
        "1 when this server leads.",
        "gauge",
        IS_LEADER.load(Relaxed),
    );
    gauge(
        &mut out,
        "orc_proposals_committed_total",
        "Writes committed and applied.",
        "counter",
        PROPOSALS_OK.load(Relaxed),
    );
    gauge(
        &mut out,
        "orc_proposals_failed_total",
        "Writes refused or timed out.",
        "counter",
        PROPOSALS_FAILED.load(Relaxed),
    );
    PROPOSAL_LATENCY.render(
        &mut out,
        "orc_proposal_seconds",
        "Time from proposal to applied outcome.",
    );
    gauge(
        &mut out,
        "orc_raft_fsyncs_total",
        "Flushes of the raft log (one per Ready).",
        "counter",
        FSYNCS.load(Relaxed),
    );
    gauge(
        &mut out,
        "orc_raft_fsync_entries_total",
        "Entries made durable by those flushes.",
        "counter",
        FSYNC_ENTRIES.load(Relaxed),
    );
    FSYNC_LATENCY.render(&mut out, "orc_raft_fsync_seconds", "Duration of one flush.");
    gauge(
        &mut out,
        "orc_raft_compactions_total",
        "Log compactions.",
        "counter",
        // The histogram counts them already.
        COMPACTION_LATENCY.count.load(Relaxed),
    );
    COMPACTION_LATENCY.render(
        &mut out,
        "orc_raft_compaction_seconds",
        "Duration of one compaction: the state checkpoint, its flush and the log cut, all on the raft thread (which sends no heartbeat meanwhile).",
    );
    gauge(
        &mut out,
        "orc_watch_streams",
        "Orc.Watch streams open on this server.",
        "gauge",
        watches_open(),
    );
    gauge(
        &mut out,
        "orc_watch_fell_behind_total",
        "Watch streams ended because the watcher fell behind the change history.",
        "counter",
        WATCHES_FELL_BEHIND.load(Relaxed),
    );
    gauge(
        &mut out,
        "orc_connections_open",
        "API connections open on this server.",
        "gauge",
        CONNECTIONS_OPEN.load(Relaxed),
    );
    gauge(
        &mut out,
        "orc_connections_closed_idle_total",
        "Connections closed because no request was in flight for the idle time-out (or none came within the handshake time-out, or their descriptor was needed).",
        "counter",
        CONNECTIONS_CLOSED_IDLE.load(Relaxed),
    );
    gauge(
        &mut out,
        "orc_accept_refused_total",
        "Connections the listener could not accept for lack of file descriptors.",
        "counter",
        ACCEPTS_REFUSED.load(Relaxed),
    );
    render_load_balancer(&mut out);
    gauge(
        &mut out,
        "orc_aws_requests_total",
        "Requests to the AWS door (POST /).",
        "counter",
        AWS_REQUESTS.load(Relaxed),
    );
    gauge(
        &mut out,
        "orc_aws_requests_failed_total",
        "Requests to the AWS door answered with an error.",
        "counter",
        AWS_REQUESTS_FAILED.load(Relaxed),
    );
    gauge(
        &mut out,
        "orc_registry_blobs_copied_total",
        "Registry blobs this server copied from another server.",
        "counter",
        BLOBS_COPIED.load(Relaxed),
    );
    gauge(
        &mut out,
        "orc_registry_blob_bytes_copied_total",
        "Bytes of registry blobs this server copied from another server.",
        "counter",
        BLOB_BYTES_COPIED.load(Relaxed),
    );
    out
}

// ---- The load balancer's data path (`proxy`), labelled by target group and
// target. The proxy holds an `Arc` to each series it records into (looked up
// once per route change, not per request); a series whose last holder is
// gone is dropped from the exposition.

/// Responses by status class: 1xx, 2xx, 3xx, 4xx, 5xx.
struct StatusClasses([AtomicU64; 5]);

impl StatusClasses {
    const fn new() -> Self {
        StatusClasses([const { AtomicU64::new(0) }; 5])
    }

    fn record(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.0[class].fetch_add(1, Relaxed);
    }
}

/// Shards of the load balancer's per-request series: each proxy worker
/// thread records into its own (`set_thread_shard`), on cache lines of its
/// own, so two workers never write the same line per request; `render`
/// sums the shards.
const SHARDS: usize = 4;

thread_local! {
    /// The shard the calling thread records load balancer series into.
    static SHARD: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Makes the calling thread record the load balancer's series into shard
/// `index` (modulo the shards there are). Threads that never call it use
/// shard 0.
pub fn set_thread_shard(index: usize) {
    SHARD.with(|shard| shard.set(index % SHARDS));
}

/// One shard of a series: requests, responses by class, latency.
#[repr(align(128))]
struct LbShard {
    requests: AtomicU64,
    responses: StatusClasses,
    latency: Histogram,
}

/// A load balancer series' per-request counters, sharded by thread.
struct LbCounters([LbShard; SHARDS]);

impl LbCounters {
    const fn new() -> Self {
        LbCounters(
            [const {
                LbShard {
                    requests: AtomicU64::new(0),
                    responses: StatusClasses::new(),
                    latency: Histogram::new(),
                }
            }; SHARDS],
        )
    }

    fn shard(&self) -> &LbShard {
        &self.0[SHARD.with(std::cell::Cell::get) % SHARDS]
    }

    fn requests(&self) -> u64 {
        self.0.iter().map(|s| s.requests.load(Relaxed)).sum()
    }

    fn responses(&self) -> [u64; 5] {
        let mut sums = [0; 5];
        for shard in &self.0 {
            for (sum, count) in sums.iter_mut().zip(&shard.responses.0) {
                *sum += count.load(Relaxed);
            }
        }
        sums
    }

    /// The shards' latency histograms summed into one.
    fn latency(&self) -> Histogram {
        let sum = Histogram::new();
        for shard in &self.0 {
            for (to, from) in sum.buckets.iter().zip(&shard.latency.buckets) {
                to.fetch_add(from.load(Relaxed), Relaxed);
            }
            sum.count
                .fetch_add(shard.latency.count.load(Relaxed), Relaxed);
            sum.sum_micros
                .fetch_add(shard.latency.sum_micros.load(Relaxed), Relaxed);
        }
        sum
    }

    fn record_request(&self) {
        self.shard().requests.fetch_add(1, Relaxed);
    }

    fn record_response(&self, status: u16, elapsed: Duration) {
        let shard = self.shard();
        shard.responses.record(status);
        shard.latency.observe(elapsed);
    }
}

/// One load balancer target group's series.
pub struct TargetGroupSeries {
    counters: LbCounters,
    healthy_targets: AtomicU64,
    fail_open: AtomicU64,
}

/// One target's series (within its target group).
pub struct TargetSeries {
    counters: LbCounters,
}

impl TargetGroupSeries {
    /// Records a request (an HTTP request or a TCP connection) routed to the group.
    pub fn record_request(&self) {
        self.counters.record_request();
    }

    /// Records the status the client got (the proxy's own 502/503/504
    /// included) and the time to the response head.
    pub fn record_response(&self, status: u16, elapsed: Duration) {
        self.counters.record_response(status, elapsed);
    }

    /// Sets how many of the group's targets are healthy.
    pub fn set_healthy_targets(&self, count: u64) {
        self.healthy_targets.store(count, Relaxed);
    }

    /// Records a request routed while no target was healthy (fail open).
    pub fn record_fail_open(&self) {
        self.fail_open.fetch_add(1, Relaxed);
    }
}

impl TargetSeries {
    /// Records a request (or TCP connection) sent to the target.
    pub fn record_request(&self) {
        self.counters.record_request();
    }

    /// Records the target's response status and its time to the head.
    pub fn record_response(&self, status: u16, elapsed: Duration) {
        self.counters.record_response(status, elapsed);
    }
}

type Registry<K, V> = std::sync::Mutex<std::collections::BTreeMap<K, std::sync::Weak<V>>>;

static TARGET_GROUPS: Registry<String, TargetGroupSeries> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());
static TARGETS: Registry<(String, String), TargetSeries> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

fn series<K: Ord, V>(
    registry: &Registry<K, V>,
    key: K,
    new: impl FnOnce() -> V,
) -> std::sync::Arc<V> {
    let mut map = registry
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(found) = map.get(&key).and_then(std::sync::Weak::upgrade) {
        return found;
    }
    let made = std::sync::Arc::new(new());
    map.insert(key, std::sync::Arc::downgrade(&made));
    made
}

/// The series of the target group named `name` (shared by every holder).
pub fn target_group_series(name: &str) -> std::sync::Arc<TargetGroupSeries> {
    series(&TARGET_GROUPS, name.to_string(), || TargetGroupSeries {
        counters: LbCounters::new(),
        healthy_targets: AtomicU64::new(0),
        fail_open: AtomicU64::new(0),
    })
}

/// The series of target `target` (an address) in target group `group`.
pub fn target_series(group: &str, target: &str) -> std::sync::Arc<TargetSeries> {
    series(&TARGETS, (group.to_string(), target.to_string()), || {
        TargetSeries {
            counters: LbCounters::new(),
        }
    })
}

/// A label value with `\`, `"` and newlines escaped.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn live<K: Clone + Ord, V>(registry: &Registry<K, V>) -> Vec<(K, std::sync::Arc<V>)> {
    let mut map = registry
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    map.retain(|_, weak| weak.strong_count() > 0);
    map.iter()
        .filter_map(|(key, weak)| Some((key.clone(), weak.upgrade()?)))
        .collect()
}

fn family(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn render_load_balancer(out: &mut String) {
    const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
    let groups = live(&TARGET_GROUPS);
    let targets = live(&TARGETS);
    let group_labels: Vec<String> = groups
        .iter()
        .map(|(name, _)| format!("target_group=\"{}\",", label(name)))
        .collect();
    let target_labels: Vec<String> = targets
        .iter()
        .map(|((group, target), _)| {
            format!(
                "target_group=\"{}\",target=\"{}\",",
                label(group),
                label(target)
            )
        })
        .collect();
    let plain = |labels: &str| labels.trim_end_matches(',').to_string();

    family(
        out,
        "orc_lb_requests_total",
        "Requests (HTTP requests, TCP connections) routed by the load balancer, by target group.",
        "counter",
    );
    for ((_, series), labels) in groups.iter().zip(&group_labels) {
        let _ = writeln!(
            out,
            "orc_lb_requests_total{{{}}} {}",
            plain(labels),
            series.counters.requests()
        );
    }
    family(
        out,
        "orc_lb_responses_total",
        "Responses the load balancer's clients got (its own 502/503/504 included), by target group and status class.",
        "counter",
    );
    for ((_, series), labels) in groups.iter().zip(&group_labels) {
        for (class, count) in CLASSES.iter().zip(series.counters.responses()) {
            let _ = writeln!(
                out,
                "orc_lb_responses_total{{{labels}class=\"{class}\"}} {count}"
            );
        }
    }
    let _ = writeln!(out, "# HELP orc_lb_response_seconds Time from a request to its response head, by target group.\n# TYPE orc_lb_response_seconds histogram");
    for ((_, series), labels) in groups.iter().zip(&group_labels) {
        series
            .counters
            .latency()
            .render_series(out, "orc_lb_response_seconds", labels);
    }
    let _ = writeln!(out, "# HELP orc_lb_healthy_targets Healthy targets in the route table, by target group.\n# TYPE orc_lb_healthy_targets gauge");
    for ((_, series), labels) in groups.iter().zip(&group_labels) {
        let _ = writeln!(
            out,
            "orc_lb_healthy_targets{{{}}} {}",
            plain(labels),
            series.healthy_targets.load(Relaxed)
        );
    }
    let _ = writeln!(out, "# HELP orc_lb_fail_open_total Requests routed while no target of the group was healthy (to every target not draining, as ALB does).\n# TYPE orc_lb_fail_open_total counter");
    for ((_, series), labels) in groups.iter().zip(&group_labels) {
        let _ = writeln!(
            out,
            "orc_lb_fail_open_total{{{}}} {}",
            plain(labels),
            series.fail_open.load(Relaxed)
        );
    }
    let _ = writeln!(out, "# HELP orc_lb_target_requests_total Requests (or TCP connections) sent to each target.\n# TYPE orc_lb_target_requests_total counter");
    for ((_, series), labels) in targets.iter().zip(&target_labels) {
        let _ = writeln!(
            out,
            "orc_lb_target_requests_total{{{}}} {}",
            plain(labels),
            series.counters.requests()
        );
    }
    let _ = writeln!(out, "# HELP orc_lb_target_responses_total Responses from each target, by status class.\n# TYPE orc_lb_target_responses_total counter");
    for ((_, series), labels) in targets.iter().zip(&target_labels) {
        for (class, count) in CLASSES.iter().zip(series.counters.responses()) {
            let _ = writeln!(
                out,
                "orc_lb_target_responses_total{{{labels}class=\"{class}\"}} {count}"
            );
        }
    }
    let _ = writeln!(out, "# HELP orc_lb_target_response_seconds Time from sending a request to a target to its response head.\n# TYPE orc_lb_target_response_seconds histogram");
    for ((_, series), labels) in targets.iter().zip(&target_labels) {
        series
            .counters
            .latency()
            .render_series(out, "orc_lb_target_response_seconds", labels);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_id_is_a_label_and_keeps_every_digit() {
        // 2^64 - 59 is not representable as an f64 sample value.
        record_raft(RaftGauges {
            node_id: 18_446_744_073_709_551_557,
            ..RaftGauges::default()
        });
        let text = render();
        assert!(
            text.contains("orc_raft_node_info{node_id=\"18446744073709551557\"} 1\n"),
            "{text}"
        );
        assert!(!text.contains("orc_raft_node_id "), "{text}");
    }
}
