//! Projects and their trusted state: requests and reports.

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::ledger::Event;
use crate::project::{self, Project, Registry, Resolution, StateEntry};
use crate::Store;

/// Register a project.
#[derive(clap::Args, Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectAddRequest {
    /// The canonical id (lowercase letters, digits, `_`, `.`, `-`).
    pub id: String,
    /// Another name for it (repeatable; case-insensitive).
    #[arg(long = "alias")]
    #[serde(default)]
    #[schemars(description = "Other names for it (case-insensitive).")]
    pub aliases: Vec<String>,
    /// What it is.
    #[arg(long)]
    #[serde(default)]
    pub description: Option<String>,
}

/// What registering a project reports.
#[derive(Debug, Clone, Serialize)]
pub struct ProjectAddReport {
    /// The project as registered.
    pub project: Project,
    /// The PROJECT_REGISTERED event.
    pub event: Event,
}

/// Registers a project.
pub fn project_add(
    store: &Store,
    req: &ProjectAddRequest,
    key: Option<&str>,
) -> Result<ProjectAddReport> {
    let (p, c) = project::add(
        store,
        &req.id,
        &req.aliases,
        req.description.as_deref(),
        key,
    )?;
    Ok(ProjectAddReport {
        project: p,
        event: c.event,
    })
}

/// List the registered projects (takes no arguments).
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectListRequest {}

/// The registered projects.
#[derive(Debug, Clone, Serialize)]
pub struct ProjectListReport {
    /// The projects, with their aliases.
    pub projects: Vec<Project>,
}

/// Lists the registered projects.
pub fn project_list(store: &Store) -> Result<ProjectListReport> {
    Ok(ProjectListReport {
        projects: Registry::at_tip(store)?.projects,
    })
}

/// Show the canonical id a name resolves to.
#[derive(clap::Args, Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectResolveRequest {
    /// An id or alias (unknown names pass through unchanged).
    pub name: String,
}

/// Resolves a project name.
pub fn project_resolve(store: &Store, req: &ProjectResolveRequest) -> Result<Resolution> {
    project::resolve(store, &req.name)
}

/// Set a trusted-state entry.
#[derive(clap::Args, Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StateSetRequest {
    /// The project (id or alias).
    pub project: String,
    /// The category.
    pub category: String,
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
    /// Where it comes from.
    #[arg(long)]
    #[serde(default)]
    pub source: Option<String>,
}

/// What setting a state entry reports.
#[derive(Debug, Clone, Serialize)]
pub struct StateSetReport {
    /// The canonical project id.
    pub project: String,
    /// The entry written.
    pub entry: StateEntry,
    /// The PROJECT_STATE_SET event.
    pub event: Event,
}

/// Sets a trusted-state entry (superseding the active one for its key).
pub fn state_set(
    store: &Store,
    req: &StateSetRequest,
    key: Option<&str>,
) -> Result<StateSetReport> {
    let (entry, c) = project::state_set(
        store,
        &req.project,
        &req.category,
        &req.key,
        &req.value,
        req.source.as_deref(),
        key,
    )?;
    Ok(StateSetReport {
        project: c.event.payload["project"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        entry,
        event: c.event,
    })
}

/// The active trusted state of a project.
#[derive(clap::Args, Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StateGetRequest {
    /// The project (id or alias).
    pub project: String,
    /// Only this category.
    #[arg(long)]
    #[serde(default)]
    pub category: Option<String>,
}

/// A project's active trusted state.
#[derive(Debug, Clone, Serialize)]
pub struct StateGetReport {
    /// The canonical project id.
    pub project: String,
    /// The active entries, sorted by category and key.
    pub entries: Vec<StateEntry>,
}

/// Reads a project's active trusted state.
pub fn state_get(store: &Store, req: &StateGetRequest) -> Result<StateGetReport> {
    let (project, entries) = project::state_get(store, &req.project, req.category.as_deref())?;
    Ok(StateGetReport { project, entries })
}

/// Invalidate a trusted-state entry.
#[derive(clap::Args, Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StateInvalidateRequest {
    /// The project (id or alias).
    pub project: String,
    /// The category.
    pub category: String,
    /// The key.
    pub key: String,
}

/// What invalidating a state entry reports.
#[derive(Debug, Clone, Serialize)]
pub struct StateInvalidateReport {
    /// The PROJECT_STATE_INVALIDATED event.
    pub event: Event,
}

/// Invalidates a trusted-state entry (kept in the file and in history).
pub fn state_invalidate(
    store: &Store,
    req: &StateInvalidateRequest,
    key: Option<&str>,
) -> Result<StateInvalidateReport> {
    let c = project::state_invalidate(store, &req.project, &req.category, &req.key, key)?;
    Ok(StateInvalidateReport { event: c.event })
}
