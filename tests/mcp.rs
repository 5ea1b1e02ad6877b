//! `cairn mcp` end to end: the real binary spawned as an MCP server over
//! stdio and driven by rmcp's client, the way an agent's client does it
//! (initialize, list tools, call tools, read typed errors). Every refused
//! call is checked for its category, code, retryable flag and the field it
//! names, and for an unchanged store (HEAD, git status, work tree). Four
//! server processes writing to one store at once lose nothing.

mod common;

use std::process::Stdio;

use common::cli::{Env, NOW};
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::RunningService;
use rmcp::transport::TokioChildProcess;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{json, Value};

type Client = RunningService<RoleClient, ()>;

/// Spawns `cairn --store STORE mcp ARGS` in a hermetic environment and
/// initializes an MCP session with it.
async fn connect(env: &Env, args: &[&str]) -> Client {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_cairn"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", env.home.path())
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("CAIRN_NOW", NOW)
        .current_dir(env.home.path())
        .arg("--store")
        .arg(env.root())
        .arg("mcp")
        .args(args);
    let (transport, _) = TokioChildProcess::builder(cmd)
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn cairn mcp");
    ().serve(transport).await.expect("initialize")
}

async fn call(c: &Client, tool: &str, args: Value) -> CallToolResult {
    let args = args.as_object().expect("arguments are an object").clone();
    c.call_tool(CallToolRequestParams::new(tool.to_string()).with_arguments(args))
        .await
        .unwrap_or_else(|e| panic!("{tool}: protocol error {e}"))
}

/// The report of a successful call (its structured content).
async fn ok(c: &Client, tool: &str, args: Value) -> Value {
    let r = call(c, tool, args).await;
    assert_eq!(r.is_error, Some(false), "{tool} failed: {r:?}");
    let data = r.structured_content.clone().expect("structured content");
    // The text content carries the same JSON, for clients that read text only.
    let text = r.content[0].as_text().expect("text content").text.clone();
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), data);
    data
}

/// The `error` of a refused call: asserts its category and that the store
/// is exactly as before (HEAD, status, work tree).
async fn refused(env: &Env, c: &Client, tool: &str, args: Value, category: &str) -> Value {
    let before = env.state();
    let r = call(c, tool, args).await;
    assert_eq!(r.is_error, Some(true), "{tool} should fail: {r:?}");
    let body = r.structured_content.clone().expect("structured error");
    assert_eq!(body["ok"], false, "{body}");
    let e = body["error"].clone();
    assert_eq!(e["category"], category, "{e}");
    assert!(e["code"].is_string() && e["message"].is_string(), "{e}");
    assert!(e["retryable"].is_boolean(), "{e}");
    assert_eq!(env.state(), before, "{tool} changed the store");
    e
}

const TOOLS: &[&str] = &[
    "brief",
    "conflicts_list",
    "log",
    "memory_list",
    "memory_propose",
    "memory_queue",
    "memory_show",
    "milestone",
    "run_boot",
    "run_list",
    "search",
    "state_get",
    "ws_patch",
    "ws_show",
];

async fn tool_names(c: &Client) -> Vec<String> {
    let mut names: Vec<String> = c
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_the_tools_with_schemas_and_instructions() {
    let env = Env::store();
    let c = connect(&env, &[]).await;
    let info = c.peer_info().expect("server info");
    assert_eq!(
        info.server_info.as_ref().expect("server info").name,
        "cairn"
    );
    let instructions = info.instructions.clone().expect("instructions");
    let first: String = instructions.chars().take(512).collect();
    let para = first.split("\n\n").next().unwrap();
    assert!(
        first.contains("\n\n") && para.ends_with('.'),
        "the first 512 characters hold a whole paragraph: {first}"
    );
    assert!(para.contains("run_boot") && para.contains("retryable"));

    assert_eq!(tool_names(&c).await, TOOLS);
    let tools = c.list_all_tools().await.unwrap();
    for t in &tools {
        assert_eq!(t.input_schema["type"], "object", "{}", t.name);
        assert!(
            t.description.as_deref().is_some_and(|d| d.len() > 20),
            "{} has a description",
            t.name
        );
    }
    let schema = |name: &str| {
        tools
            .iter()
            .find(|t| t.name == name)
            .unwrap()
            .input_schema
            .clone()
    };
    // Generated from the api request types the CLI and HTTP parse.
    let s = schema("ws_patch");
    for f in ["run", "expected_seq", "patch"] {
        assert!(s["properties"].get(f).is_some(), "ws_patch.{f}: {s:?}");
    }
    let s = schema("search");
    for f in ["query", "scope", "type", "top_k", "syntax"] {
        assert!(s["properties"].get(f).is_some(), "search.{f}: {s:?}");
    }
    assert!(schema("run_boot")["required"]
        .as_array()
        .unwrap()
        .contains(&json!("objective")));
    c.cancel().await.unwrap();

    // Review tools only when asked for.
    let c = connect(&env, &["--allow-review-tools"]).await;
    let mut with_review: Vec<&str> = TOOLS.to_vec();
    with_review.extend(["memory_promote", "memory_reject"]);
    with_review.sort();
    assert_eq!(tool_names(&c).await, with_review);
    c.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_session_boots_patches_proposes_searches_and_reads_typed_errors() {
    let env = Env::store();
    let c = connect(&env, &[]).await;

    // Boot a run.
    let boot = ok(
        &c,
        "run_boot",
        json!({"objective": "Make the parser handle nested blocks",
               "acceptance_criteria": ["nested blocks parse"]}),
    )
    .await;
    let run = boot["run_id"].as_str().unwrap().to_string();
    assert_eq!(boot["working_set"]["_update_seq"], 0);
    assert_eq!(boot["event"]["event_type"], "RUN_BOOTED");
    let listed = ok(&c, "run_list", json!({})).await;
    assert_eq!(listed["runs"][0]["run_id"], run.as_str());

    // Patch the working set under the optimistic lock.
    let patch = json!({"_schema_version": "2.1",
        "set": {"next_action": "Write the recursive descent for blocks."}});
    let p = ok(
        &c,
        "ws_patch",
        json!({"run": run, "expected_seq": 0, "patch": patch}),
    )
    .await;
    assert_eq!(p["seq"], 1);
    let ws = ok(&c, "ws_show", json!({"run": run})).await;
    assert_eq!(ws["_update_seq"], 1);
    assert_eq!(ws["next_action"], "Write the recursive descent for blocks.");

    // The same seq again is stale: CONFLICT, retryable, nothing written.
    let e = refused(
        &env,
        &c,
        "ws_patch",
        json!({"run": run, "expected_seq": 0, "patch": patch}),
        "CONFLICT",
    )
    .await;
    assert_eq!(e["code"], "STALE_SEQ");
    assert_eq!(e["retryable"], true);
    assert_eq!(e["details"]["current_seq"], 1);
    assert_eq!(e["details"]["expected_seq"], 0);

    // Propose memory: a candidate in the review queue.
    let mcr = json!({"_schema_version": "2.1", "op": "add", "type": "decision",
        "scope": "global", "confidence": 0.8,
        "content": "The parser uses recursive descent for nested blocks; no parser generator."});
    let prop = ok(&c, "memory_propose", json!({"run": run, "mcrs": [mcr]})).await;
    assert!(
        prop["batch_id"].as_str().unwrap().starts_with("batch_"),
        "{prop}"
    );
    assert_eq!(prop["event"]["event_type"], "MEMORY_PROPOSED");
    let queue = ok(&c, "memory_queue", json!({})).await;
    assert_eq!(queue["count"], 1, "{queue}");
    let id = queue["items"][0]["id"].as_str().unwrap().to_string();
    let item = ok(&c, "memory_show", json!({"id": id})).await;
    assert_eq!(item["status"], "candidate");

    // Search takes natural language: quotes and colons are just text.
    let hits = ok(
        &c,
        "search",
        json!({"query": "how does the \"parser handle: nested blocks?", "status": "candidate"}),
    )
    .await;
    assert_eq!(hits["hits"][0]["id"], id.as_str(), "{hits}");
    // The same text as query syntax is a syntax error naming its position.
    let e = refused(
        &env,
        &c,
        "search",
        json!({"query": "how does the \"parser", "syntax": true}),
        "VALIDATION",
    )
    .await;
    assert!(e["message"].as_str().unwrap().contains("quote"), "{e}");

    // The brief holds the objective and the next action.
    let brief = ok(&c, "brief", json!({"run": run})).await;
    let md = brief["markdown"].as_str().unwrap_or_default();
    assert!(
        md.contains("Make the parser handle nested blocks"),
        "{brief}"
    );
    assert!(md.contains("recursive descent for blocks"), "{brief}");

    // The ledger has the session's events.
    let log = ok(&c, "log", json!({"run": run})).await;
    let types: Vec<&str> = log["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        ["RUN_BOOTED", "WS_UPDATE_APPLIED", "MEMORY_PROPOSED"],
        "{log}"
    );
    let conflicts = ok(&c, "conflicts_list", json!({})).await;
    assert_eq!(conflicts, json!({"conflicts": []}));

    // A milestone commits the batch: the decision becomes active memory.
    let batch = prop["batch_id"].as_str().unwrap();
    let m = ok(
        &c,
        "milestone",
        json!({"run": run, "reason": "parser design settled", "batches": [batch]}),
    )
    .await;
    assert_eq!(m["event"]["event_type"], "MILESTONE_CREATED");
    let hits = ok(&c, "search", json!({"query": "recursive descent parser"})).await;
    assert_eq!(hits["hits"][0]["id"], id.as_str(), "{hits}");

    // Promote and reject are not tools without --allow-review-tools.
    assert!(c
        .call_tool(
            CallToolRequestParams::new("memory_promote")
                .with_arguments(json!({"id": id}).as_object().unwrap().clone())
        )
        .await
        .is_err());
    c.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_typed_error_that_changes_nothing() {
    let (env, run) = Env::with_run();
    let c = connect(&env, &[]).await;
    let patch = json!({"_schema_version": "2.1", "set": {"next_action": "x"}});

    // Unknown run: NOT_FOUND naming it.
    let e = refused(
        &env,
        &c,
        "ws_patch",
        json!({"run": "run_nope", "expected_seq": 0, "patch": patch}),
        "NOT_FOUND",
    )
    .await;
    assert_eq!(e["code"], "RUN_NOT_FOUND");
    assert_eq!(e["retryable"], false);
    assert_eq!(e["details"]["run_id"], "run_nope");
    let e = refused(&env, &c, "brief", json!({"run": "run_nope"}), "NOT_FOUND").await;
    assert_eq!(e["code"], "RUN_NOT_FOUND");
    let mcr = json!({"_schema_version": "2.1", "op": "add", "type": "fact",
        "scope": "global", "content": "x"});
    refused(
        &env,
        &c,
        "memory_propose",
        json!({"run": "run_nope", "mcrs": [mcr]}),
        "NOT_FOUND",
    )
    .await;

    // Arguments that do not fit the request type: VALIDATION naming the field.
    let cases = [
        (
            "ws_patch",
            json!({"expected_seq": 0, "patch": patch}),
            "/run",
        ),
        (
            "ws_patch",
            json!({"run": run, "expected_seq": "zero", "patch": patch}),
            "/expected_seq",
        ),
        (
            "ws_patch",
            json!({"run": run, "patch": "not a patch"}),
            "/patch",
        ),
        ("search", json!({"query": "x", "top_k": "ten"}), "/top_k"),
        ("search", json!({"query": "x", "colour": "red"}), "/colour"),
        ("run_boot", json!({}), "/objective"),
        ("log", json!({"type": "NO_SUCH_EVENT"}), "/type"),
        ("memory_propose", json!({"run": run, "mcrs": []}), ""),
    ];
    for (tool, args, pointer) in cases {
        let e = refused(&env, &c, tool, args.clone(), "VALIDATION").await;
        assert!(e["retryable"] == false, "{e}");
        if !pointer.is_empty() {
            assert_eq!(e["details"]["pointer"], pointer, "{tool} {args}: {e}");
        }
    }
    // A working-set patch the schema refuses (an unknown field in `set`).
    let e = refused(
        &env,
        &c,
        "ws_patch",
        json!({"run": run, "expected_seq": 0,
               "patch": {"_schema_version": "2.1", "set": {"colour": "red"}}}),
        "VALIDATION",
    )
    .await;
    assert!(e["message"].as_str().unwrap().contains("colour"), "{e}");
    // The server is still serving after all that.
    let ws = ok(&c, "ws_show", json!({"run": run})).await;
    assert_eq!(ws["_update_seq"], 0);
    c.cancel().await.unwrap();
}

#[test]
fn a_store_that_is_not_one_fails_before_serving() {
    let env = Env::new();
    std::fs::create_dir_all(env.root()).unwrap();
    let out = common::cli::cairn(env.home.path())
        .arg("--store")
        .arg(env.root())
        .arg("mcp")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5), "NOT_FOUND's exit code");
    assert!(
        out.stdout.is_empty(),
        "stdout is the protocol: nothing on it"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a cairn store"), "{err}");
}

/// Calls `tool` until it succeeds, retrying only errors marked retryable
/// (a busy store lock), as an agent is told to.
async fn ok_retrying(c: &Client, tool: &str, args: Value) -> Value {
    for _ in 0..50 {
        let r = call(c, tool, args.clone()).await;
        if r.is_error == Some(false) {
            return r.structured_content.unwrap();
        }
        let e = r.structured_content.unwrap()["error"].clone();
        assert_eq!(e["retryable"], true, "{tool}: {e}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("{tool} kept failing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_server_processes_on_one_store_lose_nothing() {
    const SERVERS: usize = 4;
    const PATCHES: u64 = 5;
    let env = std::sync::Arc::new(Env::store());
    let mut tasks = Vec::new();
    for w in 0..SERVERS {
        let env = env.clone();
        tasks.push(tokio::spawn(async move {
            let c = connect(&env, &[]).await;
            let boot =
                ok_retrying(&c, "run_boot", json!({"objective": format!("worker {w}")})).await;
            let run = boot["run_id"].as_str().unwrap().to_string();
            for seq in 0..PATCHES {
                ok_retrying(
                    &c,
                    "ws_patch",
                    json!({"run": run, "expected_seq": seq, "patch": {"_schema_version": "2.1",
                        "set": {"next_action": format!("worker {w} step {seq}")}}}),
                )
                .await;
            }
            let mcr = json!({"_schema_version": "2.1", "op": "add", "type": "fact",
                "scope": "global", "content": format!("worker {w} learned something")});
            ok_retrying(&c, "memory_propose", json!({"run": run, "mcrs": [mcr]})).await;
            c.cancel().await.unwrap();
            run
        }));
    }
    let mut runs = Vec::new();
    for t in tasks {
        runs.push(t.await.unwrap());
    }
    // Every write is in the ledger and the store is sound.
    let events = env.ok(&["log"])["events"].as_array().unwrap().clone();
    let count = |t: &str| events.iter().filter(|e| e["event_type"] == t).count();
    assert_eq!(count("RUN_BOOTED"), SERVERS);
    assert_eq!(count("WS_UPDATE_APPLIED"), SERVERS * PATCHES as usize);
    assert_eq!(count("MEMORY_PROPOSED"), SERVERS);
    for (w, run) in runs.iter().enumerate() {
        let ws = env.ok(&["ws", "show", run]);
        assert_eq!(ws["_update_seq"], PATCHES);
        assert_eq!(
            ws["next_action"],
            format!("worker {w} step {}", PATCHES - 1)
        );
    }
    assert_eq!(env.ok(&["memory", "queue"])["count"], SERVERS);
    env.ok(&["fsck"]);
}
