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
    /// Keep the store on this branch of the git repository around PATH (a
    /// code repository), beside the code and never in its work tree or
    /// index; every command run inside the repository finds it. Attaches to
    /// the store when the branch (or a remote's branch of that name)
    /// already holds one.
    #[arg(long, value_name = "BRANCH", conflicts_with = "bare")]
    branch: Option<String>,
}

pub fn cmd_init(ctx: &Ctx, args: InitArgs) -> CmdResult {
    let path = args
        .path
        .or_else(|| ctx.store.clone())
        .unwrap_or_else(|| PathBuf::from("."));
    if let Some(branch) = &args.branch {
        return init_on_branch(ctx, &path, branch);
    }
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

/// `cairn init --branch`: no git hooks (they would run on the code's
/// commits); cairn's merge drivers are registered for merges made in a
/// worktree of the store's branch.
fn init_on_branch(ctx: &Ctx, path: &std::path::Path, branch: &str) -> CmdResult {
    let (store, made) = Store::init_on_branch(path, branch, ctx.options.clone())?;
    cairn::sync::driver::register(&store, &super::hooks::own_path()?)?;
    let tip = store.require_tip()?;
    let repo = store
        .repo_workdir()
        .unwrap_or_else(|| store.git_dir())
        .display()
        .to_string();
    Ok(Output::new(
        format!(
            "{} cairn store on branch {branch} of {repo} (commit {}); the code's work tree and index are untouched",
            if made { "Initialized" } else { "Attached the" },
            &tip.to_string()[..12]
        ),
        json!({"path": repo, "branch": store.branch(), "commit": tip.to_string(), "made": made, "hooks": null}),
    ))
}
