//! `cairn ws show | patch | evicted`.

use cairn::api::{self, WsEvictedRequest, WsShowRequest};
use serde_json::json;

use super::{read_input, CliError, CmdResult, Ctx, Output};

/// Read and patch a run's working set.
#[derive(clap::Subcommand, Debug)]
pub enum WsCommand {
    /// Show the working set now, or rebuilt at an earlier seq or commit.
    Show(WsShowRequest),
    /// Apply a patch (JSON or YAML) under the optimistic lock.
    Patch(PatchArgs),
    /// List every item the token budget ever evicted, with the commit that evicted it.
    Evicted(WsEvictedRequest),
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

pub fn cmd_ws(ctx: &Ctx, cmd: WsCommand) -> CmdResult {
    let store = ctx.open_reading()?;
    match cmd {
        WsCommand::Show(a) => {
            let ws = api::ws_show(&store, &a)?;
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
            // A patch larger than any working set may be cannot apply: refused
            // before it is parsed (as the HTTP API's body limit does).
            if bytes.len() as u64 > config.limits.max_file_bytes {
                return Err(cairn::Error::TooLarge {
                    file: label,
                    bytes: bytes.len() as u64,
                    limit: config.limits.max_file_bytes,
                    setting: "max_file_bytes",
                }
                .into());
            }
            let mut patch = cairn::schema::parse_document(&label, &bytes, config.parse_limits())?;
            if let Some(seq) = a.expected_seq {
                api::set_expected_seq(&mut patch, seq, &label, "--expected-seq")?;
            }
            let out = api::ws_patch_document(&store, &a.run, &patch, &label, ctx.key())?;
            for w in &out.warnings {
                eprintln!("warning: {w}");
            }
            let mut human = format!(
                "{}{} now at seq {} (commit {})",
                if out.replayed { "(replayed) " } else { "" },
                a.run,
                out.seq,
                &out.event.commit[..12]
            );
            for e in &out.evicted {
                human.push_str(&format!(
                    "\n  evicted {} (priority {}, {})",
                    e.id, e.priority, e.timestamp
                ));
            }
            Ok(Output::new(human, json!(out)))
        }
        WsCommand::Evicted(a) => {
            let report = api::ws_evicted(&store, &a)?;
            let mut human = String::new();
            for e in &report.evicted {
                human.push_str(&format!(
                    "{}  seq {}  commit {}  priority {}  {}\n",
                    e.item.id,
                    e.seq.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
                    &e.commit[..12],
                    e.item.priority,
                    e.item.content.chars().take(60).collect::<String>()
                ));
            }
            if report.evicted.is_empty() {
                human.push_str("nothing evicted\n");
            }
            Ok(Output::new(human.trim_end(), json!(report)))
        }
    }
}
