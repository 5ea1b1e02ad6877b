//! The library's error type and the error taxonomy of SPEC §5.
//!
//! Every failure a caller can act on is a variant here that carries what is
//! needed to explain it (file, JSON pointer, rule, expected vs actual seq, the
//! lock path...). Messages describe only their own layer; causes ride along as
//! `#[source]`. [`Error::category`] maps each variant to one of the stable
//! categories, which the CLI turns into exit codes in exactly one place.

use std::path::PathBuf;

/// The stable error categories of SPEC §5, each with its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    /// Input broke a schema, a limit or a syntax rule (exit 3).
    Validation,
    /// An optimistic lock or a concurrent edit got in the way (exit 4).
    Conflict,
    /// The thing asked for does not exist (exit 5).
    NotFound,
    /// A rule of the store refused the operation (exit 6).
    Policy,
    /// Try again later: a lock is busy (exit 7).
    Transient,
    /// Corruption or tampering was detected (exit 8).
    Integrity,
    /// A bug or an unexpected environment failure (exit 1).
    Internal,
}

impl Category {
    /// The upper-case name used in `--json` envelopes.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Validation => "VALIDATION",
            Category::Conflict => "CONFLICT",
            Category::NotFound => "NOT_FOUND",
            Category::Policy => "POLICY",
            Category::Transient => "TRANSIENT",
            Category::Integrity => "INTEGRITY",
            Category::Internal => "INTERNAL",
        }
    }

    /// The process exit code for this category.
    pub fn exit_code(self) -> i32 {
        match self {
            Category::Validation => 3,
            Category::Conflict => 4,
            Category::NotFound => 5,
            Category::Policy => 6,
            Category::Transient => 7,
            Category::Integrity => 8,
            Category::Internal => 1,
        }
    }
}

/// One schema rule broken by one document.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Violation {
    /// JSON pointer into the document ("" is the document itself).
    pub pointer: String,
    /// The JSON Schema keyword that failed (`required`, `type`, ...).
    pub rule: String,
    /// A human sentence about what is wrong.
    pub message: String,
}

/// A finding of `cairn fsck`, or a problem found in a store's content.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// The path (or ref or commit) the finding concerns.
    pub subject: String,
    /// A short machine-readable rule name.
    pub rule: String,
    /// What is wrong.
    pub message: String,
    /// Where in the file (a JSON pointer), when the finding is about a field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pointer: Option<String>,
    /// How to fix it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// The commit that introduced the problem, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

impl Finding {
    /// A finding about `subject` breaking `rule`.
    pub fn new(
        subject: impl Into<String>,
        rule: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Finding {
            subject: subject.into(),
            rule: rule.into(),
            message: message.into(),
            ..Finding::default()
        }
    }

    /// Sets the JSON pointer of the field concerned.
    pub fn at(mut self, pointer: impl Into<String>) -> Self {
        let p = pointer.into();
        self.pointer = Some(if p.is_empty() { "/".into() } else { p });
        self
    }

    /// Sets how to fix it.
    pub fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }

    /// One line for people: subject, field, what, rule, fix and commit.
    pub fn describe(&self) -> String {
        let mut s = self.subject.clone();
        if let Some(p) = &self.pointer {
            s.push_str(&format!(" at {p}"));
        }
        s.push_str(&format!(": {} (rule: {})", self.message, self.rule));
        if let Some(c) = &self.commit {
            s.push_str(&format!(" [introduced by commit {c}]"));
        }
        if let Some(f) = &self.fix {
            s.push_str(&format!("\n    fix: {f}"));
        }
        s
    }
}

/// Everything that can go wrong in the cairn library.
///
/// Variant fields are named for what they hold (file, pointer, rule, ids).
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)]
pub enum Error {
    /// A document does not validate against its schema.
    #[error("{file} does not match schema {schema}: {}", summarize(.violations))]
    Schema {
        file: String,
        schema: String,
        violations: Vec<Violation>,
    },
    /// A document could not be parsed as YAML or JSON.
    #[error("{file} is not valid {format}: {message}")]
    Parse {
        file: String,
        format: &'static str,
        message: String,
    },
    /// An input or file is larger than the configured limit.
    #[error("{file} {}", too_large(*.bytes, *.limit, .setting))]
    TooLarge {
        file: String,
        bytes: u64,
        limit: u64,
        setting: &'static str,
    },
    /// A document nests deeper than the configured limit.
    #[error(
        "{file} nests deeper than {limit} levels at {pointer} (limits.max_depth in cairn.yaml)"
    )]
    TooDeep {
        file: String,
        pointer: String,
        limit: usize,
    },
    /// A semantic rule (not expressible in the schema) was broken by input.
    #[error("{file}{}: {message} (rule: {rule})", if .pointer.is_empty() { String::new() } else { format!(": {}", .pointer) })]
    Invalid {
        file: String,
        pointer: String,
        rule: &'static str,
        message: String,
    },
    /// The optimistic lock on a working set failed.
    #[error("stale patch for run {run_id}: expected_seq is {expected} but the working set is at _update_seq {actual}; re-read it and retry")]
    SeqConflict {
        run_id: String,
        expected: u64,
        actual: u64,
    },
    /// A run does not exist in the store.
    #[error("no run {run_id} in this store")]
    RunNotFound { run_id: String },
    /// A run that is being created already exists.
    #[error("run {run_id} already exists")]
    RunExists { run_id: String },
    /// No ledger event or commit matches what was asked for.
    #[error("{what} not found")]
    NotFound { what: String },
    /// A path is not a cairn store.
    #[error("{} is not a cairn store", .path.display())]
    NotAStore {
        path: PathBuf,
        #[source]
        source: Option<git2::Error>,
    },
    /// `cairn init` on a store that already is one.
    #[error("{} is already a cairn store", .path.display())]
    AlreadyAStore { path: PathBuf },
    /// The store lock could not be taken within the timeout.
    #[error("store lock {} is busy (held by {holder}) after waiting {waited_ms} ms", .path.display())]
    LockBusy {
        path: PathBuf,
        holder: String,
        waited_ms: u64,
    },
    /// Paths cairn must write have uncommitted edits in the work tree or index.
    #[error("uncommitted hand edits in the way: {}", .paths.join(", "))]
    HandEdited { paths: Vec<String> },
    /// The branch kept moving under the writer.
    #[error("branch {branch} kept moving during the write ({attempts} attempts)")]
    BranchUnstable { branch: String, attempts: u32 },
    /// HEAD is not on a branch, so there is nothing to commit to.
    #[error("HEAD is detached; check out the store's branch first")]
    DetachedHead,
    /// The operation conflicts with what the store holds (not retryable as is).
    #[error("{subject}: {message}")]
    Conflict {
        subject: String,
        rule: &'static str,
        message: String,
    },
    /// A policy of the store refused the operation.
    #[error("{message}")]
    Policy { rule: &'static str, message: String },
    /// Stored content is corrupt or has been tampered with.
    #[error("{subject}: {message}")]
    Integrity { subject: String, message: String },
    /// `cairn fsck` found problems.
    #[error("fsck found {} problem(s)", .findings.len())]
    FsckFailed { findings: Vec<Finding> },
    #[error("{hook} refused the commit: {} problem(s)", .findings.len())]
    HookRefused {
        hook: &'static str,
        findings: Vec<Finding>,
    },
    #[error("the tip {commit} fails validation ({} problem(s)); cairn builds no commits on it until it is repaired", .findings.len())]
    TipInvalid {
        commit: String,
        findings: Vec<Finding>,
    },
    /// A git operation failed.
    #[error("git: {context}")]
    Git {
        context: String,
        #[source]
        source: git2::Error,
    },
    /// A file-system operation failed.
    #[error("{op} {}", .path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An external `git` command failed.
    #[error("`git {args}` failed: {stderr}")]
    GitCommand { args: String, stderr: String },
    /// Talking to a remote failed (network, credentials, a remote that
    /// keeps moving): retryable.
    #[error("{action} {remote}: {stderr}")]
    Remote {
        remote: String,
        action: &'static str,
        stderr: String,
    },
    /// A git merge, rebase, cherry-pick or revert is in progress in the work
    /// tree: cairn writes nothing until it is finished or aborted.
    #[error("a git {state} is in progress{}", if .conflicted.is_empty() { String::new() } else { format!("; conflict markers in {}", .conflicted.join(", ")) })]
    MergeInProgress {
        state: &'static str,
        conflicted: Vec<String>,
    },
}

/// How much too large an input is, in units people read. A reader stops
/// one byte past the limit, so `limit + 1` means "larger than the limit".
fn too_large(bytes: u64, limit: u64, setting: &str) -> String {
    let size = if bytes == limit.saturating_add(1) {
        "is larger than".to_string()
    } else {
        format!("is {}, over", crate::schema::human_bytes(bytes))
    };
    format!(
        "{size} the limit of {} (limits.{setting}: {limit} bytes in cairn.yaml)",
        crate::schema::human_bytes(limit)
    )
}

fn summarize(violations: &[Violation]) -> String {
    let Some(first) = violations.first() else {
        return "no details".into();
    };
    let at = if first.pointer.is_empty() {
        "/"
    } else {
        &first.pointer
    };
    let more = match violations.len() {
        1 => String::new(),
        n => format!(" (and {} more)", n - 1),
    };
    format!("at {at}: {} (rule: {}){more}", first.message, first.rule)
}

/// Shorthand for results of library functions.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The taxonomy category of this error.
    pub fn category(&self) -> Category {
        match self {
            Error::Schema { .. }
            | Error::Parse { .. }
            | Error::TooLarge { .. }
            | Error::TooDeep { .. }
            | Error::Invalid { .. }
            | Error::HookRefused { .. } => Category::Validation,
            Error::SeqConflict { .. }
            | Error::RunExists { .. }
            | Error::AlreadyAStore { .. }
            | Error::HandEdited { .. }
            | Error::BranchUnstable { .. }
            | Error::Conflict { .. }
            | Error::MergeInProgress { .. }
            | Error::DetachedHead => Category::Conflict,
            Error::RunNotFound { .. } | Error::NotFound { .. } | Error::NotAStore { .. } => {
                Category::NotFound
            }
            Error::Policy { .. } => Category::Policy,
            Error::LockBusy { .. } | Error::Remote { .. } => Category::Transient,
            Error::Integrity { .. } | Error::FsckFailed { .. } | Error::TipInvalid { .. } => {
                Category::Integrity
            }
            Error::Git { .. } | Error::Io { .. } | Error::GitCommand { .. } => Category::Internal,
        }
    }

    /// A stable machine-readable code, finer than the category.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Schema { .. } => "SCHEMA_VIOLATION",
            Error::Parse { .. } => "PARSE_ERROR",
            Error::TooLarge { .. } => "TOO_LARGE",
            Error::TooDeep { .. } => "TOO_DEEP",
            Error::Invalid { .. } => "INVALID_INPUT",
            Error::SeqConflict { .. } => "STALE_SEQ",
            Error::RunNotFound { .. } => "RUN_NOT_FOUND",
            Error::RunExists { .. } => "RUN_EXISTS",
            Error::NotFound { .. } => "NOT_FOUND",
            Error::NotAStore { .. } => "NOT_A_STORE",
            Error::AlreadyAStore { .. } => "ALREADY_A_STORE",
            Error::LockBusy { .. } => "LOCK_BUSY",
            Error::HandEdited { .. } => "HAND_EDITS_IN_THE_WAY",
            Error::BranchUnstable { .. } => "BRANCH_UNSTABLE",
            Error::DetachedHead => "DETACHED_HEAD",
            Error::Policy { rule, .. } | Error::Conflict { rule, .. } => rule,
            Error::Integrity { .. } => "INTEGRITY",
            Error::FsckFailed { .. } => "FSCK_FAILED",
            Error::HookRefused { .. } => "HOOK_REFUSED",
            Error::TipInvalid { .. } => "TIP_INVALID",
            Error::Git { .. } => "GIT_ERROR",
            Error::Io { .. } => "IO_ERROR",
            Error::GitCommand { .. } => "GIT_COMMAND_FAILED",
            Error::Remote { .. } => "REMOTE_FAILED",
            Error::MergeInProgress { .. } => "MERGE_IN_PROGRESS",
        }
    }

    /// Whether retrying the same call may succeed.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            Error::SeqConflict { .. }
                | Error::LockBusy { .. }
                | Error::BranchUnstable { .. }
                | Error::Remote { .. }
        )
    }

    /// What the user can do about it, when there is something to say.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::NotAStore { .. } => Some(
                "run `cairn init` to make one, or point at a store with --store PATH or CAIRN_STORE"
                    .into(),
            ),
            Error::LockBusy { path, .. } => Some(format!(
                "another cairn process is writing; retry. If no cairn process is running, the lock is stale: remove {}",
                path.display()
            )),
            Error::HandEdited { .. } => Some(
                "commit the edits (`git commit`) or discard them (`git restore --staged --worktree PATH`), then retry"
                    .into(),
            ),
            Error::SeqConflict { run_id, .. } => Some(format!(
                "run `cairn ws show {run_id}` and send the patch again with the current seq"
            )),
            Error::RunNotFound { .. } => Some("`cairn run list` shows the runs".into()),
            Error::TipInvalid { .. } => Some(
                "`cairn fsck` lists the problems and the commits that made them; `cairn fsck --repair` commits the mechanical fixes, or fix the files by hand and `git commit` them"
                    .into(),
            ),
            Error::MergeInProgress { state, .. } => Some(format!(
                "finish the {state} first: `cairn sync --resolve` merges the conflicted cairn files by their schemas (or edit them, `git add` and `git commit`), or abort it (`git {} --abort`)",
                if *state == "rebase" { "rebase" } else if *state == "cherry-pick" { "cherry-pick" } else if *state == "revert" { "revert" } else { "merge" }
            )),
            Error::Remote { .. } => Some(
                "check the remote's URL and your credentials (`git remote -v`, `git fetch`), then run `cairn sync` again"
                    .into(),
            ),
            _ => None,
        }
    }

    /// Structured details for the `--json` envelope.
    pub fn details(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            Error::Schema {
                file,
                schema,
                violations,
            } => json!({"file": file, "schema": schema, "violations": violations}),
            Error::Parse { file, format, .. } => json!({"file": file, "format": format}),
            Error::TooLarge {
                file,
                bytes,
                limit,
                setting,
            } => json!({"file": file, "bytes": bytes, "limit": limit, "setting": setting}),
            Error::TooDeep {
                file,
                pointer,
                limit,
            } => json!({"file": file, "pointer": pointer, "limit": limit}),
            Error::Invalid {
                file,
                pointer,
                rule,
                ..
            } => json!({"file": file, "pointer": pointer, "rule": rule}),
            Error::SeqConflict {
                run_id,
                expected,
                actual,
            } => json!({"run_id": run_id, "expected_seq": expected, "current_seq": actual}),
            Error::RunNotFound { run_id } | Error::RunExists { run_id } => {
                json!({"run_id": run_id})
            }
            Error::NotAStore { path, .. } | Error::AlreadyAStore { path } => {
                json!({"path": path})
            }
            Error::LockBusy {
                path,
                holder,
                waited_ms,
            } => json!({"lock": path, "holder": holder, "waited_ms": waited_ms}),
            Error::HandEdited { paths } => json!({"paths": paths}),
            Error::Conflict { subject, rule, .. } => json!({"subject": subject, "rule": rule}),
            Error::Policy { rule, .. } => json!({"rule": rule}),
            Error::FsckFailed { findings } | Error::HookRefused { findings, .. } => {
                json!({"findings": findings})
            }
            Error::TipInvalid { commit, findings } => {
                json!({"commit": commit, "findings": findings})
            }
            Error::Io { path, .. } => json!({"path": path}),
            Error::Remote { remote, action, .. } => json!({"remote": remote, "action": action}),
            Error::MergeInProgress { state, conflicted } => {
                json!({"state": state, "conflicted": conflicted})
            }
            _ => json!({}),
        }
    }

    pub(crate) fn git(context: impl Into<String>, source: git2::Error) -> Self {
        Error::Git {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
