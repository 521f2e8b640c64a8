//! One writer per checkpoint: an advisory lock (`flock`) on `.NAME.lock`
//! next to the checkpoint, held for the life of the run, with the holder's
//! pid written in it so a second writer can be told who holds it.
//!
//! The lock file itself stays after the run (removing it would let a
//! waiting process lock an unlinked file while a third creates a new one);
//! it is empty of meaning when no process holds its lock. The lock is
//! released by the kernel when the holder exits, also on SIGKILL.
//!
//! A lock file deleted under a running writer (a clean-up script) would
//! let a second writer create and lock a new one. So the holder checks,
//! before every save ([`WriterLock::ensure`]), that the file at the lock
//! path is still the one it locked: if it is gone, it takes a new one;
//! if another process holds the new one, the save is refused naming it.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

use rustix::fs::{flock, FlockOperation};

use super::{parent_dir, CheckpointError};

/// The lock file of `path`: `.NAME.lock` in the same directory.
pub fn lock_path(path: &Path) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(".lock");
    parent_dir(path).join(name)
}

/// The exclusive right to write one checkpoint path, until dropped.
#[derive(Debug)]
pub struct WriterLock {
    file: File,
    path: PathBuf,
}

impl WriterLock {
    /// The lock file held.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes sure the lock is still this process's: the file at the lock
    /// path is the one locked, or (deleted or replaced meanwhile) a new one
    /// is locked now. Call it before every save.
    ///
    /// # Errors
    ///
    /// [`CheckpointError::Locked`] naming the pid of another process that
    /// has locked a new lock file; [`CheckpointError::Io`] when a new lock
    /// file cannot be made.
    pub fn ensure(&mut self, checkpoint: &Path) -> Result<(), CheckpointError> {
        if same_file(&self.file, &self.path) {
            return Ok(());
        }
        // The old file (unlinked, or no longer at the path) goes with its
        // lock: nobody can find it by the path any more.
        *self = lock_writer(checkpoint)?;
        Ok(())
    }
}

/// Whether `path` names the same file as the open `file` (same device and
/// inode); false when `path` is gone.
fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

impl Drop for WriterLock {
    fn drop(&mut self) {
        // Empty the pid before the kernel drops the lock with the file.
        let _ = self.file.set_len(0);
        let _ = flock(&self.file, FlockOperation::Unlock);
    }
}

/// Takes the writer lock of the checkpoint `path` without waiting.
///
/// # Errors
///
/// [`CheckpointError::Locked`] naming the holder's pid (when it wrote one)
/// if another process holds it; [`CheckpointError::Io`] when the lock file
/// cannot be created or locked.
pub fn lock_writer(path: &Path) -> Result<WriterLock, CheckpointError> {
    let lock = lock_path(path);
    let io = |op: &'static str| {
        let lock = lock.clone();
        move |source: io::Error| CheckpointError::Io {
            path: lock,
            op,
            source,
        }
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock)
        .map_err(io("cannot create the checkpoint's lock file"))?;
    match flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(rustix::io::Errno::WOULDBLOCK) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(CheckpointError::Locked {
                path: path.to_path_buf(),
                pid: text.trim().parse().ok(),
            });
        }
        Err(e) => return Err(io("cannot lock the checkpoint's lock file")(e.into())),
    }
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()))
        .map_err(io("cannot write the checkpoint's lock file"))?;
    Ok(WriterLock { file, path: lock })
}

/// Whether a process with this pid is alive (signal 0 reaches it, or it
/// exists under another user).
pub(super) fn alive(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    match rustix::process::test_kill_process(pid) {
        Ok(()) => true,
        Err(e) => e == rustix::io::Errno::PERM,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let ck = dir.path().join("m.ckpt");
        let held = lock_writer(&ck).unwrap();
        assert_eq!(held.path(), dir.path().join(".m.ckpt.lock"));
        // flock locks belong to the open file: a second open conflicts even
        // in the same process, as a second process would.
        match lock_writer(&ck) {
            Err(CheckpointError::Locked { pid, .. }) => {
                assert_eq!(pid, Some(std::process::id()));
            }
            other => panic!("{other:?}"),
        }
        drop(held);
        let again = lock_writer(&ck).unwrap();
        drop(again);
    }

    #[test]
    fn a_deleted_lock_file_is_taken_again_or_its_new_holder_named() {
        let dir = tempfile::tempdir().unwrap();
        let ck = dir.path().join("m.ckpt");
        let mut held = lock_writer(&ck).unwrap();
        held.ensure(&ck).unwrap();
        // Deleted: taken again, and a second writer is refused again.
        std::fs::remove_file(held.path()).unwrap();
        held.ensure(&ck).unwrap();
        assert!(held.path().exists());
        assert!(matches!(
            lock_writer(&ck),
            Err(CheckpointError::Locked { .. })
        ));
        // Deleted, and a second writer locks a new file first: named.
        std::fs::remove_file(held.path()).unwrap();
        let second = lock_writer(&ck).unwrap();
        match held.ensure(&ck) {
            Err(CheckpointError::Locked { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("{other:?}"),
        }
        drop(second);
    }

    #[test]
    fn liveness_of_pids() {
        assert!(alive(std::process::id()));
        assert!(!alive(0));
        assert!(!alive(u32::MAX));
    }
}
