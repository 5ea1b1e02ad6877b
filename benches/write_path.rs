//! The write-path benchmark: `cairn ws patch` against the durable-write floor
//! and the git CLI, side by side in one run, at 1k / 10k / 100k memory files.
//!
//! Run with `cargo bench --bench write_path`. Settings (environment):
//! - `CAIRN_BENCH_OPS`: timed operations per row (default 1000).
//! - `CAIRN_BENCH_SLOW_OPS`: timed operations for the two rows that cost
//!   0.1 s or more per operation: the CLI in a 100k work-tree store and the
//!   git peer at 100k (default 300; set it to `CAIRN_BENCH_OPS` for full rows).
//! - `CAIRN_BENCH_WARMUP`: untimed operations per row before timing (default 10).
//! - `CAIRN_BENCH_ROUNDS`: rounds the timed operations are spread over
//!   (default 100: each row does 1% of its operations per round).
//! - `CAIRN_BENCH_BIG`: the large store size (default 100000).
//! - `CAIRN_BENCH_DIR`: where the temporary stores go (default the system temp dir).
//! - `CAIRN_BENCH_ONLY`: comma-separated rows to run, by name or by a prefix
//!   ending at a `-`: `floor`, `mem`, `spawn`, `lib`, `lib-bare`,
//!   `lib-bare-1000`, `cli-wt-100000`, `git`, `git-1000`.
//!
//! Side by side: every store is made first, then the timed operations run in
//! rounds, each row doing its share of every round, so all rows sample the
//! same periods of a shared, noisy machine and their ratios stay meaningful.
//!
//! Every store is fresh and its own: `Store::init`, one booted run whose
//! sliding context is filled to its token budget (so every timed patch
//! appends one item and evicts one, the steady state of a long run), and the
//! memory files added as one commit on top of the tip, written with git2 into
//! a pack (objects built once per size in a mempack, then copied).
//!
//! Nothing is deleted until the end: on a file system that delays the reuse
//! of freed inodes (ext4 without a journal skips inodes freed in the last
//! minutes when it allocates), removing a 100k-file store would slow the file
//! creations that follow it.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::error::Error;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cairn::store::Actor;
use cairn::working_set::{self, BootRequest, WorkingSet};
use cairn::{layout, Store, StoreOptions};
use common::{cpu_now, nearest_rank, sorted, try_num};
use git2::{Oid, Repository};
use serde_json::{json, Value};

type Res<T> = std::result::Result<T, Box<dyn Error>>;

const RUN: &str = "run_bench";
const CAIRN: &str = env!("CARGO_BIN_EXE_cairn");
/// Characters of content per appended sliding item (~50 tokens).
const ITEM_CHARS: usize = 200;

const FLOOR: &str = "floor: write+fsync+rename+fsync dir";
const MEM: &str = "diagnostic: ws parse/validate/apply/serialize, in memory";
const SPAWN: &str = "diagnostic: `cairn --version` process";
const LIB: &str = "cairn ws patch (library)";
const CLI: &str = "cairn ws patch (CLI process)";
const PEER: &str = "git add + git commit (CLI peer)";
const BARE: &str = "bare";
const WT: &str = "work tree";

struct Settings {
    ops: usize,
    slow_ops: usize,
    warmup: usize,
    rounds: usize,
    big: usize,
    only: Option<Vec<String>>,
}

impl Settings {
    fn from_env() -> Res<Settings> {
        let num = |name: &str, default: usize| -> Res<usize> { Ok(try_num(name, default)?) };
        let ops = num("CAIRN_BENCH_OPS", 1000)?.max(1);
        Ok(Settings {
            ops,
            slow_ops: num("CAIRN_BENCH_SLOW_OPS", 300)?.clamp(1, ops),
            warmup: num("CAIRN_BENCH_WARMUP", 10)?,
            rounds: num("CAIRN_BENCH_ROUNDS", 100)?.max(1),
            big: num("CAIRN_BENCH_BIG", 100_000)?.max(1),
            only: std::env::var("CAIRN_BENCH_ONLY")
                .ok()
                .filter(|s| !s.trim().is_empty())
                .map(|s| s.split(',').map(|p| p.trim().to_string()).collect()),
        })
    }

    fn wants(&self, what: &str) -> bool {
        self.only.as_ref().is_none_or(|o| {
            o.iter().any(|x| {
                what == x
                    || what
                        .strip_prefix(x.as_str())
                        .is_some_and(|r| r.starts_with('-'))
            })
        })
    }
}

/// One measured row.
struct Row {
    op: &'static str,
    kind: &'static str,
    files: usize,
    /// Wall-clock milliseconds, sorted.
    ms: Vec<f64>,
    /// Mean CPU milliseconds (user + system, this process and its children).
    cpu_ms: f64,
}

impl Row {
    fn new(op: &'static str, kind: &'static str, files: usize, samples: &[Sample]) -> Row {
        let ms = sorted(samples.iter().map(|s| s.wall.as_secs_f64() * 1e3).collect());
        let cpu: Duration = samples.iter().map(|s| s.cpu).sum();
        Row {
            op,
            kind,
            files,
            cpu_ms: cpu.as_secs_f64() * 1e3 / samples.len().max(1) as f64,
            ms,
        }
    }

    fn p50(&self) -> f64 {
        nearest_rank(&self.ms, 50.0)
    }

    fn p99(&self) -> f64 {
        nearest_rank(&self.ms, 99.0)
    }
}

fn main() {
    if let Err(e) = run() {
        eprintln!("write_path bench failed: {e}");
        std::process::exit(1);
    }
}

/// Load average and pressure-stall averages, to judge how shared the machine was.
fn machine_load() -> String {
    let read = |p: &str| fs::read_to_string(p).unwrap_or_default();
    let loadavg: Vec<String> = read("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .map(str::to_string)
        .collect();
    let psi = |p: &str| {
        read(p)
            .lines()
            .next()
            .map(|l| {
                l.split_whitespace()
                    .filter(|w| w.starts_with("avg10=") || w.starts_with("avg60="))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_else(|| "n/a".into())
    };
    format!(
        "load average {}; CPU pressure (some) {}; IO pressure (some) {}",
        loadavg.join(" "),
        psi("/proc/pressure/cpu"),
        psi("/proc/pressure/io")
    )
}

fn run() -> Res<()> {
    let settings = Settings::from_env()?;
    // A fixed git environment: no global or system config, for this process
    // (libgit2 reads the search paths) and for every child git process.
    std::env::set_var("GIT_CONFIG_GLOBAL", "/dev/null");
    std::env::set_var("GIT_CONFIG_NOSYSTEM", "1");
    std::env::set_var("GIT_AUTHOR_NAME", "bench");
    std::env::set_var("GIT_AUTHOR_EMAIL", "bench@localhost");
    std::env::set_var("GIT_COMMITTER_NAME", "bench");
    std::env::set_var("GIT_COMMITTER_EMAIL", "bench@localhost");
    let base = match std::env::var_os("CAIRN_BENCH_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => std::env::temp_dir(),
    };
    fs::create_dir_all(&base)?;
    let tmp = tempfile::Builder::new()
        .prefix("cairn-write-path-")
        .tempdir_in(&base)?;
    let root = tmp.path().to_path_buf();
    let empty = root.join("empty-config-dir");
    fs::create_dir_all(&empty)?;
    for level in [
        git2::ConfigLevel::Global,
        git2::ConfigLevel::XDG,
        git2::ConfigLevel::System,
        git2::ConfigLevel::ProgramData,
    ] {
        // SAFETY: set before any repository is opened, on this one thread.
        unsafe { git2::opts::set_search_path(level, &empty)? };
    }
    // A private copy of the binary cargo built for this bench: a concurrent
    // `cargo build` cannot swap it in the middle of the run.
    let cairn = root.join("cairn-bin");
    fs::copy(CAIRN, &cairn)?;

    let started = Instant::now();
    let load_before = machine_load();
    let (ops, slow, big) = (settings.ops, settings.slow_ops, settings.big);
    let (small, mid) = (1000.min(big), 10_000.min(big));
    eprintln!(
        "write_path: {ops} ops per row ({slow} for the slow rows), {} warm-up, {} rounds, stores under {}",
        settings.warmup,
        settings.rounds,
        root.display()
    );

    // Set everything up first. Row names: see CAIRN_BENCH_ONLY.
    let mut packs = Packs {
        root: root.clone(),
        built: BTreeMap::new(),
        templates: BTreeMap::new(),
    };
    let mut rows: Vec<Variant> = Vec::new();
    let mut seen = BTreeSet::new();
    let mut wants = |name: &str| settings.wants(name) && seen.insert(name.to_string());
    let wt = |w: bool| if w { "wt" } else { "bare" };
    if wants("floor") {
        let dir = root.join("floor");
        fs::create_dir_all(&dir)?;
        rows.push(Variant::new(
            FLOOR,
            "-",
            0,
            ops,
            Work::Floor {
                target: dir.join("file.yaml"),
                tmp: dir.join(".file.yaml.tmp"),
                dir,
            },
        ));
    }
    if wants("mem") {
        let (path, _) = make_store(&mut packs, &root.join("mem"), false, 0)?;
        let store = Store::open(&path, options())?;
        let rel = layout::working_set(RUN);
        let bytes = store
            .read_file(store.require_tip()?, &rel)?
            .ok_or("no working set")?;
        rows.push(Variant::new(MEM, "-", 0, ops, Work::Memory { rel, bytes }));
    }
    if wants("spawn") {
        let work = Work::Spawn {
            cairn: cairn.clone(),
        };
        rows.push(Variant::new(SPAWN, "-", 0, ops, work));
    }
    for (worktree, n) in [
        (false, small),
        (false, big),
        (true, small),
        (true, mid),
        (true, big),
    ] {
        let name = format!("lib-{}-{n}", wt(worktree));
        if wants(&name) {
            let (path, seq) = make_store(&mut packs, &root.join(&name), worktree, n)?;
            let store = Box::new(Store::open(&path, options())?);
            let work = Work::Lib { store, path, seq };
            rows.push(Variant::new(LIB, kind_name(worktree), n, ops, work));
        }
    }
    for (worktree, n, k) in [
        (false, small, ops),
        (false, big, ops),
        (true, small, ops),
        (true, big, slow),
    ] {
        let name = format!("cli-{}-{n}", wt(worktree));
        if wants(&name) {
            let (path, seq) = make_store(&mut packs, &root.join(&name), worktree, n)?;
            let work = Work::Cli {
                cairn: cairn.clone(),
                patch_file: root.join(format!("{name}.patch.json")),
                path,
                seq,
            };
            rows.push(Variant::new(CLI, kind_name(worktree), n, k, work));
        }
    }
    for (n, k) in [(small, ops), (big, slow)] {
        let name = format!("git-{n}");
        if wants(&name) {
            // A cairn work-tree store is a plain git repository with the same
            // files (and the same core.fsync settings); only the git CLI writes
            // to it from here on.
            let (path, _) = make_store(&mut packs, &root.join(&name), true, n)?;
            Repository::open(&path)?.config()?.set_i32("gc.auto", 0)?;
            let rel = layout::working_set(RUN);
            let file = path.join(&rel);
            let ws = Box::new(WorkingSet::from_bytes(&rel, &fs::read(&file)?)?);
            let work = Work::Git {
                path,
                rel,
                file,
                ws,
            };
            rows.push(Variant::new(PEER, WT, n, k, work));
        }
    }
    let setup = started.elapsed();
    eprintln!("write_path: set up in {:.1} s", setup.as_secs_f64());

    // Warm up, then the timed rounds.
    for v in &mut rows {
        for _ in 0..settings.warmup {
            v.step()?;
        }
    }
    let mut since = Instant::now();
    for round in 1..=settings.rounds {
        for v in &mut rows {
            let target = (v.ops * round).div_ceil(settings.rounds);
            while v.samples.len() < target {
                let s = v.step()?;
                v.samples.push(s);
            }
        }
        // About ten progress lines, whatever the number of rounds.
        if round % settings.rounds.div_ceil(10) == 0 || round == settings.rounds {
            eprintln!(
                "write_path: round {round}/{}, {:.1} s since the last line ({})",
                settings.rounds,
                since.elapsed().as_secs_f64(),
                machine_load()
            );
            since = Instant::now();
        }
    }
    let timed = started.elapsed() - setup;
    let load_after = machine_load();

    let mut report = Report {
        rows: Vec::new(),
        notes: Vec::new(),
        ops,
    };
    for v in rows {
        report.add(v)?;
    }
    report.print(small, mid, big);
    println!(
        "- {} untimed warm-up operations per row; timed operations in {} interleaved rounds",
        settings.warmup, settings.rounds
    );
    println!(
        "- set-up {:.0} s, timed rounds {:.0} s",
        setup.as_secs_f64(),
        timed.as_secs_f64()
    );
    println!("- machine at start: {load_before}");
    println!("- machine at end: {load_after}");
    drop(packs);
    let t = Instant::now();
    tmp.close()?;
    println!(
        "- removed the stores in {:.0} s; total {:.0} s",
        t.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// What one row does per operation, and the state it carries.
enum Work {
    Floor {
        dir: PathBuf,
        target: PathBuf,
        tmp: PathBuf,
    },
    Memory {
        rel: String,
        bytes: Vec<u8>,
    },
    Spawn {
        cairn: PathBuf,
    },
    Lib {
        // Boxed: a Store is much larger than the other variants.
        store: Box<Store>,
        path: PathBuf,
        seq: u64,
    },
    Cli {
        cairn: PathBuf,
        path: PathBuf,
        patch_file: PathBuf,
        seq: u64,
    },
    Git {
        path: PathBuf,
        rel: String,
        file: PathBuf,
        ws: Box<WorkingSet>,
    },
}

/// A row being measured.
struct Variant {
    op: &'static str,
    kind: &'static str,
    files: usize,
    ops: usize,
    /// Operations started, warm-up included (numbers the appended items).
    started: usize,
    samples: Vec<Sample>,
    work: Work,
}

impl Variant {
    fn new(op: &'static str, kind: &'static str, files: usize, ops: usize, work: Work) -> Self {
        Variant {
            op,
            kind,
            files,
            ops,
            started: 0,
            samples: Vec::with_capacity(ops),
            work,
        }
    }

    /// One operation; only its measured part is in the sample.
    fn step(&mut self) -> Res<Sample> {
        let i = 1_000_000 + self.started;
        self.started += 1;
        match &mut self.work {
            // 1. temp file + write + fsync + rename + fsync of the folder, ~600 bytes.
            Work::Floor { dir, target, tmp } => {
                let bytes = memory_yaml(i);
                let t = Span::start();
                let mut f = File::create(&*tmp)?;
                f.write_all(&bytes)?;
                f.sync_all()?;
                drop(f);
                fs::rename(&*tmp, &*target)?;
                File::open(&*dir)?.sync_all()?;
                Ok(t.stop())
            }
            // Diagnostic: the working-set work of one patch without git or
            // I/O: parse + validate the current file, apply, serialize, and
            // parse + validate the result twice (as `transact` and `patch` do).
            Work::Memory { rel, bytes } => {
                let t = Span::start();
                let ws = WorkingSet::from_bytes(rel, bytes)?;
                let patch = append_patch(ws.update_seq, i, 1);
                let next = working_set::apply_patch(
                    &ws,
                    &patch,
                    time::OffsetDateTime::now_utc(),
                    "bench-patch",
                )?;
                let out = next.working_set.to_yaml().into_bytes();
                WorkingSet::from_bytes(rel, &out)?;
                WorkingSet::from_bytes(rel, &out)?;
                let took = t.stop();
                *bytes = out;
                Ok(took)
            }
            // Diagnostic: what starting the binary costs, with no store work.
            Work::Spawn { cairn } => {
                let t = Span::start();
                let out = Command::new(&*cairn)
                    .arg("--version")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .output()?;
                let took = t.stop();
                if !out.status.success() {
                    return Err("cairn --version failed".into());
                }
                Ok(took)
            }
            // 2. `working_set::patch` in-process, one Store kept open.
            Work::Lib { store, seq, .. } => {
                let patch = append_patch(*seq, i, 1);
                let t = Span::start();
                let out = working_set::patch(store, RUN, &patch, "bench-patch", None)?;
                let took = t.stop();
                if out.working_set.update_seq != *seq + 1 || out.evicted.is_empty() {
                    return Err(format!(
                        "unexpected patch outcome at seq {seq}: now {} with {} evicted",
                        out.working_set.update_seq,
                        out.evicted.len()
                    )
                    .into());
                }
                *seq += 1;
                Ok(took)
            }
            // 3. `cairn --store PATH ws patch RUN --file F`, one process per patch.
            Work::Cli {
                cairn,
                path,
                patch_file,
                seq,
            } => {
                fs::write(&*patch_file, serde_json::to_vec(&append_patch(*seq, i, 1))?)?;
                let t = Span::start();
                let out = Command::new(&*cairn)
                    .arg("--store")
                    .arg(&*path)
                    .args(["--actor", "bench", "ws", "patch", RUN, "--file"])
                    .arg(&*patch_file)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .output()?;
                let took = t.stop();
                if !out.status.success() {
                    return Err(format!(
                        "cairn ws patch failed at seq {seq}: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    )
                    .into());
                }
                *seq += 1;
                Ok(took)
            }
            // 4. The naive peer: edit working_set.yaml, `git add` it, `git commit`.
            Work::Git {
                path,
                rel,
                file,
                ws,
            } => {
                // The same change cairn makes, computed outside the timing.
                let patch = append_patch(ws.update_seq, i, 1);
                let next = working_set::apply_patch(
                    ws,
                    &patch,
                    time::OffsetDateTime::now_utc(),
                    "bench-patch",
                )?
                .working_set;
                let bytes = next.to_yaml();
                let message = format!("ws {RUN}: seq {}", next.update_seq);
                let t = Span::start();
                fs::write(&*file, &bytes)?;
                git(path, &["add", "--", rel])?;
                git(path, &["commit", "-q", "--no-verify", "-m", &message])?;
                let took = t.stop();
                **ws = next;
                Ok(took)
            }
        }
    }
}

/// The measured rows and what the run learned on the way.
struct Report {
    rows: Vec<Row>,
    notes: Vec<String>,
    ops: usize,
}

impl Report {
    /// Checks what a row left behind, then records it.
    fn add(&mut self, v: Variant) -> Res<()> {
        match &v.work {
            Work::Lib { store, path, seq } => {
                let size = store
                    .read_file(store.require_tip()?, &layout::working_set(RUN))?
                    .map_or(0, |b| b.len());
                let note = format!(
                    "working_set.yaml at the token budget: about {} KB",
                    size.div_ceil(1024)
                );
                if !self.notes.contains(&note) {
                    self.notes.push(note);
                }
                check_seq(path, *seq)?;
                check_clean(path, v.kind == WT)?;
            }
            Work::Cli { path, seq, .. } => {
                check_seq(path, *seq)?;
                check_clean(path, v.kind == WT)?;
            }
            Work::Git { path, .. } => check_clean(path, true)?,
            Work::Floor { .. } | Work::Memory { .. } | Work::Spawn { .. } => {}
        }
        if v.ops < self.ops {
            self.notes.push(format!(
                "{}, {}, {} files: {} ops (CAIRN_BENCH_SLOW_OPS) to keep the run short",
                v.op, v.kind, v.files, v.ops
            ));
        }
        self.rows.push(Row::new(v.op, v.kind, v.files, &v.samples));
        Ok(())
    }

    fn find(&self, op: &str, kind: &str, files: usize) -> Option<&Row> {
        self.rows
            .iter()
            .find(|r| r.op == op && r.kind == kind && r.files == files)
    }

    fn print(&self, small: usize, mid: usize, big: usize) {
        let floor = self.find(FLOOR, "-", 0).map(Row::p50);
        println!();
        println!(
            "| operation | store | files | ops | p50 ms | p99 ms | p50 / floor p50 | mean CPU ms/op |"
        );
        println!("|---|---|---:|---:|---:|---:|---:|---:|");
        for r in &self.rows {
            let ratio = match floor {
                Some(f) if f > 0.0 => format!("{:.1}x", r.p50() / f),
                _ => "-".into(),
            };
            let files = if r.files == 0 {
                "-".to_string()
            } else {
                r.files.to_string()
            };
            println!(
                "| {} | {} | {} | {} | {:.3} | {:.3} | {} | {:.3} |",
                r.op,
                r.kind,
                files,
                r.ms.len(),
                r.p50(),
                r.p99(),
                ratio,
                r.cpu_ms
            );
        }
        println!();
        println!("Key ratios and targets:");
        let verdict = |ok: bool| if ok { "MET" } else { "MISSED" };
        if let Some(r) = self.find(LIB, BARE, small) {
            let p = r.p50();
            let ratio = floor.map_or("-".into(), |f| format!("{:.1}x the floor", p / f));
            println!(
                "- library patch, bare, {small} files, fsync on: p50 {p:.3} ms ({ratio}); target <= 2 ms: {}",
                verdict(p <= 2.0)
            );
        }
        for (op, label) in [(LIB, "library"), (CLI, "CLI")] {
            if let (Some(a), Some(b)) = (self.find(op, BARE, small), self.find(op, BARE, big)) {
                let q = b.p50() / a.p50();
                let target = if op == LIB {
                    format!("target <= 1.5: {}", verdict(q <= 1.5))
                } else {
                    "(no target)".into()
                };
                println!("- {label} patch, bare: p50 at {big} / p50 at {small} = {q:.2}; {target}");
            }
        }
        if let (Some(a), Some(b)) = (self.find(LIB, WT, small), self.find(LIB, WT, big)) {
            println!(
                "- library patch, work tree: p50 at {big} / p50 at {small} = {:.2} (no target)",
                b.p50() / a.p50()
            );
        }
        if let Some(r) = self.find(LIB, WT, mid) {
            println!(
                "- library patch, work tree, {mid} files: p50 {:.3} ms; target <= 25 ms: {}",
                r.p50(),
                verdict(r.p50() <= 25.0)
            );
        }
        for n in [small, big] {
            let Some(g) = self.find(PEER, WT, n) else {
                continue;
            };
            for (op, label) in [(LIB, "library"), (CLI, "CLI")] {
                for kind in [WT, BARE] {
                    if let Some(c) = self.find(op, kind, n) {
                        println!(
                            "- git CLI peer p50 / cairn {label} ({kind}) p50 at {n} files = {:.1}x",
                            g.p50() / c.p50()
                        );
                    }
                }
            }
        }
        println!();
        println!("Notes:");
        for n in &self.notes {
            println!("- {n}");
        }
    }
}

/// The store's run is at `seq`: every timed patch landed exactly once.
fn check_seq(path: &Path, seq: u64) -> Res<()> {
    let store = Store::open(path, options())?;
    let ws = working_set::show(&store, RUN, None)?;
    if ws.update_seq != seq {
        return Err(format!(
            "{}: run at seq {} but {seq} patches were acknowledged",
            path.display(),
            ws.update_seq
        )
        .into());
    }
    Ok(())
}

/// A work-tree store must end with a clean `git status`.
fn check_clean(path: &Path, worktree: bool) -> Res<()> {
    if !worktree {
        return Ok(());
    }
    let out = Command::new("git")
        .arg("-C")
        .arg(path)
        .args(["status", "--porcelain"])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !text.trim().is_empty() {
        return Err(format!(
            "{}: work tree not clean after the run:\n{text}",
            path.display()
        )
        .into());
    }
    Ok(())
}

fn options() -> StoreOptions {
    StoreOptions {
        now: None,
        actor: Some(Actor {
            name: "bench".into(),
            email: "bench@localhost".into(),
        }),
        lock_timeout: None,
        git_env: None,
    }
}

fn kind_name(worktree: bool) -> &'static str {
    if worktree {
        "work tree"
    } else {
        "bare"
    }
}

/// A ~600-byte memory item (valid against the memory_item schema), distinct per `i`.
fn memory_yaml(i: usize) -> Vec<u8> {
    let id = memory_id(i);
    let mut s = format!(
        "_schema_version: \"2.1\"\n\
         id: {id}\n\
         type: fact\n\
         scope: global\n\
         content: \"Item {i}: the build of service {svc} uses the release profile with \
         line tables; its integration tests need the fixtures folder and a writable \
         temporary directory. Retry flaky step {step} at most twice, then report.\"\n\
         confidence: 0.{conf:02}\n\
         status: active\n\
         rationale: \"Seen in run run_seed_{run} and confirmed by its test log.\"\n\
         source_refs:\n  - \"run:run_seed_{run}\"\n  - \"commit:{hash:040x}\"\n\
         tags:\n  - bench\n  - service-{svc}\n  - step-{step}\n\
         created_at: \"2026-01-{day:02}T12:00:00.000Z\"\n\
         updated_at: \"2026-01-{day:02}T12:00:00.000Z\"\n",
        svc = i % 97,
        step = i % 13,
        conf = 50 + i % 50,
        run = i % 1009,
        hash = (i as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834),
        day = 1 + i % 28,
    );
    while s.len() < 600 {
        s.push_str("# padding to a typical memory item size\n");
    }
    s.into_bytes()
}

/// `mem_` and 26 Crockford base32 characters, like a ULID.
fn memory_id(i: usize) -> String {
    const DIGITS: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let mut tail = [b'0'; 18];
    let mut v = i;
    for c in tail.iter_mut().rev() {
        *c = DIGITS[v % 32];
        v /= 32;
    }
    format!("mem_01JBENCH{}", String::from_utf8_lossy(&tail))
}

fn item_content(i: usize) -> String {
    let mut s = format!(
        "Observation {i}: the agent ran the test suite, read the failing assertion, \
         and decided to look at the fixture loader next; "
    );
    while s.len() < ITEM_CHARS {
        s.push('x');
    }
    s.truncate(ITEM_CHARS);
    s
}

fn append_patch(expected_seq: u64, first: usize, count: usize) -> Value {
    let items: Vec<Value> = (first..first + count)
        .map(|i| json!({"id": format!("ctx_{i:07}"), "content": item_content(i)}))
        .collect();
    json!({"expected_seq": expected_seq, "append": {"sliding_context": items}})
}

fn git(dir: &Path, args: &[&str]) -> Res<()> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "git {} failed in {}: {}",
            args.join(" "),
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    Ok(())
}

/// The cost of one timed operation.
struct Sample {
    wall: Duration,
    cpu: Duration,
}

/// The start of a timed part.
struct Span {
    wall: Instant,
    cpu: Duration,
}

impl Span {
    fn start() -> Span {
        Span {
            cpu: cpu_now(),
            wall: Instant::now(),
        }
    }

    fn stop(self) -> Sample {
        let wall = self.wall.elapsed();
        Sample {
            wall,
            cpu: cpu_now().saturating_sub(self.cpu),
        }
    }
}

/// A pack holding the `memory/` tree of one size, built once.
struct MemoryPack {
    files: Vec<PathBuf>,
    tree: Oid,
}

/// The memory packs built so far, by size.
struct Packs {
    root: PathBuf,
    built: BTreeMap<usize, MemoryPack>,
    templates: BTreeMap<usize, Template>,
}

/// A finished store of one size, packed, that every store of that size starts from.
struct Template {
    /// Its pack files (.pack before .idx).
    files: Vec<PathBuf>,
    /// Its tip: the fill commit, with the mirror and every derived file up to date.
    tip: Oid,
    /// The run's seq at the tip.
    seq: u64,
}

impl Packs {
    /// The pack holding `memory/global/<shard>/<id>.yaml` for `n` files.
    fn get(&mut self, n: usize) -> Res<&MemoryPack> {
        if !self.built.contains_key(&n) {
            let t = Instant::now();
            let dir = self.root.join(format!("pack-{n}"));
            let sample = layout::memory_item("global", None, &memory_id(0));
            cairn::memory::MemoryItem::from_bytes(&sample, &memory_yaml(0))
                .map_err(|e| format!("the bench's memory items do not validate: {e}"))?;
            let repo = Repository::init_bare(&dir)?;
            let mut buf = git2::Buf::new();
            let tree = {
                let odb = repo.odb()?;
                // Objects go to memory, then out as one pack: no loose objects, no fsync each.
                let mempack = odb.add_new_mempack_backend(1000)?;
                let mut shards: BTreeMap<String, Vec<(String, Oid)>> = BTreeMap::new();
                for i in 0..n {
                    let id = memory_id(i);
                    let blob = repo.blob(&memory_yaml(i))?;
                    shards
                        .entry(layout::shard(&id))
                        .or_default()
                        .push((format!("{id}.yaml"), blob));
                }
                let mut global = repo.treebuilder(None)?;
                for (shard, entries) in &shards {
                    let mut tb = repo.treebuilder(None)?;
                    for (name, blob) in entries {
                        tb.insert(name, *blob, 0o100644)?;
                    }
                    global.insert(shard, tb.write()?, 0o040000)?;
                }
                let global = global.write()?;
                let mut memory = repo.treebuilder(None)?;
                memory.insert("global", global, 0o040000)?;
                let tree = memory.write()?;
                // A mempack dump holds its commits and what they reach: one
                // unreferenced commit carries the tree into the pack.
                let sig = git2::Signature::new("bench", "bench@localhost", &git2::Time::new(0, 0))?;
                repo.commit(None, &sig, &sig, "memory pack", &repo.find_tree(tree)?, &[])?;
                mempack.dump(&repo, &mut buf)?;
                tree
            };
            drop(repo);
            let repo = Repository::open_bare(&dir)?;
            let odb = repo.odb()?;
            let mut writer = odb.packwriter()?;
            writer.write_all(&buf)?;
            writer.commit()?;
            drop(writer);
            let mut files: Vec<PathBuf> = fs::read_dir(dir.join("objects/pack"))?
                .map(|e| e.map(|e| e.path()))
                .collect::<std::io::Result<_>>()?;
            // .idx last, so a reader never sees an index without its pack.
            files.sort_by_key(|p| p.extension().is_some_and(|e| e == "idx"));
            eprintln!(
                "  (built the {n}-file memory pack, {:.1} MB, in {:.1} s)",
                buf.len() as f64 / 1e6,
                t.elapsed().as_secs_f64()
            );
            self.built.insert(n, MemoryPack { files, tree });
        }
        Ok(&self.built[&n])
    }
}

/// The template of size `n`: a bare store with the `n` memory files and a
/// booted run at its token budget, packed into one pack.
///
/// The memory files land first, as one commit made with git2 on top of the
/// store's first commit; boot and fill then go through cairn, so the first
/// cairn write after the raw commit (which brings derived files such as the
/// mirror up to date with the whole store, once) is set-up, untimed.
fn build_template(packs: &mut Packs, n: usize) -> Res<Template> {
    let t = Instant::now();
    let path = packs.root.join(format!("template-{n}"));
    drop(Store::init(&path, true, options())?);
    if n > 0 {
        let pack = packs.get(n)?;
        let (memory_tree, pack_files) = (pack.tree, pack.files.clone());
        let repo = Repository::open(&path)?;
        let pack_dir = repo.path().join("objects/pack");
        fs::create_dir_all(&pack_dir)?;
        for f in &pack_files {
            fs::copy(
                f,
                pack_dir.join(f.file_name().expect("pack files have names")),
            )?;
        }
        repo.odb()?.refresh()?;
        repo.find_tree(memory_tree)
            .map_err(|e| format!("the copied pack lacks the memory tree: {e}"))?;
        let branch = repo
            .find_reference("HEAD")?
            .symbolic_target()?
            .ok_or("HEAD is detached")?
            .to_string();
        let tip = repo.refname_to_id(&branch)?;
        let tip_commit = repo.find_commit(tip)?;
        let mut root = repo.treebuilder(Some(&tip_commit.tree()?))?;
        root.insert("memory", memory_tree, 0o040000)?;
        let tree = repo.find_tree(root.write()?)?;
        let sig = git2::Signature::now("bench", "bench@localhost")?;
        let commit = repo.commit(
            None,
            &sig,
            &sig,
            &format!("bench: add {n} memory files"),
            &tree,
            &[&tip_commit],
        )?;
        repo.reference_matching(&branch, commit, true, tip, "bench: memory files")?;
    }
    let seq = {
        let store = Store::open(&path, options())?;
        working_set::boot(
            &store,
            &BootRequest {
                objective: "benchmark the write path".into(),
                run_id: Some(RUN.into()),
                ..Default::default()
            },
            None,
        )?;
        // Fill the sliding context to its budget in one patch.
        let budget = store.config()?.budgets.max_sliding_tokens as usize;
        let fill = budget / ITEM_CHARS.div_ceil(4) + 1;
        let out = working_set::patch(&store, RUN, &append_patch(0, 0, fill), "fill", None)?;
        out.working_set.update_seq
    };
    // One pack, as a store that cairn (or git gc) has packed.
    git(&path, &["repack", "-a", "-d", "-q"])?;
    let repo = Repository::open(&path)?;
    let tip = repo.head()?.target().ok_or("HEAD has no target")?;
    let mut files: Vec<PathBuf> = fs::read_dir(path.join("objects/pack"))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<Vec<_>>>()?
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "pack" || e == "idx"))
        .collect();
    // .idx last, so a reader never sees an index without its pack.
    files.sort_by_key(|p| p.extension().is_some_and(|e| e == "idx"));
    eprintln!(
        "  (built the {n}-file template store in {:.1} s)",
        t.elapsed().as_secs_f64()
    );
    Ok(Template { files, tip, seq })
}

/// A fresh store at `path` (`Store::init`, bare or with a work tree) holding
/// the template of size `n`: its pack copied in and its branch moved to the
/// template's tip, the work tree and index checked out for a work-tree store.
/// Returns its path and the run's current seq.
fn make_store(packs: &mut Packs, path: &Path, worktree: bool, n: usize) -> Res<(PathBuf, u64)> {
    let t = Instant::now();
    if !packs.templates.contains_key(&n) {
        let template = build_template(packs, n)?;
        packs.templates.insert(n, template);
    }
    let template = &packs.templates[&n];
    let path = path.to_path_buf();
    drop(Store::init(&path, !worktree, options())?);
    {
        let repo = Repository::open(&path)?;
        let pack_dir = repo.path().join("objects/pack");
        fs::create_dir_all(&pack_dir)?;
        for f in &template.files {
            fs::copy(
                f,
                pack_dir.join(f.file_name().expect("pack files have names")),
            )?;
        }
        repo.odb()?.refresh()?;
        let branch = repo
            .find_reference("HEAD")?
            .symbolic_target()?
            .ok_or("HEAD is detached")?
            .to_string();
        repo.reference(&branch, template.tip, true, "bench: template")?;
    }
    if worktree {
        git(&path, &["reset", "-q", "--hard", "HEAD"])?;
        if !path.join(".cairn").is_dir() {
            return Err(format!("{}: .cairn/ did not survive the reset", path.display()).into());
        }
    }
    check_clean(&path, worktree)?;
    eprintln!(
        "  (made {} store {} with {n} memory files in {:.1} s)",
        kind_name(worktree),
        path.file_name().unwrap_or_default().to_string_lossy(),
        t.elapsed().as_secs_f64()
    );
    Ok((path, template.seq))
}
