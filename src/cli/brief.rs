//! `cairn brief`.

use cairn::api::{self, BriefRequest};
use serde_json::json;

use super::{CliError, CmdResult, Ctx, Output};

/// The context brief an agent injects into its prompt, fitted to a token budget.
#[derive(clap::Args, Debug)]
pub struct BriefArgs {
    #[command(flatten)]
    req: BriefRequest,
    /// md (the markdown) or json (markdown plus usage, drops and timing).
    #[arg(long, default_value = "md")]
    format: String,
    /// The project to brief when the run names none (a registered name).
    /// Default: the project the current folder or a parent names, else the
    /// store's only project.
    #[arg(long)]
    project: Option<String>,
}

pub fn cmd_brief(ctx: &Ctx, a: BriefArgs) -> CmdResult {
    if a.format != "md" && a.format != "json" {
        return Err(CliError::Usage(format!(
            "--format {:?}: use md or json",
            a.format
        )));
    }
    let store = ctx.open_reading()?;
    let hint = match a.project {
        // A name given must be one the registry knows.
        Some(p) => {
            if cairn::project::Registry::at_tip(&store)?.find(&p).is_none() {
                return Err(CliError::Usage(format!(
                    "--project {p:?} is not a registered project (`cairn project list`)"
                )));
            }
            Some(p)
        }
        // Else the current folder (or a parent) may name one.
        None => {
            let cwd = std::env::current_dir().ok();
            cairn::agent::session::project_of(&store, cwd.as_deref().and_then(|d| d.to_str()))?
        }
    };
    let b = api::brief_with_hint(&store, &a.req, hint.as_deref())?;
    if a.format == "json" && !ctx.json {
        return Ok(Output::new(
            serde_json::to_string_pretty(&b).expect("briefs serialize"),
            json!(b),
        ));
    }
    Ok(Output::new(b.markdown.trim_end().to_string(), json!(b)))
}
