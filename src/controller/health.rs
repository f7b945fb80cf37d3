//! The leader's target health checks: the effect around
//! `scheduler::health::observe`. While this server leads, every registered
//! target that is not draining, in a target group whose checks are enabled,
//! is probed per its group's settings (HTTP GET of the path on the traffic
//! port or the given port, or a TCP connect; each within the time-out, once
//! per interval). Results are counted in memory, per target, by the pure
//! decision; only transitions are proposed, as `SetTargetHealth`, so a
//! cluster whose targets keep their state writes nothing. A new leader
//! starts counting afresh from the states the cluster holds.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::task::JoinSet;

use crate::model::elbv2::{parse_matcher, TargetHealth};
use crate::raft::node::RaftHandle;
use crate::scheduler::health::{
    self, CheckResult, Streak, Thresholds, FAILED_HEALTH_CHECKS, RESPONSE_CODE_MISMATCH, TIMEOUT,
};
use crate::store::elbv2::{Elbv2Command, TargetHealthChange};
use crate::store::{Command, Proposal, State};

/// How often the loop looks for due checks and finished ones.
const TICK: Duration = Duration::from_millis(250);

/// The most bytes of an answer read to find its status line.
const STATUS_LINE_CAP: usize = 2048;

/// How one target is checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckSpec {
    /// `HTTP` or `TCP`.
    pub protocol: String,
    /// `host:port` to check.
    pub address: String,
    /// The path an HTTP check GETs.
    pub path: String,
    /// What an HTTP check takes as success (inclusive ranges).
    pub matcher: Vec<(u16, u16)>,
    /// How long a check may take.
    pub timeout: Duration,
}

/// One target due for checks, as the state holds it now.
#[derive(Clone, Debug)]
struct Checked {
    /// Its key in the targets table (a streak's key).
    key: String,
    /// Its group's ARN (for `SetTargetHealth`).
    target_group_arn: String,
    /// Its id.
    id: String,
    /// Its port.
    port: u16,
    /// Its health now.
    health: TargetHealth,
    /// How to check it.
    spec: CheckSpec,
    /// Seconds between checks.
    interval: Duration,
    /// Its group's thresholds.
    thresholds: Thresholds,
}

/// Every target to check: not draining, in a group with checks enabled.
fn checked_targets(state: &State) -> Vec<Checked> {
    let elb = &state.elbv2;
    let mut all = Vec::new();
    for (group_key, record) in elb.target_groups.iter() {
        let group = &record.group;
        if !group.health_check_enabled {
            continue;
        }
        let matcher = group
            .matcher
            .as_ref()
            .and_then(|m| parse_matcher(&m.http_code).ok())
            .unwrap_or_else(|| vec![(200, 200)]);
        for (key, target) in elb.targets_of(group_key) {
            if target.draining_since_ms.is_some() {
                continue;
            }
            let host = target
                .address
                .rsplit_once(':')
                .map_or(target.address.as_str(), |(host, _)| host);
            let port = group
                .health_check_port
                .parse::<u16>()
                .unwrap_or(target.port);
            all.push(Checked {
                key: key.clone(),
                target_group_arn: group.target_group_arn.clone(),
                id: target.id.clone(),
                port: target.port,
                health: target.health.clone(),
                spec: CheckSpec {
                    protocol: group.health_check_protocol.clone(),
                    address: format!("{host}:{port}"),
                    path: group
                        .health_check_path
                        .clone()
                        .unwrap_or_else(|| "/".into()),
                    matcher: matcher.clone(),
                    timeout: Duration::from_secs(u64::from(
                        group.health_check_timeout_seconds.max(1),
                    )),
                },
                interval: Duration::from_secs(u64::from(
                    group.health_check_interval_seconds.max(1),
                )),
                thresholds: Thresholds::of(group),
            });
        }
    }
    all
}

/// The health of a target whose group does not check its targets.
fn unchecked() -> TargetHealth {
    TargetHealth {
        state: "healthy".into(),
        reason: None,
        description: Some("Health checks are disabled".into()),
    }
}

/// Targets (not draining) of groups whose checks were turned off that do
/// not show as unchecked yet (a target registered then is, at once): they
/// take traffic. Pure; empty once they all do.
pub fn unchecked_changes(state: &State) -> Vec<(String, Vec<TargetHealthChange>)> {
    let elb = &state.elbv2;
    let mut all = Vec::new();
    for (group_key, record) in elb.target_groups.iter() {
        if record.group.health_check_enabled {
            continue;
        }
        let changes: Vec<TargetHealthChange> = elb
            .targets_of(group_key)
            .filter(|(_, t)| t.draining_since_ms.is_none() && t.health != unchecked())
            .map(|(_, t)| TargetHealthChange {
                id: t.id.clone(),
                port: t.port,
                health: unchecked(),
            })
            .collect();
        if !changes.is_empty() {
            all.push((record.group.target_group_arn.clone(), changes));
        }
    }
    all
}

fn failure(reason: &'static str, description: String) -> CheckResult {
    CheckResult::Failure {
        reason,
        description,
    }
}

/// Checks one target once: a TCP connect, or an HTTP/1.1 GET whose status
/// code the matcher must take, all within the time-out.
pub async fn probe(spec: &CheckSpec) -> CheckResult {
    match tokio::time::timeout(spec.timeout, probe_unbounded(spec)).await {
        Ok(result) => result,
        Err(_) => failure(TIMEOUT, "Request timed out".into()),
    }
}

async fn probe_unbounded(spec: &CheckSpec) -> CheckResult {
    let mut stream = match tokio::net::TcpStream::connect(&spec.address).await {
        Ok(stream) => stream,
        Err(error) => {
            return failure(
                FAILED_HEALTH_CHECKS,
                format!(
                    "Health checks failed: could not connect to {} ({error})",
                    spec.address
                ),
            )
        }
    };
    if spec.protocol != "HTTP" {
        return CheckResult::Success;
    }
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ELB-HealthChecker/2.0\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        spec.path, spec.address
    );
    if let Err(error) = stream.write_all(request.as_bytes()).await {
        return failure(
            FAILED_HEALTH_CHECKS,
            format!("Health checks failed: the request could not be sent ({error})"),
        );
    }
    let mut answer = Vec::with_capacity(256);
    let mut buffer = [0u8; 512];
    while !answer.windows(2).any(|w| w == b"\r\n") && answer.len() < STATUS_LINE_CAP {
        match stream.read(&mut buffer).await {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buffer[..n]),
            Err(error) => {
                return failure(
                    FAILED_HEALTH_CHECKS,
                    format!("Health checks failed: the connection failed ({error})"),
                )
            }
        }
    }
    match status_code(&answer) {
        Some(code) if health::code_matches(code, &spec.matcher) => CheckResult::Success,
        Some(code) => failure(
            RESPONSE_CODE_MISMATCH,
            format!("Health checks failed with these codes: [{code}]"),
        ),
        None => failure(
            FAILED_HEALTH_CHECKS,
            "Health checks failed: the target did not answer with an HTTP status line".into(),
        ),
    }
}

/// The status code of an HTTP/1.x answer's first line, if it is one.
pub fn status_code(answer: &[u8]) -> Option<u16> {
    let line_end = answer.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&answer[..line_end]).ok()?;
    let mut parts = line.split(' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    (code.len() == 3).then_some(())?;
    code.parse().ok()
}

/// Runs the health checks until the task is dropped (the controller aborts
/// it when this server stops leading).
pub async fn run(raft: RaftHandle) {
    let mut streaks: HashMap<String, Streak> = HashMap::new();
    let mut next_due: HashMap<String, Instant> = HashMap::new();
    let mut in_flight: HashSet<String> = HashSet::new();
    let mut probes: JoinSet<(String, CheckResult)> = JoinSet::new();
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let targets = raft.store().read(checked_targets);
        let by_key: HashMap<&str, &Checked> = targets.iter().map(|t| (t.key.as_str(), t)).collect();
        streaks.retain(|key, _| by_key.contains_key(key.as_str()));
        next_due.retain(|key, _| by_key.contains_key(key.as_str()));

        let mut changes: BTreeMap<String, Vec<TargetHealthChange>> =
            raft.store().read(unchecked_changes).into_iter().collect();
        while let Some(done) = probes.try_join_next() {
            let Ok((key, result)) = done else { continue };
            in_flight.remove(&key);
            let Some(target) = by_key.get(key.as_str()) else {
                continue;
            };
            let streak = streaks.entry(key.clone()).or_default();
            if let Some(health) =
                health::observe(&target.health, streak, &result, target.thresholds)
            {
                tracing::info!(
                    target_group = %target.target_group_arn,
                    target = %target.id,
                    port = target.port,
                    from = %target.health.state,
                    to = %health.state,
                    reason = health.reason.as_deref().unwrap_or(""),
                    "target health changed"
                );
                changes
                    .entry(target.target_group_arn.clone())
                    .or_default()
                    .push(TargetHealthChange {
                        id: target.id.clone(),
                        port: target.port,
                        health,
                    });
            }
        }
        for (target_group_arn, changes) in changes {
            let proposal = Proposal {
                request_id: crate::vocab::ids::request_id(),
                command: Command::Elbv2(Elbv2Command::SetTargetHealth {
                    target_group_arn,
                    changes,
                }),
            };
            if let Err(error) = raft.propose(proposal).await {
                // The streaks stay past their thresholds: the next result
                // proposes the transition again.
                tracing::debug!(%error, "a target health change failed; the next check retries");
            }
        }

        let now = Instant::now();
        for target in &targets {
            if in_flight.contains(&target.key)
                || next_due.get(&target.key).is_some_and(|due| *due > now)
            {
                continue;
            }
            next_due.insert(target.key.clone(), now + target.interval);
            in_flight.insert(target.key.clone());
            let key = target.key.clone();
            let spec = target.spec.clone();
            probes.spawn(async move { (key, probe(&spec).await) });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_of_a_group_no_longer_checked_turn_healthy_once() {
        use crate::model::elbv2::RegisteredTarget;
        use crate::store::elbv2::target_key;
        use crate::store::elbv2::tests::tg;
        let mut state = State::default();
        let mut group = tg("web", "00000000000000aa");
        let arn = group.target_group_arn.clone();
        group.health_check_enabled = false;
        let key = crate::model::elbv2::arn_key("x", "targetgroup", &arn)
            .unwrap()
            .to_string();
        state.elbv2.target_groups.insert(
            key.clone(),
            crate::model::elbv2::TargetGroupRecord {
                group,
                attributes: Default::default(),
            },
        );
        let target = |port: u16, health: TargetHealth| RegisteredTarget {
            id: "10.0.0.1".into(),
            port,
            address: format!("10.0.0.1:{port}"),
            health,
            registered_ms: 0,
            draining_since_ms: None,
            task_arn: None,
        };
        state.elbv2.targets.insert(
            target_key(&key, "10.0.0.1", 80),
            target(80, TargetHealth::unhealthy(TIMEOUT, "Request timed out")),
        );
        state
            .elbv2
            .targets
            .insert(target_key(&key, "10.0.0.1", 81), target(81, unchecked()));
        let changes = unchecked_changes(&state);
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(changes[0].0, arn);
        assert_eq!(changes[0].1.len(), 1);
        assert_eq!(changes[0].1[0].port, 80);
        assert_eq!(changes[0].1[0].health.state, "healthy");
        // Once applied, nothing more to write.
        state
            .elbv2
            .targets
            .insert(target_key(&key, "10.0.0.1", 80), target(80, unchecked()));
        assert!(unchecked_changes(&state).is_empty());
    }

    #[test]
    fn status_lines_parse_and_garbage_does_not() {
        assert_eq!(status_code(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(
            status_code(b"HTTP/1.0 404 Not Found\r\nServer: x\r\n"),
            Some(404)
        );
        for garbage in [
            &b""[..],
            b"HTTP/1.1 200",
            b"SSH-2.0-OpenSSH\r\n",
            b"HTTP/1.1 2000 OK\r\n",
            b"HTTP/1.1 abc\r\n",
            b"\xff\xfe\r\n",
        ] {
            assert_eq!(status_code(garbage), None, "{garbage:?}");
        }
    }

    fn spec(address: String, protocol: &str) -> CheckSpec {
        CheckSpec {
            protocol: protocol.into(),
            address,
            path: "/health".into(),
            matcher: vec![(200, 299)],
            timeout: Duration::from_secs(2),
        }
    }

    /// A one-connection-at-a-time server answering every request with `answer`.
    async fn serve(answer: &'static [u8]) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut request = [0u8; 1024];
                let _ = stream.read(&mut request).await;
                if !answer.is_empty() {
                    let _ = stream.write_all(answer).await;
                }
                // Keep the connection open a moment (a silent target).
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        });
        address
    }

    #[tokio::test]
    async fn probes_tell_success_from_each_failure() {
        let ok = serve(b"HTTP/1.1 204 No Content\r\n\r\n").await;
        assert_eq!(probe(&spec(ok.clone(), "HTTP")).await, CheckResult::Success);
        assert_eq!(probe(&spec(ok, "TCP")).await, CheckResult::Success);

        let missing = serve(b"HTTP/1.1 404 Not Found\r\n\r\n").await;
        match probe(&spec(missing, "HTTP")).await {
            CheckResult::Failure {
                reason,
                description,
            } => {
                assert_eq!(reason, RESPONSE_CODE_MISMATCH);
                assert!(description.contains("[404]"), "{description}");
            }
            other => panic!("{other:?}"),
        }

        let silent = serve(b"").await;
        let mut quick = spec(silent, "HTTP");
        quick.timeout = Duration::from_millis(300);
        assert!(matches!(
            probe(&quick).await,
            CheckResult::Failure {
                reason: TIMEOUT,
                ..
            }
        ));

        // A port nothing listens on: bind one, then close it.
        let closed = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().to_string()
        };
        assert!(matches!(
            probe(&spec(closed, "HTTP")).await,
            CheckResult::Failure {
                reason: FAILED_HEALTH_CHECKS,
                ..
            }
        ));
    }
}
