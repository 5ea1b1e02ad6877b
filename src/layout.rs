//! Where each artifact lives in a store's tree, and which schema governs it.
//!
//! Folders that grow with use are sharded by the first two hex digits of the
//! sha256 of the id (256 shards): at a million runs or items no tree holds
//! more than ~4k entries, so the cost of a commit does not grow with the store.
//! Every path here is a `/`-separated path relative to the store root.

use sha2::{Digest, Sha256};

/// The store configuration file.
pub const CONFIG: &str = "cairn.yaml";
/// The project registry.
pub const REGISTRY: &str = "registry/projects.yaml";
/// Git attributes written by `cairn init`.
pub const GITATTRIBUTES: &str = ".gitattributes";
/// Git ignore rules written by `cairn init`.
pub const GITIGNORE: &str = ".gitignore";
/// The folder of runs.
pub const RUNS: &str = "runs";
/// The folder of long-term memory.
pub const MEMORY: &str = "memory";
/// The folder of merge conflict records.
pub const CONFLICTS: &str = "conflicts";
/// The folder of the generated markdown views (the mirror).
pub const MIRROR: &str = "mirror";

/// Whether a path is derived (a mirror page or index): rendered from the
/// canonical files, never edited by hand.
pub fn is_derived(path: &str) -> bool {
    path.strip_prefix(MIRROR)
        .is_some_and(|rest| rest.starts_with('/'))
}

/// The shard folder name for an id: two lowercase hex digits.
pub fn shard(id: &str) -> String {
    let digest = Sha256::digest(id.as_bytes());
    format!("{:02x}", digest[0])
}

/// The folder of one run: `runs/<shard>/<run_id>`.
pub fn run_dir(run_id: &str) -> String {
    format!("{RUNS}/{}/{run_id}", shard(run_id))
}

/// The working set file of a run.
pub fn working_set(run_id: &str) -> String {
    format!("{}/working_set.yaml", run_dir(run_id))
}

/// The folder of one scope's memory: `memory/global` or
/// `memory/<scope>/<shard>/<scope_id>` (scope ids grow with use too).
pub fn memory_scope_dir(scope: &str, scope_id: Option<&str>) -> String {
    match scope_id {
        Some(sid) => format!("{MEMORY}/{scope}/{}/{sid}", shard(sid)),
        None => format!("{MEMORY}/{scope}"),
    }
}

/// A memory item file: `<scope dir>/<shard>/<id>.yaml`.
pub fn memory_item(scope: &str, scope_id: Option<&str>, id: &str) -> String {
    format!(
        "{}/{}/{id}.yaml",
        memory_scope_dir(scope, scope_id),
        shard(id)
    )
}

/// A staged batch of memory change requests.
pub fn batch(run_id: &str, batch_id: &str) -> String {
    format!("{}/proposals/{batch_id}.yaml", run_dir(run_id))
}

/// An episode file.
pub fn episode(run_id: &str, episode_id: &str) -> String {
    format!("{}/episodes/{episode_id}.yaml", run_dir(run_id))
}

/// The annotated tag of an episode (without `refs/tags/`).
pub fn episode_tag(run_id: &str, episode_id: &str) -> String {
    format!("cairn/{run_id}/{episode_id}")
}

/// The (run, episode) an episode tag (`cairn/<run>/<episode>`, without
/// `refs/tags/`) names.
pub fn episode_of_tag(tag: &str) -> Option<(&str, &str)> {
    tag.strip_prefix("cairn/")?.split_once('/')
}

/// The (run, episode) of an episode file's path.
pub fn episode_of_path(path: &str) -> Option<(&str, &str)> {
    let parts: Vec<&str> = path.split('/').collect();
    match parts.as_slice() {
        [RUNS, _, run, "episodes", file] => Some((run, file.strip_suffix(".yaml")?)),
        _ => None,
    }
}

/// A merge conflict record: `conflicts/<shard>/<conflict_id>.yaml`.
pub fn conflict(conflict_id: &str) -> String {
    format!("{CONFLICTS}/{}/{conflict_id}.yaml", shard(conflict_id))
}

/// A project's trusted state file.
pub fn project_state(project: &str) -> String {
    format!("state/{project}.yaml")
}

/// The schema that governs a canonical path, if the path is canonical.
pub fn schema_for(path: &str) -> Option<&'static str> {
    let parts: Vec<&str> = path.split('/').collect();
    match parts.as_slice() {
        [CONFIG] => Some("store_config"),
        ["registry", "projects.yaml"] => Some("project_registry"),
        ["state", f] if f.ends_with(".yaml") => Some("project_state"),
        [RUNS, _, _, "working_set.yaml"] => Some("working_set"),
        [RUNS, _, _, "proposals", f] if f.ends_with(".yaml") => Some("mcr_batch"),
        [RUNS, _, _, "episodes", f] if f.ends_with(".yaml") => Some("episode"),
        [RUNS, _, _, "interactions", _, f] if f.ends_with(".yaml") => Some("interaction"),
        [MEMORY, ..] if path.ends_with(".yaml") => Some("memory_item"),
        [CONFLICTS, _, f] if f.ends_with(".yaml") => Some("conflict_record"),
        _ => None,
    }
}

/// The run id a run path belongs to, if it is under `runs/`.
pub fn run_of(path: &str) -> Option<&str> {
    let mut parts = path.split('/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(RUNS), Some(_), Some(run)) => Some(run),
        _ => None,
    }
}

/// Whether a run id is safe as a path component (the working_set schema's pattern).
pub fn valid_id(id: &str) -> bool {
    let mut chars = id.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && id.len() <= 128
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_two_hex_digits_and_stable() {
        assert_eq!(shard("run_A"), shard("run_A"));
        assert_eq!(shard("x").len(), 2);
    }

    #[test]
    fn canonical_paths_map_to_schemas() {
        assert_eq!(schema_for(&working_set("run_1")), Some("working_set"));
        assert_eq!(schema_for("cairn.yaml"), Some("store_config"));
        assert_eq!(
            schema_for(&memory_item("project", Some("p1"), "mem_1")),
            Some("memory_item")
        );
        assert_eq!(schema_for("README.md"), None);
        assert_eq!(run_of(&working_set("run_1")), Some("run_1"));
        assert_eq!(
            episode_of_path(&episode("run_1", "ep_2")),
            episode_of_tag(&episode_tag("run_1", "ep_2"))
        );
        assert_eq!(episode_of_tag("cairn/run_1/ep_2"), Some(("run_1", "ep_2")));
    }

    #[test]
    fn ids_with_path_tricks_are_invalid() {
        assert!(valid_id("run_01ABC"));
        assert!(!valid_id("../x"));
        assert!(!valid_id(".hidden"));
        assert!(!valid_id(""));
    }
}
