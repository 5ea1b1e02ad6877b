//! Projects, their aliases, and trusted project state.
//!
//! The registry (`registry/projects.yaml`) maps every project id and alias to
//! one canonical id. Every entry point that takes a project name passes it
//! through [`Registry::canonicalize`] before storing or querying: a match is
//! case-insensitive on the id or any alias; an unknown name passes through
//! unchanged. No alias may equal another project's id or alias.
//!
//! Trusted state (`state/<project>.yaml`) is curated by hand through explicit
//! commands only. Setting a key supersedes its previous active entry and
//! invalidating marks it invalid: entries are never removed, so the file and
//! its history keep everything.

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::{Error, Result};
use crate::event::rfc3339;
use crate::ledger::{EventDraft, EventType};
use crate::store::{Changes, Committed, Mutation, Snapshot, Store};
use crate::{layout, schema};

/// A registered project.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Project {
    /// The canonical id.
    pub id: String,
    /// Other names that mean this project.
    pub aliases: Vec<String>,
    /// What it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// When it was registered.
    pub created_at: String,
}

/// The project registry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Registry {
    /// Schema version.
    #[serde(rename = "_schema_version")]
    pub schema_version: String,
    /// Registered projects, sorted by id.
    pub projects: Vec<Project>,
}

impl Registry {
    /// Reads the registry from a snapshot (empty when there is none).
    pub fn read(snap: &Snapshot<'_>) -> Result<Registry> {
        Self::parse(snap.read(layout::REGISTRY)?)
    }

    /// Reads the registry at the tip.
    pub fn at_tip(store: &Store) -> Result<Registry> {
        Self::read(&store.snapshot()?)
    }

    fn parse(bytes: Option<Vec<u8>>) -> Result<Registry> {
        let Some(bytes) = bytes else {
            return Ok(Registry {
                schema_version: schema::SCHEMA_VERSION.into(),
                projects: Vec::new(),
            });
        };
        schema::load("project_registry", layout::REGISTRY, &bytes)
    }

    /// The project a name means (id or alias, case-insensitive).
    pub fn find(&self, name: &str) -> Option<&Project> {
        let name = name.trim();
        self.projects.iter().find(|p| {
            p.id.eq_ignore_ascii_case(name)
                || p.aliases.iter().any(|a| a.eq_ignore_ascii_case(name))
        })
    }

    /// The canonical id for a name; unknown names pass through unchanged.
    pub fn canonicalize(&self, name: &str) -> String {
        match self.find(name) {
            Some(p) => p.id.clone(),
            None => name.to_string(),
        }
    }

    pub(crate) fn to_yaml(&self) -> String {
        schema::to_yaml(&serde_json::to_value(self).expect("registries serialize"))
    }
}

/// Registers a project (PROJECT_REGISTERED).
pub fn add(
    store: &Store,
    id: &str,
    aliases: &[String],
    description: Option<&str>,
    key: Option<&str>,
) -> Result<(Project, Committed)> {
    let committed = store.transact(
        crate::idempotency::keyed(key, "project.add", || {
            vec![json!(id), json!(aliases), json!(description)]
        })
        .as_ref(),
        |snap| {
            let mut registry = Registry::read(snap)?;
            let id = id.trim().to_string();
            if let Some(existing) = registry.find(&id) {
                return Err(Error::Conflict {
                    subject: format!("project {id}"),
                    rule: "project_unique",
                    message: format!("the name is already taken by project {}", existing.id),
                });
            }
            let mut names: Vec<String> = vec![id.to_ascii_lowercase()];
            for (i, alias) in aliases.iter().enumerate() {
                if let Some(other) = registry.find(alias) {
                    return Err(Error::Conflict {
                        subject: format!("alias {alias:?}"),
                        rule: "alias_unique",
                        message: format!(
                            "collides with project {}'s id or aliases (--alias #{})",
                            other.id,
                            i + 1
                        ),
                    });
                }
                let lower = alias.trim().to_ascii_lowercase();
                if names.contains(&lower) {
                    return Err(Error::Conflict {
                        subject: format!("alias {alias:?}"),
                        rule: "alias_unique",
                        message: "given twice, or equal to the project's own id".into(),
                    });
                }
                names.push(lower);
            }
            let project = Project {
                id: id.clone(),
                aliases: aliases.iter().map(|a| a.trim().to_string()).collect(),
                description: description.map(str::to_string),
                created_at: rfc3339(snap.now()),
            };
            registry.projects.push(project.clone());
            registry.projects.sort_by(|a, b| a.id.cmp(&b.id));
            let mut changes = Changes::new();
            changes.insert(
                layout::REGISTRY.into(),
                Some(registry.to_yaml().into_bytes()),
            );
            Ok(Mutation {
                tags: Vec::new(),
                changes,
                event: EventDraft::new(
                    EventType::ProjectRegistered,
                    format!("register project {id}"),
                )
                .payload(json!({"project": id, "aliases": project.aliases})),
            })
        },
    )?;
    let project_id = committed.event.payload["project"]
        .as_str()
        .unwrap_or(id)
        .to_string();
    let registry = Registry::at_tip(store)?;
    let project = registry
        .find(&project_id)
        .cloned()
        .ok_or_else(|| Error::NotFound {
            what: format!("project {project_id}"),
        })?;
    Ok((project, committed))
}

/// How a name resolves through the registry.
#[derive(Debug, Clone, Serialize)]
pub struct Resolution {
    /// The name asked about.
    pub input: String,
    /// The canonical id (the input itself when unregistered).
    pub canonical: String,
    /// Whether the name is registered (as an id or alias).
    pub registered: bool,
}

/// Resolves a project name at the tip.
pub fn resolve(store: &Store, name: &str) -> Result<Resolution> {
    let registry = Registry::at_tip(store)?;
    Ok(Resolution {
        input: name.to_string(),
        canonical: registry.canonicalize(name),
        registered: registry.find(name).is_some(),
    })
}

/// The status of a trusted-state entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum EntryStatus {
    Active,
    Superseded,
    Invalid,
}

/// One curated fact about a project.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct StateEntry {
    pub category: String,
    pub key: String,
    pub value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub status: EntryStatus,
    pub updated_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superseded_at: Option<String>,
}

/// A project's trusted state file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectState {
    /// Schema version.
    #[serde(rename = "_schema_version")]
    pub schema_version: String,
    /// The canonical project.
    pub project: String,
    /// Every entry ever set, in order.
    pub entries: Vec<StateEntry>,
}

fn read_state(snap: &Snapshot<'_>, project: &str) -> Result<ProjectState> {
    let path = layout::project_state(project);
    match snap.read(&path)? {
        Some(bytes) => schema::load("project_state", &path, &bytes),
        None => Ok(ProjectState {
            schema_version: schema::SCHEMA_VERSION.into(),
            project: project.to_string(),
            entries: Vec::new(),
        }),
    }
}

/// Ends the active entry for a key (superseded or invalid, kept in the
/// file); returns its value when there was one.
fn retire(
    state: &mut ProjectState,
    category: &str,
    key: &str,
    to: EntryStatus,
    now: &str,
) -> Option<String> {
    let mut previous = None;
    for e in state.entries.iter_mut() {
        if e.category == category && e.key == key && e.status == EntryStatus::Active {
            e.status = to;
            e.superseded_at = Some(now.to_string());
            previous = Some(e.value.clone());
        }
    }
    previous
}

fn state_path_checked(project: &str) -> Result<String> {
    if !layout::valid_id(project) {
        return Err(Error::Invalid {
            file: "PROJECT".into(),
            pointer: "/project".into(),
            rule: "pattern",
            message: format!(
                "project {project:?} is not registered and is not a path-safe name; register it with `cairn project add`"
            ),
        });
    }
    Ok(layout::project_state(project))
}

/// Sets a trusted-state entry, superseding the active one for the same key (PROJECT_STATE_SET).
pub fn state_set(
    store: &Store,
    project: &str,
    category: &str,
    key: &str,
    value: &str,
    source: Option<&str>,
    idem: Option<&str>,
) -> Result<(StateEntry, Committed)> {
    let committed = store.transact(
        crate::idempotency::keyed(idem, "state.set", || {
            vec![
                json!(project),
                json!(category),
                json!(key),
                json!(value),
                json!(source),
            ]
        })
        .as_ref(),
        |snap| {
            let project = Registry::read(snap)?.canonicalize(project);
            let path = state_path_checked(&project)?;
            let mut state = read_state(snap, &project)?;
            let now = rfc3339(snap.now());
            let previous = retire(&mut state, category, key, EntryStatus::Superseded, &now);
            let entry = StateEntry {
                category: category.to_string(),
                key: key.to_string(),
                value: value.to_string(),
                source: source.map(str::to_string),
                status: EntryStatus::Active,
                updated_at: now,
                superseded_at: None,
            };
            state.entries.push(entry.clone());
            let mut changes = Changes::new();
            changes.insert(path, Some(state_yaml(&state).into_bytes()));
            Ok(Mutation {
                tags: Vec::new(),
                changes,
                event: EventDraft::new(
                    EventType::ProjectStateSet,
                    format!("state {project}: {category}/{key}"),
                )
                .payload(json!({"project": project, "category": category, "key": key,
                "value": value, "source": source, "previous": previous})),
            })
        },
    )?;
    let entry = StateEntry {
        category: category.into(),
        key: key.into(),
        value: committed.event.payload["value"]
            .as_str()
            .unwrap_or(value)
            .into(),
        source: source.map(str::to_string),
        status: EntryStatus::Active,
        updated_at: committed.event.timestamp.clone(),
        superseded_at: None,
    };
    Ok((entry, committed))
}

pub(crate) fn state_yaml(state: &ProjectState) -> String {
    schema::to_yaml(&serde_json::to_value(state).expect("state serializes"))
}

/// Marks the active entry for a key invalid (PROJECT_STATE_INVALIDATED); it stays in the file.
pub fn state_invalidate(
    store: &Store,
    project: &str,
    category: &str,
    key: &str,
    idem: Option<&str>,
) -> Result<Committed> {
    store.transact(
        crate::idempotency::keyed(idem, "state.invalidate", || {
            vec![json!(project), json!(category), json!(key)]
        })
        .as_ref(),
        |snap| {
            let project = Registry::read(snap)?.canonicalize(project);
            let path = state_path_checked(&project)?;
            let mut state = read_state(snap, &project)?;
            let now = rfc3339(snap.now());
            if retire(&mut state, category, key, EntryStatus::Invalid, &now).is_none() {
                return Err(Error::NotFound {
                    what: format!("active state {category}/{key} of project {project}"),
                });
            }
            let mut changes = Changes::new();
            changes.insert(path, Some(state_yaml(&state).into_bytes()));
            Ok(Mutation {
                tags: Vec::new(),
                changes,
                event: EventDraft::new(
                    EventType::ProjectStateInvalidated,
                    format!("state {project}: invalidate {category}/{key}"),
                )
                .payload(json!({"project": project, "category": category, "key": key})),
            })
        },
    )
}

/// The active trusted state of a project (optionally one category), sorted by category and key.
pub fn state_get(
    store: &Store,
    project: &str,
    category: Option<&str>,
) -> Result<(String, Vec<StateEntry>)> {
    let snap = store.snapshot()?;
    let project = Registry::read(&snap)?.canonicalize(project);
    if !layout::valid_id(&project) {
        return Ok((project, Vec::new()));
    }
    let state = read_state(&snap, &project)?;
    let mut entries: Vec<StateEntry> = state
        .entries
        .into_iter()
        .filter(|e| e.status == EntryStatus::Active)
        .filter(|e| category.is_none_or(|c| e.category == c))
        .collect();
    entries.sort_by(|a, b| (&a.category, &a.key).cmp(&(&b.category, &b.key)));
    Ok((project, entries))
}
