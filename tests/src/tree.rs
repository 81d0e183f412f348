//! Directory trees as the volume tests compare them: every entry below a root with its type, permission bits,
//! owner, size, link target, hard-link identity, modification time (whole seconds) and content (SHA-256).

use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// What an entry is, with what its type carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file: logical size and the SHA-256 of its content (holes read as zeros).
    File {
        /// Size in bytes.
        size: u64,
        /// Lowercase hex SHA-256.
        sha256: String,
    },
    /// A symbolic link and its target, as stored (never followed).
    Symlink {
        /// The link's target.
        target: PathBuf,
    },
    /// A named pipe.
    Fifo,
    /// A character device.
    CharDevice {
        /// Device number.
        rdev: u64,
    },
    /// A block device.
    BlockDevice {
        /// Device number.
        rdev: u64,
    },
    /// A unix socket.
    Socket,
}

/// One entry of a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Type and type-specific data.
    pub kind: Kind,
    /// Permission bits including setuid, setgid and sticky (`st_mode & 0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, whole seconds.
    pub mtime: i64,
    /// For an inode with several names inside the tree: the smallest of those names. `None` for an inode named
    /// once in the tree, so two trees agree exactly when the same names share inodes.
    pub hard_link_group: Option<PathBuf>,
}

/// Every entry below a root (the root itself excluded), by path relative to the root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tree {
    /// Entries by relative path.
    pub entries: BTreeMap<PathBuf, Entry>,
}

impl Tree {
    /// The entry at `rel`, panicking with the list of paths if there is none.
    #[track_caller]
    pub fn get(&self, rel: impl AsRef<Path>) -> &Entry {
        let rel = rel.as_ref();
        self.entries.get(rel).unwrap_or_else(|| {
            panic!(
                "{} is not in the tree: {:?}",
                rel.display(),
                self.entries.keys().collect::<Vec<_>>()
            )
        })
    }

    /// Removes `rel` and everything below it (for an expected tree that leaves something out); panics if absent.
    #[track_caller]
    pub fn remove(&mut self, rel: impl AsRef<Path>) {
        let rel = rel.as_ref();
        assert!(
            self.entries.remove(rel).is_some(),
            "{} is not in the tree",
            rel.display()
        );
        self.entries.retain(|p, _| !p.starts_with(rel));
    }
}

/// Reads the tree below `root` without following symbolic links (FIFOs are never opened).
pub fn walk(root: &Path) -> Tree {
    fn visit(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, std::fs::Metadata)>) {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for path in names {
            let meta = std::fs::symlink_metadata(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            let is_dir = meta.is_dir();
            out.push((rel, meta));
            if is_dir {
                visit(root, &path, out);
            }
        }
    }
    let mut found = Vec::new();
    visit(root, root, &mut found);

    let mut inodes: HashMap<(u64, u64), Vec<PathBuf>> = HashMap::new();
    for (rel, meta) in &found {
        if !meta.is_dir() && meta.nlink() > 1 {
            inodes
                .entry((meta.dev(), meta.ino()))
                .or_default()
                .push(rel.clone());
        }
    }
    let mut tree = Tree::default();
    for (rel, meta) in found {
        let path = root.join(&rel);
        let ft = meta.file_type();
        let kind = if ft.is_dir() {
            Kind::Dir
        } else if ft.is_file() {
            Kind::File {
                size: meta.len(),
                sha256: sha256_file(&path),
            }
        } else if ft.is_symlink() {
            Kind::Symlink {
                target: std::fs::read_link(&path).unwrap(),
            }
        } else if ft.is_fifo() {
            Kind::Fifo
        } else if ft.is_char_device() {
            Kind::CharDevice { rdev: meta.rdev() }
        } else if ft.is_block_device() {
            Kind::BlockDevice { rdev: meta.rdev() }
        } else {
            Kind::Socket
        };
        let hard_link_group = inodes
            .get(&(meta.dev(), meta.ino()))
            .filter(|names| names.len() > 1)
            .and_then(|names| names.iter().min().cloned());
        tree.entries.insert(
            rel,
            Entry {
                kind,
                mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
                mtime: meta.mtime(),
                hard_link_group,
            },
        );
    }
    tree
}

/// Lowercase hex SHA-256 of a file's content.
pub fn sha256_file(path: &Path) -> String {
    let mut file =
        std::fs::File::open(path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    hex::encode(hasher.finalize())
}

/// Bytes of disk a file occupies (`st_blocks * 512`): far below its size for a sparse file.
pub fn allocated_bytes(path: &Path) -> u64 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .blocks()
        * 512
}

/// Every difference between two trees, one per line; empty when they are the same.
pub fn differences(expected: &Tree, actual: &Tree) -> Vec<String> {
    let mut out = Vec::new();
    for (path, want) in &expected.entries {
        let Some(have) = actual.entries.get(path) else {
            out.push(format!("{}: missing", path.display()));
            continue;
        };
        let mut line = String::new();
        if want.kind != have.kind {
            line.push_str(&format!(" kind {:?} != {:?};", want.kind, have.kind));
        }
        if want.mode != have.mode {
            line.push_str(&format!(" mode {:o} != {:o};", want.mode, have.mode));
        }
        if (want.uid, want.gid) != (have.uid, have.gid) {
            line.push_str(&format!(
                " owner {}:{} != {}:{};",
                want.uid, want.gid, have.uid, have.gid
            ));
        }
        if want.mtime != have.mtime {
            line.push_str(&format!(" mtime {} != {};", want.mtime, have.mtime));
        }
        if want.hard_link_group != have.hard_link_group {
            line.push_str(&format!(
                " hard-link group {:?} != {:?};",
                want.hard_link_group, have.hard_link_group
            ));
        }
        if !line.is_empty() {
            out.push(format!("{}:{line}", path.display()));
        }
    }
    for path in actual.entries.keys() {
        if !expected.entries.contains_key(path) {
            out.push(format!("{}: unexpected", path.display()));
        }
    }
    out
}

/// Panics listing every difference (expected first) unless the trees are the same.
#[track_caller]
pub fn assert_same_tree(expected: &Tree, actual: &Tree) {
    let diffs = differences(expected, actual);
    assert!(
        diffs.is_empty(),
        "the trees differ ({} of {} expected entries):\n{}",
        diffs.len(),
        expected.entries.len(),
        diffs.join("\n")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_name_every_kind_of_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("a"), b"one").unwrap();
        std::fs::hard_link(root.join("a"), root.join("b")).unwrap();
        std::os::unix::fs::symlink("a", root.join("s")).unwrap();
        let before = walk(root);
        assert_eq!(before.get("b").hard_link_group, Some(PathBuf::from("a")));
        assert_eq!(before.get("a").hard_link_group, Some(PathBuf::from("a")));
        assert_same_tree(&before, &walk(root));

        // Break the link (same content, new inode), retarget the symlink, add a file.
        std::fs::remove_file(root.join("b")).unwrap();
        std::fs::write(root.join("b"), b"one").unwrap();
        std::fs::remove_file(root.join("s")).unwrap();
        std::os::unix::fs::symlink("b", root.join("s")).unwrap();
        std::fs::write(root.join("c"), b"").unwrap();
        let diffs = differences(&before, &walk(root));
        let text = diffs.join("\n");
        assert!(text.contains("a: hard-link group"), "{text}");
        assert!(text.contains("b: hard-link group"), "{text}");
        assert!(text.contains("s: kind"), "{text}");
        assert!(text.contains("c: unexpected"), "{text}");
    }
}
