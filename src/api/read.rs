//! Reading: search, the brief, the ledger, the index and conflict records.

use serde::{Deserialize, Serialize};

use super::{invalid_field, one_or_many, time_field, Words};
use crate::brief::{self, Brief};
use crate::error::Result;
use crate::ledger::{Event, EventType, LogQuery};
use crate::memory::ScopeFilter;
use crate::project::Registry;
use crate::search::{self, IndexStatus, Progress, Ranking, SearchQuery, SearchResults};
use crate::sync::conflicts::{self, Conflict};
use crate::Store;

fn default_top_k() -> usize {
    10
}

/// Search memory (BM25 with scope weights, recency and confidence).
#[derive(clap::Args, Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    /// What to look for, in plain words: any text is accepted (quotes and
    /// colons are just separators). With `syntax`: words, "exact phrases" and
    /// field:value (content, tags, type, scope, scope_id, status, project, run, id).
    #[serde(default, deserialize_with = "one_or_many")]
    #[schemars(with = "Option<Words>")]
    pub query: Vec<String>,
    /// scope or scope:id, e.g. project:NAME.
    #[arg(long)]
    #[serde(default)]
    pub scope: Option<String>,
    /// Only this type.
    #[arg(long = "type")]
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// Only this status (default active and not expired; `any` for all).
    #[arg(long)]
    #[serde(default)]
    pub status: Option<String>,
    /// Only this project (id or alias).
    #[arg(long)]
    #[serde(default)]
    pub project: Option<String>,
    /// Only items with this tag.
    #[arg(long)]
    #[serde(default)]
    pub tag: Option<String>,
    /// Created at or after this RFC 3339 time.
    #[arg(long)]
    #[serde(default)]
    pub since: Option<String>,
    /// Created at or before this RFC 3339 time.
    #[arg(long)]
    #[serde(default)]
    pub until: Option<String>,
    /// How many hits.
    #[arg(long, default_value_t = 10)]
    #[serde(default = "default_top_k")]
    pub top_k: usize,
    /// Read the query as the query syntax ("exact phrases", field:value);
    /// a syntax mistake is then an error naming its position.
    #[arg(long)]
    #[serde(default)]
    pub syntax: bool,
    /// Plain words (the default now; kept so older scripts still run).
    #[arg(long, hide = true, conflicts_with = "syntax")]
    #[serde(default)]
    pub plain: bool,
}

impl SearchRequest {
    /// The library's query: project names canonicalized, times parsed (a
    /// bad time is a VALIDATION error naming `since` or `until`).
    pub fn to_query(&self, store: &Store) -> Result<SearchQuery> {
        let registry = Registry::at_tip(store)?;
        Ok(SearchQuery {
            text: self.query.join(" "),
            scope: self
                .scope
                .as_deref()
                .map(|s| ScopeFilter::parse(s, &registry))
                .transpose()?,
            kind: self.kind.clone(),
            status: self.status.clone(),
            project: self.project.as_deref().map(|p| registry.canonicalize(p)),
            tag: self.tag.clone(),
            since: time_field("since", self.since.as_deref())?,
            until: time_field("until", self.until.as_deref())?,
            top_k: self.top_k,
            syntax: self.syntax && !self.plain,
            as_of: None,
        })
    }
}

/// Searches memory with the store's ranking; `progress` hears of index
/// catch-up work. The report's `warnings` are part of its JSON.
pub fn search(store: &Store, req: &SearchRequest, progress: Progress<'_>) -> Result<SearchResults> {
    let q = req.to_query(store)?;
    let ranking = Ranking::from(&store.config()?);
    search::search(store, &q, &ranking, progress)
}

/// The context brief an agent injects into its prompt, fitted to a token budget.
#[derive(clap::Args, Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BriefRequest {
    /// The run.
    pub run: String,
    /// The memory query (default: the objective and next action).
    #[arg(long)]
    #[serde(default)]
    pub query: Option<String>,
    /// The token budget (default budgets.brief_tokens in cairn.yaml).
    #[arg(long)]
    #[serde(default)]
    pub budget: Option<u64>,
}

/// Builds a run's brief (markdown plus usage, drops and timing).
pub fn brief(store: &Store, req: &BriefRequest) -> Result<Brief> {
    brief_with_hint(store, req, None)
}

/// Builds a run's brief; `project_hint` names the project when the run
/// names none (see [`brief::brief_with_hint`]).
pub fn brief_with_hint(
    store: &Store,
    req: &BriefRequest,
    project_hint: Option<&str>,
) -> Result<Brief> {
    brief::brief_with_hint(
        store,
        &brief::BriefRequest {
            run_id: req.run.clone(),
            query: req.query.clone(),
            budget: req.budget,
        },
        project_hint,
    )
}

/// Query ledger events (one per commit), oldest first.
#[derive(clap::Args, Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogRequest {
    /// Only events of this run.
    #[arg(long)]
    #[serde(default)]
    pub run: Option<String>,
    /// Only events of this type (e.g. WS_UPDATE_APPLIED).
    #[arg(long = "type")]
    #[serde(default, rename = "type")]
    pub event_type: Option<String>,
    /// Only events at or after this RFC 3339 time.
    #[arg(long)]
    #[serde(default)]
    pub since: Option<String>,
    /// Only events at or before this RFC 3339 time.
    #[arg(long)]
    #[serde(default)]
    pub until: Option<String>,
    /// Only events made by this actor (a filter on the events' actor, the
    /// commit author's name; it does not set who writes).
    #[arg(long, value_name = "NAME")]
    #[serde(default)]
    pub actor: Option<String>,
    /// At most this many (the newest).
    #[arg(long)]
    #[serde(default)]
    pub limit: Option<usize>,
}

impl LogRequest {
    /// The library's query (a bad type or time is a VALIDATION error naming
    /// its field).
    pub fn to_query(&self) -> Result<LogQuery> {
        let event_type = match &self.event_type {
            Some(t) => Some(EventType::parse(t).ok_or_else(|| {
                invalid_field("type", "event_type", format!("unknown event type {t:?}"))
            })?),
            None => None,
        };
        Ok(LogQuery {
            run_id: self.run.clone(),
            event_type,
            since: time_field("since", self.since.as_deref())?,
            until: time_field("until", self.until.as_deref())?,
            actor: self.actor.clone(),
            limit: self.limit,
        })
    }
}

/// Ledger events.
#[derive(Debug, Clone, Serialize)]
pub struct LogReport {
    /// The events, oldest first.
    pub events: Vec<Event>,
}

/// Reads ledger events from the search index (caught up to the tip first),
/// which stores each event whole: no diff per commit. The answer is the one
/// [`crate::ledger::query`]'s walk of the history gives.
pub fn log_events(store: &Store, q: &LogQuery, progress: Progress<'_>) -> Result<Vec<Event>> {
    if store.tip()?.is_none() {
        return Ok(Vec::new());
    }
    search::log(store, q, progress)
}

/// Queries the ledger.
pub fn log(store: &Store, req: &LogRequest, progress: Progress<'_>) -> Result<LogReport> {
    Ok(LogReport {
        events: log_events(store, &req.to_query()?, progress)?,
    })
}

/// What the search index reflects, caught up to the tip first.
pub fn index_status(store: &Store, progress: Progress<'_>) -> Result<IndexStatus> {
    search::status(store, progress)
}

/// Rebuilds the search index from the store.
pub fn index_rebuild(store: &Store, progress: Progress<'_>) -> Result<IndexStatus> {
    search::rebuild(store, progress)
}

/// The merge conflicts kept as records.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConflictsListRequest {
    /// Include resolved conflicts.
    #[serde(default)]
    pub all: bool,
}

/// Lists conflict records (the open ones, or all). The CLI's `--json`
/// prints this list as is.
pub fn conflicts_list(store: &Store, req: &ConflictsListRequest) -> Result<Vec<Conflict>> {
    conflicts::list(&store.snapshot()?, req.all)
}

/// One conflict record.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConflictShowRequest {
    /// The conflict id (cf_...).
    pub id: String,
}

/// Shows one conflict record.
pub fn conflict_show(store: &Store, req: &ConflictShowRequest) -> Result<Conflict> {
    conflicts::show(&store.snapshot()?, &req.id)
}
