//! The command-line shell around the library.
//!
//! This is the only place that reads the environment (`CAIRN_STORE`,
//! `CAIRN_NOW`, `CAIRN_ACTOR`), talks to the terminal, and maps library errors
//! to the `--json` envelope and exit codes of SPEC §5. One file per command.

mod agent;
mod backup;
mod brief;
mod demo;
mod fsck;
mod hooks;
mod init;
mod log;
mod mcp;
mod memory;
mod milestone;
mod mirror;
mod project;
mod resume;
mod run;
mod schema;
mod search;
mod serve;
mod sync;
mod watch;
mod ws;

use std::io::Write;
use std::path::{Path, PathBuf};

use cairn::api;
use cairn::store::Actor;
use cairn::{Error, Store, StoreOptions};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use serde_json::Value;

/// cairn: a git-native context store for AI agents.
#[derive(Parser, Debug)]
#[command(name = "cairn", version, about, long_about = None)]
pub struct Cli {
    /// The store to use (else CAIRN_STORE, else the repository around the current folder).
    #[arg(long, global = true, value_name = "PATH", help_heading = GLOBAL)]
    store: Option<PathBuf>,
    /// Print one JSON envelope: {"ok": true, "data": ...} or {"ok": false, "error": ...}.
    #[arg(long, global = true, help_heading = GLOBAL)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

/// The help heading of the flags every command takes.
const GLOBAL: &str = "Global options";
/// The help heading of the flags of commands that commit.
const WRITE: &str = "Write options";

/// The commands that commit, by path: they take `--actor`, and those
/// marked `true` also `--idempotency-key` (the writes that replay a retry).
/// Read commands take neither, so their help does not offer them.
const WRITES: &[(&[&str], bool)] = &[
    (&["init"], false),
    (&["demo"], false),
    (&["run", "boot"], true),
    (&["run", "close"], true),
    (&["ws", "patch"], true),
    (&["memory", "propose"], true),
    (&["memory", "commit"], true),
    (&["memory", "promote"], true),
    (&["memory", "reject"], true),
    (&["memory", "edit"], true),
    (&["memory", "delete"], true),
    (&["memory", "import"], false),
    (&["milestone"], true),
    (&["project", "add"], true),
    (&["state", "set"], true),
    (&["state", "invalidate"], true),
    (&["snapshot"], false),
    (&["resume", "load"], true),
    (&["conflicts", "resolve"], true),
    (&["sync"], false),
    (&["fsck"], false),
    (&["mirror"], false),
    (&["serve"], false),
    (&["mcp"], false),
    (&["hook-agent"], false),
];

/// `--actor`: who writes.
fn actor_arg() -> clap::Arg {
    clap::Arg::new("write_actor")
        .long("actor")
        .value_name("NAME")
        .help("Who is writing (the commit author and ledger actor); else CAIRN_ACTOR, else git's identity (GIT_AUTHOR_NAME, user.name, ...)")
        .help_heading(WRITE)
}

/// `--idempotency-key`: a write's retry key.
fn key_arg() -> clap::Arg {
    clap::Arg::new("idempotency_key")
        .long("idempotency-key")
        .value_name("KEY")
        .help("Make the write idempotent: a retry with the same key returns the first result; the key with a different request is refused (CONFLICT)")
        .help_heading(WRITE)
}

fn with_write_flags(cmd: clap::Command, path: &[&str], keyed: bool) -> clap::Command {
    match path.split_first() {
        None if keyed => cmd.arg(actor_arg()).arg(key_arg()),
        None => cmd.arg(actor_arg()),
        Some((first, rest)) => cmd.mut_subcommand(first, |sub| with_write_flags(sub, rest, keyed)),
    }
}

/// The whole command line: the derived commands, the write options on the
/// commands that commit, and both before the command too (`cairn --actor
/// NAME run boot ...`), where they must name a command that takes them.
pub fn command() -> clap::Command {
    let mut cmd = Cli::command().arg(actor_arg()).arg(key_arg());
    for (path, keyed) in WRITES {
        cmd = with_write_flags(cmd, path, *keyed);
    }
    cmd
}

/// The write options given (`actor`, `idempotency key`), before or after the
/// command; a usage error when the command does not take one given before it.
fn write_options(matches: &clap::ArgMatches) -> Result<(Option<String>, Option<String>), String> {
    let mut leaf = matches;
    let mut path = Vec::new();
    while let Some((name, sub)) = leaf.subcommand() {
        path.push(name);
        leaf = sub;
    }
    // What the command takes, by the table (clap only checks ids in debug builds).
    let write = WRITES.iter().find(|(p, _)| *p == path.as_slice());
    let takes = [write.is_some(), write.is_some_and(|(_, keyed)| *keyed)];
    let mut out = [None, None];
    for ((slot, takes), (id, flag)) in out.iter_mut().zip(takes).zip([
        ("write_actor", "--actor"),
        ("idempotency_key", "--idempotency-key"),
    ]) {
        let before = matches.get_one::<String>(id).cloned();
        if !takes {
            if before.is_some() {
                return Err(format!(
                    "{flag} applies to commands that write{}; `cairn {}` does not take it",
                    if id == "idempotency_key" {
                        " and replay a retry"
                    } else {
                        ""
                    },
                    path.join(" ")
                ));
            }
            continue;
        }
        *slot = leaf.get_one::<String>(id).cloned().or(before);
    }
    let [actor, key] = out;
    Ok((actor, key))
}

#[derive(Subcommand, Debug)]
enum Command {
    Init(init::InitArgs),
    #[command(subcommand)]
    Run(run::RunCommand),
    #[command(subcommand)]
    Ws(ws::WsCommand),
    Log(log::LogArgs),
    #[command(subcommand)]
    Memory(memory::MemoryCommand),
    Milestone(milestone::MilestoneArgs),
    #[command(subcommand)]
    Episode(milestone::EpisodeCommand),
    #[command(subcommand)]
    Project(project::ProjectCommand),
    #[command(subcommand)]
    State(project::StateCommand),
    #[command(subcommand)]
    Schema(schema::SchemaCommand),
    Search(search::SearchArgs),
    Brief(brief::BriefArgs),
    #[command(subcommand)]
    Index(search::IndexCommand),
    Fsck(fsck::FsckArgs),
    #[command(subcommand)]
    Hooks(hooks::HooksCommand),
    /// Run one git hook (what the installed hook shims call).
    #[command(hide = true)]
    Hook(hooks::HookArgs),
    Demo(demo::DemoArgs),
    Mirror(mirror::MirrorArgs),
    Watch(watch::WatchArgs),
    Sync(sync::SyncArgs),
    Snapshot(resume::SnapshotArgs),
    Serve(serve::ServeArgs),
    #[command(subcommand)]
    Backup(backup::BackupCommand),
    #[command(subcommand)]
    Resume(resume::ResumeCommand),
    #[command(subcommand)]
    Conflicts(sync::ConflictsCommand),
    /// git's merge driver for cairn files (what `.git/config` calls).
    #[command(hide = true)]
    MergeDriver(sync::MergeDriverArgs),
    Setup(agent::SetupArgs),
    Interactions(agent::InteractionsArgs),
    /// Run one agent hook (what `cairn setup` writes into the clients' configuration).
    #[command(hide = true)]
    HookAgent(agent::HookAgentArgs),
    Mcp(mcp::McpArgs),
    Completions(CompletionsArgs),
    Man(ManArgs),
}

/// Print a shell completion script (bash, zsh, fish, elvish, powershell).
///
/// E.g. `cairn completions bash > ~/.local/share/bash-completion/completions/cairn`,
/// `cairn completions zsh > "${fpath[1]}/_cairn"`,
/// `cairn completions fish > ~/.config/fish/completions/cairn.fish`.
#[derive(clap::Args, Debug)]
pub struct CompletionsArgs {
    /// The shell.
    shell: clap_complete::Shell,
}

/// Print the man page (roff), or write one page per command into a folder.
///
/// E.g. `cairn man | man -l -`, or `cairn man --dir ~/.local/share/man/man1`.
#[derive(clap::Args, Debug)]
pub struct ManArgs {
    /// Write cairn.1 and a page per command (cairn-run-boot.1, ...) here instead.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// What a command produced: a human text and the JSON `data`.
pub struct Output {
    human: String,
    data: Value,
}

impl Output {
    fn new(human: impl Into<String>, data: Value) -> Self {
        Output {
            human: human.into(),
            data,
        }
    }
}

/// A command error: a library error, or a usage problem found after parsing.
pub enum CliError {
    Lib(Error),
    Usage(String),
}

impl From<Error> for CliError {
    fn from(e: Error) -> Self {
        CliError::Lib(e)
    }
}

type CmdResult = Result<Output, CliError>;

/// Global settings every command gets.
pub struct Ctx {
    store: Option<PathBuf>,
    json: bool,
    options: StoreOptions,
    key: Option<String>,
}

impl Ctx {
    fn open(&self) -> Result<Store, Error> {
        if let Some(p) = &self.store {
            return Store::open(p, self.options.clone());
        }
        if let Some(p) = std::env::var_os("CAIRN_STORE").filter(|p| !p.is_empty()) {
            return Store::open(Path::new(&p), self.options.clone());
        }
        let cwd = std::env::current_dir().map_err(|e| Error::Io {
            op: "read current folder",
            path: PathBuf::from("."),
            source: e,
        })?;
        Store::discover(&cwd, self.options.clone())
    }

    /// Opens the store and, when git left a merge or rebase half done,
    /// says so on stderr: reads show the tip, without the incoming side.
    fn open_reading(&self) -> Result<Store, Error> {
        let store = self.open()?;
        if store.git_operation_started() {
            if let Some((state, conflicted)) = store.merge_state()? {
                eprintln!(
                    "warning: a git {state} is in progress{}; what follows is the tip before it, without the incoming side. `cairn sync --resolve` finishes it by the schemas",
                    if conflicted.is_empty() {
                        String::new()
                    } else {
                        format!(" (conflict markers in {})", conflicted.join(", "))
                    }
                );
            }
        }
        Ok(store)
    }

    fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }
}

fn parse_actor(s: &str) -> Actor {
    match s.split_once('<') {
        Some((name, rest)) => Actor {
            name: name.trim().to_string(),
            email: rest.trim_end_matches('>').trim().to_string(),
        },
        None => Actor {
            name: s.trim().to_string(),
            email: format!("{}@cairn", s.trim().replace(' ', ".")),
        },
    }
}

/// Runs the CLI and returns the process exit code.
pub fn main() -> i32 {
    let matches = match command().try_get_matches() {
        Ok(m) => m,
        Err(e) => return parse_failure(e),
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => return parse_failure(e),
    };
    let (actor, key) = match write_options(&matches) {
        Ok(v) => v,
        Err(msg) => {
            let ctx = Ctx {
                store: None,
                json: cli.json,
                options: StoreOptions::default(),
                key: None,
            };
            return finish(&ctx, Err(CliError::Usage(msg)));
        }
    };
    let now = match std::env::var("CAIRN_NOW") {
        Ok(s) if !s.is_empty() => match cairn::event::parse_rfc3339(&s) {
            Some(t) => Some(t),
            None => {
                eprintln!("error: CAIRN_NOW={s:?} is not an RFC 3339 timestamp");
                return 2;
            }
        },
        _ => None,
    };
    let actor = actor
        .or_else(|| std::env::var("CAIRN_ACTOR").ok().filter(|s| !s.is_empty()))
        .map(|s| parse_actor(&s));
    let ctx = Ctx {
        store: cli.store.clone(),
        json: cli.json,
        options: StoreOptions {
            now,
            actor,
            lock_timeout: None,
            git_env: Some(cairn::store::identity::GitEnv::from_vars(
                std::env::vars_os(),
            )),
        },
        key,
    };
    let result = match cli.command {
        Command::Init(a) => init::cmd_init(&ctx, a),
        Command::Run(c) => run::cmd_run(&ctx, c),
        Command::Ws(c) => ws::cmd_ws(&ctx, c),
        Command::Log(a) => log::cmd_log(&ctx, a),
        Command::Memory(c) => memory::cmd_memory(&ctx, c),
        Command::Milestone(a) => milestone::cmd_milestone(&ctx, a),
        Command::Episode(c) => milestone::cmd_episode(&ctx, c),
        Command::Project(c) => project::cmd_project(&ctx, c),
        Command::State(c) => project::cmd_state(&ctx, c),
        Command::Schema(c) => schema::cmd_schema(&ctx, c),
        Command::Search(a) => search::cmd_search(&ctx, a),
        Command::Brief(a) => brief::cmd_brief(&ctx, a),
        Command::Index(c) => search::cmd_index(&ctx, c),
        Command::Fsck(a) => fsck::cmd_fsck(&ctx, a),
        Command::Hooks(c) => hooks::cmd_hooks(&ctx, c),
        Command::Hook(a) => hooks::cmd_hook(&ctx, a),
        Command::Demo(a) => demo::cmd_demo(&ctx, a),
        Command::Mirror(a) => mirror::cmd_mirror(&ctx, a),
        Command::Watch(a) => watch::cmd_watch(&ctx, a),
        Command::Sync(a) => sync::cmd_sync(&ctx, a),
        Command::Snapshot(a) => resume::cmd_snapshot(&ctx, a),
        Command::Serve(a) => serve::cmd_serve(&ctx, a),
        Command::Backup(c) => backup::cmd_backup(&ctx, c),
        Command::Resume(c) => resume::cmd_resume(&ctx, c),
        Command::Conflicts(c) => sync::cmd_conflicts(&ctx, c),
        Command::MergeDriver(a) => return sync::cmd_merge_driver(&ctx, a),
        Command::Setup(a) => return agent::cmd_setup(&ctx, a),
        Command::Interactions(a) => agent::cmd_interactions(&ctx, a),
        Command::HookAgent(a) => return agent::cmd_hook_agent(&ctx, a),
        Command::Mcp(a) => return mcp::cmd_mcp(&ctx, a),
        Command::Completions(a) => cmd_completions(a),
        Command::Man(a) => cmd_man(a),
    };
    finish(&ctx, result)
}

/// `cairn completions SHELL`.
fn cmd_completions(a: CompletionsArgs) -> CmdResult {
    let mut script = Vec::new();
    clap_complete::generate(a.shell, &mut command(), "cairn", &mut script);
    let script = String::from_utf8_lossy(&script).into_owned();
    Ok(Output::new(
        script.trim_end(),
        serde_json::json!({"shell": a.shell.to_string(), "script": script}),
    ))
}

fn io_error(op: &'static str, path: &Path, source: std::io::Error) -> CliError {
    CliError::Lib(Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    })
}

/// `cairn man [--dir DIR]`.
fn cmd_man(a: ManArgs) -> CmdResult {
    let cmd = command();
    let Some(dir) = a.dir else {
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd)
            .render(&mut page)
            .map_err(|e| io_error("render the man page", Path::new("<stdout>"), e))?;
        let page = String::from_utf8_lossy(&page).into_owned();
        return Ok(Output::new(
            page.trim_end(),
            serde_json::json!({"page": page}),
        ));
    };
    std::fs::create_dir_all(&dir).map_err(|e| io_error("create", &dir, e))?;
    clap_mangen::generate_to(cmd, &dir).map_err(|e| io_error("write man pages into", &dir, e))?;
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .map_err(|e| io_error("list", &dir, e))?
        .filter_map(|e| e.ok())
        .map(|e| e.path().display().to_string())
        .filter(|p| p.ends_with(".1") && p.contains("cairn"))
        .collect();
    files.sort();
    Ok(Output::new(
        format!("wrote {} man page(s) to {}", files.len(), dir.display()),
        serde_json::json!({"files": files}),
    ))
}

/// Reports arguments clap refused. Under `--json` that is the USAGE
/// envelope on stdout (exit 2) like every other failure; without it, clap's
/// own text. Help and version output are not failures and print as usual.
fn parse_failure(e: clap::Error) -> i32 {
    use clap::error::ErrorKind;
    let help = matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion);
    if help || !json_requested(std::env::args_os().skip(1)) {
        e.exit();
    }
    let env = api::error_envelope(usage_json(&e));
    print_stdout(&serde_json::to_string_pretty(&env).expect("JSON values serialize"));
    2
}

/// Whether `--json` is among the arguments (before a `--` that ends the options).
fn json_requested(args: impl Iterator<Item = std::ffi::OsString>) -> bool {
    args.take_while(|a| a != "--").any(|a| a == "--json")
}

/// The USAGE error body of a clap error: its first line as the message, the
/// whole text (usage line and the `--help` pointer) under `details.usage`.
fn usage_json(e: &clap::Error) -> Value {
    let text = e.render().to_string();
    let message = match e.kind() {
        clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            "a subcommand is required; `--help` lists them".to_string()
        }
        // The first paragraph: "the following required arguments were not
        // provided:" is followed by the arguments on their own lines.
        _ => text
            .lines()
            .skip_while(|l| l.trim().is_empty())
            .take_while(|l| !l.trim().is_empty())
            .map(str::trim)
            .collect::<Vec<_>>()
            .join(" ")
            .trim_start_matches("error: ")
            .to_string(),
    };
    let mut body = api::usage_error_json(&message);
    body["details"]["usage"] = Value::String(text.trim_end().to_string());
    body
}

fn finish(ctx: &Ctx, result: CmdResult) -> i32 {
    match result {
        Ok(out) => {
            let text = if ctx.json {
                serde_json::to_string_pretty(&api::ok_envelope(out.data))
                    .expect("JSON values serialize")
            } else {
                out.human
            };
            if !text.is_empty() {
                print_stdout(&text);
            }
            0
        }
        Err(CliError::Usage(msg)) => {
            if ctx.json {
                let env = api::error_envelope(api::usage_error_json(&msg));
                print_stdout(&serde_json::to_string_pretty(&env).expect("JSON values serialize"));
            } else {
                eprintln!("error: {msg}");
            }
            2
        }
        Err(CliError::Lib(e)) => {
            report(ctx, &e);
            e.category().exit_code()
        }
    }
}

/// The one place library errors become output.
fn report(ctx: &Ctx, e: &Error) {
    let mut chain = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        chain.push(s.to_string());
        source = s.source();
    }
    if ctx.json {
        let env = api::error_envelope(api::error_json(e));
        print_stdout(&serde_json::to_string_pretty(&env).expect("JSON values serialize"));
    } else {
        eprintln!("error[{}]: {e}", e.category().as_str());
        for c in chain {
            eprintln!("  caused by: {c}");
        }
        if let Error::FsckFailed { findings }
        | Error::HookRefused { findings, .. }
        | Error::TipInvalid { findings, .. } = e
        {
            for f in findings {
                eprintln!("  {}", f.describe());
            }
        }
        if let Error::Schema { violations, .. } = e {
            for v in violations.iter().filter(|_| violations.len() > 1) {
                let at = if v.pointer.is_empty() {
                    "/"
                } else {
                    &v.pointer
                };
                eprintln!("  at {at}: {} (rule: {})", v.message, v.rule);
            }
        }
        if let Some(h) = e.hint() {
            eprintln!("hint: {h}");
        }
    }
}

/// Prints to stdout; a closed pipe (`cairn log | head`) is not an error.
fn print_stdout(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}").and_then(|_| out.flush());
}

/// Reads a document from a file or `-` (stdin), bounded by `max` bytes.
fn read_input(path: &str, max: u64) -> Result<(String, Vec<u8>), Error> {
    use std::io::Read;
    let label = if path == "-" {
        "<stdin>".to_string()
    } else {
        path.to_string()
    };
    let mut buf = Vec::new();
    let reader: Box<dyn Read> = if path == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let file = std::fs::File::open(path).map_err(|e| Error::Io {
            op: "open",
            path: PathBuf::from(path),
            source: e,
        })?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        if size > max {
            return Err(Error::TooLarge {
                file: label,
                bytes: size,
                limit: max,
                setting: "max_input_bytes",
            });
        }
        Box::new(file)
    };
    // Read one byte past the limit so an oversized input is detected without reading it all.
    reader
        .take(max.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(|e| Error::Io {
            op: "read",
            path: PathBuf::from(&label),
            source: e,
        })?;
    if buf.len() as u64 > max {
        return Err(Error::TooLarge {
            file: label,
            bytes: buf.len() as u64,
            limit: max,
            setting: "max_input_bytes",
        });
    }
    Ok((label, buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_write_command_exists_and_the_command_line_is_consistent() {
        // `mut_subcommand` panics on a path that names no command.
        let cmd = command();
        cmd.clone().debug_assert();
        for (path, keyed) in WRITES {
            let mut c = &cmd;
            for name in *path {
                c = c.find_subcommand(name).expect("listed commands exist");
            }
            let ids: Vec<&str> = c.get_arguments().map(|a| a.get_id().as_str()).collect();
            assert!(ids.contains(&"write_actor"), "{path:?}");
            assert_eq!(ids.contains(&"idempotency_key"), *keyed, "{path:?}");
        }
    }
}
