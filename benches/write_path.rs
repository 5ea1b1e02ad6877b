//! The write-path benchmark: `cairn ws patch` against the durable-write floor
//! and the git CLI, side by side in one run, at 1k / 10k / 100k memory files.
//!
//! Run with `cargo bench --bench write_path`. Settings (environment):
//! - `CAIRN_BENCH_OPS`: timed operations per row (default 1000).
//! - `CAIRN_BENCH_SLOW_OPS`: timed operations for the rows that cost about
//!   0.1 s or more per operation: the CLI in a 100k work-tree store and the
//!   git peer at 100k (default 300; set it to `CAIRN_BENCH_OPS` for full rows).
//! - `CAIRN_BENCH_WARMUP`: untimed operations before each row (default 10).
//! - `CAIRN_BENCH_BIG`: the large store size (default 100000).
//! - `CAIRN_BENCH_DIR`: where the temporary stores go (default the system temp dir).
//! - `CAIRN_BENCH_ONLY`: comma-separated rows to run, by name or by a prefix
//!   ending at a `-`: `floor`, `mem`, `lib`, `lib-bare`, `lib-bare-1000`,
//!   `cli-wt-100000`, `git`, `git-1000`.
//!
//! Nothing is deleted until the end: on a file system that delays the reuse
//! of freed inodes (ext4 without a journal skips inodes freed in the last
//! minutes when it allocates), removing a 100k-file store would slow the file
//! creations of the rows after it.
//!
//! Every store is made fresh for its row: `Store::init`, one booted run whose
//! sliding context is filled to its token budget (so every timed patch
//! appends one item and evicts one, the steady state of a long run), and the
//! memory files added as one commit on top of the tip, written with git2 into
//! a pack (objects built once per size in a mempack, then copied).

use std::collections::BTreeMap;
use std::error::Error;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cairn::store::Actor;
use cairn::working_set::{self, BootRequest, WorkingSet};
use cairn::{layout, Store, StoreOptions};
use git2::{Oid, Repository};
use serde_json::{json, Value};

type Res<T> = std::result::Result<T, Box<dyn Error>>;

const RUN: &str = "run_bench";
const CAIRN: &str = env!("CARGO_BIN_EXE_cairn");
/// Characters of content per appended sliding item (~50 tokens).
const ITEM_CHARS: usize = 200;

struct Settings {
    ops: usize,
    slow_ops: usize,
    warmup: usize,
    big: usize,
    only: Option<Vec<String>>,
}

impl Settings {
    fn from_env() -> Res<Settings> {
        fn num(name: &str, default: usize) -> Res<usize> {
            match std::env::var(name) {
                Ok(s) if !s.trim().is_empty() => {
                    Ok(s.trim().parse().map_err(|e| format!("{name}={s:?}: {e}"))?)
                }
                _ => Ok(default),
            }
        }
        let ops = num("CAIRN_BENCH_OPS", 1000)?.max(1);
        Ok(Settings {
            ops,
            slow_ops: num("CAIRN_BENCH_SLOW_OPS", 300)?.clamp(1, ops),
            warmup: num("CAIRN_BENCH_WARMUP", 10)?,
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
    fn new(op: &'static str, kind: &'static str, files: usize, samples: Vec<Sample>) -> Row {
        let mut ms: Vec<f64> = samples.iter().map(|s| s.wall.as_secs_f64() * 1e3).collect();
        ms.sort_by(|a, b| a.total_cmp(b));
        let cpu: Duration = samples.iter().map(|s| s.cpu).sum();
        Row {
            op,
            kind,
            files,
            cpu_ms: cpu.as_secs_f64() * 1e3 / samples.len().max(1) as f64,
            ms,
        }
    }

    /// Nearest-rank percentile.
    fn pct(&self, p: f64) -> f64 {
        let n = self.ms.len();
        let rank = ((p / 100.0) * n as f64).ceil() as usize;
        self.ms[rank.clamp(1, n) - 1]
    }

    fn p50(&self) -> f64 {
        self.pct(50.0)
    }

    fn p99(&self) -> f64 {
        self.pct(99.0)
    }
}

fn main() {
    if let Err(e) = run() {
        eprintln!("write_path bench failed: {e}");
        std::process::exit(1);
    }
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
    let empty = tmp.path().join("empty-config-dir");
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

    let started = Instant::now();
    let ops = settings.ops;
    let slow = settings.slow_ops;
    let big = settings.big;
    eprintln!(
        "write_path: {ops} ops per row ({slow} for the slow rows), {} warm-up, stores under {}",
        settings.warmup,
        tmp.path().display()
    );
    let mut b = Bench {
        root: tmp.path().to_path_buf(),
        warmup: settings.warmup,
        ops,
        packs: BTreeMap::new(),
        rows: Vec::new(),
        notes: Vec::new(),
        last: Instant::now(),
    };
    let small = 1000.min(big);
    let mid = 10_000.min(big);

    // Each row has a name (`floor`, `lib-bare-1000`, `cli-wt-100000`, `git-1000`);
    // CAIRN_BENCH_ONLY keeps the rows whose name starts with one of its entries.
    let wt = |w: bool| if w { "wt" } else { "bare" };
    if settings.wants("floor") {
        b.floor(ops)?;
    }
    if settings.wants("mem") {
        b.in_memory(ops)?;
    }
    // A row runs once even when sizes coincide (a small CAIRN_BENCH_BIG).
    let mut done = std::collections::BTreeSet::new();
    let mut wants = |name: String| settings.wants(&name) && done.insert(name);
    for (worktree, n) in [
        (false, small),
        (false, big),
        (true, small),
        (true, mid),
        (true, big),
    ] {
        if wants(format!("lib-{}-{n}", wt(worktree))) {
            b.lib_patch(worktree, n, ops)?;
        }
    }
    for (worktree, n, k) in [
        (false, small, ops),
        (false, big, ops),
        (true, small, ops),
        (true, big, slow),
    ] {
        if wants(format!("cli-{}-{n}", wt(worktree))) {
            b.cli_patch(worktree, n, k)?;
        }
    }
    for (n, k) in [(small, ops), (big, slow)] {
        if wants(format!("git-{n}")) {
            b.git_peer(n, k)?;
        }
    }
    b.report(small, mid, big, started.elapsed());
    drop(b);
    let t = Instant::now();
    tmp.close()?;
    eprintln!(
        "write_path: removed the stores in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A pack holding the `memory/` tree of one size, built once.
struct MemoryPack {
    files: Vec<PathBuf>,
    tree: Oid,
}

struct Bench {
    root: PathBuf,
    warmup: usize,
    ops: usize,
    packs: BTreeMap<usize, MemoryPack>,
    rows: Vec<Row>,
    notes: Vec<String>,
    /// When the previous row ended.
    last: Instant,
}

fn options() -> StoreOptions {
    StoreOptions {
        now: None,
        actor: Some(Actor {
            name: "bench".into(),
            email: "bench@localhost".into(),
        }),
        lock_timeout: None,
    }
}

fn kind_name(worktree: bool) -> &'static str {
    if worktree {
        "work tree"
    } else {
        "bare"
    }
}

/// A ~600-byte memory-like YAML document, distinct per `i`.
fn memory_yaml(i: usize) -> Vec<u8> {
    let id = memory_id(i);
    let mut s = format!(
        "_schema_version: \"2.1\"\n\
         id: {id}\n\
         scope: global\n\
         kind: fact\n\
         title: \"Benchmark memory item number {i}\"\n\
         content: \"Item {i}: the build of service {svc} uses the release profile with \
         line tables; its integration tests need the fixtures folder and a writable \
         temporary directory. Retry flaky step {step} at most twice.\"\n\
         tags:\n  - bench\n  - service-{svc}\n  - step-{step}\n\
         confidence: 0.{conf:02}\n\
         source:\n  run_id: run_seed_{run}\n  commit: \"{hash:040x}\"\n\
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

fn memory_id(i: usize) -> String {
    format!("mem_bench_{i:07}")
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

/// User + system CPU time of this process and of its waited-for children.
fn cpu_now() -> Duration {
    let mut total = Duration::ZERO;
    for who in [libc::RUSAGE_SELF, libc::RUSAGE_CHILDREN] {
        // SAFETY: getrusage fills the zeroed struct it is given.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        if unsafe { libc::getrusage(who, &mut ru) } == 0 {
            for tv in [ru.ru_utime, ru.ru_stime] {
                total += Duration::new(tv.tv_sec as u64, tv.tv_usec as u32 * 1000);
            }
        }
    }
    total
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

/// Runs `f` for `warmup` untimed then `ops` timed operations; `f` returns the
/// cost of its own measured part (so untimed preparation can come first).
fn time<F: FnMut(usize) -> Res<Sample>>(warmup: usize, ops: usize, mut f: F) -> Res<Vec<Sample>> {
    for i in 0..warmup {
        f(i)?;
    }
    let mut samples = Vec::with_capacity(ops);
    for i in warmup..warmup + ops {
        samples.push(f(i)?);
    }
    Ok(samples)
}

impl Bench {
    fn push(&mut self, row: Row) {
        eprintln!(
            "  (row done in {:.1} s, with its store setup and checks)",
            self.last.elapsed().as_secs_f64()
        );
        self.last = Instant::now();
        eprintln!(
            "  {:<34} {:>9} {:>7} files: {:>5} ops  p50 {:>8.3} ms  p99 {:>8.3} ms  cpu {:>7.3} ms/op",
            row.op,
            row.kind,
            row.files,
            row.ms.len(),
            row.p50(),
            row.p99(),
            row.cpu_ms
        );
        self.rows.push(row);
    }

    fn find(&self, op: &str, kind: &str, files: usize) -> Option<&Row> {
        self.rows
            .iter()
            .find(|r| r.op == op && r.kind == kind && r.files == files)
    }

    /// 1. temp file + write + fsync + rename + fsync of the folder, ~600 bytes.
    fn floor(&mut self, ops: usize) -> Res<()> {
        let dir = self.root.join("floor");
        fs::create_dir_all(&dir)?;
        let target = dir.join("file.yaml");
        let tmp = dir.join(".file.yaml.tmp");
        let samples = time(self.warmup, ops, |i| {
            let bytes = memory_yaml(i);
            let t = Span::start();
            let mut f = File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            drop(f);
            fs::rename(&tmp, &target)?;
            File::open(&dir)?.sync_all()?;
            Ok(t.stop())
        })?;
        self.push(Row::new(
            "floor: write+fsync+rename+fsync dir",
            "-",
            0,
            samples,
        ));
        Ok(())
    }

    /// Diagnostic: the working-set work of one patch without git or I/O:
    /// parse + validate the current file, apply, serialize, and parse +
    /// validate the result twice (as `transact` and `patch` do afterwards).
    fn in_memory(&mut self, ops: usize) -> Res<()> {
        let (path, _) = self.make_store("mem", false, 0)?;
        let rel = layout::working_set(RUN);
        let mut bytes = {
            let store = Store::open(&path, options())?;
            store
                .read_file(store.require_tip()?, &rel)?
                .ok_or("no working set")?
        };
        let samples = time(self.warmup, ops, |i| {
            let t = Span::start();
            let ws = WorkingSet::from_bytes(&rel, &bytes)?;
            let patch = append_patch(ws.update_seq, 1_000_000 + i, 1);
            let next = working_set::apply_patch(
                &ws,
                &patch,
                time::OffsetDateTime::now_utc(),
                "bench-patch",
            )?;
            let out = next.working_set.to_yaml().into_bytes();
            WorkingSet::from_bytes(&rel, &out)?;
            WorkingSet::from_bytes(&rel, &out)?;
            let took = t.stop();
            bytes = out;
            Ok(took)
        })?;
        self.push(Row::new(
            "diagnostic: ws parse/validate/apply/serialize, no git, no I/O",
            "-",
            0,
            samples,
        ));
        Ok(())
    }

    /// The pack holding `memory/global/<shard>/<id>.yaml` for `n` files.
    fn pack(&mut self, n: usize) -> Res<&MemoryPack> {
        if !self.packs.contains_key(&n) {
            let t = Instant::now();
            let dir = self.root.join(format!("pack-{n}"));
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
            self.packs.insert(n, MemoryPack { files, tree });
        }
        Ok(&self.packs[&n])
    }

    /// A fresh store with a booted run at the token budget and `n` memory files.
    /// Returns its path and the run's current seq.
    fn make_store(&mut self, name: &str, worktree: bool, n: usize) -> Res<(PathBuf, u64)> {
        let t = Instant::now();
        let path = self.root.join(name);
        let seq = {
            let store = Store::init(&path, !worktree, options())?;
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
        if n == 0 {
            return Ok((path, seq));
        }
        let pack = self.pack(n)?;
        let (memory_tree, pack_files) = (pack.tree, pack.files.clone());
        {
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
        if worktree {
            git(&path, &["reset", "-q", "--hard", "HEAD"])?;
            if !path.join(".cairn").is_dir() {
                return Err(
                    format!("{}: .cairn/ did not survive the reset", path.display()).into(),
                );
            }
        }
        eprintln!(
            "  (made {} store {name} with {n} memory files in {:.1} s)",
            kind_name(worktree),
            t.elapsed().as_secs_f64()
        );
        Ok((path, seq))
    }

    /// 2. `working_set::patch` in-process, one Store kept open.
    fn lib_patch(&mut self, worktree: bool, n: usize, ops: usize) -> Res<()> {
        let name = format!("lib-{}-{n}", if worktree { "wt" } else { "bare" });
        let (path, mut seq) = self.make_store(&name, worktree, n)?;
        let store = Store::open(&path, options())?;
        let samples = time(self.warmup, ops, |i| {
            let patch = append_patch(seq, 1_000_000 + i, 1);
            let t = Span::start();
            let out = working_set::patch(&store, RUN, &patch, "bench-patch", None)?;
            let took = t.stop();
            if out.working_set.update_seq != seq + 1 || out.evicted.is_empty() {
                return Err(format!(
                    "unexpected patch outcome at seq {seq}: now {} with {} evicted",
                    out.working_set.update_seq,
                    out.evicted.len()
                )
                .into());
            }
            seq += 1;
            Ok(took)
        })?;
        let size = store
            .read_file(store.require_tip()?, &layout::working_set(RUN))?
            .map_or(0, |b| b.len());
        self.note_ws_size(size);
        drop(store);
        self.check_clean(&path, worktree)?;
        self.push(Row::new(
            "cairn ws patch (library)",
            kind_name(worktree),
            n,
            samples,
        ));
        Ok(())
    }

    /// 3. `cairn --store PATH ws patch RUN --file F`, one process per patch.
    fn cli_patch(&mut self, worktree: bool, n: usize, ops: usize) -> Res<()> {
        let name = format!("cli-{}-{n}", if worktree { "wt" } else { "bare" });
        let (path, mut seq) = self.make_store(&name, worktree, n)?;
        let patch_file = self.root.join(format!("{name}.patch.json"));
        let samples = time(self.warmup, ops, |i| {
            fs::write(
                &patch_file,
                serde_json::to_vec(&append_patch(seq, 1_000_000 + i, 1))?,
            )?;
            let t = Span::start();
            let out = Command::new(CAIRN)
                .arg("--store")
                .arg(&path)
                .args(["--actor", "bench", "ws", "patch", RUN, "--file"])
                .arg(&patch_file)
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
            seq += 1;
            Ok(took)
        })?;
        {
            let store = Store::open(&path, options())?;
            let ws = working_set::show(&store, RUN, None)?;
            if ws.update_seq != seq {
                return Err(
                    format!("CLI store at seq {} but expected {seq}", ws.update_seq).into(),
                );
            }
        }
        self.check_clean(&path, worktree)?;
        if ops < self.ops {
            self.notes.push(format!(
                "cairn ws patch (CLI), {}, {n} files: {ops} ops (CAIRN_BENCH_SLOW_OPS) to keep the run short",
                kind_name(worktree)
            ));
        }
        self.push(Row::new(
            "cairn ws patch (CLI process)",
            kind_name(worktree),
            n,
            samples,
        ));
        Ok(())
    }

    /// 4. The naive peer: edit working_set.yaml, `git add` it, `git commit`.
    fn git_peer(&mut self, n: usize, ops: usize) -> Res<()> {
        let name = format!("git-{n}");
        // A cairn work-tree store is a plain git repository with the same files
        // (and the same core.fsync settings); only the git CLI touches it here.
        let (path, _) = self.make_store(&name, true, n)?;
        {
            let repo = Repository::open(&path)?;
            repo.config()?.set_i32("gc.auto", 0)?;
        }
        let rel = layout::working_set(RUN);
        let file = path.join(&rel);
        let mut ws = WorkingSet::from_bytes(&rel, &fs::read(&file)?)?;
        let samples = time(self.warmup, ops, |i| {
            // The same change cairn makes, computed outside the timing.
            let patch = append_patch(ws.update_seq, 1_000_000 + i, 1);
            let next = working_set::apply_patch(
                &ws,
                &patch,
                time::OffsetDateTime::now_utc(),
                "bench-patch",
            )?
            .working_set;
            let bytes = next.to_yaml();
            let t = Span::start();
            fs::write(&file, &bytes)?;
            git(&path, &["add", "--", &rel])?;
            git(
                &path,
                &[
                    "commit",
                    "-q",
                    "--no-verify",
                    "-m",
                    &format!("ws {RUN}: seq {}", next.update_seq),
                ],
            )?;
            let took = t.stop();
            ws = next;
            Ok(took)
        })?;
        self.check_clean(&path, true)?;
        if ops < self.ops {
            self.notes.push(format!(
                "git CLI peer, {n} files: {ops} ops (CAIRN_BENCH_SLOW_OPS) to keep the run short"
            ));
        }
        self.push(Row::new(
            "git add + git commit (CLI peer)",
            "work tree",
            n,
            samples,
        ));
        Ok(())
    }

    fn note_ws_size(&mut self, size: usize) {
        let note = format!(
            "working_set.yaml at the token budget: about {} KB",
            size.div_ceil(1024)
        );
        if !self.notes.contains(&note) {
            self.notes.push(note);
        }
    }

    /// A work-tree store must end with a clean `git status`.
    fn check_clean(&self, path: &Path, worktree: bool) -> Res<()> {
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
                "{}: work tree not clean after the row:\n{text}",
                path.display()
            )
            .into());
        }
        Ok(())
    }

    fn report(&self, small: usize, mid: usize, big: usize, elapsed: Duration) {
        let floor = self
            .find("floor: write+fsync+rename+fsync dir", "-", 0)
            .map(Row::p50);
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
        let lib = "cairn ws patch (library)";
        let cli = "cairn ws patch (CLI process)";
        let peer = "git add + git commit (CLI peer)";
        let verdict = |ok: bool| if ok { "MET" } else { "MISSED" };
        if let Some(r) = self.find(lib, "bare", small) {
            let p = r.p50();
            let ratio = floor.map_or("-".into(), |f| format!("{:.1}x the floor", p / f));
            println!(
                "- library patch, bare, {small} files, fsync on: p50 {p:.3} ms ({ratio}); target <= 2 ms: {}",
                verdict(p <= 2.0)
            );
        }
        for (op, label) in [(lib, "library"), (cli, "CLI")] {
            if let (Some(a), Some(b)) = (self.find(op, "bare", small), self.find(op, "bare", big)) {
                let q = b.p50() / a.p50();
                println!(
                    "- {label} patch, bare: p50 at {big} / p50 at {small} = {q:.2}; target <= 1.5: {}",
                    verdict(q <= 1.5)
                );
            }
        }
        if let (Some(a), Some(b)) = (
            self.find(lib, "work tree", small),
            self.find(lib, "work tree", big),
        ) {
            println!(
                "- library patch, work tree: p50 at {big} / p50 at {small} = {:.2} (no target)",
                b.p50() / a.p50()
            );
        }
        if let Some(r) = self.find(lib, "work tree", mid) {
            println!(
                "- library patch, work tree, {mid} files: p50 {:.3} ms; target <= 25 ms: {}",
                r.p50(),
                verdict(r.p50() <= 25.0)
            );
        }
        for n in [small, big] {
            if let Some(g) = self.find(peer, "work tree", n) {
                for (op, label) in [(lib, "library"), (cli, "CLI")] {
                    for kind in ["work tree", "bare"] {
                        if let Some(c) = self.find(op, kind, n) {
                            println!(
                                "- git CLI peer p50 / cairn {label} ({kind}) p50 at {n} files = {:.1}x",
                                g.p50() / c.p50()
                            );
                        }
                    }
                }
            }
        }
        if !self.notes.is_empty() {
            println!();
            println!("Notes:");
            for n in &self.notes {
                println!("- {n}");
            }
        }
        println!(
            "- every row runs {} untimed warm-up operations first; total bench time {:.0} s",
            self.warmup,
            elapsed.as_secs_f64()
        );
    }
}
