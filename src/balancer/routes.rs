//! The pure half of feeding a proxy: what the control plane describes
//! (listeners with their rules, target groups with their targets' health,
//! container instances' host addresses) turned into the `proxy::RouteTable`
//! the proxy serves. No I/O.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Deserialize;

use crate::model::elbv2::{Listener, Rule, TargetGroup};
use crate::proxy::routes::{
    ListenerProtocol, ListenerRoutes, RouteTable, RuleRoute, TargetGroupRoutes, TargetRoute,
    TargetState,
};
use crate::vocab::ids::last_segment;

/// One entry of `describe-target-health`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TargetHealthDescription {
    /// The target.
    pub target: DescribedTarget,
    /// Its health.
    pub target_health: DescribedHealth,
}

/// A target's id and port.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribedTarget {
    /// A container instance id or an IP address.
    pub id: String,
    /// The port.
    pub port: u16,
}

/// A target's health state.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribedHealth {
    /// `initial`, `healthy`, `unhealthy`, `draining`, `unused`.
    pub state: String,
}

/// Everything the control plane describes about the load balancers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Described {
    /// Every listener with its rules (as `describe-rules` lists them).
    pub listeners: Vec<(Listener, Vec<Rule>)>,
    /// Every target group with its targets.
    pub target_groups: Vec<(TargetGroup, Vec<TargetHealthDescription>)>,
    /// Container instance id → host address (the `orc.host-address` attribute).
    pub instance_hosts: BTreeMap<String, String>,
    /// Load balancer ARN → its `idle_timeout.timeout_seconds` (absent: the
    /// proxy's own).
    pub idle_timeouts: BTreeMap<String, u32>,
}

fn protocol(text: &str) -> ListenerProtocol {
    if text.eq_ignore_ascii_case("TCP") {
        ListenerProtocol::Tcp
    } else {
        ListenerProtocol::Http
    }
}

fn state(text: &str) -> TargetState {
    match text {
        "healthy" => TargetState::Healthy,
        "unhealthy" => TargetState::Unhealthy,
        "draining" => TargetState::Draining,
        _ => TargetState::Initial,
    }
}

/// Where a target is reached, or why it cannot be.
fn address(
    group: &TargetGroup,
    target: &DescribedTarget,
    hosts: &BTreeMap<String, String>,
) -> Result<SocketAddr, String> {
    let host = if group.target_type == "ip" {
        target.id.as_str()
    } else {
        let id = last_segment(&target.id);
        hosts.get(id).map(String::as_str).ok_or_else(|| {
            format!(
                "target {} of {}: container instance unknown or without an orc.host-address",
                target.id, group.target_group_name
            )
        })?
    };
    host.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, target.port))
        .map_err(|_| {
            format!(
                "target {} of {}: {host:?} is not an IP address",
                target.id, group.target_group_name
            )
        })
}

/// The route table for `described`, and a sentence for each target that
/// could not be placed in it.
pub fn route_table(described: &Described) -> (RouteTable, Vec<String>) {
    let mut problems = Vec::new();
    let mut table = RouteTable::default();
    for (listener, rules) in &described.listeners {
        let mut ordered: Vec<&Rule> = rules.iter().filter(|r| !r.is_default).collect();
        ordered.sort_by_key(|r| r.priority.parse::<u32>().unwrap_or(u32::MAX));
        let mut routes: Vec<RuleRoute> = ordered
            .into_iter()
            .filter_map(|rule| {
                let target_group_arn = rule.actions.first()?.target_group()?.to_string();
                let mut route = RuleRoute {
                    priority: rule.priority.parse().ok(),
                    host_headers: vec![],
                    path_patterns: vec![],
                    target_group_arn,
                };
                for condition in &rule.conditions {
                    match condition.field.as_str() {
                        "host-header" => route.host_headers.extend(condition.patterns()),
                        "path-pattern" => route.path_patterns.extend(condition.patterns()),
                        _ => {}
                    }
                }
                Some(route)
            })
            .collect();
        if let Some(default) = listener
            .default_actions
            .first()
            .and_then(|a| a.target_group())
        {
            routes.push(RuleRoute {
                priority: None,
                host_headers: vec![],
                path_patterns: vec![],
                target_group_arn: default.to_string(),
            });
        }
        table.listeners.push(ListenerRoutes {
            arn: listener.listener_arn.clone(),
            port: listener.port,
            protocol: protocol(&listener.protocol),
            rules: routes,
            idle_timeout: described
                .idle_timeouts
                .get(&listener.load_balancer_arn)
                .map(|seconds| Duration::from_secs(u64::from(*seconds))),
        });
    }
    table.listeners.sort_by_key(|l| l.port);
    for (group, targets) in &described.target_groups {
        let mut routes = Vec::new();
        for description in targets {
            match address(group, &description.target, &described.instance_hosts) {
                Ok(address) => routes.push(TargetRoute {
                    address,
                    state: state(&description.target_health.state),
                }),
                Err(problem) => problems.push(problem),
            }
        }
        table.target_groups.insert(
            group.target_group_arn.clone(),
            TargetGroupRoutes {
                arn: group.target_group_arn.clone(),
                name: group.target_group_name.clone(),
                targets: routes,
            },
        );
    }
    (table, problems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn described() -> Described {
        let tg = |name: &str, kind: &str| -> TargetGroup {
            serde_json::from_value(json!({
                "TargetGroupArn": format!("arn:tg/{name}"), "TargetGroupName": name, "Protocol": "HTTP",
                "Port": 80, "VpcId": "v", "HealthCheckProtocol": "HTTP", "HealthCheckPort": "traffic-port",
                "HealthCheckEnabled": true, "HealthCheckIntervalSeconds": 5, "HealthCheckTimeoutSeconds": 2,
                "HealthyThresholdCount": 2, "UnhealthyThresholdCount": 2, "TargetType": kind,
                "IpAddressType": "ipv4",
            }))
            .unwrap()
        };
        let forward = |arn: &str| json!([{"Type": "forward", "TargetGroupArn": arn}]);
        let listener: Listener = serde_json::from_value(json!({
            "ListenerArn": "arn:l", "LoadBalancerArn": "arn:lb", "Port": 8080, "Protocol": "HTTP",
            "DefaultActions": forward("arn:tg/web"),
        }))
        .unwrap();
        let rules: Vec<Rule> = serde_json::from_value(json!([
            {"RuleArn": "r20", "Priority": "20", "IsDefault": false, "Actions": forward("arn:tg/api"),
             "Conditions": [{"Field": "host-header", "Values": ["api.lab"]}]},
            {"RuleArn": "r5", "Priority": "5", "IsDefault": false, "Actions": forward("arn:tg/api"),
             "Conditions": [{"Field": "path-pattern", "PathPatternConfig": {"Values": ["/v2/*"]}}]},
            {"RuleArn": "rd", "Priority": "default", "IsDefault": true, "Actions": forward("arn:tg/web"), "Conditions": []},
        ]))
        .unwrap();
        let health = |id: &str, port: u16, state: &str| TargetHealthDescription {
            target: DescribedTarget {
                id: id.into(),
                port,
            },
            target_health: DescribedHealth {
                state: state.into(),
            },
        };
        Described {
            listeners: vec![(listener, rules)],
            target_groups: vec![
                (
                    tg("web", "instance"),
                    vec![
                        health("abc", 32768, "healthy"),
                        health("gone", 32769, "initial"),
                    ],
                ),
                (tg("api", "ip"), vec![health("10.0.0.7", 9000, "draining")]),
            ],
            instance_hosts: BTreeMap::from([("abc".to_string(), "192.168.1.20".to_string())]),
            idle_timeouts: BTreeMap::from([("arn:lb".to_string(), 7)]),
        }
    }

    #[test]
    fn rules_by_priority_then_the_default_and_targets_at_their_hosts() {
        let (table, problems) = route_table(&described());
        let listener = &table.listeners[0];
        assert_eq!(listener.port, 8080);
        assert_eq!(listener.protocol, ListenerProtocol::Http);
        assert_eq!(listener.idle_timeout, Some(Duration::from_secs(7)));
        let priorities: Vec<Option<u32>> = listener.rules.iter().map(|r| r.priority).collect();
        assert_eq!(priorities, [Some(5), Some(20), None]);
        assert_eq!(listener.rules[0].path_patterns, ["/v2/*"]);
        assert_eq!(listener.rules[1].host_headers, ["api.lab"]);
        assert_eq!(listener.rules[2].target_group_arn, "arn:tg/web");
        let web = &table.target_groups["arn:tg/web"];
        assert_eq!(
            web.targets,
            [TargetRoute {
                address: "192.168.1.20:32768".parse().unwrap(),
                state: TargetState::Healthy
            }]
        );
        let api = &table.target_groups["arn:tg/api"];
        assert_eq!(api.targets[0].state, TargetState::Draining);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("target gone of web"), "{problems:?}");
    }

    #[test]
    fn the_same_description_gives_the_same_table() {
        assert_eq!(route_table(&described()), route_table(&described()));
        assert_eq!(route_table(&Described::default()).0, RouteTable::default());
    }
}
