//! `cairn project add | list | resolve` and `cairn state set | get | invalidate`.

use cairn::project::{self, Registry};
use serde_json::json;

use super::{CmdResult, Ctx, Output};

/// Registered projects and their aliases.
#[derive(clap::Subcommand, Debug)]
pub enum ProjectCommand {
    /// Register a project.
    Add {
        /// The canonical id (lowercase letters, digits, `_`, `.`, `-`).
        id: String,
        /// Another name for it (repeatable; case-insensitive).
        #[arg(long = "alias")]
        aliases: Vec<String>,
        /// What it is.
        #[arg(long)]
        description: Option<String>,
    },
    /// List projects.
    List,
    /// Show the canonical id a name resolves to.
    Resolve {
        /// An id or alias (unknown names pass through unchanged).
        name: String,
    },
}

/// Trusted, hand-curated project state.
#[derive(clap::Subcommand, Debug)]
pub enum StateCommand {
    /// Set an entry (supersedes the previous value; history keeps it).
    Set {
        /// The project (id or alias).
        project: String,
        /// The category.
        category: String,
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// Where it comes from.
        #[arg(long)]
        source: Option<String>,
    },
    /// The active entries.
    Get {
        /// The project (id or alias).
        project: String,
        /// Only this category.
        #[arg(long)]
        category: Option<String>,
    },
    /// Invalidate an entry (kept in the file and in history).
    Invalidate {
        /// The project (id or alias).
        project: String,
        /// The category.
        category: String,
        /// The key.
        key: String,
    },
}

pub fn cmd_project(ctx: &Ctx, cmd: ProjectCommand) -> CmdResult {
    let store = ctx.open()?;
    match cmd {
        ProjectCommand::Add {
            id,
            aliases,
            description,
        } => {
            let (p, c) = project::add(&store, &id, &aliases, description.as_deref(), ctx.key())?;
            Ok(Output::new(
                format!(
                    "registered {} (aliases: {})",
                    p.id,
                    if p.aliases.is_empty() {
                        "none".into()
                    } else {
                        p.aliases.join(", ")
                    }
                ),
                json!({"project": p, "event": c.event}),
            ))
        }
        ProjectCommand::List => {
            let r = Registry::at_tip(&store)?;
            let human = if r.projects.is_empty() {
                "no projects registered (cairn project add ID)".to_string()
            } else {
                r.projects
                    .iter()
                    .map(|p| format!("{:<24} {}", p.id, p.aliases.join(", ")))
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            Ok(Output::new(human, json!({"projects": r.projects})))
        }
        ProjectCommand::Resolve { name } => {
            let r = project::resolve(&store, &name)?;
            Ok(Output::new(
                format!(
                    "{}{}",
                    r.canonical,
                    if r.registered {
                        ""
                    } else {
                        " (not registered)"
                    }
                ),
                json!(r),
            ))
        }
    }
}

pub fn cmd_state(ctx: &Ctx, cmd: StateCommand) -> CmdResult {
    let store = ctx.open()?;
    match cmd {
        StateCommand::Set {
            project,
            category,
            key,
            value,
            source,
        } => {
            let (entry, c) = project::state_set(
                &store,
                &project,
                &category,
                &key,
                &value,
                source.as_deref(),
                ctx.key(),
            )?;
            let canonical = c.event.payload["project"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            Ok(Output::new(
                format!(
                    "{canonical}: {}/{} = {}",
                    entry.category, entry.key, entry.value
                ),
                json!({"project": canonical, "entry": entry, "event": c.event}),
            ))
        }
        StateCommand::Get { project, category } => {
            let (canonical, entries) = project::state_get(&store, &project, category.as_deref())?;
            let human = if entries.is_empty() {
                format!("no trusted state for {canonical}")
            } else {
                entries
                    .iter()
                    .map(|e| format!("{}/{} = {}", e.category, e.key, e.value))
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            Ok(Output::new(
                human,
                json!({"project": canonical, "entries": entries}),
            ))
        }
        StateCommand::Invalidate {
            project,
            category,
            key,
        } => {
            let c = project::state_invalidate(&store, &project, &category, &key, ctx.key())?;
            Ok(Output::new(
                format!("invalidated {category}/{key} (kept in history)"),
                json!({"event": c.event}),
            ))
        }
    }
}
