//! Target health checks as ALB counts them, as a pure decision: each check's
//! result extends a streak of consecutive successes or failures, and a
//! target changes state only when a streak reaches its threshold (healthy
//! after `HealthyThresholdCount` successes, unhealthy after
//! `UnhealthyThresholdCount` failures). Only those transitions (and an
//! unhealthy target's reason changing) are written through Raft; a check
//! that confirms the current state changes nothing. The probing itself is
//! the leader's effect (`controller::health`).

use crate::model::elbv2::{TargetGroup, TargetHealth};

/// ELB's reason when a check's connection failed or the answer was not HTTP.
pub const FAILED_HEALTH_CHECKS: &str = "Target.FailedHealthChecks";
/// ELB's reason when the answer's status code is not one the matcher takes.
pub const RESPONSE_CODE_MISMATCH: &str = "Target.ResponseCodeMismatch";
/// ELB's reason when no answer came within the check's time-out.
pub const TIMEOUT: &str = "Target.Timeout";

/// What one health check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckResult {
    /// The target answered as the matcher wants (or accepted the connection).
    Success,
    /// It did not.
    Failure {
        /// ELB's reason code.
        reason: &'static str,
        /// A sentence, as `describe-target-health` shows it.
        description: String,
    },
}

/// The consecutive results of one target since its last change of direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Streak {
    /// Consecutive successes.
    pub successes: u32,
    /// Consecutive failures.
    pub failures: u32,
}

/// The counts a target group turns targets healthy and unhealthy at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Thresholds {
    /// Consecutive successes to turn healthy.
    pub healthy: u32,
    /// Consecutive failures to turn unhealthy.
    pub unhealthy: u32,
}

impl Thresholds {
    /// A target group's thresholds.
    pub fn of(group: &TargetGroup) -> Thresholds {
        Thresholds {
            healthy: group.healthy_threshold_count.max(1),
            unhealthy: group.unhealthy_threshold_count.max(1),
        }
    }
}

/// Counts `result` into `streak` and returns the target's new health when
/// it changes: `initial` or `unhealthy` → `healthy` once the successes
/// reach the healthy threshold; `initial` or `healthy` → `unhealthy` once
/// the failures reach the unhealthy threshold; an unhealthy target whose
/// reason changed gets the new reason. `None` means nothing to write.
/// Draining (and any other) states are left alone.
pub fn observe(
    current: &TargetHealth,
    streak: &mut Streak,
    result: &CheckResult,
    thresholds: Thresholds,
) -> Option<TargetHealth> {
    match result {
        CheckResult::Success => {
            streak.successes = streak.successes.saturating_add(1);
            streak.failures = 0;
            let may_turn = matches!(current.state.as_str(), "initial" | "unhealthy");
            (may_turn && streak.successes >= thresholds.healthy).then(TargetHealth::healthy)
        }
        CheckResult::Failure {
            reason,
            description,
        } => {
            streak.failures = streak.failures.saturating_add(1);
            streak.successes = 0;
            let unhealthy = TargetHealth::unhealthy(reason, description);
            match current.state.as_str() {
                "initial" | "healthy" if streak.failures >= thresholds.unhealthy => Some(unhealthy),
                "unhealthy" if current.reason.as_deref() != Some(*reason) => Some(unhealthy),
                _ => None,
            }
        }
    }
}

/// Whether an HTTP status code is one of `ranges` (a parsed matcher).
pub fn code_matches(code: u16, ranges: &[(u16, u16)]) -> bool {
    ranges
        .iter()
        .any(|(low, high)| (*low..=*high).contains(&code))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_TWO: Thresholds = Thresholds {
        healthy: 2,
        unhealthy: 2,
    };

    fn fail(reason: &'static str) -> CheckResult {
        CheckResult::Failure {
            reason,
            description: "Health checks failed".into(),
        }
    }

    /// Runs `results` from `start` and returns the state after each check
    /// that changed something, with the check's index.
    fn run(start: TargetHealth, results: &[CheckResult], t: Thresholds) -> Vec<(usize, String)> {
        let mut health = start;
        let mut streak = Streak::default();
        let mut changes = Vec::new();
        for (i, result) in results.iter().enumerate() {
            if let Some(next) = observe(&health, &mut streak, result, t) {
                changes.push((
                    i,
                    format!(
                        "{}{}",
                        next.state,
                        next.reason
                            .as_deref()
                            .map(|r| format!(" {r}"))
                            .unwrap_or_default()
                    ),
                ));
                health = next;
            }
        }
        changes
    }

    #[test]
    fn a_new_target_turns_healthy_after_the_healthy_threshold() {
        use CheckResult::Success;
        let changes = run(
            TargetHealth::initial(),
            &[Success, Success, Success],
            TWO_TWO,
        );
        assert_eq!(changes, [(1, "healthy".to_string())]);
        let three = Thresholds {
            healthy: 3,
            unhealthy: 2,
        };
        let changes = run(TargetHealth::initial(), &[Success, Success, Success], three);
        assert_eq!(changes, [(2, "healthy".to_string())]);
    }

    #[test]
    fn a_new_target_that_fails_turns_unhealthy_with_the_reason() {
        let changes = run(
            TargetHealth::initial(),
            &[fail(TIMEOUT), fail(TIMEOUT), fail(TIMEOUT)],
            TWO_TWO,
        );
        assert_eq!(changes, [(1, "unhealthy Target.Timeout".to_string())]);
    }

    #[test]
    fn a_healthy_target_survives_fewer_failures_than_the_threshold() {
        use CheckResult::Success;
        let checks = [
            fail(TIMEOUT),
            Success,
            fail(TIMEOUT),
            Success,
            fail(RESPONSE_CODE_MISMATCH),
        ];
        assert!(run(TargetHealth::healthy(), &checks, TWO_TWO).is_empty());
    }

    #[test]
    fn healthy_and_unhealthy_flip_only_at_the_thresholds() {
        use CheckResult::Success;
        let checks = [
            fail(RESPONSE_CODE_MISMATCH),
            fail(RESPONSE_CODE_MISMATCH),
            fail(RESPONSE_CODE_MISMATCH),
            Success,
            fail(RESPONSE_CODE_MISMATCH),
            Success,
            Success,
            Success,
        ];
        assert_eq!(
            run(TargetHealth::healthy(), &checks, TWO_TWO),
            [
                (1, "unhealthy Target.ResponseCodeMismatch".to_string()),
                (6, "healthy".to_string())
            ]
        );
    }

    #[test]
    fn an_unhealthy_target_records_a_new_reason_once() {
        let checks = [
            fail(TIMEOUT),
            fail(FAILED_HEALTH_CHECKS),
            fail(FAILED_HEALTH_CHECKS),
        ];
        let start = TargetHealth::unhealthy(TIMEOUT, "Request timed out");
        assert_eq!(
            run(start, &checks, TWO_TWO),
            [(1, "unhealthy Target.FailedHealthChecks".to_string())]
        );
    }

    #[test]
    fn a_steady_target_writes_nothing() {
        use CheckResult::Success;
        assert!(run(TargetHealth::healthy(), &vec![Success; 50], TWO_TWO).is_empty());
        let start = TargetHealth::unhealthy(TIMEOUT, "Request timed out");
        assert!(run(start, &vec![fail(TIMEOUT); 50], TWO_TWO).is_empty());
    }

    #[test]
    fn draining_targets_are_left_alone() {
        let draining = TargetHealth {
            state: "draining".into(),
            reason: Some("Target.DeregistrationInProgress".into()),
            description: None,
        };
        let checks = [
            fail(TIMEOUT),
            fail(TIMEOUT),
            CheckResult::Success,
            CheckResult::Success,
        ];
        assert!(run(draining, &checks, TWO_TWO).is_empty());
    }

    #[test]
    fn matchers_take_their_codes() {
        assert!(code_matches(200, &[(200, 200)]));
        assert!(code_matches(302, &[(200, 200), (300, 399)]));
        assert!(!code_matches(404, &[(200, 399)]));
    }
}
