//! The route table the proxy serves: plain data, built by whoever knows the
//! load balancers (the control plane's feeder) and handed whole to
//! `Proxy::apply`. Nothing here does I/O.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// Everything one proxy serves: its listeners and the target groups their
/// rules forward to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteTable {
    /// One entry per listener port.
    pub listeners: Vec<ListenerRoutes>,
    /// The target groups, by target group ARN.
    pub target_groups: BTreeMap<String, TargetGroupRoutes>,
}

/// A listener's protocol: HTTP (layer 7, rules) or TCP (layer 4, the default
/// rule only).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ListenerProtocol {
    /// HTTP/1.1 and h2c, routed by host and path.
    Http,
    /// Plain TCP, one target per connection.
    Tcp,
}

/// One listener and its rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerRoutes {
    /// The listener's ARN (in logs and errors).
    pub arn: String,
    /// The port it listens on.
    pub port: u16,
    /// HTTP or TCP.
    pub protocol: ListenerProtocol,
    /// Evaluated in ascending priority; the default rule (priority None)
    /// last. A TCP listener has only a default rule.
    pub rules: Vec<RuleRoute>,
    /// Its load balancer's `idle_timeout.timeout_seconds`: an HTTP client
    /// connection with no request in flight for this long is closed.
    /// `None`: the proxy's own (`ProxyOptions::idle_timeout`).
    pub idle_timeout: Option<Duration>,
}

/// One rule: its conditions and the target group it forwards to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleRoute {
    /// The rule's priority; `None` for the listener's default rule.
    pub priority: Option<u32>,
    /// Host-header condition values (ALB wildcards `*` and `?`,
    /// case-insensitive); empty matches any host.
    pub host_headers: Vec<String>,
    /// Path-pattern condition values (ALB wildcards, case-sensitive); empty
    /// matches any path.
    pub path_patterns: Vec<String>,
    /// The target group the rule forwards to.
    pub target_group_arn: String,
}

/// A target group and its registered targets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetGroupRoutes {
    /// The target group's ARN.
    pub arn: String,
    /// Its name (metric labels, error bodies).
    pub name: String,
    /// Its registered targets.
    pub targets: Vec<TargetRoute>,
}

/// One registered target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TargetRoute {
    /// Where the target listens.
    pub address: SocketAddr,
    /// Its health as the health checks last saw it.
    pub state: TargetState,
}

/// A target's health state, as elbv2 names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TargetState {
    /// Registered, not yet checked enough to be healthy.
    Initial,
    /// Passing its health checks: gets requests.
    Healthy,
    /// Failing its health checks: gets requests only when no target is
    /// healthy (fail open).
    Unhealthy,
    /// Being deregistered: gets no new request; requests in flight finish.
    Draining,
}
