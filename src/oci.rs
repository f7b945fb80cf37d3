//! The nouns of the OCI Distribution and Image specifications, as pure
//! functions over bytes: repository names, tags and digests checked,
//! manifests and indexes (OCI's and Docker's v2 schema 2) parsed into what
//! the registry must know about them (the blobs and manifests they
//! reference, the platforms they cover, their subject). No I/O here: the
//! blob store (`blobstore`) holds bytes, the replicated state
//! (`store::registry`) holds repositories, and the HTTP handlers
//! (`api::registry`) put them together.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker image manifest, v2 schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// The biggest manifest the registry accepts (as distribution and
/// containers/image do).
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

/// The longest repository name (distribution's limit).
pub const MAX_NAME_BYTES: usize = 255;

/// Why a name, digest or manifest was refused; the registry maps each to
/// the spec's error code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OciError {
    /// NAME_INVALID.
    NameInvalid(String),
    /// TAG_INVALID (sent as MANIFEST_INVALID by the spec's table).
    TagInvalid(String),
    /// DIGEST_INVALID.
    DigestInvalid(String),
    /// MANIFEST_INVALID.
    ManifestInvalid(String),
}

impl std::fmt::Display for OciError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OciError::NameInvalid(m)
            | OciError::TagInvalid(m)
            | OciError::DigestInvalid(m)
            | OciError::ManifestInvalid(m) => f.write_str(m),
        }
    }
}

/// Checks a repository name against the spec's grammar:
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`.
pub fn validate_repository_name(name: &str) -> Result<(), OciError> {
    let invalid = |why: &str| {
        Err(OciError::NameInvalid(format!(
            "invalid repository name {name:?}: {why}; use lower-case letters, digits and single separators (. _ __ -) between them, in path components split by /"
        )))
    };
    if name.is_empty() {
        return invalid("it is empty");
    }
    if name.len() > MAX_NAME_BYTES {
        return invalid("it is longer than 255 characters");
    }
    for component in name.split('/') {
        if component.is_empty() {
            return invalid("it has an empty path component");
        }
        let bytes = component.as_bytes();
        if !is_alnum(bytes[0]) || !is_alnum(bytes[bytes.len() - 1]) {
            return invalid(
                "a path component must start and end with a lower-case letter or digit",
            );
        }
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if is_alnum(b) {
                i += 1;
                continue;
            }
            let start = i;
            while i < bytes.len() && !is_alnum(bytes[i]) {
                i += 1;
            }
            let separator = &component[start..i];
            let dashes = separator.bytes().all(|b| b == b'-');
            if !(separator == "." || separator == "_" || separator == "__" || dashes) {
                if separator.bytes().any(|b| b.is_ascii_uppercase()) {
                    return invalid("it has upper-case letters");
                }
                return invalid(&format!("{separator:?} is not a separator"));
            }
        }
    }
    Ok(())
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// Checks a tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
pub fn validate_tag(tag: &str) -> Result<(), OciError> {
    let bytes = tag.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= 128
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(OciError::TagInvalid(format!(
            "invalid tag {tag:?}: a tag is 1 to 128 letters, digits, _ . or -, not starting with . or -"
        )))
    }
}

/// A content digest; only `sha256` is accepted (the algorithm every client
/// uses).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Digest(String);

impl Digest {
    /// Parses `sha256:<64 lower-case hex digits>`.
    pub fn parse(text: &str) -> Result<Digest, OciError> {
        let Some((algorithm, hex)) = text.split_once(':') else {
            return Err(OciError::DigestInvalid(format!(
                "invalid digest {text:?}: a digest is sha256:<64 hex digits>"
            )));
        };
        if algorithm != "sha256" {
            return Err(OciError::DigestInvalid(format!(
                "unsupported digest algorithm {algorithm:?} in {text:?}: this registry takes sha256 digests"
            )));
        }
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(OciError::DigestInvalid(format!(
                "invalid digest {text:?}: sha256 digests have 64 lower-case hex digits"
            )));
        }
        Ok(Digest(text.to_string()))
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest::from_sha256(Sha256::digest(bytes).as_slice())
    }

    /// The digest for a finished sha256 hash.
    pub fn from_sha256(hash: &[u8]) -> Digest {
        let mut text = String::with_capacity(71);
        text.push_str("sha256:");
        for byte in hash {
            text.push_str(&format!("{byte:02x}"));
        }
        Digest(text)
    }

    /// `sha256:...`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The hex part.
    pub fn hex(&self) -> &str {
        &self.0[7..]
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A platform an image runs on (`linux/arm64/v8`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Platform {
    /// `linux`, `windows`, ...
    pub os: String,
    /// GOARCH spelling: `amd64`, `arm64`, `arm`, ...
    pub architecture: String,
    /// `v7`, `v8`, or empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub variant: String,
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

/// Whether a platform can run on a machine of `architecture` (as `uname
/// -m` or Docker's `Architecture` spells it: `x86_64`, `aarch64`,
/// `armv7l`, or GOARCH names).
pub fn runs_on(platform: &Platform, architecture: &str) -> bool {
    platform.os == "linux" && platform.architecture == goarch(architecture)
}

/// The GOARCH name of a machine architecture (`x86_64` → `amd64`).
pub fn goarch(architecture: &str) -> &str {
    match architecture {
        "x86_64" | "amd64" => "amd64",
        "aarch64" | "arm64" | "armv8l" => "arm64",
        "armv7l" | "armv6l" | "armhf" | "arm" => "arm",
        other => other,
    }
}

/// A descriptor: what a manifest says about content it references.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Descriptor {
    /// The referenced content's media type.
    pub media_type: String,
    /// Its digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// The platform (index entries only).
    pub platform: Option<Platform>,
}

/// What the registry needs to know about a manifest it stores.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedManifest {
    /// The manifest's media type (from the document, else the request's
    /// Content-Type).
    pub media_type: String,
    /// An image manifest's config.
    pub config: Option<Descriptor>,
    /// An image manifest's layers.
    pub layers: Vec<Descriptor>,
    /// An index's manifests.
    pub manifests: Vec<Descriptor>,
    /// The manifest this one refers to (OCI 1.1 `subject`).
    pub subject: Option<Digest>,
    /// The artifact type (OCI 1.1), or the config's media type for an
    /// artifact with no `artifactType`.
    pub artifact_type: Option<String>,
}

impl ParsedManifest {
    /// Whether the manifest is an index (or Docker manifest list).
    pub fn is_index(&self) -> bool {
        self.media_type == OCI_INDEX || self.media_type == DOCKER_MANIFEST_LIST
    }

    /// The platforms an index names for its entries (attestation entries,
    /// `unknown/unknown`, skipped), sorted, once each.
    pub fn index_platforms(&self) -> Vec<Platform> {
        let mut platforms: Vec<Platform> = self
            .manifests
            .iter()
            .filter_map(|m| m.platform.clone())
            .filter(|p| p.os != "unknown" && p.architecture != "unknown")
            .collect();
        platforms.sort();
        platforms.dedup();
        platforms
    }
}

fn invalid(why: impl Into<String>) -> OciError {
    OciError::ManifestInvalid(why.into())
}

/// Parses a manifest's bytes, as sent with `content_type`. Anything that is
/// not a schema-2 image manifest or index is refused with a sentence.
pub fn parse_manifest(
    bytes: &[u8],
    content_type: Option<&str>,
) -> Result<ParsedManifest, OciError> {
    let document: Value = serde_json::from_slice(bytes).map_err(|e| {
        invalid(format!(
            "the manifest is not valid JSON ({e}): send the manifest document itself"
        ))
    })?;
    let object = document
        .as_object()
        .ok_or_else(|| invalid("the manifest is not a JSON object"))?;
    if object.get("schemaVersion").and_then(Value::as_u64) != Some(2) {
        return Err(invalid(
            "the manifest's schemaVersion is not 2: this registry stores OCI and Docker v2 schema 2 manifests and indexes",
        ));
    }
    let declared = match object.get("mediaType") {
        None => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => return Err(invalid("the manifest's mediaType is not a string")),
    };
    let content_type = content_type
        .map(|c| c.split(';').next().unwrap_or(c).trim())
        .filter(|c| !c.is_empty() && *c != "application/octet-stream" && *c != "application/json");
    let media_type = match (declared, content_type) {
        (Some(d), Some(c)) if d != c => {
            return Err(invalid(format!(
                "the manifest's mediaType {d:?} differs from the request's Content-Type {c:?}: send the same type in both"
            )))
        }
        (Some(d), _) => d.to_string(),
        (None, Some(c)) => c.to_string(),
        (None, None) => {
            if object.contains_key("manifests") {
                OCI_INDEX.to_string()
            } else {
                OCI_MANIFEST.to_string()
            }
        }
    };
    let subject = match object.get("subject") {
        None | Some(Value::Null) => None,
        Some(value) => Some(descriptor(value, "subject")?.digest),
    };
    let artifact_type = match object.get("artifactType") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(invalid("the manifest's artifactType is not a string")),
    };
    match media_type.as_str() {
        OCI_MANIFEST | DOCKER_MANIFEST => {
            let config = descriptor(
                object.get("config").ok_or_else(|| invalid("the image manifest has no config"))?,
                "config",
            )?;
            let layers = match object.get("layers") {
                Some(Value::Array(items)) => items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| descriptor(item, &format!("layers[{i}]")))
                    .collect::<Result<Vec<_>, _>>()?,
                None if media_type == OCI_MANIFEST => Vec::new(),
                _ => return Err(invalid("the image manifest's layers is not an array")),
            };
            let artifact_type = artifact_type.or_else(|| {
                (config.media_type != OCI_CONFIG && config.media_type != DOCKER_CONFIG)
                    .then(|| config.media_type.clone())
            });
            Ok(ParsedManifest {
                media_type,
                config: Some(config),
                layers,
                manifests: Vec::new(),
                subject,
                artifact_type,
            })
        }
        OCI_INDEX | DOCKER_MANIFEST_LIST => {
            let manifests = match object.get("manifests") {
                Some(Value::Array(items)) => items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| descriptor(item, &format!("manifests[{i}]")))
                    .collect::<Result<Vec<_>, _>>()?,
                _ => return Err(invalid("the index has no manifests array")),
            };
            Ok(ParsedManifest {
                media_type,
                config: None,
                layers: Vec::new(),
                manifests,
                subject,
                artifact_type,
            })
        }
        other => Err(invalid(format!(
            "unsupported manifest media type {other:?}: push an OCI image manifest or index, or a Docker v2 schema 2 manifest or manifest list"
        ))),
    }
}

fn descriptor(value: &Value, what: &str) -> Result<Descriptor, OciError> {
    let object = value
        .as_object()
        .ok_or_else(|| invalid(format!("the manifest's {what} is not a descriptor object")))?;
    let media_type = object
        .get("mediaType")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("the manifest's {what} has no mediaType")))?
        .to_string();
    let digest = object
        .get("digest")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("the manifest's {what} has no digest")))?;
    let digest =
        Digest::parse(digest).map_err(|e| invalid(format!("the manifest's {what}: {e}")))?;
    let size = object
        .get("size")
        .and_then(Value::as_u64)
        .ok_or_else(|| invalid(format!("the manifest's {what} has no size")))?;
    let platform = match object.get("platform") {
        None | Some(Value::Null) => None,
        Some(p) => Some(platform(p).ok_or_else(|| {
            invalid(format!(
                "the manifest's {what} has a platform without os and architecture"
            ))
        })?),
    };
    Ok(Descriptor {
        media_type,
        digest,
        size,
        platform,
    })
}

fn platform(value: &Value) -> Option<Platform> {
    Some(Platform {
        os: value.get("os")?.as_str()?.to_string(),
        architecture: value.get("architecture")?.as_str()?.to_string(),
        variant: value
            .get("variant")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
    })
}

/// The platform an image config names, if it is an image config.
pub fn config_platform(bytes: &[u8]) -> Option<Platform> {
    let value: Value = serde_json::from_slice(bytes).ok()?;
    platform(&value)
}

/// A `bytes=START-END` Range header (END optional), as byte offsets
/// `[start, end]` within `size`. `None` when the range cannot be served.
pub fn parse_range(header: &str, size: u64) -> Option<(u64, u64)> {
    let spec = header.trim().strip_prefix("bytes=")?;
    let (start, end) = spec.split_once('-')?;
    if start.is_empty() {
        // A suffix: the last N bytes.
        let n: u64 = end.parse().ok()?;
        if n == 0 || size == 0 {
            return None;
        }
        return Some((size.saturating_sub(n), size - 1));
    }
    let start: u64 = start.parse().ok()?;
    let end: u64 = if end.is_empty() {
        size.checked_sub(1)?
    } else {
        end.parse().ok()?
    };
    (start <= end && start < size).then_some((start, end.min(size - 1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_spec_grammar() {
        for ok in ["a", "library/busybox", "a-b/c__d/e.f", "a--b", "0/1"] {
            validate_repository_name(ok).unwrap();
        }
        for bad in [
            "",
            "A",
            "Library/x",
            "a/../b",
            "..",
            "a//b",
            "-a",
            "a-",
            "a/",
            "a..b",
            "a___b",
        ] {
            assert!(
                matches!(validate_repository_name(bad), Err(OciError::NameInvalid(_))),
                "{bad:?}"
            );
        }
        let error = validate_repository_name("Lab/App").unwrap_err().to_string();
        assert!(error.contains("lower-case"), "{error}");
    }

    #[test]
    fn tags_and_digests_are_checked() {
        validate_tag("v1.2_3-x").unwrap();
        assert!(validate_tag(".v1").is_err());
        assert!(validate_tag(&"a".repeat(129)).is_err());
        let digest = Digest::of(b"");
        assert_eq!(
            digest.as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(Digest::parse(digest.as_str()).unwrap(), digest);
        assert!(Digest::parse("sha256:E3B0").is_err());
        assert!(Digest::parse("md5:abc").is_err());
    }

    #[test]
    fn manifests_and_indexes_are_parsed_and_bad_ones_refused() {
        let layer = Digest::of(b"layer");
        let config = Digest::of(b"config");
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"{OCI_CONFIG}","digest":"{config}","size":6}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer}","size":5}}]}}"#
        );
        let parsed = parse_manifest(manifest.as_bytes(), Some(OCI_MANIFEST)).unwrap();
        assert_eq!(parsed.layers[0].digest, layer);
        assert_eq!(parsed.artifact_type, None);
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{layer}","size":5,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}},{{"mediaType":"{OCI_MANIFEST}","digest":"{config}","size":5,"platform":{{"os":"unknown","architecture":"unknown"}}}}]}}"#
        );
        let parsed = parse_manifest(index.as_bytes(), None).unwrap();
        assert!(parsed.is_index());
        assert_eq!(parsed.index_platforms().len(), 1);
        assert_eq!(parsed.index_platforms()[0].to_string(), "linux/arm64/v8");
        for bad in [
            "",
            "{",
            "[]",
            r#"{"schemaVersion":1}"#,
            r#"{"schemaVersion":2,"config":{}}"#,
        ] {
            assert!(
                matches!(
                    parse_manifest(bad.as_bytes(), None),
                    Err(OciError::ManifestInvalid(_))
                ),
                "{bad:?}"
            );
        }
        assert!(parse_manifest(manifest.as_bytes(), Some(OCI_INDEX)).is_err());
    }

    #[test]
    fn ranges_and_architectures() {
        assert_eq!(parse_range("bytes=0-9", 100), Some((0, 9)));
        assert_eq!(parse_range("bytes=90-", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=-10", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=100-", 100), None);
        assert_eq!(parse_range("bytes=5-1", 100), None);
        let amd64 = Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: String::new(),
        };
        assert!(runs_on(&amd64, "x86_64"));
        assert!(!runs_on(&amd64, "aarch64"));
    }
}
