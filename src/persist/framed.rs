//! A small append-only file of checksummed records, for the logs of rare changes (the
//! experiments' log, the definitions log): every record is written and fsynced as it happens,
//! and the whole file is read back at start.
//!
//! The layout: one format byte, then records `len:u32 crc32c:u32 body` (little-endian; `body`
//! is the record's postcard encoding, `crc32c` is over `body`). A torn last record (a crash
//! mid-append: the file ends inside it, or its checksum fails) and a tail of zero bytes (a
//! crash after the file grew but before its data landed) are cut off; a damaged record before
//! the last, or a whole record this build cannot decode (a newer build's), refuses the start
//! naming the file and the offset.
//!
//! This module owns the framing only; what a record means is its caller's (`experiments`,
//! `definitions`), and so is the format byte.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::PersistError;

/// Bytes before a record's body: its length and its checksum.
const HEADER_BYTES: usize = 8;

/// An open framed log, for appending.
#[derive(Debug)]
pub struct FramedLog {
    file: File,
    path: PathBuf,
}

impl FramedLog {
    /// Opens (or creates) the log at `path`, whose format byte must be `format`, and reads
    /// every record it holds, in order; `what` names the log in errors ("experiment log").
    pub fn open<T: DeserializeOwned>(
        path: &Path,
        format: u8,
        what: &str,
    ) -> Result<(FramedLog, Vec<T>), PersistError> {
        let io = |e| PersistError::io(path, e);
        let mut bytes = Vec::new();
        let existed = path.exists();
        if existed {
            File::open(path)
                .and_then(|mut f| f.read_to_end(&mut bytes))
                .map_err(io)?;
        }
        let (records, valid) = read(&bytes, path, format, what)?;
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        if valid < bytes.len() || bytes.is_empty() {
            // A torn tail is cut; a new file gets its format byte.
            file.set_len(valid as u64).map_err(io)?;
            if valid == 0 {
                file.write_all(&[format]).map_err(io)?;
            }
            file.sync_data().map_err(io)?;
        }
        if !existed {
            if let Some(dir) = path.parent() {
                super::log::sync_dir(dir);
            }
        }
        let path = path.to_path_buf();
        Ok((FramedLog { file, path }, records))
    }

    /// Appends one record and fsyncs it; once this returns `Ok` the record survives a crash.
    pub fn append<T: Serialize>(&mut self, record: &T) -> Result<(), PersistError> {
        let body = postcard::to_stdvec(record).expect("a record always encodes");
        let mut frame = Vec::with_capacity(HEADER_BYTES + body.len());
        frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
        frame.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        frame.extend_from_slice(&body);
        let io = |e| PersistError::io(&self.path, e);
        self.file.write_all(&frame).map_err(io)?;
        self.file.sync_data().map_err(io)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The records in `bytes` and how many bytes of it are whole records.
fn read<T: DeserializeOwned>(
    bytes: &[u8],
    path: &Path,
    format: u8,
    what: &str,
) -> Result<(Vec<T>, usize), PersistError> {
    let corrupt = |offset: usize, what: String| PersistError::Corrupt {
        file: path.to_path_buf(),
        offset: offset as u64,
        what,
    };
    match bytes.first() {
        None => return Ok((Vec::new(), 0)),
        Some(&v) if v == format => {}
        Some(v) => {
            let why = format!("{what} format {v}; this build reads {format}");
            return Err(PersistError::io(path, std::io::Error::other(why)));
        }
    }
    let (mut at, mut out) = (1, Vec::new());
    while at < bytes.len() {
        if bytes[at..].iter().all(|&b| b == 0) {
            break; // the file grew, its data never landed
        }
        let Some(header) = bytes.get(at..at + HEADER_BYTES) else {
            break; // torn inside a header
        };
        // Both conversions take exactly four bytes of the eight just taken.
        let len = u32::from_le_bytes(header[..4].try_into().unwrap()) as usize;
        let crc = u32::from_le_bytes(header[4..].try_into().unwrap());
        let Some(body) = bytes.get(at + HEADER_BYTES..at + HEADER_BYTES + len) else {
            break; // torn: the append did not finish
        };
        let end = at + HEADER_BYTES + len;
        if crc32c::crc32c(body) != crc {
            if end == bytes.len() {
                break; // torn last record
            }
            return Err(corrupt(at, "a damaged record (its checksum fails)".into()));
        }
        match postcard::take_from_bytes::<T>(body) {
            Ok((record, [])) => out.push(record),
            Ok((_, rest)) => {
                let why = format!(
                    "a record with {} bytes this build does not read",
                    rest.len()
                );
                return Err(corrupt(at, format!("{why}: a newer build's?")));
            }
            Err(e) => {
                let why = format!("a whole record this build cannot read ({e}): a newer build's?");
                return Err(corrupt(at, why));
            }
        }
        at = end;
    }
    Ok((out, at))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORMAT: u8 = 7;

    fn open(path: &Path) -> Result<(FramedLog, Vec<String>), PersistError> {
        FramedLog::open(path, FORMAT, "test log")
    }

    #[test]
    fn records_come_back_in_order_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.log");
        let (mut log, none) = open(&path).unwrap();
        assert!(none.is_empty());
        log.append(&"a".to_string()).unwrap();
        log.append(&"b".to_string()).unwrap();
        drop(log);
        let whole = std::fs::metadata(&path).unwrap().len();
        // A crash in the middle of a third append: a header promising 200 bytes, and 2.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, 5, 6]).unwrap();
        drop(f);
        let (mut log, back) = open(&path).unwrap();
        assert_eq!(back, ["a", "b"]);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), whole, "cut");
        log.append(&"c".to_string()).unwrap();
        drop(log);
        assert_eq!(open(&path).unwrap().1, ["a", "b", "c"]);
    }

    #[test]
    fn a_last_record_whose_checksum_fails_and_a_zero_tail_are_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.log");
        let (mut log, _) = open(&path).unwrap();
        log.append(&"a".to_string()).unwrap();
        log.append(&"bb".to_string()).unwrap();
        drop(log);
        let mut bytes = std::fs::read(&path).unwrap();
        *bytes.last_mut().unwrap() ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(open(&path).unwrap().1, ["a"]);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[0; 40]).unwrap();
        drop(f);
        let (mut log, back) = open(&path).unwrap();
        assert_eq!(back, ["a"]);
        log.append(&"c".to_string()).unwrap();
        drop(log);
        assert_eq!(open(&path).unwrap().1, ["a", "c"]);
    }

    #[test]
    fn a_damaged_middle_record_refuses_naming_the_file_and_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.log");
        let (mut log, _) = open(&path).unwrap();
        for s in ["first", "second", "third"] {
            log.append(&s.to_string()).unwrap();
        }
        drop(log);
        let mut bytes = std::fs::read(&path).unwrap();
        let second = 1 + HEADER_BYTES + 1 + "first".len();
        bytes[second + HEADER_BYTES + 2] ^= 0x20;
        std::fs::write(&path, &bytes).unwrap();
        let e = open(&path).unwrap_err().to_string();
        assert!(e.contains(&path.display().to_string()), "{e}");
        assert!(e.contains(&format!("offset {second}")), "{e}");
        assert!(e.contains("damaged record"), "{e}");
        // Nothing was cut: the file is as it was, for an operator to look at.
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
    }

    #[test]
    fn a_whole_record_this_build_cannot_read_refuses_even_last() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.log");
        let (mut log, _) = FramedLog::open::<bool>(&path, FORMAT, "test log").unwrap();
        log.append(&true).unwrap();
        log.append(&2u8).unwrap(); // not a bool
        drop(log);
        let e = FramedLog::open::<bool>(&path, FORMAT, "test log").unwrap_err();
        assert!(e.to_string().contains("cannot read"), "{e}");
        // Nor one with bytes left over.
        std::fs::remove_file(&path).unwrap();
        let (mut log, _) = FramedLog::open::<bool>(&path, FORMAT, "test log").unwrap();
        log.append(&(true, 1u8)).unwrap();
        drop(log);
        let e = FramedLog::open::<bool>(&path, FORMAT, "test log").unwrap_err();
        assert!(e.to_string().contains("does not read"), "{e}");
    }

    #[test]
    fn another_format_byte_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.log");
        std::fs::write(&path, [9]).unwrap();
        let e = open(&path).unwrap_err().to_string();
        assert!(e.contains("test log format 9; this build reads 7"), "{e}");
    }
}
