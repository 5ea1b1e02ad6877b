//! `fsck`: checks a store's tip against every rule cairn enforces on writes.
//!
//! It validates every canonical file against its schema, checks that ids
//! match their paths (and shards), that files are regular files, that each
//! run's ledger seqs are gap-free and end at the working set's `_update_seq`,
//! and runs git's own connectivity check. It reports; it never changes anything.

use std::collections::BTreeMap;

use crate::error::{Finding, Result};
use crate::ledger::parse_message;
use crate::store::Store;
use crate::{layout, schema};

fn finding(subject: impl Into<String>, rule: &str, message: impl Into<String>) -> Finding {
    Finding {
        subject: subject.into(),
        rule: rule.into(),
        message: message.into(),
    }
}

/// Every problem found at the tip of the store (empty when healthy).
pub fn fsck(store: &Store) -> Result<Vec<Finding>> {
    let mut findings = Vec::new();
    let tip = store.require_tip()?;
    let config = store.config()?;
    let limits = schema::ParseLimits {
        max_bytes: config.limits.max_file_bytes,
        max_depth: config.limits.max_depth,
    };
    let mut ws_seqs: BTreeMap<String, u64> = BTreeMap::new();
    if store.read_file(tip, layout::CONFIG)?.is_none() {
        findings.push(finding(
            layout::CONFIG,
            "required_file",
            "the store has no cairn.yaml",
        ));
    }
    for (path, blob, regular) in store.walk_files(tip, "")? {
        let Some(name) = layout::schema_for(&path) else {
            continue;
        };
        if !regular {
            findings.push(finding(
                &path,
                "regular_file",
                "canonical files must be regular files (no symlinks)",
            ));
            continue;
        }
        let bytes = store.read_blob(blob)?;
        let value = match schema::parse_document(&path, &bytes, limits) {
            Ok(v) => v,
            Err(e) => {
                findings.push(finding(&path, "parse", e.to_string()));
                continue;
            }
        };
        for v in schema::violations(name, &value) {
            findings.push(finding(
                &path,
                &v.rule,
                format!(
                    "at {}: {}",
                    if v.pointer.is_empty() {
                        "/"
                    } else {
                        &v.pointer
                    },
                    v.message
                ),
            ));
        }
        if name == "working_set" {
            let run = value["run_id"].as_str().unwrap_or_default();
            if layout::working_set(run) != path {
                findings.push(finding(
                    &path,
                    "id_matches_path",
                    format!("run_id {run:?} belongs at {}", layout::working_set(run)),
                ));
            }
            if let Some(seq) = value["_update_seq"].as_u64() {
                ws_seqs.insert(run.to_string(), seq);
            }
        }
        // Ids must match the paths they live at.
        let expected = match name {
            "memory_item" => value["id"].as_str().map(|id| {
                layout::memory_item(
                    value["scope"].as_str().unwrap_or_default(),
                    value["scope_id"].as_str(),
                    id,
                )
            }),
            "mcr_batch" => match (value["run_id"].as_str(), value["batch_id"].as_str()) {
                (Some(r), Some(b)) => Some(layout::batch(r, b)),
                _ => None,
            },
            "episode" => match (value["run_id"].as_str(), value["episode_id"].as_str()) {
                (Some(r), Some(e)) => Some(layout::episode(r, e)),
                _ => None,
            },
            _ => None,
        };
        if let Some(expected) = expected {
            if expected != path {
                findings.push(finding(
                    &path,
                    "id_matches_path",
                    format!("by its ids this file belongs at {expected}"),
                ));
            }
        }
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
    }
    for (run, mut list) in seqs {
        list.reverse();
        // Several events may carry one seq (a milestone records the seq it saw).
        list.dedup_by_key(|(s, _)| *s);
        for (i, (seq, commit)) in list.iter().enumerate() {
            if *seq != i as u64 {
                findings.push(finding(
                    format!("commit {commit}"),
                    "seq_gap_free",
                    format!("run {run}: ledger seq {seq} where {i} was expected"),
                ));
                break;
            }
        }
        if let (Some((last, _)), Some(file_seq)) = (list.last(), ws_seqs.get(&run)) {
            if last != file_seq {
                findings.push(finding(
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
    if let Err(e) = store.git_connectivity_check() {
        findings.push(finding(
            store.git_dir().display().to_string(),
            "git_connectivity",
            e.to_string(),
        ));
    }
    Ok(findings)
}
