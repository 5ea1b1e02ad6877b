//! The rules every commit to a store keeps, whoever makes it.
//!
//! cairn validates its own writes in the transaction path. Hand commits are
//! validated by the pre-commit hook against the staged content; commits that
//! bypassed the hooks (`git commit --no-verify`) are found by `cairn fsck`
//! and before the next cairn write, which refuses to build on them. All of
//! them ask the questions here, one changed file at a time, and report every
//! problem at once as [`Finding`]s that name the file, the field, the rule
//! and the fix:
//! - every file is a regular file (no symlinks, no submodules);
//! - no file exceeds `limits.max_file_bytes`;
//! - canonical files parse (strict YAML 1.2 within the limits) and match
//!   their schema;
//! - ids match the paths the files live at;
//! - episodes are never edited or deleted;
//! - memory items, batches, run files and project state are never deleted
//!   by hand (cairn retires them through its own commands; history keeps
//!   every version);
//! - a working set's `_update_seq` grows by exactly one per commit, or, over
//!   a range of commits cairn did not write, never goes back.

use git2::Oid;
use serde_json::Value;

use crate::error::{Error, Finding, Result};
use crate::ledger::parse_message;
use crate::store::{PathChange, Store};
use crate::{layout, schema};

/// How a working set's `_update_seq` may move across the change checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqRule {
    /// One commit: a new working set starts at 0, an edited one moves by one.
    Step,
    /// Several commits: the seq never goes back.
    Monotonic,
}

/// How far back [`check_tip`] looks for a commit cairn validated.
const TRUSTED_WALK: usize = 10_000;

/// The path a canonical document belongs at by its ids, if its schema has ids.
pub fn expected_path(schema_name: &str, value: &Value) -> Option<String> {
    match schema_name {
        "working_set" => value["run_id"].as_str().map(layout::working_set),
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
    }
}

/// A parse error as a finding.
fn parse_finding(path: &str, e: &Error) -> Finding {
    match e {
        Error::TooLarge { bytes, limit, .. } => Finding::new(
            path,
            "max_file_bytes",
            format!(
                "the file is {}, over limits.max_file_bytes ({})",
                schema::human_bytes(*bytes),
                schema::human_bytes(*limit)
            ),
        )
        .fix("keep the file under the limit (split it) or raise limits.max_file_bytes in cairn.yaml"),
        Error::TooDeep { pointer, limit, .. } => Finding::new(
            path,
            "max_depth",
            format!("nests deeper than limits.max_depth ({limit})"),
        )
        .at(pointer.clone())
        .fix("flatten the document"),
        Error::Parse {
            format, message, ..
        } => Finding::new(path, "parse", format!("not valid {format}: {message}"))
            .fix("fix the YAML at the line and column given (strict YAML 1.2: no duplicate keys, no tabs for indentation)"),
        other => Finding::new(path, "parse", other.to_string())
            .fix("fix the YAML at the line and column given (strict YAML 1.2: no duplicate keys, no tabs for indentation)"),
    }
}

fn fix_for(schema_name: &str, keyword: &str) -> String {
    match keyword {
        "additionalProperties" | "unevaluatedProperties" => format!(
            "remove the field or correct its spelling; `cairn schema show {schema_name}` lists the allowed fields"
        ),
        "required" => format!("add the missing field; `cairn schema show {schema_name}` describes it"),
        _ => format!("`cairn schema show {schema_name}` says what the field must hold"),
    }
}

/// Checks one document's content: parse, schema, ids against its path.
/// Returns the parsed value when it parses.
pub fn check_document(
    path: &str,
    bytes: &[u8],
    limits: schema::ParseLimits,
    findings: &mut Vec<Finding>,
) -> Option<Value> {
    let name = layout::schema_for(path)?;
    let value = match schema::parse_document(path, bytes, limits) {
        Ok(v) => v,
        Err(e) => {
            findings.push(parse_finding(path, &e));
            return None;
        }
    };
    for v in schema::violations(name, &value) {
        findings.push(
            Finding::new(path, v.rule.clone(), v.message.clone())
                .at(v.pointer.clone())
                .fix(fix_for(name, &v.rule)),
        );
    }
    if let Some(expected) = expected_path(name, &value) {
        if expected != path {
            findings.push(
                Finding::new(
                    path,
                    "id_matches_path",
                    format!("by its ids this file belongs at {expected}"),
                )
                .fix("move the file there, or correct the id fields"),
            );
        }
    }
    Some(value)
}

/// A working set's `_update_seq`, if the bytes parse.
pub fn update_seq(bytes: &[u8]) -> Option<u64> {
    schema::parse_document(
        "working set",
        bytes,
        schema::ParseLimits {
            max_bytes: u64::MAX,
            max_depth: 256,
        },
    )
    .ok()?
    .get("_update_seq")?
    .as_u64()
}

/// What a changed path holds after the change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After<'a> {
    /// The path was removed.
    Gone,
    /// A symlink or a submodule.
    NotRegular,
    /// A regular file too large to read (its size).
    Oversized(u64),
    /// A regular file's bytes.
    Content(&'a [u8]),
}

/// The finding for a path that leaves the store or enters git's folder
/// (`..`, `.git` in any case, an empty part): only a hand-made tree holds
/// one, git refuses to check it out, and cairn never writes it.
pub fn check_path(path: &str) -> Option<Finding> {
    (!crate::git_index::plain_path(path)).then(|| {
        Finding::new(
            path,
            "safe_path",
            "the path leaves the store or enters git's folder (`..`, `.git`, an empty part); git refuses to check it out and cairn never writes it",
        )
        .fix("rewrite the commit without it (neither git nor cairn made it)")
    })
}

/// For the kinds of file that are never deleted by hand (memory items,
/// batches, run files, trusted project state), what to do instead.
/// Episodes have their own rule; the config, the registry, conflict
/// records and files cairn does not know may be removed.
fn kept_instead(kind: &str, path: &str) -> Option<String> {
    let id = path
        .rsplit('/')
        .next()
        .and_then(|f| f.strip_suffix(".yaml"))
        .unwrap_or(path);
    let instead = match kind {
        "memory_item" => format!(
            "retire the item through cairn instead: `cairn memory reject {id} --reason R` for a candidate, or propose an MCR {{op: delete, target_id: {id}}} with `cairn memory propose RUN` for an active item"
        ),
        "mcr_batch" => "a batch records what a run proposed; reject its items (`cairn memory reject ID --reason R`) instead".into(),
        "working_set" | "interaction" => "a run's files are its history; leave them in place (a finished run simply stays idle)".into(),
        "project_state" => format!("invalidate its entries instead: `cairn state invalidate {id} CATEGORY KEY`"),
        _ => return None,
    };
    Some(instead)
}

/// Checks one changed file: `old` is its content before (if it existed).
pub fn check_change(
    path: &str,
    old: Option<&[u8]>,
    after: After<'_>,
    limits: schema::ParseLimits,
    seq: SeqRule,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    if let Some(f) = check_path(path) {
        findings.push(f);
        return findings;
    }
    let is_episode = layout::schema_for(path) == Some("episode");
    if is_episode && old.is_some() && after != old.map_or(After::Gone, After::Content) {
        let what = if after == After::Gone {
            "deleted"
        } else {
            "edited"
        };
        findings.push(
            Finding::new(
                path,
                "episode_immutable",
                format!("an existing episode was {what}; episodes are never edited or deleted"),
            )
            .fix(format!(
                "restore it: `git restore --staged --worktree {path}` (or `cairn fsck --repair` after a commit)"
            )),
        );
    }
    if !is_episode && old.is_some() && after == After::Gone {
        if let Some(instead) = layout::schema_for(path).and_then(|k| kept_instead(k, path)) {
            findings.push(
                Finding::new(
                    path,
                    "kept_file_deleted",
                    format!(
                        "{} was deleted by hand; cairn keeps these files so that nothing leaves history: {instead}",
                        layout::schema_for(path).unwrap_or_default().replace('_', " ")
                    ),
                )
                .fix(format!(
                    "restore it: `git restore --staged --worktree {path}` (or `cairn fsck --repair` after a commit)"
                )),
            );
        }
    }
    let bytes = match after {
        After::Gone => return findings,
        After::Content(b) if b.len() as u64 > limits.max_bytes => {
            return check_change(path, old, After::Oversized(b.len() as u64), limits, seq);
        }
        After::Content(b) => b,
        After::Oversized(size) => {
            findings.push(
                Finding::new(
                    path,
                    "max_file_bytes",
                    format!(
                        "the file is {}, over limits.max_file_bytes ({})",
                        schema::human_bytes(size),
                        schema::human_bytes(limits.max_bytes)
                    ),
                )
                .fix(format!(
                    "keep large files out of the store (`git rm --cached {path}`), or raise limits.max_file_bytes in cairn.yaml"
                )),
            );
            return findings;
        }
        After::NotRegular => {
            findings.push(
                Finding::new(
                    path,
                    "regular_file",
                    "store files must be regular files (no symlinks or submodules)",
                )
                .fix(format!(
                    "replace the link with the file's content, or `git rm --cached {path}`"
                )),
            );
            return findings;
        }
    };
    let Some(value) = check_document(path, bytes, limits, &mut findings) else {
        return findings;
    };
    if layout::schema_for(path) == Some("working_set") {
        let before = old.and_then(update_seq);
        if let Some(after) = value["_update_seq"].as_u64() {
            let problem = match (seq, before) {
                (SeqRule::Step, None) if after != 0 => {
                    Some(format!("a new working set starts at _update_seq 0, not {after}"))
                }
                (SeqRule::Step, Some(b)) if after != b + 1 => Some(format!(
                    "_update_seq went from {b} to {after}; an edit moves it by exactly one (leave it at {b} and the hook sets {})",
                    b + 1
                )),
                (SeqRule::Monotonic, Some(b)) if after < b => {
                    Some(format!("_update_seq went back from {b} to {after}"))
                }
                _ => None,
            };
            if let Some(message) = problem {
                findings.push(
                    Finding::new(path, "seq_consistency", message)
                        .at("/_update_seq")
                        .fix("leave _update_seq as it was: the pre-commit hook bumps it"),
                );
            }
        }
    }
    findings
}

/// Checks changes between two commits, or between the tip and the staged
/// index; `read_new` supplies the new content of a path (a hook may have
/// changed it before staging).
pub fn check_changes(
    store: &Store,
    changes: &[PathChange],
    read_new: &dyn Fn(&PathChange) -> Result<Option<Vec<u8>>>,
    limits: schema::ParseLimits,
    seq: SeqRule,
) -> Result<Vec<Finding>> {
    let mut findings = Vec::new();
    for c in changes {
        let old = match c.old {
            Some(id) if layout::schema_for(&c.path).is_some() => Some(store.read_blob(id)?),
            _ => None,
        };
        let new = match c.new {
            Some((_, false)) => None,
            Some((id, true)) if store.blob_size(id)? <= limits.max_bytes => read_new(c)?,
            _ => None,
        };
        let after = match (c.new, &new) {
            (None, _) => After::Gone,
            (Some((_, false)), _) => After::NotRegular,
            (Some(_), Some(bytes)) => After::Content(bytes),
            (Some((id, true)), None) => After::Oversized(store.blob_size(id)?),
        };
        findings.extend(check_change(&c.path, old.as_deref(), after, limits, seq));
    }
    Ok(findings)
}

/// The newest commit on the first-parent line from `tip` that cairn (or a
/// hook) validated when it was made: one carrying the ledger trailers. Merges
/// are never taken as validated (git's pre-commit hook does not see them).
pub fn last_validated(store: &Store, tip: Oid) -> Result<Option<Oid>> {
    let mut at = Some(tip);
    for _ in 0..TRUSTED_WALK {
        let Some(id) = at else { return Ok(None) };
        let info = store.commit_info(id)?;
        let trailer = parse_message(&info.message)
            .trailer("Cairn-Event")
            .is_some();
        if trailer && info.parents.len() <= 1 {
            return Ok(Some(id));
        }
        at = info.parents.first().copied();
    }
    Ok(None)
}

/// Checks what the commits since the last validated one changed, so that
/// cairn does not build on a tip that a `--no-verify` commit broke. Each
/// finding names the commit that last changed its file.
pub fn check_tip(store: &Store, tip: Oid, limits: schema::ParseLimits) -> Result<Vec<Finding>> {
    let base = last_validated(store, tip)?;
    if base == Some(tip) {
        return Ok(Vec::new());
    }
    let changes = store.tree_changes(base, tip)?;
    let read = |c: &PathChange| -> Result<Option<Vec<u8>>> {
        c.new.map(|(id, _)| store.read_blob(id)).transpose()
    };
    let mut findings = check_changes(store, &changes, &read, limits, SeqRule::Monotonic)?;
    attribute(store, tip, &mut findings)?;
    Ok(findings)
}

/// Fills in the commit that last changed each finding's file.
pub fn attribute(store: &Store, tip: Oid, findings: &mut [Finding]) -> Result<()> {
    // A path git cannot look up (see [`check_path`]) keeps no commit.
    for f in findings
        .iter_mut()
        .filter(|f| f.commit.is_none() && crate::git_index::plain_path(&f.subject))
    {
        if let Some(c) = store.last_change(tip, &f.subject, TRUSTED_WALK)? {
            f.commit = Some(c.to_string());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: schema::ParseLimits = schema::ParseLimits {
        max_bytes: 1 << 20,
        max_depth: 64,
    };

    #[test]
    fn symlinks_and_oversized_files_are_refused_by_rule() {
        let f = check_change("notes.txt", None, After::NotRegular, LIMITS, SeqRule::Step);
        assert_eq!(f[0].rule, "regular_file");
        let big = vec![b'a'; (LIMITS.max_bytes + 1) as usize];
        let f = check_change(
            "notes.txt",
            None,
            After::Content(&big),
            LIMITS,
            SeqRule::Step,
        );
        assert_eq!(f[0].rule, "max_file_bytes");
    }

    #[test]
    fn episodes_may_be_added_but_not_changed() {
        let path = layout::episode("run_a", "ep_1");
        let f = check_change(&path, Some(b"a: 1\n"), After::Gone, LIMITS, SeqRule::Step);
        assert_eq!(f[0].rule, "episode_immutable");
        assert!(f[0].message.contains("deleted"));
    }
}
