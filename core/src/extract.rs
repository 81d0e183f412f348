//! Restores a volume snapshot's decoded tar stream into a directory (`lifeboat restore --to-dir`), from a
//! non-seekable reader, treating the archive as hostile: nothing is ever written outside the target or through a symlink.

use rustix::fs::{self as rfs, AtFlags, FileType, Gid, Mode, OFlags, Timespec, Timestamps, Uid};
use rustix::io::Errno;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashSet};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use tar::EntryType;
use tokio_util::sync::CancellationToken;

/// Size of the copy buffer (one read from the archive at most).
const COPY_BUF: usize = 256 * 1024;
/// The cancellation token is checked at least this often while copying data.
const CANCEL_EVERY: u64 = 4 * 1024 * 1024;
/// Compared against a sparse file's chunks to find holes (a slice comparison is a `memcmp`).
static ZEROS: [u8; COPY_BUF] = [0; COPY_BUF];

/// How metadata from the archive is applied.
#[derive(Debug, Clone, Default)]
pub struct ExtractOptions {
    /// Change owners to the archived numeric uid/gid (the names in the archive are not looked up). Only done when
    /// running as root; otherwise ownership is silently left to the current user.
    pub preserve_ownership: bool,
    /// Apply the archived modes: all bits (setuid, setgid, sticky) as root; without root, `mode & 0o777` (plus the
    /// sticky bit on directories). When false, modes are `mode & 0o777` minus the process umask (sticky bit kept on
    /// directories).
    pub preserve_permissions: bool,
}

/// What an extraction did.
#[derive(Debug, Clone, Default)]
pub struct ExtractReport {
    /// Archive members processed (not counting PAX/GNU extension headers).
    pub entries: u64,
    /// Regular files written (sparse ones included, hard links not).
    pub files: u64,
    /// Logical bytes of those files (holes count as zeros).
    pub bytes: u64,
    /// For each regular file written: its path relative to the target (`/`-separated, no `./`), its size and the
    /// hex SHA-256 of its content as written (holes as zeros). Hard links are not listed: they share their target's.
    pub digests: Vec<(String, u64, String)>,
    /// Entries that were not created, each with the reason (e.g. device nodes when not running as root).
    pub skipped: Vec<String>,
}

/// Why an extraction failed. After an error the target holds a partial tree; directories may still have their
/// temporary mode (0700) and modification time.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// The archive tried to write outside the target (absolute path, `..`, a path through a symlink, a hard link to
    /// something that was not extracted from it). Nothing was written for this entry or after it.
    #[error("refusing archive entry `{entry}`: {reason}")]
    Unsafe {
        /// The entry's path as written in the archive (lossy UTF-8).
        entry: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The target exists and is not an empty directory.
    #[error("{} exists and is not an empty directory", .0.display())]
    NotEmpty(PathBuf),
    /// Reading the stream or writing the tree failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: io::Error,
    },
    /// The cancellation token fired.
    #[error("extraction cancelled")]
    Cancelled,
    /// The archive is malformed or uses a feature this reader does not support.
    #[error("malformed archive: {0}")]
    Format(String),
}

fn io_err(context: impl Into<String>, source: impl Into<io::Error>) -> ExtractError {
    ExtractError::Io {
        context: context.into(),
        source: source.into(),
    }
}

fn unsafe_entry(entry: &str, reason: impl Into<String>) -> ExtractError {
    ExtractError::Unsafe {
        entry: entry.to_string(),
        reason: reason.into(),
    }
}

/// Fails with [`ExtractError::NotEmpty`] if `dest` exists and is not an empty directory, unless `allow_non_empty`
/// (a path that exists but is not a directory is refused either way). Creates `dest` if it is missing; its parent
/// must exist. `dest` itself may be a symlink to a directory.
pub fn check_target(dest: &Path, allow_non_empty: bool) -> Result<(), ExtractError> {
    match std::fs::metadata(dest) {
        Ok(meta) if meta.is_dir() => {
            if allow_non_empty {
                return Ok(());
            }
            let mut entries = std::fs::read_dir(dest)
                .map_err(|e| io_err(format!("listing {}", dest.display()), e))?;
            match entries.next() {
                None => Ok(()),
                Some(Ok(_)) => Err(ExtractError::NotEmpty(dest.to_path_buf())),
                Some(Err(e)) => Err(io_err(format!("listing {}", dest.display()), e)),
            }
        }
        Ok(_) => Err(ExtractError::NotEmpty(dest.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::create_dir(dest).map_err(|e| io_err(format!("creating {}", dest.display()), e))
        }
        Err(e) => Err(io_err(format!("inspecting {}", dest.display()), e)),
    }
}

/// Extracts the tar stream `src` into the existing directory `dest` (see [`check_target`]), blocking; run it in
/// `spawn_blocking`. Entries with absolute paths, `..` components, empty paths, parents that are symlinks, or hard
/// links to anything not extracted earlier from the same stream fail with [`ExtractError::Unsafe`] before anything
/// is written for them. Existing non-directories at an entry's path are replaced (unlinked, never written into).
/// Directories get their final modes and times at the end, deepest first. `cancel` is checked between entries and
/// every few MiB of data.
pub fn extract<R: Read>(
    src: R,
    dest: &Path,
    opts: &ExtractOptions,
    cancel: &CancellationToken,
) -> Result<ExtractReport, ExtractError> {
    let privileged = owns_as_root(dest)?;
    extract_as(src, dest, opts, cancel, privileged)
}

/// Whether files this process creates in `dest` belong to root (so it may chown, set setid bits and make devices).
/// Probed with an unnamed temporary file, which also reflects root squashing on network filesystems.
fn owns_as_root(dest: &Path) -> Result<bool, ExtractError> {
    let probe = tempfile::tempfile_in(dest)
        .map_err(|e| io_err(format!("creating a probe file in {}", dest.display()), e))?;
    let meta = probe
        .metadata()
        .map_err(|e| io_err(format!("inspecting a probe file in {}", dest.display()), e))?;
    Ok(meta.uid() == 0)
}

/// The process umask, from `/proc/self/status` (0o022 if unavailable).
fn process_umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                line.strip_prefix("Umask:")
                    .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
            })
        })
        .unwrap_or(0o022)
}

fn extract_as<R: Read>(
    src: R,
    dest: &Path,
    opts: &ExtractOptions,
    cancel: &CancellationToken,
    privileged: bool,
) -> Result<ExtractReport, ExtractError> {
    let root = rfs::open(
        dest,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_err(format!("opening {}", dest.display()), e))?;
    let mut x = Extractor {
        root,
        opts,
        privileged,
        umask: process_umask(),
        cancel,
        report: ExtractReport::default(),
        dirs: BTreeMap::new(),
        created: HashSet::new(),
        parent_cache: None,
        buf: vec![0; COPY_BUF],
    };
    let mut archive = tar::Archive::new(src);
    let entries = archive
        .entries()
        .map_err(|e| io_err("reading the tar stream", e))?;
    for entry in entries {
        if cancel.is_cancelled() {
            return Err(ExtractError::Cancelled);
        }
        let mut entry = entry.map_err(|e| io_err("reading the tar stream", e))?;
        x.entry(&mut entry)?;
    }
    if cancel.is_cancelled() {
        return Err(ExtractError::Cancelled);
    }
    x.finish_dirs()?;
    Ok(x.report)
}

/// A path relative to the target, made only of normal components (no `/`, `.`, `..` or NUL inside one).
/// Ordered component-wise, so a directory sorts before everything under it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct RelPath(Vec<Vec<u8>>);

impl RelPath {
    /// Validates an archive path: relative, no `..`, not empty. `.` components and repeated or trailing slashes are
    /// dropped; the result is empty for the target itself (`./`).
    fn parse(bytes: &[u8]) -> Result<RelPath, &'static str> {
        if bytes.is_empty() {
            return Err("empty path");
        }
        if bytes.contains(&0) {
            return Err("NUL byte in path");
        }
        if bytes[0] == b'/' {
            return Err("absolute path");
        }
        let mut parts = Vec::new();
        for part in bytes.split(|b| *b == b'/') {
            match part {
                b"" | b"." => {}
                b".." => return Err("path contains a `..` component"),
                _ => parts.push(part.to_vec()),
            }
        }
        Ok(RelPath(parts))
    }

    fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    fn display(&self) -> String {
        String::from_utf8_lossy(&self.0.join(&b'/')).into_owned()
    }

    /// The components leading to the last one, and the last one (`None` for the target itself).
    fn split_last(&self) -> Option<(&[Vec<u8>], &[u8])> {
        self.0
            .split_last()
            .map(|(last, parents)| (parents, last.as_slice()))
    }
}

fn os(name: &[u8]) -> &OsStr {
    OsStr::from_bytes(name)
}

/// Opens the directory `name` in `dir`, refusing to follow a symlink.
fn open_dir_nofollow(dir: BorrowedFd<'_>, name: &[u8]) -> Result<OwnedFd, Errno> {
    rfs::openat(
        dir,
        os(name),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Metadata of one entry, as it will be applied.
#[derive(Clone, Copy, Debug)]
struct Meta {
    /// Archived mode bits (`& 0o7777`).
    mode: u32,
    /// Owner to set, if ownership is preserved and we are root.
    owner: Option<(Uid, Gid)>,
    /// Modification time, if the archive gives a usable one.
    mtime: Option<Timespec>,
    /// Access time, from a PAX `atime` record.
    atime: Option<Timespec>,
}

impl Meta {
    fn times(&self) -> Option<Timestamps> {
        let omit = Timespec {
            tv_sec: 0,
            tv_nsec: rfs::UTIME_OMIT,
        };
        self.mtime.map(|mtime| Timestamps {
            last_access: self.atime.unwrap_or(omit),
            last_modification: mtime,
        })
    }
}

/// A directory whose mode (and times) are applied at the end.
#[derive(Clone, Copy, Debug)]
enum DirMeta {
    /// Created by us as a missing parent: mode `0o777 & !umask`, times left alone.
    Implicit,
    /// A directory entry of the archive.
    Explicit(Meta),
}

/// Parses a PAX time (`[-]SECONDS[.FRACTION]`).
fn parse_pax_time(value: &[u8]) -> Option<Timespec> {
    let text = std::str::from_utf8(value).ok()?.trim();
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let secs: i64 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut nanos: i64 = 0;
    for i in 0..9 {
        let digit = frac.as_bytes().get(i).map_or(0, |b| i64::from(b - b'0'));
        nanos = nanos * 10 + digit;
    }
    Some(match (negative, nanos) {
        (false, _) => Timespec {
            tv_sec: secs,
            tv_nsec: nanos,
        },
        (true, 0) => Timespec {
            tv_sec: -secs,
            tv_nsec: 0,
        },
        (true, _) => Timespec {
            tv_sec: -secs - 1,
            tv_nsec: 1_000_000_000 - nanos,
        },
    })
}

struct Extractor<'a> {
    /// The target directory; every path is resolved below it.
    root: OwnedFd,
    opts: &'a ExtractOptions,
    /// Running as root (chown, setid bits, device nodes).
    privileged: bool,
    umask: u32,
    cancel: &'a CancellationToken,
    report: ExtractReport,
    /// Directories to finish (mode, owner, times), applied deepest first.
    dirs: BTreeMap<RelPath, DirMeta>,
    /// Non-directories created by this run: the only allowed hard-link targets.
    created: HashSet<RelPath>,
    /// The parent directory of the previous entry, which is usually the next one's too.
    parent_cache: Option<(Vec<Vec<u8>>, OwnedFd)>,
    buf: Vec<u8>,
}

impl Extractor<'_> {
    fn check_cancel(&self) -> Result<(), ExtractError> {
        if self.cancel.is_cancelled() {
            Err(ExtractError::Cancelled)
        } else {
            Ok(())
        }
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), ExtractError> {
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            EntryType::XGlobalHeader
                | EntryType::XHeader
                | EntryType::GNULongName
                | EntryType::GNULongLink
        ) {
            // Extension headers are applied to the next entry by the tar crate; stray or global ones carry
            // nothing we apply.
            return Ok(());
        }
        self.report.entries += 1;
        let raw_path = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw_path).into_owned();
        let rel = RelPath::parse(&raw_path).map_err(|reason| unsafe_entry(&shown, reason))?;
        let meta = self.meta(entry, &shown)?;
        let is_dir = kind == EntryType::Directory
            || (kind == EntryType::Regular && raw_path.ends_with(b"/"));
        if is_dir {
            return self.directory(rel, meta, &shown);
        }
        if rel.is_root() {
            return Err(unsafe_entry(
                &shown,
                "a non-directory entry names the target directory itself",
            ));
        }
        match kind {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.file(entry, rel, meta, &shown, kind == EntryType::GNUSparse)
            }
            EntryType::Link => self.hard_link(entry, rel, &shown),
            EntryType::Symlink => self.symlink(entry, rel, meta, &shown),
            EntryType::Fifo => self.special(entry, rel, meta, &shown, FileType::Fifo),
            EntryType::Char | EntryType::Block => {
                let file_type = if kind == EntryType::Char {
                    FileType::CharacterDevice
                } else {
                    FileType::BlockDevice
                };
                if self.privileged {
                    self.special(entry, rel, meta, &shown, file_type)
                } else {
                    self.report
                        .skipped
                        .push(format!("{shown}: device node not created (needs root)"));
                    Ok(())
                }
            }
            other => {
                self.drain(entry, &shown)?;
                self.report.skipped.push(format!(
                    "{shown}: unsupported entry type {:?} not created",
                    other.as_byte() as char
                ));
                Ok(())
            }
        }
    }

    /// The entry's metadata; refuses PAX sparse formats, which the tar crate would extract as their raw encoding.
    fn meta<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
        shown: &str,
    ) -> Result<Meta, ExtractError> {
        let header = entry.header();
        let mode = header
            .mode()
            .map_err(|e| ExtractError::Format(format!("`{shown}`: bad mode: {e}")))?
            & 0o7777;
        let owner = if self.opts.preserve_ownership && self.privileged {
            let bad = |what: &str| ExtractError::Format(format!("`{shown}`: bad {what}"));
            let uid = header.uid().map_err(|_| bad("uid"))?;
            let gid = header.gid().map_err(|_| bad("gid"))?;
            let uid = u32::try_from(uid)
                .ok()
                .filter(|u| *u != u32::MAX)
                .ok_or_else(|| bad("uid"))?;
            let gid = u32::try_from(gid)
                .ok()
                .filter(|g| *g != u32::MAX)
                .ok_or_else(|| bad("gid"))?;
            Some((Uid::from_raw(uid), Gid::from_raw(gid)))
        } else {
            None
        };
        let mut mtime = header
            .mtime()
            .ok()
            .and_then(|m| i64::try_from(m).ok())
            .map(|secs| Timespec {
                tv_sec: secs,
                tv_nsec: 0,
            });
        let mut atime = None;
        if let Some(pax) = entry
            .pax_extensions()
            .map_err(|e| io_err(format!("reading the PAX header of `{shown}`"), e))?
        {
            for ext in pax {
                let ext = ext
                    .map_err(|e| ExtractError::Format(format!("`{shown}`: bad PAX record: {e}")))?;
                match ext.key_bytes() {
                    b"mtime" => {
                        if let Some(t) = parse_pax_time(ext.value_bytes()) {
                            mtime = Some(t);
                        }
                    }
                    b"atime" => atime = parse_pax_time(ext.value_bytes()),
                    key if key.starts_with(b"GNU.sparse.") => {
                        return Err(ExtractError::Format(format!(
                            "`{shown}`: PAX sparse files (GNU.sparse.* records) are not supported"
                        )))
                    }
                    _ => {}
                }
            }
        }
        Ok(Meta {
            mode,
            owner,
            mtime,
            atime,
        })
    }

    /// The mode to give an entry archived with `mode`.
    fn final_mode(&self, mode: u32, is_dir: bool) -> Mode {
        let sticky = if is_dir { mode & 0o1000 } else { 0 };
        let mode = if !self.opts.preserve_permissions {
            (mode & 0o777 & !self.umask) | sticky
        } else if self.privileged {
            mode & 0o7777
        } else {
            (mode & 0o777) | sticky
        };
        Mode::from_raw_mode(mode)
    }

    /// Opens the directory holding `rel`'s last component. Every component is opened with `O_NOFOLLOW` relative to
    /// the previous one, starting at the target; with `create`, missing ones are made (mode 0700 until the end).
    fn open_parent(
        &mut self,
        parents: &[Vec<u8>],
        create: bool,
        shown: &str,
    ) -> Result<OwnedFd, ExtractError> {
        if let Some((cached, fd)) = &self.parent_cache {
            if cached.as_slice() == parents {
                return fd
                    .try_clone()
                    .map_err(|e| io_err("duplicating a directory descriptor", e));
            }
        }
        let mut cur = self
            .root
            .try_clone()
            .map_err(|e| io_err("duplicating a directory descriptor", e))?;
        for (i, name) in parents.iter().enumerate() {
            let walked = || String::from_utf8_lossy(&parents[..=i].join(&b'/')).into_owned();
            let next = match open_dir_nofollow(cur.as_fd(), name) {
                Ok(fd) => fd,
                Err(Errno::NOENT) if create => {
                    match rfs::mkdirat(cur.as_fd(), os(name), Mode::from_raw_mode(0o700)) {
                        Ok(()) => {
                            self.dirs
                                .entry(RelPath(parents[..=i].to_vec()))
                                .or_insert(DirMeta::Implicit);
                        }
                        Err(Errno::EXIST) => {}
                        Err(e) => {
                            return Err(io_err(format!("creating directory {}", walked()), e))
                        }
                    }
                    open_dir_nofollow(cur.as_fd(), name)
                        .map_err(|e| self.classify(cur.as_fd(), name, &walked(), shown, e))?
                }
                Err(e) => return Err(self.classify(cur.as_fd(), name, &walked(), shown, e)),
            };
            cur = next;
        }
        if create {
            let keep = cur
                .try_clone()
                .map_err(|e| io_err("duplicating a directory descriptor", e))?;
            self.parent_cache = Some((parents.to_vec(), keep));
        }
        Ok(cur)
    }

    /// Explains why `name` in `dir` could not be opened as a directory.
    fn classify(
        &self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        walked: &str,
        shown: &str,
        err: Errno,
    ) -> ExtractError {
        match rfs::statat(dir, os(name), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => unsafe_entry(
                shown,
                format!("`{walked}` is a symbolic link; refusing to write through it"),
            ),
            Ok(st) if FileType::from_raw_mode(st.st_mode) != FileType::Directory => {
                ExtractError::Format(format!("`{shown}`: `{walked}` is not a directory"))
            }
            Err(Errno::NOENT) => unsafe_entry(shown, format!("`{walked}` does not exist")),
            _ => io_err(format!("opening directory {walked}"), err),
        }
    }

    /// Makes room for a new non-directory at `name`: an existing non-directory is unlinked (never written into, never
    /// followed); a directory is an error.
    fn clear_slot(
        &self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        shown: &str,
    ) -> Result<(), ExtractError> {
        match rfs::statat(dir, os(name), AtFlags::SYMLINK_NOFOLLOW) {
            Err(Errno::NOENT) => Ok(()),
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => Err(
                ExtractError::Format(format!("`{shown}`: a directory is in the way")),
            ),
            Ok(_) => match rfs::unlinkat(dir, os(name), AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => Ok(()),
                Err(e) => Err(io_err(format!("removing the existing `{shown}`"), e)),
            },
            Err(e) => Err(io_err(format!("inspecting `{shown}`"), e)),
        }
    }

    /// Applies owner, mode and times through an open descriptor (owner first: chown clears setid bits).
    fn apply_fd(
        &self,
        fd: BorrowedFd<'_>,
        meta: &Meta,
        is_dir: bool,
        shown: &str,
    ) -> Result<(), ExtractError> {
        if let Some((uid, gid)) = meta.owner {
            rfs::fchown(fd, Some(uid), Some(gid))
                .map_err(|e| io_err(format!("changing the owner of `{shown}`"), e))?;
        }
        rfs::fchmod(fd, self.final_mode(meta.mode, is_dir))
            .map_err(|e| io_err(format!("changing the mode of `{shown}`"), e))?;
        if let Some(times) = meta.times() {
            rfs::futimens(fd, &times)
                .map_err(|e| io_err(format!("setting the times of `{shown}`"), e))?;
        }
        Ok(())
    }

    fn directory(&mut self, rel: RelPath, meta: Meta, shown: &str) -> Result<(), ExtractError> {
        let Some((parents, name)) = rel.split_last() else {
            self.dirs.insert(rel, DirMeta::Explicit(meta));
            return Ok(());
        };
        let parent = self.open_parent(parents, true, shown)?;
        match rfs::statat(parent.as_fd(), os(name), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {}
            Ok(_) => {
                // A symlink, file or node is replaced by the directory (unlinked, not followed).
                rfs::unlinkat(parent.as_fd(), os(name), AtFlags::empty())
                    .map_err(|e| io_err(format!("removing the existing `{shown}`"), e))?;
                self.created.remove(&rel);
                self.mkdir(parent.as_fd(), name, shown)?;
            }
            Err(Errno::NOENT) => self.mkdir(parent.as_fd(), name, shown)?,
            Err(e) => return Err(io_err(format!("inspecting `{shown}`"), e)),
        }
        self.dirs.insert(rel, DirMeta::Explicit(meta));
        Ok(())
    }

    fn mkdir(&self, parent: BorrowedFd<'_>, name: &[u8], shown: &str) -> Result<(), ExtractError> {
        rfs::mkdirat(parent, os(name), Mode::from_raw_mode(0o700))
            .map_err(|e| io_err(format!("creating directory `{shown}`"), e))
    }

    fn file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        rel: RelPath,
        meta: Meta,
        shown: &str,
        sparse: bool,
    ) -> Result<(), ExtractError> {
        let Some((parents, name)) = rel.split_last() else {
            return Err(unsafe_entry(shown, "empty path"));
        };
        let parent = self.open_parent(parents, true, shown)?;
        self.clear_slot(parent.as_fd(), name, shown)?;
        let fd = rfs::openat(
            parent.as_fd(),
            os(name),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| io_err(format!("creating `{shown}`"), e))?;
        let mut file = File::from(fd);
        let size = entry.size();
        let write_err = |e: io::Error| io_err(format!("writing `{shown}`"), e);
        if sparse {
            // The whole length at once: holes stay holes, and an absurd size fails here rather than after hashing.
            file.set_len(size).map_err(write_err)?;
        }
        let mut hasher = Sha256::new();
        let mut written: u64 = 0;
        let mut since_check: u64 = 0;
        let mut hole: u64 = 0;
        loop {
            let n = match entry.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_err(format!("reading `{shown}` from the tar stream"), e)),
            };
            let chunk = &self.buf[..n];
            hasher.update(chunk);
            if sparse && chunk == &ZEROS[..n] {
                hole += n as u64;
            } else {
                if hole > 0 {
                    let skip = i64::try_from(hole)
                        .map_err(|_| ExtractError::Format(format!("`{shown}`: hole too large")))?;
                    file.seek(SeekFrom::Current(skip)).map_err(write_err)?;
                    hole = 0;
                }
                file.write_all(chunk).map_err(write_err)?;
            }
            written += n as u64;
            since_check += n as u64;
            if since_check >= CANCEL_EVERY {
                self.check_cancel()?;
                since_check = 0;
            }
        }
        if written != size {
            return Err(ExtractError::Format(format!(
                "`{shown}`: the stream ended inside this file ({written} of {size} bytes)"
            )));
        }
        self.apply_fd(file.as_fd(), &meta, false, shown)?;
        self.report.files += 1;
        self.report.bytes += written;
        self.report
            .digests
            .push((rel.display(), written, hex::encode(hasher.finalize())));
        self.created.insert(rel);
        Ok(())
    }

    fn hard_link<R: Read>(
        &mut self,
        entry: &tar::Entry<'_, R>,
        rel: RelPath,
        shown: &str,
    ) -> Result<(), ExtractError> {
        let target_bytes = entry
            .link_name_bytes()
            .ok_or_else(|| ExtractError::Format(format!("hard link `{shown}` has no target")))?
            .into_owned();
        let target_shown = String::from_utf8_lossy(&target_bytes).into_owned();
        let target = RelPath::parse(&target_bytes).map_err(|reason| {
            unsafe_entry(
                shown,
                format!("hard link target `{target_shown}`: {reason}"),
            )
        })?;
        if !self.created.contains(&target) {
            return Err(unsafe_entry(
                shown,
                format!(
                    "hard link target `{target_shown}` is not a file extracted earlier from this archive"
                ),
            ));
        }
        if target == rel {
            return Ok(());
        }
        let (Some((target_parents, target_name)), Some((parents, name))) =
            (target.split_last(), rel.split_last())
        else {
            return Err(unsafe_entry(shown, "empty path"));
        };
        let target_parent = self.open_parent(target_parents, false, shown)?;
        let parent = self.open_parent(parents, true, shown)?;
        self.clear_slot(parent.as_fd(), name, shown)?;
        // No AT_SYMLINK_FOLLOW: if the target is a symlink, the link is to the symlink itself.
        rfs::linkat(
            target_parent.as_fd(),
            os(target_name),
            parent.as_fd(),
            os(name),
            AtFlags::empty(),
        )
        .map_err(|e| io_err(format!("linking `{shown}` to `{target_shown}`"), e))?;
        self.created.insert(rel);
        Ok(())
    }

    fn symlink<R: Read>(
        &mut self,
        entry: &tar::Entry<'_, R>,
        rel: RelPath,
        meta: Meta,
        shown: &str,
    ) -> Result<(), ExtractError> {
        let target = entry
            .link_name_bytes()
            .filter(|t| !t.is_empty() && !t.contains(&0))
            .ok_or_else(|| ExtractError::Format(format!("symlink `{shown}` has no valid target")))?
            .into_owned();
        let Some((parents, name)) = rel.split_last() else {
            return Err(unsafe_entry(shown, "empty path"));
        };
        let parent = self.open_parent(parents, true, shown)?;
        self.clear_slot(parent.as_fd(), name, shown)?;
        rfs::symlinkat(os(&target), parent.as_fd(), os(name))
            .map_err(|e| io_err(format!("creating symlink `{shown}`"), e))?;
        if let Some((uid, gid)) = meta.owner {
            rfs::chownat(
                parent.as_fd(),
                os(name),
                Some(uid),
                Some(gid),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| io_err(format!("changing the owner of `{shown}`"), e))?;
        }
        if let Some(times) = meta.times() {
            rfs::utimensat(parent.as_fd(), os(name), &times, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| io_err(format!("setting the times of `{shown}`"), e))?;
        }
        self.created.insert(rel);
        Ok(())
    }

    /// FIFOs and device nodes (the latter only called as root).
    fn special<R: Read>(
        &mut self,
        entry: &tar::Entry<'_, R>,
        rel: RelPath,
        meta: Meta,
        shown: &str,
        file_type: FileType,
    ) -> Result<(), ExtractError> {
        let dev = if file_type == FileType::Fifo {
            0
        } else {
            let header = entry.header();
            let bad = || ExtractError::Format(format!("`{shown}`: bad device numbers"));
            let major = header.device_major().ok().flatten().ok_or_else(bad)?;
            let minor = header.device_minor().ok().flatten().ok_or_else(bad)?;
            rfs::makedev(major, minor)
        };
        let Some((parents, name)) = rel.split_last() else {
            return Err(unsafe_entry(shown, "empty path"));
        };
        let parent = self.open_parent(parents, true, shown)?;
        self.clear_slot(parent.as_fd(), name, shown)?;
        match rfs::mknodat(
            parent.as_fd(),
            os(name),
            file_type,
            Mode::from_raw_mode(0o600),
            dev,
        ) {
            Ok(()) => {}
            Err(e @ (Errno::PERM | Errno::ACCESS)) if file_type != FileType::Fifo => {
                // Root without CAP_MKNOD (a container): like a non-root run.
                self.report.skipped.push(format!(
                    "{shown}: device node not created ({})",
                    io::Error::from(e)
                ));
                return Ok(());
            }
            Err(e) => return Err(io_err(format!("creating `{shown}`"), e)),
        }
        if let Some((uid, gid)) = meta.owner {
            rfs::chownat(
                parent.as_fd(),
                os(name),
                Some(uid),
                Some(gid),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| io_err(format!("changing the owner of `{shown}`"), e))?;
        }
        // fchmodat cannot refuse symlinks on older kernels; the node was just made by us, check it still is one.
        let st = rfs::statat(parent.as_fd(), os(name), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| io_err(format!("inspecting `{shown}`"), e))?;
        if FileType::from_raw_mode(st.st_mode) != file_type {
            return Err(unsafe_entry(shown, "replaced while being extracted"));
        }
        rfs::chmodat(
            parent.as_fd(),
            os(name),
            self.final_mode(meta.mode, false),
            AtFlags::empty(),
        )
        .map_err(|e| io_err(format!("changing the mode of `{shown}`"), e))?;
        if let Some(times) = meta.times() {
            rfs::utimensat(parent.as_fd(), os(name), &times, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| io_err(format!("setting the times of `{shown}`"), e))?;
        }
        self.created.insert(rel);
        Ok(())
    }

    /// Reads and discards an entry's data, checking for cancellation.
    fn drain<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        shown: &str,
    ) -> Result<(), ExtractError> {
        let mut since_check: u64 = 0;
        loop {
            match entry.read(&mut self.buf) {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    since_check += n as u64;
                    if since_check >= CANCEL_EVERY {
                        self.check_cancel()?;
                        since_check = 0;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_err(format!("reading `{shown}` from the tar stream"), e)),
            }
        }
    }

    /// Gives every directory its final mode, owner and times, deepest first (a directory's contents are complete
    /// before it turns read-only, and nothing changes its mtime afterwards).
    fn finish_dirs(&mut self) -> Result<(), ExtractError> {
        self.parent_cache = None;
        let dirs = std::mem::take(&mut self.dirs);
        let umask = self.umask;
        for (rel, meta) in dirs.into_iter().rev() {
            let shown = if rel.is_root() {
                ".".to_string()
            } else {
                rel.display()
            };
            let fd = match rel.split_last() {
                None => self
                    .root
                    .try_clone()
                    .map_err(|e| io_err("duplicating a directory descriptor", e))?,
                Some((parents, name)) => {
                    let parent = self.open_parent(parents, false, &shown)?;
                    open_dir_nofollow(parent.as_fd(), name)
                        .map_err(|e| self.classify(parent.as_fd(), name, &shown, &shown, e))?
                }
            };
            match meta {
                DirMeta::Implicit => rfs::fchmod(&fd, Mode::from_raw_mode(0o777 & !umask))
                    .map_err(|e| io_err(format!("changing the mode of `{shown}`"), e))?,
                DirMeta::Explicit(meta) => self.apply_fd(fd.as_fd(), &meta, true, &shown)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileExt, FileTypeExt};
    use std::process::{Command, Stdio};
    use tar::{Builder, Header};

    const MTIME: u64 = 1_600_000_000;

    fn sha256_hex(data: &[u8]) -> String {
        hex::encode(Sha256::digest(data))
    }

    fn header(kind: EntryType, mode: u32, size: u64) -> Header {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(MTIME);
        h.set_uid(0);
        h.set_gid(0);
        h
    }

    fn add_file(b: &mut Builder<Vec<u8>>, path: &str, mode: u32, data: &[u8]) {
        let mut h = header(EntryType::Regular, mode, data.len() as u64);
        b.append_data(&mut h, path, data).unwrap();
    }

    fn add_dir(b: &mut Builder<Vec<u8>>, path: &str, mode: u32) {
        let mut h = header(EntryType::Directory, mode, 0);
        b.append_data(&mut h, path, io::empty()).unwrap();
    }

    fn add_link(b: &mut Builder<Vec<u8>>, kind: EntryType, path: &str, target: &str) {
        let mut h = header(kind, 0o777, 0);
        b.append_link(&mut h, path, target).unwrap();
    }

    /// Appends an entry with raw name and link bytes, unchecked, as a hostile writer would.
    fn add_raw(b: &mut Builder<Vec<u8>>, kind: EntryType, name: &[u8], link: &[u8], data: &[u8]) {
        let mut h = header(kind, 0o644, data.len() as u64);
        let old = h.as_old_mut();
        old.name = [0; 100];
        old.name[..name.len()].copy_from_slice(name);
        old.linkname = [0; 100];
        old.linkname[..link.len()].copy_from_slice(link);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }

    /// An archive made by `build`, followed by a harmless `after.txt` that must never be written when `build`'s
    /// entries are refused.
    fn archive(build: impl FnOnce(&mut Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = Builder::new(Vec::new());
        build(&mut b);
        add_file(&mut b, "after.txt", 0o644, b"after");
        b.into_inner().unwrap()
    }

    struct Scene {
        _tmp: tempfile::TempDir,
        base: PathBuf,
        dest: PathBuf,
    }

    fn scene() -> Scene {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().to_path_buf();
        let dest = base.join("dest");
        check_target(&dest, false).unwrap();
        Scene {
            _tmp: tmp,
            base,
            dest,
        }
    }

    fn outside_dir() -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix("outside-")
            .tempdir_in("/tmp")
            .unwrap()
    }

    fn both() -> ExtractOptions {
        ExtractOptions {
            preserve_ownership: true,
            preserve_permissions: true,
        }
    }

    fn run(data: &[u8], dest: &Path) -> Result<ExtractReport, ExtractError> {
        extract(data, dest, &both(), &CancellationToken::new())
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn exists(p: &Path) -> bool {
        std::fs::symlink_metadata(p).is_ok()
    }

    #[track_caller]
    fn assert_unsafe(res: Result<ExtractReport, ExtractError>, entry: &str) {
        match res {
            Err(ExtractError::Unsafe { entry: e, reason }) => {
                assert_eq!(e, entry, "reason: {reason}");
            }
            other => panic!("expected Unsafe for {entry}, got {other:?}"),
        }
    }

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    /// A reader that is not `Seek`, like the decoded stream.
    struct Stream<R>(R);
    impl<R: Read> Read for Stream<R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.0.read(buf)
        }
    }

    #[test]
    fn round_trip_of_a_tree() {
        let s = scene();
        let long = format!(
            "tree/{}/{}/{}",
            "a".repeat(99),
            "b".repeat(99),
            "c".repeat(95)
        );
        assert_eq!(long.len(), 300);
        let mut b = Builder::new(Vec::new());
        add_dir(&mut b, "./", 0o750);
        add_dir(&mut b, "tree", 0o755);
        add_dir(&mut b, "tree/empty", 0o700);
        add_file(&mut b, "tree/données/élan.txt", 0o600, b"bonjour");
        add_file(&mut b, "tree/日本語/ファイル.bin", 0o755, &[1, 2, 3]);
        add_file(&mut b, "tree/setuid", 0o4755, b"#!/bin/sh\n");
        add_dir(&mut b, "tree/sticky", 0o1777);
        add_dir(&mut b, "tree/ro", 0o555);
        add_file(&mut b, "tree/ro/inside.txt", 0o644, b"inside");
        add_link(&mut b, EntryType::Symlink, "tree/link", "données/élan.txt");
        add_link(
            &mut b,
            EntryType::Link,
            "tree/hard",
            "tree/données/élan.txt",
        );
        b.append_pax_extensions([
            ("path", long.as_bytes()),
            ("mtime", b"1700000000.123456789".as_slice()),
            ("uid", b"1234".as_slice()),
            ("gid", b"5678".as_slice()),
            ("uname", b"alice".as_slice()),
            ("gname", b"staff".as_slice()),
        ])
        .unwrap();
        let mut h = header(EntryType::Regular, 0o640, 4);
        h.set_path("tree/placeholder").unwrap();
        h.set_cksum();
        b.append(&h, &b"long"[..]).unwrap();
        add_raw(&mut b, EntryType::Fifo, b"tree/fifo", b"", b"");
        let data = b.into_inner().unwrap();

        let report = extract(
            Stream(&data[..]),
            &s.dest,
            &both(),
            &CancellationToken::new(),
        )
        .unwrap();
        assert_eq!(report.entries, 13);
        assert_eq!(report.files, 5);
        assert_eq!(report.bytes, 7 + 3 + 10 + 6 + 4);
        assert!(report.skipped.is_empty(), "{:?}", report.skipped);
        assert!(report.digests.contains(&(
            "tree/données/élan.txt".to_string(),
            7,
            sha256_hex(b"bonjour")
        )));
        assert!(report
            .digests
            .contains(&(long.clone(), 4, sha256_hex(b"long"))));

        let t = s.dest.join("tree");
        let elan = t.join("données/élan.txt");
        assert_eq!(std::fs::read(&elan).unwrap(), b"bonjour");
        assert_eq!(
            std::fs::read(t.join("日本語/ファイル.bin")).unwrap(),
            [1, 2, 3]
        );
        assert_eq!(std::fs::read(t.join("ro/inside.txt")).unwrap(), b"inside");
        assert!(names(&t.join("empty")).is_empty());

        assert_eq!(mode(&s.dest), 0o750);
        assert_eq!(mode(&t), 0o755);
        assert_eq!(mode(&t.join("empty")), 0o700);
        assert_eq!(mode(&elan), 0o600);
        assert_eq!(mode(&t.join("日本語/ファイル.bin")), 0o755);
        assert_eq!(mode(&t.join("setuid")), 0o4755);
        assert_eq!(mode(&t.join("sticky")), 0o1777);
        assert_eq!(mode(&t.join("ro")), 0o555);
        assert_eq!(mode(&t.join("données")), 0o777 & !process_umask());

        for p in [&s.dest, &t, &t.join("ro"), &t.join("empty"), &elan] {
            let m = std::fs::symlink_metadata(p).unwrap();
            assert_eq!(
                (m.mtime(), m.mtime_nsec()),
                (MTIME as i64, 0),
                "{}",
                p.display()
            );
        }

        let long_meta = std::fs::metadata(s.dest.join(&long)).unwrap();
        assert_eq!(std::fs::read(s.dest.join(&long)).unwrap(), b"long");
        assert_eq!(
            (long_meta.mtime(), long_meta.mtime_nsec()),
            (1_700_000_000, 123_456_789)
        );
        assert_eq!((long_meta.uid(), long_meta.gid()), (1234, 5678));
        assert_eq!(long_meta.mode() & 0o7777, 0o640);

        let link = t.join("link");
        assert_eq!(
            std::fs::read_link(&link).unwrap(),
            Path::new("données/élan.txt")
        );
        assert_eq!(
            std::fs::symlink_metadata(&link).unwrap().mtime(),
            MTIME as i64
        );
        assert_eq!(std::fs::read(&link).unwrap(), b"bonjour");

        let hard = std::fs::symlink_metadata(t.join("hard")).unwrap();
        assert_eq!(hard.ino(), std::fs::metadata(&elan).unwrap().ino());
        assert_eq!(hard.nlink(), 2);

        assert!(std::fs::symlink_metadata(t.join("fifo"))
            .unwrap()
            .file_type()
            .is_fifo());
    }

    #[test]
    fn archive_written_by_gnu_tar_round_trips() {
        let s = scene();
        let src = s.base.join("src");
        let long_dir = src.join("d".repeat(150)).join("e".repeat(150));
        std::fs::create_dir_all(&long_dir).unwrap();
        let long_file = long_dir.join("file.txt");
        std::fs::write(&long_file, b"content").unwrap();
        let when = std::time::UNIX_EPOCH + std::time::Duration::new(1_650_000_000, 987_654_321);
        File::options()
            .write(true)
            .open(&long_file)
            .unwrap()
            .set_modified(when)
            .unwrap();
        std::os::unix::fs::symlink("target/that/is/absent", src.join("dangling")).unwrap();
        std::fs::hard_link(&long_file, src.join("hard")).unwrap();
        let tar_file = s.base.join("gnu.tar");
        let status = Command::new("tar")
            .args(["--format=pax", "-cf"])
            .arg(&tar_file)
            .arg("-C")
            .arg(&src)
            .arg(".")
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());

        let report = extract(
            Stream(File::open(&tar_file).unwrap()),
            &s.dest,
            &both(),
            &CancellationToken::new(),
        )
        .unwrap();
        let rel_long = long_file.strip_prefix(&src).unwrap();
        let out = s.dest.join(rel_long);
        assert_eq!(std::fs::read(&out).unwrap(), b"content");
        let m = std::fs::metadata(&out).unwrap();
        assert_eq!((m.mtime(), m.mtime_nsec()), (1_650_000_000, 987_654_321));
        assert_eq!(
            std::fs::read_link(s.dest.join("dangling")).unwrap(),
            Path::new("target/that/is/absent")
        );
        assert_eq!(
            std::fs::metadata(s.dest.join("hard")).unwrap().ino(),
            m.ino()
        );
        assert_eq!(report.files, 1);
        assert_eq!(
            report.digests,
            vec![(
                rel_long.to_string_lossy().into_owned(),
                7,
                sha256_hex(b"content")
            )]
        );
    }

    #[test]
    fn gnu_sparse_file_is_restored_with_holes() {
        if Command::new("tar")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .map(|s| !s.success())
            .unwrap_or(true)
        {
            eprintln!("GNU tar is not installed; skipping");
            return;
        }
        const SIZE: u64 = 2 << 30;
        let s = scene();
        let src = s.base.join("src");
        std::fs::create_dir(&src).unwrap();
        let big = File::create(src.join("big")).unwrap();
        big.set_len(SIZE).unwrap();
        // 30 data regions: more than the 4 a GNU header holds, so extended sparse headers follow it.
        for i in 0..30u64 {
            let chunk = format!("chunk {i} ").repeat(500);
            big.write_all_at(chunk.as_bytes(), i * (64 << 20) + 12_345)
                .unwrap();
        }
        drop(big);
        let tar_file = s.base.join("sparse.tar");
        let status = Command::new("tar")
            .args(["--sparse", "--format=gnu", "-cf"])
            .arg(&tar_file)
            .arg("-C")
            .arg(&src)
            .arg("big")
            .status()
            .unwrap();
        assert!(status.success());
        let raw = std::fs::read(&tar_file).unwrap();
        assert!(raw.len() < 1 << 20, "archive is {} bytes", raw.len());
        assert_eq!(raw[156], b'S', "an old-GNU sparse entry");
        assert_eq!(raw[482], 1, "with extended sparse headers");

        let mut expected = Sha256::new();
        let mut f = File::open(src.join("big")).unwrap();
        let mut buf = vec![0; 1 << 20];
        loop {
            let n = f.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            expected.update(&buf[..n]);
        }
        let expected = hex::encode(expected.finalize());

        let started = std::time::Instant::now();
        let report = extract(
            Stream(File::open(&tar_file).unwrap()),
            &s.dest,
            &both(),
            &CancellationToken::new(),
        )
        .unwrap();
        eprintln!("2 GiB sparse file extracted in {:?}", started.elapsed());
        let out = std::fs::metadata(s.dest.join("big")).unwrap();
        assert_eq!(out.len(), SIZE);
        assert!(
            out.blocks() * 512 < 16 << 20,
            "{} blocks allocated",
            out.blocks()
        );
        assert_eq!(report.digests, vec![("big".to_string(), SIZE, expected)]);
        assert_eq!((report.files, report.bytes), (1, SIZE));
        let restored = File::open(s.dest.join("big")).unwrap();
        let mut probe = vec![0; 16];
        restored
            .read_exact_at(&mut probe, 29 * (64 << 20) + 12_345)
            .unwrap();
        assert_eq!(&probe, b"chunk 29 chunk 2");
    }

    #[test]
    fn absolute_path_is_refused() {
        let s = scene();
        let outside = outside_dir();
        let target = outside.path().join("abs");
        let evil = target.to_str().unwrap().to_string();
        let data = archive(|b| add_raw(b, EntryType::Regular, evil.as_bytes(), b"", b"pwned"));
        assert_unsafe(run(&data, &s.dest), &evil);
        assert!(!exists(&target));
        assert!(names(&s.dest).is_empty());
    }

    #[test]
    fn dot_dot_paths_are_refused() {
        for evil in ["../escape", "a/../../escape", "a/b/../../../escape", ".."] {
            let s = scene();
            let data = archive(|b| add_raw(b, EntryType::Regular, evil.as_bytes(), b"", b"pwned"));
            assert_unsafe(run(&data, &s.dest), evil);
            assert!(!exists(&s.base.join("escape")), "{evil}");
            assert_eq!(names(&s.base), ["dest"], "{evil}");
            assert!(names(&s.dest).is_empty(), "{evil}");
        }
    }

    #[test]
    fn empty_paths_are_refused() {
        let s = scene();
        let data = archive(|b| add_raw(b, EntryType::Regular, b"", b"", b"x"));
        assert_unsafe(run(&data, &s.dest), "");
        // "." as a file would be the target directory itself.
        let data = archive(|b| add_raw(b, EntryType::Regular, b".", b"", b"x"));
        assert_unsafe(run(&data, &s.dest), ".");
        assert!(names(&s.dest).is_empty());
    }

    #[test]
    fn writing_through_an_absolute_symlink_is_refused() {
        let s = scene();
        let outside = outside_dir();
        let target = outside.path().to_str().unwrap().to_string();
        let data = archive(|b| {
            add_raw(b, EntryType::Symlink, b"a", target.as_bytes(), b"");
            add_raw(b, EntryType::Regular, b"a/passwd", b"", b"pwned");
        });
        assert_unsafe(run(&data, &s.dest), "a/passwd");
        assert!(names(outside.path()).is_empty());
        assert_eq!(names(&s.dest), ["a"]);
        // Nor a directory, a nested file, a symlink or a hard link through it.
        for (kind, name, link) in [
            (EntryType::Directory, &b"a/sub/"[..], &b""[..]),
            (EntryType::Regular, b"a/x/y", b""),
            (EntryType::Symlink, b"a/s", b"/etc/passwd"),
            (EntryType::Fifo, b"a/fifo", b""),
        ] {
            let s = scene();
            let data = archive(|b| {
                add_raw(b, EntryType::Symlink, b"a", target.as_bytes(), b"");
                add_raw(b, kind, name, link, b"");
            });
            let shown = String::from_utf8_lossy(name).into_owned();
            assert_unsafe(run(&data, &s.dest), &shown);
            assert!(names(outside.path()).is_empty(), "{shown}");
            assert_eq!(names(&s.dest), ["a"]);
        }
    }

    #[test]
    fn writing_through_a_relative_symlink_is_refused() {
        let s = scene();
        let unique = s.base.file_name().unwrap().to_str().unwrap().to_string();
        let data = archive(|b| {
            add_raw(b, EntryType::Symlink, b"a", b"..", b"");
            add_raw(b, EntryType::Regular, b"a/x/y", b"", b"pwned");
        });
        assert_unsafe(run(&data, &s.dest), "a/x/y");
        assert_eq!(names(&s.base), ["dest"]);

        let s = scene();
        let evil = format!("b/{unique}-escape/y");
        let data = archive(|b| {
            add_raw(b, EntryType::Symlink, b"b", b"../..", b"");
            add_raw(b, EntryType::Regular, evil.as_bytes(), b"", b"pwned");
        });
        assert_unsafe(run(&data, &s.dest), &evil);
        assert!(!exists(
            &s.base.parent().unwrap().join(format!("{unique}-escape"))
        ));
        assert_eq!(names(&s.dest), ["b"]);
    }

    #[test]
    fn hard_links_outside_are_refused() {
        let passwd_links = std::fs::metadata("/etc/passwd").unwrap().nlink();
        let s = scene();
        let data = archive(|b| add_raw(b, EntryType::Link, b"h", b"/etc/passwd", b""));
        assert_unsafe(run(&data, &s.dest), "h");
        assert!(names(&s.dest).is_empty());
        assert_eq!(
            std::fs::metadata("/etc/passwd").unwrap().nlink(),
            passwd_links
        );

        let s = scene();
        std::fs::write(s.base.join("x"), b"secret").unwrap();
        let data = archive(|b| add_raw(b, EntryType::Link, b"h", b"../x", b""));
        assert_unsafe(run(&data, &s.dest), "h");
        assert!(names(&s.dest).is_empty());
        assert_eq!(std::fs::metadata(s.base.join("x")).unwrap().nlink(), 1);

        // Not extracted by this archive (it was already there): refused too.
        let s = scene();
        std::fs::write(s.dest.join("pre"), b"old").unwrap();
        let data = archive(|b| add_raw(b, EntryType::Link, b"h", b"pre", b""));
        assert_unsafe(run(&data, &s.dest), "h");
        assert_eq!(names(&s.dest), ["pre"]);

        // Through a symlinked directory.
        let s = scene();
        let outside = outside_dir();
        std::fs::write(outside.path().join("secret"), b"secret").unwrap();
        let target = outside.path().to_str().unwrap().to_string();
        let data = archive(|b| {
            add_raw(b, EntryType::Symlink, b"a", target.as_bytes(), b"");
            add_raw(b, EntryType::Link, b"h", b"a/secret", b"");
        });
        assert_unsafe(run(&data, &s.dest), "h");
        assert_eq!(names(&s.dest), ["a"]);
        assert_eq!(
            std::fs::metadata(outside.path().join("secret"))
                .unwrap()
                .nlink(),
            1
        );
    }

    #[test]
    fn hard_link_to_an_extracted_symlink_links_the_symlink_itself() {
        let passwd_links = std::fs::metadata("/etc/passwd").unwrap().nlink();
        let s = scene();
        let data = archive(|b| {
            add_raw(b, EntryType::Symlink, b"s", b"/etc/passwd", b"");
            add_raw(b, EntryType::Link, b"h", b"s", b"");
        });
        run(&data, &s.dest).unwrap();
        let h = std::fs::symlink_metadata(s.dest.join("h")).unwrap();
        assert!(h.file_type().is_symlink());
        assert_eq!(
            std::fs::metadata("/etc/passwd").unwrap().nlink(),
            passwd_links
        );
    }

    #[test]
    fn entries_replace_symlinks_instead_of_following_them() {
        let s = scene();
        let outside = outside_dir();
        let victim = outside.path().join("victim");
        std::fs::write(&victim, b"original").unwrap();
        let victim_str = victim.to_str().unwrap().to_string();
        let dir_str = outside.path().to_str().unwrap().to_string();
        let data = archive(|b| {
            add_raw(b, EntryType::Symlink, b"f", victim_str.as_bytes(), b"");
            add_raw(b, EntryType::Regular, b"f", b"", b"new content");
            add_raw(b, EntryType::Symlink, b"d", dir_str.as_bytes(), b"");
            add_raw(b, EntryType::Directory, b"d/", b"", b"");
            add_raw(b, EntryType::Regular, b"d/inner", b"", b"inner");
        });
        let report = run(&data, &s.dest).unwrap();
        assert_eq!(report.files, 3);
        assert_eq!(std::fs::read(&victim).unwrap(), b"original");
        assert_eq!(names(outside.path()), ["victim"]);
        assert!(std::fs::symlink_metadata(s.dest.join("f"))
            .unwrap()
            .is_file());
        assert_eq!(std::fs::read(s.dest.join("f")).unwrap(), b"new content");
        assert!(std::fs::symlink_metadata(s.dest.join("d"))
            .unwrap()
            .is_dir());
        assert_eq!(std::fs::read(s.dest.join("d/inner")).unwrap(), b"inner");
        assert_eq!(names(&s.dest), ["after.txt", "d", "f"]);
    }

    #[test]
    fn file_over_a_directory_is_a_format_error() {
        let s = scene();
        let data = archive(|b| {
            add_raw(b, EntryType::Directory, b"x/", b"", b"");
            add_raw(b, EntryType::Regular, b"x", b"", b"data");
        });
        assert!(matches!(run(&data, &s.dest), Err(ExtractError::Format(_))));
    }

    #[test]
    fn without_root_setid_bits_and_devices_are_dropped() {
        let s = scene();
        let mut b = Builder::new(Vec::new());
        add_file(&mut b, "suid", 0o4755, b"x");
        add_file(&mut b, "sgid", 0o2750, b"x");
        add_dir(&mut b, "tmp", 0o1777);
        let mut h = header(EntryType::Char, 0o666, 0);
        h.set_device_major(1).unwrap();
        h.set_device_minor(3).unwrap();
        b.append_data(&mut h, "null", io::empty()).unwrap();
        let data = b.into_inner().unwrap();
        let report = extract_as(
            &data[..],
            &s.dest,
            &both(),
            &CancellationToken::new(),
            false,
        )
        .unwrap();
        assert_eq!(mode(&s.dest.join("suid")), 0o755);
        assert_eq!(mode(&s.dest.join("sgid")), 0o750);
        assert_eq!(mode(&s.dest.join("tmp")), 0o1777);
        assert!(!exists(&s.dest.join("null")));
        assert_eq!(report.skipped.len(), 1);
        assert!(
            report.skipped[0].starts_with("null: "),
            "{:?}",
            report.skipped
        );
        assert_eq!(report.entries, 4);
    }

    #[test]
    fn without_preserve_permissions_the_umask_applies() {
        let s = scene();
        let mut b = Builder::new(Vec::new());
        add_file(&mut b, "f", 0o4777, b"x");
        add_dir(&mut b, "tmp", 0o1777);
        let data = b.into_inner().unwrap();
        let opts = ExtractOptions::default();
        extract(&data[..], &s.dest, &opts, &CancellationToken::new()).unwrap();
        let umask = process_umask();
        assert_eq!(mode(&s.dest.join("f")), 0o777 & !umask);
        assert_eq!(mode(&s.dest.join("tmp")), (0o777 & !umask) | 0o1000);
    }

    #[test]
    fn device_nodes_as_root() {
        let s = scene();
        let mut b = Builder::new(Vec::new());
        let mut h = header(EntryType::Char, 0o666, 0);
        h.set_device_major(1).unwrap();
        h.set_device_minor(3).unwrap();
        b.append_data(&mut h, "null", io::empty()).unwrap();
        let data = b.into_inner().unwrap();
        let report = run(&data, &s.dest).unwrap();
        match std::fs::symlink_metadata(s.dest.join("null")) {
            Ok(m) => {
                assert!(m.file_type().is_char_device());
                assert_eq!(m.rdev(), rfs::makedev(1, 3));
                assert_eq!(m.mode() & 0o7777, 0o666);
            }
            // A container without CAP_MKNOD: reported, not fatal.
            Err(_) => assert_eq!(report.skipped.len(), 1, "{:?}", report.skipped),
        }
    }

    #[test]
    fn pax_sparse_formats_are_refused() {
        let s = scene();
        let mut b = Builder::new(Vec::new());
        b.append_pax_extensions([("GNU.sparse.major", b"1".as_slice())])
            .unwrap();
        add_file(&mut b, "GNUSparseFile.0/f", 0o644, b"x");
        let data = b.into_inner().unwrap();
        assert!(matches!(run(&data, &s.dest), Err(ExtractError::Format(_))));
    }

    #[test]
    fn truncated_stream_is_an_error() {
        let s = scene();
        let mut b = Builder::new(Vec::new());
        add_file(&mut b, "f", 0o644, &[7; 10_000]);
        let data = b.into_inner().unwrap();
        let res = run(&data[..4096], &s.dest);
        assert!(matches!(res, Err(ExtractError::Format(_))), "{res:?}");
    }

    /// Cancels `token` once `after` bytes were read.
    struct CancelAfter<'a> {
        data: &'a [u8],
        read: usize,
        after: usize,
        token: CancellationToken,
    }
    impl Read for CancelAfter<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.data.read(buf)?;
            self.read += n;
            if self.read >= self.after {
                self.token.cancel();
            }
            Ok(n)
        }
    }

    #[test]
    fn cancellation_is_honoured_between_entries_and_inside_files() {
        let s = scene();
        let data = archive(|b| add_file(b, "a", 0o644, b"a"));
        let token = CancellationToken::new();
        token.cancel();
        assert!(matches!(
            extract(&data[..], &s.dest, &both(), &token),
            Err(ExtractError::Cancelled)
        ));
        assert!(names(&s.dest).is_empty());

        let s = scene();
        let big = vec![0x5a; 32 << 20];
        let data = archive(|b| add_file(b, "big", 0o644, &big));
        let token = CancellationToken::new();
        let reader = CancelAfter {
            data: &data,
            read: 0,
            after: 8 << 20,
            token: token.clone(),
        };
        let res = extract(reader, &s.dest, &both(), &token);
        assert!(matches!(res, Err(ExtractError::Cancelled)), "{res:?}");
        let partial = std::fs::metadata(s.dest.join("big")).unwrap().len();
        assert!(partial < 16 << 20, "{partial} bytes written after cancel");
        assert!(!exists(&s.dest.join("after.txt")));
    }

    #[test]
    fn check_target_rules() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("new");
        check_target(&missing, false).unwrap();
        assert!(missing.is_dir());
        check_target(&missing, false).unwrap();

        std::fs::write(missing.join("x"), b"x").unwrap();
        assert!(matches!(
            check_target(&missing, false),
            Err(ExtractError::NotEmpty(p)) if p == missing
        ));
        check_target(&missing, true).unwrap();

        let file = tmp.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        assert!(matches!(
            check_target(&file, false),
            Err(ExtractError::NotEmpty(_))
        ));
        assert!(matches!(
            check_target(&file, true),
            Err(ExtractError::NotEmpty(_))
        ));

        let orphan = tmp.path().join("no/parent");
        assert!(matches!(
            check_target(&orphan, false),
            Err(ExtractError::Io { .. })
        ));
    }

    #[test]
    fn pax_times() {
        let t = |s: &str| parse_pax_time(s.as_bytes()).map(|t| (t.tv_sec, t.tv_nsec));
        assert_eq!(
            t("1700000000.123456789"),
            Some((1_700_000_000, 123_456_789))
        );
        assert_eq!(t("1700000000.5"), Some((1_700_000_000, 500_000_000)));
        assert_eq!(
            t("1700000000.1234567891"),
            Some((1_700_000_000, 123_456_789))
        );
        assert_eq!(t("12"), Some((12, 0)));
        assert_eq!(t("-1.25"), Some((-2, 750_000_000)));
        assert_eq!(t("x"), None);
        assert_eq!(t(""), None);
        assert_eq!(t("1.2.3"), None);
    }

    #[test]
    fn paths_are_validated_lexically() {
        let p = |s: &str| RelPath::parse(s.as_bytes()).map(|r| r.display());
        assert_eq!(p("./a//b/./c/"), Ok("a/b/c".to_string()));
        assert_eq!(p("./"), Ok(String::new()));
        assert!(p("/etc").is_err());
        assert!(p("a/../b").is_err());
        assert!(p("").is_err());
        assert!(RelPath::parse(b"a\0b").is_err());
        assert_eq!(p("..."), Ok("...".to_string()));
    }
}
