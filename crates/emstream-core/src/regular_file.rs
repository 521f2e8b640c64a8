//! Opening and reading files that must be regular files: a FIFO, a device
//! such as /dev/zero or a directory is refused before anything is read, and
//! without blocking (a FIFO with no writer would block the open itself).

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// Reads a whole file of at most `limit` bytes, refusing anything but a
/// regular file (a FIFO, a device such as /dev/zero, a directory) before
/// reading it: opened without blocking (a FIFO with no writer would block
/// the open itself), checked through the open descriptor, and read no
/// further than `limit` even when the file grows meanwhile.
///
/// # Errors
///
/// The I/O error, or [`io::ErrorKind::InvalidInput`] naming the kind of
/// file or the size over `limit`.
pub fn read_regular(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let file = open_regular(path)?;
    let len = file.metadata()?.len();
    if len > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{len} bytes, more than the {limit} bytes allowed"),
        ));
    }
    let mut out = Vec::with_capacity(len as usize);
    file.take(limit + 1).read_to_end(&mut out)?;
    if out.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("grew past the {limit} bytes allowed while being read"),
        ));
    }
    Ok(out)
}

/// Opens `path` for reading only if it is a regular file (symlinks are
/// followed), without blocking on a FIFO; the check is made on the open
/// descriptor, so the file cannot be swapped between check and read.
///
/// # Errors
///
/// The I/O error of opening, or [`io::ErrorKind::InvalidInput`] naming
/// what the path is instead of a regular file.
pub fn open_regular(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)?;
    let kind = file.metadata()?.file_type();
    if !kind.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", kind_name(&kind)),
        ));
    }
    // Reads of a regular file never block; clear the flag all the same.
    let flags = rustix::fs::fcntl_getfl(&file)?;
    rustix::fs::fcntl_setfl(&file, flags - rustix::fs::OFlags::NONBLOCK)?;
    Ok(file)
}

/// What a non-regular file is, for messages.
fn kind_name(kind: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO (named pipe)"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_and_fifos_are_refused_without_blocking() {
        let e = read_regular(Path::new("/dev/zero"), 10).unwrap_err();
        assert!(e.to_string().contains("character device"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let e = read_regular(&fifo, 10).unwrap_err();
        assert!(e.to_string().contains("FIFO"), "{e}");
        let big = dir.path().join("big");
        std::fs::write(&big, [0u8; 11]).unwrap();
        let e = read_regular(&big, 10).unwrap_err();
        assert!(e.to_string().contains("more than the 10 bytes"), "{e}");
    }
}
