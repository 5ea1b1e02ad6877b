//! `cairn mcp`: the library as Model Context Protocol tools, served over
//! stdio on the official Rust SDK (`rmcp`).
//!
//! Each tool is one [`crate::api`] function: its input schema is generated
//! (schemars) from the same request type the CLI and the HTTP API parse, its
//! arguments are read with [`api::parse_request`] (so a bad argument is a
//! VALIDATION error whose pointer names the field), and its result is the
//! report the CLI prints as the `data` of its `--json` envelope, carried as
//! the tool result's `structuredContent` (and as JSON text; a report that is
//! not an object, the conflict list, is wrapped in one, as MCP requires). A failure is a
//! tool result with `isError: true` whose `structuredContent` is cairn's error
//! envelope, `{"ok": false, "error": {code, category, message, retryable,
//! details}}`, the one the HTTP API answers, so an agent can decide by
//! `retryable` whether to try again.
//!
//! Invariants: every tool call runs the library on a blocking thread with a
//! [`Store`] of its own (taken from a small pool, as `cairn serve` does), so
//! writes go through the one transaction path and the store lock serializes
//! them with every other process: any number of `cairn mcp` processes may
//! share a store. The server never starts a watcher and never writes to
//! stdout itself (stdout is the protocol). Memory review (promote, reject)
//! stays a human decision: those tools exist only when the server was
//! started with `allow_review_tools`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::schema_for_input;
use rmcp::model::{CallToolResult, Implementation, JsonObject, ServerCapabilities, ServerConfig};
use rmcp::{tool, tool_handler, tool_router, ServerHandler, ServiceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

use crate::api;
use crate::error::{Error, Result};
use crate::{Store, StoreOptions};

/// What the server tells a client about itself (the `instructions` of its
/// initialize result). The first paragraph (under 512 characters: clients
/// may cut there) stands alone; the rest adds detail.
pub const INSTRUCTIONS: &str = "\
cairn is this project's agent memory: runs (an objective and a working set), long-term memory items and a ledger, each change one git commit. Find the run with run_list or start one with run_boot; read context with brief, ws_show and search (plain words). Update the working set with ws_patch, expected_seq = the _update_seq you read. Propose durable learnings with memory_propose. On an error result, retry only if error.retryable is true.

Details. search takes any text (set `syntax` for \"exact phrases\" and field:value). ws_patch takes the working-set patch (`set`, `append`, `remove` ...); a stale expected_seq is refused with category CONFLICT, code STALE_SEQ: call ws_show and patch again. memory_propose stages memory change requests (op add/update/supersede/delete) as a batch of a run; they stay candidates (memory_queue) until a person promotes them. milestone records an episode when a stage of the work is done and can commit proposed batches. log reads the ledger; state_get a project's trusted state; conflicts_list the sync conflicts kept as records. Results are the `data` of `cairn --json`; errors are cairn's envelope {ok: false, error: {code, category, message, retryable, details}}.";

/// How to serve a store over MCP.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Clock, actor and lock settings for every store the server opens.
    pub options: StoreOptions,
    /// Expose `memory_promote` and `memory_reject` (off by default: review
    /// is a person's decision).
    pub allow_review_tools: bool,
}

/// Stores for blocking work: one per concurrent call, kept for reuse (a
/// `Store` holds a git repository and is not shared between threads).
struct Stores {
    path: PathBuf,
    options: StoreOptions,
    idle: Mutex<Vec<Store>>,
}

/// Stores kept idle between calls.
const POOL_KEEP: usize = 4;

impl Stores {
    fn take(&self) -> Result<Store> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match idle {
            Some(s) => Ok(s),
            None => Store::discover(&self.path, self.options.clone()),
        }
    }

    fn give_back(&self, store: Store) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < POOL_KEEP {
            idle.push(store);
        }
    }
}

/// The MCP server: the store pool and the tools.
#[derive(Clone)]
pub struct CairnMcp {
    stores: Arc<Stores>,
    tool_router: ToolRouter<Self>,
}

impl std::fmt::Debug for CairnMcp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CairnMcp")
            .field("store", &self.stores.path)
            .field("tools", &self.tool_names())
            .finish()
    }
}

/// The input schema of a tool taking request type `T`.
fn input<T: schemars::JsonSchema + 'static>() -> Arc<JsonObject> {
    schema_for_input::<T>().unwrap_or_else(|e| {
        // A request type whose schema is not an object is a bug in api.
        panic!("{}: {e}", std::any::type_name::<T>())
    })
}

/// The tool result of a library error: `isError` and cairn's error envelope
/// (flag labels renamed to field names, as the HTTP API does).
pub fn error_result(e: Error) -> CallToolResult {
    CallToolResult::structured_error(crate::serve::ApiError::from(e).envelope())
}

/// An INTERNAL error result for a failure outside the library (a panic in a
/// tool, a report that does not serialize).
fn internal_result(message: String) -> CallToolResult {
    CallToolResult::structured_error(json!({"ok": false, "error": {
        "code": "INTERNAL", "category": "INTERNAL", "message": message,
        "retryable": false, "details": {},
    }}))
}

impl CairnMcp {
    /// The server for an open store (opened by the caller, so that a path
    /// that is not a store fails before serving) and its tool set. More
    /// stores on the same repository are opened as concurrent calls need them.
    pub fn new(store: Store, config: Config) -> CairnMcp {
        // The repository's work tree even for a store on a dedicated branch
        // of a code repository (discovery finds that branch again).
        let path = store
            .repo_workdir()
            .map(|p| p.to_path_buf())
            .unwrap_or_else(|| store.git_dir().to_path_buf());
        let mut tool_router = Self::tool_router();
        if config.allow_review_tools {
            tool_router += Self::review_router();
        }
        CairnMcp {
            stores: Arc::new(Stores {
                path,
                options: config.options,
                idle: Mutex::new(vec![store]),
            }),
            tool_router,
        }
    }

    /// The names of the tools this server offers, sorted.
    pub fn tool_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .tool_router
            .list_all()
            .into_iter()
            .map(|t| t.name.into_owned())
            .collect();
        names.sort();
        names
    }

    /// Serves MCP over stdin and stdout until the client closes them.
    pub async fn serve_stdio(self) -> Result<()> {
        let io_error = |what: &'static str, e: String| Error::Io {
            op: what,
            path: PathBuf::from("stdio"),
            source: std::io::Error::other(e),
        };
        let running = self
            .serve(rmcp::transport::stdio())
            .await
            .map_err(|e| io_error("start MCP over", e.to_string()))?;
        running
            .waiting()
            .await
            .map_err(|e| io_error("serve MCP over", e.to_string()))?;
        Ok(())
    }

    /// Parses `args` as a `T`, runs `f` with a store on a blocking thread,
    /// and makes the tool result of its report or its error.
    async fn run_tool<T, R, F>(&self, args: JsonObject, f: F) -> CallToolResult
    where
        T: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        F: FnOnce(&Store, T) -> Result<R> + Send + 'static,
    {
        let req = match api::parse_request::<T>(Value::Object(args)) {
            Ok(r) => r,
            Err(e) => return error_result(e),
        };
        let stores = self.stores.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let store = stores.take()?;
            let out = f(&store, req);
            stores.give_back(store);
            out
        })
        .await;
        match joined {
            Ok(Ok(report)) => match serde_json::to_value(&report) {
                Ok(v) if v.is_object() => CallToolResult::structured(v),
                Ok(v) => CallToolResult::structured(json!({ "result": v })),
                Err(e) => internal_result(format!("the report does not serialize: {e}")),
            },
            Ok(Err(e)) => error_result(e),
            Err(e) => internal_result(format!("the tool failed: {e}")),
        }
    }
}

fn no_progress(_: u64, _: u64) {}

#[tool_router]
impl CairnMcp {
    /// Search memory items (and captured interactions with type
    /// `interaction`): BM25 ranking with scope weights, recency and
    /// confidence. `query` is plain words by default (any text is
    /// accepted); with `syntax: true` it is the query syntax ("exact
    /// phrases", field:value). Active, unexpired items unless `status` says
    /// otherwise.
    #[tool(input_schema = input::<api::SearchRequest>(), annotations(read_only_hint = true, open_world_hint = false))]
    async fn search(&self, args: JsonObject) -> CallToolResult {
        self.run_tool(args, |store, req: api::SearchRequest| {
            api::search(store, &req, &no_progress)
        })
        .await
    }

    /// A run's context brief, fitted to a token budget: objective,
    /// acceptance criteria, constraints, working context and the memory
    /// relevant to `query` (default: the objective and next action), as
    /// markdown with its token usage and what was dropped.
    #[tool(input_schema = input::<api::BriefRequest>(), annotations(read_only_hint = true, open_world_hint = false))]
    async fn brief(&self, args: JsonObject) -> CallToolResult {
        self.run_tool(args, |store, req: api::BriefRequest| {
            api::brief(store, &req)
        })
        .await
    }

    /// The runs in the store (id, objective, status, seq), sorted by id.
    #[tool(input_schema = input::<api::RunListRequest>(), annotations(read_only_hint = true, open_world_hint = false))]
    async fn run_list(&self, args: JsonObject) -> CallToolResult {
        self.run_tool(args, |store, _: api::RunListRequest| api::run_list(store))
            .await
    }

    /// A run's working set (objective, criteria, constraints, working
    /// context, next action, `_update_seq`), now or at an earlier seq or
    /// commit (`at`).
    #[tool(input_schema = input::<api::WsShowRequest>(), annotations(read_only_hint = true, open_world_hint = false))]
    async fn ws_show(&self, args: JsonObject) -> CallToolResult {
        self.run_tool(args, |store, req: api::WsShowRequest| {
            api::ws_show(store, &req)
        })
        .await
    }

    /// Patch a run's working set under the optimistic lock: `patch` is the
    /// working-set patch (`set`, `append`, `remove` ...) and `expected_seq`
    /// the `_update_seq` it was made against. A stale seq is refused
    /// (CONFLICT, STALE_SEQ, retryable): call ws_show and patch again.
    /// One commit per patch.
    #[tool(input_schema = input::<api::WsPatchRequest>(), annotations(read_only_hint = false, destructive_hint = false, open_world_hint = false))]
    async fn ws_patch(&self, args: JsonObject) -> CallToolResult {
        self.run_tool(args, |store, req: api::WsPatchRequest| {
            api::ws_patch(store, &req, None)
        })
        .await
    }

    /// Start a run: its objective (required), acceptance criteria,
    /// constraints and project. Returns the run id and its working set at
    /// seq 0. One commit (RUN_BOOTED).
    #[tool(input_schema = input::<api::RunBootRequest>(), annotations(read_only_hint = false, destructive_hint = false, open_world_hint = false))]
    async fn run_boot(&self, args: JsonObject) -> CallToolResult {
        self.run_tool(args, |store, req: api::RunBootRequest| {
            api::run_boot(store, &req.to_boot()?, None)
        })
        .await
    }

    /// Ledger events (one per commit), oldest first, filtered by run,
    /// event type, actor or time; `limit` keeps the newest.
    #[tool(input_schema = input::<api::LogRequest>(), annotations(read_only_hint = true, open_world_hint = false))]
    async fn log(&self, args: JsonObject) -> CallToolResult {
        self.run_tool(args, |store, req: api::LogRequest| {
            api::log(store, &req, &no_progress)
        })
        .await
    }

    /// Propose memory: stage memory change requests (`mcrs`: op add with
    /// type, scope and content, or update/supersede/delete with target_id)
    /// as one batch of a run. They become candidates, not trusted memory,
    /// until a person reviews them (or a milestone commits the batch).
    #[tool(input_schema = input::<api::MemoryProposeRequest>(), annotations(read_only_hint = false, destructive_hint = false, open_world_hint = false))]
    async fn memory_propose(&self, args: JsonObject) -> CallToolResult {
        self.run_tool(args, |store, req: api::MemoryProposeRequest| {
            api::memory_propose(store, &req, None)
        })
        .await
    }

    /// List memory items by scope, type, status, project or tag, each with
    /// its status now (`effective_status`).
    #[tool(input_schema = input::<api::MemoryListRequest>(), annotations(read_only_hint = true, open_world_hint = false))]
    async fn memory_list(&self, args: JsonObject) -> CallToolResult {
        self.run_tool(args, |store, req: api::MemoryListRequest| {
            api::memory_list(store, &req)
        })
        .await
    }

    /// One memory item by id.
    #[tool(input_schema = input::<api::MemoryShowRequest>(), annotations(read_only_hint = true, open_world_hint = false))]
    async fn memory_show(&self, args: JsonObject) -> CallToolResult {
        self.run_tool(args, |store, req: api::MemoryShowRequest| {
            api::memory_show(store, &req)
        })
        .await
    }

    /// The review queue: candidate memory items awaiting a person's
    /// promotion or rejection.
    #[tool(input_schema = input::<api::MemoryListRequest>(), annotations(read_only_hint = true, open_world_hint = false))]
    async fn memory_queue(&self, args: JsonObject) -> CallToolResult {
        self.run_tool(args, |store, req: api::MemoryListRequest| {
            api::memory_queue(store, &req)
        })
        .await
    }

    /// Take a milestone of a run when a stage of the work is done: writes
    /// the episode (`reason`, `next_entry_point`), commits the proposed
    /// `batches` named, and tags the commit.
    #[tool(input_schema = input::<api::MilestoneRequest>(), annotations(read_only_hint = false, destructive_hint = false, open_world_hint = false))]
    async fn milestone(&self, args: JsonObject) -> CallToolResult {
        self.run_tool(args, |store, req: api::MilestoneRequest| {
            api::milestone(store, &req, None)
        })
        .await
    }

    /// A project's active trusted state (category, key, value), optionally
    /// of one category.
    #[tool(input_schema = input::<api::StateGetRequest>(), annotations(read_only_hint = true, open_world_hint = false))]
    async fn state_get(&self, args: JsonObject) -> CallToolResult {
        self.run_tool(args, |store, req: api::StateGetRequest| {
            api::state_get(store, &req)
        })
        .await
    }

    /// The merge conflicts `cairn sync` kept as records (the open ones, or
    /// all with `all: true`), as `{"conflicts": [...]}`.
    #[tool(input_schema = input::<api::ConflictsListRequest>(), annotations(read_only_hint = true, open_world_hint = false))]
    async fn conflicts_list(&self, args: JsonObject) -> CallToolResult {
        self.run_tool(args, |store, req: api::ConflictsListRequest| {
            Ok(json!({ "conflicts": api::conflicts_list(store, &req)? }))
        })
        .await
    }
}

/// The review tools, offered only with `allow_review_tools`.
#[tool_router(router = review_router)]
impl CairnMcp {
    /// Promote a candidate memory item to active memory (a review
    /// decision; `reason` is recorded in the ledger).
    #[tool(input_schema = input::<api::MemoryPromoteRequest>(), annotations(read_only_hint = false, destructive_hint = false, open_world_hint = false))]
    async fn memory_promote(&self, args: JsonObject) -> CallToolResult {
        self.run_tool(args, |store, req: api::MemoryPromoteRequest| {
            api::memory_promote(store, &req, None)
        })
        .await
    }

    /// Reject a candidate memory item (it becomes invalid; history keeps
    /// it; `reason` is required and recorded in the ledger).
    #[tool(input_schema = input::<api::MemoryRejectRequest>(), annotations(read_only_hint = false, destructive_hint = true, open_world_hint = false))]
    async fn memory_reject(&self, args: JsonObject) -> CallToolResult {
        self.run_tool(args, |store, req: api::MemoryRejectRequest| {
            api::memory_reject(store, &req, None)
        })
        .await
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for CairnMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("cairn", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_512_characters_of_the_instructions_stand_alone() {
        let first = INSTRUCTIONS.split("\n\n").next().unwrap();
        assert!(first.chars().count() <= 512, "{}", first.chars().count());
        assert!(first.ends_with('.'), "{first}");
        for tool in ["run_boot", "brief", "search", "ws_patch", "memory_propose"] {
            assert!(first.contains(tool), "{tool} missing from {first}");
        }
        assert!(first.contains("retryable"));
    }

    #[test]
    fn input_schemas_are_objects_naming_the_request_fields() {
        let s = input::<api::WsPatchRequest>();
        assert_eq!(s["type"], "object");
        assert!(s["properties"]["expected_seq"].is_object(), "{s:?}");
        let req = s["required"].as_array().unwrap();
        assert!(req.contains(&json!("run")) && req.contains(&json!("patch")));
        let s = input::<api::SearchRequest>();
        assert!(s["properties"]["syntax"].is_object(), "{s:?}");
        assert!(
            s.get("required")
                .is_none_or(|r| r.as_array().unwrap().is_empty()),
            "search needs no field: {s:?}"
        );
    }
}
