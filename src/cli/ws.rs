//! `cairn ws show | patch | evicted`.

use cairn::working_set::{self, At};
use serde_json::json;

use super::{read_input, CliError, CmdResult, Ctx, Output};

/// Read and patch a run's working set.
#[derive(clap::Subcommand, Debug)]
pub enum WsCommand {
    /// Show the working set now, or rebuilt at an earlier seq or commit.
    Show(ShowArgs),
    /// Apply a patch (JSON or YAML) under the optimistic lock.
    Patch(PatchArgs),
    /// List every item the token budget ever evicted, with the commit that evicted it.
    Evicted(EvictedArgs),
}

/// Show a working set.
#[derive(clap::Args, Debug)]
pub struct ShowArgs {
    /// The run.
    run: String,
    /// A seq (a number) or a commit (id, prefix or ref).
    #[arg(long)]
    at: Option<String>,
}

/// Patch a working set.
#[derive(clap::Args, Debug)]
pub struct PatchArgs {
    /// The run.
    run: String,
    /// The `_update_seq` the patch was made against (else the patch's own expected_seq).
    #[arg(long)]
    expected_seq: Option<u64>,
    /// The patch file, or `-` for stdin.
    #[arg(long, short, value_name = "FILE")]
    file: Option<String>,
    /// Read the patch from stdin (same as --file -).
    #[arg(value_name = "-", hide = true)]
    stdin: Option<String>,
}

/// List evicted items.
#[derive(clap::Args, Debug)]
pub struct EvictedArgs {
    /// The run.
    run: String,
}

pub fn cmd_ws(ctx: &Ctx, cmd: WsCommand) -> CmdResult {
    let store = ctx.open_reading()?;
    match cmd {
        WsCommand::Show(a) => {
            let at = a.at.map(|s| match s.parse::<u64>() {
                Ok(n) if s.len() < 7 => At::Seq(n),
                _ => At::Commit(s),
            });
            let ws = working_set::show(&store, &a.run, at.as_ref())?;
            Ok(Output::new(ws.to_yaml().trim_end(), json!(ws)))
        }
        WsCommand::Patch(a) => {
            let source = match (a.file.as_deref(), a.stdin.as_deref()) {
                (Some(f), None) => f.to_string(),
                (None, Some("-")) => "-".to_string(),
                (None, None) => {
                    return Err(CliError::Usage(
                        "give the patch with --file FILE or - (stdin)".into(),
                    ))
                }
                _ => {
                    return Err(CliError::Usage(
                        "give the patch once: --file FILE or -".into(),
                    ))
                }
            };
            let config = store.config()?;
            let (label, bytes) = read_input(&source, config.limits.max_input_bytes)?;
            let mut patch = cairn::schema::parse_document(&label, &bytes, config.parse_limits())?;
            if let Some(seq) = a.expected_seq {
                let target = match patch.get_mut("patch") {
                    Some(inner) if inner.is_object() => inner,
                    _ => &mut patch,
                };
                match target.get("expected_seq").and_then(|v| v.as_u64()) {
                    Some(given) if given != seq => {
                        return Err(cairn::Error::Invalid {
                            file: label,
                            pointer: "/expected_seq".into(),
                            rule: "expected_seq_matches_flag",
                            message: format!(
                                "the patch says expected_seq {given} but --expected-seq is {seq}"
                            ),
                        }
                        .into())
                    }
                    _ => {
                        if let Some(obj) = target.as_object_mut() {
                            obj.insert("expected_seq".into(), json!(seq));
                        }
                    }
                }
            }
            let out = working_set::patch(&store, &a.run, &patch, &label, ctx.key())?;
            for w in &out.committed.warnings {
                eprintln!("warning: {w}");
            }
            let mut human = format!(
                "{}{} now at seq {} (commit {})",
                if out.committed.replayed {
                    "(replayed) "
                } else {
                    ""
                },
                a.run,
                out.working_set.update_seq,
                &out.committed.event.commit[..12]
            );
            for e in &out.evicted {
                human.push_str(&format!(
                    "\n  evicted {} (priority {}, {})",
                    e.id, e.priority, e.timestamp
                ));
            }
            Ok(Output::new(
                human,
                json!({
                    "run_id": a.run,
                    "seq": out.working_set.update_seq,
                    "working_set": out.working_set,
                    "evicted": out.evicted,
                    "event": out.committed.event,
                    "replayed": out.committed.replayed,
                }),
            ))
        }
        WsCommand::Evicted(a) => {
            let list = working_set::evicted(&store, &a.run)?;
            let mut human = String::new();
            for e in &list {
                human.push_str(&format!(
                    "{}  seq {}  commit {}  priority {}  {}\n",
                    e.item.id,
                    e.seq.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
                    &e.commit[..12],
                    e.item.priority,
                    e.item.content.chars().take(60).collect::<String>()
                ));
            }
            if list.is_empty() {
                human.push_str("nothing evicted\n");
            }
            Ok(Output::new(
                human.trim_end(),
                json!({"run_id": a.run, "evicted": list}),
            ))
        }
    }
}
