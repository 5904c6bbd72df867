//! Reading the files the library crates parse.

use std::path::{Path, PathBuf};

use crate::{EXIT_INVALID, Reported};

/// Expands files and directories (recursively, `*.yaml`/`*.yml`, sorted) and reads them.
/// A missing or unreadable path is the user's input error: exit 2.
pub fn read_policy_sources(paths: &[PathBuf]) -> anyhow::Result<Vec<(String, String)>> {
    let mut files = Vec::new();
    for p in paths {
        collect(p, &mut files)?;
    }
    if files.is_empty() {
        eprintln!(
            "error: no policy files (*.yaml, *.yml) found in {}",
            display_paths(paths)
        );
        return Err(Reported(EXIT_INVALID).into());
    }
    files.into_iter().map(|f| read(&f)).collect()
}

fn display_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn collect(p: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let meta = std::fs::metadata(p).map_err(|e| {
        eprintln!("error: {}: {e}", p.display());
        Reported(EXIT_INVALID)
    })?;
    if meta.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
            .map_err(|e| {
                eprintln!("error: {}: {e}", p.display());
                Reported(EXIT_INVALID)
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for e in entries {
            let is_yaml = e.extension().is_some_and(|x| x == "yaml" || x == "yml");
            if e.is_dir() || is_yaml {
                collect(&e, out)?;
            }
        }
    } else {
        out.push(p.to_path_buf());
    }
    Ok(())
}

pub fn read(p: &Path) -> anyhow::Result<(String, String)> {
    match std::fs::read_to_string(p) {
        Ok(t) => Ok((p.display().to_string(), t)),
        Err(e) => {
            eprintln!("error: {}: {e}", p.display());
            Err(Reported(EXIT_INVALID).into())
        }
    }
}
