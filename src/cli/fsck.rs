//! `cairn fsck`.

use serde_json::json;

use super::{CmdResult, Ctx, Output};

/// Check every canonical file, the store's invariants and git's connectivity.
#[derive(clap::Args, Debug)]
pub struct FsckArgs {}

pub fn cmd_fsck(ctx: &Ctx, _a: FsckArgs) -> CmdResult {
    let store = ctx.open()?;
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
