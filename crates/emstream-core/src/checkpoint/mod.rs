//! Checkpoint file: `magic | format version | payload length | postcard payload | CRC32`.
//!
//! ```text
//! offset  size  field
//! 0       8     magic  89 45 4D 53 0D 0A 1A 0A  ("\x89EMS\r\n\x1a\n")
//! 8       4     format version, u32 little-endian (3; 1 and 2 are still read)
//! 12      8     payload length N, u64 little-endian
//! 20      N     payload: the on-disk checkpoint, postcard-encoded
//! 20+N    4     CRC32 (IEEE, crc32fast) of bytes 0 .. 20+N, u32 little-endian
//! ```
//!
//! The magic follows PNG's: a byte with the high bit set catches 7-bit
//! transfers, `\r\n` and the lone `\n` catch line-ending conversion in either
//! direction, and `\x1a` stops `type` on Windows.
//!
//! The payload is an explicit, versioned on-disk type (format 3,
//! `schema`: format 2 followed by the choice and adaptation of K), not a derive of the in-memory learner: the learner is a
//! phase, `WarmUp { buffer }` or `Fitted { engine, stats, mixture, pending,
//! worst }`, next to the options, dimension, RNG state, step counter,
//! counters, rejects, anomalies, timestamps, and room for source positions,
//! column names and the model selection. Loading converts it to the
//! in-memory [`Checkpoint`] and validates it as a whole (every shape across
//! options, statistics, mixture, engine and buffers; finite, positive
//! definite parameters; timestamps); an inconsistent file is refused with
//! [`CheckpointError::Invalid`] naming the failed check, never a panic.
//! Format 1 (the serde derive of the learner of that time, pinned in
//! `v1`) and format 2 are migrated on load; they are never written.
//!
//! Written to a temporary file in the same directory, fsynced, renamed over
//! the old one, and the directory fsynced; older generations are kept as
//! `PATH.1` (newest older), `PATH.2`, ... A file that fails any check is
//! refused with the name of the check, and [`load_with_fallback`] falls back
//! to the newest good older generation.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::input::RejectCounts;
use crate::model::StepwiseEm;

mod lock;
mod schema;
mod v1;

pub use lock::{lock_path, lock_writer, WriterLock};

/// Version of the checkpoint format this build writes.
pub const FORMAT_VERSION: u32 = schema::VERSION;

/// Oldest format version this build reads (and migrates).
pub const OLDEST_FORMAT_VERSION: u32 = 1;

/// The first 8 bytes of every checkpoint file.
pub const MAGIC: [u8; 8] = *b"\x89EMS\r\n\x1a\n";

/// Bytes before the payload: magic, version, payload length.
pub const HEADER_LEN: usize = 8 + 4 + 8;

/// Bytes after the payload: the CRC32.
const TRAILER_LEN: usize = 4;

/// Everything needed to continue a stream exactly where it stopped.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    /// The learner: configuration, step counter, statistics, mixture, RNG
    /// state, warm-up buffer, pending partial batch, counters.
    pub learner: StepwiseEm,
    /// Rejected input records by reason, over the whole run (all resumes).
    pub rejected: RejectCounts,
    /// Points flagged as anomalies.
    pub anomalies: u64,
    /// When the run that created this model started (Unix milliseconds).
    pub created_unix_ms: u64,
    /// When this checkpoint was written (Unix milliseconds).
    pub updated_unix_ms: u64,
    /// Per source, the position up to which its points are in this
    /// checkpoint (empty when no source is replayable).
    pub sources: Vec<SourcePosition>,
    /// Names of the point's dimensions, when known (as many as the
    /// learner's dimension).
    pub columns: Option<Vec<String>>,
    /// How K was chosen, when it was chosen automatically.
    pub selection: Option<ModelSelection>,
}

impl Checkpoint {
    /// A checkpoint of a learner alone, as a library user's program has
    /// one (no input read, so nothing rejected and no source position):
    /// the learner, the dimensions' names if known, and the learner's
    /// choice of K. `created_unix_ms` is when the model's run started (now,
    /// for a new one); the checkpoint is stamped as written now.
    ///
    /// # Errors
    ///
    /// [`CheckpointError::Invalid`] when `columns` is not one name per
    /// dimension of the learner.
    pub fn of_learner(
        learner: StepwiseEm,
        columns: Option<Vec<String>>,
        created_unix_ms: u64,
    ) -> Result<Checkpoint, CheckpointError> {
        if let Some(names) = &columns {
            if names.len() != learner.dim() {
                return Err(CheckpointError::Invalid {
                    path: PathBuf::from("<memory>"),
                    reason: format!(
                        "{} column names for points of dimension {}",
                        names.len(),
                        learner.dim()
                    ),
                });
            }
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let selection = learner.selection().cloned();
        Ok(Checkpoint {
            learner,
            rejected: RejectCounts::default(),
            anomalies: 0,
            created_unix_ms: created_unix_ms.min(now),
            updated_unix_ms: now,
            sources: Vec::new(),
            columns,
            selection,
        })
    }
}

/// Where a source stands: the position of the last message or line whose
/// points are in the checkpoint (for example a JetStream stream name and a
/// sequence number), so a replayable source resumes after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourcePosition {
    /// The source's name.
    pub source: String,
    /// Its position (a sequence number or a line number).
    pub position: u64,
}

/// How the number of components was chosen: the model's own type, kept
/// in the checkpoint as it is (the on-disk schema has its own copy).
pub use crate::model::select::ModelSelection;

/// Why a checkpoint could not be written or read. Every variant names the
/// file and, for a refused file, the check that failed.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// A file-system operation failed.
    #[error("{path}: {op}: {source} ({hint})", path = path.display(), hint = io_hint(source))]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done, e.g. "cannot write the temporary file".
        op: &'static str,
        /// The I/O error.
        source: io::Error,
    },
    /// The checkpoint could not be serialised (should not happen).
    #[error("{path}: cannot encode the checkpoint: {source}", path = path.display())]
    Encode {
        /// The file that was to be written.
        path: PathBuf,
        /// The postcard error.
        source: postcard::Error,
    },
    /// The payload is larger than this platform can address.
    #[error("{path}: checkpoint payload of {len} bytes is too large for this platform", path = path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Payload length.
        len: u64,
    },
    /// The file is shorter than the fixed header.
    #[error("{path}: truncated: {len} bytes, shorter than the {HEADER_LEN}-byte header; the write was cut short, use an older generation", path = path.display())]
    TruncatedHeader {
        /// The file.
        path: PathBuf,
        /// Its length in bytes.
        len: u64,
    },
    /// The first 8 bytes are not the checkpoint magic.
    #[error("{path}: not an emstream checkpoint: it starts with {found:02x?}, expected {MAGIC:02x?}{hint}", path = path.display(), hint = magic_hint(found))]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// The bytes found.
        found: [u8; 8],
    },
    /// The format version is not one this build reads.
    #[error("{path}: format version {found}, this build reads {OLDEST_FORMAT_VERSION} to {FORMAT_VERSION}: use the emstream version that wrote it", path = path.display())]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version in the file.
        found: u32,
    },
    /// The file ends before the payload and CRC the header announces.
    #[error("{path}: truncated: the header announces a {declared}-byte payload plus a {TRAILER_LEN}-byte CRC but only {available} bytes follow the header", path = path.display())]
    TruncatedPayload {
        /// The file.
        path: PathBuf,
        /// Payload length in the header.
        declared: u64,
        /// Bytes after the header.
        available: u64,
    },
    /// The file is longer than the header announces.
    #[error("{path}: length mismatch: the header announces a {declared}-byte payload plus a {TRAILER_LEN}-byte CRC but {available} bytes follow the header", path = path.display())]
    LengthMismatch {
        /// The file.
        path: PathBuf,
        /// Payload length in the header.
        declared: u64,
        /// Bytes after the header.
        available: u64,
    },
    /// The stored CRC32 does not match the contents.
    #[error("{path}: CRC32 mismatch: the file is damaged (stored {stored:08x}, computed {computed:08x})", path = path.display())]
    CrcMismatch {
        /// The file.
        path: PathBuf,
        /// The CRC in the file.
        stored: u32,
        /// The CRC of the contents.
        computed: u32,
    },
    /// The payload passed the CRC but does not decode as a checkpoint (this
    /// includes a mixture whose parameters fail validation).
    #[error("{path}: payload does not decode as a checkpoint: {source}; it was written by an incompatible build", path = path.display())]
    Decode {
        /// The file.
        path: PathBuf,
        /// The postcard error.
        source: postcard::Error,
    },
    /// The payload decodes but leaves bytes unread.
    #[error("{path}: payload does not decode as a checkpoint: {extra} bytes left over after decoding; it was written by an incompatible build", path = path.display())]
    TrailingPayload {
        /// The file.
        path: PathBuf,
        /// Bytes left over.
        extra: usize,
    },
    /// The decoded contents are inconsistent.
    #[error("{path}: invalid contents: {reason}", path = path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is inconsistent.
        reason: String,
    },
    /// Neither the file nor any older generation exists.
    #[error("{path}: no checkpoint found (nor any older generation {path}.1, {path}.2, ...): check the path, or start a new run without --resume", path = path.display())]
    NotFound {
        /// The path asked for.
        path: PathBuf,
    },
    /// Another process holds the checkpoint's writer lock.
    #[error("{path} is being written by another emstream process{holder} (it holds {lock}): stop that run, or give this one another --checkpoint path", path = path.display(), holder = match pid { Some(p) => format!(" (pid {p})"), None => String::new() }, lock = lock::lock_path(path).display())]
    Locked {
        /// The checkpoint file.
        path: PathBuf,
        /// The holder's pid, when it wrote one into the lock file.
        pid: Option<u32>,
    },
    /// A symlink chain at the checkpoint path is too long or loops.
    #[error("{path}: too many levels of symbolic links: point --checkpoint at the file itself", path = path.display())]
    SymlinkLoop {
        /// The path given.
        path: PathBuf,
    },
    /// Every existing generation was refused.
    #[error("{path}: no usable checkpoint, every generation was refused:{list}", path = path.display(), list = list_refused(refused))]
    NoneUsable {
        /// The path asked for.
        path: PathBuf,
        /// Each file tried and why it was refused, newest first.
        refused: Vec<(PathBuf, CheckpointError)>,
    },
}

fn io_hint(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::NotFound => "check that the path and its directory exist",
        io::ErrorKind::PermissionDenied => "check the permissions of the file and its directory",
        io::ErrorKind::StorageFull => "free disk space or write the checkpoint elsewhere",
        io::ErrorKind::ReadOnlyFilesystem => "write the checkpoint to a writable file system",
        _ => "check the file system and the path",
    }
}

fn magic_hint(found: &[u8; 8]) -> &'static str {
    // "?EMS" followed by something else: the magic itself with its line
    // endings converted or its top bit stripped in a text-mode copy.
    if found[1..4] == MAGIC[1..4] {
        " (the line endings or the top bit of the magic were changed: the file was copied in text mode, copy it again in binary mode)"
    } else {
        ""
    }
}

fn list_refused(refused: &[(PathBuf, CheckpointError)]) -> String {
    let mut s = String::new();
    for (_, e) in refused {
        let _ = write!(s, "\n  {e}");
    }
    s
}

/// The result of [`load_with_fallback`]: the newest good checkpoint, where it
/// came from and which newer files were refused.
#[derive(Debug)]
pub struct Loaded {
    /// The checkpoint read.
    pub checkpoint: Checkpoint,
    /// The file it was read from (`PATH` or an older generation `PATH.n`).
    pub path_used: PathBuf,
    /// Files tried before it and refused, newest first, each with the reason
    /// (a missing `PATH` is listed here too when an older generation is used).
    pub refused: Vec<(PathBuf, CheckpointError)>,
}

/// Path of generation `n` of the checkpoint `path`: `path` itself for 0,
/// `PATH.n` (the suffix appended to the file name) otherwise. Generation 1
/// is the newest older one.
pub fn generation_path(path: &Path, n: usize) -> PathBuf {
    if n == 0 {
        return path.to_path_buf();
    }
    let mut s: OsString = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// Directory of `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The file-name prefix of temporary files for `path`: `.NAME.tmp.`.
fn temp_prefix(path: &Path) -> OsString {
    let mut s = OsString::from(".");
    s.push(path.file_name().unwrap_or_default());
    s.push(".tmp.");
    s
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = temp_prefix(path);
    name.push(std::process::id().to_string());
    parent_dir(path).join(name)
}

/// Why a payload that passed the CRC was refused.
#[derive(Debug)]
enum PayloadError {
    /// It does not decode.
    Decode(postcard::Error),
    /// It decodes with bytes left over.
    Trailing(usize),
    /// It decodes but its contents are inconsistent: the failed check.
    Invalid(String),
}

/// A payload type: decoded from the bytes of a given (supported) format
/// version, and validated.
trait Payload: Sized {
    fn from_payload(version: u32, bytes: &[u8]) -> Result<Self, PayloadError>;
}

/// Decodes exactly `bytes` as one `T`.
fn take_exact<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, PayloadError> {
    let (value, rest) = postcard::take_from_bytes(bytes).map_err(PayloadError::Decode)?;
    if !rest.is_empty() {
        return Err(PayloadError::Trailing(rest.len()));
    }
    Ok(value)
}

impl Payload for Checkpoint {
    fn from_payload(version: u32, bytes: &[u8]) -> Result<Self, PayloadError> {
        match version {
            1 => v1::migrate(take_exact(bytes)?)
                .map_err(PayloadError::Invalid)?
                .into_checkpoint(),
            2 => take_exact::<schema::CheckpointV2>(bytes)?.into_checkpoint(),
            3 => take_exact::<schema::CheckpointV3>(bytes)?.into_checkpoint(),
            4 => take_exact::<schema::CheckpointV4>(bytes)?.into_checkpoint(),
            _ => take_exact::<schema::CheckpointV5>(bytes)?.into_checkpoint(),
        }
        .map_err(PayloadError::Invalid)
    }
}

/// The whole file image of `value`: header, payload, CRC.
fn encode<T: Serialize>(path: &Path, value: &T) -> Result<Vec<u8>, CheckpointError> {
    let mut out = Vec::with_capacity(4096);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes());
    let mut out = postcard::to_extend(value, out).map_err(|source| CheckpointError::Encode {
        path: path.to_path_buf(),
        source,
    })?;
    let len = (out.len() - HEADER_LEN) as u64;
    out[12..20].copy_from_slice(&len.to_le_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Checks the fixed header `head` (the first [`HEADER_LEN`] bytes, or all
/// of a shorter file) of a file of `total` bytes: length, magic, version,
/// and the payload length against the file's size. Returns the version and
/// the payload length. Run before the payload is read, so a header that
/// announces more than the file holds allocates nothing.
fn check_header(path: &Path, head: &[u8], total: u64) -> Result<(u32, u64), CheckpointError> {
    let path_buf = || path.to_path_buf();
    if head.len() < HEADER_LEN {
        return Err(CheckpointError::TruncatedHeader {
            path: path_buf(),
            len: total,
        });
    }
    let mut found = [0u8; 8];
    found.copy_from_slice(&head[..8]);
    if found != MAGIC {
        return Err(CheckpointError::BadMagic {
            path: path_buf(),
            found,
        });
    }
    let version = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes"));
    if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&version) {
        return Err(CheckpointError::UnsupportedVersion {
            path: path_buf(),
            found: version,
        });
    }
    let declared = u64::from_le_bytes(head[12..20].try_into().expect("8 bytes"));
    let available = total - HEADER_LEN as u64;
    let needed = declared.checked_add(TRAILER_LEN as u64);
    match needed {
        Some(n) if n == available => Ok((version, declared)),
        Some(n) if n < available => Err(CheckpointError::LengthMismatch {
            path: path_buf(),
            declared,
            available,
        }),
        _ => Err(CheckpointError::TruncatedPayload {
            path: path_buf(),
            declared,
            available,
        }),
    }
}

/// Checks a file image and decodes its payload; `path` is for messages.
fn decode<T: Payload>(path: &Path, bytes: &[u8]) -> Result<T, CheckpointError> {
    let path_buf = || path.to_path_buf();
    let head = &bytes[..bytes.len().min(HEADER_LEN)];
    let (version, declared) = check_header(path, head, bytes.len() as u64)?;
    // `declared + 4 == available <= bytes.len()`, so it fits in usize.
    let end = HEADER_LEN + declared as usize;
    let stored = u32::from_le_bytes(bytes[end..].try_into().expect("4 bytes"));
    let computed = crc32fast::hash(&bytes[..end]);
    if stored != computed {
        return Err(CheckpointError::CrcMismatch {
            path: path_buf(),
            stored,
            computed,
        });
    }
    T::from_payload(version, &bytes[HEADER_LEN..end]).map_err(|e| match e {
        PayloadError::Decode(source) => CheckpointError::Decode {
            path: path_buf(),
            source,
        },
        PayloadError::Trailing(extra) => CheckpointError::TrailingPayload {
            path: path_buf(),
            extra,
        },
        PayloadError::Invalid(reason) => CheckpointError::Invalid {
            path: path_buf(),
            reason,
        },
    })
}

fn io_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> CheckpointError + 'a {
    move |source| CheckpointError::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

/// Writes the file image `bytes` to a temporary file next to `path` and
/// fsyncs it; removes the temporary file on failure.
fn write_temp(path: &Path, bytes: &[u8]) -> Result<PathBuf, CheckpointError> {
    let tmp = temp_path(path);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io_err(&tmp, "cannot create the temporary checkpoint file"))?;
        f.write_all(bytes)
            .map_err(io_err(&tmp, "cannot write the temporary checkpoint file"))?;
        f.sync_all()
            .map_err(io_err(&tmp, "cannot fsync the temporary checkpoint file"))
    })();
    match result {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Shifts older generations up by one (`PATH.keep` is dropped) and makes
/// `PATH.1` a copy of the current `PATH`, which stays in place throughout.
fn rotate(path: &Path, keep: usize) -> Result<(), CheckpointError> {
    if keep == 0 || !path.exists() {
        return Ok(());
    }
    for n in (1..keep).rev() {
        let from = generation_path(path, n);
        let to = generation_path(path, n + 1);
        match fs::rename(&from, &to) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(CheckpointError::Io {
                    path: from,
                    op: "cannot rename an older checkpoint generation",
                    source,
                })
            }
        }
    }
    let first = generation_path(path, 1);
    match fs::remove_file(&first) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(CheckpointError::Io {
                path: first,
                op: "cannot remove the oldest checkpoint generation",
                source,
            })
        }
    }
    // A hard link keeps PATH in place while PATH.1 appears; where links are
    // not supported, copy through a temporary file and rename.
    if fs::hard_link(path, &first).is_err() {
        let mut tmp_name = temp_prefix(path);
        tmp_name.push(format!("{}.gen", std::process::id()));
        let tmp = parent_dir(path).join(tmp_name);
        let copied = fs::copy(path, &tmp)
            .and_then(|_| File::open(&tmp)?.sync_all())
            .and_then(|()| fs::rename(&tmp, &first));
        if let Err(source) = copied {
            let _ = fs::remove_file(&tmp);
            return Err(CheckpointError::Io {
                path: first,
                op: "cannot keep the previous checkpoint as an older generation",
                source,
            });
        }
    }
    Ok(())
}

/// Fsyncs a directory so that renames in it are durable.
fn sync_dir(dir: &Path) -> Result<(), CheckpointError> {
    #[cfg(unix)]
    {
        let r = File::open(dir).and_then(|d| d.sync_all());
        match r {
            Ok(()) => {}
            // Some file systems do not support fsync on directories.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::InvalidInput | io::ErrorKind::Unsupported
                ) => {}
            Err(source) => {
                return Err(CheckpointError::Io {
                    path: dir.to_path_buf(),
                    op: "cannot fsync the checkpoint directory",
                    source,
                })
            }
        }
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

fn save_value<T: Serialize>(path: &Path, value: &T, keep: usize) -> Result<(), CheckpointError> {
    let bytes = encode(path, value)?;
    let tmp = write_temp(path, &bytes)?;
    let finish = rotate(path, keep).and_then(|()| {
        fs::rename(&tmp, path).map_err(io_err(path, "cannot rename the new checkpoint into place"))
    });
    if let Err(e) = finish {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(&parent_dir(path))
}

/// Reads a checkpoint file's image: only a regular file (a FIFO or a device
/// is refused without blocking), its header checked against its size before
/// the payload is allocated, and no more read than that size.
fn read_image(path: &Path) -> Result<Vec<u8>, CheckpointError> {
    use std::io::Read;
    let file = crate::regular_file::open_regular(path).map_err(|source| {
        let op = if source.kind() == io::ErrorKind::InvalidInput {
            "refused: a checkpoint must be a regular file"
        } else {
            "cannot read the checkpoint"
        };
        CheckpointError::Io {
            path: path.to_path_buf(),
            op,
            source,
        }
    })?;
    let read_err = io_err(path, "cannot read the checkpoint");
    let total = file
        .metadata()
        .map_err(io_err(path, "cannot read the checkpoint"))?
        .len();
    let mut head = Vec::with_capacity(HEADER_LEN);
    let mut reader = file.take(total);
    (&mut reader)
        .take(HEADER_LEN as u64)
        .read_to_end(&mut head)
        .map_err(io_err(path, "cannot read the checkpoint"))?;
    check_header(path, &head, total)?;
    let len = usize::try_from(total).map_err(|_| CheckpointError::TooLarge {
        path: path.to_path_buf(),
        len: total,
    })?;
    let mut bytes = head;
    bytes
        .try_reserve_exact(len - HEADER_LEN)
        .map_err(|_| CheckpointError::TooLarge {
            path: path.to_path_buf(),
            len: total,
        })?;
    reader.read_to_end(&mut bytes).map_err(read_err)?;
    Ok(bytes)
}

fn load_value<T: Payload>(path: &Path) -> Result<T, CheckpointError> {
    let bytes = read_image(path)?;
    decode(path, &bytes)
}

/// Existing older generations of `path` as (n, path), oldest-numbered last.
/// Lists the directory, so a gap left by a crash during rotation is skipped
/// rather than ending the search.
fn existing_generations(path: &Path) -> Vec<(usize, PathBuf)> {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return Vec::new();
    };
    let prefix = format!("{name}.");
    let mut out = Vec::new();
    if let Ok(entries) = fs::read_dir(parent_dir(path)) {
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let Some(s) = file_name.to_str() else {
                continue;
            };
            let Some(num) = s.strip_prefix(&prefix) else {
                continue;
            };
            if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) || num.starts_with('0') {
                continue;
            }
            if let Ok(n) = num.parse::<usize>() {
                out.push((n, generation_path(path, n)));
            }
        }
    }
    out.sort_by_key(|&(n, _)| n);
    out
}

/// Files refused while looking for a good generation, newest first.
type Refused = Vec<(PathBuf, CheckpointError)>;

fn load_fallback_value<T: Payload>(path: &Path) -> Result<(T, PathBuf, Refused), CheckpointError> {
    let mut candidates = vec![path.to_path_buf()];
    candidates.extend(existing_generations(path).into_iter().map(|(_, p)| p));
    let mut refused = Vec::new();
    let mut any_exists = false;
    for c in candidates {
        match load_value::<T>(&c) {
            Ok(v) => return Ok((v, c, refused)),
            Err(CheckpointError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                refused.push((
                    c.clone(),
                    CheckpointError::Io {
                        path: c,
                        op: "missing",
                        source,
                    },
                ));
            }
            Err(e) => {
                any_exists = true;
                refused.push((c, e));
            }
        }
    }
    if !any_exists {
        return Err(CheckpointError::NotFound {
            path: path.to_path_buf(),
        });
    }
    Err(CheckpointError::NoneUsable {
        path: path.to_path_buf(),
        refused,
    })
}

/// Writes `ckpt` to `path` atomically, keeping `keep` older generations.
///
/// The file is written to `.NAME.tmp.<pid>` in the same directory and
/// fsynced; then, when `keep > 0` and `path` exists, `PATH.1 .. PATH.keep-1`
/// move up one place (the oldest, `PATH.keep`, is dropped) and the current
/// `path` becomes `PATH.1` by a hard link; then the temporary file is renamed
/// over `path` and the directory fsynced. At every instant `path` holds
/// either the whole old checkpoint or the whole new one.
///
/// # Errors
///
/// [`CheckpointError::Io`] when any write, fsync, link or rename fails
/// (`path` is then left as it was and the temporary file removed), or
/// [`CheckpointError::Encode`] when serialisation fails.
pub fn save(path: &Path, ckpt: &Checkpoint, keep: usize) -> Result<(), CheckpointError> {
    save_value(path, &schema::CheckpointV5::of(ckpt), keep)
}

/// The file image of `ckpt` (header, payload of the current format, CRC), as [`save`]
/// writes it: for storing a checkpoint elsewhere than in a file (a
/// key-value store) or comparing two.
///
/// # Errors
///
/// [`CheckpointError::Encode`] when serialisation fails.
pub fn to_bytes(ckpt: &Checkpoint) -> Result<Vec<u8>, CheckpointError> {
    encode(Path::new("<memory>"), &schema::CheckpointV5::of(ckpt))
}

/// Verifies and decodes a file image made by [`to_bytes`] or read from a
/// file, with every check of [`load`]; `name` stands for the file in
/// messages.
///
/// # Errors
///
/// A [`CheckpointError`] naming the check that failed.
pub fn from_bytes(name: &Path, bytes: &[u8]) -> Result<Checkpoint, CheckpointError> {
    decode(name, bytes)
}

/// Reads and verifies one checkpoint file: header length, magic, format
/// version, payload length, CRC32, decoding, migration of an older format,
/// and the consistency of the decoded contents as a whole, in that order.
///
/// # Errors
///
/// A [`CheckpointError`] naming the check that failed, or
/// [`CheckpointError::Io`] when the file cannot be read.
pub fn load(path: &Path) -> Result<Checkpoint, CheckpointError> {
    load_value(path)
}

/// Loads the newest good checkpoint among `path`, `PATH.1`, `PATH.2`, ...
/// and reports every newer file that was refused and why.
///
/// # Errors
///
/// [`CheckpointError::NotFound`] when neither `path` nor any generation
/// exists; [`CheckpointError::NoneUsable`] listing each file and its failed
/// check when all were refused.
pub fn load_with_fallback(path: &Path) -> Result<Loaded, CheckpointError> {
    let (checkpoint, path_used, refused) = load_fallback_value(path)?;
    Ok(Loaded {
        checkpoint,
        path_used,
        refused,
    })
}

/// Checks that [`save`] can create its temporary file next to `path` by
/// creating and removing one (`.NAME.tmp.<pid>.probe`), so that an
/// unwritable directory is found when a run starts, not when its first
/// checkpoint is due.
///
/// # Errors
///
/// [`CheckpointError::Io`] when the file cannot be created.
pub fn probe_writable(path: &Path) -> Result<(), CheckpointError> {
    let mut name = temp_prefix(path);
    name.push(format!("{}.probe", std::process::id()));
    let probe = parent_dir(path).join(name);
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&probe)
        .map_err(io_err(
            &probe,
            "cannot create a file next to the checkpoint",
        ))?;
    let _ = fs::remove_file(&probe);
    Ok(())
}

/// The older generations of `path` that exist, as (n, path), lowest n
/// (newest) first.
pub fn generations(path: &Path) -> Vec<(usize, PathBuf)> {
    existing_generations(path)
}

/// Follows `path` through symbolic links to the file they name (which may
/// not exist yet), so that a save replaces the target atomically and keeps
/// its generations, temporary and lock files beside the target, instead of
/// replacing the link with a regular file. A path that is not a link is
/// returned as it is.
///
/// # Errors
///
/// [`CheckpointError::SymlinkLoop`] after 40 links;
/// [`CheckpointError::Io`] when a link cannot be read.
pub fn resolve_symlinks(path: &Path) -> Result<PathBuf, CheckpointError> {
    let mut p = path.to_path_buf();
    for _ in 0..40 {
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = fs::read_link(&p).map_err(io_err(&p, "cannot read the symlink"))?;
                p = parent_dir(&p).join(target);
            }
            _ => return Ok(p),
        }
    }
    Err(CheckpointError::SymlinkLoop {
        path: path.to_path_buf(),
    })
}

/// The pid in a temporary file's name after the prefix (`<pid>` or
/// `<pid>.gen` / `<pid>.probe`).
fn temp_owner(rest: &str) -> Option<u32> {
    rest.split('.').next()?.parse().ok()
}

/// Removes temporary files (`.NAME.tmp.*`) that a crashed [`save`] left next
/// to `path`, and returns the paths removed. A file whose name carries the
/// pid of another live process is kept (a writer that does not take the
/// lock, or another host's file on a shared file system, may own it). Call
/// it holding the [`lock_writer`] lock, before the first save of a run.
///
/// # Errors
///
/// The I/O error of listing the directory or removing a file.
pub fn clean_stale_temp(path: &Path) -> io::Result<Vec<PathBuf>> {
    let prefix = temp_prefix(path);
    let Some(prefix) = prefix.to_str() else {
        return Ok(Vec::new());
    };
    let dir = parent_dir(path);
    let mut removed = Vec::new();
    for entry in fs::read_dir(&dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(s) = name.to_str() else { continue };
        let Some(rest) = s.strip_prefix(prefix) else {
            continue;
        };
        let owner = temp_owner(rest);
        if owner.is_some_and(|pid| pid != std::process::id() && lock::alive(pid)) {
            continue;
        }
        if entry.file_type()?.is_file() {
            let p = dir.join(&name);
            match fs::remove_file(&p) {
                Ok(()) => removed.push(p),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    removed.sort();
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    /// A small stand-in payload for testing the framing on its own.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    struct Demo {
        name: String,
        values: Vec<f64>,
        count: u64,
    }

    impl Payload for Demo {
        fn from_payload(_version: u32, bytes: &[u8]) -> Result<Self, PayloadError> {
            let d: Demo = take_exact(bytes)?;
            if d.values.iter().all(|v| v.is_finite()) {
                Ok(d)
            } else {
                Err(PayloadError::Invalid("a value is not finite".into()))
            }
        }
    }

    fn demo(count: u64) -> Demo {
        Demo {
            name: "demo".into(),
            values: vec![1.5, -2.25, 1e-300],
            count,
        }
    }

    fn image(d: &Demo) -> Vec<u8> {
        encode(Path::new("x"), d).unwrap()
    }

    fn dec(bytes: &[u8]) -> Result<Demo, CheckpointError> {
        decode(Path::new("x"), bytes)
    }

    #[test]
    fn layout_matches_the_documented_format() {
        let d = demo(7);
        let b = image(&d);
        assert_eq!(&b[..8], &MAGIC);
        assert_eq!(
            u32::from_le_bytes(b[8..12].try_into().unwrap()),
            FORMAT_VERSION
        );
        let n = u64::from_le_bytes(b[12..20].try_into().unwrap()) as usize;
        assert_eq!(b.len(), HEADER_LEN + n + 4);
        assert_eq!(&b[20..20 + n], &postcard::to_stdvec(&d).unwrap()[..]);
        let crc = u32::from_le_bytes(b[20 + n..].try_into().unwrap());
        assert_eq!(crc, crc32fast::hash(&b[..20 + n]));
    }

    #[test]
    fn round_trip_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.ckpt");
        save_value(&path, &demo(3), 0).unwrap();
        assert_eq!(load_value::<Demo>(&path).unwrap(), demo(3));
        // Saving over an existing file replaces it and leaves no temporary.
        save_value(&path, &demo(4), 0).unwrap();
        assert_eq!(load_value::<Demo>(&path).unwrap(), demo(4));
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![OsString::from("model.ckpt")]);
    }

    #[test]
    fn every_truncation_is_refused() {
        let b = image(&demo(1));
        for len in 0..b.len() {
            match dec(&b[..len]) {
                Err(CheckpointError::TruncatedHeader { len: l, .. }) => {
                    assert!(len < HEADER_LEN);
                    assert_eq!(l, len as u64);
                }
                Err(CheckpointError::TruncatedPayload { available, .. }) => {
                    assert!(len >= HEADER_LEN);
                    assert_eq!(available, (len - HEADER_LEN) as u64);
                }
                other => panic!("length {len}: {other:?}"),
            }
        }
        let msg = dec(&b[..5]).unwrap_err().to_string();
        assert!(msg.starts_with("x: truncated:"), "{msg}");
    }

    #[test]
    fn every_flipped_byte_is_refused() {
        let b = image(&demo(123_456));
        for pos in 0..b.len() {
            for mask in [0x01u8, 0x80, 0xff] {
                let mut bad = b.clone();
                bad[pos] ^= mask;
                let err = dec(&bad).expect_err(&format!("byte {pos} ^ {mask:#x} accepted"));
                let expected = match pos {
                    0..=7 => matches!(err, CheckpointError::BadMagic { .. }),
                    // A flip to another version this build reads (3 ^ 1 = 2)
                    // is caught by the CRC, which covers the header.
                    8..=11 => matches!(
                        err,
                        CheckpointError::UnsupportedVersion { .. }
                            | CheckpointError::CrcMismatch { .. }
                    ),
                    12..=19 => matches!(
                        err,
                        CheckpointError::TruncatedPayload { .. }
                            | CheckpointError::LengthMismatch { .. }
                    ),
                    _ => matches!(err, CheckpointError::CrcMismatch { .. }),
                };
                assert!(expected, "byte {pos} ^ {mask:#x}: {err}");
            }
        }
    }

    #[test]
    fn wrong_magic_is_named() {
        let mut b = image(&demo(1));
        b[..8].copy_from_slice(b"PK\x03\x04abcd");
        let msg = dec(&b).unwrap_err().to_string();
        assert!(msg.contains("not an emstream checkpoint"), "{msg}");
        assert!(!msg.contains("text mode"), "{msg}");
        // A text-mode copy turns "\r\n" into "\n", shifting everything.
        let mut t = b"\x89EMS\n\x1a\n".to_vec();
        t.extend_from_slice(&image(&demo(1))[8..]);
        let msg = dec(&t).unwrap_err().to_string();
        assert!(msg.contains("text mode"), "{msg}");
    }

    #[test]
    fn unknown_version_is_named() {
        let mut b = image(&demo(1));
        b[8..12].copy_from_slice(&99u32.to_le_bytes());
        let msg = dec(&b).unwrap_err().to_string();
        assert!(
            msg.contains("format version 99, this build reads 1 to 5"),
            "{msg}"
        );
        b[8..12].copy_from_slice(&0u32.to_le_bytes());
        assert!(matches!(
            dec(&b),
            Err(CheckpointError::UnsupportedVersion { found: 0, .. })
        ));
    }

    #[test]
    fn wrong_length_field_is_refused() {
        let b = image(&demo(1));
        let n = u64::from_le_bytes(b[12..20].try_into().unwrap());
        for (declared, short) in [(n - 1, false), (n + 1, true), (u64::MAX, true), (0, false)] {
            let mut bad = b.clone();
            bad[12..20].copy_from_slice(&declared.to_le_bytes());
            match dec(&bad) {
                Err(CheckpointError::TruncatedPayload { .. }) if short => {}
                Err(CheckpointError::LengthMismatch { .. }) if !short => {}
                other => panic!("declared {declared}: {other:?}"),
            }
        }
        let mut long = b.clone();
        long.push(0);
        let msg = dec(&long).unwrap_err().to_string();
        assert!(msg.contains("length mismatch"), "{msg}");
    }

    #[test]
    fn crc_mismatch_is_named() {
        let mut b = image(&demo(1));
        let last = b.len() - 1;
        b[last] ^= 0x10;
        let msg = dec(&b).unwrap_err().to_string();
        assert!(msg.contains("CRC32 mismatch: the file is damaged"), "{msg}");
    }

    /// Frames `payload` as a valid file, CRC included.
    fn frame(payload: &[u8]) -> Vec<u8> {
        frame_version(FORMAT_VERSION, payload)
    }

    /// Frames `payload` as a valid file of format `version`.
    pub(super) fn frame_version(version: u32, payload: &[u8]) -> Vec<u8> {
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&version.to_le_bytes());
        b.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        b.extend_from_slice(payload);
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    #[test]
    fn undecodable_and_invalid_payloads_are_refused() {
        // Good framing around garbage: postcard fails.
        assert!(matches!(
            dec(&frame(&[0xff; 3])),
            Err(CheckpointError::Decode { .. })
        ));
        // Good framing around a valid Demo followed by extra bytes.
        let mut p = postcard::to_stdvec(&demo(1)).unwrap();
        p.push(0);
        assert!(matches!(
            dec(&frame(&p)),
            Err(CheckpointError::TrailingPayload { extra: 1, .. })
        ));
        // Decodes but fails validation.
        let mut d = demo(1);
        d.values[0] = f64::NAN;
        let msg = dec(&image(&d)).unwrap_err().to_string();
        assert!(
            msg.contains("invalid contents: a value is not finite"),
            "{msg}"
        );
    }

    fn generations(path: &Path) -> Vec<(usize, u64)> {
        let mut out = Vec::new();
        if path.exists() {
            out.push((0, load_value::<Demo>(path).unwrap().count));
        }
        for (n, p) in existing_generations(path) {
            out.push((n, load_value::<Demo>(&p).unwrap().count));
        }
        out
    }

    #[test]
    fn rotation_keeps_the_asked_number_of_generations() {
        for keep in [0usize, 1, 3] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("m.ckpt");
            for i in 1..=6u64 {
                save_value(&path, &demo(i), keep).unwrap();
            }
            let expect: Vec<(usize, u64)> = (0..=keep).map(|n| (n, 6 - n as u64)).collect();
            assert_eq!(generations(&path), expect, "keep = {keep}");
        }
    }

    #[test]
    fn rotation_survives_a_gap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.ckpt");
        for i in 1..=3u64 {
            save_value(&path, &demo(i), 3).unwrap();
        }
        // As if a crash during rotation had left PATH.1 missing.
        fs::remove_file(generation_path(&path, 1)).unwrap();
        save_value(&path, &demo(4), 3).unwrap();
        assert_eq!(generations(&path), vec![(0, 4), (1, 3), (3, 1)]);
    }

    #[test]
    fn fallback_uses_the_newest_good_generation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.ckpt");
        for i in 1..=3u64 {
            save_value(&path, &demo(i), 2).unwrap();
        }
        // All good: PATH itself, nothing refused.
        let (v, used, refused) = load_fallback_value::<Demo>(&path).unwrap();
        assert_eq!(
            (v.count, used.as_path(), refused.len()),
            (3, path.as_path(), 0)
        );

        // Damage PATH (cut short) and PATH.1 (a flipped byte).
        let b = fs::read(&path).unwrap();
        fs::write(&path, &b[..b.len() / 2]).unwrap();
        let g1 = generation_path(&path, 1);
        let mut b1 = fs::read(&g1).unwrap();
        b1[HEADER_LEN + 1] ^= 0x04;
        fs::write(&g1, &b1).unwrap();

        let (v, used, refused) = load_fallback_value::<Demo>(&path).unwrap();
        assert_eq!(v.count, 1);
        assert_eq!(used, generation_path(&path, 2));
        assert_eq!(refused.len(), 2);
        assert_eq!(refused[0].0, path);
        assert!(matches!(
            refused[0].1,
            CheckpointError::TruncatedPayload { .. }
        ));
        assert_eq!(refused[1].0, g1);
        assert!(matches!(refused[1].1, CheckpointError::CrcMismatch { .. }));

        // Damage the last one too: the error lists every file and check.
        fs::write(generation_path(&path, 2), b"hello").unwrap();
        let err = load_fallback_value::<Demo>(&path).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, CheckpointError::NoneUsable { ref refused, .. } if refused.len() == 3)
        );
        assert!(
            msg.contains("m.ckpt: truncated: the header announces"),
            "{msg}"
        );
        assert!(msg.contains("m.ckpt.1: CRC32 mismatch"), "{msg}");
        assert!(msg.contains("m.ckpt.2: truncated: 5 bytes"), "{msg}");
    }

    #[test]
    fn fallback_when_path_is_missing_or_nothing_exists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.ckpt");
        assert!(matches!(
            load_fallback_value::<Demo>(&path),
            Err(CheckpointError::NotFound { .. })
        ));
        save_value(&path, &demo(1), 1).unwrap();
        save_value(&path, &demo(2), 1).unwrap();
        fs::remove_file(&path).unwrap();
        let (v, used, refused) = load_fallback_value::<Demo>(&path).unwrap();
        assert_eq!((v.count, used), (1, generation_path(&path, 1)));
        assert_eq!(refused.len(), 1);
        assert!(refused[0].1.to_string().contains("missing"));
    }

    #[test]
    fn stale_temporaries_are_cleaned_and_others_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.ckpt");
        save_value(&path, &demo(1), 1).unwrap();
        save_value(&path, &demo(2), 1).unwrap();
        let stale = [
            dir.path().join(".m.ckpt.tmp.99999999"),
            dir.path().join(".m.ckpt.tmp.99999998.gen"),
        ];
        for s in &stale {
            fs::write(s, b"half a checkpoint").unwrap();
        }
        // A live process's (pid 1 is always alive) is not ours to remove.
        let live = dir.path().join(".m.ckpt.tmp.1");
        fs::write(&live, b"being written").unwrap();
        let other = dir.path().join(".other.ckpt.tmp.4242");
        fs::write(&other, b"not ours").unwrap();
        let mut removed = clean_stale_temp(&path).unwrap();
        removed.sort();
        let mut expect = stale.to_vec();
        expect.sort();
        assert_eq!(removed, expect);
        assert!(other.exists());
        assert!(live.exists());
        fs::remove_file(&live).unwrap();
        assert_eq!(generations(&path), vec![(0, 2), (1, 1)]);
        assert!(clean_stale_temp(&path).unwrap().is_empty());
    }

    #[test]
    fn a_failed_save_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.ckpt");
        save_value(&path, &demo(1), 0).unwrap();
        // The temporary file cannot be created when its name is a directory.
        fs::create_dir(temp_path(&path)).unwrap();
        let err = save_value(&path, &demo(2), 0).unwrap_err();
        assert!(matches!(err, CheckpointError::Io { .. }), "{err}");
        assert!(
            err.to_string().contains("temporary checkpoint file"),
            "{err}"
        );
        assert_eq!(load_value::<Demo>(&path).unwrap(), demo(1));
    }

    #[test]
    fn save_into_a_missing_directory_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no/such/dir/m.ckpt");
        let msg = save_value(&path, &demo(1), 0).unwrap_err().to_string();
        assert!(msg.contains("no/such/dir"), "{msg}");
        assert!(
            msg.contains("check that the path and its directory exist"),
            "{msg}"
        );
    }

    #[test]
    fn generation_paths_append_a_suffix() {
        let p = Path::new("/tmp/a/model.ckpt");
        assert_eq!(generation_path(p, 0), p);
        assert_eq!(generation_path(p, 2), Path::new("/tmp/a/model.ckpt.2"));
        assert_eq!(generation_path(Path::new("m"), 10), Path::new("m.10"));
    }

    // ---- Checkpoints of a real learner ----

    use crate::model::{testdata, Params, StepwiseEm};
    use rand::SeedableRng;

    fn learner_params() -> Params {
        Params {
            components: crate::model::ComponentCount::Fixed(2),
            batch_size: 50,
            warmup: 200,
            seed: 11,
            ..Params::default()
        }
    }

    fn points(n: usize, seed: u64) -> Vec<f64> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        testdata::two_clusters().sample(&mut rng, n)
    }

    /// A checkpoint of a learner that has seen `n` points.
    fn checkpoint(n: usize) -> Checkpoint {
        let mut learner = StepwiseEm::new(learner_params().check().unwrap(), 2);
        learner.observe(&points(n, 5), None).unwrap();
        let mut rejected = RejectCounts::default();
        rejected
            .by_reason
            .insert(crate::input::RejectReason::NotNumeric, 3);
        Checkpoint {
            learner,
            rejected,
            anomalies: 4,
            created_unix_ms: 1_700_000_000_000,
            updated_unix_ms: 1_700_000_360_000,
            sources: vec![SourcePosition {
                source: "stdin".into(),
                position: n as u64,
            }],
            columns: Some(vec!["x".into(), "y".into()]),
            selection: None,
        }
    }

    #[test]
    fn a_learner_alone_round_trips_through_bytes() {
        let ck = checkpoint(1234);
        let names = Some(vec!["x".to_string(), "y".to_string()]);
        let alone = Checkpoint::of_learner(ck.learner.clone(), names.clone(), 5).unwrap();
        assert_eq!(alone.created_unix_ms, 5);
        assert!(alone.updated_unix_ms >= 1_700_000_000_000);
        let back = from_bytes(Path::new("mem"), &to_bytes(&alone).unwrap()).unwrap();
        assert_eq!(back.columns, names);
        assert_eq!(back.learner.mixture(), ck.learner.mixture());
        assert_eq!(back.learner.pending_points(), ck.learner.pending_points());
        assert_eq!(back.rejected, RejectCounts::default());
        // A creation time in the future is the time of writing.
        let future = Checkpoint::of_learner(ck.learner.clone(), None, u64::MAX).unwrap();
        assert_eq!(future.created_unix_ms, future.updated_unix_ms);
        let wrong = Checkpoint::of_learner(ck.learner, Some(vec!["x".into()]), 5);
        assert!(
            matches!(wrong, Err(CheckpointError::Invalid { ref reason, .. }) if reason.contains("1 column names for points of dimension 2")),
            "{wrong:?}"
        );
    }

    #[test]
    fn checkpoint_round_trip_resumes_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.ckpt");
        for n in [120, 1234] {
            let ck = checkpoint(n);
            assert_eq!(ck.learner.mixture().is_some(), n >= 200);
            save(&path, &ck, 2).unwrap();
            let back = load(&path).unwrap();
            assert_eq!(back.rejected, ck.rejected);
            assert_eq!(back.anomalies, 4);
            assert_eq!(back.updated_unix_ms, ck.updated_unix_ms);
            assert_eq!(back.learner.counters(), ck.learner.counters());
            assert_eq!(back.learner.pending_points(), ck.learner.pending_points());
            assert_eq!(back.learner.mixture(), ck.learner.mixture());
            // Both continue on the same stream identically.
            let (mut a, mut b) = (ck.learner, back.learner);
            let more = points(700, 9);
            a.observe(&more, None).unwrap();
            b.observe(&more, None).unwrap();
            assert_eq!(a.mixture(), b.mixture());
            assert!(a.mixture().is_some());
            assert_eq!(a.counters(), b.counters());
        }
        let loaded = load_with_fallback(&path).unwrap();
        assert_eq!(loaded.path_used, path);
        assert!(loaded.refused.is_empty());
        assert_eq!(
            load(&generation_path(&path, 1))
                .unwrap()
                .learner
                .pending_points(),
            120
        );
    }

    #[test]
    fn every_flipped_byte_of_a_real_checkpoint_is_refused() {
        let ck = checkpoint(300);
        let b = to_bytes(&ck).unwrap();
        for pos in 0..b.len() {
            let mut bad = b.clone();
            bad[pos] ^= 0x20;
            assert!(
                decode::<Checkpoint>(Path::new("x"), &bad).is_err(),
                "byte {pos} of {}",
                b.len()
            );
        }
        assert!(decode::<Checkpoint>(Path::new("x"), &b).is_ok());
    }

    #[test]
    fn inconsistent_checkpoints_are_refused() {
        let mut ck = checkpoint(300);
        ck.updated_unix_ms = ck.created_unix_ms - 1;
        let err = decode::<Checkpoint>(Path::new("x"), &to_bytes(&ck).unwrap()).unwrap_err();
        assert!(matches!(err, CheckpointError::Invalid { .. }), "{err}");
        assert!(
            err.to_string().contains("before the run was created"),
            "{err}"
        );
    }

    #[test]
    fn a_bad_mixture_in_a_good_frame_is_refused() {
        // Replace the mixture's first weight in the payload by NaN: the
        // mixture's own validation refuses it on load.
        let ck = checkpoint(300);
        let w = ck.learner.mixture().unwrap().weights()[0].to_le_bytes();
        let payload = postcard::to_stdvec(&schema::CheckpointV5::of(&ck)).unwrap();
        let at = payload
            .windows(8)
            .rposition(|s| s == w)
            .expect("weight bytes in the payload");
        let mut bad = payload.clone();
        bad[at..at + 8].copy_from_slice(&f64::NAN.to_le_bytes());
        let err = decode::<Checkpoint>(Path::new("x"), &frame(&bad)).unwrap_err();
        assert!(matches!(err, CheckpointError::Invalid { .. }), "{err}");
        assert!(err.to_string().contains("the mixture is invalid"), "{err}");
    }
}
