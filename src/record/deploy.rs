//! The data of a deploy or rollback as it is planned and recorded: steps,
//! stacks, progress, recovery. The deployment record keeps the whole plan, so
//! `de-build recover` can finish the job of a process that died. Computing a
//! plan is `plan::deploy`'s work; this is only the shape.

use crate::record::state::{Backup, Outcome};
use crate::util::short_id;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Which compose files, project and directory an invocation works on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub project: String,
    /// In `-f` order. Records written before lists were supported hold one
    /// `file`.
    #[serde(alias = "file", deserialize_with = "one_or_many")]
    pub files: Vec<PathBuf>,
    pub project_dir: PathBuf,
    pub empty_env_file: PathBuf,
}

impl Target {
    /// The first file: the one a record names as "the compose file".
    pub fn main_file(&self) -> &Path {
        self.files
            .first()
            .map(PathBuf::as_path)
            .unwrap_or(Path::new(""))
    }
}

/// A path or a list of paths (records from before compose file lists).
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<PathBuf>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(PathBuf),
        Many(Vec<PathBuf>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(p) => vec![p],
        OneOrMany::Many(v) => v,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Deploy,
    Rollback,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Deploy => "deploy",
            Action::Rollback => "rollback",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// Which sites bench commands address: `all` or a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sites {
    All,
    List(Vec<String>),
}

impl Sites {
    pub fn parse(v: &str) -> Sites {
        if v.trim() == "all" {
            Sites::All
        } else {
            Sites::List(
                v.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect(),
            )
        }
    }

    /// The `--site` arguments, one bench run each.
    pub fn args(&self) -> Vec<String> {
        match self {
            Sites::All => vec!["all".into()],
            Sites::List(l) => l.clone(),
        }
    }
}

/// A stack as compose brings it up: file, project, variables, release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackSpec {
    pub version: String,
    /// The image ID every app container of this stack must run.
    #[serde(default)]
    pub image_id: String,
    pub target: Target,
    /// Non-secret variables handed to compose.
    pub env: BTreeMap<String, String>,
}

/// What a drain does when sites still have queued jobs at its timeout
/// (`DE_DRAIN_ON_TIMEOUT`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnDrainTimeout {
    /// Stop the deploy: only maintenance was changed, and it goes off again.
    #[default]
    Abort,
    /// Go on: the backup is taken with the jobs still queued, and they run
    /// after the deploy, on the new release.
    Proceed,
}

impl OnDrainTimeout {
    pub fn parse(v: &str) -> Option<OnDrainTimeout> {
        match v {
            "" | "abort" => Some(OnDrainTimeout::Abort),
            "proceed" => Some(OnDrainTimeout::Proceed),
            _ => None,
        }
    }
}

/// What the health gate accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Gate {
    /// Still in maintenance: the new release must answer at all (2xx, or the
    /// application's own 503 for maintenance), proving the web tier runs the
    /// new code while no user can write to it yet.
    Sealed,
    /// Open to users: 2xx.
    Open,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// Copy the compose files as they are now (`sources[i]` to `to[i]`); the
    /// deployment brings the copies up, so a later edit of the files cannot
    /// change what `down` addresses.
    Snapshot {
        #[serde(alias = "source", deserialize_with = "one_or_many")]
        sources: Vec<PathBuf>,
        #[serde(deserialize_with = "one_or_many")]
        to: Vec<PathBuf>,
    },
    MaintenanceOn {
        project: String,
    },
    /// `bench --site S ready-for-migration` until every site is ready.
    Drain {
        project: String,
        timeout_secs: u64,
        /// Absent in records written before the choice existed: abort.
        #[serde(default)]
        on_timeout: OnDrainTimeout,
    },
    Backup {
        project: String,
    },
    Down {
        stack: StackSpec,
    },
    Up {
        stack: StackSpec,
    },
    /// Recreate every container in one compose pass; the short-outage form of
    /// down + up.
    Replace {
        from: StackSpec,
        to: StackSpec,
        /// After a switch the web tier already runs `to`: this pass changes
        /// the workers and the scheduler only.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        web_moved: bool,
    },
    /// One-shot services (frappe_docker's `configurator`, `create-site`)
    /// have exited 0: migrate must not race them.
    WaitOneshots {
        project: String,
        services: Vec<String>,
        timeout_secs: u64,
    },
    /// Every app container runs exactly the release's image.
    VerifyImage {
        stack: StackSpec,
    },
    Migrate {
        project: String,
        /// Run in a container of this image (a migrating switch, where the
        /// old and the new backends both run); absent: any backend.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        image_id: Option<String>,
    },
    Restore {
        project: String,
        backups: Vec<Backup>,
    },
    HealthGate {
        url: String,
        timeout_secs: u64,
        gate: Gate,
    },
    MaintenanceOff {
        project: String,
    },
    /// Start the new release's web tier beside the old one (compose scales
    /// each service to twice its containers without recreating any): the
    /// old containers keep serving, the door does not know the new ones yet.
    StartBeside {
        stack: StackSpec,
        web: WebTier,
        /// Which part of the web tier (absent: all of it, upstream first).
        #[serde(default, skip_serializing_if = "Tier::is_all")]
        tier: Tier,
    },
    /// Ask the new containers directly (their own address, not the door):
    /// every new backend answers the site 2xx, then every new frontend.
    ProbeBeside {
        stack: StackSpec,
        web: WebTier,
        url_path: String,
        timeout_secs: u64,
        #[serde(default, skip_serializing_if = "Tier::is_all")]
        tier: Tier,
    },
    /// Copy the hashed bundles (`assets/*/dist/`) of each release's frontend
    /// into the other's: a page either rendered finds its CSS/JS on both.
    ShareAssets {
        from: StackSpec,
        to: StackSpec,
        web: WebTier,
    },
    /// Point the door at the new frontends: an nginx door's upstream that
    /// names the frontend service is pinned to their addresses (checked
    /// with `nginx -T`), then `DE_DOOR_RELOAD` runs in it; another door
    /// just reloads (it resolves the frontends by name).
    ReloadDoor {
        project: String,
        door: Door,
    },
    /// Take the old web tier out of traffic and remove it: the door no
    /// longer sends to its frontends (pinned to the new ones), which finish
    /// in-flight requests and quit; then its backends, which only they
    /// reached, stop gracefully. (A door or frontend that resolves by name
    /// is reloaded after each stop to forget the old.)
    RetireOld {
        from: StackSpec,
        to: StackSpec,
        web: WebTier,
        door: Door,
        #[serde(default, skip_serializing_if = "Tier::is_all")]
        tier: Tier,
    },
    /// After a migrate, in maintenance: the new frontends send only to the
    /// new backends (their addresses written before the window, reloaded
    /// while the queues drained), and the old workers and scheduler stop
    /// at once; the old backends and websockets,
    /// which nothing reaches any more, stop after the window. (Frontends
    /// that resolve by name: every old container stops here and they
    /// resolve again.) From here on no old code serves or works on the
    /// migrated database; queued jobs wait for the new workers.
    Cutover {
        from: StackSpec,
        to: StackSpec,
        web: WebTier,
    },
}

/// The part of the web tier a switch step works on. A migrating switch
/// moves the frontends first (their nginx then knows only the old
/// backends), and the backends in maintenance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    #[default]
    All,
    Frontend,
    Upstream,
}

impl Tier {
    pub fn is_all(&self) -> bool {
        *self == Tier::All
    }
}

/// The door: the proxy that publishes the port and outlives releases
/// (`DE_DOOR`), and the command that makes it resolve its upstreams again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Door {
    pub service: String,
    pub reload: Vec<String>,
    /// The service it proxies to (`DE_FRONTEND_SERVICE`): its upstream
    /// servers that name it are pinned to that service's containers.
    #[serde(default = "frontend_service")]
    pub frontend: String,
}

fn frontend_service() -> String {
    "frontend".into()
}

/// The services a switch starts beside the old ones: `upstream` (backend,
/// websocket) first, then `frontend`, the service the door proxies to, whose
/// nginx resolves the upstreams once when it starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebTier {
    pub upstream: Vec<String>,
    pub frontend: String,
}

impl WebTier {
    pub fn all(&self) -> Vec<String> {
        let mut v = self.upstream.clone();
        v.push(self.frontend.clone());
        v
    }
}

impl Step {
    /// A short stable name for records and the progress line.
    pub fn name(&self) -> &'static str {
        match self {
            Step::Snapshot { .. } => "snapshot",
            Step::MaintenanceOn { .. } => "maintenance-on",
            Step::Drain { .. } => "drain",
            Step::Backup { .. } => "backup",
            Step::Down { .. } => "down",
            Step::Up { .. } => "up",
            Step::Replace { .. } => "replace",
            Step::WaitOneshots { .. } => "wait-oneshots",
            Step::VerifyImage { .. } => "verify-image",
            Step::Migrate { .. } => "migrate",
            Step::Restore { .. } => "restore",
            Step::HealthGate {
                gate: Gate::Sealed, ..
            } => "health-gate-sealed",
            Step::HealthGate {
                gate: Gate::Open, ..
            } => "health-gate",
            Step::MaintenanceOff { .. } => "maintenance-off",
            Step::StartBeside { .. } => "start-beside",
            Step::ProbeBeside { .. } => "probe-beside",
            Step::ShareAssets { .. } => "share-assets",
            Step::ReloadDoor { .. } => "reload-door",
            Step::RetireOld { .. } => "retire-old",
            Step::Cutover { .. } => "cutover",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Snapshot { sources, .. } => {
                let names: Vec<String> = sources.iter().map(|s| s.display().to_string()).collect();
                write!(f, "snapshot {}", names.join(", "))
            }
            Step::MaintenanceOn { .. } => write!(f, "maintenance mode on"),
            Step::Drain {
                timeout_secs,
                on_timeout,
                ..
            } => write!(
                f,
                "wait until every site is ready for migration (no queued jobs; at most {timeout_secs}s, then {})",
                match on_timeout {
                    OnDrainTimeout::Abort => "stop the deploy",
                    OnDrainTimeout::Proceed => "go on with jobs queued",
                }
            ),
            Step::Backup { .. } => write!(f, "back up the sites"),
            Step::Down { stack } => write!(
                f,
                "compose down {} with the file it was brought up with, and --remove-orphans",
                stack.version
            ),
            Step::Replace {
                from,
                to,
                web_moved: true,
            } => write!(
                f,
                "replace {}'s workers and scheduler by {}'s in one compose pass (the web tier already runs {}; orphans removed)",
                from.version, to.version, to.version
            ),
            Step::Replace { from, to, .. } => write!(
                f,
                "replace {} by {}: recreate every container, renew anonymous volumes, remove orphans",
                from.version, to.version
            ),
            Step::Up { stack } => write!(f, "compose up {}", stack.version),
            Step::WaitOneshots {
                services,
                timeout_secs,
                ..
            } => write!(
                f,
                "wait until {} exited 0 (at most {timeout_secs}s)",
                services.join(", ")
            ),
            Step::VerifyImage { stack } => write!(
                f,
                "verify every app container runs image {}",
                short_id(&stack.image_id)
            ),
            Step::Migrate { .. } => write!(f, "bench migrate"),
            Step::Restore { backups, .. } => write!(f, "restore {} backup(s)", backups.len()),
            Step::HealthGate {
                url,
                timeout_secs,
                gate: Gate::Sealed,
            } => write!(
                f,
                "health gate, still in maintenance: {url} answers (2xx or maintenance 503) within {timeout_secs}s"
            ),
            Step::HealthGate {
                url, timeout_secs, ..
            } => write!(f, "health gate: {url} answers 2xx within {timeout_secs}s"),
            Step::MaintenanceOff { .. } => write!(f, "maintenance mode off"),
            Step::StartBeside { stack, web, tier } => match tier {
                Tier::All => write!(
                    f,
                    "start {} beside the running release: {}; the new {} reaches the new {} by address (no traffic yet)",
                    stack.version,
                    web.all().join(", "),
                    web.frontend,
                    web.upstream.join(", ")
                ),
                Tier::Frontend => write!(
                    f,
                    "start {}'s {} beside the running one (its nginx resolves the running {} only; no traffic yet)",
                    stack.version,
                    web.frontend,
                    web.upstream.join(", ")
                ),
                Tier::Upstream => write!(
                    f,
                    "start {}'s {} beside the running ones (no frontend knows them yet; the new {} gets their addresses, read while the queues drain)",
                    stack.version,
                    web.upstream.join(", "),
                    web.frontend
                ),
            },
            Step::ProbeBeside {
                url_path,
                timeout_secs,
                web,
                tier,
                ..
            } => {
                let backend = web.upstream.first().map(String::as_str).unwrap_or("backend");
                let what = match tier {
                    Tier::All => format!("{backend} and {}", web.frontend),
                    Tier::Frontend => web.frontend.clone(),
                    Tier::Upstream => backend.to_string(),
                };
                write!(
                    f,
                    "ask the new {what} directly: {url_path} answers 2xx within {timeout_secs}s (else the new containers are removed and the old release goes on serving)"
                )
            }
            Step::ShareAssets { from, to, .. } => write!(
                f,
                "share hashed assets between {} and {} (pages of either find their bundles)",
                from.version, to.version
            ),
            Step::ReloadDoor { door, .. } => write!(
                f,
                "point the door (service {}) at the new {} by address (checked with `nginx -T`), then `{}`",
                door.service,
                door.frontend,
                door.reload.join(" ")
            ),
            Step::RetireOld {
                from,
                web,
                door,
                tier,
                ..
            } => match tier {
                Tier::Upstream => write!(
                    f,
                    "retire {}'s {}: they stop gracefully, the new {} forgets them",
                    from.version,
                    web.upstream.join(", "),
                    web.frontend
                ),
                Tier::Frontend => write!(
                    f,
                    "retire {}'s {}: {} no longer sends to it; it finishes in-flight requests and quits",
                    from.version, web.frontend, door.service
                ),
                Tier::All => write!(
                    f,
                    "retire {}: {} no longer sends to its {}, which finishes in-flight requests and quits; then its {} stop gracefully",
                    from.version,
                    door.service,
                    web.frontend,
                    web.upstream.join(", ")
                ),
            },
            Step::Cutover { from, to, web } => write!(
                f,
                "cut over: the new {} pinned to {}'s {} (reloaded while the queues drained); {}'s workers and scheduler stop at once (pinned: frozen with `docker pause`, SIGTERM after the window; its {} stop after the window, nothing routes to them)",
                web.frontend,
                to.version,
                web.upstream.join(", "),
                from.version,
                web.upstream.join(", ")
            ),
        }
    }
}

/// What has happened so far, as far as recovery cares. Each flag is set
/// *before* its step runs: a process that dies inside a step leaves the
/// pessimistic answer, and every recovery step is safe to repeat.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub maintenance_on: bool,
    pub stack_touched: bool,
    pub migrate_started: bool,
    /// Maintenance went off on the new release: users may have written to it.
    pub users_let_in: bool,
    /// New web containers were started beside the old ones (a switch).
    #[serde(default)]
    pub beside_started: bool,
    /// The door was reloaded with the new frontends: they may have served.
    #[serde(default)]
    pub traffic_moved: bool,
    /// The new frontends reach the new backends by address (their nginx
    /// upstreams pinned): nothing routes to an old backend any more once
    /// they reloaded, so the old ones can stop after the window.
    #[serde(default)]
    pub fronts_pinned: bool,
    /// The door was pointed at the new frontends by address: it sends
    /// nothing to the old ones any more, so they quit without a reload after.
    #[serde(default)]
    pub door_pinned: bool,
    /// The pinned new frontends were reloaded onto the new backends while
    /// the queues drained: the cut-over does not reload them again.
    #[serde(default)]
    pub fronts_moved: bool,
    /// Containers a cut-over told to stop (SIGTERM) that the engine may
    /// still list as running: a recovery waits for them to end before it
    /// brings the previous release back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ended: Vec<String>,
    /// The old workers and scheduler a pinned cut-over froze (`docker
    /// pause`): they get SIGTERM after the window, or are thawed by a
    /// recovery that brings the previous release back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paused: Vec<String>,
    pub backups: Vec<Backup>,
    /// Steps that finished, in order.
    pub done: Vec<String>,
}

/// One step of a recovery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum RecoveryStep {
    /// Take the failed stack down (by label: nothing of it is left).
    TakeDown {
        stack: StackSpec,
    },
    /// Bring the previous release back with its recorded compose file.
    BringUp {
        stack: StackSpec,
    },
    Restore {
        project: String,
        backups: Vec<Backup>,
    },
    MaintenanceOff {
        project: String,
    },
    /// Remove the web containers of `services` that run `image_id` (a
    /// switch's new release; the old one's keep serving).
    RemoveBeside {
        project: String,
        services: Vec<String>,
        image_id: String,
        version: String,
    },
    ReloadDoor {
        project: String,
        door: Door,
    },
}

impl fmt::Display for RecoveryStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecoveryStep::TakeDown { stack } => write!(f, "take {} down", stack.version),
            RecoveryStep::BringUp { stack } => write!(f, "bring {} back up", stack.version),
            RecoveryStep::Restore { .. } => write!(f, "restore the pre-deploy backup"),
            RecoveryStep::MaintenanceOff { .. } => write!(f, "maintenance mode off"),
            RecoveryStep::RemoveBeside { version, .. } => {
                write!(f, "remove the web containers of {version}")
            }
            RecoveryStep::ReloadDoor { door, .. } => {
                write!(f, "reload the door (service {})", door.service)
            }
        }
    }
}

/// How to get back to a consistent project from a given [`Progress`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recovery {
    pub steps: Vec<RecoveryStep>,
    /// The record's result when every step succeeds.
    pub outcome: Outcome,
    /// Said to the user when users could have written to the new release:
    /// the database is not restored, and what a restore would discard.
    pub data_note: Option<String>,
}

/// A step with what a failure there leads to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedStep {
    #[serde(flatten)]
    pub step: Step,
    pub on_failure: Recovery,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployPlan {
    pub id: String,
    pub action: Action,
    pub version: String,
    pub image_id: String,
    pub new: StackSpec,
    /// The stack recorded as up now, if any.
    pub previous: Option<StackSpec>,
    /// Whether that stack's backend runs (a stopped one has nothing to put in
    /// maintenance or back up).
    pub previous_running: bool,
    /// The compose files the snapshot was copied from, in `-f` order.
    #[serde(alias = "compose_source", deserialize_with = "one_or_many")]
    pub compose_sources: Vec<PathBuf>,
    pub sites: Sites,
    pub backend_service: String,
    /// Whether this deployment migrates, and why (`DE_MIGRATE`, the schema
    /// fingerprints).
    #[serde(default)]
    pub migrate_reason: String,
    /// The door in front of the web tier, when there is one (`DE_DOOR`).
    #[serde(default)]
    pub door: Option<Door>,
    pub steps: Vec<PlannedStep>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_from_before_file_lists_still_read() {
        let t: Target = serde_json::from_str(
            r#"{"project":"p","file":"/s/1.yaml","project_dir":"/p","empty_env_file":"/s/e"}"#,
        )
        .unwrap();
        assert_eq!(t.files, [PathBuf::from("/s/1.yaml")]);
        let s: Step = serde_json::from_str(
            r#"{"step":"snapshot","source":"/p/compose.yaml","to":"/s/1.yaml"}"#,
        )
        .unwrap();
        assert_eq!(
            s,
            Step::Snapshot {
                sources: vec!["/p/compose.yaml".into()],
                to: vec!["/s/1.yaml".into()]
            }
        );
        // And what is written now reads back the same.
        let again: Target = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
        assert_eq!(again, t);
    }
}
