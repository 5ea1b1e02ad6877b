//! `cairn run boot | list`.

use cairn::api::{self, RunBootRequest};
use cairn::working_set::BootRequest;
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
    #[command(flatten)]
    req: RunBootRequest,
    /// Read the boot request (the seed's boot body, JSON or YAML) from a file or `-`.
    #[arg(
        long,
        short,
        value_name = "FILE",
        conflicts_with = "objective",
        display_order = 1
    )]
    file: Option<String>,
}

pub fn cmd_run(ctx: &Ctx, cmd: RunCommand) -> CmdResult {
    let store = ctx.open()?;
    match cmd {
        RunCommand::Boot(a) => {
            let flags = a.req;
            let req = match &a.file {
                None => BootRequest {
                    objective: flags.objective.unwrap_or_default(),
                    acceptance_criteria: flags.acceptance_criteria,
                    constraints: flags.constraints,
                    project: flags.project,
                    task_id: flags.task_id,
                    thread_id: flags.thread_id,
                    run_id: flags.run_id,
                },
                Some(f) => {
                    let config = store.config()?;
                    let (label, bytes) = super::read_input(f, config.limits.max_input_bytes)?;
                    let value =
                        cairn::schema::parse_document(&label, &bytes, config.parse_limits())?;
                    let from_file = BootRequest::from_value(&label, &value)?;
                    // Flags given beside the file add to / override it.
                    BootRequest {
                        objective: from_file.objective,
                        acceptance_criteria: [
                            from_file.acceptance_criteria,
                            flags.acceptance_criteria,
                        ]
                        .concat(),
                        constraints: [from_file.constraints, flags.constraints].concat(),
                        project: flags.project.or(from_file.project),
                        task_id: flags.task_id.or(from_file.task_id),
                        thread_id: flags.thread_id.or(from_file.thread_id),
                        run_id: flags.run_id.or(from_file.run_id),
                    }
                }
            };
            let report = api::run_boot(&store, &req, ctx.key())?;
            Ok(Output::new(
                format!(
                    "{}{} booted at seq 0 (commit {})",
                    if report.replayed { "(replayed) " } else { "" },
                    report.run_id,
                    &report.event.commit[..12]
                ),
                json!(report),
            ))
        }
        RunCommand::List => {
            let report = api::run_list(&store)?;
            let mut human = String::new();
            for r in &report.runs {
                human.push_str(&format!(
                    "{}  {:<7} seq {:<4} {}\n",
                    r.run_id,
                    r.status.as_str(),
                    r.seq,
                    r.objective
                ));
            }
            if report.runs.is_empty() {
                human.push_str("no runs yet (cairn run boot --objective ...)\n");
            }
            Ok(Output::new(human.trim_end(), json!(report)))
        }
    }
}
