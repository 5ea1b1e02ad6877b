//! `cairn milestone` and `cairn episode list | show`.

use cairn::api::{self, EpisodeListRequest, EpisodeShowRequest, MilestoneRequest};
use serde_json::json;

use super::{CmdResult, Ctx, Output};

/// Take a milestone: write the episode, commit the chosen batches, tag it.
pub type MilestoneArgs = MilestoneRequest;

/// Read episodes.
#[derive(clap::Subcommand, Debug)]
pub enum EpisodeCommand {
    /// A run's episodes.
    List(EpisodeListRequest),
    /// One episode, by id or tag.
    Show(EpisodeShowRequest),
}

pub fn cmd_milestone(ctx: &Ctx, a: MilestoneArgs) -> CmdResult {
    let store = ctx.open()?;
    let report = api::milestone(&store, &a, ctx.key())?;
    let ep = &report.episode;
    Ok(Output::new(
        format!(
            "episode {} ({} #{}) tagged {}\n{}",
            ep.episode_id, ep.run_id, ep.ordinal, ep.tag, ep.summary
        ),
        json!(report),
    ))
}

pub fn cmd_episode(ctx: &Ctx, cmd: EpisodeCommand) -> CmdResult {
    let store = ctx.open()?;
    match cmd {
        EpisodeCommand::List(a) => {
            let report = api::episode_list(&store, &a)?;
            let eps = &report.episodes;
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
            Ok(Output::new(human, json!(report)))
        }
        EpisodeCommand::Show(a) => {
            let ep = api::episode_show(&store, &a)?;
            Ok(Output::new(ep.to_yaml().trim_end(), json!(ep)))
        }
    }
}
