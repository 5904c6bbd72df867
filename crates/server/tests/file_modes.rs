//! The data directory and the SQLite files in it are private to the server's user: they
//! hold token hashes, the audit log and the flows of the whole estate.

use std::fs::Permissions;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// The store files in `data`, side files included where they exist.
fn store_files(data: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for db in ["control.sqlite", "flows.sqlite"] {
        assert!(data.join(db).exists(), "{db}");
        for suffix in ["", "-wal", "-shm"] {
            let f = data.join(format!("{db}{suffix}"));
            if f.exists() {
                files.push(f);
            }
        }
    }
    files
}

fn assert_private(data: &Path) {
    assert_eq!(mode(data), 0o700, "{}", data.display());
    for f in store_files(data) {
        assert_eq!(mode(&f) & 0o077, 0, "{} is {:o}", f.display(), mode(&f));
    }
}

#[test]
fn a_new_data_directory_and_its_stores_are_private() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let state = bulkhead_server::open(&data).unwrap();
    // A write, so that the write-ahead log has content while the state is open.
    bulkhead_server::bootstrap_admin(&state).unwrap().unwrap();
    assert!(
        data.join("control.sqlite-wal").exists(),
        "the WAL is checked too"
    );
    assert_private(&data);
    drop(state);
    assert_private(&data);
}

#[test]
fn a_data_directory_left_open_to_others_is_tightened() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let state = bulkhead_server::open(&data).unwrap();
    // As an older build (or a umask of 022) left them; the side files too, with the
    // first state still open so that they exist.
    std::fs::set_permissions(&data, Permissions::from_mode(0o755)).unwrap();
    for f in store_files(&data) {
        std::fs::set_permissions(&f, Permissions::from_mode(0o644)).unwrap();
    }
    let again = bulkhead_server::open(&data).unwrap();
    assert_private(&data);
    drop((state, again));
}

#[test]
fn a_shared_directory_keeps_its_mode_but_the_stores_do_not() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("shared");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("someone-else.txt"), "not Bulkhead's").unwrap();
    std::fs::set_permissions(&data, Permissions::from_mode(0o755)).unwrap();
    let state = bulkhead_server::open(&data).unwrap();
    // Changing it would break whatever else lives there: the server only warns.
    assert_eq!(mode(&data), 0o755);
    for f in store_files(&data) {
        assert_eq!(mode(&f) & 0o077, 0, "{} is {:o}", f.display(), mode(&f));
    }
    drop(state);
}
