//! cairn as git's merge driver, so a plain `git pull` / `git merge` /
//! `git rebase` merges cairn's files by their schemas too.
//!
//! `.gitattributes` (tracked, written by `cairn init` and `cairn hooks
//! install`) routes canonical paths to the `cairn` driver and `mirror/**` to
//! `cairn-derived`; the drivers themselves are defined only in the
//! repository's own `.git/config` by `cairn hooks install`, never globally
//! and never from anything a clone brought: a clone without them gets git's
//! text merge, which `cairn fsck` detects and `cairn sync --resolve` redoes.
//!
//! The driver writes the merged file into `%A` and exits 0; what no rule can
//! decide is written as a conflict record under `.cairn/pending-conflicts/`
//! (git holds the index while drivers run), and the post-merge hook commits
//! those records and regenerates the mirror. Derived files keep our side:
//! they are rendered again from the merged canonical files.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::layout;
use crate::store::Store;

use super::conflicts::Conflict;
use super::{merge_path, Merged};

/// The `.gitattributes` lines that route cairn's files to its drivers.
pub const ATTRIBUTES: &[&str] = &[
    "cairn.yaml merge=cairn",
    "registry/** merge=cairn",
    "state/** merge=cairn",
    "runs/** merge=cairn",
    "memory/** merge=cairn",
    "conflicts/** merge=cairn",
    "mirror/** merge=cairn-derived",
];

/// The two drivers' names in git's config.
pub const DRIVERS: [&str; 2] = ["cairn", "cairn-derived"];

/// The folder the driver leaves conflict records in for post-merge.
pub fn pending_dir(store: &Store) -> PathBuf {
    store.local_dir().join("pending-conflicts")
}

/// The `merge.<name>.driver` command for a binary at `exe`.
pub fn driver_command(exe: &Path) -> String {
    let quoted = format!("'{}'", exe.to_string_lossy().replace('\'', r"'\''"));
    format!("{quoted} merge-driver %O %A %B %P")
}

/// Defines the drivers in the repository's own config, calling `exe`.
pub fn register(store: &Store, exe: &Path) -> Result<()> {
    for name in DRIVERS {
        store.set_config(
            &format!("merge.{name}.name"),
            "cairn: merge by the store's schemas",
        )?;
        store.set_config(&format!("merge.{name}.driver"), &driver_command(exe))?;
    }
    Ok(())
}

/// Removes the drivers from the repository's config.
pub fn unregister(store: &Store) -> Result<()> {
    for name in DRIVERS {
        for key in ["name", "driver"] {
            store.unset_config(&format!("merge.{name}.{key}"))?;
        }
    }
    Ok(())
}

/// Whether both drivers call `exe`.
pub fn registered(store: &Store, exe: &Path) -> Result<bool> {
    let want = driver_command(exe);
    for name in DRIVERS {
        if store
            .get_config(&format!("merge.{name}.driver"))?
            .as_deref()
            != Some(want.as_str())
        {
            return Ok(false);
        }
    }
    Ok(true)
}

/// What the driver did with one file.
#[derive(Debug, Clone)]
pub struct Driven {
    /// The merged bytes written to `%A`.
    pub merged: Vec<u8>,
    /// Conflict records left for post-merge.
    pub conflicts: Vec<Conflict>,
}

/// Merges one file as git's merge driver: `base`, `ours` and `theirs` are
/// git's temp files (`%O %A %B`), `path` the file's path in the store
/// (`%P`). Writes the result into `ours`.
pub fn run(store: &Store, base: &Path, ours: &Path, theirs: &Path, path: &str) -> Result<Driven> {
    let read = |p: &Path| fs::read(p).map_err(|e| Error::io("read", p, e));
    let (base_bytes, our_bytes, their_bytes) = (read(base)?, read(ours)?, read(theirs)?);
    if layout::is_derived(path) {
        // Rendered again from the merged files after the merge.
        return Ok(Driven {
            merged: our_bytes,
            conflicts: Vec::new(),
        });
    }
    let snap = store.snapshot()?;
    let head = store.require_tip()?;
    // In a merge, replaying working-set patches needs their side's commits;
    // in a rebase the sides are swapped and the field-wise rules apply.
    let merging = matches!(store.merge_state()?, Some(("merge", _)));
    let theirs_commit = store.incoming_head().unwrap_or(head);
    let base_commit = match merging {
        true => store.merge_base(head, theirs_commit)?,
        false => None,
    };
    let mut out = Merged::default();
    let empty_base = base_bytes.is_empty();
    let merged = merge_path(
        &snap,
        base_commit,
        theirs_commit,
        merging,
        path,
        (!empty_base).then_some(base_bytes.as_slice()),
        Some(our_bytes.as_slice()),
        Some(their_bytes.as_slice()),
        &mut out,
    )?;
    let mut merged = merged.unwrap_or_default();
    if !merging && layout::schema_for(path) == Some("working_set") {
        merged = keep_commit_seq(path, &merged, &our_bytes, &their_bytes)?;
    }
    fs::write(ours, &merged).map_err(|e| Error::io("write", ours, e))?;
    if !out.conflicts.is_empty() {
        let dir = pending_dir(store);
        fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
        for c in &out.conflicts {
            let file = dir.join(format!("{}.yaml", c.conflict_id));
            fs::write(&file, c.to_yaml()).map_err(|e| Error::io("write", &file, e))?;
        }
    }
    Ok(Driven {
        merged,
        conflicts: out.conflicts,
    })
}

/// In a rebase (or cherry-pick) the commit being replayed keeps its
/// message, `Cairn-Seq` trailer and all: the merged working set takes the
/// higher of the two seqs instead of a new one, so the ledger still ends
/// at the file's seq.
fn keep_commit_seq(path: &str, merged: &[u8], ours: &[u8], theirs: &[u8]) -> Result<Vec<u8>> {
    let seq = |b: &[u8]| -> Result<u64> {
        Ok(crate::store::parse_yaml(path, b)?
            .get("_update_seq")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0))
    };
    let mut doc = crate::store::parse_yaml(path, merged)?;
    doc["_update_seq"] = serde_json::json!(seq(ours)?.max(seq(theirs)?));
    let ws: crate::working_set::WorkingSet =
        serde_json::from_value(doc).map_err(|e| Error::Invalid {
            file: path.to_string(),
            pointer: "/_update_seq".into(),
            rule: "working_set",
            message: e.to_string(),
        })?;
    Ok(ws.to_yaml().into_bytes())
}

/// The conflict records drivers left, read and validated (a torn one is
/// skipped: the merge it came from is in history and `sync --resolve` can
/// redo it).
pub fn pending(store: &Store) -> Result<Vec<(PathBuf, Conflict)>> {
    let dir = pending_dir(store);
    let Ok(entries) = fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "yaml") {
            let bytes = fs::read(&p).map_err(|e| Error::io("read", &p, e))?;
            if let Ok(c) = Conflict::from_bytes(&p.to_string_lossy(), &bytes) {
                out.push((p, c));
            }
        }
    }
    out.sort_by(|a, b| a.1.conflict_id.cmp(&b.1.conflict_id));
    Ok(out)
}
