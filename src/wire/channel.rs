//! gRPC channels to other orc servers.

use std::time::Duration;

use tonic::transport::Channel;

use crate::{Error, Result};

/// Makes a channel to `host:port` (connects lazily).
pub fn channel(endpoint: &str) -> Result<Channel> {
    let uri = if endpoint.starts_with("http://") || endpoint.starts_with("https://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    };
    let channel = tonic::transport::Endpoint::from_shared(uri)
        .map_err(|e| Error::InvalidInput(format!("invalid endpoint {endpoint:?}: {e}")))?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .connect_lazy();
    Ok(channel)
}
