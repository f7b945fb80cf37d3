//! The image registry's replicated state: repositories, the blobs each
//! repository links, manifests (their bytes, what they reference, the
//! platforms they cover) and tags, and the secret that signs registry
//! tokens. Blob bytes are not here (`blobstore` on each server); only the
//! facts every server must agree on. Applying is deterministic like the
//! rest of the state machine: time travels inside the commands.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::table::Table;
use crate::error::Refusal;
use crate::oci::{Digest, Platform};
use crate::Error;

/// A repository (ECR's word; the distribution spec's "name").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Repository {
    /// Its name, e.g. `lab/web`.
    pub repository_name: String,
    /// When it was created (by `create-repository` or its first push).
    pub created_at_ms: u64,
}

/// A manifest stored in a repository.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestRecord {
    /// Its repository.
    pub repository_name: String,
    /// Its digest.
    pub digest: Digest,
    /// Its media type.
    pub media_type: String,
    /// The manifest's bytes, exactly as pushed (manifests are JSON, so UTF-8).
    pub body: String,
    /// When it was pushed.
    pub pushed_at_ms: u64,
    /// The blobs it references (config and layers) with their sizes.
    pub blobs: Vec<(Digest, u64)>,
    /// The manifests it references (an index's entries).
    pub children: Vec<Digest>,
    /// The platforms it covers: an index's entries, or an image config's.
    pub platforms: Vec<Platform>,
    /// The manifest it refers to (OCI 1.1 `subject`).
    pub subject: Option<Digest>,
    /// Its artifact type (OCI 1.1), for the referrers API.
    pub artifact_type: Option<String>,
}

impl ManifestRecord {
    /// The image's size as ECR reports it: the manifest's referenced blobs.
    pub fn image_size(&self) -> u64 {
        self.blobs.iter().map(|(_, size)| size).sum()
    }
}

/// A pull-through cache rule (ECR's `PullThroughCacheRule`): repositories
/// named `PREFIX/…` are fetched from the upstream on their first pull.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheRule {
    /// The first segment of the repositories it covers, e.g. `hub`.
    pub ecr_repository_prefix: String,
    /// Where images come from, e.g. `http://192.168.1.5:5000`.
    pub upstream_registry_url: String,
    /// When it was created.
    pub created_at_ms: u64,
}

/// Everything the registry replicates.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RegistryState {
    /// Repositories by name.
    pub repositories: Table<Repository>,
    /// Blob links by `repo@digest`, with the blob's size.
    pub blobs: Table<u64>,
    /// Manifests by `repo@digest`.
    pub manifests: Table<ManifestRecord>,
    /// Tags by `repo:tag`, naming a manifest digest.
    pub tags: Table<Digest>,
    /// When each blob link (by `repo@digest`) was last made, in ms: garbage
    /// collection spares links younger than its grace period (a push in
    /// progress links its blobs before its manifest names them).
    #[serde(default)]
    pub linked_at: Table<u64>,
    /// Pull-through cache rules by prefix.
    #[serde(default)]
    pub cache_rules: Table<CacheRule>,
    /// Signs registry tokens; set once, by the first proposal that needs
    /// it, sealed with the cluster's seal key (`SEALED_SECRET_PREFIX` then
    /// base64). Clusters from before sealing kept it in clear: the first
    /// server that reads it so proposes it sealed (`api::ecr::secret`).
    pub secret: String,
}

/// The key of a blob link or manifest.
pub fn content_key(repository: &str, digest: &Digest) -> String {
    format!("{repository}@{digest}")
}

/// The key of a tag.
pub fn tag_key(repository: &str, tag: &str) -> String {
    format!("{repository}:{tag}")
}

impl RegistryState {
    /// A repository by name, or ECR's not-found sentence.
    pub fn repository(&self, name: &str) -> Result<&Repository, Error> {
        self.repositories.get(name).ok_or_else(|| {
            Error::Refused(Refusal::RepositoryNotFound, format!(
                "repository not found: {name:?} (create it with `orc ecr create-repository --repository-name {name}`, or push to it)"
            ))
        })
    }

    /// A blob's size when the repository links it.
    pub fn blob(&self, repository: &str, digest: &Digest) -> Option<u64> {
        self.blobs.get(&content_key(repository, digest)).copied()
    }

    /// A manifest by digest.
    pub fn manifest(&self, repository: &str, digest: &Digest) -> Option<&ManifestRecord> {
        self.manifests.get(&content_key(repository, digest))
    }

    /// The digest a tag names.
    pub fn tag(&self, repository: &str, tag: &str) -> Option<&Digest> {
        self.tags.get(&tag_key(repository, tag))
    }

    /// A repository's tags in order, with their digests.
    pub fn tags_of<'a>(
        &'a self,
        repository: &str,
    ) -> impl Iterator<Item = (&'a str, &'a Digest)> + 'a {
        let prefix = format!("{repository}:");
        let skip = prefix.len();
        self.tags
            .scan_prefix(&prefix)
            .map(move |(key, digest)| (&key[skip..], digest))
    }

    /// A repository's manifests in digest order.
    pub fn manifests_of<'a>(
        &'a self,
        repository: &str,
    ) -> impl Iterator<Item = &'a ManifestRecord> + 'a {
        self.manifests
            .scan_prefix(&format!("{repository}@"))
            .map(|(_, m)| m)
    }

    /// The index in the repository that lists `digest` as an entry, if any.
    pub fn parent_index(&self, repository: &str, digest: &Digest) -> Option<&ManifestRecord> {
        self.manifests_of(repository)
            .find(|m| m.children.contains(digest))
    }

    /// Every digest some repository still needs: linked blobs and the
    /// blobs of manifests (garbage collection keeps these).
    pub fn referenced_blobs(&self) -> std::collections::BTreeSet<Digest> {
        let mut all = std::collections::BTreeSet::new();
        for key in self.blobs.iter().map(|(k, _)| k) {
            if let Some((_, digest)) = key.rsplit_once('@') {
                if let Ok(digest) = Digest::parse(digest) {
                    all.insert(digest);
                }
            }
        }
        all
    }
}

fn ensure_repository(state: &mut RegistryState, name: &str, now_ms: u64) {
    if !state.repositories.contains(name) {
        state.repositories.insert(
            name,
            Repository {
                repository_name: name.to_string(),
                created_at_ms: now_ms,
            },
        );
    }
}

/// ECR CreateRepository (`must_be_new`), or a push creating its repository.
pub fn create_repository(
    state: &mut RegistryState,
    name: &str,
    must_be_new: bool,
    now_ms: u64,
) -> Result<Value, Error> {
    crate::oci::validate_repository_name(name).map_err(|e| Error::InvalidInput(e.to_string()))?;
    if must_be_new && state.repositories.contains(name) {
        return Err(Error::Refused(Refusal::RepositoryAlreadyExists, format!(
            "repository {name:?} already exists: push to it, or delete it first with `orc ecr delete-repository --repository-name {name}`"
        )));
    }
    ensure_repository(state, name, now_ms);
    Ok(json!({ "repositoryName": name }))
}

/// ECR DeleteRepository: refused while it holds images unless `force`.
pub fn delete_repository(
    state: &mut RegistryState,
    name: &str,
    force: bool,
) -> Result<Value, Error> {
    let repository = state.repository(name)?.clone();
    let images = state.manifests_of(name).count();
    if images > 0 && !force {
        return Err(Error::Refused(
            Refusal::RepositoryNotEmpty,
            format!(
            "repository {name:?} still holds {images} image(s): delete them first, or pass --force"
        ),
        ));
    }
    for table in [format!("{name}@"), format!("{name}:")] {
        let keys: Vec<String> = state
            .manifests
            .scan_prefix(&table)
            .map(|(k, _)| k.clone())
            .chain(state.blobs.scan_prefix(&table).map(|(k, _)| k.clone()))
            .chain(state.tags.scan_prefix(&table).map(|(k, _)| k.clone()))
            .collect();
        for key in keys {
            state.manifests.remove(&key);
            state.blobs.remove(&key);
            state.linked_at.remove(&key);
            state.tags.remove(&key);
        }
    }
    state.repositories.remove(name);
    Ok(
        json!({ "repositoryName": repository.repository_name, "createdAtMs": repository.created_at_ms }),
    )
}

/// A finished upload or a mount links a blob into a repository (creating
/// the repository on its first push, as distribution does).
pub fn link_blob(
    state: &mut RegistryState,
    repository: &str,
    digest: &Digest,
    size: u64,
    now_ms: u64,
) -> Result<Value, Error> {
    crate::oci::validate_repository_name(repository)
        .map_err(|e| Error::InvalidInput(e.to_string()))?;
    ensure_repository(state, repository, now_ms);
    state.blobs.insert(content_key(repository, digest), size);
    state
        .linked_at
        .insert(content_key(repository, digest), now_ms);
    Ok(json!({ "digest": digest, "size": size }))
}

/// Removes a blob link; refused while a manifest of the repository
/// references the blob.
pub fn unlink_blob(
    state: &mut RegistryState,
    repository: &str,
    digest: &Digest,
) -> Result<Value, Error> {
    if state.blob(repository, digest).is_none() {
        return Err(Error::NotFound(format!(
            "blob {digest} is not in repository {repository:?}"
        )));
    }
    if let Some(user) = state
        .manifests_of(repository)
        .find(|m| m.blobs.iter().any(|(d, _)| d == digest))
    {
        return Err(Error::Conflict(format!(
            "blob {digest} is still referenced by manifest {} in {repository:?}: delete that manifest first",
            user.digest
        )));
    }
    state.blobs.remove(&content_key(repository, digest));
    state.linked_at.remove(&content_key(repository, digest));
    Ok(json!({ "digest": digest }))
}

/// ECR CreatePullThroughCacheRule: the prefix is one lowercase repository
/// name segment, unused by another rule; the upstream an `https://` or
/// `http://` URL.
pub fn put_cache_rule(state: &mut RegistryState, rule: &CacheRule) -> Result<Value, Error> {
    let prefix = &rule.ecr_repository_prefix;
    let prefix_ok = (2..=30).contains(&prefix.len())
        && prefix.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_' || c == '.'
        })
        && prefix.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !prefix_ok {
        return Err(Error::InvalidInput(format!(
            "ecrRepositoryPrefix {prefix:?}: must be 2 to 30 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit"
        )));
    }
    let url = &rule.upstream_registry_url;
    let host = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .unwrap_or_default()
        .trim_end_matches('/');
    if host.is_empty() || host.contains('/') {
        return Err(Error::InvalidInput(format!(
            "upstreamRegistryUrl {url:?}: give the upstream as https://HOST[:PORT] (or http://HOST:PORT for a mirror on the lab's network)"
        )));
    }
    if state.cache_rules.contains(prefix) {
        return Err(Error::Conflict(format!(
            "a pull-through cache rule for prefix {prefix:?} exists already: delete it first"
        )));
    }
    state.cache_rules.insert(prefix.clone(), rule.clone());
    Ok(json!({}))
}

/// ECR DeletePullThroughCacheRule (the cached repositories stay).
pub fn delete_cache_rule(state: &mut RegistryState, prefix: &str) -> Result<Value, Error> {
    match state.cache_rules.remove(prefix) {
        Some(rule) => Ok(serde_json::to_value(rule).unwrap_or_default()),
        None => Err(Error::NotFound(format!(
            "no pull-through cache rule has prefix {prefix:?}: see `orc ecr describe-pull-through-cache-rules`"
        ))),
    }
}

/// The blob links garbage collection would remove at `now_ms`: links no
/// manifest of their repository references, made at least `grace_ms` ago.
/// Pure, so the proposer and the tests read the same answer.
pub fn collectable(state: &RegistryState, now_ms: u64, grace_ms: u64) -> Vec<(String, Digest)> {
    let mut referenced = std::collections::BTreeSet::new();
    for (_, manifest) in state.manifests.iter() {
        for (digest, _) in &manifest.blobs {
            referenced.insert(content_key(&manifest.repository_name, digest));
        }
    }
    state
        .blobs
        .iter()
        .filter(|(key, _)| !referenced.contains(*key))
        .filter(|(key, _)| {
            let linked = state.linked_at.get(key).copied().unwrap_or(0);
            linked.saturating_add(grace_ms) <= now_ms
        })
        .filter_map(|(key, _)| {
            let (repository, digest) = key.rsplit_once('@')?;
            Some((repository.to_string(), Digest::parse(digest).ok()?))
        })
        .collect()
}

/// Removes the blob links garbage collection chose; a link that a manifest
/// references by now, or that is gone, is skipped. Answers how many links
/// and bytes were let go.
pub fn collect_garbage(state: &mut RegistryState, links: &[(String, Digest)]) -> Value {
    let mut removed = 0u64;
    let mut bytes = 0u64;
    for (repository, digest) in links {
        let size = state.blob(repository, digest);
        if let (Some(size), Ok(_)) = (size, unlink_blob(state, repository, digest)) {
            removed += 1;
            bytes += size;
        }
    }
    json!({ "unlinkedBlobs": removed, "unlinkedBytes": bytes })
}

/// Stores a manifest (checked again here: the blobs and child manifests
/// it references must be in the repository) and points `tag` at it.
pub fn put_manifest(
    state: &mut RegistryState,
    manifest: &ManifestRecord,
    tag: Option<&str>,
) -> Result<Value, Error> {
    let repository = manifest.repository_name.as_str();
    crate::oci::validate_repository_name(repository)
        .map_err(|e| Error::InvalidInput(e.to_string()))?;
    if let Some(tag) = tag {
        crate::oci::validate_tag(tag).map_err(|e| Error::InvalidInput(e.to_string()))?;
    }
    for (digest, _) in &manifest.blobs {
        if state.blob(repository, digest).is_none() {
            return Err(Error::NotFound(format!(
                "the manifest references blob {digest}, which is not in repository {repository:?}: push the blob first"
            )));
        }
    }
    for digest in &manifest.children {
        if state.manifest(repository, digest).is_none() {
            return Err(Error::NotFound(format!(
                "the index references manifest {digest}, which is not in repository {repository:?}: push it first"
            )));
        }
    }
    ensure_repository(state, repository, manifest.pushed_at_ms);
    let key = content_key(repository, &manifest.digest);
    // Pushing the same manifest again keeps its first push time.
    let pushed_at_ms = state
        .manifests
        .get(&key)
        .map_or(manifest.pushed_at_ms, |m| m.pushed_at_ms);
    let mut record = manifest.clone();
    record.pushed_at_ms = pushed_at_ms;
    state.manifests.insert(key, record);
    if let Some(tag) = tag {
        state
            .tags
            .insert(tag_key(repository, tag), manifest.digest.clone());
    }
    Ok(json!({ "digest": manifest.digest }))
}

/// Deletes a manifest and the tags naming it; refused while an index of the
/// repository lists it.
pub fn delete_manifest(
    state: &mut RegistryState,
    repository: &str,
    digest: &Digest,
) -> Result<Value, Error> {
    if state.manifest(repository, digest).is_none() {
        return Err(Error::NotFound(format!(
            "manifest {digest} is not in repository {repository:?}"
        )));
    }
    if let Some(parent) = state.parent_index(repository, digest) {
        return Err(Error::Conflict(format!(
            "manifest {digest} is an entry of index {} in {repository:?}: delete the index first",
            parent.digest
        )));
    }
    state.manifests.remove(&content_key(repository, digest));
    let tags: Vec<String> = state
        .tags_of(repository)
        .filter(|(_, d)| *d == digest)
        .map(|(t, _)| tag_key(repository, t))
        .collect();
    for key in &tags {
        state.tags.remove(key);
    }
    Ok(json!({ "digest": digest, "tagsRemoved": tags.len() }))
}

/// Deletes a tag (the manifest stays).
pub fn delete_tag(state: &mut RegistryState, repository: &str, tag: &str) -> Result<Value, Error> {
    match state.tags.remove(&tag_key(repository, tag)) {
        Some(digest) => Ok(json!({ "digest": digest, "tag": tag })),
        None => Err(Error::NotFound(format!(
            "tag {tag:?} is not in repository {repository:?}"
        ))),
    }
}

/// What a sealed token secret starts with in the state.
pub const SEALED_SECRET_PREFIX: &str = "sealed1:";

/// Sets the token secret once; a later proposal keeps the first, except
/// that a sealed one replaces one kept in clear (the migration of a
/// cluster from before sealing: the proposer sealed the same secret).
pub fn set_secret(state: &mut RegistryState, secret: &str) -> Result<Value, Error> {
    let sealed = |s: &str| s.starts_with(SEALED_SECRET_PREFIX);
    if state.secret.is_empty() || (!sealed(&state.secret) && sealed(secret)) {
        state.secret = secret.to_string();
    }
    Ok(json!({}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(repository: &str, body: &str, blobs: Vec<(Digest, u64)>) -> ManifestRecord {
        ManifestRecord {
            repository_name: repository.into(),
            digest: Digest::of(body.as_bytes()),
            media_type: crate::oci::OCI_MANIFEST.into(),
            body: body.into(),
            pushed_at_ms: 5,
            blobs,
            children: vec![],
            platforms: vec![],
            subject: None,
            artifact_type: None,
        }
    }

    #[test]
    fn a_manifest_needs_its_blobs_and_deleting_it_removes_its_tags() {
        let mut state = RegistryState::default();
        let layer = Digest::of(b"layer");
        let m = manifest("lab/web", "{}", vec![(layer.clone(), 5)]);
        assert!(matches!(
            put_manifest(&mut state, &m, Some("v1")),
            Err(Error::NotFound(_))
        ));
        assert!(state.manifests.is_empty());
        link_blob(&mut state, "lab/web", &layer, 5, 1).unwrap();
        put_manifest(&mut state, &m, Some("v1")).unwrap();
        put_manifest(&mut state, &m, Some("latest")).unwrap();
        assert_eq!(state.tags_of("lab/web").count(), 2);
        assert!(matches!(
            unlink_blob(&mut state, "lab/web", &layer),
            Err(Error::Conflict(_))
        ));
        delete_manifest(&mut state, "lab/web", &m.digest).unwrap();
        assert_eq!(state.tags_of("lab/web").count(), 0);
        unlink_blob(&mut state, "lab/web", &layer).unwrap();
        assert!(matches!(
            create_repository(&mut state, "lab/web", true, 2),
            Err(Error::Refused(Refusal::RepositoryAlreadyExists, _))
        ));
        delete_repository(&mut state, "lab/web", false).unwrap();
        assert!(state.repositories.is_empty());
    }
}
