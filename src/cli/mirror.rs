//! `cairn mirror`.

use cairn::error::Finding;
use serde_json::json;

use super::{CmdResult, Ctx, Output};

/// Regenerate the markdown mirror (mirror/) from scratch: one commit if any page changed.
///
/// With --check nothing is written: pages that differ from a fresh render are
/// listed and the command fails with an INTEGRITY error (exit 8).
#[derive(clap::Args, Debug)]
pub struct MirrorArgs {
    /// Only compare the pages with a fresh render.
    #[arg(long)]
    check: bool,
}

pub fn cmd_mirror(ctx: &Ctx, a: MirrorArgs) -> CmdResult {
    let store = ctx.open()?;
    let enabled = store.config()?.mirror.enabled;
    if !enabled {
        return Ok(Output::new(
            "the mirror is off (mirror.enabled: false in cairn.yaml)",
            json!({"enabled": false, "pages": []}),
        ));
    }
    if a.check {
        let report = cairn::mirror::check(&store)?;
        if report.clean() {
            return Ok(Output::new(
                "mirror is up to date",
                json!({"enabled": true, "report": report}),
            ));
        }
        let mut findings = Vec::new();
        for (list, rule, message) in [
            (
                &report.differ,
                "MIRROR_STALE",
                "differs from a fresh render",
            ),
            (&report.missing, "MIRROR_MISSING", "is missing"),
            (
                &report.extra,
                "MIRROR_EXTRA",
                "is not a page cairn generates",
            ),
        ] {
            for p in list {
                findings.push(Finding::new(
                    p.clone(),
                    rule,
                    format!("{p} {message}; run `cairn mirror` to regenerate"),
                ));
            }
        }
        return Err(cairn::Error::FsckFailed { findings }.into());
    }
    let done = cairn::mirror::regenerate(&store)?;
    let human = match &done.commit {
        Some(c) => format!(
            "regenerated {} page(s) in commit {}",
            done.pages.len(),
            &c.commit.to_string()[..12]
        ),
        None if done.pages.is_empty() => "mirror is up to date".to_string(),
        None => format!("regenerated {} page(s) in the work tree", done.pages.len()),
    };
    Ok(Output::new(
        human,
        json!({"enabled": true, "pages": done.pages, "commit": done.commit.map(|c| c.commit.to_string())}),
    ))
}
