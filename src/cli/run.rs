//! `cairn run boot | list`.

use cairn::working_set::{self, BootRequest};
use serde_json::json;

use super::{CmdResult, Ctx, Output};

/// Start and list runs.
#[derive(clap::Subcommand, Debug)]
pub enum RunCommand {
    /// Boot a run: create its working set at seq 0 (RUN_BOOTED).
    Boot(BootArgs),
    /// List the runs in the store.
    List,
}

/// Boot a run.
#[derive(clap::Args, Debug)]
pub struct BootArgs {
    /// What the run is for.
    #[arg(long)]
    objective: String,
    /// An acceptance criterion (repeatable).
    #[arg(long = "criterion")]
    criteria: Vec<String>,
    /// A constraint (repeatable).
    #[arg(long = "constraint")]
    constraints: Vec<String>,
    /// The project the run works on.
    #[arg(long)]
    project: Option<String>,
    /// An external task id.
    #[arg(long)]
    task_id: Option<String>,
    /// An external thread id.
    #[arg(long)]
    thread_id: Option<String>,
    /// Choose the run id (default run_<ULID>).
    #[arg(long)]
    run_id: Option<String>,
}

pub fn cmd_run(ctx: &Ctx, cmd: RunCommand) -> CmdResult {
    let store = ctx.open()?;
    match cmd {
        RunCommand::Boot(a) => {
            let req = BootRequest {
                objective: a.objective,
                acceptance_criteria: a.criteria,
                constraints: a.constraints,
                project: a.project,
                task_id: a.task_id,
                thread_id: a.thread_id,
                run_id: a.run_id,
            };
            let (ws, committed) = working_set::boot(&store, &req, ctx.key())?;
            Ok(Output::new(
                format!(
                    "{}{} booted at seq 0 (commit {})",
                    if committed.replayed {
                        "(replayed) "
                    } else {
                        ""
                    },
                    ws.run_id,
                    &committed.event.commit[..12]
                ),
                json!({
                    "run_id": ws.run_id,
                    "working_set": ws,
                    "event": committed.event,
                    "replayed": committed.replayed,
                }),
            ))
        }
        RunCommand::List => {
            let runs = working_set::list(&store)?;
            let mut human = String::new();
            for r in &runs {
                human.push_str(&format!(
                    "{}  {:<7} seq {:<4} {}\n",
                    r.run_id,
                    r.status.as_str(),
                    r.seq,
                    r.objective
                ));
            }
            if runs.is_empty() {
                human.push_str("no runs yet (cairn run boot --objective ...)\n");
            }
            Ok(Output::new(human.trim_end(), json!({"runs": runs})))
        }
    }
}
