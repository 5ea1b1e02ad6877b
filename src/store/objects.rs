//! Writing git objects: each commit's blobs, trees and commit go into one
//! pack (see [`crate::pack`]) that is fsync'd before the branch moves; small
//! packs are merged geometrically; milestone tags are annotated tags.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

use git2::{ObjectType, Oid, Tree};

use super::{not_found_to_none, Changes, Store};
use crate::error::{Error, Result};
use crate::pack;

impl Store {
    /// Writes the commit for `changes` on top of `base` (with `merged` as
    /// further parents: a merge commit) as one pack (see
    /// [`crate::pack`]): the new blobs, the trees along the changed paths and
    /// the commit are serialized and hashed here, from the base trees, and
    /// written as one `.pack` + `.idx`. Loose objects would cost a new file
    /// each, and libgit2's object writes re-scan the pack folder for every
    /// new object.
    pub(super) fn write_commit_packed(
        &self,
        base: Option<Oid>,
        merged: &[Oid],
        changes: &Changes,
        message: &str,
        (author, committer): (&git2::Signature<'_>, &git2::Signature<'_>),
    ) -> Result<Oid> {
        let mut objects = Vec::new();
        let base_tree = match base {
            Some(c) => Some(self.tree_of(c)?),
            None => None,
        };
        let mut nested: BTreeMap<String, Option<Vec<u8>>> = BTreeMap::new();
        for (k, v) in changes {
            nested.insert(k.clone(), v.clone());
        }
        let tree = match self.build_tree(base_tree.as_ref(), &nested, &mut objects)? {
            Some(id) => id,
            // An empty store root: the empty tree.
            None => new_object(pack::Kind::Tree, Vec::new(), &mut objects),
        };
        let mut text = format!("tree {}\n", pack::hex(&tree));
        for p in base.iter().chain(merged) {
            text.push_str(&format!("parent {p}\n"));
        }
        text.push_str(&format!(
            "author {}\ncommitter {}\n\n{message}",
            signature_line(author),
            signature_line(committer)
        ));
        let commit = new_object(pack::Kind::Commit, text.into_bytes(), &mut objects);
        pack::write(&self.repo.path().join("objects").join("pack"), &mut objects)?;
        self.repo
            .odb()
            .and_then(|o| o.refresh())
            .map_err(|e| Error::git("refresh object database", e))?;
        Oid::from_bytes(&commit).map_err(|e| Error::git("make commit id", e))
    }

    /// The tree `base` becomes with `changes` (paths relative to it), its
    /// new objects pushed to `out`; `None` when nothing is left in it.
    pub(super) fn build_tree(
        &self,
        base: Option<&Tree<'_>>,
        changes: &BTreeMap<String, Option<Vec<u8>>>,
        out: &mut Vec<pack::Object>,
    ) -> Result<Option<[u8; 20]>> {
        // name → (mode, id)
        let mut entries: BTreeMap<Vec<u8>, (i32, [u8; 20])> = BTreeMap::new();
        if let Some(t) = base {
            for e in t.iter() {
                let id = e
                    .id()
                    .as_bytes()
                    .try_into()
                    .expect("SHA-1 ids are 20 bytes");
                entries.insert(e.name_bytes().to_vec(), (e.filemode(), id));
            }
        }
        let mut sub: BTreeMap<&str, BTreeMap<String, Option<Vec<u8>>>> = BTreeMap::new();
        for (path, content) in changes {
            match path.split_once('/') {
                Some((dir, rest)) => {
                    sub.entry(dir)
                        .or_default()
                        .insert(rest.to_string(), content.clone());
                }
                None => match content {
                    Some(bytes) => {
                        let id = new_object(pack::Kind::Blob, bytes.clone(), out);
                        entries.insert(path.as_bytes().to_vec(), (0o100644, id));
                    }
                    None => {
                        entries.remove(path.as_bytes());
                    }
                },
            }
        }
        for (dir, inner) in sub {
            let existing = match entries.get(dir.as_bytes()) {
                Some((mode, id)) if *mode == 0o040000 => {
                    let oid = Oid::from_bytes(id).map_err(|e| Error::git("read a tree id", e))?;
                    Some(
                        self.repo
                            .find_tree(oid)
                            .map_err(|e| Error::git(format!("read tree {dir}"), e))?,
                    )
                }
                _ => None,
            };
            match self.build_tree(existing.as_ref(), &inner, out)? {
                Some(id) => {
                    entries.insert(dir.as_bytes().to_vec(), (0o040000, id));
                }
                None => {
                    entries.remove(dir.as_bytes());
                }
            }
        }
        if entries.is_empty() {
            return Ok(None);
        }
        // git orders entries by name, a folder's name as if it ended in '/'.
        let mut sorted: Vec<(Vec<u8>, i32, [u8; 20])> = entries
            .into_iter()
            .map(|(name, (mode, id))| {
                let mut key = name;
                if mode == 0o040000 {
                    key.push(b'/');
                }
                (key, mode, id)
            })
            .collect();
        sorted.sort();
        let mut data = Vec::with_capacity(sorted.len() * 48);
        for (mut name, mode, id) in sorted {
            if mode == 0o040000 {
                name.pop();
            }
            data.extend_from_slice(format!("{mode:o} ").as_bytes());
            data.extend_from_slice(&name);
            data.push(0);
            data.extend_from_slice(&id);
        }
        Ok(Some(new_object(pack::Kind::Tree, data, out)))
    }

    /// Keeps the number of packs small: every write adds one, so once
    /// [`ROLLUP_AT`] or more small packs break the geometric progression
    /// (each pack kept holds at least twice the objects of all smaller packs
    /// together), they are merged into one. Packs with a `.keep` or
    /// `.promisor` file are left alone. Runs under the store lock; the new
    /// pack is durable before the merged ones are deleted. Returns how many
    /// packs were merged.
    pub(super) fn consolidate_packs(&self) -> Result<usize> {
        crate::failpoint::failpoint!("store::consolidate");
        let dir = self.repo.path().join("objects").join("pack");
        let Ok(entries) = fs::read_dir(&dir) else {
            return Ok(0);
        };
        let mut packs: Vec<(u64, PathBuf)> = Vec::new();
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("tmp_pack_cairn_") {
                // Every cairn pack is written under the store lock we hold:
                // this one was left by a writer that died.
                crate::failpoint::trace::remove(&e.path());
                let _ = fs::remove_file(e.path());
                continue;
            }
            let Some(stem) = name.strip_suffix(".idx") else {
                continue;
            };
            let stem = dir.join(stem);
            let kept = ["keep", "promisor"]
                .iter()
                .any(|ext| stem.with_extension(ext).exists());
            if let (false, Some(n)) = (kept, pack::object_count(&e.path())) {
                packs.push((u64::from(n), stem));
            }
        }
        packs.sort();
        let mut rollup = 0;
        let mut smaller = 0u64;
        for (j, (n, _)) in packs.iter().enumerate() {
            if *n < 2 * smaller {
                rollup = j + 1;
            }
            smaller += n;
        }
        if rollup < ROLLUP_AT {
            return Ok(0);
        }
        let merged = &packs[..rollup];
        // Where each object sits: the first merged pack listing it, its CRC
        // and the byte range of its entry.
        let mut packed = Vec::with_capacity(merged.len());
        let mut at: BTreeMap<[u8; 20], (usize, u32, usize, usize)> = BTreeMap::new();
        for (i, (_, stem)) in merged.iter().enumerate() {
            let idx = stem.with_extension("idx");
            let unreadable = || Error::Integrity {
                subject: idx.display().to_string(),
                message: "not a readable version 2 pack index".into(),
            };
            let mut entries = pack::index_entries(&idx).ok_or_else(unreadable)?;
            let file = stem.with_extension("pack");
            let bytes = fs::read(&file).map_err(|e| Error::io("read", &file, e))?;
            entries.sort_by_key(|e| e.2);
            let ends: Vec<u64> = entries
                .iter()
                .skip(1)
                .map(|e| e.2)
                .chain([bytes.len().saturating_sub(20) as u64])
                .collect();
            for ((id, crc, start), end) in entries.into_iter().zip(ends) {
                if start > end || end as usize > bytes.len() {
                    return Err(unreadable());
                }
                at.entry(id)
                    .or_insert((i, crc, start as usize, end as usize));
            }
            packed.push(bytes);
        }
        let odb = self
            .repo
            .odb()
            .map_err(|e| Error::git("open object database", e))?;
        let mut writer = pack::Writer::new(&dir, at.len())?;
        for (id, (i, crc, start, end)) in at {
            let entry = &packed[i][start..end];
            // Whole objects are copied as they are; deltas (from git's own
            // packs) and anything whose CRC does not check are re-read.
            if (1..=4).contains(&pack::entry_type(entry)) && crc32fast::hash(entry) == crc {
                writer.add_raw(id, crc, entry)?;
                continue;
            }
            let oid = Oid::from_bytes(&id).map_err(|e| Error::git("read a pack index", e))?;
            let obj = odb
                .read(oid)
                .map_err(|e| Error::git(format!("read object {oid}"), e))?;
            writer.add(id, pack_kind(obj.kind()), obj.data())?;
        }
        // The new pack is fsync'd before the merged ones go.
        let fresh = writer.finish()?.with_extension("");
        // A multi-pack index may list the merged packs; it is optional, and
        // git rebuilds it when asked to.
        crate::failpoint::trace::remove(&dir.join("multi-pack-index"));
        let _ = fs::remove_file(dir.join("multi-pack-index"));
        for (_, stem) in merged {
            if *stem == fresh {
                continue;
            }
            for ext in ["idx", "pack", "rev", "bitmap", "mtimes"] {
                crate::failpoint::trace::remove(&stem.with_extension(ext));
                let _ = fs::remove_file(stem.with_extension(ext));
            }
        }
        odb.refresh()
            .map_err(|e| Error::git("refresh object database", e))?;
        Ok(merged.len())
    }

    /// Creates the annotated tag `name` (under `refs/tags/`) with `message`
    /// on `commit`, unless a tag of that name exists (repairs use it to put
    /// back an episode tag a clone lost).
    pub fn create_tag(&self, commit: Oid, name: &str, message: &str) -> Result<()> {
        self.create_tags(commit, &[(name.to_string(), message.to_string())])
    }

    /// Creates annotated tags pointing at `commit`; an existing tag with the
    /// same target is left alone.
    pub(super) fn create_tags(&self, commit: Oid, tags: &[(String, String)]) -> Result<()> {
        if tags.is_empty() {
            return Ok(());
        }
        crate::failpoint::failpoint!("store::tags");
        let object = self
            .repo
            .find_object(commit, Some(ObjectType::Commit))
            .map_err(|e| Error::git(format!("read commit {commit}"), e))?;
        let sig = git2::Signature::new(
            &self.committer.name,
            &self.committer.email,
            &git2::Time::new(self.now().unix_timestamp(), 0),
        )
        .map_err(|e| Error::git("make signature", e))?;
        for (name, message) in tags {
            let existing = not_found_to_none(self.repo.refname_to_id(&format!("refs/tags/{name}")))
                .map_err(|e| Error::git(format!("read tag {name}"), e))?;
            if existing.is_some() {
                continue;
            }
            self.repo
                .tag(name, &object, &sig, message, false)
                .map_err(|e| Error::git(format!("create tag {name}"), e))?;
        }
        Ok(())
    }
}

/// Hashes an object as git does, pushes it to `out` and returns its id.
fn new_object(kind: pack::Kind, data: Vec<u8>, out: &mut Vec<pack::Object>) -> [u8; 20] {
    let id = pack::object_id(kind, &data);
    out.push(pack::Object { id, kind, data });
    id
}

/// `Name <email> seconds +hhmm`, as commit headers write a signature.
fn signature_line(sig: &git2::Signature<'_>) -> String {
    let when = sig.when();
    let offset = when.offset_minutes();
    let sign = if offset < 0 { '-' } else { '+' };
    let offset = offset.unsigned_abs();
    format!(
        "{} <{}> {} {sign}{:02}{:02}",
        String::from_utf8_lossy(sig.name_bytes()),
        String::from_utf8_lossy(sig.email_bytes()),
        when.seconds(),
        offset / 60,
        offset % 60
    )
}

/// Packs above this many that break the geometric progression are merged
/// (see [`Store::consolidate_packs`]).
const ROLLUP_AT: usize = 8;

fn pack_kind(kind: ObjectType) -> pack::Kind {
    match kind {
        ObjectType::Commit => pack::Kind::Commit,
        ObjectType::Tree => pack::Kind::Tree,
        ObjectType::Tag => pack::Kind::Tag,
        _ => pack::Kind::Blob,
    }
}
