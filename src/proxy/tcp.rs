//! One TCP listener (layer 4): each connection goes to the next routable
//! target of the listener's default rule (round-robin, the same health
//! policy as HTTP), trying the next when a connect fails, then bytes are
//! copied both ways until either side closes.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::{pool, rules, Inner};

/// Accepts connections until `stop` says so; connections open then carry on.
pub(super) async fn serve(
    inner: Arc<Inner>,
    listener: TcpListener,
    port: u16,
    stop: watch::Receiver<bool>,
) {
    super::accept_until_stopped(listener, port, stop, |stream, _, _| {
        tokio::spawn(forward(inner.clone(), stream, port));
    })
    .await;
}

async fn forward(inner: Arc<Inner>, mut client: TcpStream, port: u16) {
    let started = Instant::now();
    let _ = client.set_nodelay(true);
    let snapshot = inner.snapshot();
    let Some(group) = snapshot
        .listeners
        .get(&port)
        .and_then(|listener| listener.rules.last())
        .and_then(|rule| rule.group.clone())
    else {
        tracing::debug!(
            port,
            "tcp connection closed: the listener has no target group"
        );
        return;
    };
    drop(snapshot);
    group.series.record_request();
    let count = group.routable.targets.len();
    if count == 0 {
        tracing::debug!(port, target_group = %group.name, "tcp connection closed: no target can take it");
        return;
    }
    if group.routable.fail_open {
        group.series.record_fail_open();
    }
    let counter = group.counter.fetch_add(1, Relaxed);
    let deadline = tokio::time::Instant::from_std(started + inner.options.request_timeout);
    for index in rules::attempt_order(count, counter) {
        let target = &group.targets[group.routable.targets[index]];
        target.series.record_request();
        match tokio::time::timeout_at(deadline, pool::connect_tcp(target.address)).await {
            Ok(Ok(mut upstream)) => {
                if let Err(error) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await
                {
                    tracing::debug!(port, target_group = %group.name, target = %target.address, %error, "tcp connection ended");
                }
                return;
            }
            Ok(Err(error)) => {
                tracing::warn!(port, target_group = %group.name, target = %target.address, %error, "target refused the connection; trying the next target");
            }
            Err(_) => {
                tracing::warn!(port, target_group = %group.name, target = %target.address, "target did not accept the connection in time");
                return;
            }
        }
    }
}
