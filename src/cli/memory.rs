//! `cairn memory propose | commit | queue | promote | reject | edit | delete | list | show | history`.

use cairn::api::{
    self, MemoryCommitRequest, MemoryListReport, MemoryListRequest, MemoryPromoteRequest,
    MemoryRejectRequest, MemoryShowRequest,
};
use cairn::memory::{self, MemoryItem};
use cairn::Store;
use serde_json::{json, Map, Value};

use super::{read_input, CliError, CmdResult, Ctx, Output};

/// Long-term memory: propose, review, commit, read.
#[derive(clap::Subcommand, Debug)]
pub enum MemoryCommand {
    /// Stage memory change requests (JSON or YAML: a list, one MCR, or the seed's {"mcrs": [...]}) as one batch.
    #[command(after_long_help = EXAMPLE_MCRS)]
    Propose(ProposeArgs),
    /// Commit a batch outside a milestone (needs --allow-outside-milestone; logged as an override).
    Commit(MemoryCommitRequest),
    /// The review queue: candidates awaiting promotion or rejection.
    Queue(MemoryListRequest),
    /// Promote a candidate to active memory.
    Promote(MemoryPromoteRequest),
    /// Reject a candidate (it becomes invalid; history keeps it).
    Reject(MemoryRejectRequest),
    /// Edit a candidate before review (a mapping of fields to replace).
    Edit(EditArgs),
    /// List memory items.
    List(MemoryListRequest),
    /// Show one memory item.
    Show(MemoryShowRequest),
    /// Every version of an item, with the commit and event that made it.
    History(MemoryShowRequest),
    /// Bulk-import active memory items from JSON Lines (one object per line), in few commits.
    Import(ImportArgs),
    /// Delete (invalidate) an item: stages a one-item batch (`op: delete`) in
    /// RUN, to commit at the run's next milestone; with
    /// --allow-outside-milestone it is committed at once (a logged override).
    /// History keeps the item.
    Delete(DeleteArgs),
}

/// Delete an item.
#[derive(clap::Args, Debug)]
pub struct DeleteArgs {
    /// The item (mem_...).
    id: String,
    /// Why it no longer holds (the MCR's rationale).
    #[arg(long)]
    reason: String,
    /// The run the deletion is proposed in.
    #[arg(long)]
    run: String,
    /// Commit the batch now instead of at the run's next milestone (logged as an override).
    #[arg(long)]
    allow_outside_milestone: bool,
}

/// A complete MCR file, one change of each kind, shown by `memory propose --help`.
pub(super) const EXAMPLE_MCRS: &str = "\
Example MCR file (mcrs.yaml; `cairn schema show memory_change_request` has every field):

  # add: a new item (type, scope and content required)
  - op: add
    type: fact                # fact, preference, decision, identity, episodic, knowledge, adaptation, project
    scope: project            # global, user, org, project, run
    scope_id: parser          # which project (user, org, run); not for global
    content: The parser accepts UTF-8 input only.
    confidence: 0.9           # 0 to 1
    rationale: Seen in the parser's tests.
    tags: [parser, encoding]
    ttl: P90D                 # optional: expires after 90 days
  # update: change an item in place (history keeps the old text)
  - op: update
    target_id: mem_01K84G7ZWYRD6Z1RV0WHE6M111
    content: The parser accepts UTF-8 and UTF-16 input.
    rationale: UTF-16 support landed.
  # supersede: a new item replaces the old one (kept as superseded, linked both ways)
  - op: supersede
    target_id: mem_01K0RDV1EWZEPEEXJ1T6BJ7NVC
    content: Releases are cut on Tuesdays.
    rationale: The team moved the release day.
  # delete: the item becomes invalid (history keeps it)
  - op: delete
    target_id: mem_01KKJZS2YFSTBQQ5W6ASQZ1Y2K
    rationale: The flag was removed.

Stage it, then commit it at a milestone:
  cairn memory propose RUN --file mcrs.yaml
  cairn milestone RUN --reason \"parser notes\" --commit-batch BATCH";

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

/// The records of a JSON Lines file, read a line at a time: blank lines are
/// skipped, each other line is one document (labelled `FILE:LINE` in
/// errors) and a line over the input size limit is refused without being
/// held whole.
struct JsonlRecords {
    file: String,
    reader: std::io::BufReader<std::fs::File>,
    limits: cairn::schema::ParseLimits,
    line: usize,
    buf: Vec<u8>,
}

fn jsonl_records(file: &str, limits: cairn::schema::ParseLimits) -> cairn::Result<JsonlRecords> {
    let f = std::fs::File::open(file).map_err(|e| cairn::Error::Io {
        op: "read",
        path: file.into(),
        source: e,
    })?;
    Ok(JsonlRecords {
        file: file.to_string(),
        reader: std::io::BufReader::with_capacity(1 << 16, f),
        limits,
        line: 0,
        buf: Vec::new(),
    })
}

impl JsonlRecords {
    /// Reads the next line into `buf` (keeping at most one byte over the
    /// limit) and returns its whole length, or `None` at the end.
    fn next_line(&mut self) -> std::io::Result<Option<u64>> {
        use std::io::BufRead;
        self.buf.clear();
        let keep = usize::try_from(self.limits.max_bytes)
            .unwrap_or(usize::MAX)
            .saturating_add(1);
        let (mut len, mut any) = (0u64, false);
        loop {
            let avail = self.reader.fill_buf()?;
            if avail.is_empty() {
                return Ok(any.then_some(len));
            }
            any = true;
            let end = avail.iter().position(|&b| b == b'\n');
            let part = &avail[..end.unwrap_or(avail.len())];
            let room = keep.saturating_sub(self.buf.len());
            self.buf.extend_from_slice(&part[..part.len().min(room)]);
            len += part.len() as u64;
            let used = end.map_or(avail.len(), |i| i + 1);
            self.reader.consume(used);
            if end.is_some() {
                return Ok(Some(len));
            }
        }
    }
}

impl Iterator for JsonlRecords {
    type Item = cairn::Result<Value>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            self.line += 1;
            let len = match self.next_line() {
                Ok(Some(len)) => len,
                Ok(None) => return None,
                Err(e) => {
                    return Some(Err(cairn::Error::Io {
                        op: "read",
                        path: self.file.clone().into(),
                        source: e,
                    }))
                }
            };
            if self.buf.last() == Some(&b'\r') {
                self.buf.pop();
            }
            if std::str::from_utf8(&self.buf).is_ok_and(|t| t.trim().is_empty()) {
                continue;
            }
            let label = format!("{}:{}", self.file, self.line);
            if len > self.limits.max_bytes {
                return Some(Err(cairn::Error::TooLarge {
                    file: label,
                    bytes: len,
                    limit: self.limits.max_bytes,
                    setting: "max_input_bytes",
                }));
            }
            return Some(cairn::schema::parse_document(
                &label,
                &self.buf,
                self.limits,
            ));
        }
    }
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

fn listing(store: &Store, report: MemoryListReport, empty: &str) -> Output {
    let now = store.now();
    let human = if report.items.is_empty() {
        empty.to_string()
    } else {
        report
            .items
            .iter()
            .map(|i| line(&i.item, now))
            .collect::<Vec<_>>()
            .join("\n")
    };
    Output::new(human, json!(report))
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
            let report =
                api::memory_propose_document(&store, &a.run, &doc, filters, &label, ctx.key())?;
            let batch = &report.batch;
            let ids: Vec<&str> = batch
                .item_ids
                .iter()
                .flatten()
                .map(String::as_str)
                .collect();
            Ok(Output::new(
                format!(
                    "{}staged {} ({} change(s); candidates: {})\ncommit it at a milestone: cairn milestone {} --reason R --commit-batch {}",
                    if report.replayed { "(replayed) " } else { "" },
                    batch.batch_id,
                    batch.items.len(),
                    if ids.is_empty() { "none".into() } else { ids.join(", ") },
                    batch.run_id,
                    batch.batch_id
                ),
                json!(report),
            ))
        }
        MemoryCommand::Commit(a) => {
            let report = api::memory_commit(&store, &a, ctx.key())?;
            Ok(Output::new(
                format!(
                    "committed {} outside a milestone (override logged in {})",
                    report.batch.batch_id,
                    &report.event.commit[..12]
                ),
                json!(report),
            ))
        }
        MemoryCommand::Queue(f) => Ok(listing(
            &store,
            api::memory_queue(&store, &f)?,
            "the review queue is empty",
        )),
        MemoryCommand::List(f) => Ok(listing(
            &store,
            api::memory_list(&store, &f)?,
            "no memory items match",
        )),
        MemoryCommand::Promote(a) => {
            let report = api::memory_promote(&store, &a, ctx.key())?;
            Ok(Output::new(
                format!("{} is active", report.item.id),
                json!(report),
            ))
        }
        MemoryCommand::Reject(a) => {
            let report = api::memory_reject(&store, &a, ctx.key())?;
            Ok(Output::new(
                format!("{} rejected (invalid)", report.item.id),
                json!(report),
            ))
        }
        MemoryCommand::Edit(a) => {
            let (label, doc) = read_doc(&store, &source(a.file.as_deref(), a.stdin.as_deref())?)?;
            let report = api::memory_edit(&store, &a.id, &doc, &label, ctx.key())?;
            Ok(Output::new(
                format!("{} edited", report.item.id),
                json!(report),
            ))
        }
        MemoryCommand::Delete(a) => {
            let mcr = json!({"op": "delete", "target_id": a.id, "rationale": a.reason});
            let staged = api::memory_propose_document(
                &store,
                &a.run,
                &mcr,
                Map::new(),
                "memory delete",
                ctx.key(),
            )?;
            let batch = staged.batch_id.clone();
            if !a.allow_outside_milestone {
                return Ok(Output::new(
                    format!(
                        "{}staged {batch}: delete {}\ncommit it at a milestone: cairn milestone {} --reason R --commit-batch {batch} (or now: cairn memory commit {batch} --allow-outside-milestone)",
                        if staged.replayed { "(replayed) " } else { "" },
                        a.id,
                        a.run
                    ),
                    json!({"proposed": staged, "committed": null}),
                ));
            }
            // The commit is keyed apart from the proposal, so a retry
            // replays both steps.
            let key = ctx.key().map(|k| format!("{k}/commit"));
            let req = MemoryCommitRequest {
                batch: batch.clone(),
                allow_outside_milestone: true,
            };
            let committed = api::memory_commit(&store, &req, key.as_deref())?;
            Ok(Output::new(
                format!(
                    "{} deleted (invalid) by {batch}, outside a milestone (override logged in {})",
                    a.id,
                    &committed.event.commit[..12]
                ),
                json!({"proposed": staged, "committed": committed}),
            ))
        }
        MemoryCommand::Import(a) => {
            let limits = store.config()?.parse_limits();
            let bar = super::search::progress_bar();
            // The file is read twice, a line at a time: checked, then written.
            let records = || jsonl_records(&a.file, limits);
            let report = memory::import_stream(&store, records, &a.file, a.batch, &bar)?;
            Ok(Output::new(
                format!(
                    "imported {} item(s) in {} commit(s)",
                    report.imported, report.commits
                ),
                json!(report),
            ))
        }
        MemoryCommand::Show(a) => {
            let item = api::memory_show(&store, &a)?;
            Ok(Output::new(item.to_yaml().trim_end(), json!(item)))
        }
        MemoryCommand::History(a) => {
            let report = api::memory_history(&store, &a)?;
            let human = report
                .versions
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
            Ok(Output::new(human, json!(report)))
        }
    }
}
