//! `cairn demo`: the seed's end-to-end flow on a fresh store, narrated.

use std::fmt::Write as _;
use std::path::PathBuf;

use cairn::ledger::{self, LogQuery};
use cairn::working_set::{self, BootRequest};
use cairn::{Error, Store};
use serde_json::json;

use super::{CmdResult, Ctx, Output};

/// Run the end-to-end flow on a fresh store: boot, patch, a stale patch refused, eviction,
/// propose memory, milestone with the batch, memory list and history, log.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Where to make the demo store (default: a new temporary folder).
    #[arg(long)]
    root: Option<PathBuf>,
}

pub fn cmd_demo(ctx: &Ctx, a: DemoArgs) -> CmdResult {
    let root = match a.root {
        Some(r) => r,
        None => std::env::temp_dir().join(format!(
            "cairn-demo-{}-{}",
            std::process::id(),
            time::OffsetDateTime::now_utc().unix_timestamp_nanos()
        )),
    };
    let mut out = String::new();
    let mut steps = Vec::new();
    let w = &mut out;

    let store = Store::init(&root, false, ctx.options.clone())?;
    writeln!(
        w,
        "1. cairn init {}\n   a git repository with cairn.yaml; STORE_INIT is its first commit",
        root.display()
    )
    .ok();

    let req = BootRequest {
        objective: "Generate schemas and implement WS/RL/EP for my agent factory.".into(),
        acceptance_criteria: vec![
            "Schemas validate".into(),
            "WS patch applies".into(),
            "Ledger appends".into(),
        ],
        constraints: vec![
            "No unknown WS fields".into(),
            "Commit memory only at milestones".into(),
        ],
        ..Default::default()
    };
    let (ws, c) = working_set::boot(&store, &req, None)?;
    let run = ws.run_id.clone();
    writeln!(
        w,
        "2. cairn run boot --objective ...\n   booted {run} at seq 0 (commit {})",
        &c.event.commit[..12]
    )
    .ok();
    steps.push(json!({"step": "boot", "run_id": run, "commit": c.event.commit}));

    let seed_patch = json!({
        "_schema_version": "2.1",
        "expected_seq": 0,
        "set": {
            "status": "BUSY",
            "current_stage": "PLAN",
            "next_action": "Write strict schemas for all artifacts.",
            "sliding_context": [
                {"id": "ctx1", "content": "Use pinned+sliding contexts.", "timestamp": "2026-01-18T00:00:00Z", "priority": 2}
            ]
        }
    });
    let p = working_set::patch(&store, &run, &seed_patch, "seed patch", None)?;
    writeln!(w, "3. cairn ws patch {run} --expected-seq 0 (the seed's patch)\n   status BUSY, stage PLAN, now at seq {}", p.working_set.update_seq).ok();
    steps.push(json!({"step": "patch", "seq": p.working_set.update_seq}));

    match working_set::patch(&store, &run, &seed_patch, "stale patch", None) {
        Err(e @ Error::SeqConflict { .. }) => {
            writeln!(w, "4. the same patch again (expected_seq 0 is stale)\n   refused: {} [{} exit {}], nothing written", e, e.category().as_str(), e.category().exit_code()).ok();
            steps.push(json!({"step": "stale_patch_refused", "code": e.code()}));
        }
        Err(e) => return Err(e.into()),
        Ok(_) => {
            return Err(Error::Integrity {
                subject: run.clone(),
                message: "a stale patch was accepted".into(),
            }
            .into())
        }
    }

    let long = "Observation from the tool run, kept while the budget allows. ".repeat(4);
    let evicting = json!({
        "expected_seq": p.working_set.update_seq,
        "set": {"budget": {"max_sliding_tokens": 120, "max_pinned_items": 4}},
        "append": {
            "pinned_context": [{"id": "goal", "content": "Ship the schemas first.", "priority": 9}],
            "sliding_context": [
                {"id": "obs1", "content": long, "timestamp": "2026-01-18T01:00:00Z", "priority": 1},
                {"id": "obs2", "content": long, "timestamp": "2026-01-18T02:00:00Z", "priority": 1},
                {"id": "obs3", "content": long, "timestamp": "2026-01-18T03:00:00Z", "priority": 7}
            ]
        }
    });
    let e = working_set::patch(&store, &run, &evicting, "eviction patch", None)?;
    let evicted: Vec<&str> = e.evicted.iter().map(|i| i.id.as_str()).collect();
    let kept: Vec<&str> = e
        .working_set
        .sliding_context
        .iter()
        .map(|i| i.id.as_str())
        .collect();
    writeln!(w, "5. a patch that overflows a 120-token sliding budget\n   evicted {evicted:?} (lowest priority, then oldest); kept {kept:?}; `cairn ws evicted {run}` lists them").ok();
    steps.push(json!({"step": "eviction", "evicted": evicted, "kept": kept}));

    let mcrs = json!({"mcrs": [{
        "_schema_version": "2.1", "op": "add", "type": "fact", "scope": "global",
        "content": "User prefers Python over JavaScript", "confidence": 0.9,
        "rationale": "Observed in multiple conversations", "source_refs": []
    }]});
    let (batch, _) =
        cairn::memory::propose(&store, &run, &mcrs, Default::default(), "seed MCRs", None)?;
    let mem_id = batch
        .item_ids
        .iter()
        .flatten()
        .next()
        .cloned()
        .unwrap_or_default();
    writeln!(w, "6. cairn memory propose {run} (the seed's MCR)\n   staged {}; {mem_id} waits in the review queue as a candidate", batch.batch_id).ok();
    match cairn::memory::commit_batch(&store, &batch.batch_id, false, None) {
        Err(e) => writeln!(
            w,
            "   cairn memory commit {} -> refused [{}]: memory is committed at milestones",
            batch.batch_id,
            e.category().as_str()
        )
        .ok(),
        Ok(_) => None,
    };
    let req = cairn::episode::MilestoneRequest {
        reason: "checkpoint".into(),
        next_entry_point: Some("Continue from PLAN stage.".into()),
        batches: vec![batch.batch_id.clone()],
    };
    let (ep, _) = cairn::episode::milestone(&store, &run, &req, None)?;
    writeln!(w, "7. cairn milestone {run} --reason checkpoint --commit-batch {}\n   episode #{} tagged {}\n   {}", batch.batch_id, ep.ordinal, ep.tag, ep.summary).ok();
    steps.push(json!({"step": "milestone", "episode_id": ep.episode_id, "tag": ep.tag, "batch_id": batch.batch_id}));
    for item in cairn::memory::list(&store, &Default::default())? {
        writeln!(
            w,
            "8. cairn memory list\n   {}  {}  {}  {}",
            item.id,
            item.status.as_str(),
            item.kind,
            item.content
        )
        .ok();
    }
    let versions = cairn::memory::history(&store, &mem_id)?;
    writeln!(w, "9. cairn memory history {mem_id}").ok();
    for v in &versions {
        writeln!(
            w,
            "   {}  {:<18} {}",
            &v.commit[..12],
            v.event_type.as_str(),
            v.item.status.as_str()
        )
        .ok();
    }
    steps.push(json!({"step": "memory", "id": mem_id, "versions": versions.len()}));

    let events = ledger::query(&store, &LogQuery::default())?;
    writeln!(
        w,
        "10. cairn log  ({} events, one per commit)",
        events.len()
    )
    .ok();
    for ev in &events {
        writeln!(
            w,
            "   {}  {:<18} {}",
            &ev.commit[..12],
            ev.event_type.as_str(),
            ev.message.as_deref().unwrap_or_default()
        )
        .ok();
    }
    let at1 = working_set::show(&store, &run, Some(&working_set::At::Seq(1)))?;
    writeln!(w, "11. cairn ws show {run} --at 1\n   replayed from history: seq {}, stage {:?}, {} sliding item(s)", at1.update_seq, at1.current_stage.as_deref().unwrap_or("-"), at1.sliding_context.len()).ok();
    let findings = cairn::fsck::fsck(&store)?;
    writeln!(
        w,
        "12. cairn fsck: {}",
        if findings.is_empty() {
            "clean".to_string()
        } else {
            format!("{} finding(s)", findings.len())
        }
    )
    .ok();
    let run_page = root.join(cairn::mirror::run_page(&run));
    writeln!(
        w,
        "13. the mirror: {} (regenerated in every commit; `cairn watch` follows hand edits)\n   {}:",
        root.join("mirror").display(),
        run_page.display()
    )
    .ok();
    let page = std::fs::read_to_string(&run_page).unwrap_or_default();
    for line in page.lines().skip_while(|l| !l.starts_with("# ")).take(8) {
        writeln!(w, "   | {line}").ok();
    }
    writeln!(
        w,
        "\nThe store is at {} — try `cd {} && git log --stat` or `cairn log`.",
        root.display(),
        root.display()
    )
    .ok();
    Ok(Output::new(
        out.trim_end(),
        json!({"root": root.display().to_string(), "run_id": run, "steps": steps, "events": events.len(), "fsck_findings": findings}),
    ))
}
