//! ECR's verbs over the built-in image registry, with ECR's JSON shapes
//! (`repositoryName`, `imageIds`, `imageDetails`, ...), and the registry's
//! login tokens: `GetAuthorizationToken` signs a short-lived password with
//! the cluster's registry secret (replicated state), which `docker login
//! --username AWS` sends back as HTTP Basic credentials.

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};

use super::ecs::{parse, ActionResult};
use crate::crypto::{hex, hmac_sha256, same_secret};
use crate::oci::Digest;
use crate::raft::node::RaftHandle;
use crate::seal::SealKey;
use crate::store::registry::{CacheRule, SEALED_SECRET_PREFIX};
use crate::store::registry::{ManifestRecord, RegistryState, Repository};
use crate::store::{Command, Proposal};
use crate::vocab::action::EcrAction;
use crate::vocab::time::now_ms;
use crate::{Error, Result};

/// How long a login password is good for (ECR's is 12 hours).
pub const TOKEN_LIFETIME_MS: u64 = 12 * 3600 * 1000;

/// The account id ECR shows in ARNs and `registryId`.
const REGISTRY_ID: &str = "000000000000";

/// A login password good until `expires_ms`: `orc1.EXPIRY.SIGNATURE`. It
/// allows pushes.
pub fn sign_token(secret: &str, expires_ms: u64) -> String {
    sign(secret, format!("orc1.{expires_ms}"))
}

/// An anonymous Bearer token for pulls only: `orc1.EXPIRY.pull.SIGNATURE`.
pub fn sign_pull_token(secret: &str, expires_ms: u64) -> String {
    sign(secret, format!("orc1.{expires_ms}.pull"))
}

fn sign(secret: &str, payload: String) -> String {
    let signature = hmac_sha256(secret.as_bytes(), payload.as_bytes());
    format!("{payload}.{}", hex(&signature))
}

/// What a token signed with `secret` allows at `now_ms`: `Some(true)` pushes
/// (and pulls), `Some(false)` pulls only, `None` nothing (forged, expired).
pub fn token_access(secret: &str, token: &str, now_ms: u64) -> Option<bool> {
    if secret.is_empty() {
        // No secret yet: no token was ever signed.
        return None;
    }
    let (payload, signature) = token.rsplit_once('.')?;
    let mut fields = payload.split('.');
    if fields.next() != Some("orc1") {
        return None;
    }
    let expires_ms = fields.next()?.parse::<u64>().ok()?;
    let push = match fields.next() {
        None => true,
        Some("pull") => false,
        Some(_) => return None,
    };
    let expected = hex(&hmac_sha256(secret.as_bytes(), payload.as_bytes()));
    (same_secret(&expected, signature) && now_ms < expires_ms).then_some(push)
}

/// Whether `token` was signed with `secret`, allows pushes, and has not
/// expired at `now_ms`.
pub fn verify_token(secret: &str, token: &str, now_ms: u64) -> bool {
    token_access(secret, token, now_ms) == Some(true)
}

/// The password of an `Authorization: Basic …` header whose user is `AWS`
/// (or `Bearer TOKEN`).
pub fn basic_password(header: &str) -> Option<String> {
    if let Some(token) = header.strip_prefix("Bearer ") {
        return Some(token.trim().to_string());
    }
    let (user, password) = basic_credentials(header)?;
    (user == "AWS").then_some(password)
}

/// The user and password of an `Authorization: Basic …` header.
pub fn basic_credentials(header: &str) -> Option<(String, String)> {
    use base64::Engine as _;
    let encoded = header.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// The token secret as the state keeps it, opened: sealed
/// (`SEALED_SECRET_PREFIX` and base64), or in clear as clusters kept it
/// before sealing. Empty when there is none yet.
pub fn open_secret(seal: &SealKey, stored: &str) -> Result<String> {
    let Some(sealed) = stored.strip_prefix(SEALED_SECRET_PREFIX) else {
        return Ok(stored.to_string());
    };
    let sealed = base64::engine::general_purpose::STANDARD
        .decode(sealed)
        .map_err(|_| Error::Internal("the registry's sealed token secret is not base64".into()))?;
    seal.open_string(&sealed)
}

/// `secret` sealed, as the state keeps it.
fn seal_secret(seal: &SealKey, secret: &str) -> String {
    format!(
        "{SEALED_SECRET_PREFIX}{}",
        base64::engine::general_purpose::STANDARD.encode(seal.seal(secret.as_bytes()))
    )
}

/// The registry's token secret, made (once, through Raft, sealed) when
/// missing; one kept in clear (a cluster from before sealing) is proposed
/// sealed the first time it is read, and still used meanwhile.
pub async fn secret(raft: &RaftHandle, seal: &SealKey) -> Result<String> {
    let stored = raft.store().read(|s| s.registry.secret.clone());
    if !stored.is_empty() {
        let secret = open_secret(seal, &stored)?;
        if !stored.starts_with(SEALED_SECRET_PREFIX) {
            let sealed = seal_secret(seal, &secret);
            match raft
                .propose(Proposal {
                    request_id: crate::vocab::ids::request_id(),
                    command: Command::RegistrySetSecret { secret: sealed },
                })
                .await
            {
                Ok(_) => tracing::info!("sealed the registry's token secret in the state"),
                Err(error) => {
                    tracing::warn!(%error, "cannot seal the registry's token secret yet; will retry at the next login")
                }
            }
        }
        return Ok(secret);
    }
    let secret = format!(
        "{:032x}{:032x}",
        rand::random::<u128>(),
        rand::random::<u128>()
    );
    raft.propose(Proposal {
        request_id: crate::vocab::ids::request_id(),
        command: Command::RegistrySetSecret {
            secret: seal_secret(seal, &secret),
        },
    })
    .await?;
    // Another server's proposal may have won: use what the state holds.
    open_secret(seal, &raft.store().read(|s| s.registry.secret.clone()))
}

/// Dispatches one ECR action: the one `match` over [`EcrAction`].
pub async fn call(
    raft: &RaftHandle,
    seal: &SealKey,
    principal: &crate::vocab::principal::Principal,
    action: EcrAction,
    body: &str,
    request_id: String,
) -> Result<ActionResult> {
    let name = action.name();
    match action {
        EcrAction::CreateRepository => {
            let request: RepositoryRequest = parse(name, body)?;
            let repository_name = request.repository_name(name)?;
            propose(
                raft,
                request_id,
                Command::RegistryCreateRepository {
                    repository_name: repository_name.clone(),
                    must_be_new: true,
                    now_ms: now_ms(),
                },
            )
            .await?;
            let host = registry_host(raft);
            raft.store().read(|s| {
                let repository = s.registry.repository(&repository_name)?;
                Ok(json!({ "repository": repository_view(repository, &host) }).into())
            })
        }
        EcrAction::DescribeRepositories => {
            #[derive(Deserialize)]
            #[serde(rename_all = "camelCase")]
            struct Request {
                #[serde(default)]
                repository_names: Vec<String>,
            }
            let request: Request = parse(name, body)?;
            raft.read_barrier().await?;
            let host = registry_host(raft);
            raft.store().read(|s| {
                let repositories = if request.repository_names.is_empty() {
                    s.registry.repositories.values().collect::<Vec<_>>()
                } else {
                    request
                        .repository_names
                        .iter()
                        .map(|n| s.registry.repository(n))
                        .collect::<Result<Vec<_>>>()?
                };
                let views: Vec<Value> = repositories
                    .into_iter()
                    .map(|r| repository_view(r, &host))
                    .collect();
                Ok(json!({ "repositories": views }).into())
            })
        }
        EcrAction::DeleteRepository => {
            let request: RepositoryRequest = parse(name, body)?;
            let repository_name = request.repository_name(name)?;
            let host = registry_host(raft);
            let before = raft
                .store()
                .read(|s| s.registry.repository(&repository_name).cloned())?;
            propose(
                raft,
                request_id,
                Command::RegistryDeleteRepository {
                    repository_name,
                    force: request.force,
                },
            )
            .await?;
            Ok(json!({ "repository": repository_view(&before, &host) }).into())
        }
        EcrAction::ListImages => {
            let request: RepositoryRequest = parse(name, body)?;
            let repository_name = request.repository_name(name)?;
            raft.read_barrier().await?;
            raft.store().read(|s| {
                s.registry.repository(&repository_name)?;
                let mut ids = Vec::new();
                for manifest in s.registry.manifests_of(&repository_name) {
                    let tags = tags_of(&s.registry, manifest);
                    if tags.is_empty() {
                        ids.push(json!({ "imageDigest": manifest.digest }));
                    }
                    for tag in tags {
                        ids.push(json!({ "imageDigest": manifest.digest, "imageTag": tag }));
                    }
                }
                Ok(json!({ "imageIds": ids }).into())
            })
        }
        EcrAction::DescribeImages => {
            let request: RepositoryRequest = parse(name, body)?;
            let repository_name = request.repository_name(name)?;
            raft.read_barrier().await?;
            raft.store().read(|s| {
                s.registry.repository(&repository_name)?;
                let manifests: Vec<&ManifestRecord> = if request.image_ids.is_empty() {
                    s.registry.manifests_of(&repository_name).collect()
                } else {
                    request
                        .image_ids
                        .iter()
                        .map(|id| {
                            find_image(&s.registry, &repository_name, id).map_err(Error::NotFound)
                        })
                        .collect::<Result<Vec<_>>>()?
                };
                let details: Vec<Value> = manifests
                    .into_iter()
                    .map(|m| image_detail(&s.registry, m))
                    .collect();
                Ok(json!({ "imageDetails": details }).into())
            })
        }
        EcrAction::BatchDeleteImage => {
            let request: RepositoryRequest = parse(name, body)?;
            let repository_name = request.repository_name(name)?;
            raft.store()
                .read(|s| s.registry.repository(&repository_name).map(|_| ()))?;
            let mut deleted = Vec::new();
            let mut failures = Vec::new();
            for (i, id) in request.image_ids.iter().enumerate() {
                let found = raft.store().read(|s| {
                    find_image(&s.registry, &repository_name, id).map(|m| {
                        let tags = tags_of(&s.registry, m);
                        (m.digest.clone(), tags)
                    })
                });
                let outcome = match found {
                    Err(reason) => Err(("ImageNotFound", reason)),
                    Ok((digest, tags)) => {
                        // A tag goes alone unless it is the image's last one (as ECR does).
                        let command = match &id.image_tag {
                            Some(tag) if tags.len() > 1 => Command::RegistryDeleteTag {
                                repository_name: repository_name.clone(),
                                tag: tag.clone(),
                            },
                            _ => Command::RegistryDeleteManifest {
                                repository_name: repository_name.clone(),
                                digest: digest.clone(),
                            },
                        };
                        propose(raft, format!("{request_id}/{i}"), command)
                            .await
                            .map(|_| digest)
                            .map_err(|e| ("InvalidImageDigest", e.to_string()))
                    }
                };
                match outcome {
                    Ok(digest) => {
                        let mut view = json!({ "imageDigest": digest });
                        if let Some(tag) = &id.image_tag {
                            view["imageTag"] = json!(tag);
                        }
                        deleted.push(view);
                    }
                    Err((code, reason)) => failures.push(json!({
                        "imageId": id.view(),
                        "failureCode": code,
                        "failureReason": reason,
                    })),
                }
            }
            Ok(json!({ "imageIds": deleted, "failures": failures }).into())
        }
        EcrAction::CreatePullThroughCacheRule => {
            #[derive(Deserialize)]
            #[serde(rename_all = "camelCase")]
            struct Request {
                ecr_repository_prefix: String,
                upstream_registry_url: String,
            }
            let request: Request = parse(name, body)?;
            let rule = CacheRule {
                ecr_repository_prefix: request.ecr_repository_prefix,
                upstream_registry_url: request
                    .upstream_registry_url
                    .trim_end_matches('/')
                    .to_string(),
                created_at_ms: now_ms(),
            };
            propose(
                raft,
                request_id,
                Command::RegistryPutCacheRule { rule: rule.clone() },
            )
            .await?;
            Ok(cache_rule_view(&rule).into())
        }
        EcrAction::DescribePullThroughCacheRules => {
            #[derive(Deserialize)]
            #[serde(rename_all = "camelCase")]
            struct Request {
                #[serde(default)]
                ecr_repository_prefixes: Vec<String>,
            }
            let request: Request = parse(name, body)?;
            raft.store().read(|s| {
                for prefix in &request.ecr_repository_prefixes {
                    if !s.registry.cache_rules.contains(prefix) {
                        return Err(Error::NotFound(format!(
                            "no pull-through cache rule has prefix {prefix:?}"
                        )));
                    }
                }
                let rules: Vec<Value> = s
                    .registry
                    .cache_rules
                    .iter()
                    .filter(|(prefix, _)| {
                        request.ecr_repository_prefixes.is_empty()
                            || request.ecr_repository_prefixes.contains(prefix)
                    })
                    .map(|(_, rule)| cache_rule_view(rule))
                    .collect();
                Ok(json!({ "pullThroughCacheRules": rules }).into())
            })
        }
        EcrAction::DeletePullThroughCacheRule => {
            #[derive(Deserialize)]
            #[serde(rename_all = "camelCase")]
            struct Request {
                ecr_repository_prefix: String,
            }
            let request: Request = parse(name, body)?;
            let deleted = propose(
                raft,
                request_id,
                Command::RegistryDeleteCacheRule {
                    prefix: request.ecr_repository_prefix,
                },
            )
            .await?;
            let rule: CacheRule = serde_json::from_value(deleted)
                .map_err(|e| Error::Internal(format!("a deleted cache rule: {e}")))?;
            Ok(cache_rule_view(&rule).into())
        }
        EcrAction::GarbageCollect => {
            #[derive(Deserialize)]
            #[serde(rename_all = "camelCase", deny_unknown_fields)]
            struct Request {
                grace_seconds: Option<u64>,
                #[serde(default)]
                dry_run: bool,
            }
            let request: Request = parse(name, body)?;
            let grace_seconds = request.grace_seconds.unwrap_or(GC_GRACE_SECONDS);
            raft.read_barrier().await?;
            let links = raft.store().read(|s| {
                crate::store::registry::collectable(&s.registry, now_ms(), grace_seconds * 1000)
            });
            let chosen: Vec<Value> = links
                .iter()
                .map(|(repository, digest)| json!({"repositoryName": repository, "digest": digest}))
                .collect();
            if request.dry_run || links.is_empty() {
                let bytes: u64 = raft.store().read(|s| {
                    links
                        .iter()
                        .filter_map(|(r, d)| s.registry.blob(r, d))
                        .sum()
                });
                return Ok(json!({
                    "dryRun": request.dry_run, "graceSeconds": grace_seconds,
                    "unlinkedBlobs": 0, "unlinkedBytes": 0,
                    "collectable": chosen, "collectableBytes": bytes,
                })
                .into());
            }
            let mut answer =
                propose(raft, request_id, Command::RegistryCollectGarbage { links }).await?;
            answer["graceSeconds"] = json!(grace_seconds);
            answer["collectable"] = json!(chosen);
            Ok(answer.into())
        }
        EcrAction::GetAuthorizationToken => {
            use base64::Engine as _;
            let secret = secret(raft, seal).await?;
            let expires_ms = now_ms() + TOKEN_LIFETIME_MS;
            // A role that may write gets a token that pushes; readonly, one
            // that only pulls.
            let password = if principal
                .may(crate::vocab::principal::Access::Write, "ecr:push")
                .is_ok()
            {
                sign_token(&secret, expires_ms)
            } else {
                sign_pull_token(&secret, expires_ms)
            };
            // ECR's authorizationToken: `AWS:PASSWORD`, base64-encoded.
            let token = base64::engine::general_purpose::STANDARD.encode(format!("AWS:{password}"));
            Ok(json!({
                "authorizationData": [{
                    "authorizationToken": token,
                    "expiresAt": expires_ms as f64 / 1000.0,
                    "proxyEndpoint": format!("http://{}", registry_host(raft)),
                }]
            })
            .into())
        }
    }
}

/// A pull-through cache rule as ECR shows one.
fn cache_rule_view(rule: &CacheRule) -> Value {
    json!({
        "ecrRepositoryPrefix": rule.ecr_repository_prefix,
        "upstreamRegistryUrl": rule.upstream_registry_url,
        "createdAt": rule.created_at_ms as f64 / 1000.0,
        "registryId": REGISTRY_ID,
    })
}

/// How old a blob link must be before `orc ecr gc` may remove it: a push
/// links its layers before its manifest names them, so a younger link may
/// belong to a push still in progress.
pub const GC_GRACE_SECONDS: u64 = 3600;

async fn propose(raft: &RaftHandle, request_id: String, command: Command) -> Result<Value> {
    raft.propose(Proposal {
        request_id,
        command,
    })
    .await
}

/// An image id as ECR's requests name it.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ImageId {
    image_digest: Option<String>,
    image_tag: Option<String>,
}

impl ImageId {
    fn view(&self) -> Value {
        let mut view = json!({});
        if let Some(d) = &self.image_digest {
            view["imageDigest"] = json!(d);
        }
        if let Some(t) = &self.image_tag {
            view["imageTag"] = json!(t);
        }
        view
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RepositoryRequest {
    repository_name: Option<String>,
    #[serde(default)]
    force: bool,
    #[serde(default)]
    image_ids: Vec<ImageId>,
}

impl RepositoryRequest {
    fn repository_name(&self, action: &str) -> Result<String> {
        let name = self
            .repository_name
            .clone()
            .ok_or_else(|| Error::InvalidInput(format!("{action}: repositoryName is required")))?;
        crate::oci::validate_repository_name(&name)
            .map_err(|e| Error::InvalidInput(e.to_string()))?;
        Ok(name)
    }
}

fn find_image<'a>(
    registry: &'a RegistryState,
    repository: &str,
    id: &ImageId,
) -> std::result::Result<&'a ManifestRecord, String> {
    let digest = match (&id.image_digest, &id.image_tag) {
        (Some(digest), _) => Digest::parse(digest).map_err(|e| e.to_string())?,
        (None, Some(tag)) => registry
            .tag(repository, tag)
            .cloned()
            .ok_or_else(|| format!("tag {tag:?} is not in repository {repository:?}"))?,
        (None, None) => return Err("an image id needs imageDigest or imageTag".into()),
    };
    let manifest = registry
        .manifest(repository, &digest)
        .ok_or_else(|| format!("image {digest} is not in repository {repository:?}"))?;
    if let (Some(tag), Some(_)) = (&id.image_tag, &id.image_digest) {
        if registry.tag(repository, tag) != Some(&digest) {
            return Err(format!("tag {tag:?} does not name image {digest}"));
        }
    }
    Ok(manifest)
}

fn tags_of(registry: &RegistryState, manifest: &ManifestRecord) -> Vec<String> {
    registry
        .tags_of(&manifest.repository_name)
        .filter(|(_, d)| **d == manifest.digest)
        .map(|(t, _)| t.to_string())
        .collect()
}

/// Where this server's registry is reached (`host:port`), from its member
/// address.
fn registry_host(raft: &RaftHandle) -> String {
    let id = raft.status().id;
    let address = raft
        .store()
        .read(|s| s.member_address(id).map(str::to_string))
        .unwrap_or_default();
    address
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_string()
}

fn repository_view(repository: &Repository, host: &str) -> Value {
    let name = &repository.repository_name;
    json!({
        "repositoryArn": format!("arn:aws:ecr:orc:{REGISTRY_ID}:repository/{name}"),
        "registryId": REGISTRY_ID,
        "repositoryName": name,
        "repositoryUri": format!("{host}/{name}"),
        "createdAt": repository.created_at_ms as f64 / 1000.0,
        "imageTagMutability": "MUTABLE",
    })
}

fn image_detail(registry: &RegistryState, manifest: &ManifestRecord) -> Value {
    let platforms: Vec<String> = manifest.platforms.iter().map(ToString::to_string).collect();
    let mut detail = json!({
        "registryId": REGISTRY_ID,
        "repositoryName": manifest.repository_name,
        "imageDigest": manifest.digest,
        "imageSizeInBytes": image_size(registry, manifest),
        "imagePushedAt": manifest.pushed_at_ms as f64 / 1000.0,
        "imageManifestMediaType": manifest.media_type,
        "platforms": platforms,
    });
    let tags = tags_of(registry, manifest);
    if !tags.is_empty() {
        detail["imageTags"] = json!(tags);
    }
    if let Some(artifact_type) = &manifest.artifact_type {
        detail["artifactMediaType"] = json!(artifact_type);
    }
    detail
}

/// An image's size: its blobs, or for an index the blobs of its entries.
fn image_size(registry: &RegistryState, manifest: &ManifestRecord) -> u64 {
    manifest.image_size()
        + manifest
            .children
            .iter()
            .filter_map(|d| registry.manifest(&manifest.repository_name, d))
            .map(ManifestRecord::image_size)
            .sum::<u64>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_secret_is_kept_sealed_and_one_in_clear_still_opens() {
        let seal = SealKey::generate();
        let sealed = seal_secret(&seal, "s3cret");
        assert!(sealed.starts_with(SEALED_SECRET_PREFIX));
        assert!(!sealed.contains("s3cret"));
        assert_eq!(open_secret(&seal, &sealed).unwrap(), "s3cret");
        // A cluster from before sealing: the value in clear still works.
        assert_eq!(open_secret(&seal, "s3cret").unwrap(), "s3cret");
        assert!(open_secret(&SealKey::generate(), &sealed).is_err());
        // Migration: a sealed value replaces one in clear, never the reverse,
        // and a second sealed value never replaces the first.
        let mut state = RegistryState::default();
        crate::store::registry::set_secret(&mut state, "s3cret").unwrap();
        crate::store::registry::set_secret(&mut state, &sealed).unwrap();
        assert_eq!(state.secret, sealed);
        crate::store::registry::set_secret(&mut state, "other").unwrap();
        crate::store::registry::set_secret(&mut state, &seal_secret(&seal, "x")).unwrap();
        assert_eq!(state.secret, sealed);
        // No secret yet: no token verifies, not even one signed with "".
        assert_eq!(token_access("", &sign_token("", u64::MAX), 0), None);
    }

    #[test]
    fn tokens_verify_until_they_expire_and_only_with_their_secret() {
        let token = sign_token("s3cret", 1_000);
        assert!(verify_token("s3cret", &token, 999));
        assert!(!verify_token("s3cret", &token, 1_000));
        assert!(!verify_token("other", &token, 999));
        assert!(!verify_token(
            "s3cret",
            &token.replace("orc1.1000", "orc1.9999"),
            999
        ));
        assert!(!verify_token("s3cret", "garbage", 1));
        let pull = sign_pull_token("s3cret", 1_000);
        assert_eq!(token_access("s3cret", &pull, 999), Some(false));
        assert!(!verify_token("s3cret", &pull, 999));
        assert_eq!(
            token_access("s3cret", &pull.replace(".pull.", ".push."), 999),
            None
        );
        use base64::Engine as _;
        let header = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("AWS:{token}"))
        );
        assert_eq!(basic_password(&header), Some(token));
        assert_eq!(basic_password("Basic !!"), None);
    }
}
