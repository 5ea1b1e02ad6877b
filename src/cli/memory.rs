//! `cairn memory propose | commit | queue | promote | reject | edit | list | show | history`.

use cairn::memory::{self, ListQuery, MemoryItem, ScopeFilter};
use cairn::project::Registry;
use cairn::Store;
use serde_json::{json, Map, Value};

use super::{read_input, CliError, CmdResult, Ctx, Output};

/// Long-term memory: propose, review, commit, read.
#[derive(clap::Subcommand, Debug)]
pub enum MemoryCommand {
    /// Stage memory change requests (JSON or YAML: a list, one MCR, or the seed's {"mcrs": [...]}) as one batch.
    Propose(ProposeArgs),
    /// Commit a batch outside a milestone (needs --allow-outside-milestone; logged as an override).
    Commit(CommitArgs),
    /// The review queue: candidates awaiting promotion or rejection.
    Queue(FilterArgs),
    /// Promote a candidate to active memory.
    Promote(PromoteArgs),
    /// Reject a candidate (it becomes invalid; history keeps it).
    Reject(RejectArgs),
    /// Edit a candidate before review (a mapping of fields to replace).
    Edit(EditArgs),
    /// List memory items.
    List(FilterArgs),
    /// Show one memory item.
    Show(IdArgs),
    /// Every version of an item, with the commit and event that made it.
    History(IdArgs),
    /// Bulk-import active memory items from JSON Lines (one object per line), in few commits.
    Import(ImportArgs),
}

/// Import.
#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// The JSONL file: objects with content (or text) and optional type, scope, scope_id,
    /// confidence, tags, rationale, source_refs, created_at, id.
    file: String,
    /// Items per commit.
    #[arg(long, default_value_t = 5000)]
    batch: usize,
}

/// Propose a batch.
#[derive(clap::Args, Debug)]
pub struct ProposeArgs {
    /// The run proposing.
    run: String,
    /// The MCRs file, or `-` for stdin.
    #[arg(long, short, value_name = "FILE")]
    file: Option<String>,
    /// Read from stdin.
    #[arg(value_name = "-", hide = true)]
    stdin: Option<String>,
    /// A scope filter recorded with the batch, as KEY=VALUE (repeatable).
    #[arg(long = "scope-filter", value_name = "KEY=VALUE")]
    scope_filters: Vec<String>,
}

/// Commit a batch.
#[derive(clap::Args, Debug)]
pub struct CommitArgs {
    /// The batch.
    batch: String,
    /// Commit now, outside a milestone (an explicit, logged override).
    #[arg(long)]
    allow_outside_milestone: bool,
}

/// Filters.
#[derive(clap::Args, Debug)]
pub struct FilterArgs {
    /// scope or scope:id, e.g. global, run:run_..., project:NAME.
    #[arg(long)]
    scope: Option<String>,
    /// Only this type (fact, preference, decision, ...).
    #[arg(long = "type")]
    kind: Option<String>,
    /// Only this status (candidate, active, superseded, invalid, expired).
    #[arg(long)]
    status: Option<String>,
    /// Only this project (id or alias).
    #[arg(long)]
    project: Option<String>,
    /// Only items with this tag.
    #[arg(long)]
    tag: Option<String>,
    /// At most this many.
    #[arg(long)]
    limit: Option<usize>,
}

/// Promote.
#[derive(clap::Args, Debug)]
pub struct PromoteArgs {
    /// The candidate.
    id: String,
    /// Why (recorded in the ledger).
    #[arg(long)]
    reason: Option<String>,
}

/// Reject.
#[derive(clap::Args, Debug)]
pub struct RejectArgs {
    /// The candidate.
    id: String,
    /// Why (recorded in the ledger).
    #[arg(long)]
    reason: String,
}

/// Edit.
#[derive(clap::Args, Debug)]
pub struct EditArgs {
    /// The candidate.
    id: String,
    /// The fields to replace (JSON or YAML), or `-` for stdin.
    #[arg(long, short, value_name = "FILE")]
    file: Option<String>,
    /// Read from stdin.
    #[arg(value_name = "-", hide = true)]
    stdin: Option<String>,
}

/// One item.
#[derive(clap::Args, Debug)]
pub struct IdArgs {
    /// The memory item id.
    id: String,
}

/// `--file F` or a lone `-`.
pub(super) fn source(file: Option<&str>, stdin: Option<&str>) -> Result<String, CliError> {
    match (file, stdin) {
        (Some(f), None) => Ok(f.to_string()),
        (None, Some("-")) => Ok("-".to_string()),
        (None, None) => Err(CliError::Usage(
            "give the input with --file FILE or - (stdin)".into(),
        )),
        _ => Err(CliError::Usage(
            "give the input once: --file FILE or -".into(),
        )),
    }
}

pub(super) fn read_doc(store: &Store, src: &str) -> Result<(String, Value), CliError> {
    let config = store.config()?;
    let (label, bytes) = read_input(src, config.limits.max_input_bytes)?;
    let value = cairn::schema::parse_document(&label, &bytes, config.parse_limits())?;
    Ok((label, value))
}

fn line(item: &MemoryItem, now: time::OffsetDateTime) -> String {
    format!(
        "{}  {:<10} {:<10} {:<24} {:.2}  {}",
        item.id,
        item.effective_status(now),
        item.kind,
        match &item.scope_id {
            Some(s) => format!("{}:{s}", item.scope),
            None => item.scope.clone(),
        },
        item.confidence,
        item.content.chars().take(80).collect::<String>()
    )
}

fn listing(store: &Store, items: Vec<MemoryItem>, empty: &str) -> Output {
    let now = store.now();
    let human = if items.is_empty() {
        empty.to_string()
    } else {
        items
            .iter()
            .map(|i| line(i, now))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let data: Vec<Value> = items
        .iter()
        .map(|i| {
            let mut v = json!(i);
            v["effective_status"] = json!(i.effective_status(now));
            v
        })
        .collect();
    Output::new(human, json!({"items": data, "count": data.len()}))
}

fn query(store: &Store, f: FilterArgs) -> Result<ListQuery, CliError> {
    let registry = Registry::at_tip(store)?;
    Ok(ListQuery {
        scope: f
            .scope
            .map(|s| ScopeFilter::parse(&s, &registry))
            .transpose()?,
        kind: f.kind,
        status: f.status,
        project: f.project.map(|p| registry.canonicalize(&p)),
        tag: f.tag,
        limit: f.limit,
    })
}

pub fn cmd_memory(ctx: &Ctx, cmd: MemoryCommand) -> CmdResult {
    let store = ctx.open_reading()?;
    match cmd {
        MemoryCommand::Propose(a) => {
            let (label, doc) = read_doc(&store, &source(a.file.as_deref(), a.stdin.as_deref())?)?;
            let mut filters = Map::new();
            for f in &a.scope_filters {
                let (k, v) = f.split_once('=').ok_or_else(|| {
                    CliError::Usage(format!("--scope-filter {f:?} is not KEY=VALUE"))
                })?;
                filters.insert(k.to_string(), json!(v));
            }
            let (batch, c) = memory::propose(&store, &a.run, &doc, filters, &label, ctx.key())?;
            let ids: Vec<&str> = batch
                .item_ids
                .iter()
                .flatten()
                .map(String::as_str)
                .collect();
            Ok(Output::new(
                format!(
                    "{}staged {} ({} change(s); candidates: {})\ncommit it at a milestone: cairn milestone {} --reason R --commit-batch {}",
                    if c.replayed { "(replayed) " } else { "" },
                    batch.batch_id,
                    batch.items.len(),
                    if ids.is_empty() { "none".into() } else { ids.join(", ") },
                    batch.run_id,
                    batch.batch_id
                ),
                json!({"batch_id": batch.batch_id, "batch": batch, "event": c.event, "replayed": c.replayed}),
            ))
        }
        MemoryCommand::Commit(a) => {
            let (batch, c) =
                memory::commit_batch(&store, &a.batch, a.allow_outside_milestone, ctx.key())?;
            Ok(Output::new(
                format!(
                    "committed {} outside a milestone (override logged in {})",
                    batch.batch_id,
                    &c.event.commit[..12]
                ),
                json!({"batch": batch, "event": c.event, "replayed": c.replayed}),
            ))
        }
        MemoryCommand::Queue(f) => {
            let q = query(&store, f)?;
            Ok(listing(
                &store,
                memory::queue(&store, &q)?,
                "the review queue is empty",
            ))
        }
        MemoryCommand::List(f) => {
            let q = query(&store, f)?;
            Ok(listing(
                &store,
                memory::list(&store, &q)?,
                "no memory items match",
            ))
        }
        MemoryCommand::Promote(a) => {
            let (item, c) = memory::promote(&store, &a.id, a.reason.as_deref(), ctx.key())?;
            Ok(Output::new(
                format!("{} is active", item.id),
                json!({"item": item, "event": c.event}),
            ))
        }
        MemoryCommand::Reject(a) => {
            let (item, c) = memory::reject(&store, &a.id, &a.reason, ctx.key())?;
            Ok(Output::new(
                format!("{} rejected (invalid)", item.id),
                json!({"item": item, "event": c.event}),
            ))
        }
        MemoryCommand::Edit(a) => {
            let (label, doc) = read_doc(&store, &source(a.file.as_deref(), a.stdin.as_deref())?)?;
            let (item, c) = memory::edit(&store, &a.id, &doc, &label, ctx.key())?;
            Ok(Output::new(
                format!("{} edited", item.id),
                json!({"item": item, "event": c.event}),
            ))
        }
        MemoryCommand::Import(a) => {
            let config = store.config()?;
            let text = std::fs::read_to_string(&a.file).map_err(|e| cairn::Error::Io {
                op: "read",
                path: a.file.clone().into(),
                source: e,
            })?;
            let mut records = Vec::new();
            for (n, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let label = format!("{}:{}", a.file, n + 1);
                records.push(cairn::schema::parse_document(
                    &label,
                    line.as_bytes(),
                    config.parse_limits(),
                )?);
            }
            let bar = super::search::progress_bar();
            let report = memory::import(&store, &records, &a.file, a.batch, &bar)?;
            Ok(Output::new(
                format!(
                    "imported {} item(s) in {} commit(s)",
                    report.imported, report.commits
                ),
                json!(report),
            ))
        }
        MemoryCommand::Show(a) => {
            let item = memory::show(&store, &a.id)?;
            Ok(Output::new(item.to_yaml().trim_end(), json!(item)))
        }
        MemoryCommand::History(a) => {
            let versions = memory::history(&store, &a.id)?;
            let human = versions
                .iter()
                .map(|v| {
                    format!(
                        "{}  {}  {:<18} {:<10} {}",
                        &v.commit[..12],
                        v.timestamp,
                        v.event_type.as_str(),
                        v.item.status.as_str(),
                        v.item.content.chars().take(60).collect::<String>()
                    )
                })
                .collect::<Vec<_>>()
                .join("\n");
            Ok(Output::new(
                human,
                json!({"id": a.id, "versions": versions}),
            ))
        }
    }
}
