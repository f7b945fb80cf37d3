//! What answers at an address: when a call to a server fails below gRPC
//! (nothing listens, the connection breaks, nothing answers), a probe on a
//! fresh TCP connection tells a person what is there: nothing, a host that
//! does not accept, an SSH server, an HTTP/1.1 server, something silent (a
//! paused server), or an HTTP/2 server (an orc server, which is then simply
//! slow). It sends the HTTP/2 client preface and an empty SETTINGS frame,
//! which an HTTP/2 server answers with its own SETTINGS at once.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// What a probe found at an address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// It speaks HTTP/2 (as an orc server does).
    Http2,
    /// It answered plain text with a TLS alert: an orc server with TLS on,
    /// which a command line with a credential reaches (it is then simply
    /// slow) and one without cannot (`no_credential` says so).
    Tls,
    /// Not an orc server, or not reachable: the sentence says which and
    /// what to try.
    Explained(String),
}

/// What to tell a person whose command line reached a TLS server (a
/// `Verdict::Tls`) without a credential.
pub fn no_credential(address: &str) -> String {
    format!(
        "{address} speaks TLS and this command line found no credential to connect with: set ORC_CREDENTIALS to the credential file `orc up` or `orc server --bootstrap` printed (`orc config` shows what is used)"
    )
}

/// The HTTP/2 connection preface, then an empty SETTINGS frame.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// Probes `endpoint` (`HOST:PORT`, optionally after `http://`), giving each
/// step (resolving, connecting, the first answer) up to `patience`.
pub async fn probe(endpoint: &str, patience: Duration) -> Verdict {
    let address = endpoint
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/');
    let resolved = match tokio::time::timeout(patience, tokio::net::lookup_host(address)).await {
        Ok(Ok(mut addresses)) => addresses.next(),
        Ok(Err(error)) => {
            return Verdict::Explained(format!(
                "cannot resolve {address} ({error}): check the host name, or give an IP address"
            ))
        }
        Err(_) => {
            return Verdict::Explained(format!(
                "cannot resolve {address}: the name service did not answer within {} s",
                patience.as_secs()
            ))
        }
    };
    let Some(socket_address) = resolved else {
        return Verdict::Explained(format!(
            "{address} resolves to no address: check the host name"
        ));
    };
    let mut stream =
        match tokio::time::timeout(patience, tokio::net::TcpStream::connect(socket_address)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) if error.kind() == std::io::ErrorKind::ConnectionRefused => {
                return Verdict::Explained(format!(
                    "nothing listens on {address} (connection refused): is `orc server` or `orc up` running there, and on that port? (the default is 7400)"
                ))
            }
            Ok(Err(error)) => {
                return Verdict::Explained(format!(
                    "cannot connect to {address} ({error}): is the host up and on this network?"
                ))
            }
            Err(_) => {
                return Verdict::Explained(format!(
                    "{address} did not accept a connection within {} s: is the host up, and the port open in its firewall?",
                    patience.as_secs()
                ))
            }
        };
    let _ = stream.write_all(PREFACE).await;
    let mut answer = Vec::new();
    let mut buffer = [0u8; 64];
    let read = tokio::time::timeout(patience, async {
        // Enough bytes to recognise an HTTP/2 frame header or a status line.
        while answer.len() < 9 {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    classify(address, &answer, read.is_err(), patience)
}

/// The verdict from the first bytes `answer` read back (`silent`: nothing
/// more came within `patience`).
fn classify(address: &str, answer: &[u8], silent: bool, patience: Duration) -> Verdict {
    let not_orc = |what: &str| {
        Verdict::Explained(format!(
            "{address} {what}, not gRPC: is this an orc server? (check --endpoint; orc listens on 7400 by default)"
        ))
    };
    if answer.starts_with(b"SSH-") {
        return not_orc("answered with an SSH banner");
    }
    if answer.starts_with(b"HTTP/1.") {
        return not_orc("answered HTTP/1.1");
    }
    // A TLS alert record (content type 21, version 3.x): a TLS server that
    // got plain text from this command line.
    if answer.len() >= 2 && answer[0] == 0x15 && answer[1] == 0x03 {
        return Verdict::Tls;
    }
    // An HTTP/2 frame header: 3 bytes of length, then the type; a server
    // starts with SETTINGS (type 4).
    if answer.len() >= 9 && answer[3] == 4 {
        return Verdict::Http2;
    }
    if answer.is_empty() && silent {
        return Verdict::Explained(format!(
            "{address} accepted the connection but answered nothing within {} s: if it is an orc server it is paused (SIGSTOP) or overloaded; otherwise it is not an orc server",
            patience.as_secs()
        ));
    }
    if answer.is_empty() {
        return not_orc("closed the connection without answering");
    }
    let shown: String = String::from_utf8_lossy(&answer[..answer.len().min(24)])
        .chars()
        .map(|c| if c.is_control() { '.' } else { c })
        .collect();
    not_orc(&format!("answered {shown:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn explained(verdict: Verdict) -> String {
        match verdict {
            Verdict::Explained(sentence) => sentence,
            other => panic!("not explained: {other:?}"),
        }
    }

    #[test]
    fn first_bytes_name_what_answered() {
        let p = Duration::from_secs(2);
        let e = explained(classify("h:22", b"SSH-2.0-OpenSSH_9.2\r\n", false, p));
        assert!(
            e.contains("h:22 answered with an SSH banner, not gRPC: is this an orc server?"),
            "{e}"
        );
        let e = explained(classify("h:80", b"HTTP/1.1 400 Bad Request\r\n", false, p));
        assert!(e.contains("h:80 answered HTTP/1.1, not gRPC"), "{e}");
        let e = explained(classify("h:1", b"", true, p));
        assert!(
            e.contains("answered nothing within 2 s") && e.contains("paused"),
            "{e}"
        );
        let e = explained(classify("h:1", b"", false, p));
        assert!(e.contains("closed the connection"), "{e}");
        let e = explained(classify("h:1", b"\x01\x02hello", false, p));
        assert!(e.contains("not gRPC"), "{e}");
        assert_eq!(
            classify("h:1", b"\x00\x00\x00\x04\x00\x00\x00\x00\x00", false, p),
            Verdict::Http2
        );
        // A TLS alert record: an orc server with TLS on.
        assert_eq!(
            classify("h:1", b"\x15\x03\x03\x00\x02\x02\x32", false, p),
            Verdict::Tls
        );
    }
}
