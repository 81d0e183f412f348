//! Writes a directory tree as one POSIX tar stream into any `Write` (the writer half of `kind = "volume"`): blocking,
//! never seeking, PAX headers for long names and exact metadata, sparse files stored without their holes.

use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use globset::{Glob, GlobSet, GlobSetBuilder};
use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, SeekFrom, Stat};
use rustix::io::Errno;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tar::{Builder, EntryType, GnuExtSparseHeader, Header};
use tokio_util::sync::CancellationToken;

/// What to archive and how.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchiveOptions {
    /// Absolute path of the directory to archive; entries are named relative to it (`a/b.txt`, no `./` prefix,
    /// no entry for the root itself).
    pub root: PathBuf,
    /// Glob patterns (globset syntax: `*.tmp`, `cache/**`, `**/node_modules`) matched against each entry's relative
    /// path; `*` also matches `/`. An excluded directory is not descended.
    pub exclude: Vec<String>,
    /// Do not descend into directories on another file system than `root` (they are archived empty).
    pub one_file_system: bool,
    /// Skip and report entries that cannot be read (`EACCES`, `EPERM`, `EIO`) instead of failing.
    pub ignore_unreadable: bool,
}

/// SHA-256 of one regular file's content as archived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    /// Path relative to the root (non-UTF-8 bytes replaced by U+FFFD).
    pub path: String,
    /// Logical size in bytes, holes included.
    pub size: u64,
    /// Lowercase hex SHA-256 of the full logical content (holes read as zeros).
    pub sha256: String,
}

/// What an archive run wrote and what it noticed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveReport {
    /// Every tar entry written (directories, files, links, special files), PAX and GNU long-name records excluded.
    pub entries: u64,
    /// Regular files written with their content (hard-link entries not counted).
    pub files: u64,
    /// Logical size of those files, holes included.
    pub bytes: u64,
    /// File data actually written to the archive, holes excluded.
    pub stored_file_bytes: u64,
    /// Files whose size, mtime or ctime changed while being read (archived anyway).
    pub changed: Vec<String>,
    /// Entries that disappeared between listing and reading (skipped).
    pub vanished: Vec<String>,
    /// Entries skipped because they could not be read (`path: reason`), and sockets (`path: socket, not archived`).
    pub unreadable: Vec<String>,
    /// SHA-256 of every regular file archived with its content, in archive order.
    pub digests: Vec<FileDigest>,
}

/// Why an archive could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// An entry could not be read and `ignore_unreadable` is off.
    #[error("cannot read {path}: {reason}; fix permissions or set ignore_unreadable = true")]
    Unreadable {
        /// Full path of the entry.
        path: String,
        /// What failed and the OS error.
        reason: String,
    },
    /// Reading the tree or writing the archive failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The cancellation token fired.
    #[error("archiving was cancelled")]
    Cancelled,
    /// The root is not a directory.
    #[error("{path} is not a directory; point the volume's path at the directory to back up")]
    NotADirectory {
        /// The configured root.
        path: String,
    },
    /// The root is a relative path.
    #[error("{path} is not an absolute path; give the volume's path as an absolute path")]
    RelativeRoot {
        /// The configured root.
        path: String,
    },
    /// An exclude pattern is not a valid glob.
    #[error("invalid exclude pattern {pattern:?}: {reason}; e.g. \"*.tmp\", \"cache/**\" or \"**/node_modules\"")]
    InvalidExclude {
        /// The pattern.
        pattern: String,
        /// The parser's message.
        reason: String,
    },
}

/// Streams the tree under `opts.root` as a tar archive into `out` and returns what was written with the writer.
///
/// Blocking; run it on a blocking thread. Entries come in a deterministic order (names sorted bytewise within each
/// directory, a directory before its contents). On any error (including cancellation) the output is left without
/// the end-of-archive marker, so a truncated stream never reads as a complete archive.
pub fn write_archive<W: Write>(
    opts: &ArchiveOptions,
    out: W,
    cancel: &CancellationToken,
) -> Result<(ArchiveReport, W), ArchiveError> {
    write_archive_with_hook(opts, out, cancel, &mut |_, _| {})
}

/// Size of the copy buffer: memory use does not depend on file sizes.
const COPY_BUFFER: usize = 256 * 1024;
/// Tar block size.
const BLOCK: u64 = 512;
/// Largest uid/gid (and device number) the 8-byte octal ustar fields hold.
const USTAR_MAX_ID: u64 = 0o7777777;
/// Largest size/mtime the 12-byte octal ustar fields hold (8 GiB - 1).
const USTAR_MAX_NUM: u64 = 0o77777777777;
/// Longest user/group name kept in the 32-byte header fields (with its NUL).
const NAME_FIELD_MAX: usize = 31;
/// Longest name (without NUL) kept in a GNU header's 100-byte name field; longer ones get a `././@LongLink`.
const GNU_NAME_MAX: usize = 99;
/// Sparse map entries per file; beyond that, further data regions are merged (their holes stored as zeros).
const MAX_SPARSE_SEGMENTS: usize = 65_536;
/// Zeros for holes, padding and short reads.
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// Points in an entry's life a test can hook into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Listed in its directory, not yet stat'ed.
    Listed,
    /// Stat'ed, not yet opened.
    Stated,
    /// A regular file's header is written and its data is about to be copied.
    Reading,
}

fn write_archive_with_hook<W: Write>(
    opts: &ArchiveOptions,
    out: W,
    cancel: &CancellationToken,
    hook: &mut dyn FnMut(Stage, &[u8]),
) -> Result<(ArchiveReport, W), ArchiveError> {
    if !opts.root.is_absolute() {
        return Err(ArchiveError::RelativeRoot {
            path: opts.root.display().to_string(),
        });
    }
    let excludes = build_excludes(&opts.exclude)?;
    let root_fd = rustix::fs::open(
        &opts.root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| root_error(&opts.root, "cannot open", e))?;
    let root_meta = rustix::fs::fstat(&root_fd)
        .map(|st| Meta::from_stat(&st))
        .map_err(|e| root_error(&opts.root, "cannot stat", e))?;
    let root_names = list_dir(&root_fd).map_err(|e| root_error(&opts.root, "cannot list", e))?;

    let mut archiver = Archiver {
        opts,
        excludes,
        root_dev: root_meta.dev,
        builder: Builder::new(Guarded {
            inner: out,
            aborted: false,
        }),
        report: ArchiveReport::default(),
        links: HashMap::new(),
        ids: IdNames::default(),
        buf: vec![0; COPY_BUFFER],
        cancel,
        hook,
    };
    let mut stack = vec![Frame {
        fd: root_fd,
        prefix: Vec::new(),
        names: root_names,
    }];
    let result = archiver.walk(&mut stack);
    drop(stack);
    let Archiver {
        mut builder,
        report,
        ..
    } = archiver;
    if let Err(e) = result {
        // Dropping the builder writes the end-of-archive marker; make that write fail instead.
        builder.get_mut().aborted = true;
        return Err(e);
    }
    builder.finish().map_err(write_error)?;
    let out = builder.into_inner().map_err(write_error)?;
    Ok((report, out.inner))
}

/// The output, refusing writes once the run has failed.
struct Guarded<W> {
    inner: W,
    aborted: bool,
}

impl<W: Write> Write for Guarded<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.aborted {
            return Err(io::Error::other("the archive was aborted"));
        }
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A directory being walked: its descriptor, its archive name with a trailing `/` (empty for the root) and the
/// names still to visit, sorted in reverse so that `pop` yields them in order.
struct Frame {
    fd: OwnedFd,
    prefix: Vec<u8>,
    names: Vec<CString>,
}

struct Archiver<'a, W: Write> {
    opts: &'a ArchiveOptions,
    excludes: GlobSet,
    root_dev: u64,
    builder: Builder<Guarded<W>>,
    report: ArchiveReport,
    /// First archived name of every inode with more than one link.
    links: HashMap<(u64, u64), Vec<u8>>,
    ids: IdNames,
    buf: Vec<u8>,
    cancel: &'a CancellationToken,
    hook: &'a mut dyn FnMut(Stage, &[u8]),
}

/// The parts of `struct stat` the archive uses, in the same types on every architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Meta {
    dev: u64,
    ino: u64,
    mode: u32,
    nlink: u64,
    uid: u32,
    gid: u32,
    rdev: u64,
    size: u64,
    blocks: u64,
    mtime: i64,
    mtime_nsec: u32,
    ctime: i64,
    ctime_nsec: u32,
}

impl Meta {
    // `struct stat`'s field types differ between architectures; the casts are identities on some of them.
    #[allow(
        clippy::unnecessary_cast,
        clippy::useless_conversion,
        clippy::unnecessary_fallible_conversions
    )]
    fn from_stat(st: &Stat) -> Self {
        Self {
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            mode: st.st_mode as u32,
            nlink: st.st_nlink as u64,
            uid: st.st_uid as u32,
            gid: st.st_gid as u32,
            rdev: st.st_rdev as u64,
            size: u64::try_from(st.st_size).unwrap_or(0),
            blocks: u64::try_from(st.st_blocks).unwrap_or(0),
            mtime: st.st_mtime as i64,
            mtime_nsec: st.st_mtime_nsec as u32,
            ctime: st.st_ctime as i64,
            ctime_nsec: st.st_ctime_nsec as u32,
        }
    }

    fn file_type(&self) -> FileType {
        FileType::from_raw_mode(self.mode)
    }

    fn permissions(&self) -> u32 {
        self.mode & 0o7777
    }

    fn fingerprint(&self) -> Fingerprint {
        Fingerprint {
            dev: self.dev,
            ino: self.ino,
            size: self.size,
            mtime: (self.mtime, self.mtime_nsec),
            ctime: (self.ctime, self.ctime_nsec),
        }
    }
}

/// What must stay the same while a file is read for its copy to be consistent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, u32),
    ctime: (i64, u32),
}

/// Whether a file is reported as changed: it is not the same inode, or its size, mtime or ctime differ between the
/// stat before opening and the fstat after reading, or fewer bytes could be read than its header declares (the
/// missing ones were written as zeros).
fn changed_while_reading(
    before: &Fingerprint,
    after: &Fingerprint,
    declared: u64,
    read: u64,
) -> bool {
    before != after || read != declared
}

/// How a failed system call on one entry is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// The entry is gone or was replaced by another kind of file: skipped, listed in `vanished`.
    Vanished,
    /// The entry cannot be read: an error, or skipped and listed in `unreadable` with `ignore_unreadable`.
    Unreadable,
    /// Anything else (out of descriptors, memory…): the run fails.
    Fatal,
}

fn classify(err: Errno) -> Failure {
    match err {
        // ENOTDIR / ELOOP: opened with O_DIRECTORY / O_NOFOLLOW, the name now points at something else.
        Errno::NOENT | Errno::NOTDIR | Errno::LOOP | Errno::STALE => Failure::Vanished,
        Errno::ACCESS | Errno::PERM | Errno::IO => Failure::Unreadable,
        _ => Failure::Fatal,
    }
}

fn root_error(root: &Path, what: &str, err: Errno) -> ArchiveError {
    let path = root.display().to_string();
    match err {
        Errno::NOTDIR => ArchiveError::NotADirectory { path },
        Errno::ACCESS | Errno::PERM | Errno::IO => ArchiveError::Unreadable {
            path,
            reason: format!("{what}: {}", io::Error::from(err)),
        },
        _ => ArchiveError::Io {
            context: format!("{what} {path}"),
            source: err.into(),
        },
    }
}

fn write_error(source: io::Error) -> ArchiveError {
    ArchiveError::Io {
        context: "writing the archive".into(),
        source,
    }
}

fn build_excludes(patterns: &[String]) -> Result<GlobSet, ArchiveError> {
    let mut builder = GlobSetBuilder::new();
    for pattern in patterns {
        let glob = Glob::new(pattern).map_err(|e| ArchiveError::InvalidExclude {
            pattern: pattern.clone(),
            reason: e.kind().to_string(),
        })?;
        builder.add(glob);
    }
    builder.build().map_err(|e| ArchiveError::InvalidExclude {
        pattern: patterns.join(", "),
        reason: e.to_string(),
    })
}

/// The names in a directory (without `.` and `..`), sorted in reverse byte order.
fn list_dir(fd: &OwnedFd) -> Result<Vec<CString>, Errno> {
    let mut dir = Dir::read_from(fd)?;
    let mut names = Vec::new();
    while let Some(entry) = dir.read() {
        let entry = entry?;
        let name = entry.file_name();
        if name != c"." && name != c".." {
            names.push(name.to_owned());
        }
    }
    names.sort_unstable_by(|a, b| b.as_bytes().cmp(a.as_bytes()));
    Ok(names)
}

fn display(rel: &[u8]) -> String {
    String::from_utf8_lossy(rel).into_owned()
}

/// User and group names from `/etc/passwd` and `/etc/group`, read once.
#[derive(Default)]
struct IdNames {
    users: Option<HashMap<u32, String>>,
    groups: Option<HashMap<u32, String>>,
}

impl IdNames {
    fn user(&mut self, uid: u32) -> Option<String> {
        self.users
            .get_or_insert_with(|| {
                parse_id_file(&std::fs::read_to_string("/etc/passwd").unwrap_or_default())
            })
            .get(&uid)
            .cloned()
    }

    fn group(&mut self, gid: u32) -> Option<String> {
        self.groups
            .get_or_insert_with(|| {
                parse_id_file(&std::fs::read_to_string("/etc/group").unwrap_or_default())
            })
            .get(&gid)
            .cloned()
    }
}

/// `name:password:id:…` lines to id → name (the first name of an id wins, as with getpwuid).
fn parse_id_file(text: &str) -> HashMap<u32, String> {
    let mut map = HashMap::new();
    for line in text.lines() {
        let mut fields = line.split(':');
        let (Some(name), Some(_), Some(id)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        if name.is_empty() || name.starts_with('#') {
            continue;
        }
        if let Ok(id) = id.trim().parse::<u32>() {
            map.entry(id).or_insert_with(|| name.to_owned());
        }
    }
    map
}

/// Splits a name into ustar `prefix` and `name` fields (`(b"", name)` when it fits the name field alone).
fn ustar_split(name: &[u8]) -> Option<(&[u8], &[u8])> {
    if name.len() <= 100 {
        return Some((&name[..0], name));
    }
    name.iter()
        .enumerate()
        .filter(|&(i, &b)| b == b'/' && i <= 155)
        .map(|(i, _)| (&name[..i], &name[i + 1..]))
        .find(|(_, rest)| !rest.is_empty() && rest.len() <= 100)
}

/// A PAX time value: seconds with up to nine decimals, negative values allowed (`-1.5` is 1.5 s before the epoch).
fn pax_time(sec: i64, nsec: u32) -> String {
    if nsec == 0 {
        return sec.to_string();
    }
    let (sign, whole, frac) = if sec < 0 {
        // sec + nsec/1e9 = -((-sec - 1) + (1e9 - nsec)/1e9)
        ("-", -(sec + 1), 1_000_000_000 - nsec)
    } else {
        ("", sec, nsec)
    };
    let frac = format!("{frac:09}");
    format!("{sign}{whole}.{}", frac.trim_end_matches('0'))
}

/// Copies `value` into a fixed header field, NUL-padded (the caller checked that it fits).
fn put(field: &mut [u8], value: &[u8]) {
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
    field[n..].fill(0);
}

/// A data region of a sparse file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Segment {
    offset: u64,
    len: u64,
}

/// The data regions of a file whose allocated blocks are fewer than its size, from `SEEK_DATA` / `SEEK_HOLE`,
/// aligned to 512 bytes (the GNU sparse format needs every region but the last to be a multiple of 512 long).
/// `None` when the file turns out not to have holes, or when the file system cannot tell.
fn sparse_map(fd: BorrowedFd<'_>, size: u64) -> Option<Vec<Segment>> {
    let mut segments: Vec<Segment> = Vec::new();
    let mut off = 0;
    while off < size {
        let data = match rustix::fs::seek(fd, SeekFrom::Data(off)) {
            Ok(data) => data,
            Err(Errno::NXIO) => break, // only a hole is left
            Err(_) => return None,
        };
        if data >= size {
            break;
        }
        let hole = match rustix::fs::seek(fd, SeekFrom::Hole(data)) {
            Ok(hole) => hole.min(size),
            Err(Errno::NXIO) => size, // the file shrank meanwhile
            Err(_) => return None,
        };
        if hole <= data {
            return None; // the file is changing under us: read it whole
        }
        let start = data - data % BLOCK;
        let end = hole.div_ceil(BLOCK).saturating_mul(BLOCK).min(size);
        let full = segments.len() >= MAX_SPARSE_SEGMENTS;
        match segments.last_mut() {
            Some(last) if full || start <= last.offset + last.len => {
                last.len = end.max(last.offset + last.len) - last.offset;
            }
            _ => segments.push(Segment {
                offset: start,
                len: end - start,
            }),
        }
        off = hole;
    }
    let stored: u64 = segments.iter().map(|s| s.len).sum();
    (stored < size).then_some(segments)
}

/// How a file's data copy went.
struct Copied {
    sha256: String,
    /// Bytes read from the file (the rest of the declared size was written as zeros).
    read: u64,
}

impl<W: Write> Archiver<'_, W> {
    fn walk(&mut self, stack: &mut Vec<Frame>) -> Result<(), ArchiveError> {
        while let Some(frame) = stack.last_mut() {
            if self.cancel.is_cancelled() {
                return Err(ArchiveError::Cancelled);
            }
            let Some(name) = frame.names.pop() else {
                stack.pop();
                continue;
            };
            let mut rel = frame.prefix.clone();
            rel.extend_from_slice(name.as_bytes());
            if let Some(child) = self.entry(frame.fd.as_fd(), &name, rel)? {
                stack.push(child);
            }
        }
        Ok(())
    }

    /// Archives one directory entry; returns the frame to descend into for a directory.
    fn entry(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &CStr,
        rel: Vec<u8>,
    ) -> Result<Option<Frame>, ArchiveError> {
        if self.excludes.is_match(Path::new(OsStr::from_bytes(&rel))) {
            return Ok(None);
        }
        (self.hook)(Stage::Listed, &rel);
        let meta = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Meta::from_stat(&st),
            Err(e) => return self.skip(&rel, "cannot stat", e).map(|()| None),
        };
        (self.hook)(Stage::Stated, &rel);
        match meta.file_type() {
            FileType::Directory => self.directory(dir, name, rel, meta),
            FileType::RegularFile => self.regular(dir, name, &rel, meta).map(|()| None),
            FileType::Symlink => self.symlink(dir, name, &rel, meta).map(|()| None),
            FileType::Fifo | FileType::CharacterDevice | FileType::BlockDevice => {
                self.special(&rel, meta).map(|()| None)
            }
            FileType::Socket => {
                self.report
                    .unreadable
                    .push(format!("{}: socket, not archived", display(&rel)));
                Ok(None)
            }
            FileType::Unknown => {
                self.report.unreadable.push(format!(
                    "{}: unknown file type, not archived",
                    display(&rel)
                ));
                Ok(None)
            }
        }
    }

    /// Records an entry that could not be archived, or fails the run, depending on why.
    fn skip(&mut self, rel: &[u8], what: &str, err: Errno) -> Result<(), ArchiveError> {
        let path = display(rel);
        match classify(err) {
            Failure::Vanished => {
                self.report.vanished.push(path);
                Ok(())
            }
            Failure::Unreadable if self.opts.ignore_unreadable => {
                self.report
                    .unreadable
                    .push(format!("{path}: {what}: {}", io::Error::from(err)));
                Ok(())
            }
            Failure::Unreadable => Err(ArchiveError::Unreadable {
                path: self
                    .opts
                    .root
                    .join(OsStr::from_bytes(rel))
                    .display()
                    .to_string(),
                reason: format!("{what}: {}", io::Error::from(err)),
            }),
            Failure::Fatal => Err(ArchiveError::Io {
                context: format!(
                    "{what} {}",
                    self.opts.root.join(OsStr::from_bytes(rel)).display()
                ),
                source: err.into(),
            }),
        }
    }

    fn directory(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &CStr,
        rel: Vec<u8>,
        meta: Meta,
    ) -> Result<Option<Frame>, ArchiveError> {
        let mut prefix = rel;
        prefix.push(b'/');
        if self.opts.one_file_system && meta.dev != self.root_dev {
            self.plain_entry(&prefix, EntryType::Directory, &meta, None)?;
            return Ok(None);
        }
        let rel = &prefix[..prefix.len() - 1];
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = match rustix::fs::openat(parent, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(e) => return self.skip(rel, "cannot open directory", e).map(|()| None),
        };
        let meta = match rustix::fs::fstat(&fd) {
            Ok(st) => Meta::from_stat(&st),
            Err(e) => return self.skip(rel, "cannot stat directory", e).map(|()| None),
        };
        let names = if self.opts.one_file_system && meta.dev != self.root_dev {
            Vec::new()
        } else {
            match list_dir(&fd) {
                Ok(names) => names,
                Err(e) => return self.skip(rel, "cannot list directory", e).map(|()| None),
            }
        };
        self.plain_entry(&prefix, EntryType::Directory, &meta, None)?;
        Ok(Some(Frame { fd, prefix, names }))
    }

    fn symlink(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &CStr,
        rel: &[u8],
        meta: Meta,
    ) -> Result<(), ArchiveError> {
        if self.hard_link(rel, &meta)? {
            return Ok(());
        }
        let target = match rustix::fs::readlinkat(dir, name, Vec::new()) {
            Ok(target) => target.into_bytes(),
            // EINVAL: no longer a symbolic link.
            Err(Errno::INVAL) => {
                self.report.vanished.push(display(rel));
                return Ok(());
            }
            Err(e) => return self.skip(rel, "cannot read link", e),
        };
        self.plain_entry(rel, EntryType::Symlink, &meta, Some(&target))?;
        self.remember_link(rel, &meta);
        Ok(())
    }

    fn special(&mut self, rel: &[u8], meta: Meta) -> Result<(), ArchiveError> {
        if self.hard_link(rel, &meta)? {
            return Ok(());
        }
        let kind = match meta.file_type() {
            FileType::CharacterDevice => EntryType::Char,
            FileType::BlockDevice => EntryType::Block,
            _ => EntryType::Fifo,
        };
        self.plain_entry(rel, kind, &meta, None)?;
        self.remember_link(rel, &meta);
        Ok(())
    }

    /// Writes a `Link` entry if the inode was archived before under another name.
    fn hard_link(&mut self, rel: &[u8], meta: &Meta) -> Result<bool, ArchiveError> {
        if meta.nlink < 2 {
            return Ok(false);
        }
        let Some(first) = self.links.get(&(meta.dev, meta.ino)).cloned() else {
            return Ok(false);
        };
        self.plain_entry(rel, EntryType::Link, meta, Some(&first))?;
        Ok(true)
    }

    fn remember_link(&mut self, rel: &[u8], meta: &Meta) {
        if meta.nlink > 1 {
            self.links
                .entry((meta.dev, meta.ino))
                .or_insert_with(|| rel.to_vec());
        }
    }

    fn regular(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &CStr,
        rel: &[u8],
        before: Meta,
    ) -> Result<(), ArchiveError> {
        // O_NONBLOCK: should the name have become a FIFO meanwhile, opening it must not hang.
        let flags =
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK;
        let fd = match rustix::fs::openat(dir, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(e) => return self.skip(rel, "cannot open", e),
        };
        let opened = match rustix::fs::fstat(&fd) {
            Ok(st) => Meta::from_stat(&st),
            Err(e) => return self.skip(rel, "cannot stat", e),
        };
        if opened.file_type() != FileType::RegularFile {
            self.report.vanished.push(display(rel));
            return Ok(());
        }
        if self.hard_link(rel, &opened)? {
            return Ok(());
        }
        let size = opened.size;
        let map = if opened.blocks.saturating_mul(BLOCK) < size {
            sparse_map(fd.as_fd(), size)
        } else {
            None
        };
        let stored = map.as_ref().map_or(size, |m| m.iter().map(|s| s.len).sum());
        match &map {
            Some(segments) => self.sparse_header(rel, &opened, segments, stored)?,
            None => self.write_header(rel, EntryType::Regular, &opened, size, None)?,
        }
        (self.hook)(Stage::Reading, rel);
        let file = File::from(fd);
        let copied = match &map {
            Some(segments) => self.copy_sparse(&file, rel, segments, size)?,
            None => self.copy_plain(&file, rel, size)?,
        };
        self.pad(stored)?;
        let changed = match rustix::fs::fstat(&file) {
            Ok(st) => changed_while_reading(
                &before.fingerprint(),
                &Meta::from_stat(&st).fingerprint(),
                stored,
                copied.read,
            ),
            Err(_) => true,
        };
        if changed {
            self.report.changed.push(display(rel));
        }
        self.report.entries += 1;
        self.report.files += 1;
        self.report.bytes += size;
        self.report.stored_file_bytes += stored;
        self.report.digests.push(FileDigest {
            path: display(rel),
            size,
            sha256: copied.sha256,
        });
        self.remember_link(rel, &opened);
        Ok(())
    }

    fn check_cancel(&self) -> Result<(), ArchiveError> {
        if self.cancel.is_cancelled() {
            Err(ArchiveError::Cancelled)
        } else {
            Ok(())
        }
    }

    /// A read failed after the header was written: with `ignore_unreadable` the rest is archived as zeros and the
    /// file reported, otherwise the run fails.
    fn read_failed(&mut self, rel: &[u8], at: u64, err: io::Error) -> Result<(), ArchiveError> {
        let reason = format!("read error at byte {at}: {err}");
        let errno = Errno::from_io_error(&err).unwrap_or(Errno::IO);
        match classify(errno) {
            Failure::Unreadable | Failure::Vanished if self.opts.ignore_unreadable => {
                self.report.unreadable.push(format!(
                    "{}: {reason} (archived with zeros from there)",
                    display(rel)
                ));
                Ok(())
            }
            Failure::Unreadable | Failure::Vanished => Err(ArchiveError::Unreadable {
                path: self
                    .opts
                    .root
                    .join(OsStr::from_bytes(rel))
                    .display()
                    .to_string(),
                reason,
            }),
            Failure::Fatal => Err(ArchiveError::Io {
                context: format!(
                    "reading {}",
                    self.opts.root.join(OsStr::from_bytes(rel)).display()
                ),
                source: err,
            }),
        }
    }

    /// Copies `size` bytes from the start of `file`, zero-filling whatever cannot be read.
    fn copy_plain(&mut self, file: &File, rel: &[u8], size: u64) -> Result<Copied, ArchiveError> {
        let mut hasher = Sha256::new();
        let mut reader = file;
        let mut done = 0;
        while done < size {
            self.check_cancel()?;
            let want = usize::try_from(size - done)
                .unwrap_or(usize::MAX)
                .min(self.buf.len());
            match reader.read(&mut self.buf[..want]) {
                Ok(0) => break, // the file shrank
                Ok(n) => {
                    hasher.update(&self.buf[..n]);
                    self.builder
                        .get_mut()
                        .write_all(&self.buf[..n])
                        .map_err(write_error)?;
                    done += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.read_failed(rel, done, e)?;
                    break;
                }
            }
        }
        self.zeros(size - done, Some(&mut hasher), true)?;
        Ok(Copied {
            sha256: hex::encode(hasher.finalize()),
            read: done,
        })
    }

    /// Copies the data regions of a sparse file; the digest covers the whole logical content.
    fn copy_sparse(
        &mut self,
        file: &File,
        rel: &[u8],
        segments: &[Segment],
        size: u64,
    ) -> Result<Copied, ArchiveError> {
        let mut hasher = Sha256::new();
        let mut read = 0;
        let mut pos = 0;
        let mut failed = false;
        for seg in segments {
            self.zeros(seg.offset - pos, Some(&mut hasher), false)?;
            let end = seg.offset + seg.len;
            let mut off = seg.offset;
            while off < end && !failed {
                self.check_cancel()?;
                let want = usize::try_from(end - off)
                    .unwrap_or(usize::MAX)
                    .min(self.buf.len());
                match file.read_at(&mut self.buf[..want], off) {
                    Ok(0) => break, // the file shrank
                    Ok(n) => {
                        hasher.update(&self.buf[..n]);
                        self.builder
                            .get_mut()
                            .write_all(&self.buf[..n])
                            .map_err(write_error)?;
                        off += n as u64;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        self.read_failed(rel, off, e)?;
                        failed = true;
                    }
                }
            }
            read += off - seg.offset;
            self.zeros(end - off, Some(&mut hasher), true)?;
            pos = end;
        }
        self.zeros(size.saturating_sub(pos), Some(&mut hasher), false)?;
        Ok(Copied {
            sha256: hex::encode(hasher.finalize()),
            read,
        })
    }

    /// Feeds `len` zero bytes to the digest and, if `write`, to the archive.
    fn zeros(
        &mut self,
        mut len: u64,
        mut hasher: Option<&mut Sha256>,
        write: bool,
    ) -> Result<(), ArchiveError> {
        while len > 0 {
            self.check_cancel()?;
            let n = usize::try_from(len).unwrap_or(usize::MAX).min(ZEROS.len());
            if let Some(h) = hasher.as_deref_mut() {
                h.update(&ZEROS[..n]);
            }
            if write {
                self.builder
                    .get_mut()
                    .write_all(&ZEROS[..n])
                    .map_err(write_error)?;
            }
            len -= n as u64;
        }
        Ok(())
    }

    /// Pads `len` bytes of entry data to a whole block.
    fn pad(&mut self, len: u64) -> Result<(), ArchiveError> {
        let rest = (BLOCK - len % BLOCK) % BLOCK;
        self.zeros(rest, None, true)
    }

    /// A data-less entry (directory, symlink, hard link, FIFO, device), counted in the report.
    fn plain_entry(
        &mut self,
        name: &[u8],
        kind: EntryType,
        meta: &Meta,
        link: Option<&[u8]>,
    ) -> Result<(), ArchiveError> {
        self.write_header(name, kind, meta, 0, link)?;
        self.report.entries += 1;
        Ok(())
    }

    /// Writes a GNU `././@LongLink` record (`L` for a name, `K` for a link target).
    fn gnu_long(&mut self, kind: EntryType, value: &[u8]) -> Result<(), ArchiveError> {
        let mut h = Header::new_gnu();
        put(&mut h.as_old_mut().name, b"././@LongLink");
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(value.len() as u64 + 1);
        h.set_entry_type(kind);
        h.set_cksum();
        self.builder
            .append(&h, value.chain(&[0u8][..]))
            .map_err(write_error)
    }

    /// Writes a ustar header for `name`, preceded by the PAX records (and, for long names containing a newline,
    /// GNU long-name records) that whatever does not fit ustar needs. The caller writes `size` bytes of data next.
    fn write_header(
        &mut self,
        name: &[u8],
        kind: EntryType,
        meta: &Meta,
        size: u64,
        link: Option<&[u8]>,
    ) -> Result<(), ArchiveError> {
        let mut pax: Vec<(&'static str, Vec<u8>)> = Vec::new();
        let mut h = Header::new_ustar();
        {
            let Some(ustar) = h.as_ustar_mut() else {
                return Err(write_error(io::Error::other("not a ustar header")));
            };
            match ustar_split(name) {
                Some((prefix, rest)) => {
                    put(&mut ustar.prefix, prefix);
                    put(&mut ustar.name, rest);
                }
                None => {
                    put(&mut ustar.name, &name[..100]);
                    if name.contains(&b'\n') {
                        // The tar crate's PAX parser splits records at newlines: use a GNU long name instead.
                        self.gnu_long(EntryType::GNULongName, name)?;
                    } else {
                        pax.push(("path", name.to_vec()));
                    }
                }
            }
            if let Some(target) = link {
                if target.len() <= 100 {
                    put(&mut ustar.linkname, target);
                } else {
                    put(&mut ustar.linkname, &target[..100]);
                    if target.contains(&b'\n') {
                        self.gnu_long(EntryType::GNULongLink, target)?;
                    } else {
                        pax.push(("linkpath", target.to_vec()));
                    }
                }
            }
        }
        h.set_entry_type(kind);
        h.set_mode(meta.permissions());
        h.set_uid(u64::from(meta.uid));
        h.set_gid(u64::from(meta.gid));
        if u64::from(meta.uid) > USTAR_MAX_ID {
            pax.push(("uid", meta.uid.to_string().into_bytes()));
        }
        if u64::from(meta.gid) > USTAR_MAX_ID {
            pax.push(("gid", meta.gid.to_string().into_bytes()));
        }
        h.set_size(size);
        if size > USTAR_MAX_NUM {
            pax.push(("size", size.to_string().into_bytes()));
        }
        let mtime = u64::try_from(meta.mtime).unwrap_or(0);
        h.set_mtime(mtime);
        if meta.mtime_nsec != 0 || meta.mtime < 0 || mtime > USTAR_MAX_NUM {
            pax.push(("mtime", pax_time(meta.mtime, meta.mtime_nsec).into_bytes()));
        }
        for (key, value) in [
            ("uname", self.ids.user(meta.uid)),
            ("gname", self.ids.group(meta.gid)),
        ] {
            let Some(value) = value else { continue };
            if value.len() > NAME_FIELD_MAX {
                pax.push((key, value.into_bytes()));
            } else if key == "uname" {
                h.set_username(&value).map_err(write_error)?;
            } else {
                h.set_groupname(&value).map_err(write_error)?;
            }
        }
        if matches!(kind, EntryType::Char | EntryType::Block) {
            h.set_device_major(rustix::fs::major(meta.rdev))
                .map_err(write_error)?;
            h.set_device_minor(rustix::fs::minor(meta.rdev))
                .map_err(write_error)?;
        }
        if !pax.is_empty() {
            self.builder
                .append_pax_extensions(pax.iter().map(|(k, v)| (*k, v.as_slice())))
                .map_err(write_error)?;
        }
        h.set_cksum();
        self.builder
            .get_mut()
            .write_all(h.as_bytes())
            .map_err(write_error)
    }

    /// Writes an old-GNU sparse header (`S`) with its map; the caller writes the `stored` data bytes next.
    /// Old-GNU headers carry no PAX records: long names go in `././@LongLink`, mtime is whole seconds.
    fn sparse_header(
        &mut self,
        rel: &[u8],
        meta: &Meta,
        segments: &[Segment],
        stored: u64,
    ) -> Result<(), ArchiveError> {
        let mut h = Header::new_gnu();
        if rel.len() > GNU_NAME_MAX {
            self.gnu_long(EntryType::GNULongName, rel)?;
            put(&mut h.as_old_mut().name, &rel[..GNU_NAME_MAX]);
        } else {
            put(&mut h.as_old_mut().name, rel);
        }
        h.set_entry_type(EntryType::GNUSparse);
        h.set_mode(meta.permissions());
        h.set_uid(u64::from(meta.uid));
        h.set_gid(u64::from(meta.gid));
        h.set_mtime(u64::try_from(meta.mtime).unwrap_or(0));
        h.set_size(stored);
        if let Some(user) = self
            .ids
            .user(meta.uid)
            .filter(|u| u.len() <= NAME_FIELD_MAX)
        {
            h.set_username(&user).map_err(write_error)?;
        }
        if let Some(group) = self
            .ids
            .group(meta.gid)
            .filter(|g| g.len() <= NAME_FIELD_MAX)
        {
            h.set_groupname(&group).map_err(write_error)?;
        }
        // Like GNU tar, end the map with an empty region at the logical size, so a trailing hole is described.
        let mut map = segments.to_vec();
        map.push(Segment {
            offset: meta.size,
            len: 0,
        });
        let (in_header, rest) = map.split_at(map.len().min(4));
        {
            let Some(gnu) = h.as_gnu_mut() else {
                return Err(write_error(io::Error::other("not a GNU header")));
            };
            gnu.set_real_size(meta.size);
            for (slot, seg) in gnu.sparse.iter_mut().zip(in_header) {
                slot.set_offset(seg.offset);
                slot.set_length(seg.len);
            }
            gnu.set_is_extended(!rest.is_empty());
        }
        h.set_cksum();
        self.builder
            .get_mut()
            .write_all(h.as_bytes())
            .map_err(write_error)?;
        let mut chunks = rest.chunks(21).peekable();
        while let Some(chunk) = chunks.next() {
            let mut ext = GnuExtSparseHeader::new();
            for (slot, seg) in ext.sparse.iter_mut().zip(chunk) {
                slot.set_offset(seg.offset);
                slot.set_length(seg.len);
            }
            ext.set_is_extended(chunks.peek().is_some());
            self.builder
                .get_mut()
                .write_all(ext.as_bytes())
                .map_err(write_error)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};
    use std::os::unix::ffi::OsStringExt;
    use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, PermissionsExt};
    use std::process::{Command, Stdio};
    use std::time::{Duration, SystemTime};

    const GIB: u64 = 1 << 30;
    const MIB: u64 = 1 << 20;

    fn opts(root: &Path) -> ArchiveOptions {
        ArchiveOptions {
            root: root.to_path_buf(),
            ..ArchiveOptions::default()
        }
    }

    fn archive(opts: &ArchiveOptions) -> (ArchiveReport, Vec<u8>) {
        write_archive(opts, Vec::new(), &CancellationToken::new()).unwrap()
    }

    fn at(root: &Path, rel: &[u8]) -> PathBuf {
        root.join(OsStr::from_bytes(rel))
    }

    fn sha256_of(mut r: impl Read) -> String {
        let mut h = Sha256::new();
        let mut buf = vec![0; 1 << 20];
        loop {
            let n = r.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        hex::encode(h.finalize())
    }

    fn is_root() -> bool {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("probe");
        std::fs::write(&f, b"").unwrap();
        std::fs::metadata(&f).unwrap().uid() == 0
    }

    /// Skips (prints why) or, under LIFEBOAT_TEST_DISALLOW_SKIP=1, fails.
    fn skip(why: &str) {
        let strict = std::env::var("LIFEBOAT_TEST_DISALLOW_SKIP")
            .is_ok_and(|v| matches!(v.trim(), "1" | "true" | "yes"));
        assert!(
            !strict,
            "{why}, and LIFEBOAT_TEST_DISALLOW_SKIP=1 forbids skipping"
        );
        eprintln!("SKIPPED: {why}");
    }

    /// Orders archive names like the walker: component by component.
    fn tree_order(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
        a.split(|&c| c == b'/').cmp(b.split(|&c| c == b'/'))
    }

    /// What both sides of a comparison agree on.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Info {
        kind: char,
        mode: u32,
        size: u64,
        link: Option<Vec<u8>>,
        sha256: Option<String>,
        uid: u32,
        gid: u32,
        rdev: u64,
    }

    /// Every entry under `root` (sockets left out), by relative name.
    fn walk_tree(root: &Path) -> BTreeMap<Vec<u8>, (Info, std::fs::Metadata)> {
        let mut out = BTreeMap::new();
        let mut stack = vec![Vec::new()];
        while let Some(rel) = stack.pop() {
            for e in std::fs::read_dir(at(root, &rel)).unwrap() {
                let e = e.unwrap();
                let mut child = rel.clone();
                if !child.is_empty() {
                    child.push(b'/');
                }
                child.extend_from_slice(e.file_name().as_bytes());
                let m = std::fs::symlink_metadata(e.path()).unwrap();
                let ft = m.file_type();
                let kind = if ft.is_dir() {
                    'd'
                } else if ft.is_file() {
                    'f'
                } else if ft.is_symlink() {
                    'l'
                } else if ft.is_fifo() {
                    'p'
                } else if ft.is_char_device() {
                    'c'
                } else if ft.is_block_device() {
                    'b'
                } else {
                    continue;
                };
                let info = Info {
                    kind,
                    mode: m.mode() & 0o7777,
                    size: if kind == 'f' { m.len() } else { 0 },
                    link: (kind == 'l').then(|| {
                        std::fs::read_link(e.path())
                            .unwrap()
                            .into_os_string()
                            .into_vec()
                    }),
                    sha256: (kind == 'f').then(|| sha256_of(File::open(e.path()).unwrap())),
                    uid: m.uid(),
                    gid: m.gid(),
                    rdev: if matches!(kind, 'c' | 'b') {
                        m.rdev()
                    } else {
                        0
                    },
                };
                if kind == 'd' {
                    stack.push(child.clone());
                }
                out.insert(child, (info, m));
            }
        }
        out
    }

    /// The archive as the `tar` crate reads it, in order: name, hard-link target (kind 'h') or contents.
    fn read_tar(bytes: &[u8]) -> Vec<(Vec<u8>, Info)> {
        let mut ar = tar::Archive::new(bytes);
        let mut out = Vec::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let mut name = e.path_bytes().into_owned();
            let ty = e.header().entry_type();
            if ty == EntryType::Directory {
                assert_eq!(name.pop(), Some(b'/'), "directory names end with a slash");
            }
            let kind = match ty {
                EntryType::Regular | EntryType::GNUSparse => 'f',
                EntryType::Directory => 'd',
                EntryType::Symlink => 'l',
                EntryType::Link => 'h',
                EntryType::Fifo => 'p',
                EntryType::Char => 'c',
                EntryType::Block => 'b',
                other => panic!("unexpected entry type {other:?}"),
            };
            let h = e.header();
            let rdev = if matches!(kind, 'c' | 'b') {
                rustix::fs::makedev(
                    h.device_major().unwrap().unwrap(),
                    h.device_minor().unwrap().unwrap(),
                )
            } else {
                0
            };
            let mut info = Info {
                kind,
                mode: h.mode().unwrap() & 0o7777,
                size: e.size(),
                link: e.link_name_bytes().map(|l| l.into_owned()),
                sha256: None,
                uid: u32::try_from(h.uid().unwrap()).unwrap(),
                gid: u32::try_from(h.gid().unwrap()).unwrap(),
                rdev,
            };
            if kind == 'f' {
                info.sha256 = Some(sha256_of(&mut e));
            }
            out.push((name, info));
        }
        out
    }

    /// Runs `cmd` with `stdin`, returning (success, stdout, stderr).
    fn run(cmd: &mut Command, stdin: Stdio) -> (bool, String, String) {
        let child = cmd
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Feeds `archive` to GNU tar's stdin.
    fn gnu_tar(args: &[&str], archive: &[u8]) -> (bool, String, String) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.tar");
        std::fs::write(&file, archive).unwrap();
        run(
            Command::new("tar").args(args),
            Stdio::from(File::open(&file).unwrap()),
        )
    }

    fn set_mode(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// Builds the mixed tree; returns the names the exclude patterns must leave out and whether a device was made.
    fn build_tree(root: &Path) -> (Vec<&'static [u8]>, bool) {
        let w = |rel: &[u8], data: &[u8]| {
            let path = at(root, rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, data).unwrap();
        };
        w("ünïcødé/файл 名前.txt".as_bytes(), "unicode ✓\n".as_bytes());
        let deep: Vec<String> = (1..=6).map(|i| format!("d{i}{}", "x".repeat(47))).collect();
        let deep = format!("{}/f.txt", deep.join("/"));
        assert!(deep.len() > 300);
        w(deep.as_bytes(), b"deep\n");
        w(b"new\nline.txt", b"newline in the name\n");
        w(
            format!("{}\nend.txt", "N".repeat(150)).as_bytes(),
            b"long name with a newline\n",
        );
        w(b"bad\xffname.txt", b"not utf-8\n");
        w(
            &[&[b'u'; 150][..], b"\xff.bin"].concat(),
            b"long, not utf-8\n",
        );
        w(b"with space and 'quotes' \"too\".txt", b"spaces\n");
        std::fs::create_dir_all(root.join("empty")).unwrap();
        // Modes.
        w(b"modes/f0600", b"secret\n");
        set_mode(&root.join("modes/f0600"), 0o600);
        w(b"modes/f0755", b"#!/bin/sh\n");
        set_mode(&root.join("modes/f0755"), 0o755);
        w(b"modes/suid", b"setuid\n");
        set_mode(&root.join("modes/suid"), 0o4755);
        std::fs::create_dir_all(root.join("modes/sticky")).unwrap();
        set_mode(&root.join("modes/sticky"), 0o1777);
        // Links.
        std::fs::create_dir_all(root.join("links")).unwrap();
        symlink("../modes/f0600", root.join("links/relative")).unwrap();
        symlink("/etc/hostname", root.join("links/absolute")).unwrap();
        symlink("does/not/exist", root.join("links/dangling")).unwrap();
        symlink("t".repeat(150), root.join("links/long-target")).unwrap();
        symlink(
            format!("{}\nz", "q".repeat(120)),
            root.join("links/long-target-newline"),
        )
        .unwrap();
        w(b"hl/a.txt", b"hard linked\n");
        std::fs::hard_link(root.join("hl/a.txt"), root.join("hl/b.txt")).unwrap();
        // Special files.
        std::fs::create_dir_all(root.join("special")).unwrap();
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            root.join("special/fifo"),
            Mode::from_raw_mode(0o640),
        )
        .unwrap();
        let device = rustix::fs::mknodat(
            rustix::fs::CWD,
            root.join("special/null"),
            FileType::CharacterDevice,
            Mode::from_raw_mode(0o666),
            rustix::fs::makedev(1, 3),
        )
        .is_ok();
        let _socket = std::os::unix::net::UnixListener::bind(root.join("special/socket")).unwrap();
        // Big ids (PAX uid/gid, no uname) and precise or pre-epoch times.
        w(b"ids/big.txt", b"big ids\n");
        std::os::unix::fs::chown(root.join("ids/big.txt"), Some(3_000_000), Some(3_000_001))
            .unwrap();
        w(b"times/precise.txt", b"ns\n");
        File::options()
            .write(true)
            .open(root.join("times/precise.txt"))
            .unwrap()
            .set_modified(SystemTime::UNIX_EPOCH + Duration::new(1_600_000_000, 123_456_789))
            .unwrap();
        w(b"times/old.txt", b"1969\n");
        File::options()
            .write(true)
            .open(root.join("times/old.txt"))
            .unwrap()
            .set_modified(SystemTime::UNIX_EPOCH - Duration::from_millis(1500))
            .unwrap();
        // Sparse files: 2 GiB with ~1 MiB of data, and one needing extended sparse headers.
        std::fs::create_dir_all(root.join("sparse")).unwrap();
        let big = File::create(root.join("sparse/big.img")).unwrap();
        big.set_len(2 * GIB).unwrap();
        big.write_all_at(&[b'A'; 4096], 0).unwrap();
        let pattern: Vec<u8> = (0..MIB).map(|i| (i % 251) as u8).collect();
        big.write_all_at(&pattern, GIB).unwrap();
        big.write_all_at(b"the end.\n", 2 * GIB - 9).unwrap();
        let many = File::create(root.join("sparse/many.img")).unwrap();
        many.set_len(64 * MIB).unwrap();
        for i in 0..30u64 {
            many.write_all_at(&[i as u8 + 1; 4096], i * 2 * MIB + 512)
                .unwrap();
        }
        // Excluded.
        w(b"junk.tmp", b"excluded by *.tmp\n");
        w(b"sub/keep.txt", b"kept\n");
        w(b"sub/x.tmp", b"excluded by *.tmp\n");
        w(b"cache/blob", b"excluded with its directory\n");
        w(
            b"app/node_modules/pkg/index.js",
            b"excluded by **/node_modules\n",
        );
        (
            vec![
                b"junk.tmp",
                b"sub/x.tmp",
                b"cache",
                b"cache/blob",
                b"app/node_modules",
                b"app/node_modules/pkg",
                b"app/node_modules/pkg/index.js",
            ],
            device,
        )
    }

    #[test]
    fn tree_round_trips_through_the_tar_crate_and_gnu_tar() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("src");
        std::fs::create_dir(&root).unwrap();
        let (excluded, device) = build_tree(&root);
        let mut source = walk_tree(&root);
        for name in &excluded {
            assert!(source.remove(*name).is_some(), "{}", display(name));
        }
        let options = ArchiveOptions {
            exclude: vec!["*.tmp".into(), "cache".into(), "**/node_modules".into()],
            ..opts(&root)
        };
        let (report, bytes) = archive(&options);

        // Size: the 2 GiB sparse file costs its data, not its holes.
        assert!(
            bytes.len() < 10 * MIB as usize,
            "archive is {} bytes",
            bytes.len()
        );
        assert!(report.bytes > 2 * GIB);
        assert!(
            report.stored_file_bytes < 2 * MIB,
            "{}",
            report.stored_file_bytes
        );
        assert_eq!(
            report.unreadable,
            vec!["special/socket: socket, not archived".to_string()]
        );
        assert!(
            report.changed.is_empty() && report.vanished.is_empty(),
            "{report:?}"
        );

        // (1) The tar crate: names in walk order, every attribute, contents.
        let entries = read_tar(&bytes);
        let names: Vec<Vec<u8>> = entries.iter().map(|(n, _)| n.clone()).collect();
        let mut expected: Vec<Vec<u8>> = source.keys().cloned().collect();
        expected.sort_by(|a, b| tree_order(a, b));
        assert_eq!(names, expected);
        assert_eq!(report.entries, entries.len() as u64);
        for (name, info) in &entries {
            let (want, _) = &source[name];
            if info.kind == 'h' {
                assert_eq!(name, b"hl/b.txt");
                assert_eq!(info.link.as_deref(), Some(&b"hl/a.txt"[..]));
                assert_eq!(
                    (info.mode, info.uid, info.gid),
                    (want.mode, want.uid, want.gid)
                );
            } else {
                assert_eq!(info, want, "{}", display(name));
            }
        }
        let files = entries.iter().filter(|(_, i)| i.kind == 'f').count() as u64;
        assert_eq!(report.files, files);
        assert_eq!(
            entries.iter().filter(|(_, i)| i.kind == 'c').count(),
            usize::from(device)
        );

        // (3) Digests: archive order, full logical content, equal to sha256sum's.
        let regular: Vec<&Vec<u8>> = entries
            .iter()
            .filter(|(_, i)| i.kind == 'f')
            .map(|(n, _)| n)
            .collect();
        assert_eq!(report.digests.len(), regular.len());
        for (digest, name) in report.digests.iter().zip(regular) {
            assert_eq!(digest.path, display(name));
            assert_eq!(digest.size, source[name].0.size);
            let (ok, out, err) = run(
                &mut Command::new("sha256sum"),
                Stdio::from(File::open(at(&root, name)).unwrap()),
            );
            assert!(ok, "{err}");
            assert_eq!(
                digest.sha256,
                out.split_whitespace().next().unwrap(),
                "{}",
                digest.path
            );
        }

        // (2) GNU tar lists and extracts it without a word, and the extracted tree equals the source.
        let (ok, _, err) = gnu_tar(&["-tvf", "-"], &bytes);
        assert!(ok && err.is_empty(), "tar -t: {err}");
        let out = tmp.path().join("out");
        std::fs::create_dir(&out).unwrap();
        // --warning=no-timestamp: GNU tar calls times/old.txt's pre-1970 mtime "implausibly old" (and sets it).
        let (ok, _, err) = gnu_tar(
            &[
                "-xf",
                "-",
                "-C",
                out.to_str().unwrap(),
                "--same-owner",
                "--same-permissions",
                "--warning=no-timestamp",
            ],
            &bytes,
        );
        assert!(ok && err.is_empty(), "tar -x: {err}");
        let extracted = walk_tree(&out);
        assert_eq!(
            extracted.keys().collect::<BTreeSet<_>>(),
            source.keys().collect::<BTreeSet<_>>()
        );
        for (name, (want, want_meta)) in &source {
            let (got, got_meta) = &extracted[name];
            assert_eq!(got, want, "{}", display(name));
            if matches!(want.kind, 'f' | 'd') {
                let want_time = if name.starts_with(b"sparse/") {
                    // Old-GNU sparse headers hold whole seconds.
                    (want_meta.mtime(), 0)
                } else {
                    (want_meta.mtime(), want_meta.mtime_nsec())
                };
                assert_eq!(
                    (got_meta.mtime(), got_meta.mtime_nsec()),
                    want_time,
                    "{}",
                    display(name)
                );
            }
        }
        assert_eq!(
            extracted[&b"hl/a.txt".to_vec()].1.ino(),
            extracted[&b"hl/b.txt".to_vec()].1.ino()
        );
        assert_eq!(extracted[&b"times/old.txt".to_vec()].1.mtime(), -2); // -1.5 s, floored
        let big = &extracted[&b"sparse/big.img".to_vec()].1;
        assert_eq!(big.len(), 2 * GIB);
        assert!(
            big.blocks() * 512 < 16 * MIB,
            "extracted sparse file uses {} blocks",
            big.blocks()
        );
    }

    #[test]
    fn sparse_map_aligns_merges_and_skips_dense_files() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("s");
        let f = File::create(&path).unwrap();
        f.set_len(10 * MIB).unwrap();
        f.write_all_at(b"x", 5 * MIB + 100).unwrap();
        f.write_all_at(b"y", 10 * MIB - 1).unwrap();
        let map = sparse_map(f.as_fd(), 10 * MIB).unwrap();
        for (i, seg) in map.iter().enumerate() {
            assert_eq!(seg.offset % BLOCK, 0);
            if i + 1 < map.len() {
                assert_eq!(seg.len % BLOCK, 0);
            }
            assert!(seg.offset + seg.len <= 10 * MIB);
        }
        assert_eq!(map.last().map(|s| s.offset + s.len), Some(10 * MIB));
        assert!(map
            .iter()
            .any(|s| s.offset <= 5 * MIB + 100 && 5 * MIB + 100 < s.offset + s.len));
        assert!(map.iter().map(|s| s.len).sum::<u64>() < MIB);

        let dense = tmp.path().join("d");
        std::fs::write(&dense, vec![1u8; 100_000]).unwrap();
        assert_eq!(
            sparse_map(File::open(&dense).unwrap().as_fd(), 100_000),
            None
        );
    }

    #[test]
    fn files_changing_while_read_are_flagged_and_the_archive_stays_valid() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let original: Vec<u8> = (0..300 * 1024u32).map(|i| (i % 253) as u8).collect();
        std::fs::write(root.join("grow.bin"), &original).unwrap();
        std::fs::write(root.join("shrink.bin"), &original).unwrap();
        std::fs::write(root.join("steady.txt"), b"steady\n").unwrap();
        let mut hook = |stage: Stage, rel: &[u8]| {
            if stage != Stage::Reading {
                return;
            }
            if rel == b"grow.bin" {
                let f = File::options()
                    .append(true)
                    .open(root.join("grow.bin"))
                    .unwrap();
                (&f).write_all(&[7; 65536]).unwrap();
            } else if rel == b"shrink.bin" {
                File::options()
                    .write(true)
                    .open(root.join("shrink.bin"))
                    .unwrap()
                    .set_len(1000)
                    .unwrap();
            }
        };
        let (report, bytes) = write_archive_with_hook(
            &opts(root),
            Vec::new(),
            &CancellationToken::new(),
            &mut hook,
        )
        .unwrap();
        assert_eq!(
            report.changed,
            vec!["grow.bin".to_string(), "shrink.bin".to_string()]
        );

        let entries = read_tar(&bytes);
        let names: Vec<&[u8]> = entries.iter().map(|(n, _)| n.as_slice()).collect();
        assert_eq!(names, vec![&b"grow.bin"[..], b"shrink.bin", b"steady.txt"]);
        // Grown: exactly the declared size, the original bytes.
        assert_eq!(entries[0].1.size, original.len() as u64);
        assert_eq!(
            entries[0].1.sha256.as_deref(),
            Some(sha256_of(&original[..]).as_str())
        );
        // Shrunk: the remaining bytes, then zeros up to the declared size.
        let mut shrunk = original[..1000].to_vec();
        shrunk.resize(original.len(), 0);
        assert_eq!(entries[1].1.size, original.len() as u64);
        assert_eq!(
            entries[1].1.sha256.as_deref(),
            Some(sha256_of(&shrunk[..]).as_str())
        );
        assert_eq!(
            entries[2].1.sha256.as_deref(),
            Some(sha256_of(&b"steady\n"[..]).as_str())
        );
        // The digests describe what was archived.
        let digests: Vec<&str> = report.digests.iter().map(|d| d.sha256.as_str()).collect();
        let archived: Vec<&str> = entries
            .iter()
            .map(|(_, i)| i.sha256.as_deref().unwrap())
            .collect();
        assert_eq!(digests, archived);
        let (ok, _, err) = gnu_tar(&["-tf", "-"], &bytes);
        assert!(ok && err.is_empty(), "{err}");
    }

    #[test]
    fn change_detection_compares_identity_size_and_times() {
        let before = Fingerprint {
            dev: 1,
            ino: 2,
            size: 100,
            mtime: (1_700_000_000, 5),
            ctime: (1_700_000_000, 6),
        };
        assert!(!changed_while_reading(&before, &before, 100, 100));
        for after in [
            Fingerprint {
                size: 101,
                ..before
            },
            Fingerprint {
                mtime: (1_700_000_000, 7),
                ..before
            },
            Fingerprint {
                ctime: (1_700_000_001, 6),
                ..before
            },
            Fingerprint { ino: 3, ..before },
        ] {
            assert!(
                changed_while_reading(&before, &after, 100, 100),
                "{after:?}"
            );
        }
        // Same stat, but the file returned fewer bytes than declared.
        assert!(changed_while_reading(&before, &before, 100, 60));
    }

    #[test]
    fn entries_vanishing_between_listing_and_reading_are_skipped() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        for name in ["gone.txt", "gone2.txt", "keep.txt"] {
            std::fs::write(root.join(name), name).unwrap();
        }
        std::fs::create_dir(root.join("gonedir")).unwrap();
        let mut hook = |stage: Stage, rel: &[u8]| match (stage, rel) {
            (Stage::Listed, b"gone.txt") | (Stage::Stated, b"gone2.txt") => {
                std::fs::remove_file(root.join(OsStr::from_bytes(rel))).unwrap();
            }
            (Stage::Stated, b"gonedir") => std::fs::remove_dir(root.join("gonedir")).unwrap(),
            _ => {}
        };
        let (report, bytes) = write_archive_with_hook(
            &opts(root),
            Vec::new(),
            &CancellationToken::new(),
            &mut hook,
        )
        .unwrap();
        assert_eq!(report.vanished, vec!["gone.txt", "gone2.txt", "gonedir"]);
        let names: Vec<Vec<u8>> = read_tar(&bytes).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, vec![b"keep.txt".to_vec()]);
    }

    #[test]
    fn cancellation_stops_between_entries_and_inside_a_file() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::write(root.join("a.txt"), b"a").unwrap();
        std::fs::write(root.join("big.bin"), vec![3u8; 10 * MIB as usize]).unwrap();

        let cancel = CancellationToken::new();
        cancel.cancel();
        let mut out = Vec::new();
        let err = write_archive(&opts(root), &mut out, &cancel).unwrap_err();
        assert!(matches!(err, ArchiveError::Cancelled), "{err}");
        assert!(out.is_empty(), "no end-of-archive marker after a failure");

        let cancel = CancellationToken::new();
        let mut out = Vec::new();
        let mut hook = |stage: Stage, rel: &[u8]| {
            if stage == Stage::Reading && rel == b"big.bin" {
                cancel.cancel();
            }
        };
        let err = write_archive_with_hook(&opts(root), &mut out, &cancel, &mut hook).unwrap_err();
        assert!(matches!(err, ArchiveError::Cancelled), "{err}");
        assert!(
            out.len() < 2 * MIB as usize,
            "stopped inside the file, after {} bytes",
            out.len()
        );
    }

    /// The unreadable checks, run by a user who cannot read `locked/` and `secret.txt` under `root`.
    fn check_unreadable(root: &Path) {
        let err = write_archive(&opts(root), Vec::new(), &CancellationToken::new()).unwrap_err();
        let ArchiveError::Unreadable { path, reason } = &err else {
            panic!("expected Unreadable, got {err}");
        };
        assert_eq!(Path::new(path), root.join("locked"));
        assert!(reason.contains("Permission denied"), "{reason}");
        assert!(err
            .to_string()
            .contains("fix permissions or set ignore_unreadable = true"));

        let options = ArchiveOptions {
            ignore_unreadable: true,
            ..opts(root)
        };
        let (report, bytes) = archive(&options);
        assert_eq!(report.unreadable.len(), 2, "{:?}", report.unreadable);
        assert!(
            report.unreadable[0].starts_with("locked: cannot open directory: Permission denied")
        );
        assert!(report.unreadable[1].starts_with("secret.txt: cannot open: Permission denied"));
        let names: Vec<Vec<u8>> = read_tar(&bytes).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, vec![b"also.txt".to_vec(), b"ok.txt".to_vec()]);
    }

    const UNREADABLE_ROOT_ENV: &str = "LIFEBOAT_ARCHIVE_TEST_UNREADABLE_ROOT";

    #[test]
    fn unreadable_entries_fail_the_run_or_are_skipped_and_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("tree");
        std::fs::create_dir(&root).unwrap();
        for name in ["also.txt", "ok.txt", "secret.txt"] {
            std::fs::write(root.join(name), name).unwrap();
        }
        std::fs::create_dir(root.join("locked")).unwrap();
        std::fs::write(root.join("locked/inside.txt"), b"inside").unwrap();
        set_mode(&root.join("secret.txt"), 0o600);
        set_mode(&root.join("locked"), 0o700);
        if !is_root() {
            set_mode(&root.join("secret.txt"), 0);
            set_mode(&root.join("locked"), 0);
            check_unreadable(&root);
            set_mode(&root.join("locked"), 0o700);
            return;
        }
        // Root reads everything: run the checks in a copy of this test binary as `nobody`, for whom the
        // root-owned 0600 file and 0700 directory are unreadable.
        set_mode(tmp.path(), 0o755);
        let exe = tmp.path().join("test-binary");
        std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
        set_mode(&exe, 0o755);
        let (ok, out, err) = run(
            Command::new("runuser")
                .args(["-u", "nobody", "--"])
                .arg(&exe)
                .args([
                    "--exact",
                    "source::archive::tests::unreadable_child",
                    "--include-ignored",
                    "--test-threads=1",
                ])
                .env(UNREADABLE_ROOT_ENV, &root)
                .current_dir(tmp.path()),
            Stdio::null(),
        );
        assert!(
            ok && out.contains("1 passed"),
            "child as nobody:\n{out}\n{err}"
        );
    }

    #[test]
    #[ignore = "runs as user nobody, started by unreadable_entries_fail_the_run_or_are_skipped_and_reported"]
    fn unreadable_child() {
        let root = std::env::var(UNREADABLE_ROOT_ENV).unwrap();
        check_unreadable(Path::new(&root));
    }

    #[test]
    fn error_classification() {
        assert_eq!(classify(Errno::NOENT), Failure::Vanished);
        assert_eq!(classify(Errno::NOTDIR), Failure::Vanished);
        assert_eq!(classify(Errno::LOOP), Failure::Vanished);
        assert_eq!(classify(Errno::ACCESS), Failure::Unreadable);
        assert_eq!(classify(Errno::PERM), Failure::Unreadable);
        assert_eq!(classify(Errno::IO), Failure::Unreadable);
        assert_eq!(classify(Errno::MFILE), Failure::Fatal);
        assert_eq!(classify(Errno::NOMEM), Failure::Fatal);
    }

    #[test]
    fn one_file_system_archives_mount_points_empty() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::write(root.join("a.txt"), b"a").unwrap();
        let mnt = root.join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let (mounted, _, err) = run(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", "size=1m", "lifeboat-test"])
                .arg(&mnt),
            Stdio::null(),
        );
        if !mounted {
            skip(&format!("cannot mount a tmpfs ({})", err.trim()));
            return;
        }
        struct Unmount<'a>(&'a Path);
        impl Drop for Unmount<'_> {
            fn drop(&mut self) {
                let _status = Command::new("umount").arg(self.0).status();
            }
        }
        let _unmount = Unmount(&mnt);
        std::fs::write(mnt.join("inner.txt"), b"other fs").unwrap();

        let names = |one_file_system: bool| -> Vec<Vec<u8>> {
            let options = ArchiveOptions {
                one_file_system,
                ..opts(root)
            };
            read_tar(&archive(&options).1)
                .into_iter()
                .map(|(n, _)| n)
                .collect()
        };
        assert_eq!(names(true), vec![b"a.txt".to_vec(), b"mnt".to_vec()]);
        assert_eq!(
            names(false),
            vec![
                b"a.txt".to_vec(),
                b"mnt".to_vec(),
                b"mnt/inner.txt".to_vec()
            ]
        );
    }

    #[test]
    fn bad_roots_and_patterns_are_errors() {
        let cancel = CancellationToken::new();
        let relative = opts(Path::new("relative/dir"));
        assert!(matches!(
            write_archive(&relative, Vec::new(), &cancel),
            Err(ArchiveError::RelativeRoot { .. })
        ));
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        assert!(matches!(
            write_archive(&opts(&file), Vec::new(), &cancel),
            Err(ArchiveError::NotADirectory { .. })
        ));
        let missing = opts(&tmp.path().join("missing"));
        assert!(matches!(
            write_archive(&missing, Vec::new(), &cancel),
            Err(ArchiveError::Io { .. })
        ));
        let bad = ArchiveOptions {
            exclude: vec!["a[".into()],
            ..opts(tmp.path())
        };
        assert!(matches!(
            write_archive(&bad, Vec::new(), &cancel),
            Err(ArchiveError::InvalidExclude { .. })
        ));
    }

    #[test]
    fn an_empty_directory_is_an_empty_archive() {
        let tmp = tempfile::tempdir().unwrap();
        let (report, bytes) = archive(&opts(tmp.path()));
        assert_eq!(report, ArchiveReport::default());
        assert_eq!(bytes, vec![0; 1024]);
    }

    #[test]
    fn header_helpers() {
        assert_eq!(pax_time(5, 0), "5");
        assert_eq!(pax_time(1, 500_000_000), "1.5");
        assert_eq!(pax_time(0, 1), "0.000000001");
        assert_eq!(pax_time(-2, 500_000_000), "-1.5");
        assert_eq!(pax_time(-1, 250_000_000), "-0.75");

        assert_eq!(ustar_split(b"a/b"), Some((&b""[..], &b"a/b"[..])));
        let long = format!("{}/{}", "p".repeat(120), "n".repeat(90));
        let (prefix, name) = ustar_split(long.as_bytes()).unwrap();
        assert_eq!((prefix.len(), name.len()), (120, 90));
        let dir = format!("{}/{}/", "p".repeat(120), "n".repeat(99));
        assert_eq!(
            ustar_split(dir.as_bytes()).map(|(p, n)| (p.len(), n.len())),
            Some((120, 100))
        );
        assert_eq!(ustar_split("x".repeat(101).as_bytes()), None);
        assert_eq!(
            ustar_split(format!("{}/{}", "p".repeat(156), "n").as_bytes()),
            None
        );

        let ids = parse_id_file("root:x:0:0:root:/root:/bin/bash\n# comment\n\nwww-data:x:33:33::/:/x\nalias:x:0:0::/:\n");
        assert_eq!(ids.get(&0).map(String::as_str), Some("root"));
        assert_eq!(ids.get(&33).map(String::as_str), Some("www-data"));
        assert_eq!(ids.len(), 2);
    }
}
