//! `cairn log`: the ledger, read back from commits.

use std::io::Write;
use std::time::Duration;

use cairn::api::{self, LogReport, LogRequest};
use cairn::ledger::{self, Event, EventType, LogQuery};
use serde_json::json;

use super::{CliError, CmdResult, Ctx, Output};

/// Query ledger events (one per commit), oldest first.
#[derive(clap::Args, Debug)]
pub struct LogArgs {
    #[command(flatten)]
    req: LogRequest,
    /// One schema-valid ledger_event JSON object per line.
    #[arg(long)]
    jsonl: bool,
    /// Keep printing new events as they are committed, until interrupted.
    #[arg(long)]
    follow: bool,
}

fn time_arg(flag: &str, s: &Option<String>) -> Result<Option<time::OffsetDateTime>, CliError> {
    match s {
        None => Ok(None),
        Some(s) => cairn::event::parse_rfc3339(s)
            .map(Some)
            .ok_or_else(|| CliError::Usage(format!("--{flag} {s:?} is not an RFC 3339 time"))),
    }
}

fn line(e: &Event, jsonl: bool) -> String {
    if jsonl {
        serde_json::to_string(e).expect("events serialize")
    } else {
        format!(
            "{}  {}  {:<19} {:<28} {}{}",
            &e.commit[..12],
            e.timestamp,
            e.event_type.as_str(),
            e.run_id.as_deref().unwrap_or("-"),
            e.seq.map(|s| format!("seq {s}  ")).unwrap_or_default(),
            e.message.as_deref().unwrap_or_default()
        )
    }
}

pub fn cmd_log(ctx: &Ctx, a: LogArgs) -> CmdResult {
    let store = ctx.open_reading()?;
    let r = &a.req;
    let event_type = match &r.event_type {
        Some(t) => Some(
            EventType::parse(t)
                .ok_or_else(|| CliError::Usage(format!("unknown event type {t:?}")))?,
        ),
        None => None,
    };
    // The flags are checked here first so a bad one is a usage error.
    let q = LogQuery {
        run_id: r.run.clone(),
        event_type,
        since: time_arg("since", &r.since)?,
        until: time_arg("until", &r.until)?,
        actor: r.actor.clone(),
        limit: r.limit,
    };
    let events = api::log_events(&store, &q, &super::search::progress_bar())?;
    if !a.follow {
        let human = if a.jsonl {
            events
                .iter()
                .map(|e| line(e, true))
                .collect::<Vec<_>>()
                .join("\n")
        } else if events.is_empty() {
            "no events match".to_string()
        } else {
            events
                .iter()
                .map(|e| line(e, false))
                .collect::<Vec<_>>()
                .join("\n")
        };
        return Ok(Output::new(human, json!(LogReport { events })));
    }
    // Follow: stream lines until interrupted or stdout closes.
    let jsonl = a.jsonl || ctx.json;
    let mut out = std::io::stdout().lock();
    for e in &events {
        if writeln!(out, "{}", line(e, jsonl))
            .and_then(|_| out.flush())
            .is_err()
        {
            std::process::exit(0);
        }
    }
    let mut seen = store.tip()?;
    let follow_q = LogQuery { limit: None, ..q };
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let tip = store.tip()?;
        if tip == seen {
            continue;
        }
        if let Some(t) = tip {
            for e in ledger::events_between(&store, t, seen, &follow_q)? {
                if writeln!(out, "{}", line(&e, jsonl))
                    .and_then(|_| out.flush())
                    .is_err()
                {
                    std::process::exit(0);
                }
            }
        }
        seen = tip;
    }
}
