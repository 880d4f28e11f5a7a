//! Fetches the public data sets the evaluation uses, with the ordinary package client (`pip
//! download`), into a cache folder (`.cache/data/` by default, never committed), checks the
//! archive's SHA-256 against the value pinned here, and extracts only the files needed (with
//! Python's own `zipfile`/`tarfile`, since pip implies Python).
//!
//! Nothing here is shipped with nudge: MovieLens's terms forbid redistribution. This module
//! does not parse the files; `movielens` and `obd` do.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// A data set inside a package archive on PyPI.
#[derive(Clone, Copy, Debug)]
pub struct Dataset {
    /// Folder name in the cache.
    pub name: &'static str,
    /// Arguments to `pip download` (the folder is added).
    pub pip_args: &'static [&'static str],
    /// The archive file pip saves.
    pub archive: &'static str,
    /// Its SHA-256, hex, as observed when this was written.
    pub sha256: &'static str,
    /// Members to extract, as paths inside the archive.
    pub members: &'static [&'static str],
}

/// MovieLens-100k as shipped inside the wheel of `recbole` 1.2.1.
pub const MOVIELENS_100K: Dataset = Dataset {
    name: "recbole-1.2.1",
    pip_args: &["download", "--no-deps", "recbole==1.2.1"],
    archive: "recbole-1.2.1-py3-none-any.whl",
    sha256: "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407",
    members: &[
        "recbole/dataset_example/ml-100k/ml-100k.inter",
        "recbole/dataset_example/ml-100k/ml-100k.item",
        "recbole/dataset_example/ml-100k/ml-100k.user",
    ],
};

/// The Open Bandit Dataset sample as shipped in the source archive of `obp` 0.5.7.
pub const OPEN_BANDIT_SAMPLE: Dataset = Dataset {
    name: "obp-0.5.7",
    pip_args: &[
        "download",
        "--no-deps",
        "--no-binary",
        ":all:",
        "--ignore-requires-python",
        "obp==0.5.7",
    ],
    archive: "obp-0.5.7.tar.gz",
    sha256: "3060d67fedfcfadf1e7a6f2608987f74412b5eb74d2c567edeb147595c68f2a0",
    members: &[
        "obp-0.5.7/obp/dataset/obd/random/all/all.csv",
        "obp-0.5.7/obp/dataset/obd/random/all/item_context.csv",
        "obp-0.5.7/obp/dataset/obd/random/men/men.csv",
        "obp-0.5.7/obp/dataset/obd/random/men/item_context.csv",
        "obp-0.5.7/obp/dataset/obd/random/women/women.csv",
        "obp-0.5.7/obp/dataset/obd/random/women/item_context.csv",
    ],
};

/// Why a data set could not be made available.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// `pip download` could not run or failed.
    #[error("`pip download` failed: {0}")]
    Download(String),
    /// The archive is not the one pinned here.
    #[error("checksum mismatch for {path}: expected sha256 {expected}, got {actual}")]
    Checksum {
        /// The archive.
        path: PathBuf,
        /// The pinned value.
        expected: String,
        /// What the file hashes to.
        actual: String,
    },
    /// Extraction failed.
    #[error("extracting {0} failed")]
    Extract(String),
    /// A file operation failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The cache folder: `$NUDGE_DATA_DIR`, else `.cache/data` under the current directory.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("NUDGE_DATA_DIR").map_or_else(|| PathBuf::from(".cache/data"), PathBuf::from)
}

/// The SHA-256 of a file, lower-case hex.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

fn run(cmd: &mut Command) -> Result<(), String> {
    match cmd.output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(String::from_utf8_lossy(&out.stderr)
            .lines()
            .last()
            .unwrap_or("")
            .to_string()),
        Err(e) => Err(e.to_string()),
    }
}

fn download(ds: &Dataset, dir: &Path) -> Result<(), FetchError> {
    let with = |program: &str, prefix: &[&str]| {
        let mut c = Command::new(program);
        c.args(prefix).args(ds.pip_args).arg("-d").arg(dir);
        run(&mut c)
    };
    with("pip", &[])
        .or_else(|_| with("python3", &["-m", "pip"]))
        .map_err(FetchError::Download)
}

const EXTRACT: &str = "import sys, tarfile, zipfile
src, dst, members = sys.argv[1], sys.argv[2], sys.argv[3:]
if src.endswith('.tar.gz'):
    with tarfile.open(src) as t:
        t.extractall(dst, members=[t.getmember(m) for m in members])
else:
    with zipfile.ZipFile(src) as z:
        z.extractall(dst, members=members)
";

/// Makes `ds` available under `cache` and returns the paths of its members, in order:
/// downloads the archive if it is missing, checks its checksum every time, extracts once.
pub fn fetch(ds: &Dataset, cache: &Path) -> Result<Vec<PathBuf>, FetchError> {
    let dir = cache.join(ds.name);
    std::fs::create_dir_all(&dir)?;
    let archive = dir.join(ds.archive);
    if !archive.exists() {
        download(ds, &dir)?;
    }
    let actual = sha256_file(&archive)?;
    if actual != ds.sha256 {
        return Err(FetchError::Checksum {
            path: archive,
            expected: ds.sha256.to_string(),
            actual,
        });
    }
    let out = dir.join("extracted");
    let paths: Vec<PathBuf> = ds.members.iter().map(|m| out.join(m)).collect();
    if !paths.iter().all(|p| p.exists()) {
        let mut c = Command::new("python3");
        c.arg("-c")
            .arg(EXTRACT)
            .arg(&archive)
            .arg(&out)
            .args(ds.members);
        run(&mut c).map_err(|e| FetchError::Extract(format!("{}: {e}", archive.display())))?;
    }
    Ok(paths)
}
