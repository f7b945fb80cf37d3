//! `orc watch`: prints each change of the replicated state as the server
//! applies it, and when the connection breaks (the server restarted, the
//! network dropped) reconnects and resumes after the last revision it
//! printed, so no change is missed or printed twice. It stops at ctrl-c, or
//! with an error when the server no longer holds a change it needs.

use std::time::Duration;

use futures::StreamExt as _;

use super::output::Output;
use crate::client::Client;

/// The first pause before reconnecting; it doubles up to `MAX_PAUSE`.
const FIRST_PAUSE: Duration = Duration::from_millis(100);
/// The longest pause between reconnection attempts.
const MAX_PAUSE: Duration = Duration::from_secs(2);

/// Watches the server at `endpoint` after `after_revision` (default, or 0:
/// its current revision) until ctrl-c, the end of the stream, or an error that
/// reconnecting cannot cure.
pub async fn run(
    endpoint: &str,
    output: &Output,
    after_revision: Option<u64>,
) -> anyhow::Result<()> {
    let first = super::dispatch::client(endpoint)?;
    // Resuming needs a revision even when watching from now on (which the
    // server would take 0 for, again at each reconnection): the server's
    // current one, read before the watch opens.
    let mut after = match after_revision {
        Some(revision) if revision > 0 => revision,
        _ => first.cluster_status(false).await?.revision,
    };
    // This loop does the retrying, so that a lost connection is reported
    // once; the stream itself has no deadline.
    let mut client = Client::new(endpoint)?;
    client.retry_for = Duration::ZERO;
    let mut pause = FIRST_PAUSE;
    let mut disconnected = false;
    loop {
        let error = match client.watch(after).await {
            Ok(mut changes) => {
                if disconnected {
                    eprintln!("reconnected to {endpoint}; resuming after revision {after}");
                    disconnected = false;
                }
                pause = FIRST_PAUSE;
                loop {
                    match changes.next().await {
                        Some(Ok(change)) => {
                            output.change(&change);
                            after = change.revision;
                        }
                        Some(Err(error)) => break error,
                        None => return Ok(()),
                    }
                }
            }
            Err(error) => error,
        };
        // A lost connection or a server that cannot answer yet is cured by
        // watching again; a compacted revision or a bad request is not.
        if !error.is_retryable() {
            return Err(error.into());
        }
        if !disconnected {
            eprintln!(
                "lost the watch on {endpoint} ({error}); reconnecting to resume after revision {after}"
            );
            disconnected = true;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
}
