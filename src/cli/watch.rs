//! `cairn watch`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cairn::watch::{self, PassReport, WatchOptions};
use serde_json::json;

use super::{CmdResult, Ctx, Output};

/// Keep the mirror in the work tree current while canonical files are edited by hand.
///
/// Regenerates the affected mirror pages (in the work tree, no commit) and
/// brings the search index up to date within about a second of a save.
/// Invalid files are reported on stderr and in mirror/README.md; their pages
/// keep the last good version. Ctrl-C stops it.
#[derive(clap::Args, Debug)]
pub struct WatchArgs {
    /// Do one pass over the whole work tree and exit.
    #[arg(long)]
    once: bool,
    /// Quiet time after the last file event before a pass, in milliseconds.
    #[arg(long, default_value_t = 150, value_name = "MS")]
    debounce_ms: u64,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn report_problems(r: &PassReport) {
    for p in &r.problems {
        eprintln!(
            "invalid: {} field {} (rule: {}): {}",
            p.file,
            if p.field.is_empty() { "/" } else { &p.field },
            p.rule,
            p.message
        );
    }
    if let Some(e) = &r.index_error {
        eprintln!("search index: {e}");
    }
}

pub fn cmd_watch(ctx: &Ctx, a: WatchArgs) -> CmdResult {
    let store = ctx.open()?;
    let opts = WatchOptions {
        debounce: Duration::from_millis(a.debounce_ms),
        ..Default::default()
    };
    if a.once {
        let r = watch::once(&store, &opts)?;
        report_problems(&r);
        return Ok(Output::new(
            format!(
                "mirror: {} page(s) written, {} problem(s)",
                r.pages.len(),
                r.problems.len()
            ),
            json!(r),
        ));
    }
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let mut passes = 0u64;
    watch::watch(&store, &opts, &STOP, &mut |r| match r {
        Ok(r) => {
            passes += 1;
            report_problems(r);
            if !r.pages.is_empty() {
                eprintln!(
                    "mirror: {} page(s) in {:.0} ms{}",
                    r.pages.len(),
                    r.elapsed_ms,
                    if r.rescan { " (full pass)" } else { "" }
                );
            }
        }
        Err(e) => eprintln!("error: {e}"),
    })?;
    Ok(Output::new(
        format!("watcher stopped after {passes} pass(es)"),
        json!({"passes": passes}),
    ))
}
