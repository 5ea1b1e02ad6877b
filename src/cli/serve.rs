//! `cairn serve`: the store over HTTP (the seed's API, `/v1`, events, UI).

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use cairn::serve::{self, StartError};
use cairn::Error;

use super::{CliError, CmdResult, Ctx, Output};

/// Serve the store over HTTP: the AoS Context v2.1 seed's routes, cairn's
/// `/v1` API, the ledger as Server-Sent Events (`/v1/events`), the OpenAPI
/// document (`/openapi.json`) and the web UI (`/`). Loopback only unless a
/// token is given; docs/HTTP.md describes every route.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Where to listen (a non-loopback address needs a token).
    #[arg(long, default_value = "127.0.0.1:8000")]
    addr: SocketAddr,
    /// A file whose first line is the bearer token clients must send (else CAIRN_TOKEN).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Accept this name in the Host header (besides localhost and IP addresses; repeatable).
    #[arg(long = "allow-host", value_name = "NAME")]
    allow_hosts: Vec<String>,
    /// Send CORS headers to this origin, e.g. http://localhost:3000 (repeatable; none by default).
    #[arg(long = "cors-origin", value_name = "ORIGIN")]
    cors_origins: Vec<String>,
    /// Where resume packs are written and read (default .cairn/packs in the store).
    #[arg(long, value_name = "DIR")]
    packs_dir: Option<PathBuf>,
}

fn token(a: &ServeArgs) -> Result<Option<String>, CliError> {
    if let Some(f) = &a.token_file {
        let text = std::fs::read_to_string(f).map_err(|e| Error::Io {
            op: "read the token file",
            path: f.clone(),
            source: e,
        })?;
        let first = text.lines().next().unwrap_or("").trim().to_string();
        if first.is_empty() {
            return Err(CliError::Usage(format!(
                "the token file {} is empty",
                f.display()
            )));
        }
        return Ok(Some(first));
    }
    Ok(std::env::var("CAIRN_TOKEN")
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty()))
}

pub fn cmd_serve(ctx: &Ctx, a: ServeArgs) -> CmdResult {
    let store = match (&ctx.store, std::env::var_os("CAIRN_STORE")) {
        (Some(p), _) => p.clone(),
        (None, Some(p)) if !p.is_empty() => PathBuf::from(p),
        _ => std::env::current_dir().map_err(|e| Error::Io {
            op: "read current folder",
            path: PathBuf::from("."),
            source: e,
        })?,
    };
    let config = serve::Config {
        store,
        options: ctx.options.clone(),
        addr: a.addr,
        token: token(&a)?,
        allowed_hosts: a.allow_hosts.clone(),
        cors_origins: a.cors_origins.clone(),
        packs_dir: a.packs_dir.clone(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("cairn-serve")
        .build()
        .map_err(|e| Error::Io {
            op: "start the async runtime for",
            path: PathBuf::from("cairn serve"),
            source: e,
        })?;
    rt.block_on(async move {
        let bound = match serve::bind(config).await {
            Ok(b) => b,
            Err(StartError::Store(e)) => return Err(CliError::Lib(e)),
            Err(StartError::Bind { addr, source }) => {
                return Err(CliError::Lib(Error::Io {
                    op: "listen on",
                    path: PathBuf::from(addr.to_string()),
                    source,
                }))
            }
            Err(e) => return Err(CliError::Usage(e.to_string())),
        };
        let addr = bound.local_addr().map_err(|e| Error::Io {
            op: "read the bound address of",
            path: PathBuf::from("cairn serve"),
            source: e,
        })?;
        {
            // The first line says where to connect (tests read the port from it).
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "cairn serve: listening on http://{addr}");
            let _ = out.flush();
        }
        bound.serve(shutdown()).await.map_err(|e| Error::Io {
            op: "serve on",
            path: PathBuf::from(addr.to_string()),
            source: e,
        })?;
        Ok(Output::new(
            String::new(),
            serde_json::json!({"stopped": true}),
        ))
    })
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
