//! Search latency at 100k memory items, side by side with `rg` and
//! `git grep` over the same files, in one run.
//!
//! The store holds `CAIRN_BENCH_SEARCH_ITEMS` (default 100000) active items
//! whose contents are the LongMemEval chat turns (fetched as for the
//! `longmemeval` bench), cycled, each copy marked `[copy N]`; the mirror is
//! off. The queries are the benchmark's questions. Rows:
//! - warm: the library's `search::search` in this process, index open
//!   and current, every recall method on (the defaults) and, beside it,
//!   every method off; beside each, the CPU time the searching thread
//!   used (`CLOCK_THREAD_CPUTIME_ID`), which a loaded machine does not
//!   inflate the way it inflates the wall clock;
//! - cold: `cairn search QUESTION` as a new process over the index on disk
//!   (`CAIRN_BENCH_COLD_REPS` questions, default 30);
//! - `rg -i -l -F -e WORD…` and `git grep --no-index -i -l -F -e WORD…`
//!   over the item files (as `git archive` writes them) for the same
//!   questions' words; a row says so when the tool is missing.
//!
//! Run: `cargo bench --bench search`. `CAIRN_BENCH_SEARCH_STORE=DIR` keeps
//! the store (and the files for the greps) in DIR and reuses them on the
//! next run; `CAIRN_BENCH_WARM_ONLY=1` runs only the warm rows (for a
//! profiler).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use cairn::search::{self, Ranking, SearchQuery};
use cairn::{memory, Store, StoreOptions};
use common::{data_dir, num, pct, read_jsonl, sorted};
use serde_json::json;

const EXE: &str = env!("CARGO_BIN_EXE_cairn");

/// The words a grep is given for a question: lowercase alphanumeric runs
/// of three or more characters, function words left out.
fn grep_words(question: &str) -> Vec<String> {
    const STOP: &str = "the and but for with from are was were been being you she they
        this that these those does did have has had what when where who whom which why how not
        than then there here about into over after before just also can could would should will
        shall may might must";
    let stop: Vec<&str> = STOP.split_whitespace().collect();
    let mut words: Vec<String> = question
        .to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.len() >= 3 && !stop.contains(w))
        .map(str::to_string)
        .collect();
    words.dedup();
    words
}

/// Milliseconds of one run of `cmd` (its output thrown away); `None` when
/// it could not be started.
fn time_command(cmd: &mut Command) -> Option<f64> {
    let t = Instant::now();
    let status = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .ok()?;
    // rg and grep exit 1 when nothing matched; that is a finished search too.
    (status.code().is_some()).then(|| t.elapsed().as_secs_f64() * 1000.0)
}

/// CPU time this thread has used, in milliseconds: unlike the wall clock,
/// it leaves out the time spent waiting for a core on a loaded machine.
fn thread_cpu_ms() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    ts.tv_sec as f64 * 1000.0 + ts.tv_nsec as f64 / 1e6
}

fn row(name: &str, ms: &[f64]) -> f64 {
    let ms = sorted(ms.to_vec());
    let p50 = pct(&ms, 0.5);
    println!(
        "{name:<52} {:>5} {:>10.2} {:>10.2}",
        ms.len(),
        p50,
        pct(&ms, 0.99)
    );
    p50
}

fn build(dir: &Path, texts: &[String], n: usize) -> Store {
    let store = Store::init(dir, true, StoreOptions::default()).expect("init");
    store
        .transact(None, |snap| {
            let text = String::from_utf8(snap.read(cairn::layout::CONFIG)?.unwrap_or_default())
                .unwrap_or_default();
            let mut changes = cairn::store::Changes::new();
            changes.insert(
                cairn::layout::CONFIG.into(),
                Some(
                    text.replace("mirror:\n  enabled: true", "mirror:\n  enabled: false")
                        .into_bytes(),
                ),
            );
            Ok(cairn::store::Mutation {
                changes,
                event: cairn::ledger::EventDraft::new(
                    cairn::ledger::EventType::ConfigChanged,
                    "mirror off",
                ),
                tags: Vec::new(),
            })
        })
        .expect("config");
    for chunk in (0..n).collect::<Vec<_>>().chunks(10_000) {
        let records: Vec<serde_json::Value> = chunk
            .iter()
            .map(|&i| {
                let text = &texts[i % texts.len()];
                json!({"content": format!("{text} [copy {}]", i / texts.len()), "type": "episodic"})
            })
            .collect();
        memory::import(&store, &records, "bench", 10_000, &|_, _| {}).expect("import");
    }
    store
}

fn main() {
    let n = num("CAIRN_BENCH_SEARCH_ITEMS", 100_000);
    let cold_reps = num("CAIRN_BENCH_COLD_REPS", 30);
    let data = data_dir();
    let texts: Vec<String> = read_jsonl(&data.join("memories.jsonl"))
        .iter()
        .filter_map(|m| m["text"].as_str().map(str::to_string))
        .collect();
    let questions: Vec<String> = read_jsonl(&data.join("queries.jsonl"))
        .iter()
        .filter_map(|q| q["question"].as_str().map(str::to_string))
        .collect();
    let tmp = tempfile::TempDir::new().expect("tmp");
    let kept = std::env::var_os("CAIRN_BENCH_SEARCH_STORE").map(std::path::PathBuf::from);
    let base = kept.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let root = base.join("store");
    // The same files for rg and git grep: the items as git holds them.
    let files = base.join("files");
    let store = if kept.is_some() && files.join("memory").exists() {
        println!("# reusing the store in {}", root.display());
        Store::open(&root, StoreOptions::default()).expect("open the kept store")
    } else {
        if root.exists() {
            std::fs::remove_dir_all(&base).expect("clear the kept dir");
        }
        let t = Instant::now();
        let store = build(&root, &texts, n);
        println!("# {n} items imported in {:.1} s", t.elapsed().as_secs_f64());
        let t = Instant::now();
        search::rebuild(&store, &|_, _| {}).expect("index");
        println!("# index built in {:.1} s", t.elapsed().as_secs_f64());
        std::fs::create_dir_all(&files).expect("files dir");
        let archive = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "git --git-dir='{}' archive HEAD memory | tar -x -C '{}'",
                root.display(),
                files.display()
            ))
            .status()
            .expect("git archive");
        assert!(archive.success(), "git archive failed");
        store
    };

    println!("{:<52} {:>5} {:>10} {:>10}", "row", "n", "p50 ms", "p99 ms");
    let defaults = Ranking::from(&store.config().expect("config"));
    let bare = Ranking {
        question_words: false,
        length_prior: 0.0,
        feedback_terms: 0,
        proximity_weight: 0.0,
        group_weight: 0.0,
        date_weight: 0.0,
        ..defaults.clone()
    };
    let mut warm_p50 = 0.0;
    for (name, ranking) in [
        ("defaults (all recall methods)", &defaults),
        ("every recall method off", &bare),
    ] {
        let query = |text: &str| SearchQuery {
            text: text.to_string(),
            top_k: 10,
            ..Default::default()
        };
        search::search(&store, &query(&questions[0]), ranking, &|_, _| {}).expect("warm up");
        let mut ms = Vec::new();
        let mut cpu = Vec::new();
        for q in &questions {
            let t = Instant::now();
            let c = thread_cpu_ms();
            let r = search::search(&store, &query(q), ranking, &|_, _| {}).expect("search");
            cpu.push(thread_cpu_ms() - c);
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
            assert!(r.rebuilt.is_none(), "the index stays current");
        }
        let p50 = row(&format!("warm in-process search, {name}"), &ms);
        row(&format!("  its CPU time (this thread), {name}"), &cpu);
        if warm_p50 == 0.0 {
            warm_p50 = p50;
        }
    }
    if std::env::var("CAIRN_BENCH_WARM_ONLY").as_deref() == Ok("1") {
        return;
    }
    let cold_questions = &questions[..cold_reps.min(questions.len())];
    let mut ms = Vec::new();
    for q in cold_questions {
        let mut cmd = Command::new(EXE);
        cmd.arg("--store")
            .arg(&root)
            .arg("search")
            .arg(q)
            .env("HOME", tmp.path())
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1");
        ms.push(time_command(&mut cmd).expect("run cairn"));
    }
    let cold_p50 = row("cold CLI `cairn search` (new process)", &ms);
    let tools: [(&str, &str, &[&str]); 2] = [
        ("rg -i -l -F", "rg", &["-i", "-l", "-F"]),
        (
            "git grep --no-index -i -l -F",
            "git",
            &["grep", "--no-index", "-i", "-l", "-F"],
        ),
    ];
    for (name, exe, args) in tools {
        let mut ms = Vec::new();
        for q in cold_questions {
            let mut cmd = Command::new(exe);
            cmd.args(args);
            for w in grep_words(q) {
                cmd.arg("-e").arg(w);
            }
            cmd.arg("memory").current_dir(&files);
            match time_command(&mut cmd) {
                Some(t) => ms.push(t),
                None => break,
            }
        }
        if ms.is_empty() {
            println!("{name:<52} not installed: no figures");
            continue;
        }
        let p50 = row(name, &ms);
        println!(
            "#   {name}: {:.1}x the cold CLI search's p50, {:.0}x the warm search's",
            p50 / cold_p50,
            p50 / warm_p50
        );
    }
}
