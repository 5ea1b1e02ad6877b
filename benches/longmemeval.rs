//! Search quality on LongMemEval (oracle split): every chat turn becomes an
//! active memory item in one fresh store (through `memory::import`, the code
//! behind `cairn memory import`); every question with evidence is searched
//! over the whole store (no per-question filter); a question is a hit at k
//! when any of its evidence turns is in the top k.
//!
//! Data: `CAIRN_LONGMEMEVAL_DIR` (default `target/longmemeval`); when it has
//! no `memories.jsonl`, `../shared/bench/get-longmemeval.py` is run to fetch
//! it (one PyPI wheel). Run: `cargo bench --bench longmemeval`.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Instant;

use cairn::search::{self, SearchQuery};
use cairn::{memory, Store, StoreOptions};
use common::pct;
use serde_json::{json, Value};

fn read_jsonl(path: &PathBuf) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("JSONL"))
        .collect()
}

fn data_dir() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::var_os("CAIRN_LONGMEMEVAL_DIR")
        .map(PathBuf::from)
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

fn main() {
    // `cargo bench` passes --bench; ignore arguments.
    let dir = data_dir();
    let memories = read_jsonl(&dir.join("memories.jsonl"));
    let queries = read_jsonl(&dir.join("queries.jsonl"));
    let assistant: f64 = std::env::var("CAIRN_BENCH_ASSISTANT_WEIGHT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.5);
    let tmp = tempfile::TempDir::new().expect("temp dir");
    let store =
        Store::init(&tmp.path().join("store"), true, StoreOptions::default()).expect("init");

    // The store's ranking configuration for conversational memory: the
    // speaker is a tag, assistant turns weigh less (CAIRN_BENCH_ASSISTANT_WEIGHT,
    // default 0.5), one conversation is a group (the default `session:` prefix).
    store
        .transact(None, |snap| {
            let text =
                String::from_utf8(snap.read(cairn::layout::CONFIG)?.unwrap_or_default()).unwrap();
            let text = text.replace(
                "  tag_weights: {}\n",
                &format!("  tag_weights:\n    role:assistant: {assistant}\n"),
            );
            let mut changes = cairn::store::Changes::new();
            changes.insert(cairn::layout::CONFIG.into(), Some(text.into_bytes()));
            Ok(cairn::store::Mutation {
                changes,
                event: cairn::ledger::EventDraft::new(
                    cairn::ledger::EventType::ConfigChanged,
                    "benchmark ranking",
                ),
                tags: Vec::new(),
            })
        })
        .expect("configure");

    let records: Vec<Value> = memories
        .iter()
        .map(|m| {
            let session: String = m["session"].as_str().unwrap_or_default().chars().take(56).collect();
            let mut r = json!({
                "id": m["id"],
                "content": m["text"],
                "type": "episodic",
                "tags": [format!("role:{}", m["speaker"].as_str().unwrap_or("user")), format!("session:{session}")],
            });
            if let Some(d) = m["date_iso"].as_str() {
                r["created_at"] = json!(format!("{d}:00Z"));
            }
            r
        })
        .collect();
    let started = Instant::now();
    let report = memory::import(
        &store,
        &records,
        "longmemeval/memories.jsonl",
        5000,
        &|_, _| {},
    )
    .expect("import");
    let import_s = started.elapsed().as_secs_f64();
    let external: HashMap<String, String> = report
        .ids
        .iter()
        .zip(&memories)
        .map(|(id, m)| (id.clone(), m["id"].as_str().unwrap_or_default().to_string()))
        .collect();
    let ranking = cairn::search::Ranking::from(&store.config().expect("config"));
    let started = Instant::now();
    search::rebuild(&store, &|_, _| {}).expect("index");
    let index_s = started.elapsed().as_secs_f64();

    let mut per_cat: BTreeMap<String, [f64; 4]> = BTreeMap::new(); // hits@1, @5, @10, n
    let mut latencies = Vec::new();
    for q in &queries {
        let evidence: Vec<&str> = q["evidence"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if evidence.is_empty() {
            continue;
        }
        let sq = SearchQuery {
            text: q["question"].as_str().unwrap_or_default().to_string(),
            top_k: 10,
            ..Default::default()
        };
        let t = Instant::now();
        let results = search::search(&store, &sq, &ranking, &|_, _| {}).expect("search");
        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
        let ranked: Vec<&str> = results
            .hits
            .iter()
            .map(|h| external[&h.id].as_str())
            .collect();
        let hit_at = |k: usize| {
            f64::from(u8::from(
                ranked.iter().take(k).any(|id| evidence.contains(id)),
            ))
        };
        for cat in [
            q["category"].as_str().unwrap_or("?").to_string(),
            "ALL".to_string(),
        ] {
            let e = per_cat.entry(cat).or_default();
            e[0] += hit_at(1);
            e[1] += hit_at(5);
            e[2] += hit_at(10);
            e[3] += 1.0;
        }
    }
    latencies.sort_by(f64::total_cmp);
    let mean = latencies.iter().sum::<f64>() / latencies.len().max(1) as f64;
    println!("LongMemEval oracle: {} memories imported in {} commit(s) in {import_s:.1} s; index built in {index_s:.1} s", report.imported, report.commits);
    println!(
        "{:<28} {:>5} {:>6} {:>6} {:>6}",
        "category", "n", "R@1", "R@5", "R@10"
    );
    let all = per_cat.remove("ALL").unwrap_or_default();
    for (cat, v) in per_cat
        .iter()
        .chain(std::iter::once((&"ALL".to_string(), &all)))
    {
        println!(
            "{:<28} {:>5} {:>6.1} {:>6.1} {:>6.1}",
            cat,
            v[3],
            100.0 * v[0] / v[3],
            100.0 * v[1] / v[3],
            100.0 * v[2] / v[3]
        );
    }
    println!(
        "search latency over {} queries (in-process, index warm): mean {mean:.2} ms, p50 {:.2} ms, p99 {:.2} ms",
        latencies.len(),
        pct(&latencies, 0.5),
        pct(&latencies, 0.99)
    );
}
