//! `cairn fsck`.

use serde_json::json;

use super::{CmdResult, Ctx, Output};

/// Check every canonical file, the store's invariants, the mirror and git's connectivity.
///
/// Each problem names its file, rule and fix, and the commit that last changed
/// the file (so damage from `git commit --no-verify` is traced to its commit).
#[derive(clap::Args, Debug)]
pub struct FsckArgs {
    /// Commit the mechanical fixes: episodes restored from their tags, broken
    /// files restored to their last good version, the mirror regenerated.
    #[arg(long)]
    repair: bool,
}

pub fn cmd_fsck(ctx: &Ctx, a: FsckArgs) -> CmdResult {
    let store = ctx.open()?;
    if a.repair {
        let report = cairn::fsck::repair(&store)?;
        let mut text = if report.actions.is_empty() {
            "nothing to repair mechanically".to_string()
        } else {
            format!(
                "repaired in {}:\n  {}",
                report
                    .commits
                    .iter()
                    .map(|c| &c[..12])
                    .collect::<Vec<_>>()
                    .join(", "),
                report.actions.join("\n  ")
            )
        };
        if !report.remaining.is_empty() {
            text.push_str("\nstill to fix by hand:");
            for f in &report.remaining {
                text.push_str(&format!("\n  {}", f.describe()));
            }
            eprintln!("{text}");
            return Err(cairn::Error::FsckFailed {
                findings: report.remaining,
            }
            .into());
        }
        return Ok(Output::new(text, json!(report)));
    }
    let findings = cairn::fsck::fsck(&store)?;
    if findings.is_empty() {
        let tip = store.require_tip()?;
        Ok(Output::new(
            format!("store is healthy at {}", &tip.to_string()[..12]),
            json!({"findings": [], "commit": tip.to_string()}),
        ))
    } else {
        Err(cairn::Error::FsckFailed { findings }.into())
    }
}
