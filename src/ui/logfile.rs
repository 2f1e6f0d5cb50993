//! The tool's own log: every invocation appends to `.de-build/de-build.log`
//! the command, each engine / compose / git action with its result and
//! duration, and errors. Tokens are redacted. At 10 MB the file is rotated:
//! `de-build.log.1.gz` (newest) … `.3.gz`; older generations are dropped.
//! The state directory is created 0700 and the log files 0600: the log names
//! hosts, images and commands, which are nobody else's business.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

const MAX_BYTES: u64 = 10 * 1024 * 1024;
const GENERATIONS: usize = 3;

struct Sink {
    file: std::fs::File,
}

fn sink() -> &'static Mutex<Option<Sink>> {
    static S: OnceLock<Mutex<Option<Sink>>> = OnceLock::new();
    S.get_or_init(|| Mutex::new(None))
}

/// Create (or open for appending) a file only its owner can read.
fn private_file(path: &Path, append: bool) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(append)
        .write(true)
        .truncate(!append)
        .mode(0o600)
        .open(path)?;
    // A file created by an older de-build (0644) is tightened too.
    use std::os::unix::fs::PermissionsExt;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(f)
}

/// Create the state directory 0700 (as record::state does); one created
/// by an older de-build (0755) is tightened too.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let mode = std::fs::metadata(dir)?.permissions().mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

pub fn path_in(state_dir: &Path) -> PathBuf {
    state_dir.join("de-build.log")
}

/// Rotate `path` if it has grown past the limit: compress it into `.1.gz`
/// after shifting the older generations up by one.
pub fn rotate_if_needed(path: &Path, limit: u64) -> std::io::Result<bool> {
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    if size < limit {
        return Ok(false);
    }
    let gen = |n: usize| PathBuf::from(format!("{}.{n}.gz", path.display()));
    let _ = std::fs::remove_file(gen(GENERATIONS));
    for n in (1..GENERATIONS).rev() {
        if gen(n).exists() {
            std::fs::rename(gen(n), gen(n + 1))?;
        }
    }
    let mut input = std::fs::File::open(path)?;
    let out = private_file(&gen(1), false)?;
    let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::default());
    std::io::copy(&mut input, &mut enc)?;
    enc.finish()?.sync_all()?;
    private_file(path, false)?; // truncate
    Ok(true)
}

/// Open the log for this invocation (best effort: logging never fails a command).
pub fn open(state_dir: &Path, argv: &[String]) {
    if private_dir(state_dir).is_err() {
        return;
    }
    let path = path_in(state_dir);
    let _ = rotate_if_needed(&path, MAX_BYTES);
    if let Ok(file) = private_file(&path, true) {
        *sink().lock().unwrap_or_else(|e| e.into_inner()) = Some(Sink { file });
        line(&format!(
            "start pid={} argv={}",
            std::process::id(),
            argv.join(" ")
        ));
    }
}

fn line(text: &str) {
    let mut g = sink().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = g.as_mut() {
        let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let _ = writeln!(s.file, "{ts} {}", crate::ui::output::redact::redact(text));
    }
}

/// One action and how it went.
pub fn action(what: &str, ok: bool, took: Duration, detail: &str) {
    let d = if detail.is_empty() {
        String::new()
    } else {
        format!(" {}", detail.replace('\n', " | "))
    };
    line(&format!(
        "{} {what} ({:.3}s){d}",
        if ok { "ok " } else { "ERR" },
        took.as_secs_f64()
    ));
}

pub fn finish(code: i32, error: Option<&str>) {
    match error {
        Some(e) => line(&format!("exit {code}: {}", e.replace('\n', " | "))),
        None => line(&format!("exit {code}")),
    }
    *sink().lock().unwrap_or_else(|e| e.into_inner()) = None;
}

/// Time an action and log it; returns its result unchanged.
pub async fn timed<T, E: std::fmt::Display>(
    what: &str,
    fut: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let t = std::time::Instant::now();
    let r = fut.await;
    match &r {
        Ok(_) => action(what, true, t.elapsed(), ""),
        Err(e) => action(what, false, t.elapsed(), &e.to_string()),
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn rotation_keeps_three_compressed_generations() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("de-build.log");
        for round in 0..5 {
            std::fs::write(&p, format!("round {round}\n").repeat(20)).unwrap();
            assert!(rotate_if_needed(&p, 100).unwrap());
        }
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 0);
        let mut names: Vec<String> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into())
            .collect();
        names.sort();
        assert_eq!(
            names,
            vec![
                "de-build.log",
                "de-build.log.1.gz",
                "de-build.log.2.gz",
                "de-build.log.3.gz"
            ]
        );
        let mut text = String::new();
        flate2::read::GzDecoder::new(
            std::fs::File::open(d.path().join("de-build.log.1.gz")).unwrap(),
        )
        .read_to_string(&mut text)
        .unwrap();
        assert!(text.starts_with("round 4"), "newest generation first");
        assert!(!rotate_if_needed(&p, 100).unwrap(), "small files stay");
        use std::os::unix::fs::PermissionsExt;
        for n in ["de-build.log", "de-build.log.1.gz"] {
            let mode = std::fs::metadata(d.path().join(n))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{n}");
        }
    }
}
