//! A file's identity and state on disk, to tell when it was rewritten or
//! replaced: by the plugin scan (components and manifests) and for the
//! files a load read (certificates, credentials).

use std::{
    fs::Metadata,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::SystemTime,
};

/// Length, modification time, inode and device of a file: a change in any
/// of them means the file was rewritten or replaced. Paths are followed
/// through symbolic links, so a Kubernetes Secret volume's swap of its
/// `..data` link shows as a change of every file in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
    device: u64,
}

impl FileStamp {
    /// The stamp of a file's metadata.
    pub fn of(metadata: &Metadata) -> Self {
        Self {
            len: metadata.len(),
            modified: metadata.modified().ok(),
            inode: metadata.ino(),
            device: metadata.dev(),
        }
    }

    /// The stamp of the file at `path`; `None` when there is none.
    pub fn read(path: &Path) -> Option<Self> {
        std::fs::metadata(path).ok().map(|m| Self::of(&m))
    }
}

/// A file a connector's load read besides its component and manifest, with
/// its stamp taken before it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRead {
    /// The file.
    pub path: PathBuf,
    /// Its stamp when read; `None` when it did not exist.
    pub stamp: Option<FileStamp>,
}

impl FileRead {
    /// Stamps `path` now, before it is read: a change after this shows
    /// as a changed stamp later, never as a change missed.
    pub fn stamp(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            stamp: FileStamp::read(path),
        }
    }

    /// Whether the file differs from what was read.
    pub fn changed(&self) -> bool {
        FileStamp::read(&self.path) != self.stamp
    }
}
