//! `cairn log`: the ledger, read back from commits.

use std::io::Write;
use std::time::Duration;

use cairn::ledger::{self, Event, EventType, LogQuery};
use serde_json::json;

use super::{CliError, CmdResult, Ctx, Output};

/// Query ledger events (one per commit), oldest first.
#[derive(clap::Args, Debug)]
pub struct LogArgs {
    /// Only events of this run.
    #[arg(long)]
    run: Option<String>,
    /// Only events of this type (e.g. WS_UPDATE_APPLIED).
    #[arg(long = "type")]
    event_type: Option<String>,
    /// Only events at or after this RFC 3339 time.
    #[arg(long)]
    since: Option<String>,
    /// Only events at or before this RFC 3339 time.
    #[arg(long)]
    until: Option<String>,
    /// Only events by this actor.
    #[arg(long)]
    actor: Option<String>,
    /// At most this many (the newest).
    #[arg(long)]
    limit: Option<usize>,
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
    let event_type = match &a.event_type {
        Some(t) => Some(
            EventType::parse(t)
                .ok_or_else(|| CliError::Usage(format!("unknown event type {t:?}")))?,
        ),
        None => None,
    };
    let q = LogQuery {
        run_id: a.run.clone(),
        event_type,
        since: time_arg("since", &a.since)?,
        until: time_arg("until", &a.until)?,
        actor: a.actor.clone(),
        limit: a.limit,
    };
    // Filters answer from the search index; without filters the walk is as cheap.
    let filtered = q.run_id.is_some()
        || q.event_type.is_some()
        || q.actor.is_some()
        || q.since.is_some()
        || q.until.is_some();
    let events = if filtered {
        cairn::search::log(&store, &q, &super::search::progress_bar())?
    } else {
        ledger::query(&store, &q)?
    };
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
        return Ok(Output::new(human, json!({"events": events})));
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
