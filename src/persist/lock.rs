//! The data directory's exclusive lock: `LOCK`, held with `flock` for the life of the
//! process and holding the holder's pid, so that a second process on the same directory is
//! refused with a message naming the directory and the pid. The kernel drops the lock when
//! the process dies, SIGKILL included, so a crash never leaves a stale lock behind.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::persist::PersistError;

/// The held lock; dropping it (closing the file) releases it.
#[derive(Debug)]
pub struct DirLock {
    /// Kept open only to hold the `flock`.
    _file: File,
}

impl DirLock {
    /// Takes the lock of `dir`, or explains who holds it.
    pub fn acquire(dir: &Path) -> Result<DirLock, PersistError> {
        let path = dir.join("LOCK");
        let io = |e| PersistError::io(&path, e);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        // A child process forked by this one holds the lock too until it execs; a few short
        // retries ride that out, while a live holder still refuses.
        let mut locked = try_lock(&file).map_err(io)?;
        for _ in 0..10 {
            if locked {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
            locked = try_lock(&file).map_err(io)?;
        }
        if !locked {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(PersistError::Locked {
                dir: dir.to_path_buf(),
                pid: text.trim().to_string(),
            });
        }
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(DirLock { _file: file })
    }
}

#[cfg(unix)]
fn try_lock(file: &File) -> std::io::Result<bool> {
    use std::os::unix::io::AsRawFd;
    // SAFETY: `flock` on a file descriptor we own; it has no memory effects.
    let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.kind() == std::io::ErrorKind::WouldBlock {
        Ok(false)
    } else {
        Err(e)
    }
}

#[cfg(not(unix))]
fn try_lock(_file: &File) -> std::io::Result<bool> {
    Ok(true)
}
