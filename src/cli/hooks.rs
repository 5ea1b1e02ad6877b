//! `cairn hooks install|uninstall|status` and `cairn hook NAME` (what the
//! installed shims call).
//!
//! This shell reads what git hands a hook (`GIT_INDEX_FILE`, the message file,
//! the hook's arguments) and the binary's own path; the library does the work.
//! Post-* hooks never fail: their problems become warnings, and the search
//! index catches up in a detached process unless `CAIRN_HOOK_FOREGROUND=1`.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use cairn::{hooks, Error, Store};
use serde_json::json;

use super::{CliError, CmdResult, Ctx, Output};

/// Install, remove or inspect the store's git hooks.
#[derive(clap::Subcommand, Debug)]
pub enum HooksCommand {
    /// Write cairn's hook shims into git's hooks folder (idempotent; keeps existing hooks).
    Install,
    /// Remove cairn's shims and restore the hooks they were added to.
    Uninstall,
    /// Show which hooks are installed and whether they are current.
    Status,
}

/// Run one git hook (called by the installed shims).
#[derive(clap::Args, Debug)]
pub struct HookArgs {
    /// pre-commit, commit-msg, post-commit, post-merge, post-checkout, post-rewrite.
    name: String,
    /// What git passed to the hook.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

/// The absolute path of this binary, recorded in the shims.
pub fn own_path() -> Result<PathBuf, Error> {
    let exe = std::env::current_exe().map_err(|e| Error::Io {
        op: "find the cairn binary",
        path: PathBuf::from("cairn"),
        source: e,
    })?;
    Ok(std::fs::canonicalize(&exe).unwrap_or(exe))
}

fn states_text(states: &[hooks::HookState]) -> String {
    states
        .iter()
        .map(|s| {
            let mut line = format!("{:<14} {:<9} {}", s.name, s.state, s.path.display());
            if s.other_content {
                line.push_str("  (also runs the hook content that was there)");
            }
            if s.chained {
                line.push_str("  (chains to the moved original)");
            }
            line
        })
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn cmd_hooks(ctx: &Ctx, c: HooksCommand) -> CmdResult {
    let store = ctx.open()?;
    let exe = own_path()?;
    let (verb, states) = match c {
        HooksCommand::Install => ("installed", hooks::install(&store, &exe)?),
        HooksCommand::Uninstall => ("removed", hooks::uninstall(&store)?),
        HooksCommand::Status => ("status", hooks::status(&store, &exe)?),
    };
    let current = states.iter().all(|s| s.state == "installed");
    let head = match verb {
        "status" if current => format!(
            "hooks are installed and current (calling {})",
            exe.display()
        ),
        "status" => "hooks are missing or outdated: run `cairn hooks install`".to_string(),
        "removed" if states.is_empty() => "no cairn hooks were installed".to_string(),
        v => format!("hooks {v}"),
    };
    Ok(Output::new(
        format!("{head}\n{}", states_text(&states)),
        json!({"hooks": states, "current": current, "binary": exe}),
    ))
}

/// Opens the store a hook runs in; `None` when the repository is not a
/// store (or HEAD is detached, as during a rebase): the hook then does nothing.
fn hook_store(ctx: &Ctx) -> Result<Option<Store>, Error> {
    match ctx.open() {
        Ok(s) => Ok(Some(s)),
        Err(Error::NotAStore { .. } | Error::DetachedHead) => Ok(None),
        Err(e) => Err(e),
    }
}

fn index_file() -> Option<PathBuf> {
    std::env::var_os("GIT_INDEX_FILE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

pub fn cmd_hook(ctx: &Ctx, a: HookArgs) -> CmdResult {
    match a.name.as_str() {
        "pre-commit" => pre_commit(ctx),
        "commit-msg" => Ok(fail_open("commit-msg", commit_msg(ctx, &a.args))),
        "post-merge" | "post-rewrite" => Ok(fail_open(&a.name, after_merge(ctx))),
        // A merge concluded by hand ends with `git commit`, not post-merge.
        "post-commit" if tip_is_merge(ctx) => Ok(fail_open(&a.name, after_merge(ctx))),
        "post-commit" => Ok(fail_open(&a.name, after(ctx))),
        "post-checkout" => {
            // The third argument is 1 for a branch checkout, 0 for files.
            if a.args.get(2).map(String::as_str) == Some("0") {
                return Ok(Output::new("", json!({})));
            }
            Ok(fail_open(&a.name, after(ctx)))
        }
        "index-update" => {
            if let Some(store) = hook_store(ctx)? {
                cairn::search::open(&store, &|_, _| {})?;
            }
            Ok(Output::new("", json!({})))
        }
        other => Err(CliError::Usage(format!(
            "unknown hook {other:?}: cairn handles pre-commit, commit-msg, post-commit, post-merge, post-checkout and post-rewrite"
        ))),
    }
}

fn pre_commit(ctx: &Ctx) -> CmdResult {
    let Some(store) = hook_store(ctx)? else {
        return Ok(Output::new("", json!({"skipped": true})));
    };
    let report = hooks::pre_commit(&store, index_file().as_deref())?;
    let mut parts = Vec::new();
    for (path, seq) in &report.bumped {
        parts.push(format!("bumped {path} to _update_seq {seq}"));
    }
    for path in &report.touched {
        parts.push(format!("set updated_at of {path}"));
    }
    if !report.pages.is_empty() {
        parts.push(format!(
            "staged {} regenerated mirror page(s)",
            report.pages.len()
        ));
    }
    let text = if parts.is_empty() {
        String::new()
    } else {
        format!("cairn: {}", parts.join("; "))
    };
    if !text.is_empty() {
        eprintln!("{text}");
    }
    Ok(Output::new("", json!(report)))
}

fn commit_msg(ctx: &Ctx, args: &[String]) -> Result<(), Error> {
    let Some(store) = hook_store(ctx)? else {
        return Ok(());
    };
    let Some(file) = args.first() else {
        return Ok(());
    };
    let path = PathBuf::from(file);
    let message = std::fs::read_to_string(&path).map_err(|e| Error::Io {
        op: "read the commit message",
        path: path.clone(),
        source: e,
    })?;
    if let Some(new) = hooks::commit_msg(&store, index_file().as_deref(), &message)? {
        std::fs::write(&path, new).map_err(|e| Error::Io {
            op: "write the commit message",
            path,
            source: e,
        })?;
    }
    Ok(())
}

fn after(ctx: &Ctx) -> Result<(), Error> {
    let Some(store) = hook_store(ctx)? else {
        return Ok(());
    };
    if let Some(note) = hooks::after_git(&store)? {
        eprintln!("cairn: {note}");
    }
    // The search index catches up after the git command returns.
    let foreground = std::env::var("CAIRN_HOOK_FOREGROUND").is_ok_and(|v| v == "1");
    if foreground {
        cairn::search::open(&store, &|_, _| {})?;
    } else {
        let root = store.workdir().unwrap_or(store.git_dir()).to_path_buf();
        let spawned = Command::new(own_path()?)
            .args(["hook", "index-update"])
            .current_dir(root)
            .env_remove("GIT_INDEX_FILE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        if let Err(e) = spawned {
            eprintln!(
                "cairn: could not start the search index update ({e}); the next search catches up"
            );
        }
    }
    Ok(())
}

/// Whether the commit just made is a merge.
fn tip_is_merge(ctx: &Ctx) -> bool {
    let Ok(Some(store)) = hook_store(ctx) else {
        return false;
    };
    store
        .tip()
        .ok()
        .flatten()
        .and_then(|t| store.commit_info(t).ok())
        .is_some_and(|c| c.parents.len() > 1)
}

/// After git made a merge or rebase: record what cairn's merge driver could
/// not decide, render the mirror again, then what every post-* hook does.
fn after_merge(ctx: &Ctx) -> Result<(), Error> {
    let Some(store) = hook_store(ctx)? else {
        return Ok(());
    };
    for note in hooks::after_merge(&store)? {
        eprintln!("cairn: {note}");
    }
    after(ctx)
}

/// Post-* hooks and commit-msg never fail the user's git command.
fn fail_open(hook: &str, r: Result<(), Error>) -> Output {
    if let Err(e) = r {
        eprintln!("cairn: the {hook} hook could not finish ({e}); the git command is not affected");
    }
    Output::new("", json!({}))
}
