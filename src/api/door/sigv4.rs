//! AWS Signature Version 4, as the AWS door checks it: pure functions over
//! the request's method, path, query, headers and body, and the secret of
//! the access key the `Authorization` header names.
//!
//! The header is `AWS4-HMAC-SHA256 Credential=AKID/DATE/REGION/SERVICE/aws4_request,
//! SignedHeaders=a;b;c, Signature=HEX`. The canonical request is the method,
//! the URI-encoded path, the sorted and encoded query, each signed header as
//! `name:value` (lowercase name, trimmed value with inner runs of spaces
//! collapsed), the signed header list and the body's SHA-256 in hex; the
//! string to sign is the algorithm, `X-Amz-Date`, the credential scope and
//! the canonical request's hash; the signing key is HMAC chained over the
//! date, region, service and `aws4_request` from `AWS4` + the secret. The
//! signature is compared in constant time, and a request dated more than
//! [`MAX_SKEW_SECONDS`] from the server's clock is refused. The body's hash
//! is computed here from the bytes received, so a replayed request with an
//! altered body no longer matches its signature (an `x-amz-content-sha256`
//! header that disagrees with the body is refused too).
//!
//! No I/O, no logging: the door looks the key up and maps a [`Failure`] to
//! the protocol's error code.

use sha2::{Digest as _, Sha256};

use crate::crypto::{hex, hmac_sha256, same_secret};

/// The only algorithm accepted.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// How far a request's date may be from the server's clock.
pub const MAX_SKEW_SECONDS: i64 = 5 * 60;

/// Why a signature was refused; the door names each with the protocol's
/// error code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The request carries no signature (nor a certificate).
    Missing(String),
    /// The header cannot be read as SigV4 (AWS's `IncompleteSignature`).
    Malformed(String),
    /// The access key id is not one of the cluster's.
    UnknownKey(String),
    /// The signature does not match (wrong secret, altered request).
    Mismatch(String),
    /// The request's date is too far from the server's clock.
    Expired(String),
}

impl Failure {
    /// The sentence for the caller.
    pub fn message(&self) -> &str {
        match self {
            Failure::Missing(m)
            | Failure::Malformed(m)
            | Failure::UnknownKey(m)
            | Failure::Mismatch(m)
            | Failure::Expired(m) => m,
        }
    }
}

/// A parsed `Authorization` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authorization {
    /// The access key id.
    pub access_key_id: String,
    /// The scope's date, `YYYYMMDD`.
    pub date: String,
    /// The scope's region.
    pub region: String,
    /// The scope's service (`ecs`, `iam`, ...).
    pub service: String,
    /// The signed headers, lowercase, as listed.
    pub signed_headers: Vec<String>,
    /// The signature, hex.
    pub signature: String,
}

/// What of a request the signature covers.
pub struct Request<'a> {
    /// The method, e.g. `POST`.
    pub method: &'a str,
    /// The path, e.g. `/`.
    pub path: &'a str,
    /// The raw query string (without `?`), or empty.
    pub query: &'a str,
    /// The headers (name, value), names in any case; repeated names allowed.
    pub headers: Vec<(String, String)>,
    /// The body received.
    pub body: &'a [u8],
}

impl Request<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads an `Authorization` header's value.
pub fn parse_authorization(value: &str) -> Result<Authorization, Failure> {
    let malformed = |why: &str| {
        Failure::Malformed(format!(
            "the Authorization header is not a SigV4 signature ({why}): sign with {ALGORITHM} (aws and the SDKs do)"
        ))
    };
    let rest = value
        .trim()
        .strip_prefix(ALGORITHM)
        .ok_or_else(|| malformed(&format!("it does not start with {ALGORITHM}")))?;
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("Credential=") {
            credential = Some(v);
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed_headers = Some(v);
        } else if let Some(v) = part.strip_prefix("Signature=") {
            signature = Some(v);
        }
    }
    let credential = credential.ok_or_else(|| malformed("no Credential"))?;
    let signed_headers = signed_headers.ok_or_else(|| malformed("no SignedHeaders"))?;
    let signature = signature.ok_or_else(|| malformed("no Signature"))?;
    let scope: Vec<&str> = credential.split('/').collect();
    let [access_key_id, date, region, service, terminator] = scope[..] else {
        return Err(malformed(
            "the Credential is not AKID/DATE/REGION/SERVICE/aws4_request",
        ));
    };
    if terminator != "aws4_request" || access_key_id.is_empty() || date.len() != 8 {
        return Err(malformed(
            "the Credential is not AKID/DATE/REGION/SERVICE/aws4_request",
        ));
    }
    if signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(malformed("the Signature is not 64 hex digits"));
    }
    Ok(Authorization {
        access_key_id: access_key_id.to_string(),
        date: date.to_string(),
        region: region.to_string(),
        service: service.to_string(),
        signed_headers: signed_headers
            .split(';')
            .map(|h| h.trim().to_ascii_lowercase())
            .collect(),
        signature: signature.to_ascii_lowercase(),
    })
}

/// SigV4's URI encoding: everything but `A-Za-z0-9-_.~` as `%XY`
/// (upper-case), `/` kept when `keep_slash`.
fn uri_encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            b'/' if keep_slash => out.push('/'),
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

/// Decodes `%XY` escapes (and nothing else), for re-encoding canonically;
/// a `%` not followed by two hex digits stays as it is.
pub(crate) fn uri_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let digits = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(byte) = digits.and_then(|d| u8::from_str_radix(d, 16).ok()) {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                uri_encode(&uri_decode(k), false),
                uri_encode(&uri_decode(v), false),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn canonical_header_value(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The canonical request, from the request and the signed header names.
pub fn canonical_request(
    request: &Request<'_>,
    signed_headers: &[String],
    payload_hash: &str,
) -> String {
    let path = if request.path.is_empty() {
        "/"
    } else {
        request.path
    };
    let mut headers = String::new();
    for name in signed_headers {
        let values: Vec<String> = request
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| canonical_header_value(v))
            .collect();
        headers.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        request.method,
        uri_encode(&uri_decode(path), true),
        canonical_query(request.query),
        headers,
        signed_headers.join(";"),
        payload_hash
    )
}

/// The signature of `request` under `secret` (hex).
pub fn signature(
    request: &Request<'_>,
    authorization: &Authorization,
    amz_date: &str,
    secret: &str,
    payload_hash: &str,
) -> String {
    let canonical = canonical_request(request, &authorization.signed_headers, payload_hash);
    let scope = format!(
        "{}/{}/{}/aws4_request",
        authorization.date, authorization.region, authorization.service
    );
    let string_to_sign = format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        hex(&Sha256::digest(canonical.as_bytes()))
    );
    let mut key = hmac_sha256(
        format!("AWS4{secret}").as_bytes(),
        authorization.date.as_bytes(),
    );
    for part in [
        authorization.region.as_str(),
        authorization.service.as_str(),
        "aws4_request",
    ] {
        key = hmac_sha256(&key, part.as_bytes());
    }
    hex(&hmac_sha256(&key, string_to_sign.as_bytes()))
}

/// Seconds since the epoch of an `X-Amz-Date` (`YYYYMMDDTHHMMSSZ`).
pub fn parse_amz_date(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let s = text.get(range)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let (year, month, day) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hour, minute, second) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    if second > 60 {
        return None;
    }
    let days = crate::vocab::time::days_from_civil(year, month, day);
    Some(days * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Checks `request`, signed as `authorization` says, against `secret`
/// at `now_seconds`.
pub fn verify(
    request: &Request<'_>,
    authorization: &Authorization,
    secret: &str,
    now_seconds: i64,
) -> Result<(), Failure> {
    let amz_date = request
        .header("x-amz-date")
        .ok_or_else(|| {
            Failure::Malformed(
                "the request has no X-Amz-Date header: SigV4 needs the time it was signed".into(),
            )
        })?
        .trim()
        .to_string();
    let signed_at = parse_amz_date(&amz_date).ok_or_else(|| {
        Failure::Malformed(format!("X-Amz-Date {amz_date:?} is not YYYYMMDDTHHMMSSZ"))
    })?;
    if !authorization.signed_headers.iter().any(|h| h == "host") {
        return Err(Failure::Malformed("SignedHeaders must include host".into()));
    }
    if !amz_date.starts_with(&authorization.date) {
        return Err(Failure::Mismatch(format!(
            "the Credential's date {} is not the day of X-Amz-Date {amz_date}",
            authorization.date
        )));
    }
    let body_hash = hex(&Sha256::digest(request.body));
    if let Some(declared) = request.header("x-amz-content-sha256") {
        let declared = declared.trim();
        if declared != body_hash {
            return Err(Failure::Mismatch(format!(
                "x-amz-content-sha256 {declared:?} is not the SHA-256 of the body received: sign the body you send"
            )));
        }
    }
    let expected = signature(request, authorization, &amz_date, secret, &body_hash);
    if !same_secret(&expected, &authorization.signature) {
        return Err(Failure::Mismatch(
            "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method".into(),
        ));
    }
    if (now_seconds - signed_at).abs() > MAX_SKEW_SECONDS {
        return Err(Failure::Expired(format!(
            "Signature expired: {amz_date} is more than {} minutes from the server's time: set this machine's clock (timedatectl, ntp)",
            MAX_SKEW_SECONDS / 60
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's published example ("Signature Version 4 test suite",
    /// get-vanilla): GET / with host and x-amz-date, empty body, the
    /// example secret.
    #[test]
    fn the_aws_test_suites_get_vanilla_signs_as_published() {
        let request = Request {
            method: "GET",
            path: "/",
            query: "",
            headers: vec![
                ("Host".into(), "example.amazonaws.com".into()),
                ("X-Amz-Date".into(), "20150830T123600Z".into()),
            ],
            body: b"",
        };
        let authorization = parse_authorization(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        )
        .unwrap();
        assert_eq!(authorization.access_key_id, "AKIDEXAMPLE");
        assert_eq!(authorization.service, "service");
        let secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
        let now = parse_amz_date("20150830T123600Z").unwrap();
        assert_eq!(now, 1_440_938_160);
        verify(&request, &authorization, secret, now).unwrap();
        // A wrong secret, a changed body, a skewed clock.
        assert!(matches!(
            verify(&request, &authorization, "wrong", now),
            Err(Failure::Mismatch(_))
        ));
        let altered = Request {
            body: b"x",
            ..request
        };
        assert!(matches!(
            verify(&altered, &authorization, secret, now),
            Err(Failure::Mismatch(_))
        ));
        let request = Request {
            body: b"",
            ..altered
        };
        assert!(matches!(
            verify(&request, &authorization, secret, now + 301),
            Err(Failure::Expired(_))
        ));
        assert!(verify(&request, &authorization, secret, now - 299).is_ok());
    }

    #[test]
    fn hostile_headers_are_refused_not_panicked_on() {
        for header in [
            "",
            "AWS4-HMAC-SHA256",
            "AWS4-HMAC-SHA256 Credential=a/b/c, SignedHeaders=host, Signature=00",
            "Basic dXNlcjpwYXNz",
            "AWS4-HMAC-SHA256 Credential=AK/20150830/r/s/aws4_request, SignedHeaders=host, Signature=zz",
            "AWS4-HMAC-SHA256 Credential=////, SignedHeaders=, Signature=é",
        ] {
            assert!(
                matches!(parse_authorization(header), Err(Failure::Malformed(_))),
                "{header:?}"
            );
        }
        for date in [
            "",
            "2015",
            "20151330T000000Z",
            "2015083OT123600Z",
            "é5083OT123600Zx",
        ] {
            assert_eq!(parse_amz_date(date), None, "{date:?}");
        }
        assert_eq!(uri_decode("%"), "%");
        assert_eq!(uri_decode("a%2"), "a%2");
        assert_eq!(uri_decode("a%2Fb"), "a/b");
        assert_eq!(uri_decode("%é"), "%é");
    }

    #[test]
    fn queries_are_sorted_and_encoded() {
        assert_eq!(canonical_query("b=2&a=1&c"), "a=1&b=2&c=");
        assert_eq!(canonical_query("k=a b"), "k=a%20b");
        assert_eq!(canonical_query("k=a%2fb"), "k=a%2Fb");
    }
}
