//! Which CPU architectures a task's images can run on, read from the cluster
//! registry's manifests, and the refusal of an image that runs on none of a
//! cluster's instances, before anything is placed.
//!
//! An image the cluster's registry holds (named `orc.local/REPO:TAG`, or by
//! a server's address, `HOST:PORT/REPO:TAG`) has the platforms its index
//! lists, or its image config names. An image from anywhere else has
//! unknown platforms: any instance qualifies, and Docker judges at pull
//! time. Pure: reads only the state.

use std::collections::BTreeSet;

use super::placement::{canonical_arch, ARCHITECTURE_ATTRIBUTE};
use crate::store::registry::ManifestRecord;
use crate::store::State;
use crate::taskdef::TaskDefinition;
use crate::{oci, Error};

/// The short registry host every agent resolves to the cluster's registry.
const ORC_LOCAL: &str = "orc.local";

/// One container image whose platforms the registry knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KnownImage {
    /// The container's name.
    pub container: String,
    /// The image as the task definition names it.
    pub image: String,
    /// The platforms it has, as Docker spells them (`linux/arm64/v8`).
    pub platforms: Vec<String>,
    /// The same as canonical architectures (`arm64`, `amd64`, `arm/v7`).
    pub architectures: BTreeSet<String>,
}

/// Splits an image name into (registry host, repository, tag or digest).
/// The host is the first component when it looks like one (has a `.` or a
/// `:`, or is `localhost`), as Docker reads image names.
fn split_image(image: &str) -> Option<(&str, &str, &str)> {
    let (host, rest) = image.split_once('/')?;
    if !(host.contains('.') || host.contains(':') || host == "localhost") {
        return None;
    }
    if let Some((repository, digest)) = rest.split_once('@') {
        return Some((host, repository, digest));
    }
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    match rest[last_slash..].rfind(':') {
        Some(colon) => {
            let at = last_slash + colon;
            Some((host, &rest[..at], &rest[at + 1..]))
        }
        None => Some((host, rest, "latest")),
    }
}

/// Whether `host` names this cluster's registry: `orc.local`, a server's
/// address, or a loopback name with a server's port.
fn is_cluster_registry(state: &State, host: &str) -> bool {
    if host == ORC_LOCAL {
        return true;
    }
    let port_of = |address: &str| address.rsplit_once(':').map(|(_, port)| port.to_string());
    let loopback = host
        .rsplit_once(':')
        .is_some_and(|(name, _)| matches!(name, "127.0.0.1" | "localhost" | "[::1]"));
    state.members.iter().any(|(_, member)| {
        member.address == host || (loopback && port_of(&member.address) == port_of(host))
    })
}

/// The manifest the cluster registry holds for `image`, if it holds one.
fn registry_manifest<'a>(state: &'a State, image: &str) -> Option<&'a ManifestRecord> {
    let (host, repository, reference) = split_image(image)?;
    if !is_cluster_registry(state, host) {
        return None;
    }
    let registry = &state.registry;
    let digest = match oci::Digest::parse(reference) {
        Ok(digest) => digest,
        Err(_) => registry.tag(repository, reference)?.clone(),
    };
    registry.manifest(repository, &digest)
}

/// The canonical architecture of a platform, or `None` for another OS.
fn architecture_of(platform: &oci::Platform) -> Option<String> {
    (platform.os == "linux").then(|| canonical_arch(&platform.to_string()))
}

/// The definition's images whose platforms the registry knows.
pub fn known_images(state: &State, definition: &TaskDefinition) -> Vec<KnownImage> {
    definition
        .container_definitions
        .iter()
        .filter_map(|container| {
            let manifest = registry_manifest(state, &container.image)?;
            if manifest.platforms.is_empty() {
                return None;
            }
            Some(KnownImage {
                container: container.name.clone(),
                image: container.image.clone(),
                platforms: manifest.platforms.iter().map(|p| p.to_string()).collect(),
                architectures: manifest
                    .platforms
                    .iter()
                    .filter_map(architecture_of)
                    .collect(),
            })
        })
        .collect()
}

/// The architectures every known image of the definition runs on (their
/// intersection), or `None` when no image's platforms are known.
pub fn definition_architectures(state: &State, definition: &TaskDefinition) -> Option<Vec<String>> {
    let mut images = known_images(state, definition).into_iter();
    let first = images.next()?.architectures;
    let common = images.fold(first, |common, image| {
        common.intersection(&image.architectures).cloned().collect()
    });
    Some(common.into_iter().collect())
}

/// Refuses a definition with an image that has no variant for any of the
/// cluster's registered instances, naming the image's platforms and the
/// instances' architectures. A cluster with no instances, or images of
/// unknown platforms, are not refused here.
pub fn check(state: &State, cluster: &str, definition: &TaskDefinition) -> Result<(), Error> {
    let instances: Vec<(String, String)> = state
        .container_instances
        .scan_prefix(&format!("{cluster}/"))
        .map(|(_, instance)| instance)
        .filter(|instance| instance.status != "INACTIVE")
        .map(|instance| {
            let architecture = instance
                .attribute(ARCHITECTURE_ATTRIBUTE)
                .map(canonical_arch)
                .unwrap_or_else(|| "unknown".to_string());
            (instance.id().to_string(), architecture)
        })
        .collect();
    if instances.is_empty() {
        return Ok(());
    }
    let present: BTreeSet<&str> = instances.iter().map(|(_, a)| a.as_str()).collect();
    for image in known_images(state, definition) {
        if present.iter().any(|a| image.architectures.contains(*a)) {
            continue;
        }
        let wanted = present.iter().copied().collect::<Vec<_>>().join(", ");
        return Err(Error::InvalidInput(format!(
            "image {} (container {}) cannot run on any container instance of cluster {cluster}: \
             the image has {}, and the instances are {}; push a variant for {wanted} \
             (docker buildx build --platform linux/{} --push) or add instances it can run on",
            image.image,
            image.container,
            image.platforms.join(", "),
            describe_instances(&instances),
            present.iter().next().copied().unwrap_or("arm64"),
        )));
    }
    if let Some(common) = definition_architectures(state, definition) {
        if !present.iter().any(|a| common.iter().any(|c| c == a)) {
            return Err(Error::InvalidInput(format!(
                "the images of task definition {} have no architecture in common with any container instance of cluster {cluster}: \
                 together they run on {}, and the instances are {}; push variants of every image for one architecture",
                definition.family_revision(),
                if common.is_empty() { "nothing".to_string() } else { common.join(", ") },
                describe_instances(&instances),
            )));
        }
    }
    Ok(())
}

/// `arm64 (pi-1, pi-2), amd64 (laptop)`: architectures with their instances.
fn describe_instances(instances: &[(String, String)]) -> String {
    let mut by_architecture: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for (id, architecture) in instances {
        by_architecture.entry(architecture).or_default().push(id);
    }
    by_architecture
        .iter()
        .map(|(architecture, ids)| {
            let shown: Vec<&str> = ids.iter().take(3).copied().collect();
            let more = if ids.len() > 3 {
                format!(" and {} more", ids.len() - 3)
            } else {
                String::new()
            };
            format!("{architecture}: {}{more}", shown.join(", "))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names_split_as_docker_reads_them() {
        assert_eq!(
            split_image("orc.local/lab/web:1"),
            Some(("orc.local", "lab/web", "1"))
        );
        assert_eq!(
            split_image("127.0.0.1:7400/web"),
            Some(("127.0.0.1:7400", "web", "latest"))
        );
        assert_eq!(
            split_image("localhost/a/b@sha256:00"),
            Some(("localhost", "a/b", "sha256:00"))
        );
        // Docker Hub names have no registry host.
        assert_eq!(split_image("library/busybox:1"), None);
        assert_eq!(split_image("busybox"), None);
    }

    #[test]
    fn platforms_map_to_the_instances_spelling() {
        let platform = |architecture: &str, variant: &str| oci::Platform {
            os: "linux".into(),
            architecture: architecture.into(),
            variant: variant.into(),
        };
        assert_eq!(
            architecture_of(&platform("arm64", "v8")).as_deref(),
            Some("arm64")
        );
        assert_eq!(
            architecture_of(&platform("arm", "v7")).as_deref(),
            Some("arm/v7")
        );
        assert_eq!(
            architecture_of(&platform("amd64", "")).as_deref(),
            Some("amd64")
        );
        let windows = oci::Platform {
            os: "windows".into(),
            ..platform("amd64", "")
        };
        assert_eq!(architecture_of(&windows), None);
    }
}
