//! The elbv2 verbs of orc's built-in load balancer: each action takes
//! elbv2's request body (JSON with botocore's PascalCase member names) and
//! returns elbv2's response body, so `orc elbv2 … --output json` prints what
//! `aws elbv2` prints and the AWS door can serve the same answers. Writes
//! become `store::Command::Elbv2` proposals (ids and times chosen here);
//! reads wait on a ReadIndex barrier, so any server answers the same.

use serde::Deserialize;
use serde_json::{json, Value};

use super::ecs::{parse, propose, read_linearizable, ActionResult};
use crate::error::Refusal;
use crate::model::elbv2::{
    self as m, arn_key, HealthCheckSettings, Listener, LoadBalancer, LoadBalancerState,
    RegisteredTarget, Rule, RuleAction, RuleCondition, TargetDescription, TargetGroup,
    TargetHealth,
};
use crate::raft::node::RaftHandle;
use crate::store::elbv2::{
    attributes_view, load_balancer_attributes_view, parse_priority, target_address, target_key,
    Elbv2Command, Elbv2State,
};
use crate::store::{Command, State};
use crate::vocab::action::Elbv2Action;
use crate::vocab::time::{iso_time, now_ms};
use crate::{Error, Result};

/// A request naming one load balancer.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct LoadBalancerRequest {
    load_balancer_arn: String,
}

/// One `{Key, Value}` of an attributes change.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AttributeRequest {
    key: String,
    value: String,
}

/// An attributes change as `(key, value)` pairs, each checked by `validate`
/// (load balancers and target groups know different keys), so a bad one
/// refuses the whole change before anything is proposed.
fn checked_attributes(
    attributes: Vec<AttributeRequest>,
    validate: fn(&str, &str) -> Result<()>,
) -> Result<Vec<(String, String)>> {
    attributes
        .into_iter()
        .map(|a| validate(&a.key, &a.value).map(|()| (a.key, a.value)))
        .collect()
}

/// Dispatches one elbv2 action: the one `match` over [`Elbv2Action`].
pub async fn call(
    raft: &RaftHandle,
    action: Elbv2Action,
    body: &str,
    request_id: String,
) -> Result<ActionResult> {
    let name = action.name();
    let answer = match action {
        Elbv2Action::CreateLoadBalancer => create_load_balancer(raft, body, request_id).await?,
        Elbv2Action::DescribeLoadBalancers => describe_load_balancers(raft, body).await?,
        Elbv2Action::DeleteLoadBalancer => {
            let request: LoadBalancerRequest = parse(name, body)?;
            let command = Elbv2Command::DeleteLoadBalancer {
                load_balancer_arn: request.load_balancer_arn,
            };
            write(raft, request_id, command).await?
        }
        Elbv2Action::DescribeLoadBalancerAttributes => {
            let request: LoadBalancerRequest = parse(name, body)?;
            read_linearizable(raft, |state| {
                let (key, _) = state.elbv2.load_balancer(&request.load_balancer_arn)?;
                Ok(json!({ "Attributes": load_balancer_attributes_view(&state.elbv2, &key) }))
            })
            .await?
        }
        Elbv2Action::ModifyLoadBalancerAttributes => {
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct Request {
                load_balancer_arn: String,
                attributes: Vec<AttributeRequest>,
            }
            let request: Request = parse(name, body)?;
            let attributes =
                checked_attributes(request.attributes, m::validate_load_balancer_attribute)?;
            let command = Elbv2Command::ModifyLoadBalancerAttributes {
                load_balancer_arn: request.load_balancer_arn,
                attributes,
            };
            write(raft, request_id, command).await?
        }
        Elbv2Action::CreateTargetGroup => create_target_group(raft, body, request_id).await?,
        Elbv2Action::DescribeTargetGroups => describe_target_groups(raft, body).await?,
        Elbv2Action::ModifyTargetGroup => {
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct Request {
                target_group_arn: String,
                #[serde(flatten)]
                settings: HealthCheckSettings,
            }
            let request: Request = parse(name, body)?;
            let command = Elbv2Command::ModifyTargetGroup {
                target_group_arn: request.target_group_arn,
                settings: request.settings,
            };
            let answer = write(raft, request_id, command).await?;
            raft.store()
                .read(|state| with_load_balancer_arns(state, answer))?
        }
        Elbv2Action::DeleteTargetGroup => {
            let request: TargetGroupRequest = parse(name, body)?;
            let command = Elbv2Command::DeleteTargetGroup {
                target_group_arn: request.target_group_arn,
            };
            write(raft, request_id, command).await?
        }
        Elbv2Action::DescribeTargetGroupAttributes => {
            let request: TargetGroupRequest = parse(name, body)?;
            read_linearizable(raft, |state| {
                let (_, record) = state.elbv2.target_group(&request.target_group_arn)?;
                Ok(json!({ "Attributes": attributes_view(record) }))
            })
            .await?
        }
        Elbv2Action::ModifyTargetGroupAttributes => {
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct Request {
                target_group_arn: String,
                attributes: Vec<AttributeRequest>,
            }
            let request: Request = parse(name, body)?;
            let attributes = checked_attributes(request.attributes, m::validate_attribute)?;
            let command = Elbv2Command::ModifyTargetGroupAttributes {
                target_group_arn: request.target_group_arn,
                attributes,
            };
            write(raft, request_id, command).await?
        }
        Elbv2Action::CreateListener => create_listener(raft, body, request_id).await?,
        Elbv2Action::DescribeListeners => describe_listeners(raft, body).await?,
        Elbv2Action::ModifyListener => modify_listener(raft, body, request_id).await?,
        Elbv2Action::DeleteListener => {
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct Request {
                listener_arn: String,
            }
            let request: Request = parse(name, body)?;
            let command = Elbv2Command::DeleteListener {
                listener_arn: request.listener_arn,
            };
            write(raft, request_id, command).await?
        }
        Elbv2Action::CreateRule => create_rule(raft, body, request_id).await?,
        Elbv2Action::DescribeRules => describe_rules(raft, body).await?,
        Elbv2Action::ModifyRule => {
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct Request {
                rule_arn: String,
                conditions: Option<Vec<RuleCondition>>,
                actions: Option<Vec<RuleAction>>,
            }
            let request: Request = parse(name, body)?;
            arn_key("RuleArn", "listener-rule", &request.rule_arn)?;
            let conditions = request
                .conditions
                .as_deref()
                .map(m::normalize_conditions)
                .transpose()?;
            let actions = request
                .actions
                .as_deref()
                .map(|a| m::normalize_actions("Actions", a).map(|(a, _)| a))
                .transpose()?;
            let command = Elbv2Command::ModifyRule {
                rule_arn: request.rule_arn,
                conditions,
                actions,
            };
            write(raft, request_id, command).await?
        }
        Elbv2Action::SetRulePriorities => {
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct RulePriority {
                rule_arn: String,
                priority: Value,
            }
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct Request {
                rule_priorities: Vec<RulePriority>,
            }
            let request: Request = parse(name, body)?;
            let priorities = request
                .rule_priorities
                .into_iter()
                .map(|p| Ok((p.rule_arn, parse_priority(&number_text(&p.priority))?)))
                .collect::<Result<Vec<_>>>()?;
            write(
                raft,
                request_id,
                Elbv2Command::SetRulePriorities { priorities },
            )
            .await?
        }
        Elbv2Action::DeleteRule => {
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct Request {
                rule_arn: String,
            }
            let request: Request = parse(name, body)?;
            if request.rule_arn.ends_with("/default") {
                return Err(Error::InvalidInput(
                    "RuleArn: a listener's default rule cannot be deleted (OperationNotPermitted); change it with modify-listener --default-actions".into(),
                ));
            }
            let command = Elbv2Command::DeleteRule {
                rule_arn: request.rule_arn,
            };
            write(raft, request_id, command).await?
        }
        Elbv2Action::RegisterTargets => register_targets(raft, body, request_id).await?,
        Elbv2Action::DeregisterTargets => {
            let request: TargetsRequest = parse(name, body)?;
            let targets = raft.store().read(|state| {
                let (_, record) = state.elbv2.target_group(&request.target_group_arn)?;
                Ok::<_, Error>(
                    request
                        .targets
                        .iter()
                        .map(|t| (t.id.clone(), t.port.unwrap_or(record.group.port)))
                        .collect::<Vec<_>>(),
                )
            })?;
            let command = Elbv2Command::DeregisterTargets {
                target_group_arn: request.target_group_arn,
                targets,
                now_ms: now_ms(),
            };
            write(raft, request_id, command).await?
        }
        Elbv2Action::DescribeTargetHealth => describe_target_health(raft, body).await?,
    };
    Ok(answer.into())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TargetGroupRequest {
    target_group_arn: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TargetsRequest {
    target_group_arn: String,
    #[serde(default)]
    targets: Vec<TargetDescription>,
}

/// A number given as JSON number or text (the query protocol sends text).
fn number_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

async fn write(raft: &RaftHandle, request_id: String, command: Elbv2Command) -> Result<Value> {
    propose(raft, request_id, Command::Elbv2(command)).await
}

/// Fills each target group's `LoadBalancerArns` (derived from the listeners).
fn with_load_balancer_arns(state: &State, mut answer: Value) -> Result<Value> {
    if let Some(groups) = answer["TargetGroups"].as_array_mut() {
        for group in groups {
            let arn = group["TargetGroupArn"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            group["LoadBalancerArns"] = json!(state.elbv2.load_balancers_using(&arn));
        }
    }
    Ok(answer)
}

/// The host part of this server's advertised address: the `DNSName` of
/// the load balancers it creates.
fn advertised_host(raft: &RaftHandle) -> String {
    let id = raft.status().id;
    let address = raft
        .store()
        .read(|state| state.member_address(id).map(str::to_string))
        .unwrap_or_else(|| "127.0.0.1".into());
    match address.rsplit_once(':') {
        Some((host, _)) => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        None => address,
    }
}

async fn create_load_balancer(raft: &RaftHandle, body: &str, request_id: String) -> Result<Value> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Request {
        name: String,
        scheme: Option<String>,
        #[serde(rename = "Type")]
        kind: Option<String>,
        ip_address_type: Option<String>,
    }
    let request: Request = parse("CreateLoadBalancer", body)?;
    m::validate_name("Name", &request.name)?;
    let kind = request.kind.unwrap_or_else(|| "application".into());
    if kind != "application" && kind != "network" {
        return Err(Error::InvalidInput(format!(
            "Type: {kind:?} is not served by orc: use application (HTTP listeners) or network (TCP listeners)"
        )));
    }
    let scheme = request.scheme.unwrap_or_else(|| "internet-facing".into());
    if scheme != "internet-facing" && scheme != "internal" {
        return Err(Error::InvalidInput(format!(
            "Scheme: must be internet-facing or internal, got {scheme:?}"
        )));
    }
    if request
        .ip_address_type
        .as_deref()
        .is_some_and(|t| t != "ipv4")
    {
        return Err(Error::InvalidInput(
            "IpAddressType: orc's load balancers are ipv4".into(),
        ));
    }
    let load_balancer = LoadBalancer {
        load_balancer_arn: m::load_balancer_arn(&kind, &request.name, &m::new_id()),
        dns_name: advertised_host(raft),
        canonical_hosted_zone_id: "ORC".into(),
        created_time: iso_time(now_ms()),
        load_balancer_name: request.name,
        scheme,
        vpc_id: "vpc-orc".into(),
        state: LoadBalancerState {
            code: "active".into(),
        },
        kind,
        availability_zones: vec![],
        security_groups: vec![],
        ip_address_type: "ipv4".into(),
    };
    write(
        raft,
        request_id,
        Elbv2Command::CreateLoadBalancer { load_balancer },
    )
    .await
}

async fn describe_load_balancers(raft: &RaftHandle, body: &str) -> Result<Value> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Request {
        #[serde(default)]
        load_balancer_arns: Vec<String>,
        #[serde(default)]
        names: Vec<String>,
    }
    let request: Request = parse("DescribeLoadBalancers", body)?;
    read_linearizable(raft, |state| {
        let elb = &state.elbv2;
        let mut found = Vec::new();
        for arn in &request.load_balancer_arns {
            found.push(elb.load_balancer(arn)?.1.clone());
        }
        for name in &request.names {
            let lb = elb
                .load_balancers
                .values()
                .find(|lb| lb.load_balancer_name == *name)
                .ok_or_else(|| {
                    Error::Refused(Refusal::LoadBalancerNotFound, format!(
                        "Names: load balancer {name:?} not found (LoadBalancerNotFound); see `orc elbv2 describe-load-balancers`"
                    ))
                })?;
            found.push(lb.clone());
        }
        if request.load_balancer_arns.is_empty() && request.names.is_empty() {
            found = elb.load_balancers.values().cloned().collect();
        }
        Ok(json!({ "LoadBalancers": found }))
    })
    .await
}

async fn create_target_group(raft: &RaftHandle, body: &str, request_id: String) -> Result<Value> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Request {
        name: String,
        protocol: Option<String>,
        port: Option<u16>,
        target_type: Option<String>,
        protocol_version: Option<String>,
        #[serde(flatten)]
        settings: HealthCheckSettings,
    }
    let request: Request = parse("CreateTargetGroup", body)?;
    m::validate_name("Name", &request.name)?;
    let protocol = request
        .protocol
        .ok_or_else(|| {
            Error::InvalidInput("Protocol: a target group needs --protocol HTTP or TCP".into())
        })?
        .to_ascii_uppercase();
    if protocol != "HTTP" && protocol != "TCP" {
        return Err(Error::InvalidInput(format!(
            "Protocol: {protocol:?} is not served by orc: use HTTP or TCP"
        )));
    }
    let port = request.port.filter(|p| *p != 0).ok_or_else(|| {
        Error::InvalidInput("Port: a target group needs --port from 1 to 65535".into())
    })?;
    let target_type = request.target_type.unwrap_or_else(|| "instance".into());
    if target_type != "instance" && target_type != "ip" {
        return Err(Error::InvalidInput(format!(
            "TargetType: {target_type:?} is not served by orc: use instance (container instance ids) or ip"
        )));
    }
    if protocol == "TCP" && request.settings.matcher.is_some() {
        return Err(Error::InvalidInput(
            "Matcher: a TCP target group's health check has no HTTP codes; leave --matcher out"
                .into(),
        ));
    }
    if request
        .protocol_version
        .as_deref()
        .is_some_and(|v| v != "HTTP1")
    {
        return Err(Error::InvalidInput(
            "ProtocolVersion: orc's target groups speak HTTP1 to targets".into(),
        ));
    }
    let mut group = TargetGroup {
        target_group_arn: m::target_group_arn(&request.name, &m::new_id()),
        target_group_name: request.name,
        protocol: protocol.clone(),
        port,
        vpc_id: "vpc-orc".into(),
        health_check_protocol: protocol.clone(),
        health_check_port: "traffic-port".into(),
        health_check_enabled: true,
        health_check_interval_seconds: m::DEFAULT_HEALTH_CHECK_INTERVAL_SECONDS,
        health_check_timeout_seconds: m::DEFAULT_HEALTH_CHECK_TIMEOUT_SECONDS,
        healthy_threshold_count: m::DEFAULT_HEALTHY_THRESHOLD_COUNT,
        unhealthy_threshold_count: m::DEFAULT_UNHEALTHY_THRESHOLD_COUNT,
        health_check_path: None,
        matcher: None,
        load_balancer_arns: vec![],
        target_type,
        protocol_version: (protocol == "HTTP").then(|| "HTTP1".to_string()),
        ip_address_type: "ipv4".into(),
    };
    request.settings.apply_to(&mut group)?;
    write(
        raft,
        request_id,
        Elbv2Command::CreateTargetGroup {
            target_group: Box::new(group),
        },
    )
    .await
}

async fn describe_target_groups(raft: &RaftHandle, body: &str) -> Result<Value> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Request {
        load_balancer_arn: Option<String>,
        #[serde(default)]
        target_group_arns: Vec<String>,
        #[serde(default)]
        names: Vec<String>,
    }
    let request: Request = parse("DescribeTargetGroups", body)?;
    read_linearizable(raft, |state| {
        let elb = &state.elbv2;
        let mut found = Vec::new();
        for arn in &request.target_group_arns {
            found.push(elb.target_group(arn)?.1.group.clone());
        }
        for name in &request.names {
            let group = elb
                .target_groups
                .values()
                .find(|tg| tg.group.target_group_name == *name)
                .ok_or_else(|| {
                    Error::Refused(Refusal::TargetGroupNotFound, format!(
                        "Names: target group {name:?} not found (TargetGroupNotFound); see `orc elbv2 describe-target-groups`"
                    ))
                })?;
            found.push(group.group.clone());
        }
        if request.target_group_arns.is_empty() && request.names.is_empty() {
            found = elb.target_groups.values().map(|r| r.group.clone()).collect();
        }
        if let Some(lb_arn) = &request.load_balancer_arn {
            elb.load_balancer(lb_arn)?;
            found.retain(|group| {
                elb.load_balancers_using(&group.target_group_arn)
                    .contains(lb_arn)
            });
        }
        with_load_balancer_arns(state, json!({ "TargetGroups": found }))
    })
    .await
}

fn parse_actions(field: &str, actions: &[RuleAction]) -> Result<Vec<RuleAction>> {
    m::normalize_actions(field, actions).map(|(actions, _)| actions)
}

/// Whether `port` can be bound on this machine, checked before a listener
/// that would need it is created. A port some process already holds (or a
/// privileged port without the right) fails here, so the listener is
/// refused instead of created unserved.
fn check_bindable(port: u16) -> Result<()> {
    match std::net::TcpListener::bind(("0.0.0.0", port)) {
        Ok(_) => Ok(()),
        Err(error) => Err(Error::Conflict(format!(
            "Port: {port} cannot be bound on this server ({error}); another process holds it or it needs privileges, so pick another --port"
        ))),
    }
}

/// Refuses a port no listener holds yet that this server cannot bind.
fn check_port_free_here(raft: &RaftHandle, port: u16, own_listener: Option<&str>) -> Result<()> {
    let held_by_listener = raft.store().read(|state| {
        state
            .elbv2
            .listener_on_port(port)
            .map(|l| l.listener_arn.clone())
    });
    match held_by_listener {
        // Our own listener keeps its port; another listener's clash is
        // refused by the state machine with its ARN.
        Some(arn) if Some(arn.as_str()) == own_listener => Ok(()),
        Some(_) => Ok(()),
        None => check_bindable(port),
    }
}

async fn create_listener(raft: &RaftHandle, body: &str, request_id: String) -> Result<Value> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Request {
        load_balancer_arn: String,
        protocol: Option<String>,
        port: Option<u16>,
        #[serde(default)]
        default_actions: Vec<RuleAction>,
    }
    let request: Request = parse("CreateListener", body)?;
    arn_key(
        "LoadBalancerArn",
        "loadbalancer",
        &request.load_balancer_arn,
    )?;
    let port = request.port.filter(|p| *p != 0).ok_or_else(|| {
        Error::InvalidInput("Port: a listener needs --port from 1 to 65535".into())
    })?;
    let default_actions = parse_actions("DefaultActions", &request.default_actions)?;
    let protocol = match request.protocol {
        Some(protocol) => protocol.to_ascii_uppercase(),
        None => {
            if request.load_balancer_arn.contains(":loadbalancer/net/") {
                "TCP".into()
            } else {
                "HTTP".into()
            }
        }
    };
    check_port_free_here(raft, port, None)?;
    let listener = Listener {
        listener_arn: m::listener_arn(&request.load_balancer_arn, &m::new_id()),
        load_balancer_arn: request.load_balancer_arn,
        port,
        protocol,
        default_actions,
    };
    write(raft, request_id, Elbv2Command::CreateListener { listener }).await
}

async fn modify_listener(raft: &RaftHandle, body: &str, request_id: String) -> Result<Value> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Request {
        listener_arn: String,
        port: Option<u16>,
        protocol: Option<String>,
        default_actions: Option<Vec<RuleAction>>,
    }
    let request: Request = parse("ModifyListener", body)?;
    arn_key("ListenerArn", "listener", &request.listener_arn)?;
    let default_actions = request
        .default_actions
        .as_deref()
        .map(|a| parse_actions("DefaultActions", a))
        .transpose()?;
    if let Some(port) = request.port {
        let own_port = raft.store().read(|state| {
            state
                .elbv2
                .listener(&request.listener_arn)
                .map(|(_, l)| l.port)
                .ok()
        });
        if own_port != Some(port) {
            check_port_free_here(raft, port, Some(&request.listener_arn))?;
        }
    }
    let command = Elbv2Command::ModifyListener {
        listener_arn: request.listener_arn,
        port: request.port,
        protocol: request.protocol,
        default_actions,
    };
    write(raft, request_id, command).await
}

async fn describe_listeners(raft: &RaftHandle, body: &str) -> Result<Value> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Request {
        load_balancer_arn: Option<String>,
        #[serde(default)]
        listener_arns: Vec<String>,
    }
    let request: Request = parse("DescribeListeners", body)?;
    if request.load_balancer_arn.is_none() && request.listener_arns.is_empty() {
        return Err(Error::InvalidInput(
            "DescribeListeners: give --load-balancer-arn or --listener-arns".into(),
        ));
    }
    read_linearizable(raft, |state| {
        let elb = &state.elbv2;
        let mut found = Vec::new();
        for arn in &request.listener_arns {
            found.push(elb.listener(arn)?.1.clone());
        }
        if let Some(lb_arn) = &request.load_balancer_arn {
            let (key, _) = elb.load_balancer(lb_arn)?;
            found.extend(elb.listeners_of(&key).map(|(_, l)| l.clone()));
        }
        Ok(json!({ "Listeners": found }))
    })
    .await
}

/// A listener's default rule as `describe-rules` shows it.
fn default_rule(listener: &Listener) -> Rule {
    Rule {
        rule_arn: m::rule_arn(&listener.listener_arn, "default"),
        priority: "default".into(),
        conditions: vec![],
        actions: listener.default_actions.clone(),
        is_default: true,
    }
}

async fn create_rule(raft: &RaftHandle, body: &str, request_id: String) -> Result<Value> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Request {
        listener_arn: String,
        #[serde(default)]
        conditions: Vec<RuleCondition>,
        priority: Option<Value>,
        #[serde(default)]
        actions: Vec<RuleAction>,
    }
    let request: Request = parse("CreateRule", body)?;
    arn_key("ListenerArn", "listener", &request.listener_arn)?;
    let priority = request.priority.as_ref().map(number_text).ok_or_else(|| {
        Error::InvalidInput("Priority: a rule needs --priority from 1 to 50000".into())
    })?;
    let priority = parse_priority(&priority)?;
    let conditions = m::normalize_conditions(&request.conditions)?;
    let actions = parse_actions("Actions", &request.actions)?;
    let rule = Rule {
        rule_arn: m::rule_arn(&request.listener_arn, &m::new_id()),
        priority: priority.to_string(),
        conditions,
        actions,
        is_default: false,
    };
    write(
        raft,
        request_id,
        Elbv2Command::CreateRule {
            listener_arn: request.listener_arn,
            rule,
        },
    )
    .await
}

async fn describe_rules(raft: &RaftHandle, body: &str) -> Result<Value> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Request {
        listener_arn: Option<String>,
        #[serde(default)]
        rule_arns: Vec<String>,
    }
    let request: Request = parse("DescribeRules", body)?;
    if request.listener_arn.is_none() && request.rule_arns.is_empty() {
        return Err(Error::InvalidInput(
            "DescribeRules: give --listener-arn or --rule-arns".into(),
        ));
    }
    read_linearizable(raft, |state| {
        let elb = &state.elbv2;
        let mut found = Vec::new();
        for arn in &request.rule_arns {
            found.push(elb.rule(arn)?.1.clone());
        }
        if let Some(listener_arn) = &request.listener_arn {
            let (key, listener) = elb.listener(listener_arn)?;
            let mut rules: Vec<Rule> = elb.rules_of(&key).map(|(_, r)| r.clone()).collect();
            rules.sort_by_key(|r| r.priority.parse::<u32>().unwrap_or(u32::MAX));
            found.extend(rules);
            found.push(default_rule(listener));
        }
        Ok(json!({ "Rules": found }))
    })
    .await
}

async fn register_targets(raft: &RaftHandle, body: &str, request_id: String) -> Result<Value> {
    let request: TargetsRequest = parse("RegisterTargets", body)?;
    if request.targets.is_empty() {
        return Err(Error::InvalidInput(
            "Targets: give at least one target (--targets Id=…,Port=…)".into(),
        ));
    }
    let targets = raft.store().read(|state| {
        let (_, record) = state.elbv2.target_group(&request.target_group_arn)?;
        request
            .targets
            .iter()
            .map(|t| {
                let port = t.port.unwrap_or(record.group.port);
                if port == 0 {
                    return Err(Error::InvalidInput(
                        "Targets.Port: must be 1 to 65535".into(),
                    ));
                }
                Ok(RegisteredTarget {
                    id: t.id.clone(),
                    port,
                    address: target_address(state, &record.group.target_type, &t.id, port)?,
                    health: TargetHealth::initial(),
                    registered_ms: 0,
                    draining_since_ms: None,
                    task_arn: None,
                })
            })
            .collect::<Result<Vec<_>>>()
    })?;
    let command = Elbv2Command::RegisterTargets {
        target_group_arn: request.target_group_arn,
        targets,
        now_ms: now_ms(),
    };
    write(raft, request_id, command).await
}

/// One target's entry of `describe-target-health`; a target of a group no
/// listener uses is `unused`, as in elbv2.
pub fn target_health_view(
    elb: &Elbv2State,
    target_group_arn: &str,
    target: &RegisteredTarget,
) -> Value {
    let in_use = !elb.load_balancers_using(target_group_arn).is_empty();
    let health = if !in_use && target.draining_since_ms.is_none() {
        TargetHealth {
            state: "unused".into(),
            reason: Some("Target.NotInUse".into()),
            description: Some(
                "Target group is not configured to receive traffic from the load balancer".into(),
            ),
        }
    } else {
        target.health.clone()
    };
    // The port checks go to: the target's own, or the group's fixed one.
    let health_check_port = elb
        .target_group(target_group_arn)
        .ok()
        .and_then(|(_, record)| record.group.health_check_port.parse::<u16>().ok())
        .unwrap_or(target.port);
    json!({
        "Target": {"Id": target.id, "Port": target.port},
        "HealthCheckPort": health_check_port.to_string(),
        "TargetHealth": health,
    })
}

async fn describe_target_health(raft: &RaftHandle, body: &str) -> Result<Value> {
    let request: TargetsRequest = parse("DescribeTargetHealth", body)?;
    read_linearizable(raft, |state| {
        let elb = &state.elbv2;
        let (key, record) = elb.target_group(&request.target_group_arn)?;
        let descriptions: Vec<Value> = if request.targets.is_empty() {
            elb.targets_of(&key)
                .map(|(_, t)| target_health_view(elb, &request.target_group_arn, t))
                .collect()
        } else {
            request
                .targets
                .iter()
                .map(|wanted| {
                    let port = wanted.port.unwrap_or(record.group.port);
                    match elb.targets.get(&target_key(&key, &wanted.id, port)) {
                        Some(target) => target_health_view(elb, &request.target_group_arn, target),
                        None => json!({
                            "Target": {"Id": wanted.id, "Port": port},
                            "TargetHealth": {
                                "State": "unavailable",
                                "Reason": "Target.NotRegistered",
                                "Description": "Target is not registered to the target group",
                            },
                        }),
                    }
                })
                .collect()
        };
        Ok(json!({ "TargetHealthDescriptions": descriptions }))
    })
    .await
}
