//! `cairn search` and `cairn index status | rebuild`.

use std::io::IsTerminal;

use cairn::memory::ScopeFilter;
use cairn::project::Registry;
use cairn::search::{self, SearchQuery};
use serde_json::json;

use super::{CliError, CmdResult, Ctx, Output};

/// Search memory (BM25 with scope weights, recency and confidence).
#[derive(clap::Args, Debug)]
pub struct SearchArgs {
    /// What to look for, in plain words: any text is accepted (quotes and
    /// colons are just separators). With --syntax: words, "exact phrases" and
    /// field:value (content, tags, type, scope, scope_id, status, project, run, id).
    query: Vec<String>,
    /// scope or scope:id, e.g. project:NAME.
    #[arg(long)]
    scope: Option<String>,
    /// Only this type.
    #[arg(long = "type")]
    kind: Option<String>,
    /// Only this status (default active and not expired; `any` for all).
    #[arg(long)]
    status: Option<String>,
    /// Only this project (id or alias).
    #[arg(long)]
    project: Option<String>,
    /// Only items with this tag.
    #[arg(long)]
    tag: Option<String>,
    /// Created at or after this RFC 3339 time.
    #[arg(long)]
    since: Option<String>,
    /// Created at or before this RFC 3339 time.
    #[arg(long)]
    until: Option<String>,
    /// How many hits.
    #[arg(long, default_value_t = 10)]
    top_k: usize,
    /// Read the query as the query syntax ("exact phrases", field:value);
    /// a syntax mistake is then an error naming its position.
    #[arg(long)]
    syntax: bool,
    /// Plain words (the default now; kept so older scripts still run).
    #[arg(long, hide = true, conflicts_with = "syntax")]
    plain: bool,
}

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
    let registry = Registry::at_tip(&store)?;
    let q = SearchQuery {
        text: a.query.join(" "),
        scope: a
            .scope
            .map(|s| ScopeFilter::parse(&s, &registry))
            .transpose()?,
        kind: a.kind,
        status: a.status,
        project: a.project.map(|p| registry.canonicalize(&p)),
        tag: a.tag,
        since: time_arg("since", &a.since)?,
        until: time_arg("until", &a.until)?,
        top_k: a.top_k,
        syntax: a.syntax && !a.plain,
    };
    let ranking = cairn::search::Ranking::from(&store.config()?);
    let results = search::search(&store, &q, &ranking, &progress_bar())?;
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
        IndexCommand::Status => search::status(&store, &progress_bar())?,
        IndexCommand::Rebuild => search::rebuild(&store, &progress_bar())?,
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
