//! The store lock (an OS file lock on `.cairn/lock`, released by the kernel
//! when its holder dies) and atomic file writes (temp file, optional fsync,
//! rename).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Writes a file durably-if-asked: temp file in the same folder, optional
/// fsync, rename, and folder fsync.
pub fn write_atomic(path: &Path, bytes: &[u8], durable: bool) -> Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut f = File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
    // A failure before the rename removes the temp file: the target keeps
    // its old content and nothing new is left beside it.
    let written = (|| {
        f.write_all(bytes)
            .map_err(|e| Error::io("write", &tmp, e))?;
        crate::failpoint::trace::write(&tmp);
        crate::failpoint::failpoint!("fs::atomic_fsync");
        if durable {
            crate::failpoint::trace::fsync(&tmp);
            f.sync_all().map_err(|e| Error::io("fsync", &tmp, e))?;
        }
        drop(f);
        crate::failpoint::failpoint!("fs::atomic_rename");
        crate::failpoint::trace::rename(&tmp, path);
        fs::rename(&tmp, path).map_err(|e| Error::io("rename into", path, e))
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written?;
    if durable {
        crate::failpoint::trace::fsync(dir);
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// The store lock: an OS file lock on `.cairn/lock`, so a lock held by a
/// process that died is released by the kernel and recovered automatically.
pub struct StoreLock {
    _file: File,
}

impl StoreLock {
    /// Takes the store lock, waiting up to `timeout`.
    pub fn acquire(local_dir: &Path, timeout: Duration) -> Result<StoreLock> {
        Self::acquire_named(local_dir, "lock", timeout)
    }

    /// Takes the lock file `name` in `local_dir`, waiting up to `timeout`.
    pub fn acquire_named(local_dir: &Path, name: &str, timeout: Duration) -> Result<StoreLock> {
        fs::create_dir_all(local_dir).map_err(|e| Error::io("create", local_dir, e))?;
        let path = local_dir.join(name);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io("open lock", &path, e))?;
        let start = Instant::now();
        let mut pause = Duration::from_micros(200);
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(fs::TryLockError::WouldBlock) => {
                    if start.elapsed() >= timeout {
                        let mut holder = String::new();
                        let _ = file.read_to_string(&mut holder);
                        let holder = holder.trim();
                        return Err(Error::LockBusy {
                            path,
                            holder: if holder.is_empty() {
                                "an unknown process".into()
                            } else {
                                holder.to_string()
                            },
                            waited_ms: start.elapsed().as_millis() as u64,
                        });
                    }
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(20));
                }
                Err(fs::TryLockError::Error(e)) => return Err(Error::io("lock", &path, e)),
            }
        }
        // Who holds it, for the message another writer prints when it times out.
        let _ = file.set_len(0);
        let _ = (&file).write_all(format!("pid {}\n", std::process::id()).as_bytes());
        Ok(StoreLock { _file: file })
    }
}
