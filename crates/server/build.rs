//! Builds the web console (`web/`, Vite + TypeScript) and embeds its files in the server.
//!
//! `npm ci` runs only when `web/node_modules` is missing or `web/package-lock.json` changed
//! since the last install; `npm run build` writes into `$OUT_DIR/console`, so no build
//! output lands in the source tree. The generated `console_assets.rs` is a table of
//! (path, content type, bytes) that `src/console.rs` serves.
//!
//! `BULKHEAD_CONSOLE_DIST=DIR` embeds an already built directory instead (no npm).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let web = manifest.join("../../web");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    for p in [
        "src",
        "public",
        "index.html",
        "package.json",
        "package-lock.json",
        "vite.config.ts",
        "tsconfig.json",
    ] {
        println!("cargo:rerun-if-changed={}", web.join(p).display());
    }
    println!("cargo:rerun-if-env-changed=BULKHEAD_CONSOLE_DIST");

    let dist = match std::env::var_os("BULKHEAD_CONSOLE_DIST") {
        Some(d) => PathBuf::from(d),
        None => {
            let dist = out.join("console");
            build_console(&web, &dist);
            dist
        }
    };
    let mut files = Vec::new();
    collect(&dist, &dist, &mut files);
    files.sort();
    if !files.iter().any(|(rel, _)| rel == "index.html") {
        fail(&format!("{} has no index.html", dist.display()));
    }
    let mut code = String::from("/// (path, content type, bytes) of every console file.\n");
    code.push_str("pub static ASSETS: &[(&str, &str, &[u8])] = &[\n");
    for (rel, abs) in &files {
        let _ = writeln!(
            code,
            "    ({rel:?}, {:?}, include_bytes!({:?})),",
            content_type(rel),
            abs.display().to_string()
        );
    }
    code.push_str("];\n");
    std::fs::write(out.join("console_assets.rs"), code).expect("writing console_assets.rs");
}

fn fail(msg: &str) -> ! {
    eprintln!("\nerror: building the web console: {msg}\n");
    panic!("building the web console: {msg}");
}

fn build_console(web: &Path, dist: &Path) {
    let npm = if cfg!(windows) { "npm.cmd" } else { "npm" };
    if Command::new(npm).arg("--version").output().is_err() {
        fail(
            "npm was not found. The console (web/) is built with Node.js and npm: run \
             ./scripts/setup (it installs them from Debian), or set BULKHEAD_CONSOLE_DIST \
             to a directory with an already built console",
        );
    }
    // Several builds (other target directories) may share web/: one npm at a time.
    let lock = std::fs::File::create(web.join(".build.lock")).expect("web/.build.lock");
    lock.lock().expect("locking web/.build.lock");

    let lockfile = std::fs::read(web.join("package-lock.json"))
        .unwrap_or_else(|e| fail(&format!("web/package-lock.json: {e}")));
    let stamp = web.join("node_modules/.bulkhead-package-lock.json");
    let installed = std::fs::read(&stamp).ok();
    if installed.as_deref() != Some(lockfile.as_slice()) {
        run(Command::new(npm)
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(web));
        std::fs::write(&stamp, &lockfile).expect("writing the npm ci stamp");
    }
    run(Command::new(npm)
        .args(["run", "build", "--", "--outDir"])
        .arg(dist)
        .arg("--emptyOutDir")
        .current_dir(web));
}

fn run(cmd: &mut Command) {
    let shown = format!("{cmd:?}");
    match cmd.output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => fail(&format!(
            "{shown} failed ({}):\n{}\n{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )),
        Err(e) => fail(&format!("{shown}: {e}")),
    }
}

fn collect(root: &Path, dir: &Path, files: &mut Vec<(String, PathBuf)>) {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| fail(&format!("reading {}: {e}", dir.display())));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            collect(root, &path, files);
        } else {
            let rel = path
                .strip_prefix(root)
                .expect("under root")
                .to_string_lossy()
                .replace('\\', "/");
            files.push((rel, path));
        }
    }
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}
