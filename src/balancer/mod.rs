//! Feeding the built-in load balancer's proxies: a loop that follows the
//! control plane through the watch API (`Orc.Watch` via `client`, as the
//! agent and `orc watch` do; never the store), reads the load balancers
//! again with elbv2's describe verbs after each change that names one, turns
//! that into a `proxy::RouteTable` (`routes::route_table`, pure) and hands
//! it to `Proxy::apply`, so routes change live. Every `orc server` (and so
//! `orc up`) runs one against itself; `orc agent --proxy` runs one against
//! its servers.

pub mod routes;

use std::time::Duration;

use futures::{FutureExt as _, StreamExt as _};
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::client::Client;
use crate::model::elbv2::{Listener, LoadBalancer, Rule, TargetGroup};
use crate::proxy::routes::RouteTable;
use crate::proxy::{Proxy, ProxyOptions};
use crate::store::elbv2::SUBJECT_KINDS;
use crate::Result;
use routes::{Described, TargetHealthDescription};

use crate::model::elbv2::{HOST_ADDRESS_ATTRIBUTE, IDLE_TIMEOUT};

/// How often the routes are read again even without a change (a safety net
/// for a change missed while reconnecting).
const RESYNC_EVERY: Duration = Duration::from_secs(30);

/// Whether a change may move the routes: it names a load balancer resource
/// or a container instance (whose host address targets use).
fn moves_routes(change: &crate::store::Change) -> bool {
    change.error.is_none()
        && change.subjects.iter().any(|subject| {
            SUBJECT_KINDS.iter().any(|kind| subject.starts_with(kind))
                || subject.starts_with("container-instance/")
        })
}

async fn call(client: &Client, action: &str, body: Value) -> Result<Value> {
    Ok(client.call(&format!("elbv2:{action}"), body).await?.0)
}

fn field<T: serde::de::DeserializeOwned>(answer: &Value, key: &str) -> Result<Vec<T>> {
    serde_json::from_value(answer[key].clone()).map_err(|e| {
        crate::Error::Internal(format!(
            "the server described {key} in an unknown shape: {e}"
        ))
    })
}

/// Reads everything the routes depend on through the describe verbs.
pub async fn describe(client: &Client) -> Result<Described> {
    let mut described = Described::default();
    let load_balancers: Vec<LoadBalancer> = field(
        &call(client, "DescribeLoadBalancers", json!({})).await?,
        "LoadBalancers",
    )?;
    for lb in &load_balancers {
        let attributes = call(
            client,
            "DescribeLoadBalancerAttributes",
            json!({"LoadBalancerArn": lb.load_balancer_arn}),
        )
        .await?;
        let idle = attributes["Attributes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["Key"] == IDLE_TIMEOUT)
            .and_then(|a| a["Value"].as_str()?.parse::<u32>().ok());
        if let Some(seconds) = idle {
            described
                .idle_timeouts
                .insert(lb.load_balancer_arn.clone(), seconds);
        }
        let answer = call(
            client,
            "DescribeListeners",
            json!({"LoadBalancerArn": lb.load_balancer_arn}),
        )
        .await?;
        for listener in field::<Listener>(&answer, "Listeners")? {
            let rules: Vec<Rule> = field(
                &call(
                    client,
                    "DescribeRules",
                    json!({"ListenerArn": listener.listener_arn}),
                )
                .await?,
                "Rules",
            )?;
            described.listeners.push((listener, rules));
        }
    }
    let groups: Vec<TargetGroup> = field(
        &call(client, "DescribeTargetGroups", json!({})).await?,
        "TargetGroups",
    )?;
    let mut needs_hosts = false;
    for group in groups {
        let targets: Vec<TargetHealthDescription> = field(
            &call(
                client,
                "DescribeTargetHealth",
                json!({"TargetGroupArn": group.target_group_arn}),
            )
            .await?,
            "TargetHealthDescriptions",
        )?;
        needs_hosts |= group.target_type == "instance" && !targets.is_empty();
        described.target_groups.push((group, targets));
    }
    if needs_hosts {
        let clusters = client.call("ListClusters", json!({})).await?.0;
        for cluster in clusters["clusterArns"].as_array().into_iter().flatten() {
            let answer = client
                .call("DescribeContainerInstances", json!({"cluster": cluster}))
                .await?
                .0;
            for instance in answer["containerInstances"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let id = instance["containerInstanceArn"]
                    .as_str()
                    .and_then(|arn| arn.rsplit('/').next())
                    .unwrap_or_default();
                let host = instance["attributes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|a| a["name"] == HOST_ADDRESS_ATTRIBUTE)
                    .and_then(|a| a["value"].as_str());
                if let Some(host) = host {
                    described
                        .instance_hosts
                        .insert(id.to_string(), host.to_string());
                }
            }
        }
    }
    Ok(described)
}

/// Reads the routes and applies them when they changed; logs bind errors.
async fn refresh(client: &Client, proxy: &Proxy, last: &mut Option<RouteTable>) -> Result<()> {
    let described = describe(client).await?;
    let (table, problems) = routes::route_table(&described);
    for problem in problems {
        tracing::warn!(%problem, "a load balancer target has no address the proxy can reach");
    }
    if last.as_ref() == Some(&table) {
        return Ok(());
    }
    let listeners = table.listeners.len();
    let errors = proxy.apply(table.clone()).await;
    for error in &errors {
        tracing::error!(
            listener = %error.arn,
            port = error.port,
            message = %error.message,
            "cannot serve a load balancer listener on this machine: free the port or move the listener (orc elbv2 modify-listener --port)"
        );
    }
    tracing::debug!(
        listeners,
        bind_errors = errors.len(),
        "load balancer routes applied"
    );
    *last = Some(table);
    Ok(())
}

/// Serves the load balancers' listeners on this machine until `stop` turns
/// true: follows the control plane at `endpoints` (tried in turn) and keeps
/// a proxy's routes current. The proxy's listeners close on the way out.
pub async fn run(endpoints: Vec<String>, options: ProxyOptions, mut stop: watch::Receiver<bool>) {
    let proxy = Proxy::new(options);
    let mut last: Option<RouteTable> = None;
    let mut pause = Duration::from_millis(200);
    let mut attempt = 0usize;
    'outer: loop {
        if *stop.borrow() {
            break;
        }
        let endpoint = &endpoints[attempt % endpoints.len().max(1)];
        attempt += 1;
        let followed = async {
            let mut client = Client::new(endpoint)?;
            client.retry_for = Duration::from_secs(5);
            // Watch first, then read: no change between the two is missed.
            let mut changes = client.watch(0).await?;
            refresh(&client, &proxy, &mut last).await?;
            pause = Duration::from_millis(200);
            let mut resync = tokio::time::interval(RESYNC_EVERY);
            resync.tick().await;
            loop {
                tokio::select! {
                    change = changes.next() => match change {
                        Some(Ok(change)) => {
                            let mut moved = moves_routes(&change);
                            // Take every change already waiting: one read for a burst.
                            while let Some(Some(Ok(next))) = changes.next().now_or_never() {
                                moved |= moves_routes(&next);
                            }
                            if moved {
                                refresh(&client, &proxy, &mut last).await?;
                            }
                        }
                        Some(Err(error)) => return Err::<(), crate::Error>(error),
                        None => return Ok(()),
                    },
                    _ = resync.tick() => refresh(&client, &proxy, &mut last).await?,
                }
            }
        };
        tokio::select! {
            ended = followed => {
                if let Err(error) = ended {
                    tracing::debug!(%error, %endpoint, "following the load balancers again shortly");
                }
            }
            _ = stop.wait_for(|stop| *stop) => break 'outer,
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = stop.wait_for(|stop| *stop) => break 'outer,
        }
        pause = (pause * 2).min(Duration::from_secs(5));
    }
    proxy.shutdown().await;
}
