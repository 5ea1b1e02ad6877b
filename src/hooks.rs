//! The store's git hooks: hand edits committed with plain `git commit` are
//! checked and recorded like cairn's own writes.
//!
//! Installation writes a small shim block (from the project's `hooks/`
//! folder) between marker comments into git's effective hooks folder. The
//! shim calls `cairn hook NAME` through the absolute path of the binary that
//! installed it, so a cloned store never runs code it brought along. Blocks
//! are replaced in place on reinstall, existing hook content is kept (a
//! non-shell hook is moved aside and chained), and uninstall restores what
//! was there.
//!
//! The hooks themselves:
//! - `pre-commit` checks the *staged* content with [`crate::rules`] (every
//!   problem at once), bumps `_update_seq` of hand-edited working sets, refuses
//!   hand edits of mirror pages, and stages the regenerated mirror pages.
//!   Nothing is staged unless every check passes.
//! - `commit-msg` adds the ledger trailers (MANUAL_EDIT, an event id, the runs
//!   and items touched) unless the message already carries them.
//! - `post-*` report whether the mirror is current for the new tip; the CLI
//!   also catches the search index up in the background. They never fail.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Finding, Result};
use crate::ledger::{self, parse_message};
use crate::rules::{self, SeqRule};
use crate::store::{write_atomic, Changes, PathChange, Store};
use crate::sync::driver;
use crate::{layout, mirror, schema, sync};

/// The hooks cairn installs, with their shim blocks.
pub const HOOKS: [(&str, &str); 6] = [
    ("pre-commit", include_str!("../hooks/pre-commit")),
    ("commit-msg", include_str!("../hooks/commit-msg")),
    ("post-commit", include_str!("../hooks/post-commit")),
    ("post-merge", include_str!("../hooks/post-merge")),
    ("post-checkout", include_str!("../hooks/post-checkout")),
    ("post-rewrite", include_str!("../hooks/post-rewrite")),
];

const BEGIN: &str = "# >>> cairn >>>";
const END: &str = "# <<< cairn <<<";
/// Where a hook that is not a shell script goes when cairn's block takes its place.
const MOVED_SUFFIX: &str = ".pre-cairn";
/// How many item ids a MANUAL_EDIT trailer names before it summarizes.
const MAX_TRAILER_ITEMS: usize = 50;

// ---------------------------------------------------------------------------
// Installation

/// The state of one installed hook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HookState {
    /// The hook's name (`pre-commit`, ...).
    pub name: String,
    /// Its file in git's hooks folder.
    pub path: PathBuf,
    /// `installed` (current), `outdated` (a block for another binary or shim
    /// version) or `missing`.
    pub state: &'static str,
    /// Whether the file holds content besides cairn's block.
    pub other_content: bool,
    /// Whether a moved non-shell hook is chained after cairn's block.
    pub chained: bool,
}

/// Quotes a path for a POSIX shell.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The block cairn writes for `name`, calling `exe`.
fn block(name: &str, shim: &str, exe: &Path, chained: bool) -> String {
    let mut b = shim.replace("@CAIRN@", &shell_quote(&exe.to_string_lossy()));
    if chained {
        let end = b.rfind(END).expect("shims end with the end marker");
        b.insert_str(
            end,
            &format!("exec \"$(dirname \"$0\")/{name}{MOVED_SUFFIX}\" \"$@\"\n"),
        );
    }
    b
}

/// Splits a hook file into (before, cairn's block, after).
fn split_block(text: &str) -> Option<(&str, &str, &str)> {
    let start = text.find(BEGIN)?;
    let end_at = start + text[start..].find(END)?;
    let mut end = end_at + END.len();
    if text[end..].starts_with('\n') {
        end += 1;
    }
    Some((&text[..start], &text[start..end], &text[end..]))
}

fn is_shell_script(text: &str) -> bool {
    let first = text.lines().next().unwrap_or_default();
    let Some(interp) = first.strip_prefix("#!") else {
        return false;
    };
    let words: Vec<&str> = interp.split_whitespace().collect();
    let prog: &str = match words.as_slice() {
        [env, prog, ..] if env.ends_with("/env") => prog,
        [prog, ..] => prog.rsplit('/').next().unwrap_or(prog),
        [] => return false,
    };
    matches!(prog, "sh" | "bash" | "dash" | "ksh" | "zsh" | "ash")
}

/// The hooks folder, refusing one that lives among the store's own files.
fn hooks_dir(store: &Store) -> Result<PathBuf> {
    let dir = store.hooks_dir()?;
    if let Some(workdir) = store.workdir() {
        let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        let d = canon(&dir);
        let inside_work_tree = d.starts_with(canon(workdir));
        let inside_git = d.starts_with(canon(store.git_dir()));
        if inside_work_tree && !inside_git {
            return Err(Error::Policy {
                rule: "HOOKS_IN_STORE",
                message: format!(
                    "core.hooksPath points at {} inside the store's own files; cairn never runs hooks a store brings with it. Unset it (`git config --unset core.hooksPath`) or point it outside the work tree",
                    dir.display()
                ),
            });
        }
    }
    Ok(dir)
}

fn read_opt(path: &Path) -> Result<Option<String>> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(String::from_utf8_lossy(&b).into_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("read", path.to_path_buf(), e)),
    }
}

fn write_hook(path: &Path, text: &str) -> Result<()> {
    write_atomic(path, text.as_bytes(), false)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| Error::io("make executable", path.to_path_buf(), e))?;
    }
    Ok(())
}

/// Installs (or refreshes) cairn's block in every hook, calling `exe`.
pub fn install(store: &Store, exe: &Path) -> Result<Vec<HookState>> {
    let dir = hooks_dir(store)?;
    std::fs::create_dir_all(&dir).map_err(|e| Error::io("create", dir.clone(), e))?;
    for (name, shim) in HOOKS {
        let path = dir.join(name);
        let moved = dir.join(format!("{name}{MOVED_SUFFIX}"));
        let text = match read_opt(&path)? {
            Some(existing) => match split_block(&existing) {
                Some((before, _, after)) => {
                    format!("{before}{}{after}", block(name, shim, exe, moved.exists()))
                }
                None if is_shell_script(&existing) => {
                    let (first, rest) = existing.split_once('\n').unwrap_or((&existing, ""));
                    format!("{first}\n{}{rest}", block(name, shim, exe, false))
                }
                None => {
                    if moved.exists() {
                        return Err(Error::Policy {
                            rule: "HOOK_IN_THE_WAY",
                            message: format!(
                                "{} is not a shell script and {} already exists; move one of them away and install again",
                                path.display(),
                                moved.display()
                            ),
                        });
                    }
                    std::fs::rename(&path, &moved)
                        .map_err(|e| Error::io("move", path.clone(), e))?;
                    format!("#!/bin/sh\n{}", block(name, shim, exe, true))
                }
            },
            None => format!("#!/bin/sh\n{}", block(name, shim, exe, false)),
        };
        write_hook(&path, &text)?;
    }
    // Plain `git pull` merges cairn's files by their schemas too: the
    // drivers live in this repository's config, the routing in the tracked
    // .gitattributes (committed if an older store lacks it).
    driver::register(store, exe)?;
    ensure_attributes(store)?;
    // A plain `git pull` merges unless the user chose otherwise, and a
    // plain `git push` carries the milestone tags (as `cairn init` sets up;
    // a clone brings no config).
    for (key, value) in [("pull.rebase", "false"), ("push.followTags", "true")] {
        if store.get_config(key)?.is_none() {
            store.set_config(key, value)?;
        }
    }
    status(store, exe)
}

/// Adds the merge-driver lines to `.gitattributes` in one commit when they
/// are missing (stores made before sync existed).
fn ensure_attributes(store: &Store) -> Result<()> {
    let tip = store.require_tip()?;
    let current = store.read_file(tip, layout::GITATTRIBUTES)?;
    let text = current
        .as_deref()
        .map(String::from_utf8_lossy)
        .unwrap_or_default()
        .into_owned();
    if driver::ATTRIBUTES
        .iter()
        .all(|l| text.lines().any(|have| have.trim() == *l))
    {
        return Ok(());
    }
    store.transact(None, |snap| {
        let mut changes = Changes::new();
        changes.insert(
            layout::GITATTRIBUTES.into(),
            Some(crate::open::with_lines(
                snap.read(layout::GITATTRIBUTES)?,
                driver::ATTRIBUTES,
            )),
        );
        Ok(crate::store::Mutation {
            changes,
            event: crate::event::EventDraft::new(
                crate::event::EventType::ConfigChanged,
                "route cairn files to cairn's merge drivers (.gitattributes)",
            ),
            tags: Vec::new(),
        })
    })?;
    Ok(())
}

/// After git made a merge or rebase: commits the conflict records cairn's
/// merge driver left, and renders the mirror again when the merge left it
/// stale (at most one commit each). Returns what it did, for the user.
pub fn after_merge(store: &Store) -> Result<Vec<String>> {
    let mut notes = Vec::new();
    if let Some(c) = sync::commit_pending(store)? {
        let n = c.event.payload["conflicts"].as_array().map_or(0, Vec::len);
        notes.push(format!(
            "recorded {n} merge conflict(s) in {}: `cairn conflicts list`",
            c.commit
        ));
    }
    if mirror_current(store)? == Some(false) {
        let done = mirror::regenerate(store)?;
        if let Some(c) = done.commit {
            notes.push(format!(
                "regenerated {} mirror page(s) for the merged files in {}",
                done.pages.len(),
                c.commit
            ));
        }
    }
    Ok(notes)
}

/// Removes cairn's blocks and restores hooks that were moved aside.
pub fn uninstall(store: &Store) -> Result<Vec<HookState>> {
    let dir = store.hooks_dir()?;
    let mut out = Vec::new();
    for (name, _) in HOOKS {
        let path = dir.join(name);
        let moved = dir.join(format!("{name}{MOVED_SUFFIX}"));
        let Some(text) = read_opt(&path)? else {
            continue;
        };
        let Some((before, _, after)) = split_block(&text) else {
            continue;
        };
        let rest = format!("{before}{after}");
        if moved.exists() {
            std::fs::rename(&moved, &path).map_err(|e| Error::io("restore", moved.clone(), e))?;
        } else if rest
            .lines()
            .all(|l| l.trim().is_empty() || l.starts_with("#!"))
        {
            std::fs::remove_file(&path).map_err(|e| Error::io("remove", path.clone(), e))?;
        } else {
            write_hook(&path, &rest)?;
        }
        out.push(HookState {
            name: name.to_string(),
            path,
            state: "missing",
            other_content: false,
            chained: false,
        });
    }
    driver::unregister(store)?;
    Ok(out)
}

/// What is installed, and whether it is current for `exe`.
pub fn status(store: &Store, exe: &Path) -> Result<Vec<HookState>> {
    let dir = store.hooks_dir()?;
    let mut out = Vec::new();
    for (name, shim) in HOOKS {
        let path = dir.join(name);
        let chained = dir.join(format!("{name}{MOVED_SUFFIX}")).exists();
        let text = read_opt(&path)?.unwrap_or_default();
        let (state, other_content) = match split_block(&text) {
            Some((before, b, after)) => {
                let other = !format!("{before}{after}")
                    .lines()
                    .all(|l| l.trim().is_empty() || l.starts_with("#!"));
                let state = if b == block(name, shim, exe, chained) {
                    "installed"
                } else {
                    "outdated"
                };
                (state, other)
            }
            None => ("missing", !text.trim().is_empty()),
        };
        out.push(HookState {
            name: name.to_string(),
            path,
            state,
            other_content,
            chained,
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// pre-commit

/// What the pre-commit hook did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PreCommitReport {
    /// Staged paths it checked.
    pub checked: usize,
    /// Working sets whose `_update_seq` it bumped: (path, new seq).
    pub bumped: Vec<(String, u64)>,
    /// Memory items whose `updated_at` it set (hand edits that left it alone).
    pub touched: Vec<String>,
    /// Mirror pages it regenerated and staged (or wrote, when untracked).
    pub pages: Vec<String>,
}

/// Replaces the value of a top-level `key:` line, if the file has one,
/// quoting the new value the way the old one was quoted (single, double or
/// plain), so the rest of the file keeps the user's style.
fn replace_top_level(text: &str, key: &str, value: &str) -> Option<String> {
    let prefix = format!("{key}:");
    let mut found = false;
    let mut out = String::with_capacity(text.len() + 16);
    for line in text.split_inclusive('\n') {
        if !found && line.starts_with(&prefix) {
            found = true;
            let old = line[prefix.len()..].trim_start();
            out.push_str(&prefix);
            out.push(' ');
            match old.chars().next() {
                Some('\'') => out.push_str(&format!("'{}'", value.replace('\'', "''"))),
                Some('"') => out.push_str(&format!(
                    "\"{}\"",
                    value.replace('\\', "\\\\").replace('"', "\\\"")
                )),
                _ => out.push_str(value),
            }
            out.push('\n');
        } else {
            out.push_str(line);
        }
    }
    found.then_some(out)
}

/// Parses both versions of a hand-edited file (None when either does not
/// parse: the rules report that).
fn parse_pair(old: &[u8], new: &[u8]) -> Option<(Value, Value)> {
    let limits = schema::ParseLimits {
        max_bytes: u64::MAX,
        max_depth: 256,
    };
    let old_v = schema::parse_document("old", old, limits).ok()?;
    let new_v = schema::parse_document("new", new, limits).ok()?;
    Some((old_v, new_v))
}

/// A hand-edited working set with `_update_seq` left alone, bumped by one
/// (and `updated_at` set, unless the edit set it). The rest of the file keeps
/// the user's formatting.
fn bump_seq(old: &[u8], new: &[u8], now: &str) -> Option<(Vec<u8>, u64)> {
    let (old_v, mut new_v) = parse_pair(old, new)?;
    let seq = old_v.get("_update_seq")?.as_u64()?;
    if new_v.get("_update_seq")?.as_u64()? != seq || old_v == new_v {
        return None;
    }
    let next = seq + 1;
    let touch_time = old_v.get("updated_at") == new_v.get("updated_at");
    let text = String::from_utf8_lossy(new);
    let edited = replace_top_level(&text, "_update_seq", &next.to_string()).and_then(|t| {
        if touch_time {
            replace_top_level(&t, "updated_at", now)
        } else {
            Some(t)
        }
    });
    let bytes = match edited {
        Some(t) => t.into_bytes(),
        None => {
            new_v["_update_seq"] = Value::from(next);
            if touch_time {
                new_v["updated_at"] = Value::from(now);
            }
            schema::to_yaml(&new_v).into_bytes()
        }
    };
    Some((bytes, next))
}

/// A hand-edited memory item whose `updated_at` the edit left alone, with
/// it set to `now` (the rest of the file as the user wrote it).
fn touch_updated_at(old: &[u8], new: &[u8], now: &str) -> Option<Vec<u8>> {
    let (old_v, mut new_v) = parse_pair(old, new)?;
    if old_v == new_v || old_v.get("updated_at") != new_v.get("updated_at") {
        return None;
    }
    new_v.get("updated_at")?;
    let text = String::from_utf8_lossy(new);
    Some(match replace_top_level(&text, "updated_at", now) {
        Some(t) => t.into_bytes(),
        None => {
            new_v["updated_at"] = Value::from(now);
            schema::to_yaml(&new_v).into_bytes()
        }
    })
}

/// The canonical files a page's banner says to edit instead.
fn banner_sources(page: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(page);
    text.lines()
        .skip_while(|l| !l.contains("Edit the canonical files instead"))
        .skip(1)
        .take_while(|l| {
            // `inputs:` is the checksum line of pages from before mirror version 3.
            let l = l.trim_start();
            !l.starts_with("checksum:") && !l.starts_with("inputs:") && !l.contains("-->")
        })
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// The config the commit will hold: the staged `cairn.yaml` if it is staged
/// and parses, else the tip's.
fn config_for(store: &Store, staged: Option<&[u8]>) -> Result<crate::config::StoreConfig> {
    match staged.and_then(|b| schema::parse_document(layout::CONFIG, b, Default::default()).ok()) {
        Some(v) => Ok(crate::config::StoreConfig::from_value(v)),
        None => store.config(),
    }
}

/// Checks what `git commit` is about to commit (the index at `index_file`,
/// else the repository's), then stages the bumped working sets and the
/// regenerated mirror pages. Refuses with every problem at once, staging
/// nothing.
pub fn pre_commit(store: &Store, index_file: Option<&Path>) -> Result<PreCommitReport> {
    // The store lock keeps a cairn write from moving the tip while the hook
    // compares it with the index (a write moves the branch first and updates
    // the index after, both under this lock).
    let timeout = std::time::Duration::from_millis(store.config()?.limits.lock_timeout_ms);
    let _lock = crate::store::StoreLock::acquire(store.local_dir(), timeout)?;
    if store.has_pending_write() {
        store.finish_pending_write().map_err(|e| Error::LockBusy {
            path: store.git_dir().join("index.lock"),
            holder: format!(
                "a cairn write that is still updating the index ({e}); retry the commit"
            ),
            waited_ms: 0,
        })?;
    }
    if let Some(file) = index_file {
        remove_stale_index_lock(store, file)?;
    }
    let changes = store.staged_changes(index_file)?;
    // Even a commit with no changes (--allow-empty) carries the mirror index
    // forward, so the mirror stays current commit by commit.
    let mut report = PreCommitReport {
        checked: changes.len(),
        ..PreCommitReport::default()
    };
    let read_new = |c: &PathChange| c.new.map(|(id, _)| store.read_blob(id)).transpose();
    let staged_config = changes
        .iter()
        .find(|c| c.path == layout::CONFIG)
        .map(read_new)
        .transpose()?
        .flatten();
    let config = config_for(store, staged_config.as_deref())?;
    let limits = schema::ParseLimits {
        max_bytes: config.limits.max_file_bytes,
        max_depth: config.limits.max_depth,
    };
    let now = crate::event::rfc3339(store.now());
    // Concluding a merge by hand (`git commit` after resolving): the staged
    // tree brings the other side's runs and seqs. Its files must validate,
    // and seqs may only grow; the one-run-per-commit and one-step rules of a
    // hand edit do not apply, and no seq is bumped.
    let merging = store.git_operation_started() && store.incoming_head().is_some();

    // Working sets edited by hand get their seq bumped, memory items their
    // `updated_at` (staged only if all is well).
    let mut rewritten = Changes::new();
    let mut runs = BTreeSet::new();
    for c in &changes {
        if layout::schema_for(&c.path) == Some("memory_item") {
            if let (false, Some(old), Some((new, true))) = (merging, c.old, c.new) {
                if store.blob_size(new)? > limits.max_bytes {
                    continue;
                }
                let (old, new) = (store.read_blob(old)?, store.read_blob(new)?);
                if let Some(bytes) = touch_updated_at(&old, &new, &now) {
                    report.touched.push(c.path.clone());
                    rewritten.insert(c.path.clone(), Some(bytes));
                }
            }
            continue;
        }
        if layout::schema_for(&c.path) != Some("working_set") {
            continue;
        }
        if let Some(run) = layout::run_of(&c.path) {
            if c.new.is_some() {
                runs.insert(run.to_string());
            }
        }
        if let (false, Some(old), Some((new, true))) = (merging, c.old, c.new) {
            if store.blob_size(new)? > limits.max_bytes {
                continue;
            }
            let (old, new) = (store.read_blob(old)?, store.read_blob(new)?);
            if let Some((bytes, seq)) = bump_seq(&old, &new, &now) {
                report.bumped.push((c.path.clone(), seq));
                rewritten.insert(c.path.clone(), Some(bytes));
            }
        }
    }
    let read_final = |c: &PathChange| -> Result<Option<Vec<u8>>> {
        match rewritten.get(&c.path) {
            Some(b) => Ok(b.clone()),
            None => read_new(c),
        }
    };
    let seq_rule = if merging {
        SeqRule::Monotonic
    } else {
        SeqRule::Step
    };
    let mut findings = rules::check_changes(store, &changes, &read_final, limits, seq_rule)?;
    if runs.len() > 1 && !merging {
        findings.push(
            Finding::new(
                runs.iter().cloned().collect::<Vec<_>>().join(", "),
                "one_run_per_commit",
                "a hand commit may change one run's working set: the ledger records one seq per commit",
            )
            .fix("stage and commit the working sets one at a time"),
        );
    }
    // The mirror pages the staged change implies, from the tip's pages. Files
    // refused above count as unchanged, so hand edits of pages are found too.
    let snap = store.snapshot()?;
    let refused: BTreeSet<&str> = findings.iter().map(|f| f.subject.as_str()).collect();
    let mut planned = Changes::new();
    for c in changes
        .iter()
        .filter(|c| !c.path.starts_with("mirror/") && !refused.contains(c.path.as_str()))
    {
        planned.insert(c.path.clone(), read_final(c)?);
    }
    let canonical: BTreeSet<String> = planned.keys().cloned().collect();
    let mirror_on = config.mirror.enabled && config.mirror.tracked;
    if let Err(e) = mirror::extend(store, &snap, &mut planned) {
        if findings.is_empty() {
            return Err(e);
        }
    }
    let mut to_stage = rewritten.clone();
    for (path, content) in &planned {
        if !canonical.contains(path) {
            to_stage.insert(path.clone(), content.clone());
        }
    }
    // Pages an earlier run of this hook staged (for a commit that was then
    // aborted) are cairn's own, not hand edits: they are simply re-rendered.
    let ours = staged_record(store);
    // In a merge, pages come from both sides as git merged them: they are
    // rendered again from the merged files (above), never refused.
    if mirror_on && !merging {
        for c in changes
            .iter()
            .filter(|c| c.path.starts_with("mirror/"))
            .filter(|c| !c.new.is_some_and(|(id, _)| ours.contains(&id)))
        {
            let expected = match to_stage.get(&c.path) {
                Some(e) => e.clone(),
                None => snap.read(&c.path)?,
            };
            if read_new(c)? != expected {
                let sources = expected.as_deref().map(banner_sources).unwrap_or_default();
                let instead = if sources.is_empty() {
                    "the canonical files (runs/, memory/, state/, registry/)".to_string()
                } else {
                    sources.join(", ")
                };
                findings.push(
                    Finding::new(
                        &c.path,
                        "mirror_generated",
                        format!("mirror pages are generated by cairn and this one differs from what cairn renders; edit {instead} instead"),
                    )
                    .fix(format!(
                        "`git restore --staged --worktree {}`, then edit the canonical file; cairn regenerates the page in the same commit",
                        c.path
                    )),
                );
            }
        }
    }
    if !findings.is_empty() {
        return Err(Error::HookRefused {
            hook: "pre-commit",
            findings,
        });
    }
    // Stage what changed: staged content wins over the work tree only where
    // the work tree still holds what the user staged.
    let staged_now: std::collections::BTreeMap<&str, &PathChange> =
        changes.iter().map(|c| (c.path.as_str(), c)).collect();
    // The work tree gets every page and bumped file (the mirror pass may have
    // reset pages there); a bumped working set only where the file still holds
    // what was staged, so unstaged edits are kept.
    if let Some(workdir) = store.workdir() {
        for (path, content) in &to_stage {
            let full = workdir.join(path);
            remove_dead_temp_files(&full);
            if let (true, Some(c)) = (rewritten.contains_key(path), staged_now.get(path.as_str())) {
                let on_disk = std::fs::read(&full).ok();
                if on_disk.as_deref().map(blob_id_of) != c.new.map(|(id, _)| id) {
                    continue;
                }
            }
            if std::fs::read(&full).ok() != *content {
                mirror::write_pages(workdir, &[(path.clone(), content.clone())].into())?;
            }
        }
    }
    to_stage.retain(|path, content| match staged_now.get(path.as_str()) {
        Some(c) => c.new.map(|(id, _)| id) != content.as_deref().map(blob_id_of),
        None => true,
    });
    if !to_stage.is_empty() {
        let mut record = ours;
        record.extend(to_stage.values().flatten().map(|b| blob_id_of(b)));
        write_staged_record(store, &record)?;
        store.stage(index_file, &to_stage)?;
    }
    report.pages = to_stage
        .keys()
        .filter(|p| p.starts_with("mirror/"))
        .cloned()
        .collect();
    Ok(report)
}

/// The index git hands the pre-commit hook (`GIT_INDEX_FILE`: the
/// `index.lock` of the commit, or a temporary index for `git commit
/// <paths>`) is private to the git command waiting for the hook: only the
/// hook writes it. A lock file beside it was left by an earlier hook killed
/// while staging (its `git update-index` died with it) and would refuse this
/// commit's staging: it is removed. The repository's own index is left alone
/// (its lock belongs to whichever git command holds it).
fn remove_stale_index_lock(store: &Store, index_file: &Path) -> Result<()> {
    let full = match (index_file.is_absolute(), store.workdir()) {
        (false, Some(w)) => w.join(index_file),
        _ => index_file.to_path_buf(),
    };
    let repo_index = store.git_dir().join("index");
    let same = |a: &Path, b: &Path| match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    };
    if same(&full, &repo_index) {
        return Ok(());
    }
    let mut lock = full.into_os_string();
    lock.push(".lock");
    let lock = PathBuf::from(lock);
    match std::fs::remove_file(&lock) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", lock, e)),
    }
}

/// Removes the temp files a killed writer left beside `file`
/// ([`write_atomic`] names them `.NAME.PID.tmp`): a pre-commit killed while
/// writing pages left one in the work tree, where `git add -A` would commit
/// it. A temp file whose process still runs (the watcher's) is left alone.
fn remove_dead_temp_files(file: &Path) {
    let (Some(dir), Some(name)) = (file.parent(), file.file_name()) else {
        return;
    };
    let prefix = format!(".{}.", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = n.strip_prefix(&prefix).and_then(|r| r.strip_suffix(".tmp")) else {
            continue;
        };
        if pid
            .parse::<u32>()
            .is_ok_and(|p| !Path::new(&format!("/proc/{p}")).exists())
        {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Where the pre-commit hook remembers the blobs it staged, until a commit is made.
fn staged_record_path(store: &Store) -> PathBuf {
    store.local_dir().join("hook-staged")
}

fn staged_record(store: &Store) -> BTreeSet<git2::Oid> {
    std::fs::read_to_string(staged_record_path(store))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| git2::Oid::from_str(l.trim()).ok())
        .collect()
}

fn write_staged_record(store: &Store, ids: &BTreeSet<git2::Oid>) -> Result<()> {
    let text: String = ids.iter().map(|id| format!("{id}\n")).collect();
    write_atomic(&staged_record_path(store), text.as_bytes(), false)
}

fn blob_id_of(bytes: &[u8]) -> git2::Oid {
    git2::Oid::hash_object(git2::ObjectType::Blob, bytes).expect("hashing bytes cannot fail")
}

// ---------------------------------------------------------------------------
// commit-msg

/// Where trailers go in a message git has not cleaned up yet: after the last
/// line of text, before trailing comments and any scissors line.
fn insertion_point(lines: &[&str]) -> usize {
    let scissors = lines
        .iter()
        .position(|l| l.starts_with('#') && l.contains(">8"))
        .unwrap_or(lines.len());
    lines[..scissors]
        .iter()
        .rposition(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map_or(0, |i| i + 1)
}

/// The message with the ledger trailers of a hand commit added, or `None` when
/// it already carries them. The staged content (`index_file`) says which runs
/// and memory items the commit touches.
pub fn commit_msg(
    store: &Store,
    index_file: Option<&Path>,
    message: &str,
) -> Result<Option<String>> {
    if parse_message(message).trailer("Cairn-Event").is_some() {
        return Ok(None);
    }
    // An empty message aborts the commit: keep it empty.
    let all: Vec<&str> = message.lines().collect();
    if insertion_point(&all) == 0 {
        return Ok(None);
    }
    let changes = store.staged_changes(index_file)?;
    let mut runs = BTreeSet::new();
    let mut items = BTreeSet::new();
    let mut seq = None;
    for c in &changes {
        if let Some(run) = layout::run_of(&c.path) {
            runs.insert(run.to_string());
        }
        match layout::schema_for(&c.path) {
            Some("memory_item") => {
                if let Some(stem) = c
                    .path
                    .rsplit('/')
                    .next()
                    .and_then(|f| f.strip_suffix(".yaml"))
                {
                    items.insert(stem.to_string());
                }
            }
            Some("working_set") => {
                if let Some((id, true)) = c.new {
                    seq = rules::update_seq(&store.read_blob(id)?);
                }
            }
            _ => {}
        }
    }
    let now = store.now();
    let mut trailers = vec![
        format!("Cairn-Event: {}", ledger::EventType::ManualEdit.as_str()),
        format!("Cairn-Event-Id: {}", ledger::new_id("ev", now)),
        format!("Cairn-Timestamp: {}", crate::event::rfc3339(now)),
    ];
    if runs.len() == 1 {
        let run = runs.iter().next().expect("one run");
        trailers.push(format!("Cairn-Run: {run}"));
        if let Some(seq) = seq {
            trailers.push(format!("Cairn-Seq: {seq}"));
        }
    } else if !runs.is_empty() {
        trailers.push(format!(
            "Cairn-Runs: {}",
            runs.iter().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    if !items.is_empty() {
        let mut shown: Vec<String> = items.iter().take(MAX_TRAILER_ITEMS).cloned().collect();
        if items.len() > MAX_TRAILER_ITEMS {
            shown.push(format!("(+{} more)", items.len() - MAX_TRAILER_ITEMS));
        }
        trailers.push(format!("Cairn-Items: {}", shown.join(", ")));
    }
    let lines: Vec<&str> = message.lines().collect();
    let at = insertion_point(&lines);
    let mut out: Vec<String> = lines[..at].iter().map(|l| l.to_string()).collect();
    // Existing trailer-like last paragraph: join it; else a new paragraph.
    let last_is_trailers = out
        .last()
        .map(|l| l.split_once(": ").is_some_and(|(k, _)| !k.contains(' ')))
        .unwrap_or(false)
        && out.len() > 2
        && out[out.len() - 2].trim().is_empty();
    if !last_is_trailers {
        out.push(String::new());
    }
    out.extend(trailers);
    out.extend(lines[at..].iter().map(|l| l.to_string()));
    let mut text = out.join("\n");
    text.push('\n');
    Ok(Some(text))
}

// ---------------------------------------------------------------------------
// post-commit, post-merge, post-checkout, post-rewrite

/// Whether the mirror committed at the tip shows the tip: the mirror index
/// must have been written by the tip itself (its horizon is the tip's only
/// parent). `None` when the mirror is off or untracked, or the store is empty.
pub fn mirror_current(store: &Store) -> Result<Option<bool>> {
    let Some(tip) = store.tip()? else {
        return Ok(None);
    };
    let cfg = store.config()?.mirror;
    if !cfg.enabled || !cfg.tracked {
        return Ok(None);
    }
    let info = store.commit_info(tip)?;
    let horizon = store
        .read_file(tip, mirror::INDEX)?
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v.get("horizon").and_then(Value::as_str).map(str::to_string));
    Ok(Some(
        info.parents.len() == 1 && horizon.as_deref() == Some(info.parents[0].to_string().as_str()),
    ))
}

/// A note for the user after a plain git operation, if the mirror is stale.
/// A commit was made, so what pre-commit staged is history now.
pub fn after_git(store: &Store) -> Result<Option<String>> {
    match std::fs::remove_file(staged_record_path(store)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("remove", staged_record_path(store), e)),
    }
    Ok(match mirror_current(store)? {
        Some(false) => Some(
            "the mirror/ pages do not show this commit yet (a merge, rebase or commit made without cairn's hooks); run `cairn mirror` to regenerate them, or let the next cairn write do it"
                .into(),
        ),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_round_trip_and_keep_other_content() {
        let exe = Path::new("/opt/it's/cairn");
        let b = block("pre-commit", HOOKS[0].1, exe, false);
        assert!(b.contains(r"'/opt/it'\''s/cairn' hook pre-commit"));
        let text = format!("#!/bin/bash\n{b}echo mine\n");
        let (before, found, after) = split_block(&text).unwrap();
        assert_eq!(
            (before, found, after),
            ("#!/bin/bash\n", b.as_str(), "echo mine\n")
        );
    }

    #[test]
    fn shell_scripts_are_recognized_by_their_shebang() {
        assert!(is_shell_script("#!/bin/sh\n"));
        assert!(is_shell_script("#!/usr/bin/env bash\nexec x"));
        assert!(!is_shell_script("#!/usr/bin/env python3\n"));
        assert!(!is_shell_script("echo no shebang\n"));
    }

    #[test]
    fn seq_bump_keeps_formatting_and_touches_updated_at() {
        let old = b"_schema_version: '2.1'\n_update_seq: 3\nrun_id: r\nobjective: a\nupdated_at: '2026-01-01T00:00:00.000Z'\n";
        let new = b"_schema_version: '2.1'\n_update_seq: 3\nrun_id: r\nobjective:   b   # edited\nupdated_at: '2026-01-01T00:00:00.000Z'\n";
        let (bytes, seq) = bump_seq(old, new, "2026-02-02T00:00:00.000Z").unwrap();
        assert_eq!(seq, 4);
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains("_update_seq: 4\n"));
        assert!(text.contains("objective:   b   # edited\n"));
        assert!(text.contains("updated_at: '2026-02-02T00:00:00.000Z'\n"));
        assert!(bump_seq(old, old, "x").is_none());
    }

    #[test]
    fn rewrites_keep_the_quoting_of_the_value_they_replace() {
        let now = "2026-02-02T00:00:00Z";
        for (style, want) in [
            ("'2026-01-01T00:00:00Z'", format!("'{now}'")),
            ("\"2026-01-01T00:00:00Z\"", format!("\"{now}\"")),
            ("2026-01-01T00:00:00Z", now.to_string()),
        ] {
            let old = format!("id: mem_x\ncontent: \"a\"\nupdated_at: {style}\n");
            let new = old.replace("\"a\"", "\"b\"");
            let out = touch_updated_at(old.as_bytes(), new.as_bytes(), now).unwrap();
            let text = String::from_utf8(out).unwrap();
            assert_eq!(
                text,
                format!("id: mem_x\ncontent: \"b\"\nupdated_at: {want}\n")
            );
        }
        // An edit that set updated_at itself, or changed nothing, is left alone.
        let old = "content: a\nupdated_at: '2026-01-01T00:00:00Z'\n";
        let set = "content: b\nupdated_at: '2026-01-05T00:00:00Z'\n";
        assert!(touch_updated_at(old.as_bytes(), set.as_bytes(), now).is_none());
        assert!(touch_updated_at(old.as_bytes(), old.as_bytes(), now).is_none());
    }

    #[test]
    fn trailers_go_before_comments_and_scissors() {
        let lines = vec![
            "subject",
            "",
            "body",
            "",
            "# comment",
            "# ------------------------ >8 ------------------------",
            "diff",
        ];
        assert_eq!(insertion_point(&lines), 3);
    }
}
