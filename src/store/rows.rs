//! Compact stored forms of rows that are large and rarely read whole.
//!
//! A task-definition revision is kept as its compact ECS JSON text, with
//! its status beside it: as a tree of typed fields it takes about three
//! times the size of its text (a heap allocation per name, value and
//! command word, a map node per label), and 10,000 revisions are a normal
//! lab's history. It is parsed when a task is placed or a revision is read;
//! a checkpoint holds (and loads) the text as it is, so the checkpoint's
//! format is the same as when the typed tree was kept. Pure data: no I/O.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

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
        serde_json::from_str(self.json.get()).map_err(|e| {
            Error::Internal(format!("a stored task definition is undecodable: {e}"))
        })
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
