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
    #[arg(long, required_unless_present = "file")]
    objective: Option<String>,
    /// Read the boot request (the seed's boot body, JSON or YAML) from a file or `-`.
    #[arg(long, short, value_name = "FILE", conflicts_with = "objective")]
    file: Option<String>,
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
            let mut req = BootRequest {
                objective: a.objective.unwrap_or_default(),
                acceptance_criteria: a.criteria,
                constraints: a.constraints,
                project: a.project,
                task_id: a.task_id,
                thread_id: a.thread_id,
                run_id: a.run_id,
            };
            if let Some(f) = &a.file {
                let config = store.config()?;
                let (label, bytes) = super::read_input(f, config.limits.max_input_bytes)?;
                let value = cairn::schema::parse_document(&label, &bytes, config.parse_limits())?;
                let from_file = BootRequest::from_value(&label, &value)?;
                // Flags given beside the file add to / override it.
                req = BootRequest {
                    objective: from_file.objective,
                    acceptance_criteria: [from_file.acceptance_criteria, req.acceptance_criteria]
                        .concat(),
                    constraints: [from_file.constraints, req.constraints].concat(),
                    project: req.project.or(from_file.project),
                    task_id: req.task_id.or(from_file.task_id),
                    thread_id: req.thread_id.or(from_file.thread_id),
                    run_id: req.run_id.or(from_file.run_id),
                };
            }
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
