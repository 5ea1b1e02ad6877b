//! `cairn mcp`: the MCP server over stdio (the library's tools, src/mcp.rs).
//!
//! stdout is the protocol: nothing else is printed there. A store that
//! cannot be opened is reported on stderr before the server starts, with
//! the category's exit code.

use std::path::PathBuf;
use std::time::Duration;

use cairn::mcp::{CairnMcp, Config};
use cairn::Error;

use super::Ctx;

/// Serve the store to an AI agent over MCP (stdio): search, brief, runs,
/// working sets, memory proposals, milestones, the ledger. `cairn setup`
/// registers this command as the client's `cairn` MCP server. Many
/// processes may serve one store (the store lock serializes their writes).
#[derive(clap::Args, Debug)]
pub struct McpArgs {
    /// Also expose memory_promote and memory_reject (memory review stays a
    /// person's decision by default).
    #[arg(long)]
    allow_review_tools: bool,
}

/// Runs the server; returns the exit code.
pub fn cmd_mcp(ctx: &Ctx, a: McpArgs) -> i32 {
    match serve(ctx, a) {
        Ok(()) => 0,
        Err(e) => {
            // Never on stdout: that is the client's protocol stream.
            eprintln!("error[{}]: {e}", e.category().as_str());
            if let Some(h) = e.hint() {
                eprintln!("hint: {h}");
            }
            e.category().exit_code()
        }
    }
}

fn serve(ctx: &Ctx, a: McpArgs) -> Result<(), Error> {
    let server = CairnMcp::new(
        ctx.open()?,
        Config {
            options: ctx.options.clone(),
            allow_review_tools: a.allow_review_tools,
        },
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Io {
            op: "start the async runtime for",
            path: PathBuf::from("cairn mcp"),
            source: e,
        })?;
    let out = rt.block_on(server.serve_stdio());
    // A read of stdin still pending cannot be cancelled: do not wait for it.
    rt.shutdown_timeout(Duration::from_millis(100));
    out
}
