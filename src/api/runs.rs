//! Runs, working sets, milestones and episodes: requests and reports.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{invalid_field, required};
use crate::episode::{self, Episode};
use crate::error::{Error, Result};
use crate::ledger::Event;
use crate::working_set::{self, At, BootRequest, ContextItem, Eviction, RunSummary, WorkingSet};
use crate::Store;

// The `display_order`s keep the CLI's `--file` (which reads the request
// from a file) second in `cairn run boot --help`.
/// Boot a run.
#[derive(clap::Args, Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunBootRequest {
    /// What the run is for.
    #[arg(long, required_unless_present = "file", display_order = 0)]
    #[schemars(required)]
    pub objective: Option<String>,
    /// An acceptance criterion (repeatable).
    #[arg(long = "criterion", value_name = "CRITERIA", display_order = 2)]
    #[serde(default)]
    #[schemars(description = "Acceptance criteria.")]
    pub acceptance_criteria: Vec<String>,
    /// A constraint (repeatable).
    #[arg(long = "constraint", value_name = "CONSTRAINTS", display_order = 3)]
    #[serde(default)]
    #[schemars(description = "Constraints.")]
    pub constraints: Vec<String>,
    /// The project the run works on.
    #[arg(long, display_order = 4)]
    #[serde(default)]
    pub project: Option<String>,
    /// An external task id.
    #[arg(long, display_order = 5)]
    #[serde(default)]
    pub task_id: Option<String>,
    /// An external thread id.
    #[arg(long, display_order = 6)]
    #[serde(default)]
    pub thread_id: Option<String>,
    /// Choose the run id (default run_<ULID>).
    #[arg(long, display_order = 7)]
    #[serde(default)]
    pub run_id: Option<String>,
}

impl RunBootRequest {
    /// The library's boot request (the objective is required).
    pub fn to_boot(&self) -> Result<BootRequest> {
        Ok(BootRequest {
            objective: required("objective", self.objective.as_deref())?.to_string(),
            acceptance_criteria: self.acceptance_criteria.clone(),
            constraints: self.constraints.clone(),
            project: self.project.clone(),
            task_id: self.task_id.clone(),
            thread_id: self.thread_id.clone(),
            run_id: self.run_id.clone(),
        })
    }
}

/// What booting a run reports.
#[derive(Debug, Clone, Serialize)]
pub struct RunBootReport {
    /// The run id.
    pub run_id: String,
    /// Its working set at seq 0.
    pub working_set: WorkingSet,
    /// The RUN_BOOTED event.
    pub event: Event,
    /// True when an idempotency key matched an earlier boot.
    pub replayed: bool,
}

/// Boots a run from a library boot request.
pub fn run_boot(store: &Store, req: &BootRequest, key: Option<&str>) -> Result<RunBootReport> {
    let (ws, committed) = working_set::boot(store, req, key)?;
    Ok(RunBootReport {
        run_id: ws.run_id.clone(),
        working_set: ws,
        event: committed.event,
        replayed: committed.replayed,
    })
}

/// List the runs (takes no arguments).
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunListRequest {}

/// The runs in the store.
#[derive(Debug, Clone, Serialize)]
pub struct RunListReport {
    /// Every run at the tip, sorted by id.
    pub runs: Vec<RunSummary>,
}

/// Lists the runs.
pub fn run_list(store: &Store) -> Result<RunListReport> {
    Ok(RunListReport {
        runs: working_set::list(store)?,
    })
}

/// Show a run.
#[derive(clap::Args, Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunShowRequest {
    /// The run.
    pub run: String,
}

/// A run at a glance: its working set and its milestones.
#[derive(Debug, Clone, Serialize)]
pub struct RunShowReport {
    /// The run id.
    pub run_id: String,
    /// Its working set at the tip.
    pub working_set: WorkingSet,
    /// How many milestones it took.
    pub episodes: usize,
    /// The newest milestone, if any.
    pub last_episode: Option<Episode>,
}

/// Shows a run.
pub fn run_show(store: &Store, req: &RunShowRequest) -> Result<RunShowReport> {
    let working_set = working_set::show(store, &req.run, None)?;
    let mut episodes = episode::list(store, &req.run)?;
    Ok(RunShowReport {
        run_id: working_set.run_id.clone(),
        working_set,
        episodes: episodes.len(),
        last_episode: episodes.pop(),
    })
}

/// Close a run: DONE or FAILED for good; it then refuses patches.
#[derive(clap::Args, Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunCloseRequest {
    /// The run.
    pub run: String,
    /// How it ended: `done` (status DONE) or `failed` (status FAILED).
    #[arg(long, default_value = "done", value_parser = ["done", "failed"])]
    #[serde(default = "done")]
    pub outcome: String,
    /// How the run ended, in a sentence (kept in the working set).
    #[arg(long)]
    #[serde(default)]
    pub summary: Option<String>,
}

fn done() -> String {
    "done".into()
}

/// What closing a run reports.
#[derive(Debug, Clone, Serialize)]
pub struct RunCloseReport {
    /// The run id.
    pub run_id: String,
    /// Its working set, closed.
    pub working_set: WorkingSet,
    /// The RUN_CLOSED event.
    pub event: Event,
    /// True when an idempotency key matched an earlier close.
    pub replayed: bool,
}

/// Closes a run.
pub fn run_close(
    store: &Store,
    req: &RunCloseRequest,
    key: Option<&str>,
) -> Result<RunCloseReport> {
    let outcome = match req.outcome.to_ascii_lowercase().as_str() {
        "done" => working_set::Outcome::Done,
        "failed" => working_set::Outcome::Failed,
        other => {
            return Err(invalid_field(
                "outcome",
                "enum",
                format!("outcome {other:?} is neither `done` nor `failed`"),
            ))
        }
    };
    let (ws, c) = working_set::close(store, &req.run, outcome, req.summary.as_deref(), key)?;
    Ok(RunCloseReport {
        run_id: ws.run_id.clone(),
        working_set: ws,
        event: c.event,
        replayed: c.replayed,
    })
}

/// Show a working set.
#[derive(clap::Args, Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WsShowRequest {
    /// The run.
    pub run: String,
    /// A seq (a number) or a commit (id, prefix or ref).
    #[arg(long)]
    #[serde(default)]
    pub at: Option<String>,
}

/// Shows a working set now, or rebuilt at an earlier seq or commit.
pub fn ws_show(store: &Store, req: &WsShowRequest) -> Result<WorkingSet> {
    let at = req.at.as_ref().map(|s| match s.parse::<u64>() {
        Ok(n) if s.len() < 7 => At::Seq(n),
        _ => At::Commit(s.clone()),
    });
    working_set::show(store, &req.run, at.as_ref())
}

/// Patch a working set under the optimistic lock.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WsPatchRequest {
    /// The run.
    pub run: String,
    /// The `_update_seq` the patch was made against (else the patch's own
    /// `expected_seq`). A stale seq is refused with CONFLICT (STALE_SEQ):
    /// re-read the working set and retry.
    #[serde(default)]
    pub expected_seq: Option<u64>,
    /// The patch (the seed's working-set patch: `set`, `append`, `remove`
    /// and friends, with `expected_seq`).
    pub patch: Value,
}

/// What a working-set patch reports.
#[derive(Debug, Clone, Serialize)]
pub struct WsPatchReport {
    /// The run id.
    pub run_id: String,
    /// The new `_update_seq`.
    pub seq: u64,
    /// The working set after the patch.
    pub working_set: WorkingSet,
    /// Items the token budget evicted.
    pub evicted: Vec<ContextItem>,
    /// The WS_UPDATE_APPLIED event.
    pub event: Event,
    /// True when an idempotency key matched an earlier patch.
    pub replayed: bool,
    /// Things that did not stop the write but need saying (not in the JSON).
    #[serde(skip)]
    pub warnings: Vec<String>,
}

/// Puts `expected_seq` into a patch document (or its inner `patch`); a
/// different one already there is refused, naming `what` as where the
/// other one came from (the CLI's `--expected-seq`, a request field).
pub fn set_expected_seq(patch: &mut Value, seq: u64, file: &str, what: &str) -> Result<()> {
    let target = match patch.get_mut("patch") {
        Some(inner) if inner.is_object() => inner,
        _ => patch,
    };
    match target.get("expected_seq").and_then(|v| v.as_u64()) {
        Some(given) if given != seq => Err(Error::Invalid {
            file: file.to_string(),
            pointer: "/expected_seq".into(),
            rule: "expected_seq_matches_flag",
            message: format!("the patch says expected_seq {given} but {what} is {seq}"),
        }),
        _ => {
            if let Some(obj) = target.as_object_mut() {
                obj.insert("expected_seq".into(), json!(seq));
            }
            Ok(())
        }
    }
}

/// Applies a parsed patch document to a run's working set; `file` names
/// the document in errors.
pub fn ws_patch_document(
    store: &Store,
    run: &str,
    patch: &Value,
    file: &str,
    key: Option<&str>,
) -> Result<WsPatchReport> {
    let out = working_set::patch(store, run, patch, file, key)?;
    Ok(WsPatchReport {
        run_id: run.to_string(),
        seq: out.working_set.update_seq,
        working_set: out.working_set,
        evicted: out.evicted,
        event: out.committed.event,
        replayed: out.committed.replayed,
        warnings: out.committed.warnings,
    })
}

/// Applies a [`WsPatchRequest`] (the patch is named `/patch` in errors).
pub fn ws_patch(store: &Store, req: &WsPatchRequest, key: Option<&str>) -> Result<WsPatchReport> {
    if !req.patch.is_object() {
        return Err(invalid_field(
            "patch",
            "type",
            "patch must be an object (the working-set patch)",
        ));
    }
    let mut patch = req.patch.clone();
    if let Some(seq) = req.expected_seq {
        set_expected_seq(&mut patch, seq, super::REQUEST, "expected_seq")?;
    }
    ws_patch_document(store, &req.run, &patch, "patch", key)
}

/// List evicted items.
#[derive(clap::Args, Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WsEvictedRequest {
    /// The run.
    pub run: String,
}

/// Every item the token budget ever evicted from a run.
#[derive(Debug, Clone, Serialize)]
pub struct WsEvictedReport {
    /// The run id.
    pub run_id: String,
    /// The evicted items, oldest first, with the commit that evicted each.
    pub evicted: Vec<Eviction>,
}

/// Lists a run's evicted items.
pub fn ws_evicted(store: &Store, req: &WsEvictedRequest) -> Result<WsEvictedReport> {
    Ok(WsEvictedReport {
        run_id: req.run.clone(),
        evicted: working_set::evicted(store, &req.run)?,
    })
}

/// Take a milestone: write the episode, commit the chosen batches, tag it.
#[derive(clap::Args, Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MilestoneRequest {
    /// The run.
    pub run: String,
    /// Why the checkpoint is taken.
    #[arg(long)]
    pub reason: String,
    /// Where to pick up from.
    #[arg(long)]
    #[serde(default)]
    pub next_entry_point: Option<String>,
    /// A proposed batch of this run to commit as memory (repeatable).
    #[arg(long = "commit-batch", value_name = "BATCH")]
    #[serde(default)]
    #[schemars(description = "Proposed batches of this run to commit as memory.")]
    pub batches: Vec<String>,
}

/// What a milestone reports.
#[derive(Debug, Clone, Serialize)]
pub struct MilestoneReport {
    /// The episode written.
    pub episode: Episode,
    /// The MILESTONE event.
    pub event: Event,
    /// True when an idempotency key matched an earlier milestone.
    pub replayed: bool,
}

/// Takes a milestone.
pub fn milestone(
    store: &Store,
    req: &MilestoneRequest,
    key: Option<&str>,
) -> Result<MilestoneReport> {
    let lib = episode::MilestoneRequest {
        reason: req.reason.clone(),
        next_entry_point: req.next_entry_point.clone(),
        batches: req.batches.clone(),
    };
    let (episode, c) = episode::milestone(store, &req.run, &lib, key)?;
    Ok(MilestoneReport {
        episode,
        event: c.event,
        replayed: c.replayed,
    })
}

/// A run's episodes.
#[derive(clap::Args, Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EpisodeListRequest {
    /// The run.
    pub run: String,
}

/// A run's episodes, oldest first.
#[derive(Debug, Clone, Serialize)]
pub struct EpisodeListReport {
    /// The episodes.
    pub episodes: Vec<Episode>,
}

/// Lists a run's episodes.
pub fn episode_list(store: &Store, req: &EpisodeListRequest) -> Result<EpisodeListReport> {
    Ok(EpisodeListReport {
        episodes: episode::list(store, &req.run)?,
    })
}

/// One episode, by id or tag.
#[derive(clap::Args, Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EpisodeShowRequest {
    /// `ep_...` or `cairn/<run>/<ep>`.
    pub id: String,
}

/// Shows one episode.
pub fn episode_show(store: &Store, req: &EpisodeShowRequest) -> Result<Episode> {
    episode::show(store, &req.id)
}
