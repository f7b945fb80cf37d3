//! A sorted in-memory table that remembers which rows changed, so the store
//! can persist exactly those rows after an apply.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// Rows by key, plus the keys changed since the last `take_dirty`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Table<V> {
    /// The rows, sorted by key so iteration is deterministic.
    rows: BTreeMap<String, V>,
    /// Keys inserted or removed since the store last persisted this table.
    #[serde(skip)]
    dirty: BTreeSet<String>,
}

impl<V> Default for Table<V> {
    fn default() -> Self {
        Table {
            rows: BTreeMap::new(),
            dirty: BTreeSet::new(),
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

    /// A row to change in place; it is marked changed.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        let row = self.rows.get_mut(key)?;
        self.dirty.insert(key.to_string());
        Some(row)
    }

    /// Inserts or replaces a row.
    pub fn insert(&mut self, key: impl Into<String>, value: V) {
        let key = key.into();
        self.dirty.insert(key.clone());
        self.rows.insert(key, value);
    }

    /// Removes a row.
    pub fn remove(&mut self, key: &str) -> Option<V> {
        let removed = self.rows.remove(key);
        if removed.is_some() {
            self.dirty.insert(key.to_string());
        }
        removed
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

    /// Loads a row read back from disk without marking it changed.
    pub fn load(&mut self, key: String, value: V) {
        self.rows.insert(key, value);
    }

    /// The changed keys with their current value (`None` = removed), and
    /// forgets them.
    pub fn take_dirty(&mut self) -> Vec<(String, Option<&V>)> {
        let dirty = std::mem::take(&mut self.dirty);
        dirty
            .into_iter()
            .map(|key| {
                let value = self.rows.get(&key);
                (key, value)
            })
            .collect()
    }

    /// Forgets the changed keys (after a snapshot restore rewrote everything).
    pub fn clear_dirty(&mut self) {
        self.dirty.clear();
    }
}
