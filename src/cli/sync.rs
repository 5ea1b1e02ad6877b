//! `cairn sync` (fetch, merge, push) and `cairn conflicts list | show | resolve`.

use std::path::PathBuf;

use cairn::api;
use cairn::sync::{self, conflicts, SyncOptions, Take};
use serde_json::json;

use super::{read_input, CliError, CmdResult, Ctx, Output};

/// Fetch the remote's branch and milestone tags, merge with the schemas'
/// rules (no conflict markers: what cannot be decided becomes a conflict
/// record), and push; retries when someone pushed meanwhile.
#[derive(clap::Args, Debug)]
pub struct SyncArgs {
    /// The remote (name or URL); default: the branch's upstream, else `origin`.
    remote: Option<String>,
    /// The remote branch; default: the store's branch name.
    #[arg(long)]
    branch: Option<String>,
    /// Fetch and merge only; do not push.
    #[arg(long)]
    no_push: bool,
    /// How many fetch-merge-push rounds to try while the remote keeps moving.
    #[arg(long, default_value_t = 8)]
    attempts: u32,
    /// First finish a merge or rebase that a plain `git pull` left half
    /// done: abort it and make the same merge by the schemas.
    #[arg(long)]
    resolve: bool,
}

pub fn cmd_sync(ctx: &Ctx, a: SyncArgs) -> CmdResult {
    let store = ctx.open()?;
    let report = sync::sync(
        &store,
        &SyncOptions {
            remote: a.remote,
            branch: a.branch,
            attempts: a.attempts,
            no_push: a.no_push,
            resolve: a.resolve,
        },
    )?;
    let mut human = Vec::new();
    if report.fast_forwarded {
        human.push(format!("fast-forwarded {} commit(s)", report.received));
    }
    for m in &report.merges {
        human.push(format!("merged {} commit(s) in {m}", report.received));
    }
    if !report.conflicts.is_empty() {
        human.push(format!(
            "{} conflict(s) recorded: `cairn conflicts list`",
            report.conflicts.len()
        ));
    }
    human.push(if report.pushed {
        format!(
            "{}/{} is at {}",
            report.remote,
            report.branch,
            report.after.as_deref().unwrap_or("-")
        )
    } else {
        format!("not pushed ({}/{})", report.remote, report.branch)
    });
    if report.received == 0 && report.merges.is_empty() && !report.fast_forwarded {
        human.insert(0, "nothing new from the remote".into());
    }
    for w in &report.warnings {
        human.push(format!("warning: {w}"));
    }
    Ok(Output::new(
        human.join("\n"),
        serde_json::to_value(&report).expect("reports serialize"),
    ))
}

/// Merge conflicts kept as records (`conflicts/`).
#[derive(clap::Subcommand, Debug)]
pub enum ConflictsCommand {
    /// The open conflicts (with --all, resolved ones too).
    List {
        /// Include resolved conflicts.
        #[arg(long)]
        all: bool,
        /// Print the ids only, one a line (for scripts).
        #[arg(long)]
        ids: bool,
    },
    /// One conflict record.
    Show {
        /// The conflict id (cf_...).
        id: String,
    },
    /// Write the chosen value into the file and mark the conflict resolved.
    Resolve {
        /// The conflict id (cf_...).
        id: String,
        /// `ours`, `theirs`, or a file holding the value to keep (YAML/JSON
        /// for a field; the whole content for a whole file).
        #[arg(long, value_name = "ours|theirs|FILE")]
        take: String,
    },
}

pub fn cmd_conflicts(ctx: &Ctx, cmd: ConflictsCommand) -> CmdResult {
    let store = ctx.open()?;
    match cmd {
        ConflictsCommand::List { all, ids } => {
            let list = api::conflicts_list(&store, &api::ConflictsListRequest { all })?;
            let human = if ids {
                list.iter()
                    .map(|c| c.conflict_id.clone())
                    .collect::<Vec<_>>()
                    .join("\n")
            } else if list.is_empty() {
                "no open conflicts".to_string()
            } else {
                list.iter()
                    .map(|c| {
                        format!(
                            "{}  {}  {}{}  ({})",
                            c.conflict_id,
                            c.status,
                            c.path,
                            if c.pointer.is_empty() {
                                String::new()
                            } else {
                                format!(" {}", c.pointer)
                            },
                            c.rule
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            Ok(Output::new(human, json!(list)))
        }
        ConflictsCommand::Show { id } => {
            let c = api::conflict_show(&store, &api::ConflictShowRequest { id })?;
            Ok(Output::new(c.to_yaml(), json!(c)))
        }
        ConflictsCommand::Resolve { id, take } => {
            let take = match take.as_str() {
                "ours" => Take::Ours,
                "theirs" => Take::Theirs,
                path if PathBuf::from(path).exists() || path == "-" => {
                    let max = store.config()?.limits.max_input_bytes;
                    Take::Value(read_input(path, max)?.1)
                }
                other => {
                    return Err(CliError::Usage(format!(
                        "--take takes ours, theirs or an existing file; {other:?} is none of them"
                    )))
                }
            };
            let (c, committed) = conflicts::resolve(&store, &id, &take, ctx.key())?;
            Ok(Output::new(
                format!(
                    "resolved {} ({} {}): took {} in {}",
                    c.conflict_id,
                    c.path,
                    c.pointer,
                    c.resolution
                        .as_ref()
                        .map(|r| r.took.as_str())
                        .unwrap_or("-"),
                    committed.commit
                ),
                json!({"conflict": c, "commit": committed.commit.to_string()}),
            ))
        }
    }
}

/// What git passes a merge driver: `%O %A %B %P`.
#[derive(clap::Args, Debug)]
pub struct MergeDriverArgs {
    /// The common ancestor's version (a temp file).
    base: PathBuf,
    /// Our version; the merged result is written here.
    ours: PathBuf,
    /// Their version.
    theirs: PathBuf,
    /// The file's path in the store.
    path: String,
}

/// Runs the merge driver. Exit 0: merged (conflicts became records); exit
/// 1: git's own text merge was left in place, markers and all (the inputs
/// did not parse), so git reports the conflict as usual.
pub fn cmd_merge_driver(ctx: &Ctx, a: MergeDriverArgs) -> i32 {
    let outcome = ctx
        .open()
        .and_then(|store| cairn::sync::driver::run(&store, &a.base, &a.ours, &a.theirs, &a.path));
    match outcome {
        Ok(done) => {
            if !done.conflicts.is_empty() {
                eprintln!(
                    "cairn: {}: {} conflict(s) kept as records (committed after the merge; `cairn conflicts list`)",
                    a.path,
                    done.conflicts.len()
                );
            }
            0
        }
        Err(e) => {
            eprintln!(
                "cairn: could not merge {} by its schema ({e}); leaving git's text merge",
                a.path
            );
            let status = std::process::Command::new("git")
                .args(["merge-file", "-L", "ours", "-L", "base", "-L", "theirs"])
                .arg(&a.ours)
                .arg(&a.base)
                .arg(&a.theirs)
                .status();
            match status {
                Ok(s) if s.success() => 0,
                _ => 1,
            }
        }
    }
}
