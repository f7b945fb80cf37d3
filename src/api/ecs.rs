//! The ECS verbs: each action takes the ECS request body (JSON) and returns
//! the ECS response body, so `--output json` prints what `aws ecs` prints.
//! Writes become `store::Command`s proposed through Raft; reads wait on a
//! ReadIndex barrier and then read the local state.

use serde::Deserialize;
use serde_json::{json, Value};

use super::{services, tasks};
use crate::model::{self, Cluster, Tag};
use crate::raft::node::RaftHandle;
use crate::store::{Command, Proposal, State};
use crate::vocab::action::EcsAction;
use crate::vocab::time::now_ms;
use crate::{Error, Result};

/// What an action returns: the ECS body and warnings for stderr.
pub struct ActionResult {
    /// The ECS response body.
    pub body: Value,
    /// Things the caller should know (e.g. ignored fields).
    pub warnings: Vec<String>,
}

impl From<Value> for ActionResult {
    fn from(body: Value) -> Self {
        ActionResult {
            body,
            warnings: Vec::new(),
        }
    }
}

/// Reads an action's request body into its typed form. A refusal names
/// the field that was wrong, by its path in the request
/// (`containerDefinitions[0].memory`), and says in ECS's words what was
/// expected and what came instead.
pub(crate) fn parse<T: for<'de> Deserialize<'de>>(action: &str, body: &str) -> Result<T> {
    let body = if body.trim().is_empty() { "{}" } else { body };
    let mut reader = serde_json::Deserializer::from_str(body);
    let value = serde_path_to_error::deserialize(&mut reader).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.classify() == serde_json::error::Category::Data {
            let place = if path == "." {
                "the request body"
            } else {
                &path
            };
            Error::InvalidInput(format!("{action}: {place}: {}", plain_serde_words(&inner)))
        } else {
            not_json(action, &inner)
        }
    })?;
    reader.end().map_err(|e| not_json(action, &e))?;
    Ok(value)
}

/// What serde put between backquotes ("integer `5`" gives "5").
fn backquoted(text: &str) -> &str {
    text.split('`').nth(1).unwrap_or(text)
}

/// The refusal of a body that is not JSON at all, with where it broke.
fn not_json(action: &str, error: &serde_json::Error) -> Error {
    Error::InvalidInput(format!(
        "{action}: the request body is not valid JSON (line {}, column {}): {}",
        error.line(),
        error.column(),
        plain_serde_words(error)
    ))
}

/// serde's wording of a data error ("invalid type: string \"two\",
/// expected u32 at line 1 column 60") in a request's terms ("expected an
/// integer, got the string \"two\""), without the position.
fn plain_serde_words(error: &serde_json::Error) -> String {
    let text = error.to_string();
    let text = match text.rsplit_once(" at line ") {
        Some((head, _)) if error.line() > 0 => head.to_string(),
        _ => text,
    };
    let kind = |serde: &str| -> String {
        let serde = serde.trim();
        match serde {
            "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number (0 or more)".into(),
            "i8" | "i16" | "i32" | "i64" | "isize" => "an integer".into(),
            "f32" | "f64" => "a number".into(),
            "a sequence" | "sequence" => "a list (a JSON array)".into(),
            "a map" | "map" => "an object".into(),
            "a boolean" | "boolean" => "true or false".into(),
            s if s.starts_with("struct ") => "an object".into(),
            s if s.starts_with("integer `") || s.starts_with("floating point `") => {
                format!("the number {}", backquoted(s))
            }
            s if s.starts_with("string ") => format!("the string {}", &s["string ".len()..]),
            s if s.starts_with("boolean `") => backquoted(s).to_string(),
            "unit value" | "null" => "null".into(),
            s => s.to_string(),
        }
    };
    let mismatch = text
        .strip_prefix("invalid type: ")
        .or_else(|| text.strip_prefix("invalid value: "))
        .and_then(|rest| rest.split_once(", expected "));
    if let Some((got, expected)) = mismatch {
        return format!("expected {}, got {}", kind(expected), kind(got));
    }
    if let Some(field) = text
        .strip_prefix("missing field `")
        .and_then(|f| f.strip_suffix('`'))
    {
        return format!("missing the required field {field}");
    }
    text
}

/// Dispatches one ECS action: the one `match` over [`EcsAction`]. The
/// action was parsed at the edge, and the request id is never empty.
pub async fn call(
    raft: &RaftHandle,
    limits: services::ServiceLimits,
    action: EcsAction,
    body: &str,
    request_id: String,
) -> Result<ActionResult> {
    match action {
        EcsAction::CreateCluster => create_cluster(raft, body, request_id).await,
        EcsAction::DeleteCluster => delete_cluster(raft, body, request_id).await,
        EcsAction::DescribeClusters => describe_clusters(raft, body).await,
        EcsAction::ListClusters => list_clusters(raft, body).await,
        EcsAction::RegisterTaskDefinition => {
            tasks::register_task_definition(raft, body, request_id).await
        }
        EcsAction::DescribeTaskDefinition => tasks::describe_task_definition(raft, body).await,
        EcsAction::ListTaskDefinitions => tasks::list_task_definitions(raft, body).await,
        EcsAction::DeregisterTaskDefinition => {
            tasks::deregister_task_definition(raft, body, request_id).await
        }
        EcsAction::DeleteTaskDefinitions => {
            tasks::delete_task_definitions(raft, body, request_id).await
        }
        EcsAction::RunTask => tasks::run_task(raft, body, request_id).await,
        EcsAction::StopTask => tasks::stop_task(raft, body, request_id).await,
        EcsAction::DescribeTasks => tasks::describe_tasks(raft, body).await,
        EcsAction::ExplainTask => tasks::explain_task(raft, body).await,
        EcsAction::ListTasks => tasks::list_tasks(raft, body).await,
        EcsAction::ListContainerInstances => tasks::list_container_instances(raft, body).await,
        EcsAction::DescribeContainerInstances => {
            tasks::describe_container_instances(raft, body).await
        }
        EcsAction::UpdateContainerInstancesState => {
            tasks::update_container_instances_state(raft, body, request_id).await
        }
        EcsAction::CreateService => services::create_service(raft, limits, body, request_id).await,
        EcsAction::UpdateService => services::update_service(raft, limits, body, request_id).await,
        EcsAction::DeleteService => services::delete_service(raft, body, request_id).await,
        EcsAction::DescribeServices => services::describe_services(raft, body).await,
        EcsAction::ListServices => services::list_services(raft, body).await,
    }
}

async fn create_cluster(raft: &RaftHandle, body: &str, request_id: String) -> Result<ActionResult> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Request {
        cluster_name: Option<String>,
        #[serde(default)]
        tags: Vec<Tag>,
    }
    let request: Request = parse("CreateCluster", body)?;
    let cluster_name = request
        .cluster_name
        .unwrap_or_else(|| model::DEFAULT_CLUSTER.to_string());
    model::validate_cluster_name(&cluster_name)?;
    let command = Command::CreateCluster {
        cluster_name: cluster_name.clone().into(),
        tags: request.tags,
        now_ms: now_ms(),
    };
    raft.propose(Proposal {
        request_id,
        command,
    })
    .await?;
    read_now(raft, |state| {
        let cluster = state.active_cluster(&cluster_name)?;
        Ok(json!({ "cluster": cluster_view(state, cluster) }).into())
    })
}

async fn delete_cluster(raft: &RaftHandle, body: &str, request_id: String) -> Result<ActionResult> {
    #[derive(Deserialize)]
    struct Request {
        cluster: String,
    }
    let request: Request = parse("DeleteCluster", body)?;
    let cluster_name = model::cluster_name_from(&request.cluster);
    let command = Command::DeleteCluster {
        cluster_name: cluster_name.clone().into(),
    };
    raft.propose(Proposal {
        request_id,
        command,
    })
    .await?;
    read_now(raft, |state| {
        let cluster = state
            .clusters
            .get(&cluster_name)
            .ok_or_else(|| Error::Internal("a deleted cluster vanished".into()))?;
        Ok(json!({ "cluster": cluster_view(state, cluster) }).into())
    })
}

async fn describe_clusters(raft: &RaftHandle, body: &str) -> Result<ActionResult> {
    #[derive(Deserialize)]
    struct Request {
        #[serde(default)]
        clusters: Vec<String>,
    }
    let request: Request = parse("DescribeClusters", body)?;
    let limit = crate::vocab::limits::MAX_DESCRIBE_CLUSTERS;
    if request.clusters.len() > limit {
        return Err(Error::InvalidInput(crate::vocab::limits::too_many(
            "clusters",
            limit,
            request.clusters.len(),
            "DescribeClusters",
        )));
    }
    let wanted = if request.clusters.is_empty() {
        vec![model::DEFAULT_CLUSTER.to_string()]
    } else {
        request.clusters
    };
    read_linearizable(raft, |state| {
        Ok(described(
            "clusters",
            &wanted,
            |name_or_arn| {
                let cluster = state.clusters.get(&model::cluster_name_from(name_or_arn))?;
                Some(cluster_view(state, cluster))
            },
            |name_or_arn| model::arn("cluster", &model::cluster_name_from(name_or_arn)),
        )
        .into())
    })
    .await
}

/// The ARNs of a cluster's items in `table` that `keep` accepts, in key
/// order: the answer of ECS's list actions.
pub(crate) fn arns_in_cluster<'a, V>(
    table: &'a crate::store::table::Table<V>,
    cluster: &str,
    keep: impl Fn(&V) -> bool,
    arn: fn(&V) -> &str,
) -> Vec<&'a str> {
    table
        .scan_prefix(&format!("{cluster}/"))
        .map(|(_, item)| item)
        .filter(|item| keep(item))
        .map(arn)
        .collect()
}

/// ECS's answer to a describe action: under `key`, each wanted item that
/// `find` finds, and under `failures` a `MISSING` failure naming
/// `missing_arn` of each one it does not.
pub(crate) fn described(
    key: &str,
    wanted: &[String],
    mut find: impl FnMut(&str) -> Option<Value>,
    missing_arn: impl Fn(&str) -> String,
) -> Value {
    let mut found = Vec::new();
    let mut failures = Vec::new();
    for name in wanted {
        match find(name) {
            Some(item) => found.push(item),
            None => failures.push(json!({"arn": missing_arn(name), "reason": "MISSING"})),
        }
    }
    let mut answer = serde_json::Map::new();
    answer.insert(key.to_string(), Value::Array(found));
    answer.insert("failures".to_string(), Value::Array(failures));
    Value::Object(answer)
}

async fn list_clusters(raft: &RaftHandle, body: &str) -> Result<ActionResult> {
    let paging: Paging = parse("ListClusters", body)?;
    read_linearizable(raft, |state| {
        let arns: Vec<&str> = state
            .clusters
            .values()
            .filter(|c| c.status == "ACTIVE")
            .map(|c| c.cluster_arn.as_str())
            .collect();
        Ok(paging.answer("clusterArns", arns)?.into())
    })
    .await
}

/// ECS's paging of a list action: at most `maxResults` ARNs a page (1 to
/// 100; 100 when absent), and `nextToken` to ask for the page after the one
/// that returned it. Flattened into each list action's request.
#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Paging {
    next_token: Option<String>,
    max_results: Option<i64>,
}

impl Paging {
    /// ECS's page size when `maxResults` is absent, and its largest.
    pub(crate) const MAX_RESULTS: usize = 100;

    /// The answer of a list action: one page of `arns` (the whole list, in
    /// its order) under `key`, and a `nextToken` when more remain. A token
    /// names the last ARN of its page, so the next page starts right after
    /// that ARN wherever it now is (or, if it has gone, after the ARNs
    /// before it in order).
    pub(crate) fn answer(&self, key: &str, arns: Vec<&str>) -> Result<Value> {
        let size = match self.max_results {
            None => Self::MAX_RESULTS,
            Some(n) if (1..=Self::MAX_RESULTS as i64).contains(&n) => n as usize,
            Some(n) => {
                return Err(Error::InvalidInput(format!(
                    "maxResults: must be between 1 and {}, got {n}",
                    Self::MAX_RESULTS
                )))
            }
        };
        let start = match self.next_token.as_deref().filter(|t| !t.is_empty()) {
            None => 0,
            Some(token) => {
                let after = decode_token(token).ok_or_else(|| {
                    Error::InvalidInput(format!(
                        "nextToken: {token:?} is not a token this server gave out: list again without it"
                    ))
                })?;
                match arns.iter().position(|arn| *arn == after) {
                    Some(i) => i + 1,
                    None => arns.iter().take_while(|arn| **arn < after.as_str()).count(),
                }
            }
        };
        let page: Vec<&str> = arns.iter().skip(start).take(size).copied().collect();
        let mut answer = serde_json::Map::new();
        if start + page.len() < arns.len() {
            if let Some(last) = page.last() {
                answer.insert("nextToken".into(), Value::String(encode_token(last)));
            }
        }
        answer.insert(key.to_string(), json!(page));
        Ok(Value::Object(answer))
    }
}

/// A page token: the hex of the page's last ARN behind a version tag.
fn encode_token(last_arn: &str) -> String {
    let mut token = String::from("orc1-");
    for byte in last_arn.bytes() {
        token.push_str(&format!("{byte:02x}"));
    }
    token
}

fn decode_token(token: &str) -> Option<String> {
    let hex = token.strip_prefix("orc1-")?;
    if hex.len() % 2 != 0 {
        return None;
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

/// The cluster a request names (name or ARN), `default` when it names none.
pub(crate) fn cluster_of(cluster: &Option<String>) -> String {
    model::cluster_name_from(cluster.as_deref().unwrap_or(model::DEFAULT_CLUSTER))
}

/// Proposes one command under the request's id and waits for its outcome.
pub(crate) async fn propose(
    raft: &RaftHandle,
    request_id: String,
    command: Command,
) -> Result<serde_json::Value> {
    raft.propose(Proposal {
        request_id,
        command,
    })
    .await
}

/// Reads after a ReadIndex barrier: linearizable.
pub(crate) async fn read_linearizable<R>(
    raft: &RaftHandle,
    f: impl FnOnce(&State) -> Result<R>,
) -> Result<R> {
    raft.read_barrier().await?;
    raft.store().read(f)
}

/// Reads the local state right after this server applied our own write.
fn read_now<R>(raft: &RaftHandle, f: impl FnOnce(&State) -> Result<R>) -> Result<R> {
    raft.store().read(f)
}

/// A cluster as ECS shows it, with its derived counts.
pub fn cluster_view(state: &State, cluster: &Cluster) -> Value {
    let counts = state.cluster_counts(&cluster.cluster_name);
    json!({
        "clusterArn": cluster.cluster_arn,
        "clusterName": cluster.cluster_name,
        "status": cluster.status,
        "registeredContainerInstancesCount": counts.registered_container_instances_count,
        "runningTasksCount": counts.running_tasks_count,
        "pendingTasksCount": counts.pending_tasks_count,
        "activeServicesCount": counts.active_services_count,
        "statistics": [],
        "tags": cluster.tags,
        "settings": [{"name": "containerInsights", "value": "disabled"}],
        "capacityProviders": [],
        "defaultCapacityProviderStrategy": [],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request with the shapes ECS's requests have.
    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    #[allow(dead_code)]
    struct Shapes {
        cluster_name: String,
        #[serde(default)]
        desired_count: Option<u32>,
        #[serde(default)]
        tasks: Vec<String>,
        #[serde(default)]
        containers: Vec<Container>,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Container {
        memory: Option<i64>,
    }

    fn refusal(body: &str) -> String {
        match parse::<Shapes>("CreateService", body) {
            Err(Error::InvalidInput(message)) => message,
            other => panic!("{body} was not refused as invalid input: {other:?}"),
        }
    }

    #[test]
    fn a_field_of_the_wrong_type_is_named_with_what_was_expected() {
        assert_eq!(
            refusal(r#"{"clusterName": "a", "desiredCount": "two"}"#),
            r#"CreateService: desiredCount: expected a whole number (0 or more), got the string "two""#
        );
        assert_eq!(
            refusal(r#"{"clusterName": 5}"#),
            "CreateService: clusterName: expected a string, got the number 5"
        );
        assert_eq!(
            refusal(r#"{"clusterName": "a", "tasks": "abc"}"#),
            r#"CreateService: tasks: expected a list (a JSON array), got the string "abc""#
        );
        assert_eq!(
            refusal(r#"{"clusterName": "a", "containers": [{}, {"memory": "lots"}]}"#),
            r#"CreateService: containers[1].memory: expected an integer, got the string "lots""#
        );
        assert_eq!(
            refusal(r#"{"clusterName": "a", "desiredCount": -1}"#),
            "CreateService: desiredCount: expected a whole number (0 or more), got the number -1"
        );
        assert_eq!(
            refusal(r#""x""#),
            r#"CreateService: the request body: expected an object, got the string "x""#
        );
    }

    #[test]
    fn a_missing_field_and_broken_json_are_named() {
        assert_eq!(
            refusal("{}"),
            "CreateService: the request body: missing the required field clusterName"
        );
        let broken = refusal(r#"{"clusterName": "a""#);
        assert!(
            broken.starts_with(
                "CreateService: the request body is not valid JSON (line 1, column 19)"
            ),
            "{broken}"
        );
        let trailing = refusal(r#"{"clusterName": "a"} x"#);
        assert!(trailing.contains("not valid JSON"), "{trailing}");
        assert!(parse::<Shapes>("CreateService", r#"{"clusterName": "a"}"#).is_ok());
    }

    fn paging(next_token: Option<String>, max_results: Option<i64>) -> Paging {
        Paging {
            next_token,
            max_results,
        }
    }

    #[test]
    fn pages_walk_the_whole_list_once() {
        let arns: Vec<String> = (0..250).map(|i| format!("arn:t/{i:03}")).collect();
        let arns: Vec<&str> = arns.iter().map(String::as_str).collect();
        let mut seen = Vec::new();
        let mut token = None;
        loop {
            let answer = paging(token, None)
                .answer("taskArns", arns.clone())
                .unwrap();
            let page = answer["taskArns"].as_array().unwrap();
            assert!(page.len() <= Paging::MAX_RESULTS);
            seen.extend(page.iter().map(|a| a.as_str().unwrap().to_string()));
            token = answer["nextToken"].as_str().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        assert_eq!(seen, arns);
    }

    #[test]
    fn a_page_resumes_after_its_token_even_when_that_item_went() {
        let first = paging(None, Some(2))
            .answer("k", vec!["a", "b", "c", "d"])
            .unwrap();
        assert_eq!(first["k"], json!(["a", "b"]));
        let token = first["nextToken"].as_str().unwrap().to_string();
        let next = paging(Some(token), Some(2))
            .answer("k", vec!["a", "c", "d"])
            .unwrap();
        assert_eq!(next["k"], json!(["c", "d"]));
        assert!(next.get("nextToken").is_none(), "{next}");
    }

    #[test]
    fn bad_paging_is_refused_naming_the_field() {
        let error = paging(None, Some(0)).answer("k", vec![]).unwrap_err();
        assert!(error.to_string().starts_with("maxResults:"), "{error}");
        let error = paging(Some("zz".into()), None)
            .answer("k", vec![])
            .unwrap_err();
        assert!(error.to_string().starts_with("nextToken:"), "{error}");
    }
}
