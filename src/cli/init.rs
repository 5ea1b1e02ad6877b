//! `cairn init`.

use std::path::PathBuf;

use cairn::Store;
use serde_json::json;

use super::{CmdResult, Ctx, Output};

/// Make a new store (runs `git init` when the folder is not a repository yet).
#[derive(clap::Args, Debug)]
pub struct InitArgs {
    /// Where to make the store (default: the current folder).
    path: Option<PathBuf>,
    /// Make a store with no work tree (for agent fleets and servers).
    #[arg(long)]
    bare: bool,
}

pub fn cmd_init(ctx: &Ctx, args: InitArgs) -> CmdResult {
    let path = args
        .path
        .or_else(|| ctx.store.clone())
        .unwrap_or_else(|| PathBuf::from("."));
    let store = Store::init(&path, args.bare, ctx.options.clone())?;
    let tip = store.require_tip()?;
    let shown = store
        .workdir()
        .unwrap_or_else(|| store.git_dir())
        .display()
        .to_string();
    Ok(Output::new(
        format!(
            "Initialized {}cairn store in {shown} (branch {}, commit {})",
            if args.bare { "bare " } else { "" },
            store.branch().trim_start_matches("refs/heads/"),
            &tip.to_string()[..12]
        ),
        json!({"path": shown, "bare": args.bare, "branch": store.branch(), "commit": tip.to_string()}),
    ))
}
