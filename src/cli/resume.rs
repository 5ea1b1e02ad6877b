//! `cairn snapshot RUN` and `cairn resume load PACK`: resume packs.

use std::path::PathBuf;

use cairn::resume::{self, LoadOptions, SnapshotOptions};
use cairn::Error;
use serde_json::json;

use super::{CmdResult, Ctx, Output};

/// Snapshot a run into a resume pack (a folder, or a zip with --zip): its
/// working set, episodes, ledger events, the memory of its scopes, its
/// interactions and its project's trusted state, with a sha256 manifest.
/// The same store state gives the same bytes; the store records the
/// snapshot (RESUME_SNAPSHOT) but keeps no copy of the pack.
#[derive(clap::Args, Debug)]
pub struct SnapshotArgs {
    /// The run to snapshot.
    run: String,
    /// Where to write the pack (default: ./<pack_id> or ./<pack_id>.zip).
    #[arg(long, value_name = "PATH")]
    out: Option<PathBuf>,
    /// Write one zip file instead of a folder.
    #[arg(long)]
    zip: bool,
    /// Only the run's ledger events from the one with this seq on.
    #[arg(long, value_name = "SEQ")]
    ledger_since: Option<u64>,
}

pub fn cmd_snapshot(ctx: &Ctx, a: SnapshotArgs) -> CmdResult {
    let store = ctx.open()?;
    let cwd = std::env::current_dir().map_err(|e| Error::Io {
        op: "read current folder",
        path: PathBuf::from("."),
        source: e,
    })?;
    let done = resume::snapshot(
        &store,
        &a.run,
        &SnapshotOptions {
            ledger_since: a.ledger_since,
            zip: a.zip,
        },
        a.out.as_deref(),
        &cwd,
    )?;
    Ok(Output::new(
        format!(
            "{} of {} at {} written to {} ({} files){}",
            done.pack_id,
            a.run,
            &done.head_commit[..12],
            done.path.display(),
            done.manifest.files.len() + 1,
            if done.replayed {
                "; this state was snapshotted before"
            } else {
                ""
            }
        ),
        json!(done),
    ))
}

/// Resume packs.
#[derive(clap::Subcommand, Debug)]
pub enum ResumeCommand {
    /// Verify a pack (every hash, no hostile entries, every file valid) and
    /// boot a new run from it in one commit (RESUME_LOADED), recording where
    /// it came from. Memory arrives as candidates in the review queue unless
    /// --trust.
    Load(LoadArgs),
    /// Verify a pack without loading it.
    Verify {
        /// The pack: a folder or a zip file.
        pack: PathBuf,
    },
}

/// Load a resume pack.
#[derive(clap::Args, Debug)]
pub struct LoadArgs {
    /// The pack: a folder or a zip file.
    pack: PathBuf,
    /// The new run's id (default run_<ULID>).
    #[arg(long, value_name = "ID", conflicts_with = "into_run")]
    new_run_id: Option<String>,
    /// Continue this existing run: its working set becomes the pack's, at its next seq.
    #[arg(long, value_name = "RUN")]
    into_run: Option<String>,
    /// Keep the memory's status (active stays active) and write the
    /// project's trusted state when this store has none.
    #[arg(long)]
    trust: bool,
}

pub fn cmd_resume(ctx: &Ctx, cmd: ResumeCommand) -> CmdResult {
    match cmd {
        ResumeCommand::Load(a) => {
            let store = ctx.open()?;
            let done = resume::load(
                &store,
                &a.pack,
                &LoadOptions {
                    new_run_id: a.new_run_id,
                    into_run: a.into_run,
                    trust: a.trust,
                },
                ctx.key(),
            )?;
            Ok(Output::new(
                format!(
                    "{} resumed from {} (run {} at {}) at seq {}: {} memory item(s) as {}, {} already here; {} episode(s); commit {}",
                    done.run_id,
                    done.pack_id,
                    done.resumed_from["source_run"].as_str().unwrap_or("-"),
                    done.resumed_from["source_commit"]
                        .as_str()
                        .map(|c| &c[..12])
                        .unwrap_or("-"),
                    done.working_set.update_seq,
                    done.memory_added.len(),
                    done.memory_status.as_str(),
                    done.memory_skipped.len(),
                    done.episodes,
                    &done.commit[..12]
                ),
                json!(done),
            ))
        }
        ResumeCommand::Verify { pack } => {
            let p = resume::read_pack(&pack)?;
            p.contents()?;
            Ok(Output::new(
                format!(
                    "{} verified: {} files, run {} at {}",
                    p.manifest.pack_id,
                    p.manifest.files.len() + 1,
                    p.manifest.source.run_id,
                    &p.manifest.source.head_commit[..12]
                ),
                json!({"verified": true, "manifest": p.manifest}),
            ))
        }
    }
}
