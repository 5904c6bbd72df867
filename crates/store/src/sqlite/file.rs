//! Opening SQLite files: WAL mode, and modes private to their owner.

use std::path::Path;

use rusqlite::Connection;

use crate::StoreError;

/// Opens a SQLite file in WAL mode and hands the connection to `setup` (pragmas and
/// migrations); failures name the file. Both stores open their files this way, private
/// to their owner (see [`make_private`]).
pub(crate) fn open_wal<T>(
    path: &Path,
    setup: impl FnOnce(Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    make_private(path).map_err(|e| StoreError::Open {
        path: path.to_path_buf(),
        source: Box::new(e),
    })?;
    let open_err = |e: rusqlite::Error| StoreError::Open {
        path: path.to_path_buf(),
        source: Box::new(e),
    };
    let conn = Connection::open(path).map_err(open_err)?;
    // journal_mode answers with a row, so it cannot go through execute_batch.
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(open_err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Open {
            path: path.to_path_buf(),
            source: format!("the file refused WAL mode (journal mode is {mode})").into(),
        });
    }
    setup(conn).map_err(|e| match e {
        StoreError::Backend { source, .. } => StoreError::Open {
            path: path.to_path_buf(),
            source,
        },
        other => other,
    })
}

/// Makes the database file at `path` and its WAL side files readable by their owner
/// only: the files hold token hashes, the audit log and who talks to whom, and SQLite
/// would create them 0644 (less the umask). A new file is created 0600 before SQLite
/// sees it, and SQLite gives the `-wal` and `-shm` files it creates the mode of the
/// database file; files left by an older build lose their group and other bits.
fn make_private(path: &Path) -> std::io::Result<()> {
    use std::fs::{OpenOptions, Permissions};
    use std::io::ErrorKind;
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};

    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let side = |suffix: &str| {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        std::path::PathBuf::from(name)
    };
    for file in [path.to_path_buf(), side("-wal"), side("-shm")] {
        let mode = match std::fs::metadata(&file) {
            Ok(m) => m.permissions().mode(),
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if mode & 0o077 != 0 {
            std::fs::set_permissions(&file, Permissions::from_mode(mode & 0o700)).map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!(
                        "{} is readable by group or others and cannot be made private: {e}",
                        file.display()
                    ),
                )
            })?;
        }
    }
    Ok(())
}
