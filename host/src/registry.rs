//! The connectors being served, keyed by (task type, version).

use std::collections::BTreeMap;

use crate::connector::{SharedConnector, TaskCategory};

/// Why a connector could not be registered.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Another connector already serves this task type and version.
    #[error(
        "task type {category} of {origin} is already served by connector \"{existing}\" from \
         {existing_origin}"
    )]
    DuplicateTaskType {
        /// The task type in question.
        category: TaskCategory,
        /// Where the connector that tried to register it came from.
        origin: String,
        /// The connector that has it.
        existing: String,
        /// Where that one came from.
        existing_origin: String,
    },
    /// The connector declared no task types, so it could never be called.
    #[error("connector \"{connector}\" from {origin} declares no task types")]
    NoTaskTypes {
        /// The connector's name.
        connector: String,
        /// Where it came from.
        origin: String,
    },
}

/// Connectors by task category. Cheap to clone: connectors are shared handles.
#[derive(Clone, Default)]
pub struct Registry {
    by_category: BTreeMap<TaskCategory, SharedConnector>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers every task type of `connector`. Nothing is registered when
    /// any of them is taken.
    pub fn register(&mut self, connector: SharedConnector) -> Result<(), RegistryError> {
        let info = connector.info();
        if info.task_categories.is_empty() {
            return Err(RegistryError::NoTaskTypes {
                connector: info.name.clone(),
                origin: connector.source().to_owned(),
            });
        }
        for category in &info.task_categories {
            if let Some(existing) = self.by_category.get(category) {
                return Err(RegistryError::DuplicateTaskType {
                    category: category.clone(),
                    origin: connector.source().to_owned(),
                    existing: existing.info().name.clone(),
                    existing_origin: existing.source().to_owned(),
                });
            }
        }
        for category in &info.task_categories {
            self.by_category
                .insert(category.clone(), SharedConnector::clone(&connector));
        }
        Ok(())
    }

    /// The connector serving `category`.
    pub fn get(&self, category: &TaskCategory) -> Option<&SharedConnector> {
        self.by_category.get(category)
    }

    /// Whether some connector serves task type `name`, in any version.
    pub fn serves_task_type(&self, name: &str) -> bool {
        self.by_category
            .keys()
            .any(|category| category.name == name)
    }

    /// Connector names with the task categories each serves, sorted by name.
    pub fn connectors(&self) -> BTreeMap<String, Vec<TaskCategory>> {
        let mut grouped: BTreeMap<String, Vec<TaskCategory>> = BTreeMap::new();
        for (category, connector) in &self.by_category {
            grouped
                .entry(connector.info().name.clone())
                .or_default()
                .push(category.clone());
        }
        grouped
    }

    /// Every registered (task category, connector) pair, sorted by category.
    pub fn entries(&self) -> impl Iterator<Item = (&TaskCategory, &SharedConnector)> {
        self.by_category.iter()
    }

    /// Whether nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.by_category.is_empty()
    }
}
