//! `cairn backup create | verify | list | restore | prune`: git bundles.

use std::path::{Path, PathBuf};

use cairn::backup;
use cairn::Store;
use serde_json::json;

use super::{CliError, CmdResult, Ctx, Output};

/// Backups of the store's branch and milestone tags as git bundles (full or
/// incremental), each with a manifest, verified when made.
#[derive(clap::Subcommand, Debug)]
pub enum BackupCommand {
    /// Make a backup (verified by a test restore before it counts).
    Create {
        /// The backup folder (default: .cairn/backups in the store; keep
        /// backups on another disk).
        #[arg(long, value_name = "DIR")]
        dest: Option<PathBuf>,
        /// Only what the newest backup in DIR does not hold.
        #[arg(long)]
        incremental: bool,
    },
    /// Verify a backup: checksums of its chain, `git bundle verify`, a test
    /// restore, fsck there, refs compared. Default: the newest in the folder.
    Verify {
        /// A backup's .bundle or .json file.
        file: Option<PathBuf>,
        /// The backup folder, when FILE is not given.
        #[arg(long, value_name = "DIR")]
        dest: Option<PathBuf>,
    },
    /// List the backups in the folder, oldest first.
    List {
        /// The backup folder.
        #[arg(long, value_name = "DIR")]
        dest: Option<PathBuf>,
    },
    /// Restore a backup (and the chain it builds on) into a new folder.
    Restore {
        /// A backup's .bundle or .json file.
        file: PathBuf,
        /// The new store's folder (must be new or empty).
        dir: PathBuf,
    },
    /// Remove old backups, keeping the newest of each of the last N days,
    /// M ISO weeks and K months (and every backup a kept one builds on).
    Prune {
        /// Days to keep one backup of.
        #[arg(long, default_value_t = 7)]
        keep_daily: usize,
        /// ISO weeks to keep one backup of.
        #[arg(long, default_value_t = 4)]
        keep_weekly: usize,
        /// Months to keep one backup of.
        #[arg(long, default_value_t = 6)]
        keep_monthly: usize,
        /// The backup folder.
        #[arg(long, value_name = "DIR")]
        dest: Option<PathBuf>,
    },
}

fn folder(ctx: &Ctx, dest: Option<PathBuf>) -> Result<PathBuf, CliError> {
    match dest {
        Some(d) => Ok(d),
        None => Ok(default_dir(&ctx.open()?)),
    }
}

fn default_dir(store: &Store) -> PathBuf {
    store.local_dir().join("backups")
}

fn verified_line(v: &backup::Verified, what: &str, at: &Path) -> String {
    format!(
        "{what} {} ({} backup(s) in the chain, {} refs, tip {}) at {}",
        v.chain.last().map(String::as_str).unwrap_or("-"),
        v.chain.len(),
        v.refs,
        &v.tip[..12.min(v.tip.len())],
        at.display()
    )
}

pub fn cmd_backup(ctx: &Ctx, cmd: BackupCommand) -> CmdResult {
    match cmd {
        BackupCommand::Create { dest, incremental } => {
            let store = ctx.open()?;
            let dir = dest.unwrap_or_else(|| default_dir(&store));
            let done = backup::create(&store, &dir, incremental)?;
            let human = match (&done.manifest, &done.bundle) {
                (Some(m), Some(b)) => format!(
                    "{} backup {} ({} bytes, {} refs, tip {}) verified and written to {}",
                    m.kind,
                    m.backup_id,
                    m.bytes,
                    m.refs.len(),
                    &m.tip[..12],
                    b.display()
                ),
                _ => "nothing new since the previous backup; no backup written".to_string(),
            };
            let human = std::iter::once(human)
                .chain(done.warnings.iter().map(|w| format!("warning: {w}")))
                .collect::<Vec<_>>()
                .join("\n");
            Ok(Output::new(human, json!(done)))
        }
        BackupCommand::Verify { file, dest } => {
            let file = match file {
                Some(f) => f,
                None => {
                    let dir = folder(ctx, dest)?;
                    let last = backup::list(&dir)?.pop().ok_or_else(|| {
                        CliError::Lib(cairn::Error::NotFound {
                            what: format!("a backup in {}", dir.display()),
                        })
                    })?;
                    dir.join(format!("{}.bundle", last.backup_id))
                }
            };
            let v = backup::verify(&file)?;
            Ok(Output::new(
                verified_line(&v, "verified", &file),
                json!({"verified": true, "chain": v.chain, "refs": v.refs, "tip": v.tip}),
            ))
        }
        BackupCommand::List { dest } => {
            let dir = folder(ctx, dest)?;
            let all = backup::list(&dir)?;
            let human = if all.is_empty() {
                format!("no backups in {}", dir.display())
            } else {
                all.iter()
                    .map(|m| {
                        format!(
                            "{}  {:<11}  {}  {:>10} bytes  tip {}{}",
                            m.backup_id,
                            m.kind,
                            m.created_at,
                            m.bytes,
                            &m.tip[..12],
                            m.base
                                .as_deref()
                                .map(|b| format!("  on {b}"))
                                .unwrap_or_default()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            Ok(Output::new(human, json!({"dir": dir, "backups": all})))
        }
        BackupCommand::Restore { file, dir } => {
            let v = backup::restore(&file, &dir)?;
            Ok(Output::new(
                verified_line(&v, "restored", &dir),
                json!({"restored": dir, "chain": v.chain, "refs": v.refs, "tip": v.tip}),
            ))
        }
        BackupCommand::Prune {
            keep_daily,
            keep_weekly,
            keep_monthly,
            dest,
        } => {
            let dir = folder(ctx, dest)?;
            let p = backup::prune(&dir, keep_daily, keep_weekly, keep_monthly)?;
            Ok(Output::new(
                format!(
                    "kept {} backup(s), removed {}{}",
                    p.kept.len(),
                    p.removed.len(),
                    if p.removed.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", p.removed.join(", "))
                    }
                ),
                json!(p),
            ))
        }
    }
}
