//! The `cairn serve` benchmark (issue 19's performance part): the real
//! binary serving a store of 100,000 memory items on an ephemeral loopback
//! port, driven over HTTP by ureq agents (keep-alive connections), beside
//! `cairn ws patch` processes writing to a store of the same kind.
//!
//! Run with `cargo bench --bench serve`. Settings (environment):
//! - `CAIRN_BENCH_BIG`: memory items in each store (default 100000).
//! - `CAIRN_BENCH_OPS`: timed requests per latency row (default 200).
//! - `CAIRN_BENCH_SECONDS`: how long each concurrent write phase runs
//!   (default 10).
//! - `CAIRN_BENCH_CLIENTS`: concurrent writers per phase (default 8).
//!
//! Set-up (untimed): store A with N active memory items in one commit, its
//! search index built, `cairn serve --addr 127.0.0.1:0` started on it and
//! one run booted over `POST /runs/boot`.
//!
//! Latency rows (milliseconds from sending the request to holding the
//! parsed body; one client, one keep-alive connection; every answer must be
//! a 200 with the expected content):
//! - `GET /runs/{id}/ws`: the working set;
//! - `POST /runs/{id}/step/update`: a patch setting `next_action` with the
//!   right `expected_seq` (the seed's route: the answer carries a fresh
//!   context brief, so each call also runs a memory search);
//! - `POST /v1/runs/{id}/ws`: the same patch on cairn's route, the mirror
//!   of `cairn ws patch` (no brief);
//! - `GET /runs/{id}/memory/search?q=...`: a different natural-language
//!   query each time, top 8; every call must return hits.
//!
//! The first call of the working-set and search rows is shown on its own.
//!
//! Write rows: C clients, each with its own run (booted before the clock
//! starts) and its own connection, patch it back to back for S seconds;
//! only acknowledged writes (200 with a seq) count. A TRANSIENT answer (503
//! with Retry-After, exit code 7 for the CLI) is retried after 20 ms and
//! counted; any other failure is reported and fails the benchmark. Phases:
//! - `http step/update`: over `POST /runs/{id}/step/update` on store A;
//! - `http /v1 ws`: over `POST /v1/runs/{id}/ws` on store A (new runs);
//! - `cli ws patch`: C threads each spawning `cairn --json ws patch RUN
//!   --expected-seq SEQ -` (the patch on stdin) one after another, on store
//!   B (same N items, index built, no server running).
//!
//! After each phase, with its writers stopped, every acknowledged write is
//! looked up in the ledger (`WS_UPDATE_APPLIED` events): its event id must
//! be there with the acknowledged run, seq and commit, and each run's final
//! `_update_seq` must equal its count of acknowledged writes. A lost write
//! fails the benchmark after the table is printed.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use cairn::ledger::{self, EventType, LogQuery};
use cairn::{search, working_set, Store, StoreOptions};
use common::{num, pct, populate_memory, sorted, table_header, table_row};
use serde_json::{json, Value};

const EXE: &str = env!("CARGO_BIN_EXE_cairn");

/// How long a writer waits before retrying a TRANSIENT answer.
const RETRY_AFTER: Duration = Duration::from_millis(20);

/// The environment every cairn process of the benchmark gets.
fn cairn_cmd(home: &Path, store: &Path) -> Command {
    let mut c = Command::new(EXE);
    c.arg("--store")
        .arg(store)
        .env("HOME", home)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("CAIRN_ACTOR", "bench");
    c
}

/// A running `cairn serve`, stopped on drop.
struct Server {
    child: Child,
    base: String,
}

impl Server {
    /// Starts `cairn serve --addr 127.0.0.1:0` and reads the address it prints.
    fn start(home: &Path, store: &Path) -> Server {
        let mut child = cairn_cmd(home, store)
            .args(["serve", "--addr", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn cairn serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read the address line");
        let base = line
            .trim()
            .rsplit_once("listening on ")
            .map(|(_, a)| a.to_string())
            .unwrap_or_else(|| panic!("cairn serve did not start: {line:?}"));
        Server { child, base }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into()
}

/// Status and JSON body of an answer.
fn read(mut resp: ureq::http::Response<ureq::Body>) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_string()
        .expect("read body");
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, v)
}

/// A timed GET that must answer 200: (ms, body).
fn get(a: &ureq::Agent, url: &str, query: &[(&str, &str)]) -> (f64, Value) {
    let t = Instant::now();
    let mut r = a.get(url);
    for (k, v) in query {
        r = r.query(*k, *v);
    }
    let (st, body) = read(r.call().expect("GET"));
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(st, 200, "GET {url}: {body}");
    (ms, body)
}

/// A timed POST of a JSON body: (ms, status, body).
fn post(a: &ureq::Agent, url: &str, body: &Value) -> (f64, u16, Value) {
    let t = Instant::now();
    let (st, b) = read(a.post(url).send_json(body).expect("POST"));
    (t.elapsed().as_secs_f64() * 1000.0, st, b)
}

/// Boots `run` over the seed's route.
fn boot(a: &ureq::Agent, base: &str, run: &str) {
    let (_, st, b) = post(
        a,
        &format!("{base}/runs/boot"),
        &json!({"objective": "Make the parser handle nested blocks", "run_id": run}),
    );
    assert_eq!(st, 200, "boot {run}: {b}");
}

/// The patch body setting `next_action`, for either route.
fn patch_body(seq: u64, mark: &str) -> Value {
    json!({"patch": {"expected_seq": seq, "set": {"next_action": mark}}})
}

/// The (seq, event) of an acknowledged patch, for the route's answer shape.
fn acked(route: Route, body: &Value) -> (u64, &Value) {
    let (seq, event) = match route {
        Route::StepUpdate => (&body["seq"], &body["event"]),
        Route::V1Ws | Route::Cli => (&body["data"]["seq"], &body["data"]["event"]),
    };
    (
        seq.as_u64().expect("an acknowledged write has a seq"),
        event,
    )
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
    StepUpdate,
    V1Ws,
    Cli,
}

impl Route {
    fn label(self) -> &'static str {
        match self {
            Route::StepUpdate => "http step/update",
            Route::V1Ws => "http /v1 ws",
            Route::Cli => "cli ws patch",
        }
    }

    fn url(self, base: &str, run: &str) -> String {
        match self {
            Route::StepUpdate => format!("{base}/runs/{run}/step/update"),
            Route::V1Ws => format!("{base}/v1/runs/{run}/ws"),
            Route::Cli => unreachable!("the CLI has no URL"),
        }
    }
}

fn latency_rows(s: &Server, run: &str, ops: usize, n: usize) {
    let a = agent();
    let ws_url = format!("{}/runs/{run}/ws", s.base);
    let (first, _) = get(&a, &ws_url, &[]);
    table_row("GET ws (first call)", vec![first], 1);
    let mut ms = Vec::with_capacity(ops);
    let mut seq = 0;
    for _ in 0..ops {
        let (t, ws) = get(&a, &ws_url, &[]);
        assert_eq!(ws["run_id"], run, "{ws}");
        seq = ws["_update_seq"].as_u64().expect("_update_seq");
        ms.push(t);
    }
    table_row("GET ws", ms, 2);

    for route in [Route::StepUpdate, Route::V1Ws] {
        let url = route.url(&s.base, run);
        let mut ms = Vec::with_capacity(ops);
        for i in 0..ops {
            let (t, st, b) = post(&a, &url, &patch_body(seq, &format!("latency {i}")));
            assert_eq!(st, 200, "{url}: {b}");
            let (next, _) = acked(route, &b);
            assert_eq!(next, seq + 1, "{b}");
            if route == Route::StepUpdate {
                assert!(b["context_brief"].is_string(), "a brief: {b}");
            }
            seq = next;
            ms.push(t);
        }
        let name = match route {
            Route::StepUpdate => "POST step/update",
            _ => "POST /v1/runs/{id}/ws",
        };
        table_row(name, ms, 2);
    }

    let search_url = format!("{}/runs/{run}/memory/search", s.base);
    let query = |i: usize| {
        format!(
            "how does grammar rule {} handle nested blocks in parser note {}?",
            i % 97,
            i * 7 % n.max(1)
        )
    };
    let searched = |i: usize| {
        let (t, b) = get(&a, &search_url, &[("q", &query(i)), ("top_k", "8")]);
        assert!(b["count"].as_u64().unwrap_or(0) > 0, "hits: {b}");
        t
    };
    table_row("GET memory/search (first call)", vec![searched(ops + 1)], 1);
    let ms = (0..ops).map(searched).collect();
    table_row("GET memory/search", ms, 2);
}

/// One acknowledged write: run, seq, event id, commit.
struct Ack {
    run: String,
    seq: u64,
    event_id: String,
    commit: String,
}

/// What one writer did.
#[derive(Default)]
struct Writer {
    acks: Vec<Ack>,
    ms: Vec<f64>,
    transient: usize,
    failures: Vec<String>,
}

/// One write attempt: `Ok(Some(ack body))`, `Ok(None)` for TRANSIENT, `Err` otherwise.
type Attempt = Result<Option<Value>, String>;

fn http_attempt(a: &ureq::Agent, route: Route, url: &str, seq: u64, mark: &str) -> Attempt {
    let (_, st, b) = post(a, url, &patch_body(seq, mark));
    match st {
        200 => Ok(Some(b)),
        503 if b["error"]["category"] == "TRANSIENT" => Ok(None),
        _ => Err(format!("{}: {st} {b}", route.label())),
    }
}

fn cli_attempt(home: &Path, store: &Path, run: &str, seq: u64, mark: &str) -> Attempt {
    let mut child = cairn_cmd(home, store)
        .args(["--json", "ws", "patch", run, "--expected-seq"])
        .arg(seq.to_string())
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("spawn: {e}"))?;
    let patch = json!({"set": {"next_action": mark}}).to_string();
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(patch.as_bytes())
        .map_err(|e| format!("write stdin: {e}"))?;
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .map_err(|e| format!("read stdout: {e}"))?;
    let status = child.wait().map_err(|e| format!("wait: {e}"))?;
    let body: Value = serde_json::from_str(&out).unwrap_or(Value::String(out));
    match status.code() {
        Some(0) => Ok(Some(body)),
        Some(7) => Ok(None),
        code => Err(format!("cairn ws patch: exit {code:?} {body}")),
    }
}

/// C writers on their own runs for `secs` seconds; returns them and the
/// phase's wall time (until the last writer's last answer).
fn write_phase(
    route: Route,
    runs: &[String],
    base: Option<&str>,
    cli: Option<(&Path, &Path)>,
    secs: f64,
) -> (Vec<Writer>, f64) {
    let barrier = Arc::new(Barrier::new(runs.len() + 1));
    let handles: Vec<_> = runs
        .iter()
        .map(|run| {
            let run = run.clone();
            let barrier = barrier.clone();
            let url = base.map(|b| route.url(b, &run));
            let ws_url = base.map(|b| format!("{b}/runs/{run}/ws"));
            let cli = cli.map(|(h, s)| (h.to_path_buf(), s.to_path_buf()));
            std::thread::spawn(move || {
                let a = agent();
                if let Some(ws_url) = &ws_url {
                    // Open the keep-alive connection before the clock starts.
                    get(&a, ws_url, &[]);
                }
                let mut w = Writer::default();
                let mut seq = 0u64;
                barrier.wait();
                let start = Instant::now();
                let mut i = 0usize;
                while start.elapsed().as_secs_f64() < secs {
                    let mark = format!("{run} write {i}");
                    let t = Instant::now();
                    let attempt = match (&url, &cli) {
                        (Some(url), _) => http_attempt(&a, route, url, seq, &mark),
                        (None, Some((home, store))) => cli_attempt(home, store, &run, seq, &mark),
                        (None, None) => unreachable!("a writer has a URL or a store"),
                    };
                    let ms = t.elapsed().as_secs_f64() * 1000.0;
                    match attempt {
                        Ok(Some(b)) => {
                            let (next, event) = acked(route, &b);
                            w.acks.push(Ack {
                                run: run.clone(),
                                seq: next,
                                event_id: event["event_id"].as_str().unwrap_or("").to_string(),
                                commit: event["commit"].as_str().unwrap_or("").to_string(),
                            });
                            w.ms.push(ms);
                            seq = next;
                            i += 1;
                        }
                        Ok(None) => {
                            w.transient += 1;
                            std::thread::sleep(RETRY_AFTER);
                        }
                        Err(e) => {
                            w.failures.push(e);
                            break;
                        }
                    }
                }
                w
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    let writers: Vec<Writer> = handles
        .into_iter()
        .map(|h| h.join().expect("writer thread"))
        .collect();
    (writers, start.elapsed().as_secs_f64())
}

/// Every acknowledged write in the ledger, and no run past its acknowledged
/// writes; returns the problems found.
fn verify(store_path: &Path, writers: &[Writer]) -> Vec<String> {
    let store = Store::discover(store_path, StoreOptions::default()).expect("open the store");
    let events = ledger::query(
        &store,
        &LogQuery {
            event_type: Some(EventType::WsUpdateApplied),
            ..LogQuery::default()
        },
    )
    .expect("ledger");
    let by_id: HashMap<&str, &ledger::Event> =
        events.iter().map(|e| (e.event_id.as_str(), e)).collect();
    let mut problems = Vec::new();
    let mut per_run: HashMap<&str, u64> = HashMap::new();
    for ack in writers.iter().flat_map(|w| &w.acks) {
        *per_run.entry(&ack.run).or_default() += 1;
        match by_id.get(ack.event_id.as_str()) {
            Some(e)
                if e.run_id.as_deref() == Some(ack.run.as_str())
                    && e.seq == Some(ack.seq)
                    && e.commit == ack.commit => {}
            Some(e) => problems.push(format!(
                "{} seq {}: the ledger has run {:?} seq {:?} commit {}",
                ack.run, ack.seq, e.run_id, e.seq, e.commit
            )),
            None => problems.push(format!(
                "{} seq {}: event {:?} is not in the ledger",
                ack.run, ack.seq, ack.event_id
            )),
        }
    }
    for (run, n) in per_run {
        let ws = working_set::show(&store, run, None).expect("working set");
        if ws.update_seq != n {
            problems.push(format!(
                "{run}: _update_seq {} after {n} acknowledged writes",
                ws.update_seq
            ));
        }
    }
    problems
}

/// Prints a write phase's rows and returns (writes/s, problems).
fn report_phase(route: Route, writers: &[Writer], secs: f64, store: &Path) -> (f64, Vec<String>) {
    let acks: usize = writers.iter().map(|w| w.acks.len()).sum();
    let transient: usize = writers.iter().map(|w| w.transient).sum();
    let mut problems: Vec<String> = writers.iter().flat_map(|w| w.failures.clone()).collect();
    problems.extend(verify(store, writers));
    let rate = acks as f64 / secs;
    let ms = sorted(writers.iter().flat_map(|w| w.ms.iter().copied()).collect());
    println!(
        "{:<20} writers {:>2}  acked {:>6} in {:>6.1} s = {:>8.1} writes/s  write p50 {:>8.1} ms  p99 {:>8.1} ms  transient {:>4}  lost/failed {}",
        route.label(),
        writers.len(),
        acks,
        secs,
        rate,
        pct(&ms, 0.5),
        pct(&ms, 0.99),
        transient,
        problems.len()
    );
    for p in problems.iter().take(10) {
        eprintln!("  {}: {p}", route.label());
    }
    (rate, problems)
}

/// A store of `n` items with its search index built.
fn indexed_store(root: &Path, n: usize) {
    let store = populate_memory(root, n);
    let t = Instant::now();
    search::status(&store, &|_, _| {}).expect("index");
    eprintln!("indexed in {:.1} s", t.elapsed().as_secs_f64());
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n = num("CAIRN_BENCH_BIG", 100_000);
    let ops = num("CAIRN_BENCH_OPS", 200);
    let secs = num("CAIRN_BENCH_SECONDS", 10) as f64;
    let clients = num("CAIRN_BENCH_CLIENTS", 8).max(1);
    let tmp = tempfile::TempDir::new().expect("tempdir");
    let home = tmp.path().to_path_buf();
    let root_a: PathBuf = home.join("served");
    let root_b: PathBuf = home.join("cli");
    indexed_store(&root_a, n);

    let server = Server::start(&home, &root_a);
    let a = agent();
    boot(&a, &server.base, "run_latency");
    println!("store of {n} memory items, cairn serve at {}", server.base);
    table_header();
    latency_rows(&server, "run_latency", ops, n);

    let mut rates = Vec::new();
    let mut problems = Vec::new();
    for route in [Route::StepUpdate, Route::V1Ws] {
        let tag = if route == Route::StepUpdate {
            "seed"
        } else {
            "v1"
        };
        let runs: Vec<String> = (0..clients).map(|c| format!("run_{tag}_{c}")).collect();
        for run in &runs {
            boot(&a, &server.base, run);
        }
        let (writers, took) = write_phase(route, &runs, Some(&server.base), None, secs);
        let (rate, p) = report_phase(route, &writers, took, &root_a);
        rates.push(rate);
        problems.extend(p);
    }
    drop(server);

    indexed_store(&root_b, n);
    let runs: Vec<String> = (0..clients).map(|c| format!("run_cli_{c}")).collect();
    for run in &runs {
        let out = cairn_cmd(&home, &root_b)
            .args([
                "run",
                "boot",
                "--objective",
                "Make the parser handle nested blocks",
            ])
            .args(["--run-id", run])
            .output()
            .expect("cairn run boot");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (writers, took) = write_phase(Route::Cli, &runs, None, Some((&home, &root_b)), secs);
    let (cli_rate, p) = report_phase(Route::Cli, &writers, took, &root_b);
    problems.extend(p);
    if cli_rate > 0.0 {
        println!(
            "writes/s over the CLI's: step/update {:.2}x, /v1 ws {:.2}x",
            rates[0] / cli_rate,
            rates[1] / cli_rate
        );
    }
    assert!(
        problems.is_empty(),
        "{} lost or failed writes (listed above)",
        problems.len()
    );
}
