//! gRPC channels to other orc servers.

use std::time::Duration;

use tonic::transport::Channel;

use crate::{Error, Result};

/// Checks that `endpoint` is `HOST:PORT` (optionally after `http://`) with
/// a host and a port from 1 to 65535, before anything connects to it; the
/// error says what is wrong and what to write instead.
pub fn check_endpoint(endpoint: &str) -> Result<()> {
    let invalid = |why: String| {
        Err(Error::InvalidInput(format!(
            "invalid address {endpoint:?}: {why}"
        )))
    };
    let example = "write HOST:PORT, e.g. 127.0.0.1:7400";
    let rest = endpoint
        .strip_prefix("http://")
        .or_else(|| endpoint.strip_prefix("https://"))
        .unwrap_or(endpoint);
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() {
        return invalid(format!("it is empty: {example}"));
    }
    if rest.contains(char::is_whitespace) || rest.contains('/') {
        return invalid(format!("it is not HOST:PORT: {example}"));
    }
    let Some((host, port)) = rest.rsplit_once(':') else {
        return invalid(format!("it has no port: {example}"));
    };
    if host.is_empty() {
        return invalid(format!("it has no host: {example}"));
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return invalid("an IPv6 address needs brackets, e.g. [::1]:7400".to_string());
    }
    if port.is_empty() {
        return invalid(format!("it has no port: {example}"));
    }
    match port.parse::<u32>() {
        Ok(number) if (1..=65535).contains(&number) => Ok(()),
        _ => invalid(format!(
            "{port} is not a port number (1 to 65535; orc listens on 7400 unless told otherwise)"
        )),
    }
}

/// Makes a channel to `host:port` (connects lazily). The address is checked
/// first (`check_endpoint`); HTTP/2 keep-alive pings find a server that
/// died or froze under an open stream.
pub fn channel(endpoint: &str) -> Result<Channel> {
    check_endpoint(endpoint)?;
    let uri = if endpoint.starts_with("http://") || endpoint.starts_with("https://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    };
    let channel = tonic::transport::Endpoint::from_shared(uri)
        .map_err(|e| Error::InvalidInput(format!("invalid endpoint {endpoint:?}: {e}")))?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(3))
        .keep_alive_while_idle(false)
        .connect_lazy();
    Ok(channel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_checked_before_connecting() {
        for good in [
            "127.0.0.1:7400",
            "pi1:7400",
            "http://pi1:7400",
            "[::1]:7400",
            "pi1:7400/",
        ] {
            assert!(check_endpoint(good).is_ok(), "{good}");
        }
        for (bad, why) in [
            ("127.0.0.1:99999", "99999 is not a port number"),
            ("127.0.0.1:0", "0 is not a port number"),
            ("127.0.0.1", "no port"),
            ("127.0.0.1:", "no port"),
            (":7400", "no host"),
            ("", "empty"),
            ("::1:7400", "brackets"),
            ("pi 1:7400", "not HOST:PORT"),
        ] {
            let e = check_endpoint(bad).unwrap_err().to_string();
            assert!(
                e.contains(why) && e.contains(&format!("{bad:?}")),
                "{bad}: {e}"
            );
        }
    }
}
