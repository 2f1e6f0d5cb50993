//! The data of a deploy or rollback on a Docker Swarm (`DE_TARGET=swarm`) as
//! it is planned and recorded: the stack as de-build creates its services,
//! the steps with what recovering from each means, the progress, and the task
//! state per node. Computing a plan is `plan::swarm`'s work; this is only the
//! shape, kept whole in the deployment record so `de-build recover` can
//! finish the job of a process that died.

use crate::record::deploy::{Action, Gate, Sites};
use crate::record::state::{Backup, Outcome};
use crate::util::short_id;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

/// What a service is for, which decides when and how it is updated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Serves users: updated first, one task at a time, start-first.
    Web,
    /// Background workers, scheduler, anything else long-running: after the web tier.
    Worker,
    /// A one-off service of the file (`deploy.mode: replicated-job`), run to
    /// completion before the services are updated.
    Job,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    Volume,
    Bind,
    Tmpfs,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountDef {
    pub kind: MountKind,
    /// The compose volume key (kind volume), a host path (bind), empty (tmpfs).
    pub source: String,
    pub target: String,
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortDef {
    pub target: u16,
    pub published: Option<u16>,
    pub protocol: String,
    /// `host` or `ingress`.
    pub mode: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModeDef {
    Replicated(u64),
    Global,
    ReplicatedJob,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateDef {
    /// `start-first` or `stop-first`; unset: start-first for the web tier.
    pub order: Option<String>,
    pub parallelism: Option<i64>,
    pub delay_ns: Option<i64>,
    pub monitor_ns: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartDef {
    pub condition: Option<String>,
    pub delay_ns: Option<i64>,
    pub max_attempts: Option<i64>,
    pub window_ns: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthDef {
    /// As the engine wants it: `["CMD", …]`, `["CMD-SHELL", "…"]` or `["NONE"]`.
    pub test: Vec<String>,
    pub interval_ns: Option<i64>,
    pub timeout_ns: Option<i64>,
    pub retries: Option<i64>,
    pub start_period_ns: Option<i64>,
}

/// One service of the compose file, as the swarm will run it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceDef {
    /// The compose service name (the engine's is `<namespace>_<name>`).
    pub name: String,
    pub role: Role,
    pub image: String,
    pub entrypoint: Option<Vec<String>>,
    pub command: Option<Vec<String>>,
    pub env: BTreeMap<String, String>,
    /// Container labels (`labels:`).
    pub labels: BTreeMap<String, String>,
    /// Service labels (`deploy.labels:`).
    pub service_labels: BTreeMap<String, String>,
    pub mounts: Vec<MountDef>,
    /// Compose network keys; empty: the stack's `default` network.
    pub networks: Vec<String>,
    pub ports: Vec<PortDef>,
    pub mode: ModeDef,
    /// `vip` or `dnsrr`.
    pub endpoint_mode: Option<String>,
    pub update: UpdateDef,
    pub restart: Option<RestartDef>,
    pub healthcheck: Option<HealthDef>,
    pub constraints: Vec<String>,
    pub init: Option<bool>,
    pub stop_grace_ns: Option<i64>,
    pub user: Option<String>,
    pub working_dir: Option<String>,
    pub hostname: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeDef {
    /// The engine's name: `<namespace>_<key>` unless external or named.
    pub name: String,
    pub driver: Option<String>,
    pub driver_opts: BTreeMap<String, String>,
    pub external: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkDef {
    pub name: String,
    pub driver: Option<String>,
    pub driver_opts: BTreeMap<String, String>,
    pub attachable: bool,
    pub external: bool,
}

/// The whole stack of one release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackDef {
    pub services: Vec<ServiceDef>,
    pub volumes: BTreeMap<String, VolumeDef>,
    pub networks: BTreeMap<String, NetworkDef>,
}

impl StackDef {
    pub fn service(&self, name: &str) -> Option<&ServiceDef> {
        self.services.iter().find(|s| s.name == name)
    }
}

/// A release as a swarm stack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwarmStack {
    pub version: String,
    /// `registry/repo@sha256:…` as the nodes pull it: every node runs these bytes.
    pub image: String,
    pub image_id: String,
    /// The stack namespace (`COMPOSE_PROJECT_NAME`): services are `<namespace>_<service>`.
    pub namespace: String,
    /// The resolved compose file as deployed (under `.de-build/compose/`).
    pub file: PathBuf,
    pub stack: StackDef,
}

impl SwarmStack {
    /// The engine's name of a service of the file.
    pub fn engine_name(&self, service: &str) -> String {
        format!("{}_{service}", self.namespace)
    }
}

/// The release the swarm runs before the deployment, as the engine says
/// (the backend service's image and labels): a deployment made from another
/// machine is known here too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousRelease {
    /// `de-build.version` of the backend service (or `unknown`).
    pub version: String,
    /// The backend service's image: bench jobs of the old code run it.
    pub image: String,
    /// `de-build.deployment` of the backend service.
    pub deployment: Option<String>,
}

/// Which services an update step covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Web,
    Workers,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum SwarmStep {
    /// Write the resolved compose file the services are made from.
    Snapshot {
        to: PathBuf,
        text: String,
    },
    /// The bench steps run as one-off jobs of `image` (the release whose
    /// code serves at that moment) with the backend service's mounts,
    /// networks and environment: the manager's API cannot exec into a
    /// container on another node, a job runs wherever the scheduler puts it.
    MaintenanceOn {
        image: String,
    },
    Drain {
        image: String,
        timeout_secs: u64,
    },
    Backup {
        image: String,
    },
    /// Create the stack's overlay networks that do not exist yet.
    Networks {
        names: Vec<String>,
    },
    /// The file's own one-off services (e.g. create-site), new image.
    Jobs {
        services: Vec<String>,
    },
    /// `bench migrate` as a one-off job of the new image: runs once.
    Migrate {
        image: String,
    },
    Restore {
        image: String,
        backups: Vec<Backup>,
    },
    /// Create or update these services (engine names) and wait until they
    /// converge; the web tier rolls one task at a time, start-first.
    Update {
        tier: Tier,
        services: Vec<String>,
    },
    /// Remove services of the namespace that the file no longer has.
    RemoveOrphans {
        services: Vec<String>,
    },
    /// Every task of the stack runs the release's digest; the tasks per node
    /// are recorded.
    Verify,
    HealthGate {
        url: String,
        timeout_secs: u64,
        gate: Gate,
    },
    MaintenanceOff {
        image: String,
    },
}

impl SwarmStep {
    pub fn name(&self) -> &'static str {
        match self {
            SwarmStep::Snapshot { .. } => "snapshot",
            SwarmStep::MaintenanceOn { .. } => "maintenance-on",
            SwarmStep::Drain { .. } => "drain",
            SwarmStep::Backup { .. } => "backup",
            SwarmStep::Networks { .. } => "networks",
            SwarmStep::Jobs { .. } => "jobs",
            SwarmStep::Migrate { .. } => "migrate",
            SwarmStep::Restore { .. } => "restore",
            SwarmStep::Update {
                tier: Tier::Web, ..
            } => "update-web",
            SwarmStep::Update {
                tier: Tier::Workers,
                ..
            } => "update-workers",
            SwarmStep::RemoveOrphans { .. } => "remove-orphans",
            SwarmStep::Verify => "verify",
            SwarmStep::HealthGate {
                gate: Gate::Sealed, ..
            } => "health-gate-sealed",
            SwarmStep::HealthGate {
                gate: Gate::Open, ..
            } => "health-gate",
            SwarmStep::MaintenanceOff { .. } => "maintenance-off",
        }
    }
}

/// The release an image reference belongs to, for messages.
fn img(image: &str) -> String {
    match image.split_once('@') {
        Some((_, d)) => format!("image {}", short_id(d)),
        None => image.to_string(),
    }
}

impl fmt::Display for SwarmStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SwarmStep::Snapshot { to, .. } => {
                write!(f, "write the resolved compose file {}", to.display())
            }
            SwarmStep::MaintenanceOn { image } => {
                write!(f, "maintenance mode on (one-off job, {})", img(image))
            }
            SwarmStep::Drain {
                timeout_secs,
                image,
            } => write!(
                f,
                "wait until every site is ready for migration (one-off jobs, {}; at most {timeout_secs}s)",
                img(image)
            ),
            SwarmStep::Backup { image } => {
                write!(f, "back up the sites (one-off job, {})", img(image))
            }
            SwarmStep::Networks { names } => {
                write!(f, "create the overlay networks {}", names.join(", "))
            }
            SwarmStep::Jobs { services } => write!(
                f,
                "run the file's one-off services to completion: {}",
                services.join(", ")
            ),
            SwarmStep::Migrate { image } => write!(
                f,
                "bench migrate as a one-off job of the new release ({}), run once",
                img(image)
            ),
            SwarmStep::Restore { backups, image } => write!(
                f,
                "restore {} backup(s) (one-off job, {})",
                backups.len(),
                img(image)
            ),
            SwarmStep::Update {
                tier: Tier::Web,
                services,
            } => write!(
                f,
                "rolling update of the web tier {}: one task at a time, start-first, health-checked",
                services.join(", ")
            ),
            SwarmStep::Update {
                tier: Tier::Workers,
                services,
            } => write!(f, "update {}", services.join(", ")),
            SwarmStep::RemoveOrphans { services } => write!(
                f,
                "remove services the file no longer has: {}",
                services.join(", ")
            ),
            SwarmStep::Verify => write!(
                f,
                "verify every task runs the release's digest; record the tasks per node"
            ),
            SwarmStep::HealthGate {
                url,
                timeout_secs,
                gate: Gate::Sealed,
            } => write!(
                f,
                "health gate, still in maintenance: {url} answers (2xx or maintenance 503) within {timeout_secs}s"
            ),
            SwarmStep::HealthGate {
                url, timeout_secs, ..
            } => write!(f, "health gate: {url} answers 2xx within {timeout_secs}s"),
            SwarmStep::MaintenanceOff { image } => {
                write!(f, "maintenance mode off (one-off job, {})", img(image))
            }
        }
    }
}

/// What has happened so far, as far as recovery cares; each flag is set
/// before its step runs (a process that dies inside a step leaves the
/// pessimistic answer; every recovery step is safe to repeat).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwarmProgress {
    pub maintenance_on: bool,
    /// Engine names of services that may have been changed, in order.
    pub touched: Vec<String>,
    pub migrate_started: bool,
    pub users_let_in: bool,
    pub backups: Vec<Backup>,
    pub done: Vec<String>,
}

/// Put one service back as it was before the deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revert {
    pub service: String,
    /// The engine's spec of the service before the deployment (JSON of a
    /// `ServiceSpec`); none: the deployment created it, so it is removed.
    pub previous: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum SwarmRecoveryStep {
    /// Every touched service back to its recorded previous spec (the
    /// engine's `rollback=previous` is a toggle, not safe to repeat; the
    /// recorded spec is), created ones removed; waits until they converge.
    RevertServices {
        services: Vec<Revert>,
    },
    Restore {
        image: String,
        backups: Vec<Backup>,
    },
    MaintenanceOff {
        image: String,
    },
}

impl fmt::Display for SwarmRecoveryStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SwarmRecoveryStep::RevertServices { services } => {
                let back: Vec<&str> = services
                    .iter()
                    .filter(|r| r.previous.is_some())
                    .map(|r| r.service.as_str())
                    .collect();
                let gone: Vec<&str> = services
                    .iter()
                    .filter(|r| r.previous.is_none())
                    .map(|r| r.service.as_str())
                    .collect();
                let mut parts = Vec::new();
                if !back.is_empty() {
                    parts.push(format!(
                        "put {} back to their previous spec",
                        back.join(", ")
                    ));
                }
                if !gone.is_empty() {
                    parts.push(format!("remove {}", gone.join(", ")));
                }
                write!(f, "{}", parts.join(" and "))
            }
            SwarmRecoveryStep::Restore { .. } => write!(f, "restore the pre-deploy backup"),
            SwarmRecoveryStep::MaintenanceOff { .. } => write!(f, "maintenance mode off"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwarmRecovery {
    pub steps: Vec<SwarmRecoveryStep>,
    pub outcome: Outcome,
    pub data_note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedSwarmStep {
    #[serde(flatten)]
    pub step: SwarmStep,
    pub on_failure: SwarmRecovery,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwarmPlan {
    pub id: String,
    pub action: Action,
    pub version: String,
    pub image_id: String,
    pub new: SwarmStack,
    pub previous: Option<PreviousRelease>,
    /// The engine's specs of the namespace's services before the deployment.
    pub previous_specs: BTreeMap<String, serde_json::Value>,
    /// The previous release's backend has a running task.
    pub previous_running: bool,
    /// The compose files the stack was resolved from (in `-f` order), and
    /// the non-secret variables compose resolved them with.
    pub compose_sources: Vec<PathBuf>,
    pub env: BTreeMap<String, String>,
    pub sites: Sites,
    pub backend_service: String,
    pub migrate: bool,
    /// Bound on every wait for the swarm (a service converging, a job).
    pub timeout_secs: u64,
    pub steps: Vec<PlannedSwarmStep>,
}

/// One task as the manager reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskState {
    pub service: String,
    pub slot: Option<i64>,
    pub node: String,
    /// `ready`, `down`, `unknown`, … as the manager sees the node.
    pub node_state: String,
    pub state: String,
    pub desired: String,
    pub image: String,
    pub error: Option<String>,
}

impl TaskState {
    pub fn describe(&self) -> String {
        let slot = self.slot.map(|s| format!(".{s}")).unwrap_or_default();
        let node = if self.node_state == "ready" || self.node_state.is_empty() {
            self.node.clone()
        } else {
            format!("{} ({})", self.node, self.node_state)
        };
        let err = self
            .error
            .as_deref()
            .filter(|e| !e.is_empty())
            .map(|e| format!(": {e}"))
            .unwrap_or_default();
        format!(
            "{}{slot} on {node} {} ({}){err}",
            self.service,
            self.state,
            img(&self.image)
        )
    }
}

/// One bench or file job that ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    pub step: String,
    pub service: String,
    pub command: Vec<String>,
    /// How many tasks the job had (1: it ran once).
    pub tasks: usize,
    pub node: String,
    pub exit_code: Option<i64>,
    /// The final state of its task: `complete` is the only success (a task
    /// its node's engine stopped may say `shutdown` with exit code 0).
    /// Empty in records written before it was kept.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub state: String,
    /// Why the swarm says its task ended so, when it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl JobRecord {
    /// The job ran to completion and its command exited 0.
    pub fn completed(&self) -> bool {
        self.exit_code == Some(0) && (self.state.is_empty() || self.state == "complete")
    }
}

/// The swarm part of a deployment record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwarmRun {
    pub plan: SwarmPlan,
    pub progress: SwarmProgress,
    #[serde(default)]
    pub jobs: Vec<JobRecord>,
    /// The tasks per node at the end of the deployment (or its recovery).
    #[serde(default)]
    pub tasks: Vec<TaskState>,
}

/// A swarm stack's deployment records as every operator sees them: the
/// swarm's copies (the truth: any machine that reaches the manager reads
/// them) joined with this machine's files the swarm does not have (written
/// before records were kept on the swarm, or while it could not take them).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KnownRecords {
    /// Oldest first (by id, which starts with the UTC start time).
    pub all: Vec<crate::record::state::Deployment>,
    /// Ids of records only this machine has: uploaded by the next deploy,
    /// rollback or recover from here (under the swarm's lock).
    pub local_only: Vec<String>,
    /// Ids whose local file differs from the swarm's copy; the swarm's is used.
    pub differs: Vec<String>,
}

/// Join the swarm's records with this machine's: the swarm's copy wins
/// wherever both exist. Pure.
pub fn merge(
    swarm: Vec<crate::record::state::Deployment>,
    local: Vec<crate::record::state::Deployment>,
) -> KnownRecords {
    let mut out = KnownRecords::default();
    for l in local {
        match swarm.iter().find(|s| s.id == l.id) {
            Some(s) if *s != l => out.differs.push(l.id.clone()),
            Some(_) => {}
            None => {
                out.local_only.push(l.id.clone());
                out.all.push(l);
            }
        }
    }
    out.all.extend(swarm);
    out.all.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::state::sample;

    #[test]
    fn the_swarms_copy_wins_and_records_only_here_are_kept_and_named() {
        let old = sample("20250101T000000.000Z-1", "1.0.0", Outcome::Succeeded);
        let mut here = sample("20250102T000000.000Z-2", "1.1.0", Outcome::Running);
        let mut there = here.clone();
        there.result = Outcome::Recovered;
        let same = sample("20250103T000000.000Z-3", "1.0.0", Outcome::Succeeded);
        let theirs = sample("20250104T000000.000Z-4", "1.2.0", Outcome::Succeeded);
        here.host = "b".into();
        let k = merge(
            vec![theirs.clone(), there.clone(), same.clone()],
            vec![here, old.clone(), same.clone()],
        );
        assert_eq!(k.all, vec![old.clone(), there, same, theirs]);
        assert_eq!(k.local_only, vec![old.id]);
        assert_eq!(k.differs, vec!["20250102T000000.000Z-2".to_string()]);
        assert_eq!(merge(vec![], vec![]), KnownRecords::default());
    }
}
