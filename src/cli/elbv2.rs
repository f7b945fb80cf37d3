//! `orc elbv2 …`: the load balancer verbs with `aws elbv2`'s flag names, so
//! a tutorial's commands carry over by replacing `aws` with `orc`. Each verb
//! builds elbv2's request body (botocore's PascalCase members) and makes one
//! `Orc.Call` with `elbv2:ACTION`; the answer prints as elbv2's JSON.

use clap::{Args, Subcommand};
use serde_json::{json, Map, Value};

use super::shorthand;

/// The elbv2 verbs.
#[derive(Subcommand, Debug)]
pub enum Elbv2Command {
    /// Create a load balancer; its DNSName is the advertised host of the
    /// server that created it (every server serves every listener).
    CreateLoadBalancer {
        /// Its name (1 to 32 letters, digits and hyphens).
        #[arg(long)]
        name: String,
        /// application (HTTP listeners, default) or network (TCP listeners).
        #[arg(long = "type")]
        kind: Option<String>,
        /// internet-facing (default) or internal.
        #[arg(long)]
        scheme: Option<String>,
        /// Accepted for aws compatibility; orc has no subnets.
        #[arg(long, num_args = 1..)]
        subnets: Vec<String>,
        /// Accepted for aws compatibility; orc has no security groups.
        #[arg(long, num_args = 1..)]
        security_groups: Vec<String>,
        /// ipv4.
        #[arg(long)]
        ip_address_type: Option<String>,
    },
    /// Describe load balancers (default: all).
    DescribeLoadBalancers {
        /// ARNs.
        #[arg(long, num_args = 1..)]
        load_balancer_arns: Vec<String>,
        /// Names.
        #[arg(long, num_args = 1..)]
        names: Vec<String>,
    },
    /// Delete a load balancer with its listeners and rules.
    DeleteLoadBalancer {
        /// The load balancer.
        #[arg(long)]
        load_balancer_arn: String,
    },
    /// Describe a load balancer's attributes.
    DescribeLoadBalancerAttributes {
        /// The load balancer.
        #[arg(long)]
        load_balancer_arn: String,
    },
    /// Change a load balancer's attributes, e.g. Key=deletion_protection.enabled,Value=true.
    ModifyLoadBalancerAttributes {
        /// The load balancer.
        #[arg(long)]
        load_balancer_arn: String,
        /// Key=…,Value=… (space-separated for several) or JSON.
        #[arg(long, num_args = 1..)]
        attributes: Vec<String>,
    },
    /// Create a target group (health checks every 5 s, 2 to turn healthy or unhealthy).
    CreateTargetGroup {
        /// Its name.
        #[arg(long)]
        name: String,
        /// HTTP or TCP.
        #[arg(long)]
        protocol: Option<String>,
        /// The port targets receive traffic on unless they name their own.
        #[arg(long)]
        port: Option<u16>,
        /// instance (default; targets are container instance ids) or ip.
        #[arg(long)]
        target_type: Option<String>,
        /// Accepted for aws compatibility; orc has no VPCs.
        #[arg(long)]
        vpc_id: Option<String>,
        /// HTTP1.
        #[arg(long)]
        protocol_version: Option<String>,
        #[command(flatten)]
        health: HealthCheckFlags,
    },
    /// Describe target groups (default: all).
    DescribeTargetGroups {
        /// Only those a load balancer's listeners forward to.
        #[arg(long)]
        load_balancer_arn: Option<String>,
        /// ARNs.
        #[arg(long, num_args = 1..)]
        target_group_arns: Vec<String>,
        /// Names.
        #[arg(long, num_args = 1..)]
        names: Vec<String>,
    },
    /// Change a target group's health-check settings.
    ModifyTargetGroup {
        /// The target group.
        #[arg(long)]
        target_group_arn: String,
        #[command(flatten)]
        health: HealthCheckFlags,
    },
    /// Delete a target group no listener, rule or service uses.
    DeleteTargetGroup {
        /// The target group.
        #[arg(long)]
        target_group_arn: String,
    },
    /// Describe a target group's attributes.
    DescribeTargetGroupAttributes {
        /// The target group.
        #[arg(long)]
        target_group_arn: String,
    },
    /// Change a target group's attributes, e.g. Key=deregistration_delay.timeout_seconds,Value=10.
    ModifyTargetGroupAttributes {
        /// The target group.
        #[arg(long)]
        target_group_arn: String,
        /// Key=…,Value=… (space-separated for several) or JSON.
        #[arg(long, num_args = 1..)]
        attributes: Vec<String>,
    },
    /// Create a listener: a port every proxy serves.
    CreateListener {
        /// The load balancer.
        #[arg(long)]
        load_balancer_arn: String,
        /// HTTP or TCP.
        #[arg(long)]
        protocol: Option<String>,
        /// The port.
        #[arg(long)]
        port: Option<u16>,
        /// Type=forward,TargetGroupArn=… or JSON.
        #[arg(long, num_args = 1..)]
        default_actions: Vec<String>,
    },
    /// Describe listeners.
    DescribeListeners {
        /// A load balancer's listeners.
        #[arg(long)]
        load_balancer_arn: Option<String>,
        /// ARNs.
        #[arg(long, num_args = 1..)]
        listener_arns: Vec<String>,
    },
    /// Change a listener's port, protocol or default action.
    ModifyListener {
        /// The listener.
        #[arg(long)]
        listener_arn: String,
        /// A new port.
        #[arg(long)]
        port: Option<u16>,
        /// A new protocol.
        #[arg(long)]
        protocol: Option<String>,
        /// Type=forward,TargetGroupArn=… or JSON.
        #[arg(long, num_args = 1..)]
        default_actions: Vec<String>,
    },
    /// Delete a listener with its rules.
    DeleteListener {
        /// The listener.
        #[arg(long)]
        listener_arn: String,
    },
    /// Create a rule: Field=path-pattern,Values=/api/* or Field=host-header,Values=example.com.
    CreateRule {
        /// The listener.
        #[arg(long)]
        listener_arn: String,
        /// Field=…,Values=… (space-separated for several) or JSON.
        #[arg(long, num_args = 1..)]
        conditions: Vec<String>,
        /// 1 to 50000, lowest first.
        #[arg(long)]
        priority: Option<u32>,
        /// Type=forward,TargetGroupArn=… or JSON.
        #[arg(long, num_args = 1..)]
        actions: Vec<String>,
    },
    /// Describe a listener's rules (its default rule last).
    DescribeRules {
        /// The listener.
        #[arg(long)]
        listener_arn: Option<String>,
        /// ARNs.
        #[arg(long, num_args = 1..)]
        rule_arns: Vec<String>,
    },
    /// Change a rule's conditions or actions.
    ModifyRule {
        /// The rule.
        #[arg(long)]
        rule_arn: String,
        /// Field=…,Values=… or JSON.
        #[arg(long, num_args = 1..)]
        conditions: Vec<String>,
        /// Type=forward,TargetGroupArn=… or JSON.
        #[arg(long, num_args = 1..)]
        actions: Vec<String>,
    },
    /// Change rules' priorities: RuleArn=…,Priority=….
    SetRulePriorities {
        /// RuleArn=…,Priority=… (space-separated for several) or JSON.
        #[arg(long, num_args = 1..)]
        rule_priorities: Vec<String>,
    },
    /// Delete a rule.
    DeleteRule {
        /// The rule.
        #[arg(long)]
        rule_arn: String,
    },
    /// Register targets: Id=…,Port=… (an IPv4 address or a container instance id).
    RegisterTargets(TargetsArgs),
    /// Deregister targets: they drain for the deregistration delay (10 s by default).
    DeregisterTargets(TargetsArgs),
    /// The health of a target group's targets.
    DescribeTargetHealth {
        /// The target group.
        #[arg(long)]
        target_group_arn: String,
        /// Only these: Id=…,Port=….
        #[arg(long, num_args = 1..)]
        targets: Vec<String>,
    },
}

/// A target group and targets.
#[derive(Args, Debug)]
pub struct TargetsArgs {
    /// The target group.
    #[arg(long)]
    pub target_group_arn: String,
    /// Id=…,Port=… (space-separated for several) or JSON.
    #[arg(long, num_args = 1.., required = true)]
    pub targets: Vec<String>,
}

/// The health-check flags of create-target-group and modify-target-group.
#[derive(Args, Debug)]
pub struct HealthCheckFlags {
    /// HTTP or TCP (default: the group's protocol).
    #[arg(long)]
    pub health_check_protocol: Option<String>,
    /// traffic-port (default) or a port.
    #[arg(long)]
    pub health_check_port: Option<String>,
    /// Check targets (default).
    #[arg(long, overrides_with = "no_health_check_enabled")]
    pub health_check_enabled: bool,
    /// Do not check targets: registered targets count as healthy.
    #[arg(long)]
    pub no_health_check_enabled: bool,
    /// The path an HTTP check GETs (default /).
    #[arg(long)]
    pub health_check_path: Option<String>,
    /// Seconds between checks (default 5).
    #[arg(long)]
    pub health_check_interval_seconds: Option<u32>,
    /// Seconds a check may take (default 2).
    #[arg(long)]
    pub health_check_timeout_seconds: Option<u32>,
    /// Successes to turn healthy (default 2).
    #[arg(long)]
    pub healthy_threshold_count: Option<u32>,
    /// Failures to turn unhealthy (default 2).
    #[arg(long)]
    pub unhealthy_threshold_count: Option<u32>,
    /// HttpCode=200-399 (or 200, or 200,302).
    #[arg(long)]
    pub matcher: Option<String>,
}

impl HealthCheckFlags {
    fn insert_into(&self, body: &mut Map<String, Value>) -> anyhow::Result<()> {
        let enabled = if self.no_health_check_enabled {
            Some(false)
        } else if self.health_check_enabled {
            Some(true)
        } else {
            None
        };
        let matcher = self
            .matcher
            .as_deref()
            .map(|m| match m.trim().strip_prefix("HttpCode=") {
                // The codes themselves may hold commas (200,302).
                Some(codes) if !codes.starts_with('{') => Ok(json!({"HttpCode": codes})),
                _ => shorthand::parse_structure("--matcher", m).map(|v| {
                    let mut v = v;
                    if let Some(code) = v.get("HttpCode").filter(|c| !c.is_string()) {
                        v["HttpCode"] = Value::String(code.to_string());
                    }
                    v
                }),
            })
            .transpose()?;
        for (key, value) in [
            ("HealthCheckProtocol", json!(self.health_check_protocol)),
            ("HealthCheckPort", json!(self.health_check_port)),
            ("HealthCheckEnabled", json!(enabled)),
            ("HealthCheckPath", json!(self.health_check_path)),
            (
                "HealthCheckIntervalSeconds",
                json!(self.health_check_interval_seconds),
            ),
            (
                "HealthCheckTimeoutSeconds",
                json!(self.health_check_timeout_seconds),
            ),
            ("HealthyThresholdCount", json!(self.healthy_threshold_count)),
            (
                "UnhealthyThresholdCount",
                json!(self.unhealthy_threshold_count),
            ),
            ("Matcher", json!(matcher)),
        ] {
            if !value.is_null() {
                body.insert(key.to_string(), value);
            }
        }
        Ok(())
    }
}

/// Parses list flags given as shorthand items or one JSON list.
fn list(flag: &str, items: &[String]) -> anyhow::Result<Value> {
    let mut all = Vec::new();
    for item in items {
        match shorthand::parse_list(flag, item)? {
            Value::Array(values) => all.extend(values),
            other => all.push(other),
        }
    }
    Ok(Value::Array(all))
}

/// `--targets Id=…,Port=…`: ids stay text even when they look like numbers.
fn targets(items: &[String]) -> anyhow::Result<Value> {
    let mut targets = list("--targets", items)?;
    for target in targets.as_array_mut().into_iter().flatten() {
        if let Some(id) = target.get("Id").filter(|id| !id.is_string()) {
            target["Id"] = Value::String(id.to_string());
        }
    }
    Ok(targets)
}

/// `--conditions Field=path-pattern,Values=/a/*,/b/*`: the values after
/// `Values=` are a comma-separated list, as in aws's shorthand.
fn conditions(items: &[String]) -> anyhow::Result<Value> {
    let mut all = Vec::new();
    for item in items {
        let trimmed = item.trim();
        if trimmed.starts_with('[') || trimmed.starts_with('{') {
            match shorthand::parse_list("--conditions", trimmed)? {
                Value::Array(values) => all.extend(values),
                other => all.push(other),
            }
            continue;
        }
        let Some((head, values)) = trimmed.split_once("Values=") else {
            anyhow::bail!(
                "--conditions: {trimmed:?} needs Values (Field=path-pattern,Values=/api/*)"
            );
        };
        let field = head
            .trim_end_matches(',')
            .strip_prefix("Field=")
            .ok_or_else(|| {
                anyhow::anyhow!("--conditions: {trimmed:?} must start with Field=host-header or Field=path-pattern")
            })?;
        let values: Vec<&str> = values
            .trim_matches(['[', ']'])
            .split(',')
            .filter(|v| !v.is_empty())
            .collect();
        all.push(json!({"Field": field, "Values": values}));
    }
    Ok(Value::Array(all))
}

impl Elbv2Command {
    /// The elbv2 action and its request body.
    pub fn request(&self) -> anyhow::Result<(&'static str, Value)> {
        Ok(match self {
            Elbv2Command::CreateLoadBalancer {
                name,
                kind,
                scheme,
                subnets,
                security_groups,
                ip_address_type,
            } => (
                "CreateLoadBalancer",
                json!({"Name": name, "Type": kind, "Scheme": scheme, "Subnets": subnets,
                       "SecurityGroups": security_groups, "IpAddressType": ip_address_type}),
            ),
            Elbv2Command::DescribeLoadBalancers {
                load_balancer_arns,
                names,
            } => (
                "DescribeLoadBalancers",
                json!({"LoadBalancerArns": load_balancer_arns, "Names": names}),
            ),
            Elbv2Command::DeleteLoadBalancer { load_balancer_arn } => (
                "DeleteLoadBalancer",
                json!({"LoadBalancerArn": load_balancer_arn}),
            ),
            Elbv2Command::DescribeLoadBalancerAttributes { load_balancer_arn } => (
                "DescribeLoadBalancerAttributes",
                json!({"LoadBalancerArn": load_balancer_arn}),
            ),
            Elbv2Command::ModifyLoadBalancerAttributes {
                load_balancer_arn,
                attributes,
            } => (
                "ModifyLoadBalancerAttributes",
                json!({"LoadBalancerArn": load_balancer_arn, "Attributes": string_values(list("--attributes", attributes)?)}),
            ),
            Elbv2Command::CreateTargetGroup {
                name,
                protocol,
                port,
                target_type,
                vpc_id,
                protocol_version,
                health,
            } => {
                let mut body = Map::new();
                body.insert("Name".into(), json!(name));
                body.insert("Protocol".into(), json!(protocol));
                body.insert("Port".into(), json!(port));
                body.insert("TargetType".into(), json!(target_type));
                body.insert("VpcId".into(), json!(vpc_id));
                body.insert("ProtocolVersion".into(), json!(protocol_version));
                health.insert_into(&mut body)?;
                ("CreateTargetGroup", Value::Object(body))
            }
            Elbv2Command::DescribeTargetGroups {
                load_balancer_arn,
                target_group_arns,
                names,
            } => (
                "DescribeTargetGroups",
                json!({"LoadBalancerArn": load_balancer_arn, "TargetGroupArns": target_group_arns, "Names": names}),
            ),
            Elbv2Command::ModifyTargetGroup {
                target_group_arn,
                health,
            } => {
                let mut body = Map::new();
                body.insert("TargetGroupArn".into(), json!(target_group_arn));
                health.insert_into(&mut body)?;
                ("ModifyTargetGroup", Value::Object(body))
            }
            Elbv2Command::DeleteTargetGroup { target_group_arn } => (
                "DeleteTargetGroup",
                json!({"TargetGroupArn": target_group_arn}),
            ),
            Elbv2Command::DescribeTargetGroupAttributes { target_group_arn } => (
                "DescribeTargetGroupAttributes",
                json!({"TargetGroupArn": target_group_arn}),
            ),
            Elbv2Command::ModifyTargetGroupAttributes {
                target_group_arn,
                attributes,
            } => (
                "ModifyTargetGroupAttributes",
                json!({"TargetGroupArn": target_group_arn, "Attributes": string_values(list("--attributes", attributes)?)}),
            ),
            Elbv2Command::CreateListener {
                load_balancer_arn,
                protocol,
                port,
                default_actions,
            } => (
                "CreateListener",
                json!({"LoadBalancerArn": load_balancer_arn, "Protocol": protocol, "Port": port,
                       "DefaultActions": list("--default-actions", default_actions)?}),
            ),
            Elbv2Command::DescribeListeners {
                load_balancer_arn,
                listener_arns,
            } => (
                "DescribeListeners",
                json!({"LoadBalancerArn": load_balancer_arn, "ListenerArns": listener_arns}),
            ),
            Elbv2Command::ModifyListener {
                listener_arn,
                port,
                protocol,
                default_actions,
            } => {
                let actions = if default_actions.is_empty() {
                    Value::Null
                } else {
                    list("--default-actions", default_actions)?
                };
                (
                    "ModifyListener",
                    json!({"ListenerArn": listener_arn, "Port": port, "Protocol": protocol, "DefaultActions": actions}),
                )
            }
            Elbv2Command::DeleteListener { listener_arn } => {
                ("DeleteListener", json!({"ListenerArn": listener_arn}))
            }
            Elbv2Command::CreateRule {
                listener_arn,
                conditions: given,
                priority,
                actions,
            } => (
                "CreateRule",
                json!({"ListenerArn": listener_arn, "Conditions": conditions(given)?,
                       "Priority": priority, "Actions": list("--actions", actions)?}),
            ),
            Elbv2Command::DescribeRules {
                listener_arn,
                rule_arns,
            } => (
                "DescribeRules",
                json!({"ListenerArn": listener_arn, "RuleArns": rule_arns}),
            ),
            Elbv2Command::ModifyRule {
                rule_arn,
                conditions: given,
                actions,
            } => {
                let given = if given.is_empty() {
                    Value::Null
                } else {
                    conditions(given)?
                };
                let actions = if actions.is_empty() {
                    Value::Null
                } else {
                    list("--actions", actions)?
                };
                (
                    "ModifyRule",
                    json!({"RuleArn": rule_arn, "Conditions": given, "Actions": actions}),
                )
            }
            Elbv2Command::SetRulePriorities { rule_priorities } => (
                "SetRulePriorities",
                json!({"RulePriorities": list("--rule-priorities", rule_priorities)?}),
            ),
            Elbv2Command::DeleteRule { rule_arn } => ("DeleteRule", json!({"RuleArn": rule_arn})),
            Elbv2Command::RegisterTargets(args) => (
                "RegisterTargets",
                json!({"TargetGroupArn": args.target_group_arn, "Targets": targets(&args.targets)?}),
            ),
            Elbv2Command::DeregisterTargets(args) => (
                "DeregisterTargets",
                json!({"TargetGroupArn": args.target_group_arn, "Targets": targets(&args.targets)?}),
            ),
            Elbv2Command::DescribeTargetHealth {
                target_group_arn,
                targets: given,
            } => (
                "DescribeTargetHealth",
                json!({"TargetGroupArn": target_group_arn, "Targets": targets(given)?}),
            ),
        })
    }
}

/// Attributes parsed from shorthand with every `Value` as text
/// (`Value=10` parses as a number, `Value=true` as a boolean).
fn string_values(mut attributes: Value) -> Value {
    for attribute in attributes.as_array_mut().into_iter().flatten() {
        if let Some(value) = attribute.get("Value").filter(|v| !v.is_string()) {
            attribute["Value"] = Value::String(value.to_string());
        }
    }
    attributes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shorthand_flags_become_elbv2_bodies() {
        let command = Elbv2Command::CreateRule {
            listener_arn: "l".into(),
            conditions: vec!["Field=path-pattern,Values=/api/*,/v2/*".into()],
            priority: Some(10),
            actions: vec!["Type=forward,TargetGroupArn=arn:tg".into()],
        };
        let (action, body) = command.request().unwrap();
        assert_eq!(action, "CreateRule");
        assert_eq!(
            body["Conditions"],
            json!([{"Field": "path-pattern", "Values": ["/api/*", "/v2/*"]}])
        );
        assert_eq!(
            body["Actions"],
            json!([{"Type": "forward", "TargetGroupArn": "arn:tg"}])
        );
        let (_, body) = Elbv2Command::RegisterTargets(TargetsArgs {
            target_group_arn: "tg".into(),
            targets: vec!["Id=10.0.0.1,Port=8080 Id=1234,Port=80".into()],
        })
        .request()
        .unwrap();
        assert_eq!(
            body["Targets"],
            json!([{"Id": "10.0.0.1", "Port": 8080}, {"Id": "1234", "Port": 80}])
        );
        let mut body = Map::new();
        HealthCheckFlags {
            health_check_protocol: None,
            health_check_port: None,
            health_check_enabled: false,
            no_health_check_enabled: false,
            health_check_path: Some("/health".into()),
            health_check_interval_seconds: Some(5),
            health_check_timeout_seconds: None,
            healthy_threshold_count: None,
            unhealthy_threshold_count: None,
            matcher: Some("HttpCode=200,302".into()),
        }
        .insert_into(&mut body)
        .unwrap();
        assert_eq!(
            Value::Object(body),
            json!({"HealthCheckPath": "/health", "HealthCheckIntervalSeconds": 5, "Matcher": {"HttpCode": "200,302"}})
        );
    }
}
