//! The MCP benchmark (issue 17): a `search` tool call's round trip through
//! `cairn mcp`, the real binary spawned as a stdio server and driven by
//! rmcp's client, the way an agent's client calls it.
//!
//! Run with `cargo bench --bench mcp`. Settings (environment):
//! - `CAIRN_BENCH_OPS`: timed calls per row (default 200).
//! - `CAIRN_BENCH_SIZES`: store sizes (default `1000`; the 100k row
//!   with `CAIRN_BENCH_SIZES=1000,100000`, which takes minutes to populate
//!   and index).
//!
//! For each size: a work-tree store with N active memory items (one
//! commit), the search index built before the server starts, one server
//! process. Rows (milliseconds from sending the request to holding the
//! parsed result):
//! - `search-N (first call)`: the first call of the session (the server's
//!   store and index opened);
//! - `search-N`: natural-language queries, each a different sentence
//!   (top 10 hits; every call must return hits).

mod common;

use std::process::Stdio;
use std::time::Instant;

use cairn::search;
use common::{num, populate_memory, table_header, table_row};
use rmcp::model::CallToolRequestParams;
use rmcp::transport::TokioChildProcess;
use rmcp::ServiceExt;
use serde_json::json;

const EXE: &str = env!("CARGO_BIN_EXE_cairn");

async fn size_rows(n: usize, ops: usize) {
    let tmp = tempfile::TempDir::new().expect("tempdir");
    let root = tmp.path().join("store");
    let store = populate_memory(&root, n);
    let t = Instant::now();
    search::status(&store, &|_, _| {}).expect("index");
    eprintln!("indexed in {:.1} s", t.elapsed().as_secs_f64());
    drop(store);

    let mut cmd = tokio::process::Command::new(EXE);
    cmd.arg("--store")
        .arg(&root)
        .arg("mcp")
        .env("HOME", tmp.path())
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1");
    let (transport, _) = TokioChildProcess::builder(cmd)
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn cairn mcp");
    let client = ().serve(transport).await.expect("initialize");

    let search = |i: usize| {
        let args = json!({"query": format!(
            "how does grammar rule {} handle nested blocks in parser note {}?",
            i % 97,
            i * 7 % n.max(1)
        )});
        CallToolRequestParams::new("search").with_arguments(args.as_object().unwrap().clone())
    };
    let timed = |i: usize| {
        let client = &client;
        async move {
            let t = Instant::now();
            let r = client.call_tool(search(i)).await.expect("call");
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            assert_eq!(r.is_error, Some(false), "{r:?}");
            let hits = r.structured_content.expect("structured")["hits"]
                .as_array()
                .map_or(0, Vec::len);
            assert!(hits > 0, "every query finds something");
            ms
        }
    };
    let first = timed(ops + 1).await;
    table_row(&format!("search-{n} (first call)"), vec![first], 1);
    let mut ms = Vec::with_capacity(ops);
    for i in 0..ops {
        ms.push(timed(i).await);
    }
    table_row(&format!("search-{n}"), ms, 2);
    client.cancel().await.expect("close");
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let ops = num("CAIRN_BENCH_OPS", 200);
    let sizes = std::env::var("CAIRN_BENCH_SIZES").unwrap_or_else(|_| "1000".into());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    table_header();
    for s in sizes.split(',').filter(|s| !s.trim().is_empty()) {
        let n: usize = s.trim().parse().expect("CAIRN_BENCH_SIZES holds numbers");
        rt.block_on(size_rows(n, ops));
    }
}
