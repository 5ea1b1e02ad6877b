//! Reads and updates git's index file directly, for the few paths a write
//! touches.
//!
//! Before a write, the store compares what the index stages for each path the
//! write changes with the tip, to refuse writing over hand edits; after it,
//! the store stages what it committed so that `git status` stays clean.
//! libgit2 answers the first by loading the whole index into a hash map and
//! verifying its SHA-1 trailer, and `git update-index` does the second by
//! loading the whole index, rewriting it and hashing it with a collision-
//! detecting SHA-1 in a process of its own: at 10k files the two took a third
//! of a work-tree write. This module walks the entries in order, decoding
//! only their paths: [`staged`] keeps the object ids of the paths asked for,
//! [`update`] copies every other entry as it is and splices in the changed
//! ones.
//!
//! Invariants: both understand the entry formats of index versions 2, 3 and
//! 4 as git documents them (gitformat-index); for anything else (an index
//! split with `core.splitIndex` or made sparse, whose entries live elsewhere;
//! an extension git calls required; a file they cannot follow) they answer
//! "not mine" and the caller asks libgit2 or git. Only stage-0 entries are
//! reported, as libgit2's `get_path(path, 0)` does. The reader does not
//! verify the trailer checksum: git replaces the index by renaming a
//! complete file, so a reader never sees a torn one. The writer works as
//! `git update-index --index-info` does, under git's `index.lock`, reading
//! the index only once it holds the lock, and replacing it by a rename; the
//! entries it writes carry no stat data, as git's do, so git re-reads those
//! files once. It hands back to git any change git would refuse or record
//! more for (a path that is both a file and a folder, an unusual path, a
//! conflicted path, whose stages git keeps for `git checkout -m`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use git2::Oid;
use sha1::{Digest, Sha1};

use crate::error::{Error, Result};

/// Length of the fixed part of an entry before the flags: ten 32-bit stat
/// fields and a SHA-1 object name.
const STAT_AND_ID: usize = 40 + 20;
/// Offsets in an entry of the fields the writer reads or sets.
const MTIME: usize = 8;
const MODE: usize = 24;
const SIZE: usize = 36;
const ID: usize = 40;
/// The "extended" bit of an entry's flags (versions 3 and 4).
const EXTENDED: u16 = 0x4000;
/// The 12 bits of an entry's flags that hold its path length (saturated).
const NAME_LENGTH: u16 = 0x0fff;
/// The mode of a regular, non-executable file.
const REGULAR_FILE: u32 = 0o100644;
/// An index trailer: the SHA-1 of everything before it.
const TRAILER: usize = 20;
/// The header: signature, version, entry count.
const HEADER: usize = 12;

/// The object ids that the index at `index_file` stages (stage 0) for each
/// of `paths` that it holds. A missing index file holds nothing. `None` when
/// the file is in a form this reader does not follow (see the module doc).
pub fn staged(index_file: &Path, paths: &BTreeSet<&str>) -> Result<Option<HashMap<String, Oid>>> {
    let bytes = match fs::read(index_file) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Some(HashMap::new())),
        Err(e) => return Err(Error::io("read", index_file, e)),
    };
    Ok(scan(&bytes, paths))
}

/// Stages in the index at `index_file` what each of `changes` says: a path
/// mapped to a blob id becomes a regular file with that content, a path
/// mapped to `None` leaves the index. Returns `false`, having changed
/// nothing, when the index or a change is one this writer leaves to
/// `git update-index` (see the module doc), including a missing index.
///
/// Fails with [`Error::LockBusy`] when a git command holds the index lock.
pub fn update(index_file: &Path, changes: &BTreeMap<&str, Option<Oid>>) -> Result<bool> {
    update_inner(index_file, changes, None)
}

/// [`update`], keeping SHA-1 midstates of the index in `midstates` (a file
/// of the caller's, not git's) so that the next rewrite hashes only what
/// follows the first byte it changes: a write that changes a few paths near
/// the end of a large index re-hashes little of it. The file names the
/// index it describes by its trailer and length; for any other index (git
/// rewrote it, the file is missing or damaged) the whole index is hashed, as
/// [`update`] does, and the file is written anew. It is a cache: not
/// fsync'd, and losing it costs one full hash.
pub fn update_resuming(
    index_file: &Path,
    changes: &BTreeMap<&str, Option<Oid>>,
    midstates: &Path,
) -> Result<bool> {
    update_inner(index_file, changes, Some(midstates))
}

fn update_inner(
    index_file: &Path,
    changes: &BTreeMap<&str, Option<Oid>>,
    midstates: Option<&Path>,
) -> Result<bool> {
    if !changes.keys().all(|p| plain_path(p)) {
        return Ok(false);
    }
    let lock = IndexLock::take(index_file)?;
    let mut file = match File::open(index_file) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io("open", index_file, e)),
    };
    let meta = file
        .metadata()
        .map_err(|e| Error::io("stat", index_file, e))?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.read_to_end(&mut bytes)
        .map_err(|e| Error::io("read", index_file, e))?;
    let mtime = {
        use std::os::unix::fs::MetadataExt;
        (meta.mtime() as u32, meta.mtime_nsec() as u32)
    };
    let Some(body) = rewrite_body(&bytes, changes, mtime) else {
        return Ok(false);
    };
    let Some(mut new) = body else {
        return Ok(true);
    };
    let Some(cache) = midstates else {
        let sum = Sha1::digest(&new);
        new.extend_from_slice(&sum);
        lock.commit(&new, meta.permissions())?;
        return Ok(true);
    };
    let known = Midstates::load(cache, &bytes);
    let old_body = &bytes[..bytes.len() - TRAILER];
    let (sum, states) = hash_resuming(old_body, &new, &known);
    let len = new.len();
    new.extend_from_slice(&sum);
    lock.commit(&new, meta.permissions())?;
    // The index is replaced: the midstates follow it, or say nothing.
    Midstates::save(cache, &sum, len, &states);
    Ok(true)
}

/// SHA-1's initial state.
const SHA1_INIT: [u32; 5] = [
    0x6745_2301,
    0xefcd_ab89,
    0x98ba_dcfe,
    0x1032_5476,
    0xc3d2_e1f0,
];
/// Bytes between two kept midstates: a multiple of SHA-1's 64-byte block.
const MIDSTATE_STEP: usize = 1 << 18;
/// The first line of a midstates file.
const MIDSTATE_MAGIC: &[u8] = b"cairn index sha1 midstates 1\n";

/// The SHA-1 states after every [`MIDSTATE_STEP`] bytes of an index file
/// (its trailer excluded): `states[i]` is the state after `(i + 1) *
/// MIDSTATE_STEP` bytes.
struct Midstates;

impl Midstates {
    /// The midstates in `cache` if they describe `index` (the whole file,
    /// trailer included), else none.
    fn load(cache: &Path, index: &[u8]) -> Vec<[u32; 5]> {
        let Ok(mut b) = fs::read(cache) else {
            return Vec::new();
        };
        // A CRC-32 of the rest closes the file: damage is a miss.
        let Some(crc) = b.len().checked_sub(4).map(|n| b.split_off(n)) else {
            return Vec::new();
        };
        if crc[..] != crc32fast::hash(&b).to_be_bytes() {
            return Vec::new();
        }
        let head = MIDSTATE_MAGIC.len() + TRAILER + 8;
        let (Some(magic), Some(trailer), Some(len)) = (
            b.get(..MIDSTATE_MAGIC.len()),
            b.get(MIDSTATE_MAGIC.len()..MIDSTATE_MAGIC.len() + TRAILER),
            b.get(head - 8..head),
        ) else {
            return Vec::new();
        };
        let body_len = index.len().saturating_sub(TRAILER);
        let len = u64::from_be_bytes(len.try_into().unwrap_or_default());
        if magic != MIDSTATE_MAGIC
            || index.len() < TRAILER
            || trailer != &index[body_len..]
            || len != body_len as u64
            || !(b.len() - head).is_multiple_of(20)
            || (b.len() - head) / 20 > body_len / MIDSTATE_STEP
        {
            return Vec::new();
        }
        b[head..]
            .chunks_exact(20)
            .map(|c| {
                let mut state = [0u32; 5];
                for (w, bytes) in state.iter_mut().zip(c.chunks_exact(4)) {
                    *w = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
                }
                state
            })
            .collect()
    }

    /// Records `states` for the index whose body is `len` bytes with
    /// trailer `sum`; a failure only leaves an older file, which no longer
    /// matches the index.
    fn save(cache: &Path, sum: &[u8], len: usize, states: &[[u32; 5]]) {
        let mut b = Vec::with_capacity(MIDSTATE_MAGIC.len() + TRAILER + 8 + states.len() * 20);
        b.extend_from_slice(MIDSTATE_MAGIC);
        b.extend_from_slice(sum);
        b.extend_from_slice(&(len as u64).to_be_bytes());
        for state in states {
            for w in state {
                b.extend_from_slice(&w.to_be_bytes());
            }
        }
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_be_bytes());
        let mut tmp = cache.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        if fs::write(&tmp, &b)
            .and_then(|()| fs::rename(&tmp, cache))
            .is_err()
        {
            let _ = fs::remove_file(&tmp);
            let _ = fs::remove_file(cache);
        }
    }
}

/// Feeds whole 64-byte blocks of `data` to SHA-1's compression function.
fn compress_blocks(state: &mut [u32; 5], data: &[u8]) {
    use sha1::digest::generic_array::GenericArray;
    for block in data.chunks_exact(64) {
        sha1::compress(state, std::slice::from_ref(GenericArray::from_slice(block)));
    }
}

/// How many leading bytes `a` and `b` share.
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    const CHUNK: usize = 4096;
    let n = a.len().min(b.len());
    let mut at = 0;
    while at + CHUNK <= n && a[at..at + CHUNK] == b[at..at + CHUNK] {
        at += CHUNK;
    }
    at + a[at..n]
        .iter()
        .zip(&b[at..n])
        .take_while(|(x, y)| x == y)
        .count()
}

/// The SHA-1 of `new`, resumed from the last of `known` (midstates of
/// `old`) that lies within the bytes `new` shares with `old`; with the
/// midstates of `new`.
fn hash_resuming(old: &[u8], new: &[u8], known: &[[u32; 5]]) -> ([u8; 20], Vec<[u32; 5]>) {
    let usable = (common_prefix(old, new) / MIDSTATE_STEP).min(known.len());
    let mut states = known[..usable].to_vec();
    let mut state = states.last().copied().unwrap_or(SHA1_INIT);
    let mut at = usable * MIDSTATE_STEP;
    let blocks_end = new.len() / 64 * 64;
    while at < blocks_end {
        let next = ((at / MIDSTATE_STEP + 1) * MIDSTATE_STEP).min(blocks_end);
        compress_blocks(&mut state, &new[at..next]);
        at = next;
        if at.is_multiple_of(MIDSTATE_STEP) {
            states.push(state);
        }
    }
    // The last partial block, the 0x80 marker, zeros, the length in bits.
    let mut tail = new[blocks_end..].to_vec();
    tail.push(0x80);
    while tail.len() % 64 != 56 {
        tail.push(0);
    }
    tail.extend_from_slice(&(new.len() as u64 * 8).to_be_bytes());
    compress_blocks(&mut state, &tail);
    let mut sum = [0u8; 20];
    for (out, w) in sum.chunks_exact_mut(4).zip(state) {
        out.copy_from_slice(&w.to_be_bytes());
    }
    (sum, states)
}

/// Whether git would take `path` as a path in the index without complaint:
/// relative, no empty, `.` or `..` component, nothing under `.git`, no NUL.
/// The store writes no other path.
pub(crate) fn plain_path(path: &str) -> bool {
    !path.is_empty()
        && !path.contains('\0')
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".." && !c.eq_ignore_ascii_case(".git"))
}

/// git's `index.lock`, created exclusively; removed on drop unless it has
/// replaced the index.
struct IndexLock {
    path: PathBuf,
    index: PathBuf,
    file: File,
    done: bool,
}

impl IndexLock {
    fn take(index: &Path) -> Result<Self> {
        let mut name = index.as_os_str().to_owned();
        name.push(".lock");
        let path = PathBuf::from(name);
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(file) => Ok(IndexLock {
                path,
                index: index.to_path_buf(),
                file,
                done: false,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(Error::LockBusy {
                path,
                holder: "a git process".into(),
                waited_ms: 0,
            }),
            Err(e) => Err(Error::io("create", path, e)),
        }
    }

    /// Writes `bytes` with the index's permissions and renames the lock over
    /// the index. Not fsync'd: see `Store::stage`.
    fn commit(mut self, bytes: &[u8], perm: fs::Permissions) -> Result<()> {
        self.file
            .write_all(bytes)
            .and_then(|()| self.file.set_permissions(perm))
            .map_err(|e| Error::io("write", &self.path, e))?;
        crate::failpoint::trace::write(&self.path);
        crate::failpoint::failpoint!("git_index::rename");
        crate::failpoint::trace::rename(&self.path, &self.index);
        fs::rename(&self.path, &self.index).map_err(|e| Error::io("rename", &self.path, e))?;
        self.done = true;
        Ok(())
    }
}

impl Drop for IndexLock {
    fn drop(&mut self) {
        if !self.done {
            crate::failpoint::trace::remove(&self.path);
            let _ = fs::remove_file(&self.path);
        }
    }
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

/// Appends `val` in the encoding [`varint`] reads.
fn put_varint(out: &mut Vec<u8>, mut val: usize) {
    let mut buf = [0u8; 16];
    let mut pos = buf.len() - 1;
    buf[pos] = (val & 0x7f) as u8;
    loop {
        val >>= 7;
        if val == 0 {
            break;
        }
        val -= 1;
        pos -= 1;
        buf[pos] = 0x80 | (val & 0x7f) as u8;
    }
    out.extend_from_slice(&buf[pos..]);
}

/// Where one entry lies in the file.
#[derive(Clone, Copy)]
struct Span {
    start: usize,
    /// The end of the stat data, id and flags (and extended flags).
    head_end: usize,
    /// The end of the path and its padding.
    end: usize,
    flags: u16,
}

impl Span {
    fn stage(&self) -> u16 {
        (self.flags >> 12) & 0x3
    }
}

/// Walks an index file's entries in order, decoding each path.
struct Walker<'a> {
    b: &'a [u8],
    version: u32,
    /// Entries not read yet.
    left: usize,
    /// Where the next entry (or, once all are read, the extensions) start.
    at: usize,
    /// Where the trailer starts.
    end: usize,
    /// The path of the entry read last.
    path: Vec<u8>,
}

impl<'a> Walker<'a> {
    fn new(b: &'a [u8]) -> Option<Self> {
        if b.get(0..4)? != b"DIRC" {
            return None;
        }
        let version = be32(b, 4)?;
        if !(2..=4).contains(&version) {
            return None;
        }
        Some(Walker {
            b,
            version,
            left: be32(b, 8)? as usize,
            at: HEADER,
            end: b.len().checked_sub(TRAILER)?,
            path: Vec::new(),
        })
    }

    /// The next entry, its path in `self.path`; `None` when there is none
    /// left or the file cannot be followed (check `left`).
    fn next(&mut self) -> Option<Span> {
        self.left = self.left.checked_sub(1)?;
        let b = self.b;
        let start = self.at;
        let flags = be16(b, start + STAT_AND_ID)?;
        let mut at = start + STAT_AND_ID + 2;
        if flags & EXTENDED != 0 {
            if self.version < 3 {
                return None;
            }
            at += 2;
        }
        let head_end = at;
        if self.version == 4 {
            let strip = varint(b, &mut at)?;
            self.path.truncate(self.path.len().checked_sub(strip)?);
        } else {
            self.path.clear();
        }
        let nul = b.get(at..self.end)?.iter().position(|c| *c == 0)?;
        self.path.extend_from_slice(&b[at..at + nul]);
        at += nul + 1;
        if self.version < 4 {
            // Entries are padded with 1–8 NULs to a multiple of eight bytes.
            at = start + (at - start).div_ceil(8) * 8;
        }
        if at > self.end {
            return None;
        }
        self.at = at;
        Some(Span {
            start,
            head_end,
            end: at,
            flags,
        })
    }

    /// The extensions after the entries, as (signature, data); `None` unless
    /// all entries have been read and the extensions fill the file up to
    /// the trailer.
    fn extensions(&self) -> Option<Vec<(&'a [u8], &'a [u8])>> {
        if self.left != 0 {
            return None;
        }
        let b = self.b;
        let mut at = self.at;
        let mut found = Vec::new();
        while at + 8 <= self.end {
            let data = at + 8;
            let len = be32(b, at + 4)? as usize;
            found.push((&b[at..at + 4], b.get(data..data.checked_add(len)?)?));
            at = data + len;
        }
        (at == self.end).then_some(found)
    }
}

fn scan(b: &[u8], paths: &BTreeSet<&str>) -> Option<HashMap<String, Oid>> {
    let mut walk = Walker::new(b)?;
    let mut found = HashMap::new();
    while walk.left > 0 {
        let e = walk.next()?;
        if e.stage() == 0 {
            if let Ok(p) = std::str::from_utf8(&walk.path) {
                if paths.contains(p) {
                    found.insert(
                        p.to_string(),
                        Oid::from_bytes(&b[e.start + ID..e.start + STAT_AND_ID]).ok()?,
                    );
                }
            }
        }
    }
    // A split index keeps its entries elsewhere, a sparse one some of them.
    let ext = walk.extensions()?;
    ext.iter().all(|(sig, _)| !required(sig)).then_some(found)
}

/// Whether git requires a reader to understand an extension (its signature
/// does not start with a capital letter), like a split index's `link`.
fn required(sig: &[u8]) -> bool {
    !sig[0].is_ascii_uppercase()
}

/// The entries the rewritten index is built from.
struct Writer {
    out: Vec<u8>,
    version: u32,
    count: u32,
    /// Whether an entry written has extended flags (version 3 needs them).
    extended: bool,
    /// The path of the entry written last (version 4 encodes the next path
    /// against it).
    last: Vec<u8>,
    /// Whether `last` is the path of the entry before the one being copied
    /// in the old file, so that a version 4 entry can be copied as it is.
    in_step: bool,
}

impl Writer {
    /// An entry of the old index, `raw` from its start to its end, `head`
    /// bytes of them stat data, id and flags. `racy` smudges its size.
    fn copy(&mut self, raw: &[u8], head: usize, path: &[u8], racy: bool) {
        let start = self.out.len();
        if self.version == 4 && !self.in_step {
            self.out.extend_from_slice(&raw[..head]);
            self.put_path(path);
        } else {
            self.out.extend_from_slice(raw);
        }
        if racy {
            self.out[start + SIZE..start + SIZE + 4].fill(0);
        }
        let flags = u16::from_be_bytes([raw[STAT_AND_ID], raw[STAT_AND_ID + 1]]);
        self.extended |= flags & EXTENDED != 0;
        self.finish(path);
    }

    /// A new stage-0 entry for a regular file, with no stat data.
    fn add(&mut self, path: &[u8], id: Oid) {
        let start = self.out.len();
        self.out.extend_from_slice(&[0; MODE]);
        self.out.extend_from_slice(&REGULAR_FILE.to_be_bytes());
        self.out.extend_from_slice(&[0; ID - MODE - 4]);
        self.out.extend_from_slice(id.as_bytes());
        let flags = path.len().min(NAME_LENGTH as usize) as u16;
        self.out.extend_from_slice(&flags.to_be_bytes());
        if self.version == 4 {
            self.put_path(path);
        } else {
            self.out.extend_from_slice(path);
            let len = (STAT_AND_ID + 2 + path.len() + 8) & !7;
            self.out.resize(start + len, 0);
        }
        self.finish(path);
    }

    /// A version 4 path: how much of the last path to drop, then the rest.
    fn put_path(&mut self, path: &[u8]) {
        let common = self
            .last
            .iter()
            .zip(path)
            .take_while(|(a, b)| a == b)
            .count();
        put_varint(&mut self.out, self.last.len() - common);
        self.out.extend_from_slice(&path[common..]);
        self.out.push(0);
    }

    fn finish(&mut self, path: &[u8]) {
        self.count += 1;
        if self.version == 4 {
            self.last.clear();
            self.last.extend_from_slice(path);
        }
    }
}

/// The index `b` with `changes` applied: `None` when this writer leaves the
/// index to git, `Some(None)` when nothing changes. `mtime` is the index
/// file's: entries modified no earlier are "racily clean" (git could take
/// a later edit within the same tick for no change), and once the index is
/// newer nothing would tell, so their size is zeroed as git does.
#[cfg(test)]
fn rewrite(
    b: &[u8],
    changes: &BTreeMap<&str, Option<Oid>>,
    mtime: (u32, u32),
) -> Option<Option<Vec<u8>>> {
    rewrite_body(b, changes, mtime).map(|body| {
        body.map(|mut out| {
            let sum = Sha1::digest(&out);
            out.extend_from_slice(&sum);
            out
        })
    })
}

/// [`rewrite`] without the trailer: the bytes it is the SHA-1 of.
fn rewrite_body(
    b: &[u8],
    changes: &BTreeMap<&str, Option<Oid>>,
    mtime: (u32, u32),
) -> Option<Option<Vec<u8>>> {
    let changes: Vec<(&[u8], Option<Oid>)> =
        changes.iter().map(|(p, id)| (p.as_bytes(), *id)).collect();
    let guard = FileOrFolder::new(&changes)?;
    let mut walk = Walker::new(b)?;
    let mut w = Writer {
        out: Vec::with_capacity(b.len() + changes.len() * 96),
        version: walk.version,
        count: 0,
        extended: false,
        last: Vec::new(),
        in_step: true,
    };
    w.out.extend_from_slice(&b[..HEADER]);
    let mut touched: Vec<&[u8]> = Vec::new();
    let mut next = 0;
    let mut guard = guard.walk();
    while walk.left > 0 {
        let e = walk.next()?;
        let path = walk.path.as_slice();
        // New paths that sort before this entry.
        while let Some((p, id)) = changes.get(next).filter(|(p, _)| *p < path) {
            if let Some(id) = id {
                w.add(p, *id);
                w.in_step = false;
                touched.push(p);
            }
            next += 1;
        }
        if let Some((p, id)) = changes.get(next).filter(|(p, _)| *p == path) {
            if e.stage() != 0 {
                return None;
            }
            next += 1;
            let same = id.is_some_and(|id| {
                e.flags & EXTENDED == 0
                    && be32(b, e.start + MODE) == Some(REGULAR_FILE)
                    && &b[e.start + ID..e.start + STAT_AND_ID] == id.as_bytes()
            });
            if !same {
                touched.push(p);
                // A replacement keeps the path, so the next entry still
                // follows on from the path written last; a removal does not.
                match id {
                    Some(id) => {
                        w.add(p, *id);
                        w.in_step = true;
                    }
                    None => w.in_step = false,
                }
                continue;
            }
        }
        if !guard.allows(path) {
            return None;
        }
        let entry_mtime = (be32(b, e.start + MTIME)?, be32(b, e.start + MTIME + 4)?);
        let racy = mtime.0 != 0 && entry_mtime >= mtime && e.stage() == 0;
        w.copy(&b[e.start..e.end], e.head_end - e.start, path, racy);
        w.in_step = true;
    }
    for (p, id) in &changes[next..] {
        if let Some(id) = id {
            w.add(p, *id);
            touched.push(p);
        }
    }
    let extensions = walk.extensions()?;
    if extensions.iter().any(|(sig, _)| required(sig)) {
        return None;
    }
    if touched.is_empty() {
        return Some(None);
    }
    for (sig, data) in extensions {
        match sig {
            b"TREE" => {
                let mut tree = CacheTree::parse(data)?;
                for p in &touched {
                    tree.invalidate(p);
                }
                let mut ext = Vec::new();
                tree.write(&mut ext);
                put_extension(&mut w.out, sig, &ext);
            }
            // Resolve-undo records concern conflicted paths, which this
            // writer does not touch.
            b"REUC" => put_extension(&mut w.out, sig, data),
            // Optional caches keyed to the old entries or the file's layout
            // (untracked files, fsmonitor, entry offsets): git rebuilds
            // them when it wants them.
            _ => {}
        }
    }
    if w.version < 4 {
        w.version = if w.extended { 3 } else { 2 };
    }
    w.out[4..8].copy_from_slice(&w.version.to_be_bytes());
    w.out[8..12].copy_from_slice(&w.count.to_be_bytes());
    Some(Some(w.out))
}

fn put_extension(out: &mut Vec<u8>, sig: &[u8], data: &[u8]) {
    out.extend_from_slice(sig);
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
}

/// What keeps a new file from landing where the index has a folder, or a
/// new folder where it has a file (git refuses both without `--replace`).
struct FileOrFolder<'c> {
    /// The folders the added paths need, sorted.
    folders: Vec<&'c [u8]>,
    /// Each added path with a `/` after it: nothing may sit under it.
    as_folder: Vec<Vec<u8>>,
}

impl<'c> FileOrFolder<'c> {
    /// `None` when the changes collide among themselves.
    fn new(changes: &[(&'c [u8], Option<Oid>)]) -> Option<Self> {
        let added: Vec<&[u8]> = changes
            .iter()
            .filter_map(|(p, id)| id.map(|_| *p))
            .collect();
        let mut folders: Vec<&[u8]> = added
            .iter()
            .flat_map(|p| {
                p.iter()
                    .enumerate()
                    .filter(|(_, c)| **c == b'/')
                    .map(|(i, _)| &p[..i])
            })
            .collect();
        folders.sort_unstable();
        folders.dedup();
        let mut as_folder: Vec<Vec<u8>> = added.iter().map(|p| [*p, b"/"].concat()).collect();
        as_folder.sort_unstable();
        if added.iter().any(|p| folders.binary_search(p).is_ok()) {
            return None;
        }
        Some(FileOrFolder { folders, as_folder })
    }

    fn walk(&self) -> GuardWalk<'_, 'c> {
        GuardWalk {
            guard: self,
            folder: 0,
            file: 0,
        }
    }
}

/// [`FileOrFolder`] checked against the kept entries in their order.
struct GuardWalk<'g, 'c> {
    guard: &'g FileOrFolder<'c>,
    folder: usize,
    file: usize,
}

impl GuardWalk<'_, '_> {
    /// Whether an entry at `path` may stay beside the added paths; call in
    /// the index's order.
    fn allows(&mut self, path: &[u8]) -> bool {
        let folders = &self.guard.folders;
        while self.folder < folders.len() && folders[self.folder] < path {
            self.folder += 1;
        }
        if folders.get(self.folder) == Some(&path) {
            return false;
        }
        // The paths under a prefix sort together, from the prefix on.
        let files = &self.guard.as_folder;
        while let Some(prefix) = files.get(self.file) {
            if path.starts_with(prefix) {
                return false;
            }
            if prefix.as_slice() < path {
                self.file += 1;
            } else {
                break;
            }
        }
        true
    }
}

/// git's cache of the tree ids of the index's folders (the `TREE`
/// extension): each folder's name, how many entries it covers (-1 once
/// invalidated), its tree id when valid, and its subfolders in file order.
struct CacheTree<'a> {
    name: &'a [u8],
    entries: &'a [u8],
    id: Option<&'a [u8]>,
    children: Vec<CacheTree<'a>>,
}

impl<'a> CacheTree<'a> {
    fn parse(data: &'a [u8]) -> Option<Self> {
        let mut at = 0;
        let root = Self::parse_at(data, &mut at, 0)?;
        (at == data.len()).then_some(root)
    }

    fn parse_at(data: &'a [u8], at: &mut usize, depth: usize) -> Option<Self> {
        if depth > 4096 {
            return None;
        }
        let field = |at: &mut usize, end: u8| -> Option<&'a [u8]> {
            let len = data.get(*at..)?.iter().position(|c| *c == end)?;
            let f = &data[*at..*at + len];
            *at += len + 1;
            Some(f)
        };
        let name = field(at, 0)?;
        let entries = field(at, b' ')?;
        let subtrees: usize = std::str::from_utf8(field(at, b'\n')?).ok()?.parse().ok()?;
        let count: i64 = std::str::from_utf8(entries).ok()?.parse().ok()?;
        let id = if count >= 0 {
            let id = data.get(*at..*at + 20)?;
            *at += 20;
            Some(id)
        } else {
            None
        };
        let children = (0..subtrees)
            .map(|_| Self::parse_at(data, at, depth + 1))
            .collect::<Option<Vec<_>>>()?;
        Some(CacheTree {
            name,
            entries,
            id,
            children,
        })
    }

    /// Marks the folders along `path` stale, as git does for a changed
    /// path, and forgets a cached folder that `path` itself names.
    fn invalidate(&mut self, path: &[u8]) {
        self.id = None;
        let (first, rest) = match path.iter().position(|c| *c == b'/') {
            Some(i) => (&path[..i], Some(&path[i + 1..])),
            None => (path, None),
        };
        let child = self.children.iter().position(|c| c.name == first);
        match (child, rest) {
            (Some(i), Some(rest)) => self.children[i].invalidate(rest),
            (Some(i), None) => {
                self.children.remove(i);
            }
            (None, _) => {}
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.name);
        out.push(0);
        match self.id {
            Some(id) => {
                out.extend_from_slice(self.entries);
                writeln!(out, " {}", self.children.len()).expect("writing to a Vec");
                out.extend_from_slice(id);
            }
            None => {
                writeln!(out, "-1 {}", self.children.len()).expect("writing to a Vec");
            }
        }
        for c in &self.children {
            c.write(out);
        }
    }
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

    /// Runs git with `GIT_INDEX_FILE` set, feeding it `input`.
    fn git_with_index(dir: &Path, index: &Path, args: &[&str], input: &[u8]) -> String {
        use std::io::Write;
        let mut c = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .env("GIT_INDEX_FILE", index)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(input).unwrap();
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    fn hash(dir: &Path, content: &str) -> Oid {
        let out = git_with_index(
            dir,
            &dir.join(".git/index"),
            &["hash-object", "-w", "--stdin"],
            content.as_bytes(),
        );
        Oid::from_str(out.trim()).unwrap()
    }

    /// Applies `changes` to a copy of the repository's index with
    /// `git update-index --index-info` and to another with [`update`], and
    /// asserts that git reads the same entries from both and writes the same
    /// tree from both (a cached folder id left valid would show there).
    fn same_as_git(dir: &Path, changes: &BTreeMap<&str, Option<Oid>>) {
        let index = dir.join(".git/index");
        let (theirs, ours) = (dir.join(".git/index-git"), dir.join(".git/index-ours"));
        std::fs::copy(&index, &theirs).unwrap();
        std::fs::copy(&index, &ours).unwrap();
        let mut input = Vec::new();
        for (path, id) in changes {
            match id {
                Some(id) => input.extend_from_slice(format!("100644 {id}\t{path}").as_bytes()),
                None => input.extend_from_slice(format!("0 {}\t{path}", Oid::ZERO_SHA1).as_bytes()),
            }
            input.push(0);
        }
        git_with_index(
            dir,
            &theirs,
            &["update-index", "-z", "--index-info"],
            &input,
        );
        assert!(
            update(&ours, changes).unwrap(),
            "the writer took the change"
        );
        assert!(!dir.join(".git/index-ours.lock").exists());
        for args in [
            &["ls-files", "-s", "-z"][..],
            &["write-tree"],
            &["ls-files", "-s", "-z"],
        ] {
            let want = git_with_index(dir, &theirs, args, b"");
            let got = git_with_index(dir, &ours, args, b"");
            assert_eq!(got, want, "git {args:?}");
        }
    }

    /// The index of [`repo`] without its conflict, with every folder's tree
    /// id cached (`git write-tree` fills the TREE extension).
    fn settled_repo(version: &str) -> tempfile::TempDir {
        let dir = repo();
        let d = dir.path();
        git(d, &["update-index", "--force-remove", "conflicted"]);
        git(d, &["update-index", "--index-version", version]);
        git(d, &["write-tree"]);
        dir
    }

    #[test]
    fn writes_what_git_update_index_writes_in_every_index_version() {
        for version in ["2", "3", "4"] {
            let dir = settled_repo(version);
            let d = dir.path();
            let (one, two) = (hash(d, "one\n"), hash(d, "two\n"));
            let long = format!("deep/{}/leaf.yaml", "x".repeat(5000));
            let folder: Vec<String> = (0..300)
                .filter(|i| i % 7 == 2)
                .map(|i| format!("memory/global/02/mem_{i:05}.yaml"))
                .collect();
            let cases: Vec<BTreeMap<&str, Option<Oid>>> = vec![
                // Modify one file in the middle.
                [("memory/global/03/mem_00010.yaml", Some(one))].into(),
                // Add beside existing files, in a new folder, first and
                // last; delete; modify the long path; replace the
                // intent-to-add entry.
                [
                    ("0first", Some(one)),
                    ("memory/global/03/mem_00010.yaml", None),
                    ("memory/global/03/mem_00011.yaml", None),
                    ("memory/global/03/mem_00010b.yaml", Some(two)),
                    ("memory/global/zz/new.yaml", Some(one)),
                    ("mirror/README.md", Some(two)),
                    (long.as_str(), Some(two)),
                    ("new.txt", Some(one)),
                    ("zzz/last", Some(one)),
                    ("not/there", None),
                ]
                .into(),
                // Delete a whole folder's files.
                folder.iter().map(|p| (p.as_str(), None)).collect(),
            ];
            for changes in &cases {
                same_as_git(d, changes);
            }
        }
    }

    #[test]
    fn leaves_nothing_changed_when_the_change_is_already_staged() {
        let dir = settled_repo("4");
        let d = dir.path();
        let index = d.join(".git/index");
        let id = listed(d)["a"];
        let before = std::fs::read(&index).unwrap();
        assert!(update(&index, &[("a", Some(id)), ("gone", None)].into()).unwrap());
        assert_eq!(std::fs::read(&index).unwrap(), before);
    }

    #[test]
    fn hands_files_over_folders_conflicts_and_odd_paths_to_git() {
        let dir = repo();
        let d = dir.path();
        let index = d.join(".git/index");
        let id = hash(d, "x\n");
        let before = std::fs::read(&index).unwrap();
        let refused: [BTreeMap<&str, Option<Oid>>; 7] = [
            [("a/under_a_file", Some(id))].into(),
            [("memory/global", Some(id))].into(),
            [("q/r", Some(id)), ("q/r/s", Some(id))].into(),
            [("conflicted", Some(id))].into(),
            [("conflicted", None)].into(),
            [("../outside", Some(id))].into(),
            [(".git/config", Some(id))].into(),
        ];
        for changes in &refused {
            assert!(!update(&index, changes).unwrap(), "{changes:?}");
            assert_eq!(std::fs::read(&index).unwrap(), before, "{changes:?}");
            assert!(!d.join(".git/index.lock").exists());
        }
        // Removing the file first makes room for the folder.
        let dir = settled_repo("2");
        let id = hash(dir.path(), "x\n");
        same_as_git(
            dir.path(),
            &[("a", None), ("a/now_a_folder", Some(id))].into(),
        );
    }

    #[test]
    fn waits_for_a_git_command_holding_the_index_lock() {
        let dir = settled_repo("2");
        let d = dir.path();
        let index = d.join(".git/index");
        let before = std::fs::read(&index).unwrap();
        std::fs::write(d.join(".git/index.lock"), b"git's").unwrap();
        let err = update(&index, &[("a", Some(Oid::ZERO_SHA1))].into()).unwrap_err();
        assert!(
            matches!(&err, Error::LockBusy { path, .. } if path.ends_with("index.lock")),
            "{err:?}"
        );
        assert_eq!(std::fs::read(&index).unwrap(), before);
        assert_eq!(std::fs::read(d.join(".git/index.lock")).unwrap(), b"git's");
    }

    #[test]
    fn hands_a_split_index_to_git() {
        let dir = settled_repo("2");
        let d = dir.path();
        let index = d.join(".git/index");
        git(d, &["update-index", "--split-index"]);
        let before = std::fs::read(&index).unwrap();
        assert!(!update(&index, &[("a", Some(Oid::ZERO_SHA1))].into()).unwrap());
        assert_eq!(std::fs::read(&index).unwrap(), before);
        assert!(!update(&d.join(".git/none"), &[("a", None)].into()).unwrap());
    }

    /// An entry modified in the same tick as the index was written is only
    /// known to be unchanged by comparing contents; once the index is
    /// rewritten (and newer), its stat data alone would vouch for it, so
    /// the writer zeroes its size as git does.
    #[test]
    fn a_racily_clean_entry_stays_detectable() {
        let dir = settled_repo("2");
        let d = dir.path();
        git(d, &["config", "core.trustctime", "false"]);
        let file = d.join("racy.txt");
        let index = d.join(".git/index");
        // A tick well in the past, so that the rewritten index is newer.
        let stamp = std::time::SystemTime::now() - std::time::Duration::from_secs(100);
        let set = |p: &Path| {
            std::fs::File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_modified(stamp)
                .unwrap()
        };
        std::fs::write(&file, "aaaa\n").unwrap();
        set(&file);
        git(d, &["add", "racy.txt"]);
        // The index written in the same tick as the file, which is then
        // changed again keeping its size and mtime: only the index being no
        // older than the entry tells git to compare contents.
        set(&index);
        std::fs::write(&file, "bbbb\n").unwrap();
        set(&file);
        // (`--no-optional-locks`: status would otherwise rewrite the index.)
        let status = [
            "--no-optional-locks",
            "status",
            "--porcelain",
            "--",
            "racy.txt",
        ];
        assert_eq!(git(d, &status), "AM racy.txt");
        let id = hash(d, "x\n");
        assert!(update(&index, &[("elsewhere", Some(id))].into()).unwrap());
        assert_eq!(git(d, &status), "AM racy.txt", "staged, then modified");
    }

    /// A resumed hash is the hash of the whole input, wherever the change
    /// falls, whatever midstates the old bytes had; and it hands back the
    /// midstates a full hash of the new bytes would.
    #[test]
    fn a_resumed_hash_is_the_whole_hash() {
        let old: Vec<u8> = (0..3 * MIDSTATE_STEP + 1000)
            .map(|i| (i * 7 + i / 251) as u8)
            .collect();
        let (sum, states) = hash_resuming(&[], &old, &[]);
        assert_eq!(sum[..], Sha1::digest(&old)[..]);
        assert_eq!(states.len(), 3);
        for (at, grow) in [
            (0, 0),
            (5, 0),
            (MIDSTATE_STEP - 1, 0),
            (MIDSTATE_STEP, 0),
            (2 * MIDSTATE_STEP + 17, 0),
            (old.len() - 1, 0),
            (MIDSTATE_STEP + 3, 100),
            (2 * MIDSTATE_STEP + 3, -70_000),
            (old.len(), 64),
        ] {
            let mut new = old.clone();
            if at < new.len() {
                new[at] ^= 0x5a;
            }
            match grow {
                g if g > 0 => new.extend(std::iter::repeat_n(3u8, g as usize)),
                g => new.truncate(new.len() - (-g) as usize),
            }
            let (sum, got) = hash_resuming(&old, &new, &states);
            assert_eq!(sum[..], Sha1::digest(&new)[..], "change at {at}, {grow}");
            assert_eq!(
                got,
                hash_resuming(&[], &new, &[]).1,
                "change at {at}, {grow}"
            );
            // Midstates of other bytes are not used past what is shared.
            let (sum, _) = hash_resuming(&new, &old, &got);
            assert_eq!(sum[..], Sha1::digest(&old)[..], "back from {at}, {grow}");
        }
    }

    /// An index of `n` more files under `bulk/`, added by git.
    fn with_many_files(dir: &Path, n: usize) {
        let id = hash(dir, "bulk\n");
        let input: String = (0..n)
            .map(|i| format!("100644 {id}\tbulk/{:02x}/file_{i:06}.yaml\n", i % 61))
            .collect();
        git_with_index(
            dir,
            &dir.join(".git/index"),
            &["update-index", "--index-info"],
            input.as_bytes(),
        );
        git(dir, &["write-tree"]);
    }

    /// Rewrites that resume the hash from the midstates leave an index git
    /// reads (it checks the trailer) and that matches git's own update,
    /// also after git rewrote the index in between (stale midstates) and
    /// when the midstates file is damaged.
    #[test]
    fn resumed_rewrites_leave_indexes_git_reads() {
        let dir = settled_repo("2");
        let d = dir.path();
        with_many_files(d, 12_000);
        let index = d.join(".git/index");
        assert!(fs::metadata(&index).unwrap().len() > 4 * MIDSTATE_STEP as u64);
        let cache = d.join("midstates");
        let (one, two) = (hash(d, "one\n"), hash(d, "two\n"));
        let rounds: [(&str, Option<Oid>); 5] = [
            ("zzz/late.yaml", Some(one)),
            ("zzz/late.yaml", Some(two)),
            ("runs/5d/run_a/working_set.yaml", Some(one)),
            ("bulk/00/file_000000.yaml", Some(two)),
            ("zzz/late.yaml", None),
        ];
        for (round, (path, id)) in rounds.iter().enumerate() {
            if round == 3 {
                // git rewrites the index: the midstates no longer match it.
                git(
                    d,
                    &[
                        "update-index",
                        "--add",
                        "--cacheinfo",
                        &format!("100644,{one},yy/by_git"),
                    ],
                );
            }
            if round == 4 {
                // One damaged state under the right trailer and length: the
                // file's CRC turns it into a miss.
                let mut b = fs::read(&cache).unwrap();
                let first_state = MIDSTATE_MAGIC.len() + TRAILER + 8;
                b[first_state + 2] ^= 1;
                fs::write(&cache, b).unwrap();
            }
            let changes: BTreeMap<&str, Option<Oid>> = [(*path, *id)].into();
            let before = listed(d);
            assert!(update_resuming(&index, &changes, &cache).unwrap());
            let mut want = before;
            match id {
                Some(id) => want.insert(path.to_string(), *id),
                None => want.remove(*path),
            };
            assert_eq!(listed(d), want, "round {round}");
            let bytes = fs::read(&index).unwrap();
            let n = bytes.len();
            assert_eq!(
                bytes[n - TRAILER..],
                Sha1::digest(&bytes[..n - TRAILER])[..],
                "round {round}"
            );
            // The midstates now describe the index written, for the next round.
            assert!(Midstates::load(&cache, &bytes).len() >= 4, "round {round}");
            git(d, &["write-tree"]);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(12))]
        /// Any mix of adds, modifies and deletes over the fixture's paths
        /// and new ones, in any index version, reads back as git's does.
        #[test]
        fn any_change_set_matches_git(
            version in 2u8..=4,
            picks in proptest::collection::vec((0usize..320, 0u8..3), 1..40),
        ) {
            let dir = settled_repo(&version.to_string());
            let d = dir.path();
            let ids = [hash(d, "one\n"), hash(d, "two\n")];
            let names: Vec<String> = listed(d).into_keys().collect();
            let owned: BTreeMap<String, Option<Oid>> = picks
                .iter()
                .map(|(i, what)| {
                    let path = match names.get(*i) {
                        Some(p) if *i % 3 != 0 => p.clone(),
                        _ => format!("memory/global/{:02x}/added_{i:03}.yaml", i % 9),
                    };
                    (path, (*what < 2).then(|| ids[*what as usize]))
                })
                .collect();
            let changes = owned.iter().map(|(p, id)| (p.as_str(), *id)).collect();
            same_as_git(d, &changes);
        }
    }

    /// The index of [`repo`], read once: what the fuzzer mutates.
    fn real_index() -> &'static [u8] {
        static REAL: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        REAL.get_or_init(|| {
            let dir = repo();
            fs::read(dir.path().join(".git/index")).unwrap()
        })
    }

    /// Index bytes: the real index with bytes flipped and cut, or noise
    /// behind a valid signature.
    fn fuzzed_index() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        let real = real_index();
        let len = real.len();
        prop_oneof![
            (prop::collection::vec((0..len, any::<u8>()), 1..6), 0..=len).prop_map(
                move |(flips, cut)| {
                    let mut b = real.to_vec();
                    for (at, x) in flips {
                        b[at] ^= x | 1;
                    }
                    b.truncate(cut);
                    b
                }
            ),
            prop::collection::vec(any::<u8>(), 0..300).prop_map(|tail| {
                let mut b = b"DIRC\0\0\0\x02".to_vec();
                b.extend(tail);
                b
            }),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config {
            failure_persistence: None,
            ..Default::default()
        })]

        /// Fuzzing the reader and the writer (`PROPTEST_CASES` inputs): a
        /// damaged index is read or declined, never a panic; what the
        /// writer makes of one, the reader reads back.
        #[test]
        fn damaged_indexes_are_read_or_declined(bytes in fuzzed_index()) {
            let paths: BTreeSet<&str> = ["a.yaml", "runs/x/working_set.yaml", "deep"].into_iter().collect();
            let _ = scan(&bytes, &paths);
            let id = Oid::hash_object(git2::ObjectType::Blob, b"x").unwrap();
            let changes: BTreeMap<&str, Option<Oid>> =
                [("a.yaml", Some(id)), ("gone.yaml", None)].into_iter().collect();
            if let Some(Some(new)) = rewrite(&bytes, &changes, (0, 0)) {
                let read = scan(&new, &["a.yaml"].into_iter().collect());
                proptest::prop_assert_eq!(read.and_then(|m| m.get("a.yaml").copied()), Some(id));
            }
        }
    }
}
