//! Pure routing decisions: ALB wildcard matching for host-header and
//! path-pattern conditions, the rule a request matches, and the targets a
//! target group may route to (round-robin over healthy targets, fail open
//! when none is healthy).

use super::routes::TargetState;
use crate::vocab::wildcard::{self, Wildcards};

/// Whether `text` matches the ALB wildcard `pattern`: `*` matches any run of
/// characters (also none), `?` exactly one; everything else literally,
/// ASCII case folded when `ignore_case` (host-header conditions).
pub fn wildcard_matches(pattern: &str, text: &str, ignore_case: bool) -> bool {
    wildcard::matches(
        pattern,
        text,
        Wildcards {
            any_one: true,
            ignore_case,
        },
    )
}

/// The host a request names, without its port: `example.com:8080` gives
/// `example.com`, `[::1]:80` gives `[::1]`.
pub fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.rfind(':') {
        Some(colon) if host[colon + 1..].bytes().all(|b| b.is_ascii_digit()) => &host[..colon],
        _ => host,
    }
}

/// Whether a rule's conditions hold for a request's host and path: every
/// condition kind present must match one of its values.
pub fn rule_matches(
    host_headers: &[String],
    path_patterns: &[String],
    host: &str,
    path: &str,
) -> bool {
    (host_headers.is_empty()
        || host_headers
            .iter()
            .any(|pattern| wildcard_matches(pattern, host, true)))
        && (path_patterns.is_empty()
            || path_patterns
                .iter()
                .any(|pattern| wildcard_matches(pattern, path, false)))
}

/// Which targets of a group get new requests, as indexes into `states`:
/// the healthy ones; when there are none, every target that is not
/// draining (fail open, as ALB does), with `fail_open` set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Routable {
    /// Indexes of the targets that take new requests, in table order.
    pub targets: Vec<usize>,
    /// Set when no target is healthy and the others take requests anyway.
    pub fail_open: bool,
}

/// The targets of a group that take new requests (see [`Routable`]).
pub fn routable(states: &[TargetState]) -> Routable {
    let healthy: Vec<usize> = (0..states.len())
        .filter(|&i| states[i] == TargetState::Healthy)
        .collect();
    if !healthy.is_empty() {
        return Routable {
            targets: healthy,
            fail_open: false,
        };
    }
    let open: Vec<usize> = (0..states.len())
        .filter(|&i| states[i] != TargetState::Draining)
        .collect();
    let fail_open = !open.is_empty();
    Routable {
        targets: open,
        fail_open,
    }
}

/// The order in which a request tries the routable targets: round-robin
/// from the group's counter, then the others in turn (a refused connect
/// moves on to the next). `count` routable targets, `counter` the group's
/// request count before this one.
pub fn attempt_order(count: usize, counter: usize) -> impl Iterator<Item = usize> {
    let start = if count == 0 { 0 } else { counter % count };
    (0..count).map(move |i| (start + i) % count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use TargetState::*;

    #[test]
    fn alb_wildcards_match_like_alb() {
        assert!(wildcard_matches("*.example.com", "api.example.com", true));
        assert!(wildcard_matches("*.example.com", "API.Example.COM", true));
        assert!(!wildcard_matches("*.example.com", "example.com", true));
        assert!(wildcard_matches(
            "api-?.example.com",
            "api-1.example.com",
            true
        ));
        assert!(!wildcard_matches(
            "api-?.example.com",
            "api-12.example.com",
            true
        ));
        assert!(wildcard_matches("/img/*", "/img/a/b.png", false));
        assert!(!wildcard_matches("/img/*", "/IMG/a.png", false));
        assert!(wildcard_matches("/*", "/", false));
        assert!(wildcard_matches("*", "", false));
        assert!(wildcard_matches("/a*b*c", "/axxbyyc", false));
        assert!(!wildcard_matches("/a*b*c", "/axxbyy", false));
        assert!(wildcard_matches("/a*b", "/abab", false));
        assert!(wildcard_matches("/caf?", "/café", false));
        assert!(wildcard_matches("/exact", "/exact", false));
        assert!(!wildcard_matches("/exact", "/exact/", false));
        assert!(!wildcard_matches("", "/", false));
    }

    #[test]
    fn a_host_loses_its_port_only() {
        assert_eq!(host_without_port("example.com:8080"), "example.com");
        assert_eq!(host_without_port("example.com"), "example.com");
        assert_eq!(host_without_port("[::1]:80"), "[::1]");
        assert_eq!(host_without_port("[::1]"), "[::1]");
    }

    #[test]
    fn every_condition_kind_present_must_match() {
        let hosts = vec!["a.example.com".to_string(), "*.test".to_string()];
        let paths = vec!["/api/*".to_string()];
        assert!(rule_matches(&hosts, &paths, "b.test", "/api/x"));
        assert!(!rule_matches(&hosts, &paths, "b.test", "/web"));
        assert!(!rule_matches(&hosts, &paths, "c.example.com", "/api/x"));
        assert!(rule_matches(&[], &paths, "anything", "/api/"));
        assert!(rule_matches(&hosts, &[], "A.EXAMPLE.COM", "/"));
        assert!(rule_matches(&[], &[], "", ""));
    }

    #[test]
    fn healthy_targets_take_requests_and_the_others_wait() {
        let r = routable(&[Unhealthy, Healthy, Initial, Healthy, Draining]);
        assert_eq!(r.targets, vec![1, 3]);
        assert!(!r.fail_open);
    }

    #[test]
    fn with_none_healthy_every_target_not_draining_takes_requests() {
        let r = routable(&[Unhealthy, Initial, Draining]);
        assert_eq!(r.targets, vec![0, 1]);
        assert!(r.fail_open);
        let r = routable(&[Draining, Draining]);
        assert!(r.targets.is_empty());
        assert!(!r.fail_open);
        assert_eq!(routable(&[]).targets, Vec::<usize>::new());
    }

    #[test]
    fn round_robin_is_even_and_retries_visit_each_target_once() {
        let mut seen = [0; 3];
        for counter in 0..30 {
            seen[attempt_order(3, counter).next().unwrap()] += 1;
        }
        assert_eq!(seen, [10, 10, 10]);
        assert_eq!(attempt_order(3, 4).collect::<Vec<_>>(), vec![1, 2, 0]);
        assert_eq!(attempt_order(0, 4).count(), 0);
    }
}
