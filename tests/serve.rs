//! `cairn serve` end to end: the real binary on an ephemeral loopback
//! port, driven over HTTP by a blocking client (ureq), by curl and jq (the
//! seed README's demo flow, unmodified), by other cairn processes and by
//! plain git. Every refused request is checked for its status, its error
//! category, the field it names, and an unchanged store (HEAD, status,
//! work tree).
//!
//! The load test runs 8 clients × `CAIRN_SERVE_LOAD_REQUESTS` requests
//! (default 40 each; 500 for the issue's full setting).

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::cli::{cairn, Env, NOW};
use serde_json::{json, Value};

/// A running `cairn serve`, stopped on drop.
struct Server {
    child: Child,
    port: u16,
    agent: ureq::Agent,
    token: Option<String>,
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
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// The serve command for `env`'s store (not started).
fn serve_cmd(env: &Env, args: &[&str]) -> Command {
    let mut c = cairn(env.home.path());
    c.env("CAIRN_NOW", NOW)
        .current_dir(env.home.path())
        .arg("--store")
        .arg(env.root())
        .arg("serve")
        .args(args);
    c
}

impl Server {
    /// Starts `cairn serve --addr 127.0.0.1:0 ARGS` and reads the port it prints.
    fn start(env: &Env, args: &[&str]) -> Server {
        Self::start_with(
            serve_cmd(env, &[&["--addr", "127.0.0.1:0"], args].concat()),
            None,
        )
    }

    fn start_with(mut cmd: Command, token: Option<&str>) -> Server {
        let mut child = cmd
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
        Server {
            child,
            port,
            agent: agent(),
            token: token.map(str::to_string),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn auth<B>(&self, r: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(t) => r.header("Authorization", format!("Bearer {t}")),
            None => r,
        }
    }

    /// GET; returns (status, JSON body).
    fn get(&self, path: &str) -> (u16, Value) {
        let resp = self.auth(self.agent.get(self.url(path))).call().unwrap();
        read(resp)
    }

    /// POST a JSON body; returns (status, JSON body).
    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_with(path, body, &[])
    }

    fn post_with(&self, path: &str, body: &Value, headers: &[(&str, &str)]) -> (u16, Value) {
        let mut r = self.auth(self.agent.post(self.url(path)));
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        read(r.send_json(body).unwrap())
    }

    /// POST raw bytes with a content type.
    fn post_raw(&self, path: &str, ctype: &str, body: &[u8]) -> (u16, Value) {
        let r = self
            .auth(self.agent.post(self.url(path)))
            .header("Content-Type", ctype);
        read(r.send(body).unwrap())
    }
}

fn read(mut resp: ureq::http::Response<ureq::Body>) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap();
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, v)
}

/// Asserts a refused request: status, category, that the message or
/// details name `field`, and that the store did not change.
fn refused(
    env: &Env,
    status: u16,
    category: &str,
    field: &str,
    f: impl FnOnce() -> (u16, Value),
) -> Value {
    let before = env.state();
    let (got, body) = f();
    assert_eq!(got, status, "{body}");
    assert_eq!(body["ok"], json!(false), "{body}");
    assert_eq!(body["error"]["category"], json!(category), "{body}");
    let text = body["error"].to_string();
    assert!(
        text.contains(field),
        "the error should name {field:?}: {body}"
    );
    assert_eq!(env.state(), before, "a refused request changed the store");
    body["error"].clone()
}

fn boot(s: &Server) -> String {
    let (st, b) = s.post("/runs/boot", &json!({"objective": "Serve it"}));
    assert_eq!(st, 200, "{b}");
    b["run_id"].as_str().unwrap().to_string()
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn the_seed_readme_demo_flow_runs_unmodified_with_curl_and_jq() {
    assert!(
        have("curl") && have("jq"),
        "this test needs curl and jq (.ci/run installs them)"
    );
    let env = Env::store();
    let s = Server::start(&env, &[]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/seed_e2e.sh");
    // The script talks to 127.0.0.1:8000; curl's own config file sends that
    // to this server's port, so the script runs byte for byte as published.
    let curl_home = env.home.path().join("curl-home");
    std::fs::create_dir_all(&curl_home).unwrap();
    std::fs::write(
        curl_home.join(".curlrc"),
        format!("connect-to = 127.0.0.1:8000:127.0.0.1:{}\n", s.port),
    )
    .unwrap();
    let out = Command::new("bash")
        .args(["-e", "-o", "pipefail"])
        .arg(&script)
        .env("CURL_HOME", &curl_home)
        .env("HOME", &curl_home)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the demo flow failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!stdout.contains("\"ok\": false"), "{stdout}");
    // What the flow did is in the store: one run at seq 1, BUSY; the memory
    // committed by the milestone; an episode; a snapshot recorded and written.
    let (_, runs) = s.get("/v1/runs");
    let runs = runs["data"]["runs"].as_array().unwrap().clone();
    assert_eq!(runs.len(), 1, "{runs:?}");
    let run = runs[0]["run_id"].as_str().unwrap();
    let (_, ws) = s.get(&format!("/runs/{run}/ws"));
    assert_eq!(ws["_update_seq"], 1);
    assert_eq!(ws["status"], "BUSY");
    assert_eq!(ws["next_action"], "Test memory");
    let (_, hits) = s.get(&format!("/runs/{run}/memory/search?q=memory&scope=global"));
    assert_eq!(hits["count"], 1, "{hits}");
    assert_eq!(hits["items"][0]["content"], "Test memory item");
    assert_eq!(hits["items"][0]["status"], "active");
    let (_, eps) = s.get(&format!("/v1/runs/{run}/episodes"));
    assert_eq!(eps["data"]["episodes"].as_array().unwrap().len(), 1);
    let (_, log) = s.get(&format!("/v1/ledger?run={run}&type=RESUME_SNAPSHOT"));
    let snaps = log["data"]["events"].as_array().unwrap();
    assert_eq!(snaps.len(), 1, "{log}");
    let pack = snaps[0]["payload"]["pack_id"].as_str().unwrap();
    assert!(env
        .root()
        .join(".cairn/packs")
        .join(format!("{pack}.zip"))
        .is_file());
    let (code, _) = env.json(&["fsck"]);
    assert_eq!(code, 0);
}

#[test]
fn seed_boot_and_ws() {
    let env = Env::store();
    let s = Server::start(&env, &[]);
    let (st, b) = s.post(
        "/runs/boot",
        &json!({
            "objective": "Generate schemas and implement WS/RL/EP for my agent factory.",
            "acceptance_criteria": ["Schemas validate", "WS patch applies", "Ledger appends"],
            "constraints": ["No unknown WS fields", "Commit memory only at milestones"]
        }),
    );
    assert_eq!(st, 200, "{b}");
    let run = b["run_id"].as_str().unwrap().to_string();
    assert_eq!(b["ws"]["_update_seq"], 0);
    assert_eq!(b["event"]["event_type"], "RUN_BOOTED");
    let (st, ws) = s.get(&format!("/runs/{run}/ws"));
    assert_eq!(st, 200);
    assert_eq!(ws["acceptance_criteria"][2], "Ledger appends");

    // Bad input: a missing objective, an unknown field, not JSON, a bad run id.
    refused(&env, 422, "VALIDATION", "objective", || {
        s.post("/runs/boot", &json!({"constraints": []}))
    });
    refused(&env, 422, "VALIDATION", "colour", || {
        s.post("/runs/boot", &json!({"objective": "x", "colour": "red"}))
    });
    refused(&env, 422, "VALIDATION", "JSON", || {
        s.post_raw("/runs/boot", "application/json", b"objective: x")
    });
    refused(&env, 415, "VALIDATION", "Content-Type", || {
        s.post_raw("/runs/boot", "text/plain", b"{}")
    });
    refused(&env, 422, "VALIDATION", "run_id", || {
        s.post("/runs/boot", &json!({"objective": "x", "run_id": "../etc"}))
    });
    // Taken run id.
    refused(&env, 409, "CONFLICT", &run, || {
        s.post("/runs/boot", &json!({"objective": "x", "run_id": run}))
    });
    // Unknown run, bad path parameter.
    refused(&env, 404, "NOT_FOUND", "run_nope", || {
        s.get("/runs/run_nope/ws")
    });
    refused(&env, 422, "VALIDATION", "run_id", || {
        s.get("/runs/..%2Fx/ws")
    });
    // Unknown route.
    let (st, b) = s.get("/runs/x/nothing");
    assert_eq!(st, 404, "{b}");
}

#[test]
fn seed_step_update_optimistic_lock_and_idempotency() {
    let env = Env::store();
    let s = Server::start(&env, &[]);
    let run = boot(&s);
    let path = format!("/runs/{run}/step/update");
    let patch = json!({"patch": {
        "_schema_version": "2.1",
        "expected_seq": 0,
        "set": {
            "status": "BUSY",
            "current_stage": "PLAN",
            "next_action": "Write strict schemas for all artifacts.",
            "sliding_context": [
                {"id": "ctx1", "content": "Use pinned+sliding contexts.", "timestamp": "2026-01-18T00:00:00Z", "priority": 2}
            ]
        }
    }});
    let (st, b) = s.post_with(&path, &patch, &[("Idempotency-Key", "step-1")]);
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["ws"]["_update_seq"], 1);
    assert_eq!(b["seq"], 1);
    assert!(b["context_brief"]
        .as_str()
        .unwrap()
        .contains("Write strict schemas"));
    let head = env.head();
    // The same key again: the first result, no second commit.
    let (st, again) = s.post_with(&path, &patch, &[("Idempotency-Key", "step-1")]);
    assert_eq!(st, 200, "{again}");
    assert_eq!(again["replayed"], true);
    assert_eq!(again["event"]["commit"], b["event"]["commit"]);
    assert_eq!(env.head(), head);
    // Stale seq: 409, retryable, names the seqs; nothing written.
    let e = refused(&env, 409, "CONFLICT", "expected_seq", || {
        s.post(&path, &patch)
    });
    assert_eq!(e["code"], "STALE_SEQ");
    assert_eq!(e["retryable"], true);
    assert_eq!(e["details"]["current_seq"], 1);
    // Invalid patch: an unknown field in set.
    refused(&env, 422, "VALIDATION", "colour", || {
        s.post(
            &path,
            &json!({"patch": {"_schema_version": "2.1", "expected_seq": 1, "set": {"colour": "red"}}}),
        )
    });
    refused(&env, 422, "VALIDATION", "expected_seq", || {
        s.post(
            &path,
            &json!({"patch": {"_schema_version": "2.1", "set": {"status": "DONE"}}}),
        )
    });
    refused(&env, 422, "VALIDATION", "Idempotency-Key", || {
        s.post_with(&path, &patch, &[("Idempotency-Key", "")])
    });
    refused(&env, 404, "NOT_FOUND", "run_nope", || {
        s.post("/runs/run_nope/step/update", &patch)
    });
    // Over the body limit (max_file_bytes, 1 MiB): 413 before parsing.
    let big = json!({"patch": {"_schema_version": "2.1", "expected_seq": 1,
        "set": {"next_action": "x".repeat(1_100_000)}}});
    refused(&env, 413, "VALIDATION", "max_file_bytes", || {
        s.post(&path, &big)
    });
}

#[test]
fn seed_memory_milestone_search() {
    let env = Env::store();
    let s = Server::start(&env, &[]);
    let run = boot(&s);
    let mcr = json!({
        "_schema_version": "2.1", "op": "add", "type": "fact", "scope": "global",
        "content": "User prefers Python over JavaScript", "confidence": 0.9,
        "rationale": "Observed in multiple conversations", "source_refs": []
    });
    let (st, p) = s.post(
        &format!("/runs/{run}/memory/propose"),
        &json!({"mcrs": [mcr], "scope_filters": {}}),
    );
    assert_eq!(st, 200, "{p}");
    assert_eq!(p["ok"], true);
    assert_eq!(p["staged_count"], 1);
    let batch = p["batch_id"].as_str().unwrap().to_string();
    // Propose: bad MCR, no MCRs, unknown field, unknown run.
    refused(&env, 422, "VALIDATION", "/mcrs/0", || {
        s.post(
            &format!("/runs/{run}/memory/propose"),
            &json!({"mcrs": [{"_schema_version": "2.1", "op": "add"}]}),
        )
    });
    refused(&env, 422, "VALIDATION", "mcrs", || {
        s.post(&format!("/runs/{run}/memory/propose"), &json!({"mcrs": []}))
    });
    refused(&env, 422, "VALIDATION", "extra", || {
        s.post(
            &format!("/runs/{run}/memory/propose"),
            &json!({"mcrs": [mcr], "extra": 1}),
        )
    });
    refused(&env, 404, "NOT_FOUND", "run_nope", || {
        s.post("/runs/run_nope/memory/propose", &json!({"mcrs": [mcr]}))
    });
    // Commit outside a milestone: POLICY; another run's batch: NOT_FOUND.
    let e = refused(&env, 403, "POLICY", "milestone", || {
        s.post(
            &format!("/runs/{run}/memory/commit"),
            &json!({"batch_id": batch, "allow_outside_milestone": false}),
        )
    });
    assert_eq!(e["code"], "MEMORY_COMMIT_OUTSIDE_MILESTONE");
    let other = boot(&s);
    refused(&env, 404, "NOT_FOUND", &batch, || {
        s.post(
            &format!("/runs/{other}/memory/commit"),
            &json!({"batch_id": batch, "allow_outside_milestone": true}),
        )
    });
    refused(&env, 422, "VALIDATION", "batch_id", || {
        s.post(
            &format!("/runs/{run}/memory/commit"),
            &json!({"allow_outside_milestone": true}),
        )
    });
    // Search before the milestone: the candidate is not active.
    let (_, hits) = s.get(&format!(
        "/runs/{run}/memory/search?q=python&top_k=10&scope=global&status=active"
    ));
    assert_eq!(hits["count"], 0, "{hits}");
    // Milestone commits the batch.
    let (st, m) = s.post(
        &format!("/runs/{run}/milestone"),
        &json!({"reason": "checkpoint", "next_entry_point": "Continue from PLAN stage.", "memory_batch_id": batch}),
    );
    assert_eq!(st, 200, "{m}");
    assert_eq!(m["committed_memory_ids"].as_array().unwrap().len(), 1);
    assert!(m["tag"]
        .as_str()
        .unwrap()
        .starts_with(&format!("cairn/{run}/")));
    let (st, hits) = s.get(&format!(
        "/runs/{run}/memory/search?q=python&top_k=10&scope=global&status=active"
    ));
    assert_eq!(st, 200);
    assert_eq!(hits["count"], 1, "{hits}");
    assert_eq!(hits["items"][0]["memory_id"], m["committed_memory_ids"][0]);
    // The batch is committed: again is a CONFLICT.
    refused(&env, 409, "CONFLICT", &batch, || {
        s.post(
            &format!("/runs/{run}/milestone"),
            &json!({"memory_batch_id": batch}),
        )
    });
    refused(&env, 422, "VALIDATION", "memory_batch_id", || {
        s.post(
            &format!("/runs/{run}/milestone"),
            &json!({"memory_batch_id": "../x"}),
        )
    });
    refused(&env, 404, "NOT_FOUND", "run_nope", || {
        s.post("/runs/run_nope/milestone", &json!({"reason": "x"}))
    });
    // Search: bad parameters name themselves.
    refused(&env, 422, "VALIDATION", "top_k", || {
        s.get(&format!("/runs/{run}/memory/search?q=python&top_k=lots"))
    });
    refused(&env, 422, "VALIDATION", "scope", || {
        s.get(&format!("/runs/{run}/memory/search?q=python&scope=galaxy"))
    });
    refused(&env, 422, "VALIDATION", "colour", || {
        s.get(&format!("/runs/{run}/memory/search?q=python&colour=red"))
    });
    refused(&env, 404, "NOT_FOUND", "run_nope", || {
        s.get("/runs/run_nope/memory/search?q=python")
    });
}

#[test]
fn seed_resume_snapshot_and_load() {
    let env = Env::store();
    let s = Server::start(&env, &[]);
    let run = boot(&s);
    let (st, snap) = s.post(
        &format!("/runs/{run}/resume/snapshot"),
        &json!({"zip_pack": true, "pointers": {"ledger_last_seq": 42}}),
    );
    assert_eq!(st, 200, "{snap}");
    let zip = snap["pack_zip"].as_str().unwrap().to_string();
    assert!(Path::new(&zip).is_file());
    // The same state again: the same pack, recorded once.
    let (st, again) = s.post(&format!("/runs/{run}/resume/snapshot"), &json!({}));
    assert_eq!(st, 200, "{again}");
    assert_eq!(again["pack_id"], snap["pack_id"]);
    assert_eq!(again["replayed"], true);
    refused(&env, 422, "VALIDATION", "/pointers/colour", || {
        s.post(
            &format!("/runs/{run}/resume/snapshot"),
            &json!({"pointers": {"colour": 1}}),
        )
    });
    refused(&env, 404, "NOT_FOUND", "run_nope", || {
        s.post("/runs/run_nope/resume/snapshot", &json!({}))
    });
    // Load by id into a new run.
    let pack = snap["pack_id"].as_str().unwrap();
    let (st, loaded) = s.post(
        "/runs/resume/load",
        &json!({"pack_path": pack, "new_run_id": "run_resumed"}),
    );
    assert_eq!(st, 200, "{loaded}");
    assert_eq!(loaded["run_id"], "run_resumed");
    assert_eq!(loaded["ws"]["objective"], "Serve it");
    // Paths outside the packs folder are refused; missing packs are not found.
    let outside = env.home.path().join("elsewhere.zip");
    std::fs::copy(&zip, &outside).unwrap();
    refused(&env, 403, "POLICY", "pack_path", || {
        s.post(
            "/runs/resume/load",
            &json!({"pack_path": outside.to_str().unwrap()}),
        )
    });
    refused(&env, 403, "POLICY", "pack_path", || {
        s.post(
            "/runs/resume/load",
            &json!({"pack_path": "../../elsewhere.zip"}),
        )
    });
    refused(&env, 404, "NOT_FOUND", "pack_nope", || {
        s.post("/runs/resume/load", &json!({"pack_path": "pack_nope"}))
    });
    refused(&env, 409, "CONFLICT", "run_resumed", || {
        s.post(
            "/runs/resume/load",
            &json!({"pack_path": pack, "new_run_id": "run_resumed"}),
        )
    });
    refused(&env, 422, "VALIDATION", "new_run_id", || {
        s.post(
            "/runs/resume/load",
            &json!({"pack_path": pack, "new_run_id": "bad id"}),
        )
    });
}

#[test]
fn v1_routes_answer_the_cli_json_shapes() {
    let env = Env::store();
    let s = Server::start(&env, &[]);
    // Boot over /v1 and compare shapes with the CLI's --json.
    let (st, b) = s.post(
        "/v1/runs",
        &json!({"objective": "Ship it", "run_id": "run_v1"}),
    );
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["ok"], true);
    let cli_boot = env.ok(&[
        "run",
        "boot",
        "--objective",
        "Ship it",
        "--run-id",
        "run_cli",
    ]);
    let keys = |v: &Value| -> Vec<String> { v.as_object().unwrap().keys().cloned().collect() };
    assert_eq!(keys(&b["data"]), keys(&cli_boot));
    let (_, list) = s.get("/v1/runs");
    assert_eq!(list["data"], env.ok(&["run", "list"]));
    // Patch and the working set at a seq.
    let (st, p) = s.post(
        "/v1/runs/run_v1/ws",
        &json!({"expected_seq": 0, "set": {"status": "BUSY"}}),
    );
    assert_eq!(st, 200, "{p}");
    assert_eq!(p["data"]["seq"], 1);
    let (_, now) = s.get("/v1/runs/run_v1/ws");
    assert_eq!(now["data"], env.ok(&["ws", "show", "run_v1"]));
    let (_, at0) = s.get("/v1/runs/run_v1/ws?at=0");
    assert_eq!(at0["data"]["status"], "IDLE");
    let commit = p["data"]["event"]["commit"].as_str().unwrap();
    let (_, atc) = s.get(&format!("/v1/runs/run_v1/ws?at={commit}"));
    assert_eq!(atc["data"]["status"], "BUSY");
    refused(&env, 422, "VALIDATION", "at", || {
        s.get("/v1/runs/run_v1/ws?at=yesterday")
    });
    refused(&env, 404, "NOT_FOUND", "seq 9", || {
        s.get("/v1/runs/run_v1/ws?at=9")
    });
    refused(&env, 409, "CONFLICT", "expected_seq", || {
        s.post(
            "/v1/runs/run_v1/ws",
            &json!({"expected_seq": 0, "set": {"status": "DONE"}}),
        )
    });
    refused(&env, 404, "NOT_FOUND", "run_nope", || {
        s.get("/v1/runs/run_nope/ws")
    });
    let (_, ev) = s.get("/v1/runs/run_v1/ws/evicted");
    assert_eq!(ev["data"], env.ok(&["ws", "evicted", "run_v1"]));
    // Ledger with filters, as `cairn log`.
    let (_, log) = s.get("/v1/ledger?run=run_v1");
    assert_eq!(log["data"], env.ok(&["log", "--run", "run_v1"]));
    let (_, log) = s.get("/v1/ledger?type=RUN_BOOTED&limit=1");
    assert_eq!(
        log["data"],
        env.ok(&["log", "--type", "RUN_BOOTED", "--limit", "1"])
    );
    refused(&env, 422, "VALIDATION", "type", || {
        s.get("/v1/ledger?type=NOPE")
    });
    refused(&env, 422, "VALIDATION", "since", || {
        s.get("/v1/ledger?since=yesterday")
    });
    // Memory: propose, queue, promote, reject, show, history, list.
    let mcr = |c: &str| {
        json!({"_schema_version": "2.1", "op": "add", "type": "fact", "scope": "global",
        "content": c, "confidence": 0.8, "rationale": "r", "source_refs": []})
    };
    let (st, pr) = s.post(
        "/v1/runs/run_v1/memory",
        &json!({"mcrs": [mcr("alpha fact"), mcr("beta fact")]}),
    );
    assert_eq!(st, 200, "{pr}");
    let ids: Vec<String> = pr["data"]["batch"]["item_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let (_, q) = s.get("/v1/memory/queue");
    assert_eq!(q["data"], env.ok(&["memory", "queue"]));
    assert_eq!(q["data"]["count"], 2);
    refused(&env, 422, "VALIDATION", "reason", || {
        s.post(&format!("/v1/memory/{}/reject", ids[1]), &json!({}))
    });
    let (st, pm) = s.post(
        &format!("/v1/memory/{}/promote", ids[0]),
        &json!({"reason": "checked"}),
    );
    assert_eq!(st, 200, "{pm}");
    assert_eq!(pm["data"]["item"]["status"], "active");
    let (st, rj) = s.post(
        &format!("/v1/memory/{}/reject", ids[1]),
        &json!({"reason": "wrong"}),
    );
    assert_eq!(st, 200, "{rj}");
    refused(&env, 409, "CONFLICT", "candidate", || {
        s.post(&format!("/v1/memory/{}/promote", ids[1]), &json!({}))
    });
    refused(&env, 404, "NOT_FOUND", "mem_nope", || {
        s.post("/v1/memory/mem_nope/promote", &json!({}))
    });
    let (_, show) = s.get(&format!("/v1/memory/{}", ids[0]));
    assert_eq!(show["data"], env.ok(&["memory", "show", &ids[0]]));
    let (_, hist) = s.get(&format!("/v1/memory/{}/history", ids[0]));
    assert_eq!(hist["data"], env.ok(&["memory", "history", &ids[0]]));
    let (_, list) = s.get("/v1/memory?status=active");
    assert_eq!(
        list["data"],
        env.ok(&["memory", "list", "--status", "active"])
    );
    refused(&env, 422, "VALIDATION", "scope", || {
        s.get("/v1/memory?scope=galaxy")
    });
    refused(&env, 404, "NOT_FOUND", "mem_nope", || {
        s.get("/v1/memory/mem_nope")
    });
    // Search and brief.
    let (_, hits) = s.get("/v1/search?q=alpha");
    assert_eq!(hits["data"]["hits"][0]["id"], json!(ids[0]));
    refused(&env, 422, "VALIDATION", "top_k", || {
        s.get("/v1/search?q=alpha&top_k=0")
    });
    let (st, br) = s.get("/v1/runs/run_v1/brief?budget=500");
    assert_eq!(st, 200, "{br}");
    assert!(br["data"]["markdown"].as_str().unwrap().contains("Ship it"));
    refused(&env, 404, "NOT_FOUND", "run_nope", || {
        s.get("/v1/runs/run_nope/brief")
    });
    // Milestone, episodes; batch commit.
    let (_, pr2) = s.post("/v1/runs/run_v1/memory", &json!([mcr("gamma fact")]));
    let batch = pr2["data"]["batch_id"].as_str().unwrap().to_string();
    refused(&env, 403, "POLICY", "milestone", || {
        s.post(&format!("/v1/batches/{batch}/commit"), &json!({}))
    });
    let (st, c) = s.post(
        &format!("/v1/batches/{batch}/commit"),
        &json!({"allow_outside_milestone": true}),
    );
    assert_eq!(st, 200, "{c}");
    refused(&env, 422, "VALIDATION", "reason", || {
        s.post("/v1/runs/run_v1/milestone", &json!({"batches": []}))
    });
    let (st, m) = s.post(
        "/v1/runs/run_v1/milestone",
        &json!({"reason": "checkpoint"}),
    );
    assert_eq!(st, 200, "{m}");
    let (_, eps) = s.get("/v1/runs/run_v1/episodes");
    assert_eq!(eps["data"], env.ok(&["episode", "list", "run_v1"]));
    let ep = m["data"]["episode"]["episode_id"].as_str().unwrap();
    let (_, one) = s.get(&format!("/v1/episodes/{ep}"));
    assert_eq!(one["data"], env.ok(&["episode", "show", ep]));
    refused(&env, 404, "NOT_FOUND", "ep_nope", || {
        s.get("/v1/episodes/ep_nope")
    });
    // Projects and trusted state.
    let (st, pa) = s.post(
        "/v1/projects",
        &json!({"id": "cairn", "aliases": ["cairn-store"]}),
    );
    assert_eq!(st, 200, "{pa}");
    let (_, pl) = s.get("/v1/projects");
    assert_eq!(pl["data"], env.ok(&["project", "list"]));
    let (st, ss) = s.post(
        "/v1/projects/cairn-store/state",
        &json!({"category": "status", "key": "phase", "value": "implementation"}),
    );
    assert_eq!(st, 200, "{ss}");
    assert_eq!(ss["data"]["project"], "cairn");
    let (_, sg) = s.get("/v1/projects/cairn/state");
    assert_eq!(sg["data"], env.ok(&["state", "get", "cairn"]));
    refused(&env, 422, "VALIDATION", "value", || {
        s.post(
            "/v1/projects/cairn/state",
            &json!({"category": "status", "key": "phase"}),
        )
    });
    // Snapshot and load over /v1.
    let (st, sn) = s.post("/v1/runs/run_v1/snapshot", &json!({"zip": false}));
    assert_eq!(st, 200, "{sn}");
    let (st, ld) = s.post("/v1/resume/load", &json!({"pack": sn["data"]["pack_id"]}));
    assert_eq!(st, 200, "{ld}");
    assert_eq!(ld["data"]["memory_status"], "candidate");
    // fsck.
    let (st, f) = s.get("/v1/fsck");
    assert_eq!(st, 200, "{f}");
    assert_eq!(f["data"]["findings"], json!([]));
    // The OpenAPI document lists the routes.
    let (st, doc) = s.get("/openapi.json");
    assert_eq!(st, 200);
    for p in [
        "/runs/boot",
        "/runs/{run_id}/step/update",
        "/v1/events",
        "/v1/ledger",
        "/v1/fsck",
    ] {
        assert!(
            doc["paths"].get(p).is_some(),
            "{p} missing from /openapi.json"
        );
    }
}

#[test]
fn a_non_loopback_bind_needs_a_token() {
    let env = Env::store();
    let out = serve_cmd(&env, &["--addr", "0.0.0.0:0"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("token"), "{err}");
}

#[test]
fn the_token_is_required_when_set() {
    let env = Env::store();
    let token_file = env.home.path().join("token");
    std::fs::write(&token_file, "s3cret-token\n").unwrap();
    let cmd = serve_cmd(
        &env,
        &[
            "--addr",
            "0.0.0.0:0",
            "--token-file",
            token_file.to_str().unwrap(),
        ],
    );
    let s = Server::start_with(cmd, Some("s3cret-token"));
    let (st, _) = s.get("/v1/runs");
    assert_eq!(st, 200);
    let no_token = agent();
    let before = env.state();
    let resp = no_token.get(s.url("/v1/runs")).call().unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().contains_key("www-authenticate"));
    let (st, b) = read(
        no_token
            .post(s.url("/runs/boot"))
            .header("Authorization", "Bearer wrong")
            .send_json(json!({"objective": "x"}))
            .unwrap(),
    );
    assert_eq!(st, 401, "{b}");
    assert_eq!(b["error"]["code"], "UNAUTHORIZED");
    assert_eq!(env.state(), before);
    // Liveness needs no token.
    let resp = no_token.get(s.url("/health")).call().unwrap();
    assert_eq!(resp.status(), 200);
    // CAIRN_TOKEN works as well.
    let mut cmd = serve_cmd(&env, &["--addr", "127.0.0.1:0"]);
    cmd.env("CAIRN_TOKEN", "from-env");
    let s2 = Server::start_with(cmd, Some("from-env"));
    assert_eq!(s2.get("/v1/runs").0, 200);
    assert_eq!(
        no_token.get(s2.url("/v1/runs")).call().unwrap().status(),
        401
    );
}

#[test]
fn foreign_host_headers_are_refused() {
    let env = Env::store();
    let s = Server::start(&env, &["--allow-host", "cairn.internal"]);
    let get_host = |host: &str| {
        read(
            s.agent
                .get(s.url("/v1/runs"))
                .header("Host", host)
                .call()
                .unwrap(),
        )
    };
    let (st, b) = get_host("evil.example");
    assert_eq!(st, 421, "{b}");
    assert_eq!(b["error"]["code"], "BAD_HOST");
    assert_eq!(get_host(&format!("localhost:{}", s.port)).0, 200);
    assert_eq!(get_host("cairn.internal").0, 200);
    // A write with a foreign Host changes nothing.
    let before = env.state();
    let (st, _) = read(
        s.agent
            .post(s.url("/runs/boot"))
            .header("Host", "rebound.example:8000")
            .send_json(json!({"objective": "x"}))
            .unwrap(),
    );
    assert_eq!(st, 421);
    assert_eq!(env.state(), before);
    // No CORS headers unless configured.
    let resp = s
        .agent
        .get(s.url("/v1/runs"))
        .header("Origin", "http://evil.example")
        .call()
        .unwrap();
    assert!(!resp.headers().contains_key("access-control-allow-origin"));
    let s2 = Server::start(&env, &["--cors-origin", "http://localhost:3000"]);
    let resp = s2
        .agent
        .get(s2.url("/v1/runs"))
        .header("Origin", "http://localhost:3000")
        .call()
        .unwrap();
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "http://localhost:3000"
    );
}

/// Reads SSE events (id, data) from a stream on a thread, sending them on a channel.
fn subscribe(s: &Server, query: &str, last_id: Option<&str>) -> mpsc::Receiver<(String, Value)> {
    let mut r = s.agent.get(s.url(&format!("/v1/events{query}")));
    if let Some(id) = last_id {
        r = r.header("Last-Event-ID", id);
    }
    let resp = r.call().unwrap();
    assert_eq!(resp.status(), 200);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let reader = BufReader::new(resp.into_body().into_reader());
        let mut id = String::new();
        for line in reader.lines() {
            let Ok(line) = line else { return };
            if let Some(v) = line.strip_prefix("id: ") {
                id = v.to_string();
            } else if let Some(d) = line.strip_prefix("data: ") {
                if tx
                    .send((id.clone(), serde_json::from_str(d).unwrap()))
                    .is_err()
                {
                    return;
                }
            }
        }
    });
    rx
}

fn next_event(rx: &mpsc::Receiver<(String, Value)>) -> (String, Value) {
    rx.recv_timeout(Duration::from_secs(20))
        .expect("an event within 20 s")
}

#[test]
fn events_stream_every_commit_and_resume_with_last_event_id() {
    let env = Env::store();
    let run = env.boot();
    let s = Server::start(&env, &[]);
    let rx = subscribe(&s, "", None);
    // A write by the CLI in another process.
    env.ok(&[
        "ws",
        "patch",
        &run,
        "--expected-seq",
        "0",
        "--file",
        &common::cli::write(env.home.path(), "p.json", r#"{"set": {"status": "BUSY"}}"#),
    ]);
    let (id1, e1) = next_event(&rx);
    assert_eq!(e1["event_type"], "WS_UPDATE_APPLIED");
    assert_eq!(e1["run_id"], json!(run));
    assert_eq!(id1, e1["commit"].as_str().unwrap());
    // A hand commit with plain git.
    env.put("notes.txt", "a hand-written note\n");
    env.git(&["add", "notes.txt"]);
    env.git(&["commit", "-q", "-m", "a note"]);
    let (id2, e2) = next_event(&rx);
    assert_eq!(e2["event_type"], "MANUAL_EDIT");
    assert_eq!(id2, env.head());
    // A write through this server.
    let (st, _) = s.post(
        &format!("/runs/{run}/step/update"),
        &json!({"patch": {"expected_seq": 1, "set": {"status": "DONE"}}}),
    );
    assert_eq!(st, 200);
    let (id3, e3) = next_event(&rx);
    assert_eq!(e3["seq"], 2);
    drop(rx);
    // Reconnect after the first event: the two after it, in order, nothing else.
    let again = subscribe(&s, "", Some(&id1));
    assert_eq!(next_event(&again).0, id2);
    assert_eq!(next_event(&again).0, id3);
    // Commits made while nobody listened arrive on reconnect too.
    let head = env.head();
    for i in 0..3 {
        env.ok(&["state", "set", "web", "deploy", "region", &format!("r{i}")]);
    }
    let later = subscribe(&s, &format!("?since={head}"), None);
    let got: Vec<String> = (0..3)
        .map(|_| {
            next_event(&later).1["event_type"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(got, vec!["PROJECT_STATE_SET"; 3]);
    assert!(
        later.recv_timeout(Duration::from_millis(300)).is_err(),
        "nothing more"
    );
    // Filters, and the whole history from the start.
    let booted = subscribe(&s, "?since=start&type=RUN_BOOTED", None);
    assert_eq!(next_event(&booted).1["run_id"], json!(run));
    // Bad parameters.
    refused(&env, 422, "VALIDATION", "since", || {
        s.get("/v1/events?since=yesterday")
    });
    refused(&env, 422, "VALIDATION", "type", || {
        s.get("/v1/events?type=NOPE")
    });
    refused(&env, 404, "NOT_FOUND", "commit", || {
        s.get("/v1/events?since=deadbeefdeadbeef")
    });
}

#[test]
fn eight_clients_mixing_reads_and_writes_lose_nothing() {
    let per_client: usize = std::env::var("CAIRN_SERVE_LOAD_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let env = Env::store();
    let s = Server::start(&env, &[]);
    let shared = boot(&s);
    let port = s.port;
    let started = Instant::now();
    let handles: Vec<_> = (0..8)
        .map(|c| {
            let shared = shared.clone();
            std::thread::spawn(move || {
                let a = agent();
                let url = |p: &str| format!("http://127.0.0.1:{port}{p}");
                // Sends with retries on TRANSIENT (503 + Retry-After); any other 5xx fails.
                let send = |f: &dyn Fn() -> ureq::http::Response<ureq::Body>| -> (u16, Value) {
                    loop {
                        let resp = f();
                        let status = resp.status().as_u16();
                        if status == 503 {
                            assert!(resp.headers().contains_key("retry-after"));
                            let (_, b) = read(resp);
                            assert_eq!(b["error"]["category"], "TRANSIENT", "{b}");
                            std::thread::sleep(Duration::from_millis(50));
                            continue;
                        }
                        let (st, b) = read(resp);
                        assert!(st < 500, "a 5xx that is not TRANSIENT: {st} {b}");
                        return (st, b);
                    }
                };
                let (_, b) = send(&|| a.post(url("/runs/boot")).send_json(json!({"objective": format!("client {c}")})).unwrap());
                let run = b["run_id"].as_str().unwrap().to_string();
                let mut seq = 0u64;
                let mut acked: Vec<(String, u64, String)> = Vec::new();
                for i in 0..per_client {
                    match i % 5 {
                        0 | 1 => {
                            let mark = format!("c{c}-{i}");
                            let body = json!({"patch": {"expected_seq": seq, "set": {"next_action": mark}}});
                            let (st, b) = send(&|| a.post(url(&format!("/runs/{run}/step/update"))).send_json(&body).unwrap());
                            assert_eq!(st, 200, "{b}");
                            seq = b["seq"].as_u64().unwrap();
                            acked.push((run.clone(), seq, mark));
                        }
                        2 => {
                            // The shared run: a stale seq is a 409, a fresh one is acknowledged.
                            let (_, ws) = send(&|| a.get(url(&format!("/runs/{shared}/ws"))).call().unwrap());
                            let cur = ws["_update_seq"].as_u64().unwrap();
                            let mark = format!("shared-c{c}-{i}");
                            let body = json!({"patch": {"expected_seq": cur, "set": {"next_action": mark}}});
                            let (st, b) = send(&|| a.post(url(&format!("/runs/{shared}/step/update"))).send_json(&body).unwrap());
                            match st {
                                200 => acked.push((shared.clone(), b["seq"].as_u64().unwrap(), mark)),
                                409 => assert_eq!(b["error"]["code"], "STALE_SEQ", "{b}"),
                                _ => panic!("{st} {b}"),
                            }
                        }
                        3 => {
                            let (st, ws) = send(&|| a.get(url(&format!("/runs/{run}/ws"))).call().unwrap());
                            assert_eq!(st, 200);
                            assert_eq!(ws["_update_seq"], seq);
                        }
                        _ => {
                            let (st, _) = send(&|| a.get(url(&format!("/runs/{run}/memory/search?q=client"))).call().unwrap());
                            assert_eq!(st, 200);
                        }
                    }
                }
                acked
            })
        })
        .collect();
    let acked: Vec<(String, u64, String)> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    eprintln!(
        "{} acknowledged writes from 8 clients in {:?}",
        acked.len(),
        started.elapsed()
    );
    // Every acknowledged write is in history at its seq.
    for (run, seq, mark) in &acked {
        let (st, ws) = s.get(&format!("/v1/runs/{run}/ws?at={seq}"));
        assert_eq!(st, 200, "{ws}");
        assert_eq!(
            ws["data"]["next_action"],
            json!(mark),
            "lost write {run} seq {seq}"
        );
    }
    let (code, out) = env.json(&["fsck"]);
    assert_eq!(code, 0, "{out}");
}
