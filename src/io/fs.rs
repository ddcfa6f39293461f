//! Durable file-system operations: what makes a file or a directory entry
//! survive a power loss, written once.
//!
//! Linux makes a file's *data* durable with fsync/fdatasync of the file, but
//! the *name* of a new, renamed or removed file lives in its directory, which
//! needs an fsync of its own. Without it a segment rolled (or a partition
//! created) just before a power loss can be gone after it, with every append
//! to it acknowledged.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::path::{Path, PathBuf};

/// Makes the entries of `dir` durable (an fsync of the directory).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The directory holding `path` (`.` for a bare name).
pub fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// The temporary name [`write_durably`] writes `path` under first.
pub fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Replaces `path` with `bytes` so that after a crash it holds the old or the
/// new contents, whole: written to a temporary file, synced, renamed over
/// `path`, and the directory synced.
pub fn write_durably(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = temp_path(path);
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, path)?;
    sync_dir(parent_of(path))
}

/// Creates `dir` and any missing parents so that they survive a crash: the
/// parent of each directory created is synced. Returns whether `dir` was created.
pub fn create_dir_durably(dir: &Path) -> io::Result<bool> {
    if dir.is_dir() {
        return Ok(false);
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_durably(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {}
        // Created meanwhile by someone else: theirs to make durable.
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
        Err(error) => return Err(error),
    }
    sync_dir(parent_of(dir))?;
    Ok(true)
}

/// Removes `paths` that exist (a missing one is not an error), then syncs
/// `dir` once if anything was removed. Returns whether anything was.
pub fn remove_durably(dir: &Path, paths: &[PathBuf]) -> io::Result<bool> {
    let mut removed = false;
    for path in paths {
        match fs::remove_file(path) {
            Ok(()) => removed = true,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
    }
    if removed {
        sync_dir(dir)?;
    }
    Ok(removed)
}

/// `dir` opened for an fsync through io_uring (the group commit syncs a
/// directory whose new entries appends wait for).
pub fn open_dir(dir: &Path) -> io::Result<compio::fs::File> {
    File::open(dir).map(into_compio)
}

/// A std file as a compio file (io_uring reads, writes and syncs).
pub fn into_compio(file: File) -> compio::fs::File {
    // SAFETY: `into_raw_fd` hands over sole ownership of a valid, open descriptor,
    // which the compio file now owns and closes.
    unsafe { compio::fs::File::from_raw_fd(file.into_raw_fd()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durable_writes_replace_whole_files_and_leave_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint");
        write_durably(&path, b"first").unwrap();
        write_durably(&path, b"second, longer").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second, longer");
        assert!(!temp_path(&path).exists());
        assert_eq!(temp_path(&path).file_name().unwrap(), "checkpoint.tmp");
    }

    #[test]
    fn directories_are_created_with_their_parents_once() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a").join("b").join("c");
        assert!(create_dir_durably(&nested).unwrap());
        assert!(nested.is_dir());
        assert!(!create_dir_durably(&nested).unwrap(), "already there");
        let file = nested.join("x");
        fs::write(&file, b"x").unwrap();
        assert!(remove_durably(&nested, &[file.clone(), nested.join("missing")]).unwrap());
        assert!(!file.exists());
        assert!(
            !remove_durably(&nested, &[file]).unwrap(),
            "nothing left to remove"
        );
    }
}
