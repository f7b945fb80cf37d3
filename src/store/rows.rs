//! Compact stored forms of rows that are large and rarely read whole.
//!
//! A task-definition revision is kept as its compact ECS JSON text, with
//! its status beside it: as a tree of typed fields it takes about three
//! times the size of its text (a heap allocation per name, value and
//! command word, a map node per label), and 10,000 revisions are a normal
//! lab's history. It is parsed when a task is placed or a revision is read;
//! a checkpoint holds (and loads) the text as it is, so the checkpoint's
//! format is the same as when the typed tree was kept.
//!
//! A remembered answer to a request that created rows (RegisterTaskDefinition,
//! RunTask, a service's launch) is kept as a `Receipt`: the keys of what it
//! created, from which the answer is rendered again exactly as first given
//! (those rows only change in fields a receipt resets to how they were
//! created), instead of a copy of the rows' JSON. Pure data: no I/O.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::command::Outcome;
use super::state::State;
use crate::model::{Task, TaskStatus};
use crate::taskdef::{TaskDefinition, TaskDefinitionStatus};
use crate::Error;

/// A registered task-definition revision as stored.
#[derive(Clone, Debug)]
pub struct StoredTaskDefinition {
    /// ACTIVE, INACTIVE or DELETE_IN_PROGRESS (also in the JSON).
    status: TaskDefinitionStatus,
    /// The revision's ECS JSON, compact; shared by the answer that
    /// registered it until the revision changes.
    json: Arc<RawValue>,
}

/// Only the status of a stored revision's JSON.
#[derive(Deserialize)]
struct StatusOnly {
    #[serde(default)]
    status: Option<TaskDefinitionStatus>,
}

impl StoredTaskDefinition {
    /// The stored form of `definition`.
    pub fn of(definition: &TaskDefinition) -> Result<StoredTaskDefinition, Error> {
        let json = serde_json::value::to_raw_value(definition)
            .map_err(|e| Error::Internal(format!("cannot store a task definition: {e}")))?;
        Ok(StoredTaskDefinition {
            status: definition.status.unwrap_or(TaskDefinitionStatus::Active),
            json: Arc::from(json),
        })
    }

    /// Its status.
    pub fn status(&self) -> TaskDefinitionStatus {
        self.status
    }

    /// The revision's JSON text, as ECS describes it.
    pub fn json(&self) -> &RawValue {
        &self.json
    }

    /// The revision parsed.
    pub fn definition(&self) -> Result<TaskDefinition, Error> {
        serde_json::from_str(self.json.get())
            .map_err(|e| Error::Internal(format!("a stored task definition is undecodable: {e}")))
    }
}

impl PartialEq for StoredTaskDefinition {
    fn eq(&self, other: &Self) -> bool {
        self.status == other.status && self.json.get() == other.json.get()
    }
}

impl Serialize for StoredTaskDefinition {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.json.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for StoredTaskDefinition {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let json = Box::<RawValue>::deserialize(deserializer)?;
        let status = serde_json::from_str::<StatusOnly>(json.get())
            .map_err(serde::de::Error::custom)?
            .status
            .unwrap_or(TaskDefinitionStatus::Active);
        Ok(StoredTaskDefinition {
            status,
            json: Arc::from(json),
        })
    }
}

/// What a remembered answer is rendered again from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Receipt {
    /// `{"taskDefinition": …}` of the revision registered under this key,
    /// as it was registered (ACTIVE, not deregistered).
    TaskDefinition(String),
    /// `{"tasks": […], "failures": …}`: the tasks created under these keys
    /// (`cluster/id`, in the answer's order), each as it was created, and
    /// the failures as given.
    Tasks {
        /// Keys of the tasks created.
        tasks: Vec<String>,
        /// Those created waiting for room (PROVISIONING; the others were
        /// created PENDING on an instance).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        waiting: Vec<String>,
        /// The answer's failures.
        failures: serde_json::Value,
    },
}

impl Receipt {
    /// A receipt that renders `answer` again, if `answer` has a shape a
    /// receipt can render and `state` renders it back exactly now.
    pub fn of(state: &State, answer: &serde_json::Value) -> Option<Receipt> {
        let object = answer.as_object()?;
        let receipt = if let (1, Some(definition)) = (object.len(), object.get("taskDefinition")) {
            let family = definition.get("family")?.as_str()?;
            let revision = definition.get("revision")?.as_i64()?;
            Receipt::TaskDefinition(super::ecs::task_definition_key(family, revision))
        } else if let (2, Some(tasks), Some(failures)) =
            (object.len(), object.get("tasks"), object.get("failures"))
        {
            let mut keys = Vec::new();
            let mut waiting = Vec::new();
            for task in tasks.as_array()? {
                let (_, key) = task.get("taskArn")?.as_str()?.split_once(":task/")?;
                match task.get("lastStatus")?.as_str()? {
                    "PENDING" => {}
                    "PROVISIONING" => waiting.push(key.to_string()),
                    _ => return None,
                }
                keys.push(key.to_string());
            }
            Receipt::Tasks {
                tasks: keys,
                waiting,
                failures: failures.clone(),
            }
        } else {
            return None;
        };
        // Kept only when it gives back this very answer.
        (receipt.render(state).ok().as_ref() == Some(answer)).then_some(receipt)
    }

    /// The answer as first given.
    pub fn render(&self, state: &State) -> Outcome {
        match self {
            Receipt::TaskDefinition(key) => {
                let mut definition = state
                    .task_definitions
                    .get(key)
                    .ok_or_else(|| forgotten(key))?
                    .definition()?;
                definition.status = Some(TaskDefinitionStatus::Active);
                definition.deregistered_at = None;
                Ok(serde_json::json!({ "taskDefinition": definition }))
            }
            Receipt::Tasks {
                tasks: keys,
                waiting,
                failures,
            } => {
                let mut tasks = Vec::with_capacity(keys.len());
                for key in keys {
                    let task = state.tasks.get(key).ok_or_else(|| forgotten(key))?;
                    tasks.push(as_created(task, !waiting.contains(key), failures));
                }
                Ok(serde_json::json!({ "tasks": tasks, "failures": failures }))
            }
        }
    }
}

/// A retried request whose rows are gone (pruned stopped tasks).
fn forgotten(key: &str) -> Error {
    Error::Conflict(format!(
        "this request was applied, but its answer can no longer be given: {key} was removed since (stopped tasks are kept an hour); describe what it created instead"
    ))
}

/// A task as RunTask created it: what the agent, stops and placement
/// changed since is reset (the rest of a task never changes).
fn as_created(task: &Task, placed: bool, failures: &serde_json::Value) -> Task {
    let mut created = task.clone();
    created.version = 1;
    created.last_status = if placed {
        TaskStatus::Pending
    } else {
        TaskStatus::Provisioning
    };
    created.desired_status = TaskStatus::Running;
    if !placed {
        created.container_instance_arn = None;
        created.placement_reason = failures.as_array().and_then(|failures| {
            failures
                .iter()
                .find(|f| f.get("arn").and_then(|a| a.as_str()) == Some(task.task_arn.as_str()))
                .and_then(|f| f.get("reason")?.as_str())
                .map(str::to_string)
        });
    } else {
        created.placement_reason = None;
    }
    created.stop_code = None;
    created.stopped_reason = None;
    created.started_at = None;
    created.stopping_at = None;
    created.stopped_at = None;
    created.health_status = "UNKNOWN".into();
    for container in &mut created.containers {
        container.runtime_id = None;
        container.last_status = "PENDING".into();
        container.exit_code = None;
        container.reason = None;
        container.network_bindings.clear();
        container.health_status = "UNKNOWN".into();
    }
    created
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_revision_reads_back_as_registered_and_serializes_as_its_json() {
        let mut definition: TaskDefinition = serde_json::from_value(serde_json::json!({
            "family": "web",
            "containerDefinitions": [{"name": "web", "image": "busybox", "memory": 64,
                "environment": [{"name": "A", "value": "1"}]}],
        }))
        .unwrap();
        definition.status = Some(TaskDefinitionStatus::Inactive);
        let stored = StoredTaskDefinition::of(&definition).unwrap();
        assert_eq!(stored.status(), TaskDefinitionStatus::Inactive);
        assert_eq!(stored.definition().unwrap(), definition);
        let text = serde_json::to_string(&stored).unwrap();
        assert_eq!(text, serde_json::to_string(&definition).unwrap());
        let loaded: StoredTaskDefinition = serde_json::from_str(&text).unwrap();
        assert_eq!(loaded, stored);
        assert!(serde_json::from_str::<StoredTaskDefinition>("{\"status\": 3}").is_err());
    }
}
