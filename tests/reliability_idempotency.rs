//! Idempotency keys under dropped acknowledgements, and keys reused for a
//! different request.
//!
//! The lost-reply test drives `cairn serve` with four clients, each retrying
//! every write with its key until it sees the reply; a seeded generator
//! "loses" 20% of the replies (the client discards them and sends the same
//! request again). Afterwards the ledger must hold every write exactly once:
//! zero duplicates, zero missing. Its size is
//! `CAIRN_IDEM_WRITES` writes per client (default 25) and its seed
//! `CAIRN_IDEM_SEED`.
//!
//! A key reused with a different request is refused with CONFLICT
//! (`IDEMPOTENCY_KEY_REUSED`, naming the key) on the CLI and over HTTP (409),
//! and HEAD, git status and the work tree are unchanged.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Stdio};
use std::time::Duration;

use cairn::Store;
use common::cli::{cairn, refused, write, Env, NOW};
use common::workers::{append_patch, check_ledger_against_acks, Ack};
use serde_json::{json, Value};

/// A running `cairn serve` on an ephemeral loopback port, stopped on drop.
struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(env: &Env) -> Server {
        let mut child = cairn(env.home.path())
            .env("CAIRN_NOW", NOW)
            .current_dir(env.home.path())
            .arg("--store")
            .arg(env.root())
            .args(["serve", "--addr", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| {
                let mut err = String::new();
                let _ = child.stderr.take().unwrap().read_to_string(&mut err);
                panic!("cairn serve did not start: {line:?} {err}")
            });
        Server { child, port }
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// POSTs `body` with an `Idempotency-Key`, retrying TRANSIENT (503) replies
/// (the server's lock wait ran out); returns (status, JSON body).
fn post(a: &ureq::Agent, port: u16, path: &str, key: &str, body: &Value) -> (u16, Value) {
    loop {
        let mut resp = a
            .post(format!("http://127.0.0.1:{port}{path}"))
            .header("Idempotency-Key", key)
            .send_json(body)
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap();
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status == 503 {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        return (status, v);
    }
}

/// A small deterministic generator (xorshift64*), so a failing seed replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// True with probability `percent`/100.
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What one client saw: its run, its acknowledged writes, how many replies
/// were lost, and how many retries were answered as replays.
struct ClientLog {
    run: String,
    acks: Vec<Ack>,
    lost: u64,
    replays: u64,
}

/// Sends `body` with `key` until a reply is seen, losing each reply with
/// probability 20%. Every retry after a reply that was lost must replay the
/// lost reply's commit. Returns the seen reply's body.
fn send_losing(
    a: &ureq::Agent,
    port: u16,
    path: &str,
    key: &str,
    body: &Value,
    rng: &mut Rng,
    log: &mut (u64, u64),
) -> Value {
    let mut lost_commit: Option<Value> = None;
    loop {
        let (st, b) = post(a, port, path, key, body);
        assert_eq!(st, 200, "{key}: {b}");
        if let Some(first) = &lost_commit {
            assert_eq!(
                b["replayed"],
                json!(true),
                "{key}: a retry wrote again: {b}"
            );
            assert_eq!(
                &b["event"]["commit"], first,
                "{key}: a retry answered another commit"
            );
            log.1 += 1;
        } else {
            assert_eq!(
                b["replayed"],
                json!(false),
                "{key}: a first send replayed: {b}"
            );
        }
        if rng.chance(20) {
            // The reply is lost on the way back: the client never sees it.
            lost_commit.get_or_insert_with(|| b["event"]["commit"].clone());
            log.0 += 1;
            continue;
        }
        return b;
    }
}

#[test]
fn lost_replies_retried_with_keys_leave_no_duplicates_and_nothing_missing() {
    let writes = env_u64("CAIRN_IDEM_WRITES", 25);
    let seed = env_u64("CAIRN_IDEM_SEED", 0x1de3_7e57);
    let env = Env::store();
    let server = Server::start(&env);
    let port = server.port;
    let clients: Vec<_> = (0..4u64)
        .map(|c| {
            std::thread::spawn(move || {
                let a = agent();
                let mut rng = Rng(seed ^ (c + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
                let mut counts = (0u64, 0u64);
                let boot = send_losing(
                    &a,
                    port,
                    "/runs/boot",
                    &format!("boot-c{c}"),
                    &json!({"objective": format!("client {c}")}),
                    &mut rng,
                    &mut counts,
                );
                let run = boot["run_id"].as_str().unwrap().to_string();
                let mut acks = Vec::new();
                let mut seq = 0;
                for i in 0..writes {
                    let item = format!("c{c}-w{i}");
                    let b = send_losing(
                        &a,
                        port,
                        &format!("/runs/{run}/step/update"),
                        &format!("key-{item}"),
                        &json!({"patch": append_patch(seq, &item)}),
                        &mut rng,
                        &mut counts,
                    );
                    seq = b["seq"].as_u64().unwrap();
                    acks.push(Ack {
                        item,
                        seq,
                        commit: b["event"]["commit"].as_str().unwrap().to_string(),
                    });
                }
                ClientLog {
                    run,
                    acks,
                    lost: counts.0,
                    replays: counts.1,
                }
            })
        })
        .collect();
    let logs: Vec<ClientLog> = clients.into_iter().map(|h| h.join().unwrap()).collect();
    drop(server);

    let store = Store::open(&env.root(), Default::default()).unwrap();
    let (mut lost, mut replays) = (0, 0);
    for log in &logs {
        // Seqs gap-free 1..=N, each item appended once, each ack the event at its seq.
        let n = check_ledger_against_acks(&store, &log.run, &log.acks, &log.run);
        assert_eq!(n, writes, "{}: writes missing or duplicated", log.run);
        lost += log.lost;
        replays += log.replays;
    }
    // Every key is on exactly one commit in history.
    let messages = env.git(&["log", "--format=%B%x00"]);
    let mut per_key: BTreeMap<String, usize> = BTreeMap::new();
    for line in messages.lines() {
        if let Some(k) = line.strip_prefix("Cairn-Idempotency-Key: ") {
            *per_key.entry(k.to_string()).or_default() += 1;
        }
    }
    assert_eq!(per_key.len() as u64, 4 * (writes + 1), "{per_key:?}");
    assert!(per_key.values().all(|&n| n == 1), "{per_key:?}");
    assert_eq!(lost, replays, "every lost reply is answered by one replay");
    assert!(
        lost > 0,
        "the generator lost no reply: the test proved nothing"
    );
    eprintln!(
        "{} writes from 4 clients, {lost} replies lost and replayed, 0 duplicates, 0 missing",
        4 * (writes + 1)
    );
}

fn patch_doc(seq: u64, id: &str) -> String {
    serde_json::to_string(&append_patch(seq, id)).unwrap()
}

#[test]
fn a_key_reused_for_a_different_request_is_a_conflict_naming_the_key_on_the_cli() {
    let (env, run) = Env::with_run();
    let dir = env.home.path();
    let first = write(dir, "first.json", &patch_doc(0, "a1"));
    let other = write(dir, "other.json", &patch_doc(0, "b1"));
    let done = env.ok(&[
        "--idempotency-key",
        "step-1",
        "ws",
        "patch",
        &run,
        "--file",
        &first,
    ]);
    let head = env.head();
    // The same request as YAML with the keys in another order: the same request.
    let yaml = write(
        dir,
        "first.yaml",
        "append:\n  sliding_context:\n    - content: a1\n      id: a1\nset:\n  budget:\n    max_pinned_items: 32\n    max_sliding_tokens: 24\nexpected_seq: 0\n",
    );
    let again = env.ok(&[
        "--idempotency-key",
        "step-1",
        "ws",
        "patch",
        &run,
        "--file",
        &yaml,
    ]);
    assert_eq!(again["replayed"], json!(true), "{again}");
    assert_eq!(again["event"]["commit"], done["event"]["commit"]);
    assert_eq!(env.head(), head);
    // A different patch under the same key.
    let e = refused(
        &env,
        &[
            "--idempotency-key",
            "step-1",
            "ws",
            "patch",
            &run,
            "--file",
            &other,
        ],
        None,
        "CONFLICT",
        4,
    );
    assert_eq!(e["code"], "IDEMPOTENCY_KEY_REUSED", "{e}");
    assert!(e["message"].as_str().unwrap().contains("step-1"), "{e}");
    // The same key for another operation altogether.
    let e = refused(
        &env,
        &[
            "--idempotency-key",
            "step-1",
            "run",
            "boot",
            "--objective",
            "x",
        ],
        None,
        "CONFLICT",
        4,
    );
    assert_eq!(e["code"], "IDEMPOTENCY_KEY_REUSED", "{e}");
    // The original request still replays.
    let again = env.ok(&[
        "--idempotency-key",
        "step-1",
        "ws",
        "patch",
        &run,
        "--file",
        &first,
    ]);
    assert_eq!(again["replayed"], json!(true), "{again}");
    assert_eq!(env.head(), head);
}

#[test]
fn a_key_reused_for_a_different_request_is_409_over_http() {
    let (env, run) = Env::with_run();
    let server = Server::start(&env);
    let a = agent();
    let path = format!("/runs/{run}/step/update");
    let body = json!({"patch": append_patch(0, "h1")});
    let (st, b) = post(&a, server.port, &path, "http-1", &body);
    assert_eq!(st, 200, "{b}");
    let before = env.state();
    let (st, again) = post(&a, server.port, &path, "http-1", &body);
    assert_eq!(st, 200, "{again}");
    assert_eq!(again["replayed"], json!(true));
    let other = json!({"patch": append_patch(0, "h2")});
    let (st, e) = post(&a, server.port, &path, "http-1", &other);
    assert_eq!(st, 409, "{e}");
    assert_eq!(e["error"]["category"], "CONFLICT", "{e}");
    assert_eq!(e["error"]["code"], "IDEMPOTENCY_KEY_REUSED", "{e}");
    assert_eq!(e["error"]["retryable"], json!(false), "{e}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("http-1"),
        "{e}"
    );
    // A boot under the patch's key: another route, the same refusal.
    let (st, e) = post(
        &a,
        server.port,
        "/runs/boot",
        "http-1",
        &json!({"objective": "x"}),
    );
    assert_eq!(st, 409, "{e}");
    assert_eq!(e["error"]["code"], "IDEMPOTENCY_KEY_REUSED", "{e}");
    assert_eq!(env.state(), before, "a refused request changed the store");
}
