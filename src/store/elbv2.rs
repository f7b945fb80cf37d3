//! The load balancer part of the state machine: elbv2's load balancers,
//! target groups, listeners, rules and registered targets with their health
//! and draining. Pure, like the rest of `apply`: ids and times come inside
//! the commands, and every check that refuses a command runs before
//! anything changes, so nothing is half-created.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::command::Outcome;
use super::state::State;
use super::table::Table;
use crate::error::Refusal;
use crate::model::elbv2::{
    self as m, arn_key, HealthCheckSettings, Listener, LoadBalancer, RegisteredTarget, Rule,
    RuleAction, RuleCondition, TargetGroup, TargetGroupRecord, TargetHealth,
    HOST_ADDRESS_ATTRIBUTE,
};
use crate::vocab::ids::last_segment;
use crate::Error;

/// The load balancer tables of the replicated state. Keys are the ARNs'
/// resource parts (`app/NAME/ID`, `NAME/ID`, …); targets are keyed
/// `TARGET-GROUP-KEY/ID/PORT` (port zero-padded).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Elbv2State {
    /// Load balancers.
    pub load_balancers: Table<LoadBalancer>,
    /// Target groups with their attributes.
    pub target_groups: Table<TargetGroupRecord>,
    /// Listeners.
    pub listeners: Table<Listener>,
    /// Rules other than listeners' default ones.
    pub rules: Table<Rule>,
    /// Registered targets.
    pub targets: Table<RegisteredTarget>,
    /// Load balancer attributes that differ from ALB's defaults, by load
    /// balancer key.
    #[serde(default)]
    pub load_balancer_attributes: Table<std::collections::BTreeMap<String, String>>,
}

/// One target's new health, decided by the leader's health checks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetHealthChange {
    /// The target's id.
    pub id: String,
    /// Its port.
    pub port: u16,
    /// The new health.
    pub health: TargetHealth,
}

/// Every load balancer change orc knows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "elbv2")]
pub enum Elbv2Command {
    /// elbv2 CreateLoadBalancer (arn and time chosen by the proposer).
    CreateLoadBalancer {
        /// The new load balancer.
        load_balancer: LoadBalancer,
    },
    /// elbv2 DeleteLoadBalancer: its listeners and rules go with it.
    DeleteLoadBalancer {
        /// The load balancer.
        load_balancer_arn: String,
    },
    /// elbv2 ModifyLoadBalancerAttributes.
    ModifyLoadBalancerAttributes {
        /// The load balancer.
        load_balancer_arn: String,
        /// (key, value) pairs.
        attributes: Vec<(String, String)>,
    },
    /// elbv2 CreateTargetGroup.
    CreateTargetGroup {
        /// The new group, its health check checked by the proposer.
        target_group: Box<TargetGroup>,
    },
    /// elbv2 ModifyTargetGroup.
    ModifyTargetGroup {
        /// The group.
        target_group_arn: String,
        /// What changes.
        settings: HealthCheckSettings,
    },
    /// elbv2 DeleteTargetGroup.
    DeleteTargetGroup {
        /// The group.
        target_group_arn: String,
    },
    /// elbv2 ModifyTargetGroupAttributes.
    ModifyTargetGroupAttributes {
        /// The group.
        target_group_arn: String,
        /// (key, value) pairs.
        attributes: Vec<(String, String)>,
    },
    /// elbv2 CreateListener.
    CreateListener {
        /// The new listener, its actions normalized.
        listener: Listener,
    },
    /// elbv2 ModifyListener.
    ModifyListener {
        /// The listener.
        listener_arn: String,
        /// A new port.
        port: Option<u16>,
        /// A new protocol.
        protocol: Option<String>,
        /// New default actions (normalized).
        default_actions: Option<Vec<RuleAction>>,
    },
    /// elbv2 DeleteListener: its rules go with it.
    DeleteListener {
        /// The listener.
        listener_arn: String,
    },
    /// elbv2 CreateRule.
    CreateRule {
        /// The listener it belongs to.
        listener_arn: String,
        /// The new rule (conditions and actions normalized).
        rule: Rule,
    },
    /// elbv2 ModifyRule.
    ModifyRule {
        /// The rule.
        rule_arn: String,
        /// New conditions.
        conditions: Option<Vec<RuleCondition>>,
        /// New actions.
        actions: Option<Vec<RuleAction>>,
    },
    /// elbv2 SetRulePriorities.
    SetRulePriorities {
        /// (rule ARN, priority).
        priorities: Vec<(String, u32)>,
    },
    /// elbv2 DeleteRule.
    DeleteRule {
        /// The rule.
        rule_arn: String,
    },
    /// elbv2 RegisterTargets, or a service's task that turned RUNNING.
    RegisterTargets {
        /// The group.
        target_group_arn: String,
        /// The targets, their addresses resolved by the proposer.
        targets: Vec<RegisteredTarget>,
        /// When.
        now_ms: u64,
    },
    /// elbv2 DeregisterTargets, or a service's task that is stopping: the
    /// targets drain for the group's deregistration delay.
    DeregisterTargets {
        /// The group.
        target_group_arn: String,
        /// (id, port) of each target.
        targets: Vec<(String, u16)>,
        /// When.
        now_ms: u64,
    },
    /// The leader's health checks moved targets to another state.
    SetTargetHealth {
        /// The group.
        target_group_arn: String,
        /// The transitions.
        changes: Vec<TargetHealthChange>,
    },
    /// The leader removes targets whose deregistration delay has passed.
    RemoveDrainedTargets {
        /// The clock the delays are measured against.
        now_ms: u64,
    },
}

impl Elbv2Command {
    /// elbv2's action name, or the control plane's own command name.
    pub fn action(&self) -> &'static str {
        match self {
            Elbv2Command::CreateLoadBalancer { .. } => "CreateLoadBalancer",
            Elbv2Command::DeleteLoadBalancer { .. } => "DeleteLoadBalancer",
            Elbv2Command::ModifyLoadBalancerAttributes { .. } => "ModifyLoadBalancerAttributes",
            Elbv2Command::CreateTargetGroup { .. } => "CreateTargetGroup",
            Elbv2Command::ModifyTargetGroup { .. } => "ModifyTargetGroup",
            Elbv2Command::DeleteTargetGroup { .. } => "DeleteTargetGroup",
            Elbv2Command::ModifyTargetGroupAttributes { .. } => "ModifyTargetGroupAttributes",
            Elbv2Command::CreateListener { .. } => "CreateListener",
            Elbv2Command::ModifyListener { .. } => "ModifyListener",
            Elbv2Command::DeleteListener { .. } => "DeleteListener",
            Elbv2Command::CreateRule { .. } => "CreateRule",
            Elbv2Command::ModifyRule { .. } => "ModifyRule",
            Elbv2Command::SetRulePriorities { .. } => "SetRulePriorities",
            Elbv2Command::DeleteRule { .. } => "DeleteRule",
            Elbv2Command::RegisterTargets { .. } => "RegisterTargets",
            Elbv2Command::DeregisterTargets { .. } => "DeregisterTargets",
            Elbv2Command::SetTargetHealth { .. } => "SetTargetHealth",
            Elbv2Command::RemoveDrainedTargets { .. } => "RemoveDrainedTargets",
        }
    }

    /// The resources it names, as `kind/key` with elbv2's ARN resource
    /// kinds (`loadbalancer/app/NAME/ID`, `targetgroup/NAME/ID`,
    /// `listener/…`, `listener-rule/…`); every one starts with one of
    /// [`SUBJECT_KINDS`].
    pub fn subjects(&self) -> Vec<String> {
        let resource = |arn: &str| arn.strip_prefix(m::ARN_PREFIX).unwrap_or(arn).to_string();
        match self {
            Elbv2Command::CreateLoadBalancer { load_balancer } => {
                vec![resource(&load_balancer.load_balancer_arn)]
            }
            Elbv2Command::DeleteLoadBalancer { load_balancer_arn }
            | Elbv2Command::ModifyLoadBalancerAttributes {
                load_balancer_arn, ..
            } => {
                vec![resource(load_balancer_arn)]
            }
            Elbv2Command::CreateTargetGroup { target_group } => {
                vec![resource(&target_group.target_group_arn)]
            }
            Elbv2Command::ModifyTargetGroup {
                target_group_arn, ..
            }
            | Elbv2Command::DeleteTargetGroup { target_group_arn }
            | Elbv2Command::ModifyTargetGroupAttributes {
                target_group_arn, ..
            }
            | Elbv2Command::RegisterTargets {
                target_group_arn, ..
            }
            | Elbv2Command::DeregisterTargets {
                target_group_arn, ..
            }
            | Elbv2Command::SetTargetHealth {
                target_group_arn, ..
            } => vec![resource(target_group_arn)],
            Elbv2Command::CreateListener { listener } => vec![
                resource(&listener.load_balancer_arn),
                resource(&listener.listener_arn),
            ],
            Elbv2Command::ModifyListener { listener_arn, .. }
            | Elbv2Command::DeleteListener { listener_arn } => vec![resource(listener_arn)],
            Elbv2Command::CreateRule { listener_arn, rule } => {
                vec![resource(listener_arn), resource(&rule.rule_arn)]
            }
            Elbv2Command::ModifyRule { rule_arn, .. } | Elbv2Command::DeleteRule { rule_arn } => {
                vec![resource(rule_arn)]
            }
            Elbv2Command::SetRulePriorities { priorities } => {
                priorities.iter().map(|(arn, _)| resource(arn)).collect()
            }
            Elbv2Command::RemoveDrainedTargets { .. } => vec!["targetgroup/*".into()],
        }
    }
}

/// The kinds a load balancer change's subjects start with: a watcher that
/// serves listeners reads the routes again after a change naming one.
pub const SUBJECT_KINDS: &[&str] = &[
    "loadbalancer/",
    "targetgroup/",
    "listener/",
    "listener-rule/",
];

fn not_found(what: &str, code: Refusal, arn: &str, hint: &str) -> Error {
    Error::Refused(code, format!("{what} {arn:?} not found ({code:?}): {hint}"))
}

/// A row of `table` by its ARN: `names` are the request field, the ARN's
/// resource kind and the noun an error uses; a missing row is refused with
/// `code` and `hint`.
fn find<'a, V>(
    table: &'a Table<V>,
    (field, kind, noun): (&str, &str, &str),
    code: Refusal,
    arn: &str,
    hint: &str,
) -> Result<(String, &'a V), Error> {
    let key = arn_key(field, kind, arn)?;
    table
        .get(key)
        .map(|row| (key.to_string(), row))
        .ok_or_else(|| not_found(noun, code, arn, hint))
}

/// The key of a target in `Elbv2State::targets`.
pub fn target_key(group_key: &str, id: &str, port: u16) -> String {
    format!("{group_key}/{id}/{port:05}")
}

impl Elbv2State {
    /// A load balancer by ARN.
    pub fn load_balancer(&self, arn: &str) -> Result<(String, &LoadBalancer), Error> {
        find(
            &self.load_balancers,
            ("LoadBalancerArn", "loadbalancer", "load balancer"),
            Refusal::LoadBalancerNotFound,
            arn,
            "see `orc elbv2 describe-load-balancers`",
        )
    }

    /// A target group by ARN.
    pub fn target_group(&self, arn: &str) -> Result<(String, &TargetGroupRecord), Error> {
        find(
            &self.target_groups,
            ("TargetGroupArn", "targetgroup", "target group"),
            Refusal::TargetGroupNotFound,
            arn,
            "see `orc elbv2 describe-target-groups`",
        )
    }

    /// A listener by ARN.
    pub fn listener(&self, arn: &str) -> Result<(String, &Listener), Error> {
        find(
            &self.listeners,
            ("ListenerArn", "listener", "listener"),
            Refusal::ListenerNotFound,
            arn,
            "see `orc elbv2 describe-listeners --load-balancer-arn …`",
        )
    }

    /// A rule by ARN.
    pub fn rule(&self, arn: &str) -> Result<(String, &Rule), Error> {
        find(
            &self.rules,
            ("RuleArn", "listener-rule", "rule"),
            Refusal::RuleNotFound,
            arn,
            "see `orc elbv2 describe-rules --listener-arn …`",
        )
    }

    /// A load balancer's listeners, in key order.
    pub fn listeners_of<'a>(
        &'a self,
        lb_key: &str,
    ) -> impl Iterator<Item = (&'a String, &'a Listener)> + 'a {
        self.listeners.scan_prefix(&format!("{lb_key}/"))
    }

    /// A listener's rules (not the default one), in key order.
    pub fn rules_of<'a>(
        &'a self,
        listener_key: &str,
    ) -> impl Iterator<Item = (&'a String, &'a Rule)> + 'a {
        self.rules.scan_prefix(&format!("{listener_key}/"))
    }

    /// A target group's registered targets, in key order.
    pub fn targets_of<'a>(
        &'a self,
        group_key: &str,
    ) -> impl Iterator<Item = (&'a String, &'a RegisteredTarget)> + 'a {
        self.targets.scan_prefix(&format!("{group_key}/"))
    }

    /// The load balancers whose listeners or rules forward to a target group.
    pub fn load_balancers_using(&self, target_group_arn: &str) -> Vec<String> {
        let mut arns: Vec<String> = Vec::new();
        for (key, listener) in self.listeners.iter() {
            let forwards = listener
                .default_actions
                .iter()
                .any(|a| a.target_group() == Some(target_group_arn))
                || self.rules_of(key).any(|(_, rule)| {
                    rule.actions
                        .iter()
                        .any(|a| a.target_group() == Some(target_group_arn))
                });
            if forwards && !arns.contains(&listener.load_balancer_arn) {
                arns.push(listener.load_balancer_arn.clone());
            }
        }
        arns
    }

    /// The listener already listening on `port`, if any (every proxy serves
    /// every listener, so ports are unique across load balancers).
    pub fn listener_on_port(&self, port: u16) -> Option<&Listener> {
        self.listeners.values().find(|l| l.port == port)
    }
}

/// Applies one load balancer command.
pub fn apply(state: &mut State, command: &Elbv2Command) -> Outcome {
    let elb = &mut state.elbv2;
    match command {
        Elbv2Command::CreateLoadBalancer { load_balancer } => {
            m::validate_name("Name", &load_balancer.load_balancer_name)?;
            if let Some(existing) = elb
                .load_balancers
                .values()
                .find(|lb| lb.load_balancer_name == load_balancer.load_balancer_name)
            {
                if existing.kind == load_balancer.kind && existing.scheme == load_balancer.scheme {
                    return Ok(json!({ "LoadBalancers": [existing] }));
                }
                return Err(Error::Refused(Refusal::DuplicateLoadBalancerName, format!(
                    "Name: a load balancer named {:?} already exists with other settings (DuplicateLoadBalancerName); pick another name or delete it first",
                    load_balancer.load_balancer_name
                )));
            }
            let key = arn_key(
                "LoadBalancerArn",
                "loadbalancer",
                &load_balancer.load_balancer_arn,
            )?;
            elb.load_balancers.insert(key, load_balancer.clone());
            Ok(json!({ "LoadBalancers": [load_balancer] }))
        }
        Elbv2Command::DeleteLoadBalancer { load_balancer_arn } => {
            let key = arn_key("LoadBalancerArn", "loadbalancer", load_balancer_arn)?.to_string();
            let protected = elb
                .load_balancer_attributes
                .get(&key)
                .and_then(|a| a.get(m::DELETION_PROTECTION))
                .is_some_and(|v| v == "true");
            if protected && elb.load_balancers.get(&key).is_some() {
                return Err(Error::InvalidInput(format!(
                    "LoadBalancerArn: load balancer {load_balancer_arn:?} has deletion protection (OperationNotPermitted); turn it off with modify-load-balancer-attributes --attributes Key={},Value=false first",
                    m::DELETION_PROTECTION
                )));
            }
            elb.load_balancer_attributes.remove(&key);
            // Deleting one that is gone succeeds, as in elbv2.
            if elb.load_balancers.remove(&key).is_some() {
                let listeners: Vec<String> =
                    elb.listeners_of(&key).map(|(k, _)| k.clone()).collect();
                for listener in listeners {
                    remove_listener(elb, &listener);
                }
            }
            Ok(json!({}))
        }
        Elbv2Command::CreateTargetGroup { target_group } => {
            m::validate_name("Name", &target_group.target_group_name)?;
            let mut checked = (**target_group).clone();
            m::validate_health_check(&mut checked)?;
            if let Some(existing) = elb
                .target_groups
                .values()
                .find(|tg| tg.group.target_group_name == target_group.target_group_name)
            {
                let mut same = existing.group.clone();
                same.target_group_arn.clone_from(&checked.target_group_arn);
                if same == checked {
                    return Ok(json!({ "TargetGroups": [existing.group] }));
                }
                return Err(Error::Refused(Refusal::DuplicateTargetGroupName, format!(
                    "Name: a target group named {:?} already exists with other settings (DuplicateTargetGroupName); pick another name or delete it first",
                    target_group.target_group_name
                )));
            }
            let key = arn_key("TargetGroupArn", "targetgroup", &checked.target_group_arn)?;
            elb.target_groups.insert(
                key,
                TargetGroupRecord {
                    group: checked.clone(),
                    attributes: m::default_target_group_attributes(),
                },
            );
            Ok(json!({ "TargetGroups": [checked] }))
        }
        Elbv2Command::ModifyTargetGroup {
            target_group_arn,
            settings,
        } => {
            let (key, record) = elb.target_group(target_group_arn)?;
            let key = key.to_string();
            let mut group = record.group.clone();
            if group.protocol == "TCP" && settings.matcher.is_some() {
                return Err(Error::InvalidInput(
                    "Matcher: a TCP target group's health check has no HTTP codes".into(),
                ));
            }
            settings.apply_to(&mut group)?;
            let record = elb.target_groups.get_mut(&key).expect("found above");
            record.group = group.clone();
            Ok(json!({ "TargetGroups": [group] }))
        }
        Elbv2Command::DeleteTargetGroup { target_group_arn } => {
            let Ok((key, _)) = elb.target_group(target_group_arn) else {
                arn_key("TargetGroupArn", "targetgroup", target_group_arn)?;
                return Ok(json!({}));
            };
            let key = key.to_string();
            if let Some(user) = elb.load_balancers_using(target_group_arn).first() {
                return Err(Error::Refused(Refusal::ResourceInUse, format!(
                    "TargetGroupArn: target group {target_group_arn:?} is currently in use by a listener or a rule of {user} (ResourceInUse); delete the listener or rule first"
                )));
            }
            if let Some(service) = state.services.values().find(|s| {
                s.status != "INACTIVE"
                    && s.all_load_balancers()
                        .any(|l| l.target_group_arn == *target_group_arn)
            }) {
                return Err(Error::Refused(Refusal::ResourceInUse, format!(
                    "TargetGroupArn: target group {target_group_arn:?} is currently in use by service {} (ResourceInUse); delete the service first",
                    service.service_name
                )));
            }
            let elb = &mut state.elbv2;
            elb.target_groups.remove(&key);
            let targets: Vec<String> = elb.targets_of(&key).map(|(k, _)| k.clone()).collect();
            for target in targets {
                elb.targets.remove(&target);
            }
            Ok(json!({}))
        }
        Elbv2Command::ModifyLoadBalancerAttributes {
            load_balancer_arn,
            attributes,
        } => {
            let (key, _) = elb.load_balancer(load_balancer_arn)?;
            for (attribute, value) in attributes {
                m::validate_load_balancer_attribute(attribute, value)?;
            }
            let mut stored = elb
                .load_balancer_attributes
                .get(&key)
                .cloned()
                .unwrap_or_default();
            let defaults = m::default_load_balancer_attributes();
            for (attribute, value) in attributes {
                if defaults.get(attribute) == Some(value) {
                    stored.remove(attribute);
                } else {
                    stored.insert(attribute.clone(), value.clone());
                }
            }
            if stored.is_empty() {
                elb.load_balancer_attributes.remove(&key);
            } else {
                elb.load_balancer_attributes.insert(key.clone(), stored);
            }
            Ok(json!({ "Attributes": load_balancer_attributes_view(elb, &key) }))
        }
        Elbv2Command::ModifyTargetGroupAttributes {
            target_group_arn,
            attributes,
        } => {
            let (key, _) = elb.target_group(target_group_arn)?;
            let key = key.to_string();
            for (attribute, value) in attributes {
                m::validate_attribute(attribute, value)?;
            }
            let record = elb.target_groups.get_mut(&key).expect("found above");
            for (attribute, value) in attributes {
                record.attributes.insert(attribute.clone(), value.clone());
            }
            Ok(json!({ "Attributes": attributes_view(record) }))
        }
        Elbv2Command::CreateListener { listener } => {
            let (lb_key, lb) = elb.load_balancer(&listener.load_balancer_arn)?;
            let lb_key = lb_key.to_string();
            check_listener(elb, listener, &lb.kind.clone(), None)?;
            let key = arn_key("ListenerArn", "listener", &listener.listener_arn)?;
            if !key.starts_with(&format!("{lb_key}/")) {
                return Err(Error::InvalidInput(
                    "ListenerArn: the listener's ARN does not belong to its load balancer".into(),
                ));
            }
            elb.listeners.insert(key, listener.clone());
            Ok(json!({ "Listeners": [listener] }))
        }
        Elbv2Command::ModifyListener {
            listener_arn,
            port,
            protocol,
            default_actions,
        } => {
            let (key, listener) = elb.listener(listener_arn)?;
            let key = key.to_string();
            let mut changed = listener.clone();
            if let Some(port) = port {
                changed.port = *port;
            }
            if let Some(protocol) = protocol {
                changed.protocol = protocol.to_ascii_uppercase();
            }
            if let Some(actions) = default_actions {
                changed.default_actions = actions.clone();
            }
            let (_, lb) = elb.load_balancer(&changed.load_balancer_arn)?;
            check_listener(elb, &changed, &lb.kind.clone(), Some(&key))?;
            if changed.protocol == "TCP" && elb.rules_of(&key).next().is_some() {
                return Err(Error::InvalidInput(
                    "Protocol: a listener with rules must stay HTTP; delete its rules first".into(),
                ));
            }
            elb.listeners.insert(key, changed.clone());
            Ok(json!({ "Listeners": [changed] }))
        }
        Elbv2Command::DeleteListener { listener_arn } => {
            let (key, _) = elb.listener(listener_arn)?;
            let key = key.to_string();
            remove_listener(elb, &key);
            Ok(json!({}))
        }
        Elbv2Command::CreateRule { listener_arn, rule } => {
            let (listener_key, listener) = elb.listener(listener_arn)?;
            let listener_key = listener_key.to_string();
            if listener.protocol != "HTTP" {
                return Err(Error::InvalidInput(format!(
                    "ListenerArn: rules route HTTP requests; listener {listener_arn:?} is {}",
                    listener.protocol
                )));
            }
            let priority = parse_priority(&rule.priority)?;
            if let Some((_, clash)) = elb
                .rules_of(&listener_key)
                .find(|(_, r)| r.priority == priority.to_string())
            {
                return Err(Error::Refused(Refusal::PriorityInUse, format!(
                    "Priority: {priority} is currently in use by rule {} of this listener (PriorityInUse); pick another priority",
                    clash.rule_arn
                )));
            }
            if elb.rules_of(&listener_key).count() >= m::MAX_RULES_PER_LISTENER {
                return Err(Error::InvalidInput(format!(
                    "ListenerArn: the listener already has {} rules, the most one may have (TooManyRules)",
                    m::MAX_RULES_PER_LISTENER
                )));
            }
            check_actions(elb, "Actions", &rule.actions, "HTTP")?;
            let key = arn_key("RuleArn", "listener-rule", &rule.rule_arn)?;
            elb.rules.insert(key, rule.clone());
            Ok(json!({ "Rules": [rule] }))
        }
        Elbv2Command::ModifyRule {
            rule_arn,
            conditions,
            actions,
        } => {
            let (key, rule) = elb.rule(rule_arn)?;
            let key = key.to_string();
            let mut changed = rule.clone();
            if let Some(conditions) = conditions {
                changed.conditions = conditions.clone();
            }
            if let Some(actions) = actions {
                check_actions(elb, "Actions", actions, "HTTP")?;
                changed.actions = actions.clone();
            }
            elb.rules.insert(key, changed.clone());
            Ok(json!({ "Rules": [changed] }))
        }
        Elbv2Command::SetRulePriorities { priorities } => {
            let mut keys = Vec::new();
            for (arn, priority) in priorities {
                let (key, _) = elb.rule(arn)?;
                parse_priority(&priority.to_string())?;
                keys.push((key.to_string(), *priority));
            }
            // Priorities must stay unique per listener once all are set.
            let mut after: std::collections::BTreeMap<String, String> = elb
                .rules
                .iter()
                .map(|(k, r)| (k.clone(), r.priority.clone()))
                .collect();
            for (key, priority) in &keys {
                after.insert(key.clone(), priority.to_string());
            }
            let mut seen = std::collections::BTreeSet::new();
            for (key, priority) in &after {
                let listener = key.rsplit_once('/').map_or("", |(l, _)| l);
                if !seen.insert((listener.to_string(), priority.clone())) {
                    return Err(Error::Refused(Refusal::PriorityInUse, format!(
                        "RulePriorities: priority {priority} would be used twice on one listener (PriorityInUse)"
                    )));
                }
            }
            let mut changed = Vec::new();
            for (key, priority) in keys {
                let rule = elb.rules.get_mut(&key).expect("found above");
                rule.priority = priority.to_string();
                changed.push(rule.clone());
            }
            Ok(json!({ "Rules": changed }))
        }
        Elbv2Command::DeleteRule { rule_arn } => {
            let (key, _) = elb.rule(rule_arn)?;
            let key = key.to_string();
            elb.rules.remove(&key);
            Ok(json!({}))
        }
        Elbv2Command::RegisterTargets {
            target_group_arn,
            targets,
            now_ms,
        } => {
            let (group_key, record) = elb.target_group(target_group_arn)?;
            let group_key = group_key.to_string();
            let checked = record.group.health_check_enabled;
            let count = elb.targets_of(&group_key).count();
            if count + targets.len() > m::MAX_TARGETS_PER_GROUP {
                return Err(Error::InvalidInput(format!(
                    "Targets: a target group holds at most {} targets (TooManyTargets)",
                    m::MAX_TARGETS_PER_GROUP
                )));
            }
            for target in targets {
                let key = target_key(&group_key, &target.id, target.port);
                match elb.targets.get_mut(&key) {
                    // Registered again while draining: back in service.
                    Some(existing) if existing.draining_since_ms.is_some() => {
                        existing.draining_since_ms = None;
                        existing.health = TargetHealth::initial();
                        existing.address.clone_from(&target.address);
                        existing.registered_ms = *now_ms;
                        existing.task_arn.clone_from(&target.task_arn);
                    }
                    // Registered again by a new task on the same host port.
                    Some(existing) => {
                        if target.task_arn.is_some() {
                            existing.task_arn.clone_from(&target.task_arn);
                        }
                    }
                    None => {
                        let mut target = target.clone();
                        target.registered_ms = *now_ms;
                        target.draining_since_ms = None;
                        target.health = if checked {
                            TargetHealth::initial()
                        } else {
                            TargetHealth {
                                state: "healthy".into(),
                                reason: None,
                                description: Some("Health checks are disabled".into()),
                            }
                        };
                        elb.targets.insert(key, target);
                    }
                }
            }
            Ok(json!({}))
        }
        Elbv2Command::DeregisterTargets {
            target_group_arn,
            targets,
            now_ms,
        } => {
            let (group_key, record) = elb.target_group(target_group_arn)?;
            let group_key = group_key.to_string();
            let delay = record.deregistration_delay_seconds();
            let in_use = !elb.load_balancers_using(target_group_arn).is_empty();
            for (id, port) in targets {
                let key = target_key(&group_key, id, *port);
                if !in_use || delay == 0 {
                    elb.targets.remove(&key);
                } else if let Some(target) = elb.targets.get_mut(&key) {
                    if target.draining_since_ms.is_none() {
                        target.draining_since_ms = Some(*now_ms);
                        target.health = TargetHealth {
                            state: "draining".into(),
                            reason: Some("Target.DeregistrationInProgress".into()),
                            description: Some("Target deregistration is in progress".into()),
                        };
                    }
                }
            }
            Ok(json!({}))
        }
        Elbv2Command::SetTargetHealth {
            target_group_arn,
            changes,
        } => {
            let (group_key, _) = elb.target_group(target_group_arn)?;
            let group_key = group_key.to_string();
            let mut moved = 0;
            for change in changes {
                let key = target_key(&group_key, &change.id, change.port);
                if let Some(target) = elb.targets.get_mut(&key) {
                    if target.draining_since_ms.is_none() && target.health != change.health {
                        target.health = change.health.clone();
                        moved += 1;
                    }
                }
            }
            Ok(json!({ "changed": moved }))
        }
        Elbv2Command::RemoveDrainedTargets { now_ms } => {
            let mut drained = Vec::new();
            for (key, target) in elb.targets.iter() {
                let Some(since) = target.draining_since_ms else {
                    continue;
                };
                let group_key = key.rsplitn(3, '/').nth(2).unwrap_or_default();
                let delay = elb
                    .target_groups
                    .get(group_key)
                    .map_or(0, TargetGroupRecord::deregistration_delay_seconds);
                if now_ms.saturating_sub(since) >= u64::from(delay) * 1000 {
                    drained.push(key.clone());
                }
            }
            for key in &drained {
                elb.targets.remove(key);
            }
            Ok(json!({ "removed": drained.len() }))
        }
    }
}

/// Where the proxies reach a target: `Id:Port` for an `ip` target, the
/// container instance's host address for an `instance` target.
pub fn target_address(
    state: &State,
    target_type: &str,
    id: &str,
    port: u16,
) -> Result<String, Error> {
    if target_type == "ip" {
        let ip: std::net::Ipv4Addr = id.parse().map_err(|_| {
            Error::InvalidInput(format!(
                "Targets.Id: {id:?} is not an IPv4 address, which a target group of type ip needs"
            ))
        })?;
        return Ok(format!("{ip}:{port}"));
    }
    let instance_id = last_segment(id);
    let instance = state
        .container_instances
        .values()
        .find(|i| i.container_instance_arn.ends_with(&format!("/{instance_id}")) && i.status != "INACTIVE")
        .ok_or_else(|| {
            Error::InvalidInput(format!(
                "Targets.Id: {id:?} is not a registered container instance (see `orc list-container-instances`); a target group of type instance takes container instance ids"
            ))
        })?;
    let host = instance
        .attribute(HOST_ADDRESS_ATTRIBUTE)
        .ok_or_else(|| {
            Error::InvalidInput(format!(
                "Targets.Id: container instance {instance_id} registered no {HOST_ADDRESS_ATTRIBUTE} attribute, so orc does not know where to reach it; restart its agent with this version of orc"
            ))
        })?;
    Ok(format!("{host}:{port}"))
}

/// A load balancer's attributes as elbv2 shows them: ALB's defaults with
/// the ones changed, as `[{Key, Value}]`.
pub fn load_balancer_attributes_view(elb: &Elbv2State, key: &str) -> serde_json::Value {
    let mut all = m::default_load_balancer_attributes();
    if let Some(changed) = elb.load_balancer_attributes.get(key) {
        all.extend(changed.clone());
    }
    all.iter()
        .map(|(key, value)| json!({"Key": key, "Value": value}))
        .collect()
}

/// The attributes as elbv2 shows them: `[{Key, Value}]`.
pub fn attributes_view(record: &TargetGroupRecord) -> serde_json::Value {
    record
        .attributes
        .iter()
        .map(|(key, value)| json!({"Key": key, "Value": value}))
        .collect()
}

fn remove_listener(elb: &mut Elbv2State, key: &str) {
    let rules: Vec<String> = elb.rules_of(key).map(|(k, _)| k.clone()).collect();
    for rule in rules {
        elb.rules.remove(&rule);
    }
    elb.listeners.remove(key);
}

/// 1 to 50000, as elbv2 numbers rules.
pub fn parse_priority(text: &str) -> Result<u32, Error> {
    match text.parse::<u32>() {
        Ok(priority) if (1..=50_000).contains(&priority) => Ok(priority),
        _ => Err(Error::InvalidInput(format!(
            "Priority: must be a number from 1 to 50000, got {text:?}"
        ))),
    }
}

fn check_actions(
    elb: &Elbv2State,
    field: &str,
    actions: &[RuleAction],
    protocol: &str,
) -> Result<(), Error> {
    for action in actions {
        let Some(arn) = action.target_group() else {
            return Err(Error::InvalidInput(format!(
                "{field}: a forward action needs TargetGroupArn"
            )));
        };
        let (_, record) = elb.target_group(arn)?;
        if record.group.protocol != protocol {
            return Err(Error::InvalidInput(format!(
                "{field}.TargetGroupArn: target group {} speaks {}, but the listener speaks {protocol}; use a {protocol} target group",
                record.group.target_group_name, record.group.protocol
            )));
        }
    }
    Ok(())
}

/// Checks a listener being created or changed (`changing` is its own key):
/// port, protocol for the load balancer's type, a free port, its target group.
fn check_listener(
    elb: &Elbv2State,
    listener: &Listener,
    lb_kind: &str,
    changing: Option<&str>,
) -> Result<(), Error> {
    if listener.port == 0 {
        return Err(Error::InvalidInput(
            "Port: must be 1 to 65535, got 0".into(),
        ));
    }
    let protocol = listener.protocol.as_str();
    if protocol != "HTTP" && protocol != "TCP" {
        return Err(Error::InvalidInput(format!(
            "Protocol: {protocol:?} is not served by orc: use HTTP (layer 7) or TCP (layer 4)"
        )));
    }
    if lb_kind == "network" && protocol != "TCP" {
        return Err(Error::InvalidInput(
            "Protocol: a network load balancer's listeners are TCP".into(),
        ));
    }
    if let Some(taken) = elb.listener_on_port(listener.port) {
        let own = changing.is_some_and(|key| {
            arn_key("ListenerArn", "listener", &taken.listener_arn).ok() == Some(key)
        });
        if !own {
            return Err(Error::Refused(Refusal::DuplicateListener, format!(
                "Port: {} is already taken by listener {} (DuplicateListener); every proxy serves every listener, so pick another --port",
                listener.port, taken.listener_arn
            )));
        }
    }
    check_actions(elb, "DefaultActions", &listener.default_actions, protocol)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::command::{Command, Proposal};
    use crate::store::state::apply as apply_proposal;

    pub(crate) fn lb(name: &str, id: &str) -> LoadBalancer {
        LoadBalancer {
            load_balancer_arn: m::load_balancer_arn("application", name, id),
            dns_name: "127.0.0.1".into(),
            canonical_hosted_zone_id: "ORC".into(),
            created_time: crate::vocab::time::iso_time(0),
            load_balancer_name: name.into(),
            scheme: "internet-facing".into(),
            vpc_id: "vpc-orc".into(),
            state: m::LoadBalancerState {
                code: "active".into(),
            },
            kind: "application".into(),
            availability_zones: vec![],
            security_groups: vec![],
            ip_address_type: "ipv4".into(),
        }
    }

    pub(crate) fn tg(name: &str, id: &str) -> TargetGroup {
        TargetGroup {
            target_group_arn: m::target_group_arn(name, id),
            target_group_name: name.into(),
            protocol: "HTTP".into(),
            port: 80,
            vpc_id: "vpc-orc".into(),
            health_check_protocol: "HTTP".into(),
            health_check_port: "traffic-port".into(),
            health_check_enabled: true,
            health_check_interval_seconds: 5,
            health_check_timeout_seconds: 2,
            healthy_threshold_count: 2,
            unhealthy_threshold_count: 2,
            health_check_path: Some("/".into()),
            matcher: Some(m::Matcher {
                http_code: "200-399".into(),
            }),
            load_balancer_arns: vec![],
            target_type: "ip".into(),
            protocol_version: Some("HTTP1".into()),
            ip_address_type: "ipv4".into(),
        }
    }

    pub(crate) fn forward(tg_arn: &str) -> Vec<RuleAction> {
        m::normalize_actions(
            "DefaultActions",
            &[RuleAction {
                kind: "forward".into(),
                target_group_arn: Some(tg_arn.into()),
                order: None,
                forward_config: None,
            }],
        )
        .unwrap()
        .0
    }

    pub(crate) fn listener(lb_arn: &str, id: &str, port: u16, tg_arn: &str) -> Listener {
        Listener {
            listener_arn: m::listener_arn(lb_arn, id),
            load_balancer_arn: lb_arn.into(),
            port,
            protocol: "HTTP".into(),
            default_actions: forward(tg_arn),
        }
    }

    fn run(state: &mut State, id: &str, command: Elbv2Command) -> Outcome {
        apply_proposal(
            state,
            &Proposal {
                request_id: id.into(),
                command: Command::Elbv2(command),
            },
        )
    }

    fn target(id: &str, port: u16) -> RegisteredTarget {
        RegisteredTarget {
            task_arn: None,
            id: id.into(),
            port,
            address: format!("{id}:{port}"),
            health: TargetHealth::initial(),
            registered_ms: 0,
            draining_since_ms: None,
        }
    }

    /// A load balancer `web`, target group `tg` and a listener on 8080.
    pub(crate) fn lab() -> State {
        let mut state = State::default();
        let lb = lb("web", "00000000000000aa");
        let tg = tg("tg", "00000000000000bb");
        run(
            &mut state,
            "1",
            Elbv2Command::CreateLoadBalancer {
                load_balancer: lb.clone(),
            },
        )
        .unwrap();
        run(
            &mut state,
            "2",
            Elbv2Command::CreateTargetGroup {
                target_group: Box::new(tg.clone()),
            },
        )
        .unwrap();
        run(
            &mut state,
            "3",
            Elbv2Command::CreateListener {
                listener: listener(
                    &lb.load_balancer_arn,
                    "00000000000000cc",
                    8080,
                    &tg.target_group_arn,
                ),
            },
        )
        .unwrap();
        state
    }

    #[test]
    fn the_same_commands_give_the_same_state() {
        assert_eq!(lab(), lab());
        let state = lab();
        assert_eq!(state.elbv2.listeners.len(), 1);
        let tg_arn = m::target_group_arn("tg", "00000000000000bb");
        assert_eq!(
            state.elbv2.load_balancers_using(&tg_arn),
            [m::load_balancer_arn(
                "application",
                "web",
                "00000000000000aa"
            )]
        );
    }

    #[test]
    fn duplicate_names_and_ports_are_refused_and_nothing_changes() {
        let mut state = lab();
        let before = state.elbv2.clone();
        let mut other = lb("web", "00000000000000dd");
        other.scheme = "internal".into();
        let error = run(
            &mut state,
            "4",
            Elbv2Command::CreateLoadBalancer {
                load_balancer: other,
            },
        )
        .unwrap_err();
        assert!(
            error.to_string().contains("DuplicateLoadBalancerName"),
            "{error}"
        );
        let mut group = tg("tg", "00000000000000ee");
        group.port = 81;
        let error = run(
            &mut state,
            "5",
            Elbv2Command::CreateTargetGroup {
                target_group: Box::new(group),
            },
        )
        .unwrap_err();
        assert!(
            error.to_string().contains("DuplicateTargetGroupName"),
            "{error}"
        );
        let lb_arn = m::load_balancer_arn("application", "web", "00000000000000aa");
        let tg_arn = m::target_group_arn("tg", "00000000000000bb");
        let error = run(
            &mut state,
            "6",
            Elbv2Command::CreateListener {
                listener: listener(&lb_arn, "00000000000000ff", 8080, &tg_arn),
            },
        )
        .unwrap_err();
        assert!(
            error.to_string().starts_with("Port: 8080 is already taken"),
            "{error}"
        );
        let error = run(
            &mut state,
            "7",
            Elbv2Command::DeleteTargetGroup {
                target_group_arn: tg_arn,
            },
        )
        .unwrap_err();
        assert!(error.to_string().contains("ResourceInUse"), "{error}");
        assert_eq!(state.elbv2, before);
        // The same settings again answer the existing one, as elbv2 does.
        run(
            &mut state,
            "8",
            Elbv2Command::CreateLoadBalancer {
                load_balancer: lb("web", "0000000000000011"),
            },
        )
        .unwrap();
        assert_eq!(state.elbv2.load_balancers.len(), 1);
    }

    #[test]
    fn rule_priorities_are_unique_per_listener() {
        let mut state = lab();
        let lb_arn = m::load_balancer_arn("application", "web", "00000000000000aa");
        let listener_arn = m::listener_arn(&lb_arn, "00000000000000cc");
        let tg_arn = m::target_group_arn("tg", "00000000000000bb");
        let rule = |id: &str, priority: &str| Rule {
            rule_arn: m::rule_arn(&listener_arn, id),
            priority: priority.into(),
            conditions: m::normalize_conditions(&[RuleCondition {
                field: "path-pattern".into(),
                values: Some(vec!["/api/*".into()]),
                host_header_config: None,
                path_pattern_config: None,
            }])
            .unwrap(),
            actions: forward(&tg_arn),
            is_default: false,
        };
        run(
            &mut state,
            "r1",
            Elbv2Command::CreateRule {
                listener_arn: listener_arn.clone(),
                rule: rule("1", "10"),
            },
        )
        .unwrap();
        let error = run(
            &mut state,
            "r2",
            Elbv2Command::CreateRule {
                listener_arn: listener_arn.clone(),
                rule: rule("2", "10"),
            },
        )
        .unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("Priority: 10 is currently in use"),
            "{error}"
        );
        run(
            &mut state,
            "r3",
            Elbv2Command::CreateRule {
                listener_arn: listener_arn.clone(),
                rule: rule("3", "20"),
            },
        )
        .unwrap();
        let error = run(
            &mut state,
            "r4",
            Elbv2Command::SetRulePriorities {
                priorities: vec![(m::rule_arn(&listener_arn, "3"), 10)],
            },
        )
        .unwrap_err();
        assert!(error.to_string().contains("PriorityInUse"), "{error}");
        // Deleting the listener takes its rules along.
        run(
            &mut state,
            "r5",
            Elbv2Command::DeleteListener { listener_arn },
        )
        .unwrap();
        assert!(state.elbv2.rules.is_empty());
    }

    #[test]
    fn deregistered_targets_drain_for_the_delay_then_go() {
        let mut state = lab();
        let tg_arn = m::target_group_arn("tg", "00000000000000bb");
        run(
            &mut state,
            "t1",
            Elbv2Command::RegisterTargets {
                target_group_arn: tg_arn.clone(),
                targets: vec![target("10.0.0.1", 8000), target("10.0.0.2", 8000)],
                now_ms: 1_000,
            },
        )
        .unwrap();
        let healthy = TargetHealth {
            state: "healthy".into(),
            reason: None,
            description: None,
        };
        run(
            &mut state,
            "t2",
            Elbv2Command::SetTargetHealth {
                target_group_arn: tg_arn.clone(),
                changes: vec![TargetHealthChange {
                    id: "10.0.0.1".into(),
                    port: 8000,
                    health: healthy.clone(),
                }],
            },
        )
        .unwrap();
        run(
            &mut state,
            "t3",
            Elbv2Command::DeregisterTargets {
                target_group_arn: tg_arn.clone(),
                targets: vec![("10.0.0.1".into(), 8000)],
                now_ms: 2_000,
            },
        )
        .unwrap();
        let key = target_key("tg/00000000000000bb", "10.0.0.1", 8000);
        assert_eq!(
            state.elbv2.targets.get(&key).unwrap().health.state,
            "draining"
        );
        // Health checks do not move a draining target.
        run(
            &mut state,
            "t4",
            Elbv2Command::SetTargetHealth {
                target_group_arn: tg_arn.clone(),
                changes: vec![TargetHealthChange {
                    id: "10.0.0.1".into(),
                    port: 8000,
                    health: healthy,
                }],
            },
        )
        .unwrap();
        assert_eq!(
            state.elbv2.targets.get(&key).unwrap().health.state,
            "draining"
        );
        run(
            &mut state,
            "t5",
            Elbv2Command::RemoveDrainedTargets { now_ms: 11_999 },
        )
        .unwrap();
        assert!(state.elbv2.targets.contains(&key));
        run(
            &mut state,
            "t6",
            Elbv2Command::RemoveDrainedTargets { now_ms: 12_000 },
        )
        .unwrap();
        assert!(!state.elbv2.targets.contains(&key));
        assert_eq!(state.elbv2.targets.len(), 1);
    }

    #[test]
    fn commands_survive_a_json_round_trip() {
        let command = Command::Elbv2(Elbv2Command::DeregisterTargets {
            target_group_arn: "a".into(),
            targets: vec![("b".into(), 1)],
            now_ms: 3,
        });
        let text = serde_json::to_string(&command).unwrap();
        assert_eq!(serde_json::from_str::<Command>(&text).unwrap(), command);
    }
}
