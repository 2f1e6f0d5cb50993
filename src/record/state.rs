//! Deployment state under `<project>/.de-build/` (git-ignored; the directory
//! is created 0700 and every file in it 0600):
//!
//! | path | what |
//! |---|---|
//! | `lock` | the deploy lock: an OS lock (`flock`) held on this file while a deploy runs |
//! | `lock.json` | who holds it (written after the OS lock is taken, removed at release) |
//! | `deployments/<id>.json` | one record per deploy/rollback/recover, with its plan and progress |
//! | `compose/<id>.yaml` | the compose file exactly as brought up by deployment `<id>` |
//! | `logs/<id>.log` | output of that deployment's bench commands |
//! | `audit.log` | one JSON line per deploy/rollback |
//! | `compose.env` | an empty env file for compose's `--env-file` |
//!
//! The OS lock cannot outlive its holder: when the process dies (even by
//! `kill -9`) the kernel releases it, so a `lock.json` whose OS lock is free
//! is known for sure to be left by a dead process, without guessing from PIDs.

use crate::error::{Error, Result};
use crate::record::deploy::{Action, DeployPlan, Progress};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHolder {
    pub user: String,
    pub host: String,
    pub pid: u32,
    pub command: String,
    pub version: String,
    pub since: String,
}

impl LockHolder {
    pub fn describe(&self) -> String {
        format!(
            "{}@{} (pid {}, `{}` of {}, since {})",
            self.user, self.host, self.pid, self.command, self.version, self.since
        )
    }
}

/// The user name of this process: $USER, else /etc/passwd by uid.
fn user_name() -> String {
    if let Ok(u) = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")) {
        return u;
    }
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX);
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|p| {
            p.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() > 2 && f[2] == uid.to_string()).then(|| f[0].to_string())
            })
        })
        .unwrap_or_else(|| format!("uid {uid}"))
}

pub fn whoami() -> (String, String) {
    let user = user_name();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    (user, host)
}

/// A held lock. Dropping it releases it (the kernel would anyway at exit).
pub struct Lock {
    file: Option<std::fs::File>,
    holder_path: PathBuf,
}

impl Lock {
    /// Remove the holder file, then let the OS lock go. An error means the
    /// holder file stays: `status` would then report a stale lock.
    pub fn release(mut self) -> Result<()> {
        let r = match std::fs::remove_file(&self.holder_path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove", &self.holder_path, e)),
        };
        self.file.take();
        r
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        if self.file.is_some() {
            // Best effort on an early return; release() is the checked path.
            if let Err(e) = std::fs::remove_file(&self.holder_path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    crate::ui::output::diag(&format!(
                        "warning: could not remove {}: {e}",
                        self.holder_path.display()
                    ));
                }
            }
        }
    }
}

/// The lock as `status` and `lock release` see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum LockStatus {
    Free,
    /// A live process holds the OS lock.
    Held {
        holder: Option<LockHolder>,
    },
    /// The OS lock is free but a holder file is left: its process died.
    Stale {
        holder: Option<LockHolder>,
    },
}

impl LockStatus {
    pub fn describe(&self) -> String {
        let who = |h: &Option<LockHolder>| {
            h.as_ref()
                .map(LockHolder::describe)
                .unwrap_or_else(|| "a holder whose lock.json cannot be read".into())
        };
        match self {
            LockStatus::Free => "free".into(),
            LockStatus::Held { holder } => format!("held by {}", who(holder)),
            LockStatus::Stale { holder } => format!(
                "left by {}, a process that is gone — `de-build recover` (or `de-build lock release`)",
                who(holder)
            ),
        }
    }
}

#[derive(Debug, Clone)]
pub struct State {
    pub dir: PathBuf,
}

/// A record file that could not be read: reported, never skipped in silence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unreadable {
    pub path: PathBuf,
    pub error: String,
}

impl State {
    pub fn new(dir: impl Into<PathBuf>) -> State {
        State { dir: dir.into() }
    }

    /// Create the state directory (0700) and `sub` under it.
    pub fn ensure_dir(&self, sub: &str) -> Result<PathBuf> {
        let d = if sub.is_empty() {
            self.dir.clone()
        } else {
            self.dir.join(sub)
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&d)
            .map_err(|e| Error::io("create", &d, e))?;
        Ok(d)
    }

    fn lock_file_path(&self) -> PathBuf {
        self.dir.join("lock")
    }

    fn holder_path(&self) -> PathBuf {
        self.dir.join("lock.json")
    }

    fn read_holder(&self) -> Option<Option<LockHolder>> {
        match std::fs::read_to_string(self.holder_path()) {
            Ok(t) => Some(serde_json::from_str(&t).ok()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(_) => Some(None),
        }
    }

    pub fn lock_status(&self) -> LockStatus {
        let holder = self.read_holder();
        let held = match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.lock_file_path())
        {
            Ok(f) => match f.try_lock() {
                Ok(()) => false,
                Err(std::fs::TryLockError::WouldBlock) => true,
                // A file system without locks: trust the holder file.
                Err(std::fs::TryLockError::Error(_)) => holder.is_some(),
            },
            Err(_) => false,
        };
        match (held, holder) {
            (true, h) => LockStatus::Held {
                holder: h.flatten(),
            },
            (false, None) => LockStatus::Free,
            (false, Some(h)) => LockStatus::Stale { holder: h },
        }
    }

    /// Take the project-wide lock, or say who has it (exit 5). A holder file
    /// left by a dead process is taken over (the OS lock proves it is dead)
    /// and returned, so the caller can say so.
    pub fn lock(&self, command: &str, version: &str) -> Result<(Lock, Option<LockStatus>)> {
        self.ensure_dir("")?;
        let path = self.lock_file_path();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::io("open", &path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let who = match self.read_holder() {
                    Some(Some(h)) => h.describe(),
                    _ => "a running process (its lock.json cannot be read)".into(),
                };
                return Err(Error::Locked {
                    message: format!("another deployment holds the lock: {who}"),
                    hint: "wait for it to finish; nothing was changed".into(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(Error::io("lock", &path, e));
            }
        }
        let left = self.read_holder().map(|h| LockStatus::Stale { holder: h });
        let (user, host) = whoami();
        let holder = LockHolder {
            user,
            host,
            pid: std::process::id(),
            command: command.to_string(),
            version: version.to_string(),
            since: now(),
        };
        let text = serde_json::to_string_pretty(&holder)
            .map_err(|e| Error::failed(format!("encode the lock holder: {e}")))?;
        let lock = Lock {
            file: Some(file),
            holder_path: self.holder_path(),
        };
        write_private(&self.holder_path(), text.as_bytes())?;
        Ok((lock, left))
    }

    /// Break a stale lock (`de-build lock release`); a live holder cannot be
    /// broken (the OS holds its lock), so it is refused.
    pub fn break_lock(&self) -> Result<LockStatus> {
        let st = self.lock_status();
        match &st {
            LockStatus::Free => {}
            LockStatus::Held { .. } => return Err(Error::refused(
                format!("the lock is {}", st.describe()),
                "that process is running: wait for it, or stop it (Ctrl-C lets it recover first)",
            )),
            LockStatus::Stale { .. } => {
                std::fs::remove_file(self.holder_path())
                    .map_err(|e| Error::io("remove", self.holder_path(), e))?;
            }
        }
        Ok(st)
    }

    pub fn deployments_dir(&self) -> PathBuf {
        self.dir.join("deployments")
    }

    /// Where deployment `id` keeps its copy of the compose files.
    pub fn compose_snapshot_dir(&self, id: &str) -> PathBuf {
        self.dir.join("compose").join(id)
    }

    pub fn log_path(&self, id: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{id}.log"))
    }

    /// Write a record atomically; an error means the file on disk still holds
    /// the previous version of the record (or none).
    pub fn save(&self, r: &Deployment) -> Result<()> {
        let dir = self.ensure_dir("deployments")?;
        let text = serde_json::to_string_pretty(r)
            .map_err(|e| Error::failed(format!("encode deployment record {}: {e}", r.id)))?
            + "\n";
        // Errors quoted in the record come from engines and tools: mask tokens.
        let text = crate::ui::output::redact::redact(&text);
        write_private(&dir.join(format!("{}.json", r.id)), text.as_bytes())
    }

    /// All deployment records, oldest first, and the files that could not be read.
    pub fn deployments(&self) -> (Vec<Deployment>, Vec<Unreadable>) {
        let mut out: Vec<Deployment> = Vec::new();
        let mut bad = Vec::new();
        let rd = match std::fs::read_dir(self.deployments_dir()) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (out, bad),
            Err(e) => {
                bad.push(Unreadable {
                    path: self.deployments_dir(),
                    error: e.to_string(),
                });
                return (out, bad);
            }
        };
        for e in rd.flatten() {
            let path = e.path();
            if path.extension().and_then(|x| x.to_str()) != Some("json") {
                continue;
            }
            match std::fs::read_to_string(&path)
                .map_err(|e| e.to_string())
                .and_then(|t| serde_json::from_str::<Deployment>(&t).map_err(|e| e.to_string()))
            {
                Ok(d) => out.push(d),
                Err(error) => bad.push(Unreadable { path, error }),
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        bad.sort_by(|a, b| a.path.cmp(&b.path));
        (out, bad)
    }

    /// Records, or an error naming the first unreadable one: a command that
    /// decides from records must not decide from some of them.
    pub fn deployments_checked(&self) -> Result<Vec<Deployment>> {
        let (all, bad) = self.deployments();
        match bad.first() {
            None => Ok(all),
            Some(b) => Err(Error::refused(
                format!(
                    "deployment record {} cannot be read: {}",
                    b.path.display(),
                    b.error
                ),
                "move it aside (it may be the record of the release that runs; `de-build status` shows what the engine runs), then try again",
            )),
        }
    }

    pub fn audit(&self, line: &serde_json::Value) -> Result<()> {
        self.ensure_dir("")?;
        let path = self.dir.join("audit.log");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::io("open", &path, e))?;
        let text = crate::ui::output::redact::redact(&line.to_string());
        writeln!(f, "{text}")
            .and_then(|_| f.sync_all())
            .map_err(|e| Error::io("append to", &path, e))
    }
}

/// The deployment that is up now: the last one that left a release running.
pub fn current(all: &[Deployment]) -> Option<&Deployment> {
    all.iter().rev().find(|d| d.result.is_up())
}

/// Releases deployed before the current one, newest first, each once: the
/// rollback candidates (the first is "the previous version").
pub fn earlier(all: &[Deployment]) -> Vec<&Deployment> {
    let current = current(all).map(|c| c.version.as_str());
    let mut out: Vec<&Deployment> = Vec::new();
    for d in all.iter().rev().filter(|d| d.result.is_up()) {
        if Some(d.version.as_str()) != current && !out.iter().any(|o| o.version == d.version) {
            out.push(d);
        }
    }
    out
}

/// The backups deployment `id` took (`rollback --restore-backup ID`).
pub fn backups_of(all: &[Deployment], id: &str) -> Result<Vec<Backup>> {
    let d = all.iter().find(|d| d.id == id).ok_or_else(|| {
        Error::refused(
            format!("no deployment {id} is recorded here"),
            "`de-build status` lists deployments and their backups",
        )
    })?;
    if d.backups.is_empty() {
        return Err(Error::refused(
            format!("deployment {id} took no backups"),
            "pick a deployment that replaced a running release",
        ));
    }
    Ok(d.backups.clone())
}

/// A deployment that did not finish: its record still says running (or
/// interrupted) and no live process holds the lock.
pub fn interrupted<'a>(all: &'a [Deployment], lock: &LockStatus) -> Option<&'a Deployment> {
    if matches!(lock, LockStatus::Held { .. }) {
        return None;
    }
    all.iter()
        .rev()
        .find(|d| matches!(d.result, Outcome::Running | Outcome::Interrupted))
}

/// Replace `path` with `data` (mode 0600) so readers see the old or the new
/// file, never half: temp file, fsync, rename, fsync of the directory.
pub fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    write_file(path, data, 0o600)
}

pub fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let res = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()?;
        Ok(())
    })();
    if let Err(e) = res {
        // The temp file may not exist; the write error is what matters.
        std::fs::remove_file(&tmp).ok();
        return Err(Error::io("write", path, e));
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Running,
    Succeeded,
    /// Failed, and the previous release is up again.
    Recovered,
    /// Failed before touching the stack, or a first deploy taken down again.
    Aborted,
    /// Failed and could not recover; see `left`.
    Fatal,
    /// Stopped by a second signal; `de-build recover` finishes it.
    Interrupted,
}

impl Outcome {
    /// Which release does this record leave serving?
    pub fn is_up(self) -> bool {
        matches!(self, Outcome::Succeeded)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Running => "running",
            Outcome::Succeeded => "succeeded",
            Outcome::Recovered => "recovered",
            Outcome::Aborted => "aborted",
            Outcome::Fatal => "fatal",
            Outcome::Interrupted => "interrupted",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backup {
    pub site: String,
    /// Where bench put the database backup, inside the sites volume.
    pub path: String,
}

/// One deploy or rollback, written before it starts and after every step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    /// Sortable: UTC time + pid.
    pub id: String,
    pub action: Action,
    pub version: String,
    pub image_id: String,
    pub previous_version: Option<String>,
    pub project: String,
    /// Snapshot of the compose file brought up (under `.de-build/compose/`).
    pub compose_file: PathBuf,
    /// The compose file it was copied from.
    pub compose_source: PathBuf,
    /// Non-secret env handed to compose.
    pub env: BTreeMap<String, String>,
    pub backups: Vec<Backup>,
    pub started: String,
    pub finished: Option<String>,
    pub result: Outcome,
    pub steps: Vec<StepRecord>,
    pub error: Option<String>,
    /// After a fatal failure: what is left and how to finish by hand.
    pub left: Option<String>,
    /// What a recovery did not do to the data, and how to do it.
    #[serde(default)]
    pub data_note: Option<String>,
    pub user: String,
    pub host: String,
    #[serde(default)]
    pub pid: u32,
    /// The plan this deployment ran (what `recover` needs to finish it).
    #[serde(default)]
    pub plan: Option<DeployPlan>,
    #[serde(default)]
    pub progress: Progress,
    /// A deployment to a swarm (`DE_TARGET=swarm`): its plan and progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swarm: Option<crate::record::swarm::SwarmRun>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub step: String,
    pub ok: bool,
    pub seconds: f64,
}

pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub fn new_id() -> String {
    format!(
        "{}-{}",
        chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ"),
        std::process::id()
    )
}

/// A minimal record, for tests of code that reads records.
#[cfg(test)]
pub fn sample(id: &str, version: &str, result: Outcome) -> Deployment {
    Deployment {
        id: id.into(),
        action: Action::Deploy,
        version: version.into(),
        image_id: format!("sha256:{version}"),
        previous_version: None,
        project: "p".into(),
        compose_file: PathBuf::new(),
        compose_source: PathBuf::new(),
        env: BTreeMap::new(),
        backups: Vec::new(),
        started: now(),
        finished: None,
        result,
        steps: Vec::new(),
        error: None,
        left: None,
        data_note: None,
        user: "a".into(),
        host: "h".into(),
        pid: 1,
        plan: None,
        progress: Progress::default(),
        swarm: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn lock_is_exclusive_and_a_dead_holder_is_known_for_sure() {
        let d = tempfile::tempdir().unwrap();
        let s = State::new(d.path().join(".de-build"));
        assert_eq!(s.lock_status(), LockStatus::Free);
        let (l, left) = s.lock("deploy", "1.0.0").unwrap();
        assert!(left.is_none());
        // flock locks belong to the open file: a second open in this process conflicts too.
        let e = s.lock("deploy", "1.1.0").err().unwrap();
        assert_eq!(e.exit_code(), 5);
        assert!(e.to_string().contains("`deploy` of 1.0.0"), "{e}");
        assert!(matches!(
            s.lock_status(),
            LockStatus::Held { holder: Some(_) }
        ));
        assert!(s.break_lock().is_err(), "a live holder is not broken");
        l.release().unwrap();
        assert_eq!(s.lock_status(), LockStatus::Free);

        // A holder file without its OS lock: the process died.
        std::fs::write(s.dir.join("lock.json"), "garbage").unwrap();
        assert_eq!(s.lock_status(), LockStatus::Stale { holder: None });
        let (l, left) = s.lock("deploy", "1.0.0").unwrap();
        assert_eq!(left, Some(LockStatus::Stale { holder: None }));
        l.release().unwrap();
    }

    #[test]
    fn an_unreadable_holder_file_while_held_is_held_never_free() {
        let d = tempfile::tempdir().unwrap();
        let s = State::new(d.path());
        let (_l, _) = s.lock("deploy", "1.0.0").unwrap();
        std::fs::write(s.dir.join("lock.json"), "").unwrap();
        assert_eq!(s.lock_status(), LockStatus::Held { holder: None });
        let e = s.lock("deploy", "1.1.0").err().unwrap();
        assert_eq!(e.exit_code(), 5);
    }

    #[test]
    fn state_files_are_private_and_corrupt_records_are_reported() {
        let d = tempfile::tempdir().unwrap();
        let s = State::new(d.path().join(".de-build"));
        let (l, _) = s.lock("deploy", "1.0.0").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&s.dir), 0o700);
        assert_eq!(mode(&s.dir.join("lock.json")), 0o600);
        l.release().unwrap();
        s.ensure_dir("deployments").unwrap();
        std::fs::write(s.deployments_dir().join("x.json"), "{").unwrap();
        let (all, bad) = s.deployments();
        assert!(all.is_empty());
        assert_eq!(bad.len(), 1);
        assert!(s.deployments_checked().is_err());
    }
}
