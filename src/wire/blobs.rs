//! The registry's blob copies between servers over `Peer`: the client side
//! of `Peer.FetchBlob` (a blob's bytes, in pieces) and `Peer.HoldBlob` (ask
//! a server to hold a blob), in domain types (`Digest`, `Bytes`), so the
//! copier (`api::blobsync`) names no protobuf.

use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt as _;

use super::proto::peer_client::PeerClient;
use super::proto::{FetchBlobRequest, HoldBlobRequest};
use super::status::from_status;
use crate::oci::Digest;
use crate::{Error, Result};

/// The pieces of `digest` as the server at `address` holds it; fails at
/// once (NOT_FOUND) when it does not hold it. `patience` bounds the wait
/// for the answer to start.
pub async fn fetch(
    address: &str,
    digest: &Digest,
    patience: Duration,
) -> Result<BoxStream<'static, Result<Bytes>>> {
    let mut client = PeerClient::new(super::channel(address)?)
        .max_decoding_message_size(crate::vocab::limits::MAX_REQUEST_BYTES);
    let answer = tokio::time::timeout(
        patience,
        client.fetch_blob(FetchBlobRequest {
            digest: digest.to_string(),
        }),
    )
    .await
    .map_err(|_| Error::Unavailable(format!("no answer within {} s", patience.as_secs())))?
    .map_err(from_status)?;
    Ok(answer
        .into_inner()
        .map(|piece| piece.map(|p| Bytes::from(p.data)).map_err(from_status))
        .boxed())
}

/// Asks the server at `address` to hold each blob, one after another; each
/// answer comes once that blob is durable there (within `patience`).
pub async fn hold(address: &str, blobs: &[(Digest, u64)], patience: Duration) -> Result<()> {
    let mut client = PeerClient::new(super::channel(address)?);
    for (digest, size) in blobs {
        let mut request = tonic::Request::new(HoldBlobRequest {
            digest: digest.to_string(),
            size: *size,
        });
        request.set_timeout(patience);
        client.hold_blob(request).await.map_err(from_status)?;
    }
    Ok(())
}
