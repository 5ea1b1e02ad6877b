//! Search quality on LongMemEval (oracle split): every chat turn becomes an
//! active memory item in one fresh store (through `memory::import`, the code
//! behind `cairn memory import`); every question with evidence is searched
//! over the whole store (no per-question filter); a question is a hit at k
//! when any of its evidence turns is in the top k.
//!
//! Data: `CAIRN_LONGMEMEVAL_DIR` (default `target/longmemeval`); when it has
//! no `memories.jsonl`, `../shared/bench/get-longmemeval.py` is run to fetch
//! it (one PyPI wheel). Run: `cargo bench --bench longmemeval`.
//!
//! The store has the default `cairn.yaml`. The questions are asked under
//! several rankings built from it — each recall method off and on, and the
//! old benchmark-specific `tag_weights: {role:assistant: 0.5}` — so the
//! ablation table comes from one store and one sitting. Each question is
//! asked as of its question date (`SearchQuery::as_of`; one row asks at the
//! time of the run instead). The plain BM25
//! script of the benchmark runs too when `python3` is there
//! (`CAIRN_BENCH_PEER=0` skips it). `CAIRN_LONGMEMEVAL_STORE=DIR` keeps the
//! store in DIR and reuses it on the next run (for development).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Instant;

use cairn::search::{self, Ranking, SearchQuery};
use cairn::{memory, Store, StoreOptions};
use common::{data_dir, pct, read_jsonl};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Recall at 1, 5 and 10 per category (and `ALL`), and the latencies in ms.
type Scores = (BTreeMap<String, [f64; 4]>, Vec<f64>);

fn evaluate(
    store: &Store,
    queries: &[Value],
    external: &HashMap<String, String>,
    ranking: &Ranking,
    dated: bool,
) -> Scores {
    let mut per_cat: BTreeMap<String, [f64; 4]> = BTreeMap::new(); // hits@1, @5, @10, n
    let mut latencies = Vec::new();
    for q in queries {
        let evidence: Vec<&str> = q["evidence"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if evidence.is_empty() {
            continue;
        }
        // The question is asked at its date (as the benchmark gives it):
        // the store's clock is the time of the run.
        let as_of = q["question_date_iso"]
            .as_str()
            .filter(|_| dated)
            .and_then(|d| OffsetDateTime::parse(&format!("{d}:00Z"), &Rfc3339).ok());
        let sq = SearchQuery {
            text: q["question"].as_str().unwrap_or_default().to_string(),
            top_k: 10,
            as_of,
            ..Default::default()
        };
        let t = Instant::now();
        let results = search::search(store, &sq, ranking, &|_, _| {}).expect("search");
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
    (per_cat, latencies)
}

fn recall(v: &[f64; 4]) -> [f64; 3] {
    [
        100.0 * v[0] / v[3],
        100.0 * v[1] / v[3],
        100.0 * v[2] / v[3],
    ]
}

/// Builds (or, with `CAIRN_LONGMEMEVAL_STORE`, reuses) the store and
/// returns it with the map from cairn ids to the benchmark's turn ids.
fn build_store(memories: &[Value], tmp: &std::path::Path) -> (Store, HashMap<String, String>) {
    let kept = std::env::var_os("CAIRN_LONGMEMEVAL_STORE").map(PathBuf::from);
    let dir = kept.clone().unwrap_or_else(|| tmp.join("store"));
    let map_file = dir.with_extension("ids.json");
    if kept.is_some() && map_file.exists() {
        let store = Store::open(&dir, StoreOptions::default()).expect("open the kept store");
        let external: HashMap<String, String> =
            serde_json::from_str(&std::fs::read_to_string(&map_file).expect("read ids"))
                .expect("ids JSON");
        println!("reusing the store in {}", dir.display());
        return (store, external);
    }
    let store = Store::init(&dir, true, StoreOptions::default()).expect("init");
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
    println!(
        "LongMemEval oracle: {} memories imported in {} commit(s) in {:.1} s",
        report.imported,
        report.commits,
        started.elapsed().as_secs_f64()
    );
    let external: HashMap<String, String> = report
        .ids
        .iter()
        .zip(memories)
        .map(|(id, m)| (id.clone(), m["id"].as_str().unwrap_or_default().to_string()))
        .collect();
    if kept.is_some() {
        std::fs::write(&map_file, serde_json::to_string(&external).expect("ids"))
            .expect("write ids");
    }
    (store, external)
}

/// The plain BM25 script of the benchmark, run on the same data now.
fn peer(dir: &std::path::Path) {
    if std::env::var("CAIRN_BENCH_PEER").as_deref() == Ok("0") {
        println!("peer: skipped (CAIRN_BENCH_PEER=0)");
        return;
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/bench/bm25_baseline.py");
    match std::process::Command::new("python3")
        .arg(&script)
        .arg(dir)
        .output()
    {
        Ok(out) if out.status.success() => {
            print!(
                "peer (plain BM25 script): {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        Ok(out) => println!("peer failed: {}", String::from_utf8_lossy(&out.stderr)),
        Err(e) => println!("peer not run ({}): {e}", script.display()),
    }
}

fn main() {
    // `cargo bench` passes --bench; ignore arguments.
    let dir = data_dir();
    let memories = read_jsonl(&dir.join("memories.jsonl"));
    let queries = read_jsonl(&dir.join("queries.jsonl"));
    let tmp = tempfile::TempDir::new().expect("temp dir");
    let (store, external) = build_store(&memories, tmp.path());
    let started = Instant::now();
    search::rebuild(&store, &|_, _| {}).expect("index");
    println!("index built in {:.1} s", started.elapsed().as_secs_f64());

    let defaults = Ranking::from(&store.config().expect("config"));
    let mut plain = defaults.clone();
    plain.question_words = false;
    plain.length_prior = 0.0;
    plain.feedback_terms = 0;
    plain.group_weight = 0.0;
    plain.proximity_weight = 0.0;
    plain.date_weight = 0.0;
    let mut rows: Vec<(String, Ranking, bool)> = vec![(
        "BM25 (stemmed; every method off)".into(),
        plain.clone(),
        true,
    )];
    type Switch = fn(&mut Ranking, &Ranking);
    let methods: [(&str, Switch); 6] = [
        ("question words", |r, d| r.question_words = d.question_words),
        ("length prior", |r, d| r.length_prior = d.length_prior),
        ("feedback (RM3, 10 terms; off by default)", |r, _| {
            r.feedback_terms = 10
        }),
        ("session context", |r, d| r.group_weight = d.group_weight),
        ("proximity", |r, d| r.proximity_weight = d.proximity_weight),
        ("dates named in the question", |r, d| {
            r.date_weight = d.date_weight
        }),
    ];
    for (name, on) in &methods {
        let mut r = plain.clone();
        on(&mut r, &defaults);
        rows.push((format!("BM25 + {name}"), r, true));
    }
    rows.push(("defaults (all methods)".into(), defaults.clone(), true));
    for (name, on) in &methods {
        let mut r = defaults.clone();
        on(&mut r, &plain);
        rows.push((format!("defaults, {name} toggled"), r, true));
    }
    rows.push((
        "defaults, asked at the run's time (no question date)".into(),
        defaults.clone(),
        false,
    ));
    // The rankings of the runs before dates existed, for comparison.
    rows.push(("BM25, asked at the run's time".into(), plain.clone(), false));
    let mut undated = defaults.clone();
    undated.date_weight = 0.0;
    rows.push((
        "defaults - dates, asked at the run's time".into(),
        undated,
        false,
    ));
    let mut old = plain.clone();
    old.group_weight = defaults.group_weight;
    old.tag_weights.insert("role:assistant".into(), 0.5);
    rows.push((
        "old: session context + tag_weights role:assistant 0.5".into(),
        old,
        true,
    ));
    let mut both = defaults.clone();
    both.tag_weights.insert("role:assistant".into(), 0.5);
    rows.push((
        "defaults + tag_weights role:assistant 0.5".into(),
        both,
        true,
    ));
    if let Some(only) = std::env::var("CAIRN_BENCH_ROWS")
        .ok()
        .filter(|s| !s.is_empty())
    {
        let keep: Vec<usize> = only
            .split(',')
            .filter_map(|s| s.trim().parse().ok())
            .collect();
        rows = rows
            .into_iter()
            .enumerate()
            .filter(|(i, _)| keep.contains(i))
            .map(|(_, r)| r)
            .collect();
    }

    peer(&dir);
    println!(
        "{:<56} {:>6} {:>6} {:>6} {:>8} {:>8}",
        "ranking", "R@1", "R@5", "R@10", "p50 ms", "p99 ms"
    );
    let mut per_category = None;
    for (name, ranking, dated) in &rows {
        let (mut cats, lat) = evaluate(&store, &queries, &external, ranking, *dated);
        let all = recall(&cats.remove("ALL").unwrap_or_default());
        println!(
            "{name:<56} {:>6.1} {:>6.1} {:>6.1} {:>8.2} {:>8.2}",
            all[0],
            all[1],
            all[2],
            pct(&lat, 0.5),
            pct(&lat, 0.99)
        );
        if name.starts_with("defaults (") {
            per_category = Some(cats);
        }
    }
    if let Some(cats) = per_category {
        println!("\nper category, defaults:");
        println!(
            "{:<28} {:>5} {:>6} {:>6} {:>6}",
            "category", "n", "R@1", "R@5", "R@10"
        );
        for (cat, v) in &cats {
            let r = recall(v);
            println!(
                "{cat:<28} {:>5} {:>6.1} {:>6.1} {:>6.1}",
                v[3], r[0], r[1], r[2]
            );
        }
    }
}
