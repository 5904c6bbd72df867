//! The flow spool: batches of flows on disk until the server has acknowledged them, so
//! a server outage, an agent restart or a `kill -9` loses none that reached it.
//!
//! ```text
//! STATE_DIR/spool/
//!   stream.json                 the current stream, its last number, the counters
//!   00000000000000000042.batch  one batch: a checked header line, then the FlowBatch JSON
//!   corrupt/                    files that did not check out, moved aside
//! ```
//!
//! - Each batch is numbered in a *stream* (a random 128-bit id made with the spool) and
//!   written before it is sent: to a temporary file, synced, renamed, and the directory
//!   synced; `stream.json` likewise. The server stores a batch of a stream once (it
//!   keeps each stream's highest number), so a batch is sent oldest first, one at a
//!   time, and removed only once the server acknowledged it: re-sending after a lost
//!   answer or a crash is harmless.
//! - Bounded in bytes: a batch that does not fit makes room by dropping the oldest
//!   ones, which are counted (batches and flows) in `stream.json`, so the count survives
//!   restarts and reaches the server in the next heartbeat.
//! - A file that does not check out (its SHA-256 in the header, then the JSON) is moved
//!   to `corrupt/`, counted and logged, never delivered, and never stops the others.
//! - Numbers only grow: a new batch is numbered after both the last recorded in
//!   `stream.json` and the highest file present, so a crash between writing a batch and
//!   recording its number cannot reuse the number.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use bulkhead_api::{FlowBatch, HostFlow};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// The default bound: 64 MiB holds about 250,000 flows.
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;

const HEADER: &str = "bulkhead-spool 1 sha256=";
const SUFFIX: &str = ".batch";
const STATE: &str = "stream.json";

/// What `stream.json` keeps.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
struct SpoolState {
    /// The stream new batches are numbered in.
    stream: String,
    /// The last number given in it.
    last: u64,
    #[serde(default)]
    batches_dropped: u64,
    #[serde(default)]
    flows_dropped: u64,
    #[serde(default)]
    corrupt: u64,
}

/// The spool's size and counters, as the heartbeat reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolStats {
    pub batches: u64,
    pub flows: u64,
    pub bytes: u64,
    pub batches_dropped: u64,
    pub flows_dropped: u64,
    pub corrupt: u64,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    bytes: u64,
    flows: u64,
}

#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    state: SpoolState,
    /// The batches on disk by number, oldest first.
    batches: BTreeMap<u64, Entry>,
    bytes: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("flow spool {path}: {source}")]
pub struct SpoolError {
    path: String,
    source: std::io::Error,
}

fn at(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError {
        path: path.display().to_string(),
        source,
    }
}

impl Spool {
    /// Opens (creating) the spool in `dir`: reads its state, checks every batch file
    /// (moving aside the ones that do not check out) and removes leftover temporary
    /// files.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Spool, SpoolError> {
        fs::create_dir_all(dir).map_err(at(dir))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(at(dir))?;
        let mut spool = Spool {
            dir: dir.to_path_buf(),
            max_bytes,
            state: SpoolState::default(),
            batches: BTreeMap::new(),
            bytes: 0,
        };
        let state_path = dir.join(STATE);
        match fs::read(&state_path) {
            Ok(bytes) => match serde_json::from_slice::<SpoolState>(&bytes) {
                Ok(s) if valid_stream(&s.stream) => spool.state = s,
                Ok(_) | Err(_) => {
                    // Its counters are lost; the batches carry their own stream and
                    // number, and new ones go to a new stream.
                    tracing::error!(
                        "flow spool: {} is unreadable; moved aside, starting a new stream",
                        state_path.display()
                    );
                    spool.state.corrupt += 1;
                    spool.quarantine(&state_path);
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(at(&state_path)(e)),
        }
        let mut highest = 0;
        for entry in fs::read_dir(dir).map_err(at(dir))? {
            let entry = entry.map_err(at(dir))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                // A write that never completed: its batch was never sent.
                let _ = fs::remove_file(&path);
                continue;
            }
            let Some(seq) = name
                .strip_suffix(SUFFIX)
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            highest = highest.max(seq);
            match read_batch(&path) {
                Ok(b) => {
                    let bytes = entry.metadata().map(|m| m.len()).unwrap_or(0);
                    spool.batches.insert(
                        seq,
                        Entry {
                            bytes,
                            flows: b.flows.len() as u64,
                        },
                    );
                    spool.bytes += bytes;
                }
                Err(why) => {
                    tracing::error!(
                        "flow spool: {} does not check out ({why}); moved aside to corrupt/",
                        path.display()
                    );
                    spool.state.corrupt += 1;
                    spool.quarantine(&path);
                }
            }
        }
        if spool.state.stream.is_empty() {
            spool.state.stream = new_stream()?;
        }
        spool.state.last = spool.state.last.max(highest);
        spool.save_state()?;
        if !spool.batches.is_empty() {
            tracing::info!(
                "flow spool: {} batches ({} flows) from before the restart, to send first",
                spool.batches.len(),
                spool.batches.values().map(|e| e.flows).sum::<u64>()
            );
        }
        Ok(spool)
    }

    pub fn stats(&self) -> SpoolStats {
        SpoolStats {
            batches: self.batches.len() as u64,
            flows: self.batches.values().map(|e| e.flows).sum(),
            bytes: self.bytes,
            batches_dropped: self.state.batches_dropped,
            flows_dropped: self.state.flows_dropped,
            corrupt: self.state.corrupt,
        }
    }

    /// Writes `flows` as the next batch of the stream, durably, dropping the oldest
    /// batches when it would not fit. An error leaves the spool as it was (the caller
    /// keeps the flows).
    pub fn push(&mut self, flows: Vec<HostFlow>) -> Result<(), SpoolError> {
        if flows.is_empty() {
            return Ok(());
        }
        let seq = self.state.last + 1;
        let batch = FlowBatch {
            batch: seq,
            stream: Some(self.state.stream.clone()),
            flows,
        };
        let content = encode(&batch);
        let size = content.len() as u64;
        let path = self.path_of(seq);
        if size > self.max_bytes {
            // Larger than the whole spool: nothing older is dropped for it.
            tracing::error!(
                "flow spool: a batch of {} flows ({size} bytes) exceeds the spool's bound of {} bytes; dropped",
                batch.flows.len(),
                self.max_bytes
            );
            self.state.last = seq;
            self.state.batches_dropped += 1;
            self.state.flows_dropped += batch.flows.len() as u64;
            return self.save_state();
        }
        let mut evicted = (0u64, 0u64);
        while self.bytes + size > self.max_bytes {
            let Some((&old, &e)) = self.batches.iter().next() else {
                break;
            };
            self.forget(old);
            evicted.0 += 1;
            evicted.1 += e.flows;
        }
        write_durably(&self.dir, &path, &content)?;
        self.batches.insert(
            seq,
            Entry {
                bytes: size,
                flows: batch.flows.len() as u64,
            },
        );
        self.bytes += size;
        self.state.last = seq;
        if evicted.0 > 0 {
            self.state.batches_dropped += evicted.0;
            self.state.flows_dropped += evicted.1;
            tracing::warn!(
                "flow spool full ({} bytes): dropped the {} oldest batches ({} flows); {} flows dropped so far",
                self.max_bytes,
                evicted.0,
                evicted.1,
                self.state.flows_dropped
            );
        }
        self.save_state()
    }

    /// The oldest batch, read back and checked. Files that do not check out are moved
    /// aside (counted) and skipped.
    pub fn oldest(&mut self) -> Option<FlowBatch> {
        while let Some(&seq) = self.batches.keys().next() {
            let path = self.path_of(seq);
            match read_batch(&path) {
                Ok(b) => return Some(b),
                Err(why) => {
                    tracing::error!(
                        "flow spool: {} does not check out ({why}); moved aside to corrupt/",
                        path.display()
                    );
                    self.forget(seq);
                    self.state.corrupt += 1;
                    self.quarantine(&path);
                    if let Err(e) = self.save_state() {
                        tracing::error!("{e}");
                    }
                }
            }
        }
        None
    }

    /// Removes batch `seq`, which the server acknowledged. Not synced: a removal undone
    /// by a crash sends the batch again, which the server recognises.
    pub fn acknowledged(&mut self, seq: u64) {
        if self.batches.contains_key(&seq) {
            self.forget(seq);
        }
    }

    fn forget(&mut self, seq: u64) {
        if let Some(e) = self.batches.remove(&seq) {
            self.bytes = self.bytes.saturating_sub(e.bytes);
        }
        let path = self.path_of(seq);
        if let Err(e) = fs::remove_file(&path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::error!("flow spool: removing {}: {e}", path.display());
        }
    }

    fn path_of(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}{SUFFIX}"))
    }

    fn quarantine(&self, path: &Path) {
        let aside = self.dir.join("corrupt");
        let moved = fs::create_dir_all(&aside).and_then(|()| {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            fs::rename(
                path,
                aside.join(format!("{}-{name}", crate::agent::now_ms())),
            )
        });
        if let Err(e) = moved {
            tracing::error!(
                "flow spool: moving {} aside: {e}; removing it",
                path.display()
            );
            let _ = fs::remove_file(path);
        }
    }

    fn save_state(&self) -> Result<(), SpoolError> {
        let text = serde_json::to_vec(&self.state).unwrap_or_default();
        write_durably(&self.dir, &self.dir.join(STATE), &text)
    }
}

fn valid_stream(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn new_stream() -> Result<String, SpoolError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| SpoolError {
        path: "(randomness)".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    Ok(hex::encode(bytes))
}

/// A header line with the SHA-256 of the body, then the batch as the server takes it.
fn encode(batch: &FlowBatch) -> Vec<u8> {
    let body = serde_json::to_vec(batch).unwrap_or_default();
    let mut out = format!("{HEADER}{}\n", hex::encode(Sha256::digest(&body))).into_bytes();
    out.extend_from_slice(&body);
    out
}

fn read_batch(path: &Path) -> Result<FlowBatch, String> {
    let bytes = fs::read(path).map_err(|e| e.to_string())?;
    let newline = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or("no header line")?;
    let header = std::str::from_utf8(&bytes[..newline]).map_err(|_| "header is not text")?;
    let want = header.strip_prefix(HEADER).ok_or("not a spool file")?;
    let body = &bytes[newline + 1..];
    if hex::encode(Sha256::digest(body)) != want {
        return Err("checksum mismatch".into());
    }
    let batch: FlowBatch = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    if !batch.stream.as_deref().is_some_and(valid_stream) || batch.batch == 0 {
        return Err("no valid stream or number".into());
    }
    Ok(batch)
}

/// Temporary file, synced, renamed over `path`, directory synced.
fn write_durably(dir: &Path, path: &Path, content: &[u8]) -> Result<(), SpoolError> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(at(&tmp))?;
    f.write_all(content).map_err(at(&tmp))?;
    f.sync_all().map_err(at(&tmp))?;
    drop(f);
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(at(path)(e));
    }
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(at(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(port: u16) -> HostFlow {
        HostFlow {
            protocol: 6,
            src: "10.0.0.1".parse().unwrap(),
            src_port: port,
            dst: "10.0.0.2".parse().unwrap(),
            dst_port: 80,
            direction: bulkhead_api::HostDirection::Outbound,
            packets: 1,
            bytes: 60,
            reverse_packets: 0,
            reverse_bytes: 0,
            start_ms: 0,
            end_ms: 0,
            process: None,
        }
    }

    fn flows(from: u16, n: u16) -> Vec<HostFlow> {
        (from..from + n).map(flow).collect()
    }

    #[test]
    fn batches_survive_a_reopen_oldest_first_and_numbers_only_grow() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), DEFAULT_MAX_BYTES).unwrap();
        s.push(flows(1, 3)).unwrap();
        s.push(flows(10, 2)).unwrap();
        let stream = s.state.stream.clone();
        assert_eq!(stream.len(), 32);
        drop(s);
        // As after a kill -9: nothing but the files.
        let mut s = Spool::open(dir.path(), DEFAULT_MAX_BYTES).unwrap();
        assert_eq!((s.stats().batches, s.stats().flows), (2, 5));
        let first = s.oldest().unwrap();
        assert_eq!((first.batch, first.flows.len()), (1, 3));
        assert_eq!(first.stream.as_deref(), Some(stream.as_str()));
        s.acknowledged(1);
        s.acknowledged(2);
        assert!(s.oldest().is_none());
        // Everything acknowledged and removed: the numbering still continues.
        drop(s);
        let mut s = Spool::open(dir.path(), DEFAULT_MAX_BYTES).unwrap();
        s.push(flows(20, 1)).unwrap();
        let b = s.oldest().unwrap();
        assert_eq!(b.batch, 3);
        assert_eq!(b.stream.as_deref(), Some(stream.as_str()));
        assert_eq!(s.stats().bytes, fs::metadata(s.path_of(3)).unwrap().len());
    }

    #[test]
    fn a_number_written_but_not_recorded_is_not_reused() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), DEFAULT_MAX_BYTES).unwrap();
        s.push(flows(1, 1)).unwrap();
        let old_state = fs::read(dir.path().join(STATE)).unwrap();
        s.push(flows(2, 1)).unwrap();
        drop(s);
        // A crash after batch 2's file, before stream.json recorded it.
        fs::write(dir.path().join(STATE), old_state).unwrap();
        let mut s = Spool::open(dir.path(), DEFAULT_MAX_BYTES).unwrap();
        s.push(flows(3, 1)).unwrap();
        assert_eq!(s.batches.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3]);
    }

    #[test]
    fn a_full_spool_drops_the_oldest_and_counts_them_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let one = encode(&FlowBatch {
            batch: 1,
            stream: Some("0".repeat(32)),
            flows: flows(1, 10),
        })
        .len() as u64;
        // Room for three batches of ten flows, not four.
        let mut s = Spool::open(dir.path(), one * 3 + one / 2).unwrap();
        for i in 0..5 {
            s.push(flows(i * 10, 10)).unwrap();
        }
        let st = s.stats();
        assert_eq!((st.batches, st.flows), (3, 30));
        assert_eq!((st.batches_dropped, st.flows_dropped), (2, 20));
        assert!(st.bytes <= one * 3 + one / 2, "{st:?}");
        assert_eq!(s.oldest().unwrap().batch, 3, "the oldest went first");
        drop(s);
        let mut s = Spool::open(dir.path(), one * 3 + one / 2).unwrap();
        assert_eq!(s.stats(), st, "the counters are kept on disk");
        // A batch larger than the whole spool is dropped itself, not the others.
        s.push(flows(100, 40)).unwrap();
        let after = s.stats();
        assert_eq!((after.batches, after.flows), (3, 30));
        assert_eq!((after.batches_dropped, after.flows_dropped), (3, 60));
    }

    #[test]
    fn corrupt_files_are_moved_aside_counted_and_do_not_block_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), DEFAULT_MAX_BYTES).unwrap();
        for i in 0..4 {
            s.push(flows(i * 10, 2)).unwrap();
        }
        drop(s);
        // Batch 1: a flipped byte in the body; batch 2: truncated; batch 3: not a
        // spool file at all. A leftover temporary file is removed.
        let p = |n: u64| dir.path().join(format!("{n:020}{SUFFIX}"));
        let mut b1 = fs::read(p(1)).unwrap();
        let last = b1.len() - 3;
        b1[last] ^= 0x20;
        fs::write(p(1), b1).unwrap();
        let b2 = fs::read(p(2)).unwrap();
        fs::write(p(2), &b2[..b2.len() / 2]).unwrap();
        fs::write(p(3), b"{\"batch\": 3}").unwrap();
        fs::write(dir.path().join("00000000000000000009.tmp"), b"half").unwrap();
        let mut s = Spool::open(dir.path(), DEFAULT_MAX_BYTES).unwrap();
        assert_eq!(s.stats().corrupt, 3);
        assert_eq!(s.oldest().unwrap().batch, 4);
        assert_eq!(fs::read_dir(dir.path().join("corrupt")).unwrap().count(), 3);
        assert!(!dir.path().join("00000000000000000009.tmp").exists());
        // Damaged after opening: found when read, skipped, counted.
        s.push(flows(50, 1)).unwrap();
        fs::write(p(4), b"garbage").unwrap();
        assert_eq!(s.oldest().unwrap().batch, 5);
        assert_eq!(s.stats().corrupt, 4);
        // A damaged stream.json: counted, and a new stream numbered after the files.
        drop(s);
        fs::write(dir.path().join(STATE), b"{not json").unwrap();
        let mut s = Spool::open(dir.path(), DEFAULT_MAX_BYTES).unwrap();
        assert_eq!(s.stats().corrupt, 1, "the old counters went with the file");
        s.push(flows(60, 1)).unwrap();
        let kept = s.oldest().unwrap();
        assert_eq!(kept.batch, 5);
        s.acknowledged(5);
        let new = s.oldest().unwrap();
        assert_eq!(new.batch, 6);
        assert_ne!(new.stream, kept.stream);
    }
}
