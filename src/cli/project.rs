//! `cairn project add | list | resolve` and `cairn state set | get | invalidate`.

use cairn::api::{
    self, ProjectAddRequest, ProjectResolveRequest, StateGetRequest, StateInvalidateRequest,
    StateSetRequest,
};
use serde_json::json;

use super::{CmdResult, Ctx, Output};

/// Registered projects and their aliases.
#[derive(clap::Subcommand, Debug)]
pub enum ProjectCommand {
    /// Register a project.
    Add(ProjectAddRequest),
    /// List projects.
    List,
    /// Show the canonical id a name resolves to.
    Resolve(ProjectResolveRequest),
}

/// Trusted, hand-curated project state.
#[derive(clap::Subcommand, Debug)]
pub enum StateCommand {
    /// Set an entry (supersedes the previous value; history keeps it).
    Set(StateSetRequest),
    /// The active entries.
    Get(StateGetRequest),
    /// Invalidate an entry (kept in the file and in history).
    Invalidate(StateInvalidateRequest),
}

pub fn cmd_project(ctx: &Ctx, cmd: ProjectCommand) -> CmdResult {
    let store = ctx.open()?;
    match cmd {
        ProjectCommand::Add(a) => {
            let report = api::project_add(&store, &a, ctx.key())?;
            let p = &report.project;
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
                json!(report),
            ))
        }
        ProjectCommand::List => {
            let r = api::project_list(&store)?;
            let human = if r.projects.is_empty() {
                "no projects registered (cairn project add ID)".to_string()
            } else {
                r.projects
                    .iter()
                    .map(|p| format!("{:<24} {}", p.id, p.aliases.join(", ")))
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            Ok(Output::new(human, json!(r)))
        }
        ProjectCommand::Resolve(a) => {
            let r = api::project_resolve(&store, &a)?;
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
        StateCommand::Set(a) => {
            let report = api::state_set(&store, &a, ctx.key())?;
            let entry = &report.entry;
            Ok(Output::new(
                format!(
                    "{}: {}/{} = {}",
                    report.project, entry.category, entry.key, entry.value
                ),
                json!(report),
            ))
        }
        StateCommand::Get(a) => {
            let report = api::state_get(&store, &a)?;
            let human = if report.entries.is_empty() {
                format!("no trusted state for {}", report.project)
            } else {
                report
                    .entries
                    .iter()
                    .map(|e| format!("{}/{} = {}", e.category, e.key, e.value))
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            Ok(Output::new(human, json!(report)))
        }
        StateCommand::Invalidate(a) => {
            let report = api::state_invalidate(&store, &a, ctx.key())?;
            Ok(Output::new(
                format!("invalidated {}/{} (kept in history)", a.category, a.key),
                json!(report),
            ))
        }
    }
}
