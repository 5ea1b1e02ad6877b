//! `cairn serve`: the store over HTTP (axum on tokio), a thin layer over the
//! library like the CLI.
//!
//! Every handler runs the same library function as the CLI command it
//! mirrors, on a blocking thread with a [`Store`] taken from a small pool
//! (a `Store` holds a git repository and is not shared between threads);
//! writes therefore go through the one transaction path, the store lock
//! serializing them with every other process. Invariants: a request is
//! checked (Host, token, body size, ids, query parameters) before it
//! touches the store; an error answers the `--json` error envelope with a
//! status by category and writes nothing; the server serves no files from
//! disk (the UI is embedded, resume packs stay in the packs folder).
//! Routes: the seed's (`seed`), cairn's `/v1` (`v1`), the event stream
//! (`events`), the OpenAPI document (`openapi`) and the UI (`ui`);
//! docs/HTTP.md describes them all.

pub mod error;
pub mod events;
pub mod extract;
pub mod openapi;
pub mod security;
pub mod seed;
pub mod ui;
pub mod v1;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Router;

pub use error::{ApiError, ApiResult};

use crate::{Error, Result, Store, StoreOptions};

/// How to serve a store.
#[derive(Debug, Clone)]
pub struct Config {
    /// The store (a path to a store or inside one; discovered like the CLI does).
    pub store: PathBuf,
    /// Clock, actor and lock settings for every store the server opens.
    pub options: StoreOptions,
    /// Where to listen.
    pub addr: SocketAddr,
    /// The bearer token; required when `addr` is not loopback.
    pub token: Option<String>,
    /// Host names accepted in the `Host` header besides loopback names and IP literals.
    pub allowed_hosts: Vec<String>,
    /// Origins that get CORS headers (none by default).
    pub cors_origins: Vec<String>,
    /// Where resume packs are written and read (default `.cairn/packs` in the store).
    pub packs_dir: Option<PathBuf>,
}

/// Why a server did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A non-loopback address without a token.
    #[error("refusing to listen on {addr} without a token: a non-loopback address needs --token-file FILE or CAIRN_TOKEN (or bind 127.0.0.1)")]
    TokenRequired {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// An empty token.
    #[error("the token is empty")]
    EmptyToken,
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] Error),
    /// The address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Stores for blocking work: one per concurrent request at most, kept for reuse.
pub struct StorePool {
    path: PathBuf,
    options: StoreOptions,
    idle: Mutex<Vec<Store>>,
}

/// Stores kept idle; more are opened under load and dropped after.
const POOL_KEEP: usize = 16;

impl StorePool {
    fn open(&self) -> Result<Store> {
        Store::discover(&self.path, self.options.clone())
    }

    fn take(&self) -> Result<Store> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match idle {
            Some(s) => Ok(s),
            None => self.open(),
        }
    }

    fn give_back(&self, store: Store) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < POOL_KEEP {
            idle.push(store);
        }
    }
}

/// What every handler shares.
pub struct Inner {
    pool: StorePool,
    token: Option<String>,
    allowed_hosts: Vec<String>,
    cors_origins: Vec<String>,
    packs_dir: PathBuf,
    body_limit: usize,
    tips: tokio::sync::watch::Receiver<Option<String>>,
}

/// The server's state: the store pool, the security settings, the tip watch.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

impl AppState {
    /// Runs `f` with a store on a blocking thread; library errors become
    /// API errors, a panic an INTERNAL error.
    pub async fn run<T, F>(&self, f: F) -> ApiResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> std::result::Result<T, ApiError> + Send + 'static,
    {
        let inner = self.inner.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let store = inner.pool.take()?;
            let out = f(&store);
            inner.pool.give_back(store);
            out
        })
        .await;
        match joined {
            Ok(r) => r,
            Err(e) => Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                "INTERNAL",
                format!("the request failed: {e}"),
            )),
        }
    }

    /// The folder resume packs are written to and read from.
    pub fn packs_dir(&self) -> &std::path::Path {
        &self.inner.packs_dir
    }

    /// A receiver of the branch tip (a commit id), updated within 25 ms of it moving.
    pub fn tips(&self) -> tokio::sync::watch::Receiver<Option<String>> {
        self.inner.tips.clone()
    }
}

/// A server bound to its address, ready to serve.
pub struct Bound {
    listener: tokio::net::TcpListener,
    router: Router,
    _watcher: events::TipWatcher,
}

impl Bound {
    /// The address actually bound (the port when 0 was asked for).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await
    }
}

/// Checks the configuration, opens the store and binds the address.
pub async fn bind(config: Config) -> std::result::Result<Bound, StartError> {
    let token = match &config.token {
        Some(t) if t.trim().is_empty() => return Err(StartError::EmptyToken),
        Some(t) => Some(t.trim().to_string()),
        None => None,
    };
    if token.is_none() && !config.addr.ip().is_loopback() {
        return Err(StartError::TokenRequired { addr: config.addr });
    }
    let store = Store::discover(&config.store, config.options.clone())?;
    let store_cfg = store.config()?;
    let packs_dir = config
        .packs_dir
        .clone()
        .unwrap_or_else(|| store.local_dir().join("packs"));
    std::fs::create_dir_all(&packs_dir).map_err(|e| Error::Io {
        op: "create",
        path: packs_dir.clone(),
        source: e,
    })?;
    let packs_dir = packs_dir.canonicalize().map_err(|e| Error::Io {
        op: "resolve",
        path: packs_dir.clone(),
        source: e,
    })?;
    let store_path = store
        .workdir()
        .map(|p| p.to_path_buf())
        .unwrap_or_else(|| store.git_dir().to_path_buf());
    let watcher = events::TipWatcher::start(&store)?;
    let pool = StorePool {
        path: store_path,
        options: config.options.clone(),
        idle: Mutex::new(vec![store]),
    };
    let state = AppState {
        inner: Arc::new(Inner {
            pool,
            token,
            allowed_hosts: config.allowed_hosts.clone(),
            cors_origins: config.cors_origins.clone(),
            packs_dir,
            body_limit: usize::try_from(store_cfg.limits.max_file_bytes).unwrap_or(usize::MAX),
            tips: watcher.receiver(),
        }),
    };
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.addr,
            source,
        })?;
    Ok(Bound {
        listener,
        router: router(state),
        _watcher: watcher,
    })
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "NOT_FOUND",
        "no such route (GET /openapi.json lists them)",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        "VALIDATION",
        "this route does not take that method (GET /openapi.json lists them)",
    )
}

/// Every route, with the security layers around them.
pub fn router(state: AppState) -> Router {
    let limit = state.inner.body_limit;
    let app = Router::new()
        .merge(seed::routes())
        .merge(v1::routes())
        .merge(events::routes())
        .merge(openapi::routes())
        .merge(ui::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            security::check_token,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            security::cors,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            security::check_host,
        ));
    app.with_state(state)
}

/// `{"ok": true, "data": ...}`: the CLI's `--json` success envelope.
pub fn envelope(data: serde_json::Value) -> axum::response::Response {
    axum::Json(serde_json::json!({"ok": true, "data": data})).into_response()
}
