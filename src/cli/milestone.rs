//! `cairn milestone` and `cairn episode list | show`.

use cairn::episode::{self, MilestoneRequest};
use serde_json::json;

use super::{CmdResult, Ctx, Output};

/// Take a milestone: write the episode, commit the chosen batches, tag it.
#[derive(clap::Args, Debug)]
pub struct MilestoneArgs {
    /// The run.
    run: String,
    /// Why the checkpoint is taken.
    #[arg(long)]
    reason: String,
    /// Where to pick up from.
    #[arg(long)]
    next_entry_point: Option<String>,
    /// A proposed batch of this run to commit as memory (repeatable).
    #[arg(long = "commit-batch", value_name = "BATCH")]
    batches: Vec<String>,
}

/// Read episodes.
#[derive(clap::Subcommand, Debug)]
pub enum EpisodeCommand {
    /// A run's episodes.
    List {
        /// The run.
        run: String,
    },
    /// One episode, by id or tag.
    Show {
        /// `ep_...` or `cairn/<run>/<ep>`.
        id: String,
    },
}

pub fn cmd_milestone(ctx: &Ctx, a: MilestoneArgs) -> CmdResult {
    let store = ctx.open()?;
    let req = MilestoneRequest {
        reason: a.reason,
        next_entry_point: a.next_entry_point,
        batches: a.batches,
    };
    let (ep, c) = episode::milestone(&store, &a.run, &req, ctx.key())?;
    Ok(Output::new(
        format!(
            "episode {} ({} #{}) tagged {}\n{}",
            ep.episode_id, ep.run_id, ep.ordinal, ep.tag, ep.summary
        ),
        json!({"episode": ep, "event": c.event, "replayed": c.replayed}),
    ))
}

pub fn cmd_episode(ctx: &Ctx, cmd: EpisodeCommand) -> CmdResult {
    let store = ctx.open()?;
    match cmd {
        EpisodeCommand::List { run } => {
            let eps = episode::list(&store, &run)?;
            let human = if eps.is_empty() {
                "no episodes yet".to_string()
            } else {
                eps.iter()
                    .map(|e| {
                        format!(
                            "#{:<3} {}  {}  {}",
                            e.ordinal, e.episode_id, e.created_at, e.reason
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            Ok(Output::new(human, json!({"episodes": eps})))
        }
        EpisodeCommand::Show { id } => {
            let ep = episode::show(&store, &id)?;
            Ok(Output::new(ep.to_yaml().trim_end(), json!(ep)))
        }
    }
}
