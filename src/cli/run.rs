//! `cairn run boot | list | show | close`.

use cairn::api::{self, RunBootRequest, RunCloseRequest, RunShowRequest};
use cairn::working_set::BootRequest;
use serde_json::json;

use super::{CmdResult, Ctx, Output};

/// Start, list, show and close runs.
#[derive(clap::Subcommand, Debug)]
pub enum RunCommand {
    /// Boot a run: create its working set at seq 0 (RUN_BOOTED).
    Boot(BootArgs),
    /// List the open runs in the store (closed ones too with --all).
    List(ListArgs),
    /// Show a run: objective, status, next action, context and its last milestone.
    Show(RunShowRequest),
    /// Close a run (RUN_CLOSED): its status becomes DONE or FAILED for good,
    /// it leaves `run list`, and its working set refuses further patches.
    Close(RunCloseRequest),
}

/// List runs.
#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// Include closed runs.
    #[arg(long)]
    all: bool,
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
        RunCommand::List(a) => {
            let mut report = api::run_list(&store)?;
            let total = report.runs.len();
            if !a.all {
                report.runs.retain(|r| r.closed.is_none());
            }
            let hidden = total - report.runs.len();
            let mut human = String::new();
            for r in &report.runs {
                human.push_str(&format!(
                    "{}  {:<7} seq {:<4} {}{}\n",
                    r.run_id,
                    r.status.as_str(),
                    r.seq,
                    r.objective,
                    if r.closed.is_some() { "  (closed)" } else { "" }
                ));
            }
            if total == 0 {
                human.push_str("no runs yet (cairn run boot --objective ...)\n");
            } else if hidden > 0 {
                human.push_str(&format!("{hidden} closed run(s) not shown (--all)\n"));
            }
            Ok(Output::new(human.trim_end(), json!(report)))
        }
        RunCommand::Show(a) => {
            let report = api::run_show(&store, &a)?;
            Ok(Output::new(show_text(&report), json!(report)))
        }
        RunCommand::Close(a) => {
            let report = api::run_close(&store, &a, ctx.key())?;
            Ok(Output::new(
                format!(
                    "{}{} closed: {} at seq {} (commit {}); it takes no more patches",
                    if report.replayed { "(replayed) " } else { "" },
                    report.run_id,
                    report.working_set.status.as_str(),
                    report.working_set.update_seq,
                    &report.event.commit[..12]
                ),
                json!(report),
            ))
        }
    }
}

/// The human text of `cairn run show`.
fn show_text(r: &api::RunShowReport) -> String {
    let ws = &r.working_set;
    let mut out = vec![format!(
        "{}  {}  seq {}",
        ws.run_id,
        ws.status.as_str(),
        ws.update_seq
    )];
    out.push(format!("objective: {}", ws.objective));
    if let Some(p) = &ws.project {
        out.push(format!("project: {p}"));
    }
    if let Some(c) = &ws.closed {
        out.push(format!(
            "closed: {}{}",
            c.at,
            c.summary
                .as_ref()
                .map(|s| format!(" ({s})"))
                .unwrap_or_default()
        ));
    }
    if let Some(s) = &ws.current_stage {
        out.push(format!("stage: {s}"));
    }
    if let Some(n) = &ws.next_action {
        out.push(format!("next action: {n}"));
    }
    for (label, list) in [
        ("criterion", &ws.acceptance_criteria),
        ("constraint", &ws.constraints),
    ] {
        for item in list.iter().flatten() {
            out.push(format!("{label}: {item}"));
        }
    }
    out.push(format!(
        "context: {} pinned, {} sliding",
        ws.pinned_context.len(),
        ws.sliding_context.len()
    ));
    match &r.last_episode {
        Some(e) => out.push(format!(
            "milestones: {} (last {}: {}{})",
            r.episodes,
            e.episode_id,
            e.reason,
            e.next_entry_point
                .as_ref()
                .map(|n| format!("; next: {n}"))
                .unwrap_or_default()
        )),
        None => out.push("milestones: none".into()),
    }
    out.push(format!(
        "created {}, updated {}",
        ws.created_at, ws.updated_at
    ));
    out.join("\n")
}
