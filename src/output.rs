//! Atomic output files: everything is written to a temporary file in the destination directory
//! and renamed over the destination only when complete, so a crash or an error never leaves a
//! half-written report and never clobbers the previous one.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

use crate::error::OutputError;

/// A file being written; it appears at its destination only on [`AtomicFile::commit`].
#[derive(Debug)]
pub struct AtomicFile {
    tmp: BufWriter<NamedTempFile>,
    dest: PathBuf,
}

impl AtomicFile {
    /// Creates the temporary file next to `dest`. Call this before long work: an unwritable
    /// destination then fails fast.
    pub fn create(dest: &Path) -> Result<AtomicFile, OutputError> {
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let io = |source| OutputError::Io { path: dest.to_path_buf(), source };
        if dest.is_dir() {
            return Err(io(std::io::Error::new(std::io::ErrorKind::IsADirectory, "the path is a directory")));
        }
        let name = dest.file_name().and_then(|n| n.to_str()).unwrap_or("output");
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".tmp")
            .tempfile_in(dir)
            .map_err(io)?;
        Ok(AtomicFile { tmp: BufWriter::new(tmp), dest: dest.to_path_buf() })
    }

    /// The destination path.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Flushes, syncs and renames the file into place.
    pub fn commit(self) -> Result<(), OutputError> {
        let io = |source| OutputError::Io { path: self.dest.clone(), source };
        let tmp = self.tmp.into_inner().map_err(|e| io(e.into_error()))?;
        // Like a file made by `File::create` under the usual umask (tempfile's are owner-only).
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o644)).map_err(io)?;
        }
        tmp.as_file().sync_all().map_err(io)?;
        tmp.persist(&self.dest).map_err(|e| io(e.error))?;
        Ok(())
    }

    /// The underlying file, for writers that need `Write + Seek` (e.g. Parquet).
    pub fn file_mut(&mut self) -> Result<&mut File, OutputError> {
        self.tmp.flush().map_err(|source| OutputError::Io { path: self.dest.clone(), source })?;
        Ok(self.tmp.get_mut().as_file_mut())
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tmp.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.tmp.flush()
    }
}

/// Writes `bytes` to `dest` atomically.
pub fn write_atomic(dest: &Path, bytes: &[u8]) -> Result<(), OutputError> {
    let mut f = AtomicFile::create(dest)?;
    f.write_all(bytes).map_err(|source| OutputError::Io { path: dest.to_path_buf(), source })?;
    f.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_uncommitted_file_leaves_the_previous_one_intact_and_no_temp_behind() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("report.json");
        write_atomic(&dest, b"old").unwrap();
        {
            let mut f = AtomicFile::create(&dest).unwrap();
            f.write_all(b"half a rep").unwrap();
            // dropped without commit, as on an error mid-write
        }
        assert_eq!(std::fs::read(&dest).unwrap(), b"old");
        let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(entries.len(), 1, "temp file left behind");
        write_atomic(&dest, b"new").unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"new");
    }

    #[cfg(unix)]
    #[test]
    fn outputs_get_ordinary_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("r.json");
        write_atomic(&dest, b"{}").unwrap();
        let mode = std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777;
        assert_ne!(mode & 0o044, 0, "mode {mode:o}: others cannot read");
    }

    #[test]
    fn unwritable_destinations_fail_before_any_work() {
        let dir = tempfile::tempdir().unwrap();
        let e = AtomicFile::create(&dir.path().join("missing/dir/r.json")).unwrap_err().to_string();
        assert!(e.contains("missing/dir/r.json") && e.contains("fix:"), "{e}");
        assert!(AtomicFile::create(dir.path()).is_err());
    }
}
