//! Small helpers the benchmarks share: settings from the environment,
//! percentiles, one-line reports and a store of N memory items.

#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use cairn::store::{Changes, Mutation};
use cairn::{layout, ledger, Store, StoreOptions};
use serde_json::json;

/// A new work-tree store at `dir` holding `n` active global memory items
/// (`mem_<i, 26 digits>`: "parser note i: the grammar rule number i % 97
/// handles nested blocks"), written in one commit; prints how long it took.
pub fn populate_memory(dir: &Path, n: usize) -> Store {
    let store = Store::init(dir, false, StoreOptions::default()).expect("init");
    let t = Instant::now();
    store
        .transact(None, |_| {
            let mut changes = Changes::new();
            for i in 0..n {
                let id = format!("mem_{i:026}");
                let item = json!({
                    "_schema_version": "2.1", "id": id, "type": "fact",
                    "scope": "global", "content": format!("parser note {i}: the grammar rule number {} handles nested blocks", i % 97),
                    "confidence": 0.7, "status": "active", "source_refs": ["run:bench"],
                    "created_at": "2026-01-18T10:00:00Z", "updated_at": "2026-01-18T10:00:00Z"
                });
                changes.insert(
                    layout::memory_item("global", None, &id),
                    Some(cairn::schema::to_yaml(&item).into_bytes()),
                );
            }
            Ok(Mutation {
                changes,
                event: ledger::EventDraft::new(ledger::EventType::MemoryImported, "populate"),
                tags: Vec::new(),
            })
        })
        .expect("populate");
    eprintln!("populated {n} items in {:.1} s", t.elapsed().as_secs_f64());
    store
}

/// A numeric setting from the environment: `default` when unset or blank,
/// an error naming the variable when it is not a number.
pub fn try_num(name: &str, default: usize) -> Result<usize, String> {
    match std::env::var(name) {
        Ok(s) if !s.trim().is_empty() => s.trim().parse().map_err(|e| format!("{name}={s:?}: {e}")),
        _ => Ok(default),
    }
}

/// A numeric setting from the environment, else `default`.
pub fn num(name: &str, default: usize) -> usize {
    try_num(name, default).unwrap_or(default)
}

/// Samples sorted ascending.
pub fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// The `p` quantile (0..=1) of sorted samples, at the rounded linear index;
/// 0 when there are none.
pub fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The nearest-rank `p` percentile (0..=100) of sorted, non-empty samples.
pub fn nearest_rank(sorted: &[f64], p: f64) -> f64 {
    let n = sorted.len();
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    sorted[rank.clamp(1, n) - 1]
}

/// Prints one row (milliseconds, name 28 wide, 2 decimals) and returns its median.
pub fn report(name: &str, ms: Vec<f64>) -> f64 {
    report_as(name, ms, 28, 2)
}

/// Prints one row (milliseconds) with the name `width` wide and `decimals`
/// decimals, and returns its median.
pub fn report_as(name: &str, ms: Vec<f64>, width: usize, decimals: usize) -> f64 {
    let ms = sorted(ms);
    let p50 = pct(&ms, 0.5);
    println!(
        "{name:<width$} n={:<5} p50 {:>8.decimals$} ms   p99 {:>8.decimals$} ms   max {:>8.decimals$} ms",
        ms.len(),
        p50,
        pct(&ms, 0.99),
        ms[ms.len() - 1]
    );
    p50
}

/// Prints the header of a table of [`table_row`]s.
pub fn table_header() {
    println!("{:<44} {:>6} {:>10} {:>10}", "row", "n", "p50 ms", "p99 ms");
}

/// Prints one table row (milliseconds): name, n, p50 and p99 with `decimals` decimals.
pub fn table_row(name: &str, ms: Vec<f64>, decimals: usize) {
    let ms = sorted(ms);
    println!(
        "{name:<44} {:>6} {:>10.decimals$} {:>10.decimals$}",
        ms.len(),
        pct(&ms, 0.5),
        pct(&ms, 0.99)
    );
}

/// The records of a JSONL file.
pub fn read_jsonl(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("JSONL"))
        .collect()
}

/// The LongMemEval data (`CAIRN_LONGMEMEVAL_DIR`, default
/// `target/longmemeval`), fetched with `../shared/bench/get-longmemeval.py`
/// when it is not there yet.
pub fn data_dir() -> std::path::PathBuf {
    let manifest = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::var_os("CAIRN_LONGMEMEVAL_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| manifest.join("target/longmemeval"));
    if !dir.join("memories.jsonl").exists() {
        let script = manifest.join("../shared/bench/get-longmemeval.py");
        eprintln!("fetching LongMemEval with {}", script.display());
        let ok = std::process::Command::new("python3")
            .arg(&script)
            .arg("--out")
            .arg(&dir)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(
            ok,
            "could not fetch the data: run python3 {} --out {}",
            script.display(),
            dir.display()
        );
    }
    dir
}

/// User + system CPU time of this process and of its waited-for children.
pub fn cpu_now() -> Duration {
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
