//! Deployment state under `<project>/.de-build/` (git-ignored):
//!
//! | path | what |
//! |---|---|
//! | `lock.json` | the deploy lock: who holds it |
//! | `deployments/<id>.json` | one record per deploy/rollback |
//! | `compose/<id>.yaml` | the compose file exactly as brought up by deployment `<id>` |
//! | `logs/<id>.log` | output of that deployment's bench commands |
//! | `audit.log` | one JSON line per deploy/rollback |
//! | `compose.env` | an empty env file for compose's `--env-file` |

use crate::error::{Error, Result};
use crate::manifest::write_atomic;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
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

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// A held lock; removing the file on drop.
pub struct Lock {
    path: PathBuf,
    released: bool,
}

impl Lock {
    pub fn release(mut self) {
        let _ = std::fs::remove_file(&self.path);
        self.released = true;
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        if !self.released {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The lock's state as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LockState {
    pub holder: LockHolder,
    pub stale: bool,
}

#[derive(Debug, Clone)]
pub struct State {
    pub dir: PathBuf,
}

impl State {
    pub fn new(dir: impl Into<PathBuf>) -> State {
        State { dir: dir.into() }
    }

    fn lock_path(&self) -> PathBuf {
        self.dir.join("lock.json")
    }

    pub fn lock_state(&self) -> Option<LockState> {
        let text = std::fs::read_to_string(self.lock_path()).ok()?;
        let holder: LockHolder = serde_json::from_str(&text).ok()?;
        let (_, host) = whoami();
        let stale = holder.host == host && !pid_alive(holder.pid);
        Some(LockState { holder, stale })
    }

    /// Take the project-wide lock, or say who has it (exit 5).
    pub fn lock(&self, command: &str, version: &str) -> Result<Lock> {
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::io("create", &self.dir, e))?;
        let (user, host) = whoami();
        let holder = LockHolder {
            user,
            host,
            pid: std::process::id(),
            command: command.to_string(),
            version: version.to_string(),
            since: now(),
        };
        let path = self.lock_path();
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut f) => {
                let text = serde_json::to_string_pretty(&holder).unwrap_or_default();
                f.write_all(text.as_bytes())
                    .and_then(|_| f.sync_all())
                    .map_err(|e| Error::io("write", &path, e))?;
                Ok(Lock {
                    path,
                    released: false,
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let Some(st) = self.lock_state() else {
                    return Err(Error::Locked {
                        message: format!("{} exists but cannot be read", path.display()),
                        hint: "if no deploy is running, run `de-build lock release`".into(),
                    });
                };
                let h = &st.holder;
                let who = format!(
                    "{}@{} (pid {}, `{}` of {}, since {})",
                    h.user, h.host, h.pid, h.command, h.version, h.since
                );
                if st.stale {
                    Err(Error::Locked {
                        message: format!("a stale lock is left by {who}: that process is gone"),
                        hint: "check `de-build status`, then break it with `de-build lock release`"
                            .into(),
                    })
                } else {
                    Err(Error::Locked {
                        message: format!("another deployment holds the lock: {who}"),
                        hint: "wait for it to finish; nothing was changed".into(),
                    })
                }
            }
            Err(e) => Err(Error::io("create", &path, e)),
        }
    }

    /// Break the lock (`de-build lock release`); refuses while its holder runs.
    pub fn break_lock(&self, force: bool) -> Result<Option<LockHolder>> {
        let Some(st) = self.lock_state() else {
            let _ = std::fs::remove_file(self.lock_path());
            return Ok(None);
        };
        if !st.stale && !force {
            return Err(Error::refused(
                format!("the lock is held by a running process (pid {} on {})", st.holder.pid, st.holder.host),
                "wait for it, or pass --force if you are sure it is not running (e.g. it runs on another host that died)",
            ));
        }
        std::fs::remove_file(self.lock_path())
            .map_err(|e| Error::io("remove", self.lock_path(), e))?;
        Ok(Some(st.holder))
    }

    pub fn deployments_dir(&self) -> PathBuf {
        self.dir.join("deployments")
    }

    pub fn compose_snapshot_path(&self, id: &str) -> PathBuf {
        self.dir.join("compose").join(format!("{id}.yaml"))
    }

    pub fn log_path(&self, id: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{id}.log"))
    }

    pub fn save(&self, r: &Deployment) -> Result<()> {
        let dir = self.deployments_dir();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
        let text =
            serde_json::to_string_pretty(r).map_err(|e| Error::failed(e.to_string()))? + "\n";
        // Errors quoted in the record come from engines and tools: mask tokens.
        let text = crate::output::redact::redact(&text);
        write_atomic(&dir.join(format!("{}.json", r.id)), text.as_bytes())
    }

    /// All deployment records, oldest first.
    pub fn deployments(&self) -> Vec<Deployment> {
        let mut out: Vec<Deployment> = std::fs::read_dir(self.deployments_dir())
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                    .filter_map(|t| serde_json::from_str(&t).ok())
                    .collect()
            })
            .unwrap_or_default();
        out.sort_by(|a: &Deployment, b| a.id.cmp(&b.id));
        out
    }

    /// The deployment that is up now: the last one that left a release running.
    pub fn current(&self) -> Option<Deployment> {
        self.deployments()
            .into_iter()
            .rev()
            .find(|d| d.result.is_up())
    }

    pub fn audit(&self, line: &serde_json::Value) -> Result<()> {
        let path = self.dir.join("audit.log");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io("open", &path, e))?;
        let text = crate::output::redact::redact(&line.to_string());
        writeln!(f, "{text}").map_err(|e| Error::io("append to", &path, e))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Running,
    Succeeded,
    /// Failed, and the previous release is up again.
    Recovered,
    /// Failed before touching the stack; nothing changed.
    Aborted,
    /// Failed and could not recover; see `left`.
    Fatal,
}

impl Outcome {
    /// Which release does this record leave serving?
    fn is_up(self) -> bool {
        matches!(self, Outcome::Succeeded)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backup {
    pub site: String,
    /// Where bench put the backup, inside the sites volume.
    pub path: String,
}

/// One deploy or rollback, written before it starts and after every step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    /// Sortable: UTC time + pid.
    pub id: String,
    pub action: String,
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
    pub user: String,
    pub host: String,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_is_exclusive_and_reports_its_holder() {
        let d = tempfile::tempdir().unwrap();
        let s = State::new(d.path());
        let l = s.lock("deploy", "1.0.0").unwrap();
        let e = s.lock("deploy", "1.1.0").err().unwrap();
        assert_eq!(e.exit_code(), 5);
        assert!(e.to_string().contains("`deploy` of 1.0.0"), "{e}");
        assert!(
            s.break_lock(false).is_err(),
            "a live holder is not broken without --force"
        );
        l.release();
        assert!(s.lock_state().is_none());

        // A holder that is gone is stale.
        let (user, host) = whoami();
        let dead = LockHolder {
            user,
            host,
            pid: u32::MAX - 1,
            command: "deploy".into(),
            version: "9".into(),
            since: now(),
        };
        std::fs::write(
            d.path().join("lock.json"),
            serde_json::to_string(&dead).unwrap(),
        )
        .unwrap();
        let e = s.lock("deploy", "1.0.0").err().unwrap();
        assert!(e.to_string().contains("stale"), "{e}");
        assert_eq!(
            s.break_lock(false).unwrap().map(|h| h.pid),
            Some(u32::MAX - 1)
        );
        assert!(s.lock("deploy", "1.0.0").is_ok());
    }
}
