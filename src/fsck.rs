//! `fsck`: checks a store's tip against every rule cairn enforces on writes.
//!
//! It validates every canonical file against its schema, checks that ids
//! match their paths (and shards), that files are regular files, that each
//! run's ledger seqs are gap-free and end at the working set's `_update_seq`,
//! that the mirror matches a fresh render, and runs git's own connectivity
//! check; each problem names the commit that last changed its file, so damage
//! from a `git commit --no-verify` is traced to its commit (a canonical
//! file deleted that way included). [`fsck`] reports
//! and never changes anything; [`repair`] commits the mechanical fixes.

use std::collections::BTreeMap;

use git2::Oid;

use crate::error::{Finding, Result};
use crate::ledger::{self, parse_message, EventDraft, EventType};
use crate::store::Store;
use crate::{layout, rules, schema};

/// Every problem found at the tip of the store (empty when healthy). Each
/// problem with a file names the commit that last changed the file.
pub fn fsck(store: &Store) -> Result<Vec<Finding>> {
    let mut findings = Vec::new();
    // A merge git left half done: the work tree is neither side; say so
    // first, with the files that hold conflict markers.
    if let Some((state, conflicted)) = store.merge_state()? {
        findings.push(Finding::new(
            store.workdir().unwrap_or(store.git_dir()).display().to_string(),
            "merge_in_progress",
            format!(
                "a git {state} is in progress; `cairn sync --resolve` (or `cairn fsck --repair`) redoes it by the schemas, keeping both sides"
            ),
        ));
        for path in conflicted {
            findings.push(Finding::new(
                path,
                "conflict_markers",
                "conflicted in git's index: the work-tree file holds conflict markers",
            ));
        }
    }
    let tip = store.require_tip()?;
    let config = store.config()?;
    let limits = schema::ParseLimits {
        max_bytes: config.limits.max_file_bytes,
        max_depth: config.limits.max_depth,
    };
    let mut ws_seqs: BTreeMap<String, u64> = BTreeMap::new();
    if store.read_file(tip, layout::CONFIG)?.is_none() {
        findings.push(Finding::new(
            layout::CONFIG,
            "required_file",
            "the store has no cairn.yaml",
        ));
    }
    for (path, blob, regular) in store.walk_files(tip, "")? {
        if let Some(f) = rules::check_path(&path) {
            findings.push(f);
            continue;
        }
        let size = store.blob_size(blob)?;
        let after = if !regular {
            rules::After::NotRegular
        } else if size > limits.max_bytes {
            rules::After::Oversized(size)
        } else if layout::schema_for(&path).is_none() {
            continue;
        } else {
            let bytes = store.read_blob(blob)?;
            let found = rules::check_change(
                &path,
                None,
                rules::After::Content(&bytes),
                limits,
                rules::SeqRule::Monotonic,
            );
            if found.is_empty() && layout::schema_for(&path) == Some("working_set") {
                if let Some(seq) = rules::update_seq(&bytes) {
                    let run = layout::run_of(&path).unwrap_or_default();
                    ws_seqs.insert(run.to_string(), seq);
                }
            }
            findings.extend(found);
            continue;
        };
        findings.extend(rules::check_change(
            &path,
            None,
            after,
            limits,
            rules::SeqRule::Monotonic,
        ));
    }
    // Ledger seqs per run, oldest first: 0, 1, 2, ... ending at the file's seq.
    let mut seqs: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
    for id in store.history(tip, None)? {
        let info = store.commit_info(id)?;
        let parsed = parse_message(&info.message);
        if let (Some(run), Some(seq)) = (parsed.trailer("Cairn-Run"), parsed.trailer("Cairn-Seq")) {
            if let Ok(seq) = seq.parse::<u64>() {
                seqs.entry(run.to_string())
                    .or_default()
                    .push((seq, id.to_string()));
            }
        }
        // A sync merge replays the other side's patches: the seqs they took
        // on the merged line are in its payload.
        for (run, seq) in ledger::replayed_seqs(&parsed) {
            seqs.entry(run).or_default().push((seq, id.to_string()));
        }
    }
    for (run, mut list) in seqs {
        // Seqs from every line of history: the two sides of a merge both
        // count from their base, and a sync merge's replayed patches take
        // the next ones. Together they must be 0, 1, 2, ... with no gap
        // (several events may carry one seq: a milestone records the seq
        // it saw). That each commit only moves a run's seq forward is
        // checked per commit (the tip check's monotonic rule).
        list.sort();
        list.dedup_by_key(|(s, _)| *s);
        for (i, (seq, commit)) in list.iter().enumerate() {
            if *seq != i as u64 {
                findings.push(Finding::new(
                    format!("commit {commit}"),
                    "seq_gap_free",
                    format!("run {run}: ledger seq {seq} where {i} was expected"),
                ));
                break;
            }
        }
        if let (Some((last, _)), Some(file_seq)) = (list.last(), ws_seqs.get(&run)) {
            if last != file_seq {
                findings.push(Finding::new(
                    layout::working_set(&run),
                    "seq_matches_ledger",
                    format!(
                        "_update_seq is {file_seq} but the ledger's last seq for the run is {last}"
                    ),
                ));
            }
        }
    }
    findings.extend(crate::episode::check(store)?);
    findings.extend(merges_keep_both_sides(store, tip)?);
    // What the commits since the last validated one changed (seqs going back).
    for f in rules::check_tip(store, tip, limits)? {
        if !findings
            .iter()
            .any(|g| g.subject == f.subject && g.rule == f.rule)
        {
            findings.push(f);
        }
    }
    // The mirror can only be compared when the files it shows are readable.
    let mirror = match crate::mirror::check(store) {
        Ok(m) => m,
        Err(_) if !findings.is_empty() => Default::default(),
        Err(e) => return Err(e),
    };
    for (list, message) in [
        (&mirror.differ, "differs from what cairn renders"),
        (&mirror.missing, "is missing"),
        (&mirror.extra, "is not a page cairn generates"),
    ] {
        for p in list {
            findings.push(
                Finding::new(
                    p.clone(),
                    "mirror_current",
                    format!("the mirror page {message}"),
                )
                .fix("`cairn fsck --repair` (or `cairn mirror`) regenerates the mirror"),
            );
        }
    }
    if let Err(e) = store.git_connectivity_check() {
        findings.push(Finding::new(
            store.git_dir().display().to_string(),
            "git_connectivity",
            e.to_string(),
        ));
    }
    rules::attribute(store, tip, &mut findings)?;
    Ok(findings)
}

/// Kinds of file cairn never deletes: a merge that loses one lost an
/// acknowledged write.
const KEPT_KINDS: [&str; 6] = [
    "memory_item",
    "episode",
    "mcr_batch",
    "interaction",
    "working_set",
    "conflict_record",
];

/// Checks every merge in history against both of its parents: a file of a
/// kind cairn never deletes that a parent added (or kept) and the merge
/// dropped, or a context item a parent appended to a working set that the
/// merge dropped (and did not record as evicted), is a lost acknowledged
/// write. cairn's own merges keep both sides; this catches merges made by
/// hand, or by git without cairn's drivers.
fn merges_keep_both_sides(store: &Store, tip: Oid) -> Result<Vec<Finding>> {
    let mut findings = Vec::new();
    for id in store.history(tip, None)? {
        let info = store.commit_info(id)?;
        if info.parents.len() < 2 {
            continue;
        }
        let base = store.merge_base(info.parents[0], info.parents[1])?;
        let evicted: Vec<String> = store
            .event_of(id)?
            .payload
            .get("evicted")
            .and_then(serde_json::Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.get("id").and_then(|i| i.as_str()).map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        for (i, parent) in info.parents.iter().enumerate() {
            let others: Vec<Oid> = info
                .parents
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, p)| *p)
                .collect();
            for change in store.tree_changes(Some(*parent), id)? {
                let Some(kind) = layout::schema_for(&change.path) else {
                    continue;
                };
                if !KEPT_KINDS.contains(&kind) {
                    continue;
                }
                let in_base = match base {
                    Some(b) => store.blob_id(b, &change.path)?.is_some(),
                    None => false,
                };
                if change.new.is_none() {
                    // Deleted by the merge: fine only if another side deleted
                    // what the base had.
                    let mut deleted_elsewhere = false;
                    for o in &others {
                        deleted_elsewhere |= in_base && store.blob_id(*o, &change.path)?.is_none();
                    }
                    // Put back since (by hand or `fsck --repair`): nothing lost.
                    let restored = store.blob_id(tip, &change.path)?.is_some();
                    if !deleted_elsewhere && !restored {
                        findings.push(lost(
                            id,
                            *parent,
                            &change.path,
                            "the merge dropped the file",
                        ));
                    }
                    continue;
                }
                if kind != "working_set" || change.old.is_none() {
                    continue;
                }
                let ids = |commit: Option<Oid>| -> Result<Vec<String>> {
                    let Some(c) = commit else {
                        return Ok(Vec::new());
                    };
                    let Some(bytes) = store.read_file(c, &change.path)? else {
                        return Ok(Vec::new());
                    };
                    let v = crate::store::parse_yaml(&change.path, &bytes)?;
                    Ok(["pinned_context", "sliding_context"]
                        .iter()
                        .flat_map(|l| {
                            v.get(*l)
                                .and_then(|a| a.as_array())
                                .cloned()
                                .unwrap_or_default()
                        })
                        .filter_map(|it| it.get("id").and_then(|i| i.as_str()).map(str::to_string))
                        .collect())
                };
                let (at_parent, at_base, at_merge) =
                    (ids(Some(*parent))?, ids(base)?, ids(Some(id))?);
                let at_tip = ids(Some(tip))?;
                for item in at_parent {
                    if !at_base.contains(&item)
                        && !at_merge.contains(&item)
                        && !at_tip.contains(&item)
                        && !evicted.contains(&item)
                    {
                        findings.push(lost(
                            id,
                            *parent,
                            &change.path,
                            &format!(
                                "the merge dropped context item {item:?} that this side appended"
                            ),
                        ));
                    }
                }
            }
        }
    }
    Ok(findings)
}

fn lost(merge: Oid, parent: Oid, path: &str, what: &str) -> Finding {
    let mut f = Finding::new(
        path,
        "merge_kept_both_sides",
        format!(
            "{what} (merge {merge}, parent {parent}); its last version is in the parent's history"
        ),
    );
    f.commit = Some(merge.to_string());
    f
}

/// What [`repair`] did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RepairReport {
    /// One line per fix made.
    pub actions: Vec<String>,
    /// The commits that hold the fixes.
    pub commits: Vec<String>,
    /// What fsck still finds afterwards (fixes that are not mechanical).
    pub remaining: Vec<Finding>,
}

/// Rules about a file's own content, fixed by restoring its last good version.
fn is_content_rule(rule: &str) -> bool {
    !matches!(
        rule,
        "episode_immutable"
            | "episode_tagged"
            | "seq_gap_free"
            | "seq_matches_ledger"
            | "seq_consistency"
            | "git_connectivity"
            | "mirror_current"
            | "required_file"
            | "merge_kept_both_sides"
            | "kept_file_deleted"
    )
}

/// The newest version of `path` on the first-parent line from `tip` that
/// keeps every content rule, if any.
fn last_good_version(
    store: &Store,
    tip: Oid,
    path: &str,
    limits: schema::ParseLimits,
) -> Result<Option<Vec<u8>>> {
    let mut at = Some(tip);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..10_000 {
        let Some(id) = at else { break };
        if let Some((blob, regular)) = store.entry(id, path)? {
            if regular && seen.insert(blob) && store.blob_size(blob)? <= limits.max_bytes {
                let bytes = store.read_blob(blob)?;
                let found = rules::check_change(
                    path,
                    None,
                    rules::After::Content(&bytes),
                    limits,
                    rules::SeqRule::Monotonic,
                );
                if found.is_empty() {
                    return Ok(Some(bytes));
                }
            }
        }
        at = store.commit_info(id)?.parents.first().copied();
    }
    Ok(None)
}

/// Commits the mechanical fixes for what [`fsck`] finds: episodes restored
/// from their tags; files that break a content rule restored to their last
/// good version (or removed when they never had one — history keeps them);
/// the mirror regenerated. Builds on an invalid tip, which is the point.
pub fn repair(store: &Store) -> Result<RepairReport> {
    let mut report = RepairReport::default();
    // A merge left half done is made again by the schemas, both sides kept.
    let mut merged = crate::sync::SyncReport::default();
    if crate::sync::resolve_in_progress(store, &mut merged)? {
        report.actions.push(format!(
            "redid the git merge by the schemas ({} conflict record(s))",
            merged.conflicts.len()
        ));
        report.commits.extend(merged.merges);
    }
    let tip = store.require_tip()?;
    let config = store.config()?;
    let limits = schema::ParseLimits {
        max_bytes: config.limits.max_file_bytes,
        max_depth: config.limits.max_depth,
    };
    let findings = fsck(store)?;
    let tags: BTreeMap<String, (String, String)> = store
        .tags_with_prefix("cairn/")?
        .into_iter()
        .filter_map(|(name, message)| {
            let path = layout::episode_of_tag(&name).map(|(run, ep)| layout::episode(run, ep))?;
            Some((path, (name, message)))
        })
        .collect();
    let mut changes = crate::store::Changes::new();
    // Episodes first: their tags hold their exact content.
    let mut ordered: Vec<&Finding> = findings.iter().collect();
    ordered.sort_by_key(|f| f.rule != "episode_immutable");
    for f in ordered {
        if changes.contains_key(&f.subject) {
            continue;
        }
        if f.rule == "merge_kept_both_sides" && store.entry(tip, &f.subject)?.is_none() {
            // A file a merge dropped: its parent's version comes back.
            let parent = f
                .message
                .rsplit("parent ")
                .next()
                .and_then(|rest| rest.split(')').next())
                .and_then(|id| Oid::from_str(id).ok());
            if let Some(bytes) = parent
                .map(|p| store.read_file(p, &f.subject))
                .transpose()?
                .flatten()
            {
                changes.insert(f.subject.clone(), Some(bytes));
                report
                    .actions
                    .push(format!("restored {} that a merge dropped", f.subject));
            }
        } else if f.rule == "kept_file_deleted" && store.entry(tip, &f.subject)?.is_none() {
            // A file deleted by hand: the version before the deleting commit comes back.
            let before = f
                .commit
                .as_deref()
                .and_then(|c| Oid::from_str(c).ok())
                .map(|c| store.commit_info(c))
                .transpose()?
                .and_then(|info| info.parents.first().copied());
            if let Some(bytes) = before
                .map(|p| store.read_file(p, &f.subject))
                .transpose()?
                .flatten()
            {
                changes.insert(f.subject.clone(), Some(bytes));
                report
                    .actions
                    .push(format!("restored {} that was deleted by hand", f.subject));
            }
        } else if f.rule == "episode_tagged" {
            // A clone that did not fetch the tag: put it back on the commit
            // that wrote the episode, with the episode as its message.
            if let (Some((run, ep)), Some(bytes)) = (
                layout::episode_of_path(&f.subject),
                store.read_file(tip, &f.subject)?,
            ) {
                let made = store.last_change(tip, &f.subject, 100_000)?.unwrap_or(tip);
                let name = layout::episode_tag(run, ep);
                store.create_tag(made, &name, &String::from_utf8_lossy(&bytes))?;
                report
                    .actions
                    .push(format!("re-created tag {name} from {}", f.subject));
            }
        } else if f.rule == "episode_immutable" {
            if let Some((tag, message)) = tags.get(&f.subject) {
                changes.insert(f.subject.clone(), Some(message.clone().into_bytes()));
                report
                    .actions
                    .push(format!("restored {} from tag {tag}", f.subject));
            }
        } else if is_content_rule(&f.rule) && store.entry(tip, &f.subject)?.is_some() {
            match last_good_version(store, tip, &f.subject, limits)? {
                Some(bytes) => {
                    changes.insert(f.subject.clone(), Some(bytes));
                    report.actions.push(format!(
                        "restored {} to its last version that keeps the rules",
                        f.subject
                    ));
                }
                None => {
                    changes.insert(f.subject.clone(), None);
                    report.actions.push(format!(
                        "removed {} (no version of it keeps the rules; history keeps it)",
                        f.subject
                    ));
                }
            }
        }
    }
    if !changes.is_empty() {
        let actions = report.actions.clone();
        let done = store.transact_repair(|_| {
            Ok(crate::store::Mutation {
                changes: changes.clone(),
                event: EventDraft::new(
                    EventType::FsckRepair,
                    format!("fsck --repair: {} fix(es)", actions.len()),
                )
                .payload(serde_json::json!({ "actions": actions })),
                tags: Vec::new(),
            })
        })?;
        report.commits.push(done.commit.to_string());
    }
    if !crate::mirror::check(store)?.clean() {
        let done = crate::mirror::regenerate(store)?;
        if let Some(c) = done.commit {
            report.commits.push(c.commit.to_string());
        }
        report.actions.push(format!(
            "regenerated the mirror ({} page(s))",
            done.pages.len()
        ));
    }
    report.remaining = fsck(store)?;
    Ok(report)
}
