//! Both stores keep their SQLite files (and the WAL side files) private to their owner,
//! whatever the umask, and tighten files an older build left readable by others.

use std::fs::Permissions;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use bulkhead_store::{ControlStore, SqliteFlowStore};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    name.into()
}

/// The database and whichever side files exist; the WAL and shared-memory files must,
/// since the store has the file open and its migrations wrote to it.
fn files_of(db: &Path) -> Vec<PathBuf> {
    let files = vec![
        db.to_path_buf(),
        with_suffix(db, "-wal"),
        with_suffix(db, "-shm"),
    ];
    for f in &files {
        assert!(f.exists(), "{} exists while the store is open", f.display());
    }
    files
}

fn assert_private(files: &[PathBuf]) {
    for f in files {
        assert_eq!(mode(f) & 0o077, 0, "{} is {:o}", f.display(), mode(f));
    }
}

/// Opens a store twice on one file: new files are private; then, with the first store
/// still open, every file is made readable by all (as an older build left them) and
/// the second open makes them private again.
fn check<T>(open: impl Fn(&Path) -> T) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("store.sqlite");
    let first = open(&db);
    let files = files_of(&db);
    assert_private(&files);
    for f in &files {
        std::fs::set_permissions(f, Permissions::from_mode(0o644)).unwrap();
    }
    let second = open(&db);
    assert_private(&files);
    assert_eq!(mode(&db), 0o600, "owner bits are kept");
    drop((first, second));
}

#[test]
fn the_control_store_is_private_to_its_owner() {
    check(|p| ControlStore::open(p).unwrap());
}

#[test]
fn the_flow_store_is_private_to_its_owner() {
    check(|p| SqliteFlowStore::open(p).unwrap());
}
