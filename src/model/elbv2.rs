//! Elastic Load Balancing v2's vocabulary as serde types shaped like
//! `aws elbv2 … --output json` prints them (PascalCase keys as botocore's
//! model): load balancers, target groups, listeners, rules, targets and
//! their health, with orc's Pi-lab defaults and the ARNs orc gives them.
//! Pure data and parsing; the state machine keeps these (`store::elbv2`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// What every elbv2 ARN of orc starts with (region `orc`, account zeros).
pub const ARN_PREFIX: &str = "arn:aws:elasticloadbalancing:orc:000000000000:";

/// Seconds between two health checks of a target (ALB's default is 30).
pub const DEFAULT_HEALTH_CHECK_INTERVAL_SECONDS: u32 = 5;
/// Seconds a health check may take (less than the interval).
pub const DEFAULT_HEALTH_CHECK_TIMEOUT_SECONDS: u32 = 2;
/// Consecutive successes that make a target healthy (ALB's default is 5).
pub const DEFAULT_HEALTHY_THRESHOLD_COUNT: u32 = 2;
/// Consecutive failures that make a target unhealthy.
pub const DEFAULT_UNHEALTHY_THRESHOLD_COUNT: u32 = 2;
/// The matcher of an HTTP health check when none is given (ALB's own default).
pub const DEFAULT_MATCHER: &str = "200";
/// The attribute holding how long a deregistered target drains.
pub const DEREGISTRATION_DELAY: &str = "deregistration_delay.timeout_seconds";
/// Seconds a deregistered target drains by default (ALB's default is 300).
pub const DEFAULT_DEREGISTRATION_DELAY_SECONDS: u32 = 10;
/// The most rules a listener may hold besides its default one (ALB's quota).
pub const MAX_RULES_PER_LISTENER: usize = 100;
/// The most targets one target group may hold (ALB's quota is 1,000).
pub const MAX_TARGETS_PER_GROUP: usize = 1000;

/// The container instance attribute an agent registers its host address
/// under: where the proxies reach the host ports of its tasks.
pub const HOST_ADDRESS_ATTRIBUTE: &str = "orc.host-address";

/// A random 16-hex-digit id, as the last part of elbv2 ARNs. Chosen by the
/// proposer and carried in the command.
pub fn new_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// A load balancer's ARN: `…:loadbalancer/app/NAME/ID` (`net/` for a network one).
pub fn load_balancer_arn(kind: &str, name: &str, id: &str) -> String {
    format!(
        "{ARN_PREFIX}loadbalancer/{}/{name}/{id}",
        kind_segment(kind)
    )
}

/// A target group's ARN: `…:targetgroup/NAME/ID`.
pub fn target_group_arn(name: &str, id: &str) -> String {
    format!("{ARN_PREFIX}targetgroup/{name}/{id}")
}

fn kind_segment(kind: &str) -> &'static str {
    if kind == "network" {
        "net"
    } else {
        "app"
    }
}

/// A listener's ARN: `…:listener/app/LB-NAME/LB-ID/ID`, from its load balancer's ARN.
pub fn listener_arn(load_balancer_arn: &str, id: &str) -> String {
    let rest = load_balancer_arn
        .strip_prefix(ARN_PREFIX)
        .and_then(|r| r.strip_prefix("loadbalancer/"))
        .unwrap_or(load_balancer_arn);
    format!("{ARN_PREFIX}listener/{rest}/{id}")
}

/// A rule's ARN: `…:listener-rule/app/LB-NAME/LB-ID/LISTENER-ID/ID`.
pub fn rule_arn(listener_arn: &str, id: &str) -> String {
    let rest = listener_arn
        .strip_prefix(ARN_PREFIX)
        .and_then(|r| r.strip_prefix("listener/"))
        .unwrap_or(listener_arn);
    format!("{ARN_PREFIX}listener-rule/{rest}/{id}")
}

/// The key of a load balancer, target group, listener or rule in the
/// state: its ARN's resource part after the kind (`app/NAME/ID`,
/// `NAME/ID`, …), or an error naming `field` when `arn` is not an orc
/// elbv2 ARN of `kind`.
pub fn arn_key<'a>(field: &str, kind: &str, arn: &'a str) -> Result<&'a str> {
    arn.strip_prefix(ARN_PREFIX)
        .and_then(|rest| rest.strip_prefix(kind))
        .and_then(|rest| rest.strip_prefix('/'))
        .filter(|rest| !rest.is_empty())
        .ok_or_else(|| {
            Error::InvalidInput(format!(
                "{field}: {arn:?} is not a {kind} ARN (they look like {ARN_PREFIX}{kind}/…); copy it from the describe command's answer"
            ))
        })
}

/// Checks a load balancer's or target group's name as ELB does: 1 to 32
/// letters, digits and hyphens, not starting or ending with a hyphen.
pub fn validate_name(field: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "{field}: {name:?} is not a valid name: use 1 to 32 letters, digits and hyphens, not starting or ending with a hyphen"
        )))
    }
}

/// A load balancer's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LoadBalancerState {
    /// `active` (orc's load balancers are served as soon as they exist).
    pub code: String,
}

/// A load balancer as `describe-load-balancers` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LoadBalancer {
    /// `…:loadbalancer/app/NAME/ID`.
    pub load_balancer_arn: String,
    /// A host a browser can open: the advertised host of the server that
    /// created it (every server and `orc agent --proxy` serve its listeners).
    #[serde(rename = "DNSName")]
    pub dns_name: String,
    /// A fixed stand-in (orc has no hosted zones).
    pub canonical_hosted_zone_id: String,
    /// When it was created.
    pub created_time: String,
    /// Its name, unique among load balancers.
    pub load_balancer_name: String,
    /// `internet-facing` or `internal` (kept, not enforced).
    pub scheme: String,
    /// A fixed stand-in (orc has no VPCs).
    pub vpc_id: String,
    /// Its state.
    pub state: LoadBalancerState,
    /// `application` or `network`.
    #[serde(rename = "Type")]
    pub kind: String,
    /// Empty: orc has no availability zones.
    pub availability_zones: Vec<serde_json::Value>,
    /// Empty: orc has no security groups.
    pub security_groups: Vec<String>,
    /// `ipv4`.
    pub ip_address_type: String,
}

/// What a health check counts as success: `HttpCode` like `200`,
/// `200,302` or `200-399`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Matcher {
    /// The HTTP codes.
    pub http_code: String,
}

/// Parses a matcher's codes (`200`, `200,302`, `200-399`) into inclusive
/// ranges, or an error naming `Matcher.HttpCode`.
pub fn parse_matcher(codes: &str) -> Result<Vec<(u16, u16)>> {
    let bad = |why: &str| {
        Error::InvalidInput(format!(
            "Matcher.HttpCode: {codes:?} {why}; write codes from 200 to 499 like 200, 200,302 or 200-399"
        ))
    };
    let code = |text: &str| -> Result<u16> {
        let value: u16 = text
            .trim()
            .parse()
            .map_err(|_| bad(&format!("has {:?}, which is not a number", text.trim())))?;
        if !(200..=499).contains(&value) {
            return Err(bad(&format!("has {value}, outside 200-499")));
        }
        Ok(value)
    };
    if codes.trim().is_empty() {
        return Err(bad("is empty"));
    }
    codes
        .split(',')
        .map(|part| match part.split_once('-') {
            Some((low, high)) => {
                let (low, high) = (code(low)?, code(high)?);
                if low > high {
                    return Err(bad(&format!(
                        "has the range {low}-{high}, which is backwards"
                    )));
                }
                Ok((low, high))
            }
            None => code(part).map(|c| (c, c)),
        })
        .collect()
}

/// A target group as `describe-target-groups` shows it. `LoadBalancerArns`
/// is derived from the listeners and rules when shown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TargetGroup {
    /// `…:targetgroup/NAME/ID`.
    pub target_group_arn: String,
    /// Its name, unique among target groups.
    pub target_group_name: String,
    /// `HTTP` or `TCP`.
    pub protocol: String,
    /// The port targets receive traffic on unless they name their own.
    pub port: u16,
    /// A fixed stand-in (orc has no VPCs).
    pub vpc_id: String,
    /// `HTTP` or `TCP`.
    pub health_check_protocol: String,
    /// `traffic-port` (the target's own port) or a port number.
    pub health_check_port: String,
    /// Whether targets are checked (a group that is not checked counts its
    /// targets healthy once registered).
    pub health_check_enabled: bool,
    /// Seconds between checks of one target.
    pub health_check_interval_seconds: u32,
    /// Seconds one check may take.
    pub health_check_timeout_seconds: u32,
    /// Consecutive successes to turn healthy.
    pub healthy_threshold_count: u32,
    /// Consecutive failures to turn unhealthy.
    pub unhealthy_threshold_count: u32,
    /// The path an HTTP check GETs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check_path: Option<String>,
    /// What an HTTP check counts as success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matcher: Option<Matcher>,
    /// The load balancers whose listeners forward to it (derived when shown).
    #[serde(default)]
    pub load_balancer_arns: Vec<String>,
    /// `instance` (targets are container instance ids) or `ip`.
    pub target_type: String,
    /// `HTTP1` for HTTP groups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<String>,
    /// `ipv4`.
    pub ip_address_type: String,
}

/// One target group of a forward action's `ForwardConfig`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TargetGroupTuple {
    /// The target group.
    pub target_group_arn: String,
    /// Its weight (orc forwards to one group per action).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i64>,
}

/// A forward action's `ForwardConfig`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ForwardConfig {
    /// The target groups (orc accepts one).
    #[serde(default)]
    pub target_groups: Vec<TargetGroupTuple>,
}

/// A listener's or rule's action (orc serves `forward`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RuleAction {
    /// `forward`.
    #[serde(rename = "Type")]
    pub kind: String,
    /// The target group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_group_arn: Option<String>,
    /// The order among the actions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<u32>,
    /// The target groups, as the newer form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_config: Option<ForwardConfig>,
}

impl RuleAction {
    /// The one target group a forward action names.
    pub fn target_group(&self) -> Option<&str> {
        self.target_group_arn.as_deref().or_else(|| {
            self.forward_config
                .as_ref()
                .and_then(|c| c.target_groups.first())
                .map(|t| t.target_group_arn.as_str())
        })
    }
}

/// Checks actions as given and returns them in the form elbv2 shows
/// (`TargetGroupArn` and `ForwardConfig` both filled), with the one target
/// group they forward to. `field` names the flag (`DefaultActions`, `Actions`).
pub fn normalize_actions(field: &str, actions: &[RuleAction]) -> Result<(Vec<RuleAction>, String)> {
    let [action] = actions else {
        return Err(Error::InvalidInput(format!(
            "{field}: give exactly one action (Type=forward,TargetGroupArn=…), got {}",
            actions.len()
        )));
    };
    if !action.kind.eq_ignore_ascii_case("forward") {
        return Err(Error::InvalidInput(format!(
            "{field}: action type {:?} is not served by orc: use Type=forward,TargetGroupArn=…",
            action.kind
        )));
    }
    if let Some(config) = &action.forward_config {
        if config.target_groups.len() > 1 {
            return Err(Error::InvalidInput(format!(
                "{field}: orc forwards to one target group per action, got {} in ForwardConfig",
                config.target_groups.len()
            )));
        }
    }
    let Some(target_group) = action.target_group() else {
        return Err(Error::InvalidInput(format!(
            "{field}: a forward action needs TargetGroupArn (Type=forward,TargetGroupArn=…)"
        )));
    };
    arn_key(
        &format!("{field}.TargetGroupArn"),
        "targetgroup",
        target_group,
    )?;
    let normalized = RuleAction {
        kind: "forward".into(),
        target_group_arn: Some(target_group.to_string()),
        order: Some(1),
        forward_config: Some(ForwardConfig {
            target_groups: vec![TargetGroupTuple {
                target_group_arn: target_group.to_string(),
                weight: Some(1),
            }],
        }),
    };
    Ok((vec![normalized], target_group.to_string()))
}

/// A listener as `describe-listeners` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Listener {
    /// `…:listener/app/LB-NAME/LB-ID/ID`.
    pub listener_arn: String,
    /// Its load balancer.
    pub load_balancer_arn: String,
    /// The port it listens on, on every proxy.
    pub port: u16,
    /// `HTTP` or `TCP`.
    pub protocol: String,
    /// What requests no rule matches get.
    pub default_actions: Vec<RuleAction>,
}

/// Values of a `host-header` or `path-pattern` condition's config.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ConditionValues {
    /// The patterns (`*` and `?` wildcards).
    #[serde(default)]
    pub values: Vec<String>,
}

/// A rule's condition: `host-header` or `path-pattern`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RuleCondition {
    /// `host-header` or `path-pattern`.
    pub field: String,
    /// The patterns (the older form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<String>>,
    /// The host patterns (the newer form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_header_config: Option<ConditionValues>,
    /// The path patterns (the newer form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_pattern_config: Option<ConditionValues>,
}

impl RuleCondition {
    /// The patterns, whichever form carried them.
    pub fn patterns(&self) -> Vec<String> {
        let config = self
            .host_header_config
            .as_ref()
            .or(self.path_pattern_config.as_ref())
            .map(|c| c.values.clone())
            .unwrap_or_default();
        let mut all = self.values.clone().unwrap_or_default();
        for value in config {
            if !all.contains(&value) {
                all.push(value);
            }
        }
        all
    }
}

/// Checks conditions and returns them in the form elbv2 shows (both
/// `Values` and the field's config filled).
pub fn normalize_conditions(conditions: &[RuleCondition]) -> Result<Vec<RuleCondition>> {
    if conditions.is_empty() {
        return Err(Error::InvalidInput(
            "Conditions: a rule needs at least one condition (Field=path-pattern,Values=/api/* or Field=host-header,Values=example.com)".into(),
        ));
    }
    let mut seen = Vec::new();
    conditions
        .iter()
        .map(|condition| {
            let field = condition.field.to_ascii_lowercase();
            if field != "host-header" && field != "path-pattern" {
                return Err(Error::InvalidInput(format!(
                    "Conditions.Field: {:?} is not served by orc: use host-header or path-pattern",
                    condition.field
                )));
            }
            if seen.contains(&field) {
                return Err(Error::InvalidInput(format!(
                    "Conditions: {field} is given twice; put every pattern in one condition's Values"
                )));
            }
            seen.push(field.clone());
            let values = condition.patterns();
            if values.is_empty() || values.iter().any(|v| v.is_empty() || v.len() > 128) {
                return Err(Error::InvalidInput(format!(
                    "Conditions.Values: a {field} condition needs 1 to 5 patterns of 1 to 128 characters"
                )));
            }
            if values.len() > 5 {
                return Err(Error::InvalidInput(format!(
                    "Conditions.Values: a {field} condition takes at most 5 patterns, got {}",
                    values.len()
                )));
            }
            let config = Some(ConditionValues {
                values: values.clone(),
            });
            Ok(RuleCondition {
                values: Some(values),
                host_header_config: if field == "host-header" { config.clone() } else { None },
                path_pattern_config: if field == "path-pattern" { config } else { None },
                field,
            })
        })
        .collect()
}

/// A rule as `describe-rules` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Rule {
    /// `…:listener-rule/app/LB-NAME/LB-ID/LISTENER-ID/ID`.
    pub rule_arn: String,
    /// 1 to 50000 as text, or `default` for the listener's default rule.
    pub priority: String,
    /// When it matches.
    pub conditions: Vec<RuleCondition>,
    /// What it does.
    pub actions: Vec<RuleAction>,
    /// Whether it is the listener's default rule.
    pub is_default: bool,
}

/// A target as given to `register-targets`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TargetDescription {
    /// A container instance id (target type `instance`) or an IPv4 address (`ip`).
    pub id: String,
    /// Its port (default: the group's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

/// A target's health as `describe-target-health` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TargetHealth {
    /// `initial`, `healthy`, `unhealthy`, `unused` or `draining`.
    pub state: String,
    /// ELB's reason code (`Elb.InitialHealthChecking`, `Target.Timeout`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A sentence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl TargetHealth {
    /// The health of a target that was just registered.
    pub fn initial() -> TargetHealth {
        TargetHealth {
            state: "initial".into(),
            reason: Some("Elb.RegistrationInProgress".into()),
            description: Some("Target registration is in progress".into()),
        }
    }

    /// A target that passed its health checks.
    pub fn healthy() -> TargetHealth {
        TargetHealth {
            state: "healthy".into(),
            reason: None,
            description: None,
        }
    }

    /// A target that failed its health checks, with ELB's reason code
    /// (`Target.FailedHealthChecks`, `Target.ResponseCodeMismatch`,
    /// `Target.Timeout`) and a sentence.
    pub fn unhealthy(reason: &str, description: &str) -> TargetHealth {
        TargetHealth {
            state: "unhealthy".into(),
            reason: Some(reason.into()),
            description: Some(description.into()),
        }
    }
}

/// A registered target as the state keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisteredTarget {
    /// The target's id (instance id or IP address).
    pub id: String,
    /// The port traffic goes to.
    pub port: u16,
    /// `host:port` the proxies connect to, resolved when registered.
    pub address: String,
    /// Its health.
    pub health: TargetHealth,
    /// When it was registered.
    pub registered_ms: u64,
    /// When it was deregistered: it drains until the delay passes.
    #[serde(default)]
    pub draining_since_ms: Option<u64>,
    /// The service's task this target is, when the control plane registered
    /// it (it is deregistered when that task stops running).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_arn: Option<String>,
}

/// The stored form of a target group: what is shown plus its attributes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetGroupRecord {
    /// The group as shown (its `LoadBalancerArns` left empty).
    pub group: TargetGroup,
    /// Attributes by key (`deregistration_delay.timeout_seconds`, …).
    pub attributes: BTreeMap<String, String>,
}

impl TargetGroupRecord {
    /// The deregistration delay in seconds.
    pub fn deregistration_delay_seconds(&self) -> u32 {
        self.attributes
            .get(DEREGISTRATION_DELAY)
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_DEREGISTRATION_DELAY_SECONDS)
    }
}

/// The attributes a new target group starts with.
pub fn default_target_group_attributes() -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            DEREGISTRATION_DELAY.to_string(),
            DEFAULT_DEREGISTRATION_DELAY_SECONDS.to_string(),
        ),
        ("stickiness.enabled".to_string(), "false".to_string()),
        ("stickiness.type".to_string(), "lb_cookie".to_string()),
        (
            "load_balancing.algorithm.type".to_string(),
            "round_robin".to_string(),
        ),
    ])
}

/// Checks one attribute change: only keys orc knows, values it can use.
pub fn validate_attribute(key: &str, value: &str) -> Result<()> {
    match key {
        DEREGISTRATION_DELAY => match value.parse::<u32>() {
            Ok(seconds) if seconds <= 3600 => Ok(()),
            _ => Err(Error::InvalidInput(format!(
                "Attributes: {DEREGISTRATION_DELAY} must be 0 to 3600 seconds, got {value:?}"
            ))),
        },
        "stickiness.enabled" if value == "false" => Ok(()),
        "stickiness.type" if value == "lb_cookie" => Ok(()),
        "load_balancing.algorithm.type" if value == "round_robin" => Ok(()),
        "stickiness.enabled" | "stickiness.type" | "load_balancing.algorithm.type" => {
            Err(Error::InvalidInput(format!(
                "Attributes: orc serves {key} only as its default; {value:?} is not supported"
            )))
        }
        other => Err(Error::InvalidInput(format!(
            "Attributes: {other:?} is not a target group attribute orc knows; it knows {DEREGISTRATION_DELAY}, stickiness.enabled, stickiness.type and load_balancing.algorithm.type"
        ))),
    }
}

/// The attribute that, set to `true`, refuses a load balancer's deletion.
pub const DELETION_PROTECTION: &str = "deletion_protection.enabled";

/// The attribute giving, in seconds, how long a client connection may stay
/// idle before the load balancer closes it (ALB's default 60).
pub const IDLE_TIMEOUT: &str = "idle_timeout.timeout_seconds";

/// The attributes a load balancer starts with (ALB's names and defaults).
pub fn default_load_balancer_attributes() -> BTreeMap<String, String> {
    BTreeMap::from([
        (DELETION_PROTECTION.to_string(), "false".to_string()),
        (IDLE_TIMEOUT.to_string(), "60".to_string()),
        ("routing.http2.enabled".to_string(), "true".to_string()),
        ("access_logs.s3.enabled".to_string(), "false".to_string()),
        (
            "routing.http.drop_invalid_header_fields.enabled".to_string(),
            "false".to_string(),
        ),
    ])
}

/// Checks one load balancer attribute change: only keys orc knows, values
/// ALB accepts (and, for what orc does not do, only the default).
pub fn validate_load_balancer_attribute(key: &str, value: &str) -> Result<()> {
    let boolean = || {
        if value == "true" || value == "false" {
            Ok(())
        } else {
            Err(Error::InvalidInput(format!(
                "Attributes: {key} is true or false, got {value:?}"
            )))
        }
    };
    match key {
        DELETION_PROTECTION | "routing.http2.enabled" => boolean(),
        IDLE_TIMEOUT => match value.parse::<u32>() {
            Ok(seconds) if (1..=4000).contains(&seconds) => Ok(()),
            _ => Err(Error::InvalidInput(format!(
                "Attributes: idle_timeout.timeout_seconds must be 1 to 4000 seconds, got {value:?}"
            ))),
        },
        "access_logs.s3.enabled" | "routing.http.drop_invalid_header_fields.enabled" => {
            boolean()?;
            if value == "false" {
                Ok(())
            } else {
                Err(Error::InvalidInput(format!(
                    "Attributes: orc serves {key} only as false (it has no S3 and keeps every header field)"
                )))
            }
        }
        other => Err(Error::InvalidInput(format!(
            "Attributes: {other:?} is not a load balancer attribute orc knows; it knows {}",
            default_load_balancer_attributes()
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// The health-check settings a create or modify request may change.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthCheckSettings {
    /// `HTTP` or `TCP`.
    #[serde(default)]
    pub health_check_protocol: Option<String>,
    /// `traffic-port` or a port.
    #[serde(default)]
    pub health_check_port: Option<String>,
    /// Whether to check.
    #[serde(default)]
    pub health_check_enabled: Option<bool>,
    /// The path.
    #[serde(default)]
    pub health_check_path: Option<String>,
    /// Seconds between checks.
    #[serde(default)]
    pub health_check_interval_seconds: Option<u32>,
    /// Seconds a check may take.
    #[serde(default)]
    pub health_check_timeout_seconds: Option<u32>,
    /// Successes to turn healthy.
    #[serde(default)]
    pub healthy_threshold_count: Option<u32>,
    /// Failures to turn unhealthy.
    #[serde(default)]
    pub unhealthy_threshold_count: Option<u32>,
    /// HTTP codes.
    #[serde(default)]
    pub matcher: Option<Matcher>,
}

impl HealthCheckSettings {
    /// Applies these settings to `group` and checks the result, naming the
    /// field that is wrong.
    pub fn apply_to(&self, group: &mut TargetGroup) -> Result<()> {
        if let Some(protocol) = &self.health_check_protocol {
            group.health_check_protocol = protocol.to_ascii_uppercase();
        }
        if let Some(port) = &self.health_check_port {
            group.health_check_port = port.clone();
        }
        if let Some(enabled) = self.health_check_enabled {
            group.health_check_enabled = enabled;
        }
        if let Some(path) = &self.health_check_path {
            group.health_check_path = Some(path.clone());
        }
        if let Some(value) = self.health_check_interval_seconds {
            group.health_check_interval_seconds = value;
        }
        if let Some(value) = self.health_check_timeout_seconds {
            group.health_check_timeout_seconds = value;
        }
        if let Some(value) = self.healthy_threshold_count {
            group.healthy_threshold_count = value;
        }
        if let Some(value) = self.unhealthy_threshold_count {
            group.unhealthy_threshold_count = value;
        }
        if let Some(matcher) = &self.matcher {
            group.matcher = Some(matcher.clone());
        }
        validate_health_check(group)
    }
}

/// Checks a target group's health-check settings as ELB does.
pub fn validate_health_check(group: &mut TargetGroup) -> Result<()> {
    let protocol = group.health_check_protocol.as_str();
    if protocol != "HTTP" && protocol != "TCP" {
        return Err(Error::InvalidInput(format!(
            "HealthCheckProtocol: {protocol:?} is not served by orc: use HTTP or TCP"
        )));
    }
    if group.health_check_port != "traffic-port"
        && group
            .health_check_port
            .parse::<u16>()
            .map_or(true, |p| p == 0)
    {
        return Err(Error::InvalidInput(format!(
            "HealthCheckPort: {:?} must be traffic-port or a port from 1 to 65535",
            group.health_check_port
        )));
    }
    let interval = group.health_check_interval_seconds;
    if !(2..=300).contains(&interval) {
        return Err(Error::InvalidInput(format!(
            "HealthCheckIntervalSeconds: must be 2 to 300, got {interval}"
        )));
    }
    let timeout = group.health_check_timeout_seconds;
    if !(1..=120).contains(&timeout) || timeout >= interval {
        return Err(Error::InvalidInput(format!(
            "HealthCheckTimeoutSeconds: must be 1 to 120 and less than HealthCheckIntervalSeconds ({interval}), got {timeout}"
        )));
    }
    for (field, value) in [
        ("HealthyThresholdCount", group.healthy_threshold_count),
        ("UnhealthyThresholdCount", group.unhealthy_threshold_count),
    ] {
        if !(2..=10).contains(&value) {
            return Err(Error::InvalidInput(format!(
                "{field}: must be 2 to 10, got {value}"
            )));
        }
    }
    if protocol == "HTTP" {
        let path = group.health_check_path.get_or_insert_with(|| "/".into());
        if !path.starts_with('/') || path.len() > 1024 {
            return Err(Error::InvalidInput(format!(
                "HealthCheckPath: {path:?} must start with / and be at most 1024 characters"
            )));
        }
        let matcher = group.matcher.get_or_insert_with(|| Matcher {
            http_code: DEFAULT_MATCHER.into(),
        });
        parse_matcher(&matcher.http_code)?;
    } else {
        if group.matcher.is_some() {
            return Err(Error::InvalidInput(
                "Matcher: a TCP health check has no HTTP codes; leave --matcher out or use --health-check-protocol HTTP".into(),
            ));
        }
        group.health_check_path = None;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matchers_parse_like_elb() {
        assert_eq!(parse_matcher("200").unwrap(), [(200, 200)]);
        assert_eq!(parse_matcher("200,302").unwrap(), [(200, 200), (302, 302)]);
        assert_eq!(parse_matcher("200-399").unwrap(), [(200, 399)]);
        for bad in ["", "abc", "600", "399-200", "200-", "100"] {
            let error = parse_matcher(bad).unwrap_err().to_string();
            assert!(error.contains("Matcher.HttpCode"), "{bad}: {error}");
        }
    }

    #[test]
    fn arns_have_elbv2_shapes_and_keys() {
        let lb = load_balancer_arn("application", "web", "0123456789abcdef");
        assert_eq!(
            lb,
            "arn:aws:elasticloadbalancing:orc:000000000000:loadbalancer/app/web/0123456789abcdef"
        );
        let listener = listener_arn(&lb, "fedcba9876543210");
        assert_eq!(
            listener,
            "arn:aws:elasticloadbalancing:orc:000000000000:listener/app/web/0123456789abcdef/fedcba9876543210"
        );
        assert_eq!(
            rule_arn(&listener, "1111"),
            "arn:aws:elasticloadbalancing:orc:000000000000:listener-rule/app/web/0123456789abcdef/fedcba9876543210/1111"
        );
        assert_eq!(
            arn_key("x", "loadbalancer", &lb).unwrap(),
            "app/web/0123456789abcdef"
        );
        let error = arn_key("LoadBalancerArn", "loadbalancer", "web").unwrap_err();
        assert!(error
            .to_string()
            .starts_with("LoadBalancerArn: \"web\" is not a loadbalancer ARN"));
    }

    #[test]
    fn health_check_defaults_and_bounds() {
        let mut group = TargetGroup {
            target_group_arn: String::new(),
            target_group_name: "web".into(),
            protocol: "HTTP".into(),
            port: 80,
            vpc_id: String::new(),
            health_check_protocol: "HTTP".into(),
            health_check_port: "traffic-port".into(),
            health_check_enabled: true,
            health_check_interval_seconds: DEFAULT_HEALTH_CHECK_INTERVAL_SECONDS,
            health_check_timeout_seconds: DEFAULT_HEALTH_CHECK_TIMEOUT_SECONDS,
            healthy_threshold_count: 2,
            unhealthy_threshold_count: 2,
            health_check_path: None,
            matcher: None,
            load_balancer_arns: vec![],
            target_type: "instance".into(),
            protocol_version: None,
            ip_address_type: "ipv4".into(),
        };
        validate_health_check(&mut group).unwrap();
        assert_eq!(group.health_check_path.as_deref(), Some("/"));
        assert_eq!(group.matcher.as_ref().unwrap().http_code, "200");
        let timeout_too_long = HealthCheckSettings {
            health_check_timeout_seconds: Some(5),
            ..Default::default()
        };
        let error = timeout_too_long.apply_to(&mut group.clone()).unwrap_err();
        assert!(
            error.to_string().starts_with("HealthCheckTimeoutSeconds"),
            "{error}"
        );
        let bad_matcher = HealthCheckSettings {
            matcher: Some(Matcher {
                http_code: "2xx".into(),
            }),
            ..Default::default()
        };
        assert!(bad_matcher.apply_to(&mut group).is_err());
    }
}
