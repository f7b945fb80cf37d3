//! Dynamic host ports.
//!
//! A port mapping whose `hostPort` is 0 or missing gets a port from ECS's
//! dynamic range, 32768–60999, chosen by the agent. The agent never hands out
//! a port held by one of its other tasks (static or dynamic) and skips ports
//! it cannot bind on 0.0.0.0 (something else on the host holds them). A
//! port something else binds between that probe and Docker's start (another
//! agent on the same host, a program) is named by the start failure
//! ([`taken_dynamic_port`]): the executor removes the container and the
//! reconciler creates it again on another port.
//!
//! Nothing is persisted: the ports a container got are written into its
//! `orc.ports` label ([`encode`]) so a restarted agent recovers every
//! allocation from the containers it adopts ([`decode`]).

use std::collections::BTreeSet;
use std::ops::RangeInclusive;

use crate::agent::runtime::{PortBinding, Protocol};

/// ECS's dynamic host port range on Linux.
pub const DYNAMIC_RANGE: RangeInclusive<u16> = 32768..=60999;

/// A host port held by some container: (port, protocol).
pub type HostPort = (u16, Protocol);

/// The lowest port of [`DYNAMIC_RANGE`] for `protocol` that is not in `used`
/// and that `bindable` accepts; None when the range is exhausted.
pub fn allocate(
    used: &BTreeSet<HostPort>,
    protocol: Protocol,
    bindable: &dyn Fn(u16, Protocol) -> bool,
) -> Option<u16> {
    DYNAMIC_RANGE
        .into_iter()
        .find(|p| !used.contains(&(*p, protocol)) && bindable(*p, protocol))
}

/// The dynamic port of `bindings` that a start failure's `message` says
/// is taken (Docker: "Bind for 0.0.0.0:32770 failed: port is already
/// allocated", or "listen tcp4 0.0.0.0:32770: bind: address already in
/// use"); None for any other failure, or a port outside the dynamic range.
pub fn taken_dynamic_port(message: &str, bindings: &[PortBinding]) -> Option<HostPort> {
    if !message.contains("port is already allocated") && !message.contains("address already in use")
    {
        return None;
    }
    message
        .split(':')
        .skip(1)
        .filter_map(|after| {
            let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<u16>().ok()
        })
        .find_map(|port| {
            bindings
                .iter()
                .find(|b| b.host_port == port && DYNAMIC_RANGE.contains(&port))
                .map(|b| (b.host_port, b.protocol))
        })
}

/// Whether nothing on this host holds `port` on 0.0.0.0 right now.
pub fn can_bind(port: u16, protocol: Protocol) -> bool {
    match protocol {
        Protocol::Tcp => std::net::TcpListener::bind(("0.0.0.0", port)).is_ok(),
        Protocol::Udp => std::net::UdpSocket::bind(("0.0.0.0", port)).is_ok(),
    }
}

/// The `orc.ports` label value: `80/tcp=32768,53/udp=53`.
pub fn encode(bindings: &[PortBinding]) -> String {
    bindings
        .iter()
        .map(|b| format!("{}/{}={}", b.container_port, b.protocol, b.host_port))
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses an `orc.ports` label value; malformed entries are skipped.
pub fn decode(label: &str) -> Vec<PortBinding> {
    label
        .split(',')
        .filter_map(|entry| {
            let (container, host) = entry.trim().split_once('=')?;
            let (port, proto) = container.split_once('/').unwrap_or((container, "tcp"));
            Some(PortBinding {
                container_port: port.parse().ok()?,
                host_port: host.parse().ok()?,
                protocol: proto.parse().ok()?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_lowest_free_bindable_port() {
        let mut used = BTreeSet::from([(32768, Protocol::Tcp), (32769, Protocol::Tcp)]);
        let all = |_: u16, _: Protocol| true;
        assert_eq!(allocate(&used, Protocol::Tcp, &all), Some(32770));
        // The same number is free for the other protocol.
        assert_eq!(allocate(&used, Protocol::Udp, &all), Some(32768));
        let not_32770 = |p: u16, _: Protocol| p != 32770;
        assert_eq!(allocate(&used, Protocol::Tcp, &not_32770), Some(32771));
        used.extend(DYNAMIC_RANGE.map(|p| (p, Protocol::Tcp)));
        assert_eq!(allocate(&used, Protocol::Tcp, &all), None);
    }

    #[test]
    fn a_start_failure_names_the_dynamic_port_that_was_taken() {
        let b = vec![
            PortBinding {
                container_port: 80,
                host_port: 32770,
                protocol: Protocol::Tcp,
            },
            PortBinding {
                container_port: 53,
                host_port: 53,
                protocol: Protocol::Udp,
            },
        ];
        let docker = "CannotStartContainerError: driver failed programming external connectivity on endpoint orc-web-web (8456cc): Bind for 0.0.0.0:32770 failed: port is already allocated";
        assert_eq!(taken_dynamic_port(docker, &b), Some((32770, Protocol::Tcp)));
        let proxy = "Error starting userland proxy: listen tcp4 0.0.0.0:32770: bind: address already in use";
        assert_eq!(taken_dynamic_port(proxy, &b), Some((32770, Protocol::Tcp)));
        // A static port outside the range, another port, another failure.
        let static_port = "Bind for 0.0.0.0:53 failed: port is already allocated";
        assert_eq!(taken_dynamic_port(static_port, &b), None);
        assert_eq!(
            taken_dynamic_port(
                "Bind for 0.0.0.0:32771 failed: port is already allocated",
                &b
            ),
            None
        );
        assert_eq!(
            taken_dynamic_port(
                "exec: \"nginx\": executable file not found at 0.0.0.0:32770",
                &b
            ),
            None
        );
    }

    #[test]
    fn labels_round_trip() {
        let b = vec![
            PortBinding {
                container_port: 80,
                host_port: 32768,
                protocol: Protocol::Tcp,
            },
            PortBinding {
                container_port: 53,
                host_port: 5353,
                protocol: Protocol::Udp,
            },
        ];
        assert_eq!(encode(&b), "80/tcp=32768,53/udp=5353");
        assert_eq!(decode(&encode(&b)), b);
        assert_eq!(decode(""), vec![]);
        assert_eq!(
            decode("x=1,80/tcp=81"),
            vec![PortBinding {
                container_port: 80,
                host_port: 81,
                protocol: Protocol::Tcp
            }]
        );
    }

    #[test]
    fn bind_probe_sees_a_held_port() {
        let held = std::net::TcpListener::bind(("0.0.0.0", 0)).unwrap();
        let port = held.local_addr().unwrap().port();
        assert!(!can_bind(port, Protocol::Tcp));
    }
}
