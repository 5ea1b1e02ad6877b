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
    /// Do not install the git hooks (`cairn hooks install` adds them later).
    #[arg(long)]
    no_hooks: bool,
}

pub fn cmd_init(ctx: &Ctx, args: InitArgs) -> CmdResult {
    let path = args
        .path
        .or_else(|| ctx.store.clone())
        .unwrap_or_else(|| PathBuf::from("."));
    let store = Store::init(&path, args.bare, ctx.options.clone())?;
    let tip = store.require_tip()?;
    let hooks = if args.bare || args.no_hooks {
        None
    } else {
        Some(cairn::hooks::install(&store, &super::hooks::own_path()?)?)
    };
    let shown = store
        .workdir()
        .unwrap_or_else(|| store.git_dir())
        .display()
        .to_string();
    let hooks_note = match &hooks {
        Some(h) => format!(
            "; git hooks installed in {}",
            h.first()
                .and_then(|s| s.path.parent())
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        ),
        None => String::new(),
    };
    Ok(Output::new(
        format!(
            "Initialized {}cairn store in {shown} (branch {}, commit {}){hooks_note}",
            if args.bare { "bare " } else { "" },
            store.branch().trim_start_matches("refs/heads/"),
            &tip.to_string()[..12]
        ),
        json!({"path": shown, "bare": args.bare, "branch": store.branch(), "commit": tip.to_string(), "hooks": hooks}),
    ))
}
