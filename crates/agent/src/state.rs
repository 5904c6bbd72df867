//! What the agent keeps on disk, in its state directory (mode 0700):
//!
//! - `agent.json`: the server, the pinned CA, the agent's id, workload and credential
//!   (0600: the credential is a secret).
//! - `policy.json`: the last policy it applied, so that after a reboot the host is
//!   enforced again before the server is even reachable.
//!
//! Every file is written to a temporary name, synced and renamed, so a crash leaves the
//! old file or the new one, never half of one.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrollment {
    pub server: String,
    pub ca_fingerprint: String,
    pub agent_id: u64,
    pub workload: String,
    pub credential: String,
}

#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct StateError {
    pub path: String,
    pub message: String,
}

fn err(path: &Path, e: impl std::fmt::Display) -> StateError {
    StateError {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

impl StateDir {
    pub fn open(dir: &Path) -> Result<StateDir, StateError> {
        std::fs::create_dir_all(dir).map_err(|e| err(dir, e))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| err(dir, e))?;
        Ok(StateDir {
            dir: dir.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn read<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<Option<T>, StateError> {
        let path = self.dir.join(name);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| err(&path, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(err(&path, e)),
        }
    }

    fn write<T: Serialize>(&self, name: &str, value: &T) -> Result<(), StateError> {
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let bytes = serde_json::to_vec_pretty(value).map_err(|e| err(&path, e))?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| err(&tmp, e))?;
        f.write_all(&bytes).map_err(|e| err(&tmp, e))?;
        f.sync_all().map_err(|e| err(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| err(&path, e))?;
        Ok(())
    }

    pub fn enrollment(&self) -> Result<Option<Enrollment>, StateError> {
        self.read("agent.json")
    }

    pub fn save_enrollment(&self, e: &Enrollment) -> Result<(), StateError> {
        self.write("agent.json", e)
    }

    pub fn policy(&self) -> Result<Option<bulkhead_api::WirePolicy>, StateError> {
        self.read("policy.json")
    }

    pub fn save_policy(&self, p: &bulkhead_api::WirePolicy) -> Result<(), StateError> {
        self.write("policy.json", p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enrollment_round_trips_and_is_private() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::open(&tmp.path().join("state")).unwrap();
        assert_eq!(dir.enrollment().unwrap(), None);
        let e = Enrollment {
            server: "https://10.0.0.1:8443".into(),
            ca_fingerprint: "00".repeat(32),
            agent_id: 3,
            workload: "db-1".into(),
            credential: "bh_agent_x".into(),
        };
        dir.save_enrollment(&e).unwrap();
        assert_eq!(dir.enrollment().unwrap(), Some(e));
        let mode = std::fs::metadata(dir.path().join("agent.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_corrupt_file_is_an_error_not_a_fresh_start() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::open(tmp.path()).unwrap();
        std::fs::write(tmp.path().join("agent.json"), b"{not json").unwrap();
        let e = dir.enrollment().unwrap_err();
        assert!(e.path.ends_with("agent.json"), "{e}");
    }
}
