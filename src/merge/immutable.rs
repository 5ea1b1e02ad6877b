//! Episodes and interactions: written once, never changed, never dropped.
//!
//! An episode is a checkpoint its tag also carries, and an interaction is a
//! captured record: there is nothing to merge. The same content added on
//! both sides is one file; any difference is corruption or tampering on one
//! side, which a merge must not paper over, so it stops with
//! [`Error::Integrity`]. A deletion on one side loses to the other side's
//! copy (recorded as a conflict), so a sync never drops one.

use super::{FieldConflict, FileMerge, Kind, Side};
use crate::error::Error;

/// The refusal for an immutable file that changed; `side` names the side
/// that changed it, None when both added or changed it differently.
pub(super) fn changed(kind: Kind, path: &str, side: Option<&str>) -> Error {
    let what = match kind {
        Kind::Episode => "episodes are immutable",
        _ => "interactions are immutable",
    };
    let how = match side {
        Some(side) => format!("the {side} side changed or replaced it after it was written"),
        None => "the two sides hold different content for it".into(),
    };
    Error::Integrity {
        subject: path.to_string(),
        message: format!(
            "{what}, but {how}; restore the original (its tag or history has it) on the side that changed it, then sync again"
        ),
    }
}

/// One side deleted an unchanged immutable file: it is kept.
pub(super) fn kept_deleted(
    base: &Option<Side<'_>>,
    ours: &Option<Side<'_>>,
    theirs: &Option<Side<'_>>,
) -> FileMerge {
    let kept = ours.as_ref().or(theirs.as_ref()).expect("one side kept it");
    FileMerge {
        merged: Some(kept.bytes.to_vec()),
        conflicts: vec![FieldConflict {
            pointer: String::new(),
            rule: "immutable_deleted",
            base: base.as_ref().map(|s| s.value.clone()),
            ours: ours.as_ref().map(|s| s.value.clone()),
            theirs: theirs.as_ref().map(|s| s.value.clone()),
            kept: Some(kept.value.clone()),
        }],
    }
}
