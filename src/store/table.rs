//! A sorted in-memory table: the rows of one kind of ECS object, by key.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Rows by key.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Table<V> {
    /// The rows, sorted by key so iteration is deterministic.
    rows: BTreeMap<String, V>,
}

impl<V> Default for Table<V> {
    fn default() -> Self {
        Table {
            rows: BTreeMap::new(),
        }
    }
}

impl<V: PartialEq> PartialEq for Table<V> {
    fn eq(&self, other: &Self) -> bool {
        self.rows == other.rows
    }
}

impl<V> Table<V> {
    /// The row under `key`.
    pub fn get(&self, key: &str) -> Option<&V> {
        self.rows.get(key)
    }

    /// A row to change in place.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        self.rows.get_mut(key)
    }

    /// Inserts or replaces a row.
    pub fn insert(&mut self, key: impl Into<String>, value: V) {
        self.rows.insert(key.into(), value);
    }

    /// Removes a row.
    pub fn remove(&mut self, key: &str) -> Option<V> {
        self.rows.remove(key)
    }

    /// Whether a row exists.
    pub fn contains(&self, key: &str) -> bool {
        self.rows.contains_key(key)
    }

    /// The number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the table has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Rows in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &V)> {
        self.rows.iter()
    }

    /// Values in key order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.rows.values()
    }

    /// Rows whose key starts with `prefix`, in key order.
    pub fn scan_prefix<'a>(
        &'a self,
        prefix: &str,
    ) -> impl Iterator<Item = (&'a String, &'a V)> + 'a {
        let prefix = prefix.to_string();
        self.rows
            .range(prefix.clone()..)
            .take_while(move |(key, _)| key.starts_with(&prefix))
    }
}
