//! What a connector tells the host about itself.

/// A task type a connector serves, keyed by name and version
/// (`flyteidl2.connector.TaskCategory`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct TaskCategory {
    /// The task type, as in the task template's `type`, e.g. `"bigquery_query_job_task"`.
    pub name: String,
    /// The task type version, as in the template's `task_type_version`; usually 0.
    pub version: i32,
}

impl TaskCategory {
    /// A task type at version 0.
    pub fn new(name: impl Into<String>) -> Self {
        Self::with_version(name, 0)
    }

    /// A task type at the given version.
    pub fn with_version(name: impl Into<String>, version: i32) -> Self {
        Self {
            name: name.into(),
            version,
        }
    }
}

/// A connector's name and the task types it serves.
///
/// ```
/// use flyte_connector_sdk::Metadata;
///
/// let metadata = Metadata::new("BigQuery Connector")
///     .task_type("bigquery_query_job_task")
///     .task_type_version("bigquery_query_job_task", 1);
/// assert_eq!(metadata.task_categories.len(), 2);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Metadata {
    /// Display name, e.g. `"BigQuery Connector"`; `ListConnectors` groups task
    /// types under it.
    pub name: String,
    /// The task types this connector serves.
    pub task_categories: Vec<TaskCategory>,
}

impl Metadata {
    /// A connector with this name and no task types yet.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            task_categories: Vec::new(),
        }
    }

    /// Adds a task type at version 0.
    pub fn task_type(self, name: impl Into<String>) -> Self {
        self.task_category(TaskCategory::new(name))
    }

    /// Adds a task type at the given version.
    pub fn task_type_version(self, name: impl Into<String>, version: i32) -> Self {
        self.task_category(TaskCategory::with_version(name, version))
    }

    /// Adds a task category.
    pub fn task_category(mut self, category: TaskCategory) -> Self {
        self.task_categories.push(category);
        self
    }
}
