//! Looks up a few paths in git's index file without loading all of it.
//!
//! Before a write, the store compares what the index stages for each path the
//! write changes with the tip, to refuse writing over hand edits. libgit2
//! answers that by loading the whole index into a hash map and verifying its
//! SHA-1 trailer, which at 100k files took most of a work-tree write. This
//! module reads the file once and walks its entries in order, decoding only
//! the paths, and keeps the object ids of the paths asked for.
//!
//! Invariants: the reader only reads. It understands the entry formats of
//! index versions 2, 3 and 4 as git documents them (gitformat-index); for
//! anything else, an index split with `core.splitIndex` (its entries live
//! in a second file) or a file it cannot follow, it answers `None` and the
//! caller asks libgit2. Only stage-0 entries are reported, as libgit2's
//! `get_path(path, 0)` does. The trailer checksum is not verified: git
//! replaces the index by renaming a complete file, so a reader never sees
//! a torn one.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use git2::Oid;

use crate::error::{Error, Result};

/// Length of the fixed part of an entry before the flags: ten 32-bit stat
/// fields and a SHA-1 object name.
const STAT_AND_ID: usize = 40 + 20;
/// The "extended" bit of an entry's flags (versions 3 and 4).
const EXTENDED: u16 = 0x4000;
/// An index trailer: the SHA-1 of everything before it.
const TRAILER: usize = 20;

/// The object ids that the index at `index_file` stages (stage 0) for each
/// of `paths` that it holds. A missing index file holds nothing. `None` when
/// the file is in a form this reader does not follow (see the module doc).
pub fn staged(index_file: &Path, paths: &BTreeSet<&str>) -> Result<Option<HashMap<String, Oid>>> {
    let bytes = match std::fs::read(index_file) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Some(HashMap::new())),
        Err(e) => return Err(Error::io("read", index_file, e)),
    };
    Ok(scan(&bytes, paths))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

/// git's offset varint (version 4 path prefixes): each continuation adds one
/// before shifting, so every value has exactly one encoding.
fn varint(b: &[u8], at: &mut usize) -> Option<usize> {
    let mut c = *b.get(*at)?;
    *at += 1;
    let mut val = (c & 0x7f) as usize;
    while c & 0x80 != 0 {
        c = *b.get(*at)?;
        *at += 1;
        val = val.checked_add(1)?.checked_shl(7)? | (c & 0x7f) as usize;
    }
    Some(val)
}

fn scan(b: &[u8], paths: &BTreeSet<&str>) -> Option<HashMap<String, Oid>> {
    if b.get(0..4)? != b"DIRC" {
        return None;
    }
    let version = be32(b, 4)?;
    if !(2..=4).contains(&version) {
        return None;
    }
    let count = be32(b, 8)? as usize;
    let end = b.len().checked_sub(TRAILER)?;
    let mut found = HashMap::new();
    let mut at = 12;
    let mut path: Vec<u8> = Vec::new();
    for _ in 0..count {
        let start = at;
        let id = b.get(start + 40..start + STAT_AND_ID)?;
        let flags = be16(b, start + STAT_AND_ID)?;
        at = start + STAT_AND_ID + 2;
        if flags & EXTENDED != 0 {
            if version < 3 {
                return None;
            }
            at += 2;
        }
        if version == 4 {
            let strip = varint(b, &mut at)?;
            path.truncate(path.len().checked_sub(strip)?);
        } else {
            path.clear();
        }
        let nul = b.get(at..end)?.iter().position(|c| *c == 0)?;
        path.extend_from_slice(&b[at..at + nul]);
        at += nul + 1;
        if version < 4 {
            // Entries are padded with 1–8 NULs to a multiple of eight bytes.
            at = start + (at - start).div_ceil(8) * 8;
        }
        if at > end {
            return None;
        }
        let stage = (flags >> 12) & 0x3;
        if stage == 0 {
            if let Ok(p) = std::str::from_utf8(&path) {
                if paths.contains(p) {
                    found.insert(p.to_string(), Oid::from_bytes(id).ok()?);
                }
            }
        }
    }
    // Extensions: a split index keeps its entries elsewhere.
    while at + 8 <= end {
        let sig = &b[at..at + 4];
        if sig == b"link" {
            return None;
        }
        at = at.checked_add(8)?.checked_add(be32(b, at + 4)? as usize)?;
    }
    (at == end).then_some(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=t", "-c", "user.email=t@t"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// Every stage-0 entry as git lists it.
    fn listed(dir: &Path) -> HashMap<String, Oid> {
        git(dir, &["ls-files", "-s", "-z"])
            .split('\0')
            .filter(|l| !l.is_empty())
            .filter_map(|l| {
                let (meta, path) = l.split_once('\t')?;
                let f: Vec<&str> = meta.split(' ').collect();
                (f[2] == "0").then(|| (path.to_string(), Oid::from_str(f[1]).unwrap()))
            })
            .collect()
    }

    /// A repository whose index holds paths of many lengths and shared
    /// prefixes (version 4 compresses them), a very long one (the 12-bit
    /// length field saturates), an intent-to-add entry (extended flags) and
    /// a conflicted path (stages 1–3, no stage 0).
    fn repo() -> tempfile::TempDir {
        let dir = tempfile::TempDir::new().unwrap();
        let d = dir.path();
        git(d, &["init", "-q"]);
        let blob = |s: &str| {
            let out = Command::new("git")
                .arg("-C")
                .arg(d)
                .args(["hash-object", "-w", "--stdin"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .and_then(|mut c| {
                    use std::io::Write;
                    c.stdin.take().unwrap().write_all(s.as_bytes())?;
                    c.wait_with_output()
                })
                .unwrap();
            String::from_utf8(out.stdout).unwrap().trim().to_string()
        };
        let long = format!("deep/{}/leaf.yaml", "x".repeat(5000));
        let mut names: Vec<String> = (0..300)
            .map(|i| format!("memory/global/{:02x}/mem_{i:05}.yaml", i % 7))
            .collect();
        names.extend(["a".into(), "runs/5d/run_a/working_set.yaml".into(), long]);
        for (i, n) in names.iter().enumerate() {
            let id = blob(&format!("content {i}\n"));
            git(
                d,
                &[
                    "update-index",
                    "--add",
                    "--cacheinfo",
                    &format!("100644,{id},{n}"),
                ],
            );
        }
        let (b1, b2) = (blob("one\n"), blob("two\n"));
        let conflict = format!("100644 {b1} 1\tconflicted\n100644 {b2} 2\tconflicted\n");
        let mut c = Command::new("git")
            .arg("-C")
            .arg(d)
            .args(["update-index", "--index-info"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::Write;
            c.stdin
                .take()
                .unwrap()
                .write_all(conflict.as_bytes())
                .unwrap();
        }
        assert!(c.wait().unwrap().success());
        std::fs::write(d.join("new.txt"), "intent\n").unwrap();
        git(d, &["add", "-N", "new.txt"]);
        dir
    }

    #[test]
    fn finds_what_git_lists_in_every_index_version() {
        let dir = repo();
        let d = dir.path();
        for version in ["2", "3", "4"] {
            git(d, &["update-index", "--index-version", version]);
            let all = listed(d);
            assert!(all.len() > 300);
            let mut asked: BTreeSet<&str> = all.keys().map(String::as_str).collect();
            asked.insert("conflicted");
            asked.insert("not/there.yaml");
            let got = staged(&d.join(".git/index"), &asked).unwrap();
            assert_eq!(got, Some(all.clone()), "index version {version}");
            // Asking for a few is the same as filtering all of them.
            let few: BTreeSet<&str> = ["a", "runs/5d/run_a/working_set.yaml", "zzz"].into();
            let got = staged(&d.join(".git/index"), &few).unwrap().unwrap();
            assert_eq!(got.len(), 2);
            assert_eq!(got["a"], all["a"]);
        }
    }

    #[test]
    fn hands_a_split_or_unknown_index_back_to_libgit2() {
        let dir = repo();
        let d = dir.path();
        let index = d.join(".git/index");
        let asked: BTreeSet<&str> = ["a"].into();
        git(d, &["update-index", "--split-index"]);
        assert_eq!(staged(&index, &asked).unwrap(), None, "split index");
        git(d, &["update-index", "--no-split-index"]);
        assert!(staged(&index, &asked).unwrap().is_some());
        let mut bytes = std::fs::read(&index).unwrap();
        bytes.truncate(bytes.len() / 2);
        assert_eq!(scan(&bytes, &asked), None, "cut short");
        assert_eq!(scan(b"DIRC\0\0\0\x09\0\0\0\0", &asked), None, "version 9");
        let missing = staged(&d.join(".git/no-such-index"), &asked).unwrap();
        assert_eq!(missing, Some(HashMap::new()));
    }
}
