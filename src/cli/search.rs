//! `cairn search` and `cairn index status | rebuild`.

use std::io::IsTerminal;

use cairn::api::{self, SearchRequest};
use serde_json::json;

use super::{CliError, CmdResult, Ctx, Output};

/// Search memory (BM25 with scope weights, recency and confidence).
pub type SearchArgs = SearchRequest;

/// The search index (derived, under .cairn/index/).
#[derive(clap::Subcommand, Debug)]
pub enum IndexCommand {
    /// Show what the index reflects (catching it up first).
    Status,
    /// Rebuild it from the store.
    Rebuild,
}

/// A progress bar on a terminal for long rebuilds; silent otherwise.
pub(super) fn progress_bar() -> impl Fn(u64, u64) {
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template("indexing {bar:40} {pos}/{len} ({eta})")
                .expect("a valid template"),
        );
        b
    });
    move |done, total| {
        if let Some(b) = &bar {
            if total < 2000 {
                return;
            }
            b.set_length(total);
            b.set_position(done);
            if done >= total {
                b.finish_and_clear();
            }
        }
    }
}

fn time_arg(flag: &str, s: &Option<String>) -> Result<Option<time::OffsetDateTime>, CliError> {
    s.as_ref()
        .map(|s| {
            cairn::event::parse_rfc3339(s)
                .ok_or_else(|| CliError::Usage(format!("--{flag} {s:?} is not an RFC 3339 time")))
        })
        .transpose()
}

pub fn cmd_search(ctx: &Ctx, a: SearchArgs) -> CmdResult {
    let store = ctx.open_reading()?;
    // A bad time flag is a usage error on the command line.
    time_arg("since", &a.since)?;
    time_arg("until", &a.until)?;
    let results = api::search(&store, &a, &progress_bar())?;
    for w in &results.warnings {
        eprintln!("warning: {w}");
    }
    let human = if results.hits.is_empty() {
        "no matches".to_string()
    } else {
        results
            .hits
            .iter()
            .map(|h| {
                format!(
                    "{:>8.3}  {}  {:<10} {}",
                    h.score,
                    h.id,
                    h.kind,
                    h.content.chars().take(90).collect::<String>()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    Ok(Output::new(human, json!(results)))
}

pub fn cmd_index(ctx: &Ctx, cmd: IndexCommand) -> CmdResult {
    let store = ctx.open()?;
    let status = match cmd {
        IndexCommand::Status => api::index_status(&store, &progress_bar())?,
        IndexCommand::Rebuild => api::index_rebuild(&store, &progress_bar())?,
    };
    Ok(Output::new(
        format!(
            "index at {}: {} memory item(s), {} event(s), {}{}",
            status.path.display(),
            status.memory_items,
            status.events,
            if status.current {
                "current"
            } else {
                "behind the tip"
            },
            status
                .rebuilt
                .as_ref()
                .map(|r| format!(" (rebuilt: {r})"))
                .unwrap_or_default()
        ),
        json!(status),
    ))
}
