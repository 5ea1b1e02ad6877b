//! `cairn setup`, `cairn interactions` and the hidden `cairn hook-agent`
//! (what the agents' hooks run).
//!
//! The hooks always exit 0 and never print anything but the client's
//! envelope: every failure (no store, a broken store, a busy lock, garbage
//! on stdin, the time budget spent) becomes the neutral envelope and one
//! line in `agent.log` (the store's local folder, else `~/.cairn/`).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cairn::agent::capture::{self, Outcome};
use cairn::agent::session;
use cairn::agent::setup::{self, FilePlan, SetupRequest, State};
use cairn::agent::{log_line, AgentsConfig, Client, HookInput};
use cairn::store::Actor;
use cairn::{Error, Store, StoreOptions};
use serde_json::json;

use super::{finish, CliError, CmdResult, Ctx, Output};

/// Exit code of `setup --check` when some of the configuration is there but not current.
pub const EXIT_OUTDATED: i32 = 10;
/// Exit code of `setup --check` when none of it is there.
pub const EXIT_MISSING: i32 = 11;
/// Most bytes a hook reads from stdin (a turn's response can be large).
const MAX_HOOK_INPUT: u64 = 64 * 1024 * 1024;

/// Wire an agent (Claude Code, Codex, Cursor) to this store: session-start
/// brief, capture on stop, the MCP server.
///
/// Writes the client's configuration merged into what is there (foreign
/// entries kept; running it twice changes nothing). `--remove` puts back
/// exactly what was there before; `--check` says installed (exit 0),
/// outdated (exit 10) or missing (exit 11).
#[derive(clap::Args, Debug)]
pub struct SetupArgs {
    /// claude, codex or cursor.
    #[arg(required_unless_present = "print_instructions")]
    client: Option<String>,
    /// The user's configuration (~/.claude, ~/.codex, ~/.cursor) instead of the project's.
    #[arg(long)]
    global: bool,
    /// Undo: restore the files as they were before setup (or remove cairn's entries).
    #[arg(long, conflicts_with_all = ["check"])]
    remove: bool,
    /// Say whether the configuration is installed, outdated or missing; change nothing.
    #[arg(long)]
    check: bool,
    /// Show what would be written; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// The project folder (default: the git work tree around the current folder, else the current folder).
    #[arg(long, value_name = "DIR")]
    project_dir: Option<PathBuf>,
    /// The cairn executable the hooks run (default: this one's absolute path).
    #[arg(long, value_name = "PATH")]
    command: Option<String>,
    /// Print a short AGENTS.md / CLAUDE.md section on using cairn, and exit.
    #[arg(long)]
    print_instructions: bool,
}

/// The interactions captured in a run, oldest first.
#[derive(clap::Args, Debug)]
pub struct InteractionsArgs {
    /// The run.
    run: String,
    /// Show whole prompts and responses (default: their first line).
    #[arg(long)]
    full: bool,
}

/// Run one agent hook (what `cairn setup` writes into the clients' configuration).
#[derive(clap::Args, Debug)]
pub struct HookAgentArgs {
    /// claude, codex or cursor.
    client: String,
    /// session-start or stop.
    hook: String,
}

fn print_opt(text: Option<String>) {
    if let Some(t) = text {
        super::print_stdout(&t);
    }
}

fn io_err(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Error {
    Error::Io {
        op,
        path: path.into(),
        source,
    }
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

fn project_root(arg: Option<PathBuf>) -> Result<PathBuf, Error> {
    let cwd = std::env::current_dir().map_err(|e| io_err("read current folder", ".", e))?;
    let start = match arg {
        Some(p) if p.is_absolute() => p,
        Some(p) => cwd.join(p),
        None => {
            return Ok(cwd
                .ancestors()
                .find(|d| d.join(".git").exists())
                .unwrap_or(&cwd)
                .to_path_buf())
        }
    };
    std::fs::canonicalize(&start).map_err(|e| io_err("open", start, e))
}

fn store_root(store: &Store) -> PathBuf {
    let p = store
        .workdir()
        .or_else(|| store.repo_workdir())
        .unwrap_or_else(|| store.git_dir());
    // Without the trailing slash git2 reports.
    p.components().collect()
}

fn same_store(a: &Store, b: &Store) -> bool {
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    canon(a.git_dir()) == canon(b.git_dir()) && a.branch() == b.branch()
}

fn plan_human(verb: &str, plans: &[FilePlan], show: bool) -> String {
    let mut s = String::new();
    for p in plans {
        s.push_str(&format!(
            "{verb:<10} {:<9} {} ({})\n",
            p.action,
            p.path.display(),
            p.role
        ));
        if show && p.changes() {
            match &p.after {
                Some(b) => {
                    for line in String::from_utf8_lossy(b).lines() {
                        s.push_str(&format!("    | {line}\n"));
                    }
                }
                None => s.push_str("    (file removed)\n"),
            }
        }
    }
    s
}

/// `cairn setup`; returns the exit code (`--check` has its own).
pub fn cmd_setup(ctx: &Ctx, a: SetupArgs) -> i32 {
    if a.print_instructions {
        return finish(
            ctx,
            Ok(Output::new(
                setup::INSTRUCTIONS.trim_end(),
                json!({"instructions": setup::INSTRUCTIONS}),
            )),
        );
    }
    let mut code = None;
    let result = setup_inner(ctx, a, &mut code);
    let exit = finish(ctx, result);
    code.filter(|_| exit == 0).unwrap_or(exit)
}

fn setup_inner(ctx: &Ctx, a: SetupArgs, code: &mut Option<i32>) -> CmdResult {
    let name = a.client.clone().unwrap_or_default();
    let client = Client::parse(&name).ok_or_else(|| {
        CliError::Usage(format!(
            "unknown client {name:?}: use claude, codex or cursor"
        ))
    })?;
    let store = ctx.open().map_err(|e| match e {
        Error::NotAStore { path, .. } => CliError::Usage(format!(
            "no cairn store at or above {}: run `cairn init` (or `cairn init --branch cairn` in a code repository) first, or pass --store",
            path.display()
        )),
        e => CliError::Lib(e),
    })?;
    let program = match &a.command {
        Some(c) => c.clone(),
        None => std::env::current_exe()
            .and_then(std::fs::canonicalize)
            .map_err(|e| io_err("find the cairn executable", "cairn", e))?
            .to_string_lossy()
            .into_owned(),
    };
    let root = if a.global {
        home().ok_or_else(|| CliError::Usage("--global needs HOME to be set".into()))?
    } else {
        project_root(a.project_dir.clone())?
    };
    // Project hooks find the store from the session's folder when they
    // can (the config then holds no absolute store path); otherwise, and
    // globally, they name it.
    let discovered = Store::discover(&root, ctx.options.clone()).ok();
    let hook_store = match (&discovered, a.global) {
        (Some(d), false) if same_store(d, &store) => None,
        _ => Some(store_root(&store)),
    };
    let req = SetupRequest {
        client,
        root,
        global: a.global,
        program,
        hook_store,
        mcp_store: store_root(&store),
    };
    let record_dir = store.local_dir().join("agent-setup");
    if a.check {
        let plans = setup::check(&req)?;
        let state = State::combine(plans.iter().map(|p| p.state));
        *code = Some(match state {
            State::Installed => 0,
            State::Outdated => EXIT_OUTDATED,
            State::Missing => EXIT_MISSING,
        });
        let mut human = format!("{} setup: {}\n", client.as_str(), state.as_str());
        for p in &plans {
            human.push_str(&format!(
                "  {:<9} {} ({})\n",
                p.state.as_str(),
                p.path.display(),
                p.role
            ));
        }
        return Ok(Output::new(
            human.trim_end(),
            json!({"client": client.as_str(), "state": state, "files": plans}),
        ));
    }
    let (plans, verb) = if a.remove {
        (setup::plan_remove(&req, &record_dir)?, "remove")
    } else {
        (setup::plan_install(&req)?, "setup")
    };
    if !a.dry_run {
        if a.remove {
            setup::apply_remove(&req, &plans, &record_dir)?;
        } else {
            setup::apply_install(&req, &plans, &record_dir)?;
        }
    }
    let verb_human = if a.dry_run {
        format!("would {verb}")
    } else {
        verb.to_string()
    };
    let mut human = plan_human(&verb_human, &plans, a.dry_run);
    if !a.remove && !a.dry_run {
        human.push_str(&format!(
            "{} sessions now start with the store's brief and each turn is captured; undo with `cairn setup {}{} --remove`",
            match client {
                Client::Claude => "Claude Code",
                Client::Codex => "Codex",
                Client::Cursor => "Cursor",
            },
            client.as_str(),
            if a.global { " --global" } else { "" }
        ));
        if client == Client::Codex {
            human.push_str(" (Codex asks you to trust new hooks once: /hooks)");
        }
    }
    if plans.iter().any(|p| p.undo == Some("stripped")) {
        human.push_str("\nnote: files changed since setup keep their other edits; only cairn's entries were removed");
    }
    Ok(Output::new(
        human.trim_end(),
        json!({"client": client.as_str(), "dry_run": a.dry_run, "files": plans}),
    ))
}

/// `cairn interactions RUN`.
pub fn cmd_interactions(ctx: &Ctx, a: InteractionsArgs) -> CmdResult {
    let store = ctx.open_reading()?;
    let list = capture::list(&store, &a.run)?;
    let mut human = String::new();
    for v in &list {
        let text = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or_default();
        let first = |s: &str| -> String {
            let line = s.lines().next().unwrap_or_default();
            if a.full {
                s.to_string()
            } else if line.chars().count() > 100 {
                format!("{}…", line.chars().take(100).collect::<String>())
            } else {
                line.to_string()
            }
        };
        human.push_str(&format!(
            "{}  {}  {}{}\n  > {}\n  < {}\n",
            text("interaction_id"),
            text("created_at"),
            text("client"),
            if v.get("truncated").and_then(|t| t.as_bool()) == Some(true) {
                " (response truncated)"
            } else {
                ""
            },
            first(text("prompt")),
            first(text("response")),
        ));
    }
    if list.is_empty() {
        human.push_str("no interactions captured in this run\n");
    }
    Ok(Output::new(
        human.trim_end(),
        json!({"run_id": a.run, "interactions": list}),
    ))
}

enum Msg {
    /// The store is known: where to log, and the budget its config sets.
    Store {
        local_dir: PathBuf,
        root: PathBuf,
        budget_ms: u64,
    },
    /// The hook's output, or why there is none.
    Done(Result<Option<String>, String>),
}

fn read_stdin() -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    std::io::stdin()
        .lock()
        .take(MAX_HOOK_INPUT + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("reading stdin: {e}"))?;
    if buf.len() as u64 > MAX_HOOK_INPUT {
        return Err(format!("stdin is over {MAX_HOOK_INPUT} bytes"));
    }
    Ok(buf)
}

fn open_for_hook(ctx: &Ctx, cwd: Option<&str>, options: StoreOptions) -> Result<Store, Error> {
    if let Some(p) = &ctx.store {
        return Store::open(p, options);
    }
    if let Some(p) = std::env::var_os("CAIRN_STORE").filter(|p| !p.is_empty()) {
        return Store::open(Path::new(&p), options);
    }
    let start = match cwd {
        Some(c) => PathBuf::from(c),
        None => std::env::current_dir().map_err(|e| io_err("read current folder", ".", e))?,
    };
    Store::discover(&start, options)
}

fn capture_disabled_by_env() -> bool {
    let off = |k: &str, v: &str| std::env::var(k).is_ok_and(|x| x.trim() == v);
    off("CAIRN_CAPTURE", "0") || off("CAIRN_CAPTURE_DISABLED", "1")
}

/// `cairn hook-agent CLIENT HOOK`: always exits 0.
pub fn cmd_hook_agent(ctx: &Ctx, a: HookAgentArgs) -> i32 {
    let started = Instant::now();
    let now = ctx
        .options
        .now
        .unwrap_or_else(time::OffsetDateTime::now_utc);
    let fallback_log = home().map(|h| h.join(".cairn"));
    let log = |dir: Option<&Path>, message: &str| {
        if let Some(d) = dir.or(fallback_log.as_deref()) {
            log_line(d, now, &a.client, &a.hook, message);
        }
    };
    let Some(client) = Client::parse(&a.client) else {
        log(None, &format!("unknown client {:?}", a.client));
        return 0;
    };
    let neutral = || match a.hook.as_str() {
        "stop" => session::stop_envelope(client),
        _ => session::envelope(client, None),
    };
    if a.hook != "session-start" && a.hook != "stop" {
        log(None, &format!("unknown hook {:?}", a.hook));
        print_opt(neutral());
        return 0;
    }
    let default_budget = if a.hook == "stop" {
        AgentsConfig::default().stop_budget_ms
    } else {
        AgentsConfig::default().session_start_budget_ms
    };
    let budget_env = std::env::var("CAIRN_HOOK_BUDGET_MS")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    let (tx, rx) = mpsc::channel::<Msg>();
    let store_arg = ctx.store.clone();
    let options = ctx.options.clone();
    let hook = a.hook.clone();
    let ctx_store = Ctx {
        store: store_arg,
        json: false,
        options,
        key: None,
    };
    std::thread::spawn(move || {
        let result = run_hook(&ctx_store, client, &hook, started, budget_env, &tx);
        let _ = tx.send(Msg::Done(result));
    });
    let mut deadline = started + Duration::from_millis(budget_env.unwrap_or(default_budget));
    let mut local_dir: Option<PathBuf> = None;
    let mut root: Option<PathBuf> = None;
    loop {
        let wait = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok(Msg::Store {
                local_dir: d,
                root: r,
                budget_ms,
            }) => {
                local_dir = Some(d);
                root = Some(r);
                deadline = started + Duration::from_millis(budget_env.unwrap_or(budget_ms));
            }
            Ok(Msg::Done(Ok(out))) => {
                print_opt(out);
                return 0;
            }
            Ok(Msg::Done(Err(reason))) => {
                log(local_dir.as_deref(), &reason);
                print_opt(neutral());
                return 0;
            }
            Err(_) => {
                let ms = started.elapsed().as_millis();
                log(
                    local_dir.as_deref(),
                    &format!("gave up after {ms} ms (time budget); printed the neutral answer"),
                );
                if a.hook == "session-start" {
                    if let Some(r) = &root {
                        warm_index(r);
                    }
                }
                print_opt(neutral());
                // The worker may hold locks or be mid-search: end the process now.
                std::process::exit(0);
            }
        }
    }
}

/// Starts a detached `cairn index status` so the next session start finds
/// the search index caught up (a session start gave up waiting for it).
fn warm_index(root: &Path) {
    if let Ok(exe) = std::env::current_exe() {
        let _ = std::process::Command::new(exe)
            .arg("--store")
            .arg(root)
            .args(["index", "status"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
    }
}

fn run_hook(
    ctx: &Ctx,
    client: Client,
    hook: &str,
    started: Instant,
    budget_env: Option<u64>,
    tx: &mpsc::Sender<Msg>,
) -> Result<Option<String>, String> {
    let bytes = read_stdin()?;
    let input = match HookInput::parse(client, &bytes) {
        Ok(i) => i,
        Err(e) => {
            // Log where the store is, when the hook's folder has one.
            if let Ok(store) = open_for_hook(ctx, None, ctx.options.clone()) {
                let _ = tx.send(Msg::Store {
                    local_dir: store.local_dir().to_path_buf(),
                    root: store_root(&store),
                    budget_ms: budget_env.unwrap_or(if hook == "stop" {
                        AgentsConfig::default().stop_budget_ms
                    } else {
                        AgentsConfig::default().session_start_budget_ms
                    }),
                });
            }
            return Err(format!("bad input: {e}"));
        }
    };
    let mut options = ctx.options.clone();
    if options.actor.is_none() {
        options.actor = Some(Actor {
            name: client.label().to_string(),
            email: format!("{}@cairn", client.label()),
        });
    }
    let store = match open_for_hook(ctx, input.cwd.as_deref(), options.clone()) {
        Ok(s) => s,
        Err(e) => {
            // A store too broken to open still has its local folder: log there.
            let start = input
                .cwd
                .as_deref()
                .map(PathBuf::from)
                .or_else(|| std::env::current_dir().ok());
            if let Some(dir) = start.as_deref().and_then(|s| {
                s.ancestors()
                    .map(|a| a.join(".cairn"))
                    .find(|d| d.is_dir() && d.parent().is_some_and(|p| p.join(".git").exists()))
            }) {
                let _ = tx.send(Msg::Store {
                    root: dir.parent().map(Path::to_path_buf).unwrap_or_default(),
                    local_dir: dir,
                    budget_ms: budget_env.unwrap_or(if hook == "stop" {
                        AgentsConfig::default().stop_budget_ms
                    } else {
                        AgentsConfig::default().session_start_budget_ms
                    }),
                });
            }
            return Err(format!("no store: {e}"));
        }
    };
    let config = AgentsConfig::of(&store).map_err(|e| format!("reading cairn.yaml: {e}"))?;
    let budget_ms = budget_env.unwrap_or(if hook == "stop" {
        config.stop_budget_ms
    } else {
        config.session_start_budget_ms
    });
    let _ = tx.send(Msg::Store {
        local_dir: store.local_dir().to_path_buf(),
        root: store_root(&store),
        budget_ms,
    });
    let now = options.now.unwrap_or_else(time::OffsetDateTime::now_utc);
    let log = |m: &str| log_line(store.local_dir(), now, client.as_str(), hook, m);
    if hook == "session-start" {
        let ctx = session::context(&store, &input, &config).map_err(|e| e.to_string())?;
        log(&format!(
            "injected {} characters{} in {} ms",
            ctx.text.chars().count(),
            ctx.run
                .as_ref()
                .map(|r| format!(" for run {} ({})", r.run_id, r.how))
                .unwrap_or_else(|| " (no run)".into()),
            started.elapsed().as_millis()
        ));
        return Ok(session::envelope(client, Some(&ctx.text)));
    }
    // Stop.
    let out = session::stop_envelope(client);
    if capture_disabled_by_env() || !config.capture {
        log("not captured: capture is switched off (CAIRN_CAPTURE=0 or agents.capture: false)");
        return Ok(out);
    }
    let turn = match capture::turn_of(client, &input, &config, now) {
        Ok(t) => t,
        Err(skip) => {
            log(&format!("not captured: {}", skip.describe()));
            return Ok(out);
        }
    };
    capture::spool(store.local_dir(), &turn).map_err(|e| format!("spooling the turn: {e}"))?;
    // Reopen with the lock wait bounded by what is left of the budget.
    let left = Duration::from_millis(budget_ms).saturating_sub(started.elapsed());
    let store = Store::open(
        &store_root(&store),
        StoreOptions {
            lock_timeout: Some(left),
            ..options
        },
    )
    .map_err(|e| format!("reopening the store: {e}"))?;
    let deadline = started + Duration::from_millis(budget_ms);
    for (path, outcome) in capture::drain(&store, &config, deadline) {
        match outcome {
            Outcome::Captured(c) => log(&format!(
                "captured {} in run {}{}{}{}",
                c.interaction_id,
                c.run_id,
                if c.replayed {
                    " (already captured)"
                } else {
                    ""
                },
                if c.booted { " (booted the run)" } else { "" },
                if c.truncated { " (truncated)" } else { "" },
            )),
            Outcome::Kept(e) => log(&format!(
                "still spooled ({}): {e}",
                path.file_name().unwrap_or_default().to_string_lossy()
            )),
            Outcome::Dropped(e) => log(&format!("not captured: {e}")),
        }
    }
    Ok(out)
}
