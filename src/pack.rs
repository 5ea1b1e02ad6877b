//! Writes git pack files (version 2) and their indexes (version 2): the
//! objects of one commit, or the entries of packs being merged.
//!
//! Why: on ext4 every new file costs an inode allocation, and a loose object
//! is one new file each; a cairn write makes about a dozen objects. One pack
//! holds them all in two files (`.pack` and `.idx`). The pack stores every
//! object whole (zlib-compressed, no deltas); merges copy such entries as they
//! are. Deltas come only from git's own `gc`/`repack`, if the user runs them.
//!
//! Invariants: the `.idx` is renamed into place after the `.pack`, so a
//! reader that finds an index always finds its pack; both are named by the
//! pack's SHA-1 checksum, as git names them; each object appears once.
//! Both files are fsync'd before they are renamed into place, and the
//! folder after: a pack [`Writer::finish`] returns survives power loss.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::{Compress, Compression, FlushCompress, Status};
use sha1::{Digest, Sha1};

use crate::error::{Error, Result};

/// The kind of a git object, with the type code packs use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A commit (pack type 1).
    Commit = 1,
    /// A tree (pack type 2).
    Tree = 2,
    /// A blob (pack type 3).
    Blob = 3,
    /// An annotated tag (pack type 4).
    Tag = 4,
}

impl Kind {
    /// The name git's object header uses (`blob`, `tree`, …).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Commit => "commit",
            Kind::Tree => "tree",
            Kind::Blob => "blob",
            Kind::Tag => "tag",
        }
    }
}

/// The id git gives an object: SHA-1 of `<kind> <size>\0` and the bytes.
pub fn object_id(kind: Kind, data: &[u8]) -> [u8; 20] {
    let mut h = Sha1::new();
    h.update(format!("{} {}\0", kind.name(), data.len()).as_bytes());
    h.update(data);
    h.finalize().into()
}

/// One object to pack: its id (the SHA-1 of its loose form), kind and bytes.
#[derive(Debug, Clone)]
pub struct Object {
    /// The object id, 20 bytes.
    pub id: [u8; 20],
    /// What the bytes are.
    pub kind: Kind,
    /// The object's content, without the loose-object header.
    pub data: Vec<u8>,
}

/// Writes `objects` as `pack-<checksum>.pack` + `.idx` in `pack_dir` and
/// returns the `.pack` path. Duplicate ids are written once.
pub fn write(pack_dir: &Path, objects: &mut [Object]) -> Result<PathBuf> {
    crate::failpoint::failpoint!("pack::write");
    objects.sort_by_key(|o| o.id);
    let mut unique: Vec<&Object> = Vec::with_capacity(objects.len());
    for o in objects.iter() {
        if unique.last().is_none_or(|last| last.id != o.id) {
            unique.push(o);
        }
    }
    let mut w = Writer::new(pack_dir, unique.len())?;
    for o in unique {
        w.add(o.id, o.kind, &o.data)?;
    }
    w.finish()
}

/// Streams objects into a new pack file: [`Writer::add`] exactly the
/// announced number of distinct objects, then [`Writer::finish`]. Temp
/// files carry git's `tmp_pack_` prefix, which `git gc` clears if a crash
/// leaves one behind; dropping an unfinished writer removes its temp file.
pub struct Writer {
    dir: PathBuf,
    tmp: PathBuf,
    out: std::io::BufWriter<fs::File>,
    hash: Sha1,
    offset: u64,
    expected: usize,
    entries: Vec<Entry>,
    zlib: Compress,
    finished: bool,
}

impl Writer {
    /// Starts a pack of `count` objects in `pack_dir`.
    pub fn new(pack_dir: &Path, count: usize) -> Result<Writer> {
        let count32 = u32::try_from(count).map_err(|_| Error::Policy {
            rule: "pack.max_objects",
            message: format!("{count} objects do not fit one pack; split the change"),
        })?;
        fs::create_dir_all(pack_dir).map_err(|e| Error::io("create", pack_dir, e))?;
        let tmp = pack_dir.join(format!(
            "tmp_pack_cairn_{}_{}",
            std::process::id(),
            ulid::Ulid::new()
        ));
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| Error::io("create", &tmp, e))?;
        let mut w = Writer {
            dir: pack_dir.to_path_buf(),
            tmp,
            out: std::io::BufWriter::with_capacity(1 << 16, file),
            hash: Sha1::new(),
            offset: 0,
            expected: count,
            entries: Vec::with_capacity(count),
            // One compressor for all objects: a new one costs more to set
            // up than a small object costs to compress.
            zlib: Compress::new(Compression::fast(), true),
            finished: false,
        };
        let mut head = Vec::with_capacity(12);
        head.extend_from_slice(b"PACK");
        head.extend_from_slice(&2u32.to_be_bytes());
        head.extend_from_slice(&count32.to_be_bytes());
        w.emit(&head)?;
        Ok(w)
    }

    fn emit(&mut self, bytes: &[u8]) -> Result<()> {
        self.hash.update(bytes);
        self.offset += bytes.len() as u64;
        self.out
            .write_all(bytes)
            .map_err(|e| Error::io("write", &self.tmp, e))
    }

    /// Appends one object, whole and zlib-compressed.
    pub fn add(&mut self, id: [u8; 20], kind: Kind, data: &[u8]) -> Result<()> {
        // Type and size: 3 type bits and 4 size bits first, then 7 size bits
        // a byte, high bit set while more follow.
        let mut buf = Vec::with_capacity(16 + data.len() / 2);
        let mut size = data.len() as u64;
        let mut byte = ((kind as u8) << 4) | (size & 0x0f) as u8;
        size >>= 4;
        while size > 0 {
            buf.push(byte | 0x80);
            byte = (size & 0x7f) as u8;
            size >>= 7;
        }
        buf.push(byte);
        self.zlib.reset();
        loop {
            let before = self.zlib.total_in() as usize;
            buf.reserve(64 + (data.len() - before) / 2);
            let status = self
                .zlib
                .compress_vec(&data[before..], &mut buf, FlushCompress::Finish)
                .map_err(|e| Error::io("compress an object for", &self.tmp, e.into()))?;
            if status == Status::StreamEnd {
                break;
            }
        }
        self.add_raw(id, crc32fast::hash(&buf), &buf)
    }

    /// Appends one packed entry as it is (header and zlib stream, no delta),
    /// e.g. copied from another pack; `crc` is its CRC-32.
    pub fn add_raw(&mut self, id: [u8; 20], crc: u32, entry: &[u8]) -> Result<()> {
        if self.entries.len() == self.expected {
            return Err(Error::Integrity {
                subject: "pack".into(),
                message: format!("more than the {} announced objects", self.expected),
            });
        }
        self.entries.push(Entry {
            id,
            crc,
            offset: self.offset,
        });
        self.emit(entry)
    }

    /// Writes the checksum and the index, moves both into place (the index
    /// last) and returns the `.pack` path.
    pub fn finish(mut self) -> Result<PathBuf> {
        if self.entries.len() != self.expected {
            return Err(Error::Integrity {
                subject: "pack".into(),
                message: format!(
                    "{} objects written, {} announced",
                    self.entries.len(),
                    self.expected
                ),
            });
        }
        let checksum: [u8; 20] = self.hash.clone().finalize().into();
        self.out
            .write_all(&checksum)
            .and_then(|_| self.out.flush())
            .map_err(|e| Error::io("write", &self.tmp, e))?;
        self.entries.sort_by_key(|e| e.id);
        if self.entries.windows(2).any(|w| w[0].id == w[1].id) {
            return Err(Error::Integrity {
                subject: "pack".into(),
                message: "an object was added twice".into(),
            });
        }
        let index = encode_index(&self.entries, &checksum);
        let name = format!("pack-{}", hex(&checksum));
        let pack_path = self.dir.join(format!("{name}.pack"));
        let idx_path = self.dir.join(format!("{name}.idx"));
        let idx_tmp = self.tmp.with_extension("idx");
        fs::write(&idx_tmp, index).map_err(|e| Error::io("write", &idx_tmp, e))?;
        crate::failpoint::trace::write(&idx_tmp);
        let fsync = |path: &Path| {
            crate::failpoint::trace::fsync(path);
            fs::File::open(path)
                .and_then(|f| f.sync_all())
                .map_err(|e| Error::io("fsync", path, e))
        };
        // Until the pack is renamed, a failure leaves only temp files, which
        // are removed here (the `.pack` one by `Drop`).
        let idx_failed = |e: Error| {
            let _ = fs::remove_file(&idx_tmp);
            e
        };
        (|| {
            crate::failpoint::failpoint!("pack::fsync_pack");
            crate::failpoint::trace::write(&self.tmp);
            fsync(&self.tmp)?;
            crate::failpoint::failpoint!("pack::fsync_idx");
            fsync(&idx_tmp)?;
            crate::failpoint::failpoint!("pack::rename_pack");
            crate::failpoint::trace::rename(&self.tmp, &pack_path);
            fs::rename(&self.tmp, &pack_path).map_err(|e| Error::io("rename into", &pack_path, e))
        })()
        .map_err(idx_failed)?;
        self.finished = true;
        // A `.pack` without its `.idx` is invisible to git (and to fsck).
        (|| {
            crate::failpoint::failpoint!("pack::rename_idx");
            crate::failpoint::trace::rename(&idx_tmp, &idx_path);
            fs::rename(&idx_tmp, &idx_path).map_err(|e| Error::io("rename into", &idx_path, e))
        })()
        .map_err(idx_failed)?;
        crate::failpoint::failpoint!("pack::fsync_dir");
        fsync(&self.dir)?;
        Ok(pack_path)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if !self.finished {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Where an object landed in the pack: what the index records.
struct Entry {
    id: [u8; 20],
    crc: u32,
    offset: u64,
}

/// The version 2 index: fan-out table, sorted ids, CRCs, offsets (large ones
/// in a 64-bit table), the pack's checksum and the index's own.
fn encode_index(entries: &[Entry], pack_checksum: &[u8; 20]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1100 + entries.len() * 28);
    out.extend_from_slice(&[0xff, b't', b'O', b'c']);
    out.extend_from_slice(&2u32.to_be_bytes());
    let mut fanout = [0u32; 256];
    for e in entries {
        fanout[e.id[0] as usize] += 1;
    }
    let mut running = 0u32;
    for n in fanout {
        running += n;
        out.extend_from_slice(&running.to_be_bytes());
    }
    for e in entries {
        out.extend_from_slice(&e.id);
    }
    for e in entries {
        out.extend_from_slice(&e.crc.to_be_bytes());
    }
    let mut large = Vec::new();
    for e in entries {
        if e.offset < 0x8000_0000 {
            out.extend_from_slice(&(e.offset as u32).to_be_bytes());
        } else {
            out.extend_from_slice(&(0x8000_0000 | large.len() as u32).to_be_bytes());
            large.push(e.offset);
        }
    }
    for offset in large {
        out.extend_from_slice(&offset.to_be_bytes());
    }
    out.extend_from_slice(pack_checksum);
    let own = Sha1::digest(&out);
    out.extend_from_slice(&own);
    out
}

/// How many objects the index at `idx` lists (the last fan-out entry), or
/// `None` if it is not a version 2 index.
pub fn object_count(idx: &Path) -> Option<u32> {
    let mut head = [0u8; HEADER];
    let mut f = fs::File::open(idx).ok()?;
    std::io::Read::read_exact(&mut f, &mut head).ok()?;
    object_count_of(&head)
}

/// Every object an index at `idx` lists: id, CRC-32 of its packed entry and
/// its offset in the pack; `None` if it is not a readable version 2 index.
pub fn index_entries(idx: &Path) -> Option<Vec<([u8; 20], u32, u64)>> {
    let bytes = fs::read(idx).ok()?;
    let n = object_count_of(&bytes)? as usize;
    let ids = bytes.get(HEADER..HEADER + n * 20)?;
    let crcs = bytes.get(HEADER + n * 20..HEADER + n * 24)?;
    let small = bytes.get(HEADER + n * 24..HEADER + n * 28)?;
    let large = bytes.get(HEADER + n * 28..)?;
    let be32 =
        |b: &[u8], i: usize| u32::from_be_bytes(b[i * 4..i * 4 + 4].try_into().expect("4 bytes"));
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let id: [u8; 20] = ids[i * 20..i * 20 + 20].try_into().expect("20 bytes");
        let raw = be32(small, i);
        let offset = if raw & 0x8000_0000 == 0 {
            u64::from(raw)
        } else {
            let j = (raw & 0x7fff_ffff) as usize;
            u64::from_be_bytes(large.get(j * 8..j * 8 + 8)?.try_into().ok()?)
        };
        out.push((id, be32(crcs, i), offset));
    }
    Some(out)
}

/// The pack type code of a packed entry (1–4 whole objects, 6–7 deltas).
pub fn entry_type(entry: &[u8]) -> u8 {
    entry.first().map(|b| (b >> 4) & 7).unwrap_or(0)
}

const HEADER: usize = 8 + 256 * 4;

fn object_count_of(head: &[u8]) -> Option<u32> {
    if head.get(..8)? != [0xff, b't', b'O', b'c', 0, 0, 0, 2] {
        return None;
    }
    Some(u32::from_be_bytes(
        head.get(HEADER - 4..HEADER)?.try_into().ok()?,
    ))
}

/// Lower-case hex of `bytes` (how git writes ids).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(kind: Kind, data: &[u8]) -> Object {
        Object {
            id: object_id(kind, data),
            kind,
            data: data.to_vec(),
        }
    }

    #[test]
    fn git_reads_what_it_writes() {
        let dir = tempfile::TempDir::new().unwrap();
        let repo = git2::Repository::init_bare(dir.path()).unwrap();
        let big: Vec<u8> = (0..70_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let mut objects = vec![
            object(Kind::Blob, b"hello\n"),
            object(Kind::Blob, &big),
            object(Kind::Blob, b""),
            object(Kind::Blob, b"hello\n"),
        ];
        let ids: Vec<[u8; 20]> = objects.iter().map(|o| o.id).collect();
        let pack = write(&dir.path().join("objects/pack"), &mut objects).unwrap();
        let idx = pack.with_extension("idx");
        assert_eq!(object_count(&idx), Some(3), "duplicates are written once");
        let odb = repo.odb().unwrap();
        odb.refresh().unwrap();
        for (id, want) in ids.iter().zip([&b"hello\n"[..], &big, b""]) {
            let obj = odb.read(git2::Oid::from_bytes(id).unwrap()).unwrap();
            assert_eq!(obj.data(), want);
            assert_eq!(obj.kind(), git2::ObjectType::Blob);
        }
        let verify = std::process::Command::new("git")
            .arg("verify-pack")
            .arg(&idx)
            .output()
            .unwrap();
        assert!(
            verify.status.success(),
            "{}",
            String::from_utf8_lossy(&verify.stderr)
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config {
            failure_persistence: None,
            ..Default::default()
        })]

        /// Fuzzing the index reader (`PROPTEST_CASES` inputs): a damaged
        /// `.idx` is read or declined, never a panic or a huge allocation.
        #[test]
        fn damaged_pack_indexes_are_read_or_declined(
            flips in proptest::collection::vec((0usize..4096, proptest::prelude::any::<u8>()), 0..6),
            cut in 0usize..4096,
        ) {
            static REAL: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
            let real = REAL.get_or_init(|| {
                let dir = tempfile::TempDir::new().unwrap();
                let mut objects: Vec<Object> = (0..40u32)
                    .map(|i| object(Kind::Blob, format!("object {i}").as_bytes()))
                    .collect();
                let pack = write(dir.path(), &mut objects).unwrap();
                fs::read(pack.with_extension("idx")).unwrap()
            });
            let dir = tempfile::TempDir::new().unwrap();
            let idx = dir.path().join("fuzzed.idx");
            let mut b = real.clone();
            for (at, x) in flips {
                let at = at % b.len();
                b[at] ^= x | 1;
            }
            b.truncate(cut.min(b.len()));
            fs::write(&idx, &b).unwrap();
            let _ = object_count(&idx);
            if let Some(entries) = index_entries(&idx) {
                proptest::prop_assert!(entries.len() <= b.len() / 28);
            }
        }
    }
}
