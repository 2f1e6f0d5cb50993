//! Docker Swarm through the manager's Engine API (bollard): services made
//! from the stack's definitions, one-off jobs for bench, convergence, tasks
//! per node, and the deploy lock kept on the swarm itself.
//!
//! Service specs are written as the Engine API's JSON (what the docker CLI
//! sends) and read into bollard's types: one place that says what a stack
//! service is. Names and labels follow `docker stack deploy`
//! (`<namespace>_<service>`, `com.docker.stack.namespace`), so `docker stack
//! ps` and `docker stack services` show de-build's stacks too.

use crate::adapters::engine::{describe, engine_error, Engine};
use crate::error::{Error, Result};
use crate::record::state::Deployment;
use crate::record::swarm::{
    JobRecord, ModeDef, MountKind, Role, ServiceDef, SwarmStack, TaskState,
};
use crate::secret::Secret;
use bollard::auth::DockerCredentials;
use bollard::models::{ConfigSpec, NetworkCreateRequest, SecretSpec, ServiceSpec};
use bollard::query_parameters as q;
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::{Duration, Instant};

pub const NAMESPACE_LABEL: &str = "com.docker.stack.namespace";

fn is_status(e: &bollard::errors::Error, code: u16) -> bool {
    matches!(e, bollard::errors::Error::DockerResponseServerError { status_code, .. } if *status_code == code)
}

/// A manager that did not answer (its engine restarting), or answered that
/// it has no swarm to speak for yet (no leader, not yet a manager again):
/// worth waiting for within a bounded wait, never a verdict on the request.
pub fn transient(e: &Error) -> bool {
    match e {
        Error::Engine {
            unreachable: true, ..
        } => true,
        Error::Engine { message, .. } => {
            let m = message.to_ascii_lowercase();
            m.contains("(http 503)")
                || m.contains("does not have a leader")
                || m.contains("not a swarm manager")
        }
        _ => false,
    }
}

/// Says once that the manager stopped answering and once that it answers
/// again, for a wait that outlasts it.
#[derive(Default)]
struct Outage(Option<Instant>);

impl Outage {
    fn down(&mut self, e: &Error, timeout: Duration, say: &mut (dyn FnMut(&str) + Send)) {
        if self.0.is_none() {
            self.0 = Some(Instant::now());
            say(&format!(
                "the swarm manager did not answer ({e}): waiting for it, {}s at most (DE_SWARM_TIMEOUT)",
                timeout.as_secs()
            ));
        }
    }

    fn up(&mut self, say: &mut (dyn FnMut(&str) + Send)) {
        if let Some(t) = self.0.take() {
            say(&format!(
                "the swarm manager answers again after {:.0}s",
                t.elapsed().as_secs_f64()
            ));
        }
    }
}

/// The manager's view of one service.
#[derive(Debug, Clone)]
pub struct ServiceView {
    pub id: String,
    pub name: String,
    pub version: u64,
    pub spec: ServiceSpec,
    pub updated_at: Option<chrono::DateTime<chrono::Utc>>,
    /// `updating`, `paused`, `completed`, `rollback_*`, with when it started.
    pub update_state: Option<(String, Option<chrono::DateTime<chrono::Utc>>, String)>,
}

impl ServiceView {
    pub fn image(&self) -> String {
        self.spec
            .task_template
            .as_ref()
            .and_then(|t| t.container_spec.as_ref())
            .and_then(|c| c.image.clone())
            .unwrap_or_default()
    }

    pub fn label(&self, k: &str) -> Option<String> {
        self.spec.labels.as_ref().and_then(|l| l.get(k).cloned())
    }

    pub fn replicas(&self) -> Option<u64> {
        let mode = self.spec.mode.as_ref()?;
        mode.replicated
            .as_ref()
            .and_then(|r| r.replicas)
            .map(|r| r.max(0) as u64)
    }

    pub fn is_global(&self) -> bool {
        self.spec.mode.as_ref().is_some_and(|m| m.global.is_some())
    }

    pub fn is_job(&self) -> bool {
        self.spec
            .mode
            .as_ref()
            .is_some_and(|m| m.replicated_job.is_some() || m.global_job.is_some())
    }
}

/// The deploy lock: a swarm config object per stack. Creating it is atomic
/// in the swarm's store (a second create of the name fails), so two
/// operators on two machines cannot both hold it; the holder refreshes a
/// label every few seconds, and the manager's own clock tells its age.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum SwarmLock {
    Free,
    Held {
        id: String,
        holder: Value,
        age_secs: i64,
    },
    /// No heartbeat for longer than the staleness limit: its process is gone
    /// (or cut off from the manager).
    Stale {
        id: String,
        holder: Value,
        age_secs: i64,
    },
}

impl SwarmLock {
    /// The refusal (exit 5) for a lock another operator holds.
    pub fn refusal(&self) -> Error {
        Error::Locked {
            message: format!("another deployment holds the lock: {}", self.describe()),
            hint: "wait for it to finish; nothing was changed".into(),
        }
    }

    pub fn describe(&self) -> String {
        let who = |h: &Value| {
            format!(
                "{}@{} (pid {}, `{}` of {}, deployment {}, since {})",
                h["user"].as_str().unwrap_or("?"),
                h["host"].as_str().unwrap_or("?"),
                h["pid"],
                h["command"].as_str().unwrap_or("?"),
                h["version"].as_str().unwrap_or("?"),
                h["deployment"].as_str().unwrap_or("?"),
                h["since"].as_str().unwrap_or("?")
            )
        };
        match self {
            SwarmLock::Free => "free".into(),
            SwarmLock::Held {
                holder, age_secs, ..
            } => format!(
                "held on the swarm by {} (last heartbeat {age_secs}s ago)",
                who(holder)
            ),
            SwarmLock::Stale {
                holder, age_secs, ..
            } => format!(
                "left on the swarm by {}: no heartbeat for {age_secs}s, its process is gone",
                who(holder)
            ),
        }
    }
}

/// A one-off job to run.
#[derive(Debug, Clone)]
pub struct JobRun {
    pub step: String,
    pub name: String,
    pub spec: Value,
    pub command: Vec<String>,
}

#[derive(Clone)]
pub struct Swarm {
    pub engine: Engine,
    pub creds: Option<DockerCredentials>,
}

impl Swarm {
    pub fn new(engine: Engine, creds: Option<DockerCredentials>) -> Swarm {
        Swarm { engine, creds }
    }

    /// The engine must be a swarm manager: only managers answer for the swarm.
    pub async fn check_manager(&self) -> Result<()> {
        self.engine.docker.inspect_swarm().await.map(|_| ()).map_err(|e| Error::Refused {
            message: format!(
                "the engine at {} is not a swarm manager: {}",
                std::env::var("DOCKER_HOST").unwrap_or_else(|_| "the local socket".into()),
                describe(&e)
            ),
            hint: Some("DE_TARGET=swarm talks to a manager only: set DOCKER_HOST to a manager's engine (e.g. ssh://admin@manager1 or tcp://manager1:2376 with TLS)".into()),
        })
    }

    /// Does the registry hold `image` as the manager sees it (it resolves
    /// the digest the same way the nodes will)?
    pub async fn registry_has(&self, image: &str) -> Result<()> {
        self.engine
            .docker
            .inspect_registry_image(image, self.creds.clone())
            .await
            .map(|_| ())
            .map_err(|e| Error::Failed {
                message: format!(
                    "the swarm manager cannot find {image} in its registry: {}",
                    describe(&e)
                ),
                hint: Some("push the release first (`de-build push VERSION`); the nodes must reach DE_SWARM_REGISTRY (or DE_REGISTRY)".into()),
            })
    }

    async fn node_names(&self) -> Result<HashMap<String, (String, String)>> {
        let nodes = self
            .engine
            .docker
            .list_nodes(None::<q::ListNodesOptions>)
            .await
            .map_err(|e| engine_error("list the swarm's nodes", &e))?;
        Ok(nodes
            .into_iter()
            .map(|n| {
                let host = n.description.and_then(|d| d.hostname).unwrap_or_default();
                let state = n
                    .status
                    .and_then(|s| s.state)
                    .map(|s| enum_str(&s))
                    .unwrap_or_default();
                (n.id.unwrap_or_default(), (host, state))
            })
            .collect())
    }

    fn view(s: bollard::models::Service) -> ServiceView {
        let spec = s.spec.unwrap_or_default();
        ServiceView {
            id: s.id.unwrap_or_default(),
            name: spec.name.clone().unwrap_or_default(),
            version: s.version.and_then(|v| v.index).unwrap_or(0),
            spec,
            updated_at: s.updated_at,
            update_state: s.update_status.map(|u| {
                (
                    u.state.map(|s| enum_str(&s)).unwrap_or_default(),
                    u.started_at,
                    u.message.unwrap_or_default(),
                )
            }),
        }
    }

    pub async fn service(&self, name: &str) -> Result<Option<ServiceView>> {
        match self
            .engine
            .docker
            .inspect_service(name, None::<q::InspectServiceOptions>)
            .await
        {
            Ok(s) => Ok(Some(Self::view(s))),
            Err(e) if is_status(&e, 404) => Ok(None),
            Err(e) => Err(engine_error(format!("inspect service {name}"), &e)),
        }
    }

    /// The namespace's services (de-build's own bench jobs excluded).
    pub async fn services(&self, namespace: &str) -> Result<Vec<ServiceView>> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![format!("{NAMESPACE_LABEL}={namespace}")],
        )]);
        let list = self
            .engine
            .docker
            .list_services(Some(q::ListServicesOptions {
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(|e| engine_error(format!("list the services of stack {namespace}"), &e))?;
        let mut out: Vec<ServiceView> = list
            .into_iter()
            .map(Self::view)
            .filter(|v| v.label("de-build.job").is_none())
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Remove the one-off jobs a deployment left (its process died while
    /// one ran): their tasks stop with them; then the stdin secrets of its
    /// jobs. Returns what was removed.
    pub async fn remove_jobs(&self, deployment: &str) -> Result<Vec<String>> {
        let mut out = self.remove_job_services(deployment).await?;
        out.extend(self.remove_job_secrets(deployment).await?);
        Ok(out)
    }

    async fn remove_job_services(&self, deployment: &str) -> Result<Vec<String>> {
        let filters = job_label(deployment);
        let list = self
            .engine
            .docker
            .list_services(Some(q::ListServicesOptions {
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(|e| engine_error("list the deployment's jobs", &e))?;
        let mut out = Vec::new();
        for s in list.into_iter().map(Self::view) {
            self.remove(&s.id).await?;
            out.push(s.name);
        }
        Ok(out)
    }

    async fn remove_job_secrets(&self, deployment: &str) -> Result<Vec<String>> {
        let filters = job_label(deployment);
        let list = self
            .engine
            .docker
            .list_secrets(Some(q::ListSecretsOptions {
                filters: Some(filters),
            }))
            .await
            .map_err(|e| engine_error("list the deployment's job secrets", &e))?;
        let mut out = Vec::new();
        for sec in list {
            let id = sec.id.unwrap_or_default();
            self.remove_secret(&id).await?;
            let name = sec.spec.and_then(|s| s.name).unwrap_or(id);
            out.push(format!("secret {name}"));
        }
        Ok(out)
    }

    /// A swarm secret holding `value` and a newline (what a prompt reads),
    /// labelled with the job's deployment so a recovery finds it if this
    /// process dies before removing it. The value leaves its type here, into
    /// the request to the manager (which keeps secrets encrypted in its
    /// store and hands them only to the tasks that name them).
    async fn create_stdin_secret(
        &self,
        name: &str,
        labels: HashMap<String, String>,
        value: &Secret,
    ) -> Result<String> {
        use base64::Engine as _;
        let mut line = zeroize::Zeroizing::new(value.expose().to_string());
        line.push('\n');
        let spec = SecretSpec {
            name: Some(name.to_string()),
            labels: Some(labels),
            data: Some(base64::engine::general_purpose::STANDARD.encode(line.as_bytes())),
            ..Default::default()
        };
        self.engine
            .docker
            .create_secret(spec)
            .await
            .map(|r| r.id)
            .map_err(|e| engine_error(format!("create the job secret {name}"), &e))
    }

    /// Remove a secret; the manager refuses while a service still names it,
    /// which a just-removed job may for a moment: asked again, bounded.
    pub async fn remove_secret(&self, id: &str) -> Result<()> {
        let started = Instant::now();
        loop {
            match self.engine.docker.delete_secret(id).await {
                Ok(()) => return Ok(()),
                Err(e) if is_status(&e, 404) => return Ok(()),
                Err(e)
                    if started.elapsed() < Duration::from_secs(10)
                        && describe(&e).contains("in use") =>
                {
                    tokio::time::sleep(Duration::from_millis(300)).await
                }
                Err(e) => return Err(engine_error(format!("remove the job secret {id}"), &e)),
            }
        }
    }

    /// Tasks of these services (by ID), with node names and states.
    pub async fn tasks(&self, services: &[ServiceView]) -> Result<Vec<TaskState>> {
        if services.is_empty() {
            return Ok(Vec::new());
        }
        let names: HashMap<String, String> = services
            .iter()
            .map(|s| (s.id.clone(), s.name.clone()))
            .collect();
        let filters = HashMap::from([(
            "service".to_string(),
            services.iter().map(|s| s.id.clone()).collect::<Vec<_>>(),
        )]);
        let tasks = self
            .engine
            .docker
            .list_tasks(Some(q::ListTasksOptions {
                filters: Some(filters),
            }))
            .await
            .map_err(|e| engine_error("list tasks", &e))?;
        let nodes = self.node_names().await?;
        let mut out: Vec<(Option<chrono::DateTime<chrono::Utc>>, TaskState)> = tasks
            .into_iter()
            .map(|t| {
                let (node, node_state) = t
                    .node_id
                    .as_ref()
                    .and_then(|n| nodes.get(n).cloned())
                    .unwrap_or_else(|| ("(unassigned)".into(), String::new()));
                let status = t.status.clone().unwrap_or_default();
                let err = status.err.clone().filter(|e| !e.is_empty()).or_else(|| {
                    // A failed task's message says why when `err` does not.
                    let st = status.state.as_ref().map(enum_str).unwrap_or_default();
                    (st == "failed" || st == "rejected")
                        .then(|| status.message.clone())
                        .flatten()
                });
                (
                    t.created_at,
                    TaskState {
                        service: t
                            .service_id
                            .as_ref()
                            .and_then(|s| names.get(s).cloned())
                            .unwrap_or_default(),
                        slot: t.slot,
                        node,
                        node_state,
                        state: status.state.as_ref().map(enum_str).unwrap_or_default(),
                        desired: t.desired_state.as_ref().map(enum_str).unwrap_or_default(),
                        image: t
                            .spec
                            .and_then(|s| s.container_spec)
                            .and_then(|c| c.image)
                            .unwrap_or_default(),
                        error: err,
                    },
                )
            })
            .collect();
        out.sort_by(|a, b| {
            (&a.1.service, a.1.slot, &a.1.node, a.0).cmp(&(&b.1.service, b.1.slot, &b.1.node, b.0))
        });
        Ok(out.into_iter().map(|(_, t)| t).collect())
    }

    /// Create the overlay networks of the stack that do not exist yet.
    pub async fn ensure_network(
        &self,
        namespace: &str,
        name: &str,
        opts: &HashMap<String, String>,
    ) -> Result<bool> {
        let filters = HashMap::from([("name".to_string(), vec![name.to_string()])]);
        let list = self
            .engine
            .docker
            .list_networks(Some(q::ListNetworksOptions {
                filters: Some(filters),
            }))
            .await
            .map_err(|e| engine_error("list networks", &e))?;
        // The name filter matches substrings.
        if list.iter().any(|n| n.name.as_deref() == Some(name)) {
            return Ok(false);
        }
        self.engine
            .docker
            .create_network(NetworkCreateRequest {
                name: name.to_string(),
                driver: Some("overlay".into()),
                attachable: Some(true),
                options: Some(opts.clone()),
                labels: Some(HashMap::from([(
                    NAMESPACE_LABEL.to_string(),
                    namespace.to_string(),
                )])),
                ..Default::default()
            })
            .await
            .map_err(|e| engine_error(format!("create network {name}"), &e))?;
        Ok(true)
    }

    /// Create the service, or update it to `spec` (at the version read just
    /// before: a concurrent change fails instead of being overwritten).
    pub async fn apply(&self, spec: ServiceSpec) -> Result<()> {
        let name = spec.name.clone().unwrap_or_default();
        let started = Instant::now();
        let res = match self.service(&name).await? {
            None => self
                .engine
                .docker
                .create_service(spec, self.creds.clone())
                .await
                .map(|_| ()),
            Some(cur) => self
                .engine
                .docker
                .update_service(
                    &name,
                    spec,
                    q::UpdateServiceOptions {
                        version: cur.version as i32,
                        ..Default::default()
                    },
                    self.creds.clone(),
                )
                .await
                .map(|_| ()),
        };
        crate::ui::logfile::action(
            &format!("swarm apply service {name}"),
            res.is_ok(),
            started.elapsed(),
            &res.as_ref().err().map(describe).unwrap_or_default(),
        );
        res.map_err(|e| engine_error(format!("create or update service {name}"), &e))
    }

    pub async fn remove(&self, name: &str) -> Result<()> {
        match self.engine.docker.delete_service(name).await {
            Ok(()) => Ok(()),
            Err(e) if is_status(&e, 404) => Ok(()),
            Err(e) => Err(engine_error(format!("remove service {name}"), &e)),
        }
    }

    /// Wait until `name` runs its spec everywhere it should, or fail with
    /// what the swarm says (a paused update, tasks that keep failing, and on
    /// which node), or at `timeout`. `expect_update`: the spec changed, so
    /// an update status newer than the change must show up first (until it
    /// does the old tasks still look converged).
    pub async fn wait_converged(
        &self,
        name: &str,
        since: chrono::DateTime<chrono::Utc>,
        timeout: Duration,
        on_note: &mut (dyn FnMut(&str) + Send),
    ) -> Result<Vec<TaskState>> {
        let started = Instant::now();
        let mut last_note = String::new();
        let mut stable = 0;
        let mut outage = Outage::default();
        loop {
            let view = async {
                let svc = self.service(name).await?;
                let tasks = match &svc {
                    Some(s) => self.tasks(std::slice::from_ref(s)).await?,
                    None => Vec::new(),
                };
                Ok::<_, Error>((svc, tasks))
            };
            let (svc, tasks) = match view.await {
                Ok(v) => {
                    outage.up(on_note);
                    v
                }
                // A manager restarting: the swarm goes on without it.
                Err(e) if transient(&e) && started.elapsed() <= timeout => {
                    outage.down(&e, timeout, on_note);
                    stable = 0;
                    tokio::time::sleep(Duration::from_millis(1000)).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let Some(svc) = svc else {
                return Err(Error::failed(format!(
                    "service {name} disappeared while de-build waited for it"
                )));
            };
            let image = svc.image();
            let fresh_update = svc
                .update_state
                .as_ref()
                .filter(|(_, at, _)| at.is_some_and(|t| t >= since));
            if let Some((state, _, msg)) = fresh_update {
                if state == "paused" || state.starts_with("rollback") {
                    let mut failed: Vec<String> = Vec::new();
                    for d in tasks
                        .iter()
                        .filter(|t| t.state == "failed" || t.state == "rejected")
                        .map(TaskState::describe)
                    {
                        // A slot retried on the same node fails the same way.
                        if !failed.contains(&d) {
                            failed.push(d);
                        }
                    }
                    return Err(Error::failed(format!(
                        "the update of {name} stopped ({state}: {msg}){}",
                        if failed.is_empty() {
                            String::new()
                        } else {
                            format!("; failed tasks: {}", failed.join("; "))
                        }
                    )));
                }
            }
            let updating = fresh_update.is_some_and(|(s, _, _)| s == "updating");
            let want_running: Vec<&TaskState> =
                tasks.iter().filter(|t| t.desired == "running").collect();
            let running_new = want_running
                .iter()
                .filter(|t| t.state == "running" && t.image == image)
                .count() as u64;
            let all_running = want_running
                .iter()
                .all(|t| t.state == "running" && t.image == image);
            let enough = match svc.replicas() {
                Some(n) => running_new >= n,
                None => running_new >= 1,
            };
            // Failures of the new spec since the change, on a service the
            // updater does not watch (a new one): the scheduler retries
            // forever; three in a row say it will not work.
            let failing: Vec<&TaskState> = tasks
                .iter()
                .filter(|t| {
                    t.image == image
                        && (t.state == "failed" || t.state == "rejected")
                        && t.desired != "running"
                })
                .collect();
            if failing.len() >= 3 && !enough {
                return Err(Error::failed(format!(
                    "tasks of {name} keep failing: {}",
                    failing
                        .iter()
                        .rev()
                        .take(3)
                        .map(|t| t.describe())
                        .collect::<Vec<_>>()
                        .join("; ")
                )));
            }
            if !updating && all_running && enough {
                stable += 1;
                // Twice in a row, a second apart: the orchestrator has acted
                // on the change (an update that changed nothing shows no
                // status at all).
                if stable >= 2 {
                    return Ok(tasks);
                }
            } else {
                stable = 0;
            }
            let note = format!(
                "{name}: {running_new}/{} running the new spec{}",
                svc.replicas()
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "each node".into()),
                if updating { " (rolling)" } else { "" }
            );
            if note != last_note {
                on_note(&note);
                last_note = note;
            }
            if started.elapsed() > timeout {
                let states: Vec<String> = tasks
                    .iter()
                    .filter(|t| {
                        t.desired == "running" || t.state == "failed" || t.state == "rejected"
                    })
                    .map(TaskState::describe)
                    .collect();
                return Err(Error::failed(format!(
                    "{name} did not converge within {}s (DE_SWARM_TIMEOUT): {}",
                    timeout.as_secs(),
                    if states.is_empty() {
                        "no task".to_string()
                    } else {
                        states.join("; ")
                    }
                )));
            }
            tokio::time::sleep(Duration::from_millis(1000)).await;
        }
    }

    /// The manager's clock (lock ages and update status times are the
    /// manager's, never this machine's).
    pub async fn manager_time(&self) -> Result<chrono::DateTime<chrono::Utc>> {
        let info = self
            .engine
            .docker
            .info()
            .await
            .map_err(|e| engine_error("ask the manager for its time", &e))?;
        info.system_time
            .as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&chrono::Utc))
            .ok_or_else(|| Error::engine("ask the manager for its time", "no SystemTime in /info"))
    }

    /// Run a one-off job to completion, streaming its output; the job
    /// service is removed afterwards whatever happened. `stdin`: what the
    /// command reads on its standard input (a password it prompts for),
    /// given through a swarm secret that lives as long as the job
    /// ([`with_stdin_secret`]); without it the command reads end-of-file.
    pub async fn run_job(
        &self,
        job: &JobRun,
        stdin: Option<&Secret>,
        timeout: Duration,
        on_line: &mut (dyn FnMut(&str) + Send),
    ) -> Result<(JobRecord, String)> {
        let mut spec = job.spec.clone();
        // A job of an earlier run that died with its process.
        self.remove(&job.name).await?;
        let secret = match stdin {
            None => None,
            Some(value) => {
                let name = stdin_secret_name(&job.name);
                let mut labels = HashMap::new();
                for k in [NAMESPACE_LABEL, "de-build.job"] {
                    if let Some(v) = job.spec["Labels"][k].as_str() {
                        labels.insert(k.to_string(), v.to_string());
                    }
                }
                // One of an earlier run that died with its process.
                if let Ok(old) = self.engine.docker.inspect_secret(&name).await {
                    self.remove_secret(&old.id.unwrap_or_default()).await?;
                }
                let id = self.create_stdin_secret(&name, labels, value).await?;
                with_stdin_secret(&mut spec, &id, &name);
                Some(id)
            }
        };
        let result = async {
            let spec: ServiceSpec = serde_json::from_value(spec)
                .map_err(|e| Error::failed(format!("job spec for {}: {e}", job.name)))?;
            let created = self
                .engine
                .docker
                .create_service(spec, self.creds.clone())
                .await
                .map_err(|e| engine_error(format!("create job {}", job.name), &e))?;
            let id = created.id.unwrap_or_else(|| job.name.clone());
            let result = self.follow_job(job, &id, timeout, on_line).await;
            if let Err(e) = self.remove(&id).await {
                on_line(&format!(
                    "warning: job service {} not removed: {e}",
                    job.name
                ));
            }
            result
        }
        .await;
        if let Some(id) = secret {
            if let Err(e) = self.remove_secret(&id).await {
                on_line(&format!(
                    "warning: the job's secret {} was not removed ({e}): `docker secret rm {}`",
                    stdin_secret_name(&job.name),
                    stdin_secret_name(&job.name)
                ));
            }
        }
        result
    }

    async fn follow_job(
        &self,
        job: &JobRun,
        id: &str,
        timeout: Duration,
        on_line: &mut (dyn FnMut(&str) + Send),
    ) -> Result<(JobRecord, String)> {
        let started = Instant::now();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let docker = self.engine.docker.clone();
        let sid = id.to_string();
        // Live output: the manager gathers it from whichever node runs the task.
        let follower = tokio::spawn(async move {
            let mut s = docker.service_logs(
                &sid,
                Some(q::LogsOptions {
                    follow: true,
                    stdout: true,
                    stderr: true,
                    ..Default::default()
                }),
            );
            let mut pending = String::new();
            while let Some(Ok(chunk)) = s.next().await {
                pending.push_str(&log_text(&chunk.to_string()));
                while let Some(i) = pending.find('\n') {
                    let line: String = pending.drain(..=i).collect();
                    if tx.send(line.trim_end().to_string()).is_err() {
                        return;
                    }
                }
            }
            if !pending.is_empty() {
                let _ = tx.send(pending);
            }
        });
        let mut streamed = 0usize;
        let svc_view = || async {
            self.service(id)
                .await?
                .ok_or_else(|| Error::failed(format!("job {} disappeared", job.name)))
        };
        let mut outage = Outage::default();
        let outcome = loop {
            while let Ok(l) = rx.try_recv() {
                on_line(&l);
                streamed += 1;
            }
            let view = async {
                let v = svc_view().await?;
                let tasks = self.tasks(std::slice::from_ref(&v)).await?;
                Ok::<_, Error>(tasks)
            };
            let tasks = match view.await {
                Ok(t) => {
                    outage.up(&mut |l| on_line(&format!("de-build: {l}")));
                    t
                }
                // A manager restarting: the job's task goes on without it.
                Err(e) if transient(&e) && started.elapsed() <= timeout => {
                    outage.down(&e, timeout, &mut |l| on_line(&format!("de-build: {l}")));
                    tokio::time::sleep(Duration::from_millis(1000)).await;
                    continue;
                }
                Err(e) => break Err(e),
            };
            let done = tasks.iter().find(|t| {
                matches!(
                    t.state.as_str(),
                    "complete" | "failed" | "rejected" | "shutdown" | "orphaned"
                )
            });
            if let Some(t) = done {
                break Ok((t.clone(), tasks.len()));
            }
            if started.elapsed() > timeout {
                break Err(Error::failed(format!(
                    "job `{}` did not finish within {}s (DE_SWARM_TIMEOUT): {}",
                    job.command.join(" "),
                    timeout.as_secs(),
                    tasks
                        .iter()
                        .map(TaskState::describe)
                        .collect::<Vec<_>>()
                        .join("; ")
                )));
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        follower.abort();
        let (task, count) = outcome?;
        // The whole output, read once the task ended: the stream may lag.
        let mut full = String::new();
        let mut s = self.engine.docker.service_logs(
            id,
            Some(q::LogsOptions {
                stdout: true,
                stderr: true,
                ..Default::default()
            }),
        );
        while let Some(Ok(chunk)) = s.next().await {
            full.push_str(&log_text(&chunk.to_string()));
        }
        while let Ok(l) = rx.try_recv() {
            on_line(&l);
            streamed += 1;
        }
        for l in full.lines().skip(streamed) {
            on_line(l);
        }
        let inspect = self.task_exit_code(id, &task.state).await?;
        let record = JobRecord {
            step: job.step.clone(),
            service: job.name.clone(),
            command: job.command.clone(),
            tasks: count,
            node: task.node.clone(),
            exit_code: inspect,
            state: task.state.clone(),
            error: task.error.clone(),
        };
        crate::ui::logfile::action(
            &format!("swarm job {} `{}`", job.name, job.command.join(" ")),
            record.completed(),
            started.elapsed(),
            &format!("task {} on {}", task.state, task.node),
        );
        // A task that did not complete (rejected, shut down) is said by the
        // caller from the record, which keeps its state and the swarm's why.
        Ok((record, full))
    }

    /// The exit code of the job's task that ended in `state` (a job whose
    /// first task was stopped may have a replacement).
    async fn task_exit_code(&self, service_id: &str, state: &str) -> Result<Option<i64>> {
        let filters = HashMap::from([("service".to_string(), vec![service_id.to_string()])]);
        let tasks = self
            .engine
            .docker
            .list_tasks(Some(q::ListTasksOptions {
                filters: Some(filters),
            }))
            .await
            .map_err(|e| engine_error("list the job's tasks", &e))?;
        Ok(tasks
            .into_iter()
            .filter_map(|t| t.status)
            .filter(|st| st.state.as_ref().map(enum_str).as_deref() == Some(state))
            .filter_map(|st| st.container_status?.exit_code)
            .next())
    }

    fn lock_name(namespace: &str) -> String {
        format!("de-build-lock.{namespace}")
    }

    pub async fn lock_status(&self, namespace: &str, stale_secs: u64) -> Result<SwarmLock> {
        let name = Self::lock_name(namespace);
        let c = match self.engine.docker.inspect_config(&name).await {
            Ok(c) => c,
            Err(e) if is_status(&e, 404) => return Ok(SwarmLock::Free),
            Err(e) => return Err(engine_error("read the swarm's deploy lock", &e)),
        };
        let now = self.manager_time().await?;
        let beat = c.updated_at.or(c.created_at).unwrap_or(now);
        let age_secs = (now - beat).num_seconds().max(0);
        let holder = c
            .spec
            .and_then(|s| s.data)
            .and_then(|d| {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD.decode(d).ok()
            })
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null);
        let id = c.id.unwrap_or_default();
        Ok(if age_secs as u64 > stale_secs {
            SwarmLock::Stale {
                id,
                holder,
                age_secs,
            }
        } else {
            SwarmLock::Held {
                id,
                holder,
                age_secs,
            }
        })
    }

    /// Take the lock: Ok(id) or Err(what holds it). A stale lock is
    /// removed by its ID first (if another operator already replaced it,
    /// that removal finds nothing and their create wins).
    pub async fn lock_acquire(
        &self,
        namespace: &str,
        holder: &Value,
        stale_secs: u64,
    ) -> Result<(String, Option<SwarmLock>)> {
        let name = Self::lock_name(namespace);
        let mut took_over = None;
        for _ in 0..2 {
            use base64::Engine as _;
            let spec = ConfigSpec {
                name: Some(name.clone()),
                labels: Some(HashMap::from([
                    ("de-build.lock".to_string(), namespace.to_string()),
                    ("de-build.beat".to_string(), "0".to_string()),
                ])),
                data: Some(base64::engine::general_purpose::STANDARD.encode(holder.to_string())),
                ..Default::default()
            };
            match self.engine.docker.create_config(spec).await {
                Ok(r) => return Ok((r.id, took_over)),
                Err(e) if is_status(&e, 409) => {}
                Err(e) => return Err(engine_error("take the swarm's deploy lock", &e)),
            }
            match self.lock_status(namespace, stale_secs).await? {
                SwarmLock::Free => continue,
                held @ SwarmLock::Held { .. } => return Err(held.refusal()),
                stale @ SwarmLock::Stale { .. } => {
                    if let SwarmLock::Stale { id, .. } = &stale {
                        self.lock_remove(id).await?;
                    }
                    took_over = Some(stale);
                }
            }
        }
        Err(Error::Locked {
            message: "another deployment took the swarm's deploy lock at the same moment".into(),
            hint: "wait for it to finish; nothing was changed".into(),
        })
    }

    /// Refresh the holder's heartbeat; Ok(false): the lock is not ours any more.
    pub async fn lock_heartbeat(&self, id: &str, beat: u64) -> Result<bool> {
        let c = match self.engine.docker.inspect_config(id).await {
            Ok(c) => c,
            Err(e) if is_status(&e, 404) => return Ok(false),
            Err(e) => return Err(engine_error("read the swarm's deploy lock", &e)),
        };
        let mut spec = c.spec.unwrap_or_default();
        spec.labels
            .get_or_insert_with(HashMap::new)
            .insert("de-build.beat".into(), beat.to_string());
        let version = c.version.and_then(|v| v.index).unwrap_or(0) as i64;
        match self
            .engine
            .docker
            .update_config(id, spec, q::UpdateConfigOptions { version })
            .await
        {
            Ok(()) => Ok(true),
            Err(e) if is_status(&e, 404) => Ok(false),
            Err(e) => Err(engine_error("refresh the swarm's deploy lock", &e)),
        }
    }

    pub async fn lock_remove(&self, id: &str) -> Result<()> {
        match self.engine.docker.delete_config(id).await {
            Ok(()) => Ok(()),
            Err(e) if is_status(&e, 404) => Ok(()),
            Err(e) => Err(engine_error("remove the swarm's deploy lock", &e)),
        }
    }
}

/// Deployment records kept on the swarm, so that every machine that reaches
/// the manager reads the same history (`status`, `recover`, `rollback` from
/// anywhere). A record is a config object per save: configs are immutable,
/// so a save creates `…<seq>` and then removes the older copies of that
/// deployment (never fewer than one). The label filter, not the name, finds
/// them; the name only makes a second writer of the same sequence number fail.
pub const RECORD_LABEL: &str = "de-build.record";
/// swarmkit refuses a config whose data exceeds 500 KiB (`MaxConfigSize`).
pub const MAX_RECORD_BYTES: usize = 500 * 1024;

/// One copy of a deployment record on the swarm.
#[derive(Debug, Clone)]
pub struct StoredRecord {
    pub config_id: String,
    pub name: String,
    pub deployment: String,
    pub seq: u64,
    /// The record, or why it cannot be read.
    pub record: std::result::Result<Deployment, String>,
}

/// A config's name for copy `seq` of a record: at most the 64 characters
/// swarmkit allows; a namespace that does not fit is named by its hash (the
/// labels carry it whole).
pub fn record_name(namespace: &str, deployment: &str, seq: u64) -> String {
    let name = format!("de-build-record.{namespace}.{deployment}.{seq}");
    if name.len() <= 64 {
        return name;
    }
    let ns = &crate::util::sha256_hex(namespace.as_bytes())[..8];
    let name = format!("de-build-record.{ns}.{deployment}.{seq}");
    if name.len() <= 64 {
        return name;
    }
    let d = &crate::util::sha256_hex(deployment.as_bytes())[..16];
    format!("de-build-record.{ns}.{d}.{seq}")
}

/// The data of a record's config: compact JSON with every registered
/// secret masked (as the local file), within the swarm's size limit.
pub fn record_data(d: &Deployment) -> Result<String> {
    let text = serde_json::to_string(d)
        .map_err(|e| Error::failed(format!("encode deployment record {}: {e}", d.id)))?;
    let text = crate::ui::output::redact::redact(&text);
    if text.len() > MAX_RECORD_BYTES {
        return Err(Error::Failed {
            message: format!(
                "the record of deployment {} is {} KiB, more than the {} KiB a swarm config may hold",
                d.id,
                text.len() / 1024,
                MAX_RECORD_BYTES / 1024
            ),
            hint: Some("its largest parts are the resolved compose file and the services' previous specs: a smaller stack file (fewer or shorter services) fits".into()),
        });
    }
    Ok(text)
}

fn record_filter(namespace: &str, deployment: Option<&str>) -> HashMap<String, Vec<String>> {
    let mut labels = vec![format!("{RECORD_LABEL}={namespace}")];
    if let Some(d) = deployment {
        labels.push(format!("de-build.deployment={d}"));
    }
    HashMap::from([("label".to_string(), labels)])
}

fn config_text(c: &bollard::models::Config) -> Option<String> {
    use base64::Engine as _;
    let data = c.spec.as_ref()?.data.as_ref()?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data)
        .ok()?;
    String::from_utf8(bytes).ok()
}

impl Swarm {
    /// Every copy of the stack's records (or of one deployment's).
    pub async fn record_copies(
        &self,
        namespace: &str,
        deployment: Option<&str>,
    ) -> Result<Vec<StoredRecord>> {
        let list = self
            .engine
            .docker
            .list_configs(Some(q::ListConfigsOptions {
                filters: Some(record_filter(namespace, deployment)),
            }))
            .await
            .map_err(|e| engine_error("read the deployment records on the swarm", &e))?;
        let mut out = Vec::new();
        for c in list {
            let labels = c
                .spec
                .as_ref()
                .and_then(|s| s.labels.clone())
                .unwrap_or_default();
            let name = c
                .spec
                .as_ref()
                .and_then(|s| s.name.clone())
                .unwrap_or_default();
            let record = match config_text(&c) {
                Some(t) => serde_json::from_str::<Deployment>(&t).map_err(|e| e.to_string()),
                None => Err("its data is not UTF-8 base64".to_string()),
            };
            out.push(StoredRecord {
                config_id: c.id.clone().unwrap_or_default(),
                name,
                deployment: labels
                    .get("de-build.deployment")
                    .cloned()
                    .unwrap_or_default(),
                seq: labels
                    .get("de-build.seq")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0),
                record,
            });
        }
        out.sort_by(|a, b| (&a.deployment, a.seq).cmp(&(&b.deployment, b.seq)));
        Ok(out)
    }

    /// The newest copy of each deployment's record, oldest deployment
    /// first, and the copies that cannot be read (name, why).
    pub async fn records(
        &self,
        namespace: &str,
    ) -> Result<(Vec<Deployment>, Vec<(String, String)>)> {
        let copies = self.record_copies(namespace, None).await?;
        let mut newest: Vec<StoredRecord> = Vec::new();
        for c in copies {
            match newest.last_mut() {
                Some(l) if l.deployment == c.deployment => *l = c,
                _ => newest.push(c),
            }
        }
        let mut ok = Vec::new();
        let mut bad = Vec::new();
        for c in newest {
            match c.record {
                Ok(d) => ok.push(d),
                Err(e) => bad.push((c.name, e)),
            }
        }
        ok.sort_by(|a, b| a.id.cmp(&b.id));
        Ok((ok, bad))
    }

    /// Create copy `seq` of a record. A copy of that name already there
    /// with the same data is this process's own (a request whose answer
    /// was lost to a manager restart, sent again); with other data it is
    /// another writer's, and refused.
    pub async fn put_record(
        &self,
        namespace: &str,
        d: &Deployment,
        data: &str,
        seq: u64,
    ) -> Result<()> {
        use base64::Engine as _;
        let name = record_name(namespace, &d.id, seq);
        let spec = ConfigSpec {
            name: Some(name.clone()),
            labels: Some(HashMap::from([
                (RECORD_LABEL.to_string(), namespace.to_string()),
                ("de-build.deployment".to_string(), d.id.clone()),
                ("de-build.seq".to_string(), seq.to_string()),
                ("de-build.result".to_string(), d.result.as_str().to_string()),
            ])),
            data: Some(base64::engine::general_purpose::STANDARD.encode(data)),
            ..Default::default()
        };
        match self.engine.docker.create_config(spec).await {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 409) => {
                let same = match self.engine.docker.inspect_config(&name).await {
                    Ok(c) => config_text(&c).as_deref() == Some(data),
                    Err(e) => return Err(engine_error(format!("read the record copy {name}"), &e)),
                };
                if same {
                    Ok(())
                } else {
                    Err(Error::Failed {
                        message: format!(
                            "another process wrote the record of deployment {} on the swarm at the same time ({name})",
                            d.id
                        ),
                        hint: Some("only the holder of the swarm's lock writes a deployment's record: `de-build status` shows who holds it".into()),
                    })
                }
            }
            Err(e) => Err(engine_error(
                format!("save the record of deployment {} on the swarm", d.id),
                &e,
            )),
        }
    }

    /// Remove the copies of a deployment's record older than `seq` (the
    /// newest stays, so a reader always finds one).
    pub async fn remove_records_before(
        &self,
        namespace: &str,
        deployment: &str,
        seq: u64,
    ) -> Result<usize> {
        let mut n = 0;
        for c in self.record_copies(namespace, Some(deployment)).await? {
            if c.seq < seq {
                match self.engine.docker.delete_config(&c.config_id).await {
                    Ok(()) => n += 1,
                    Err(e) if is_status(&e, 404) => {}
                    Err(e) => {
                        return Err(engine_error(
                            format!("remove the old record copy {}", c.name),
                            &e,
                        ))
                    }
                }
            }
        }
        Ok(n)
    }
}

/// A chunk of service logs as text. The engine says an error of its own
/// (e.g. a node that restarted under a followed stream) in a frame of
/// stream type 3, which bollard hands over with its 8-byte header: said as
/// the engine's, without the header's control bytes.
fn log_text(chunk: &str) -> String {
    match chunk.strip_prefix("\u{3}\u{0}\u{0}\u{0}") {
        Some(rest) if rest.len() >= 4 => {
            let msg = rest.get(4..).unwrap_or_default().trim_end();
            format!("(the engine, about these logs: {msg})\n")
        }
        _ => chunk.to_string(),
    }
}

/// An engine enum as its API string (`running`, `paused`, …).
fn enum_str<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn nonzero(v: Option<i64>) -> Value {
    v.map(Value::from).unwrap_or(Value::Null)
}

/// The mounts of a service as the Engine API takes them.
fn mounts(stack: &SwarmStack, def: &ServiceDef) -> Vec<Value> {
    def.mounts
        .iter()
        .map(|m| match m.kind {
            MountKind::Volume => {
                let vol = stack.stack.volumes.get(&m.source);
                let mut v = json!({
                    "Type": "volume",
                    "Target": m.target,
                    "ReadOnly": m.read_only,
                });
                if let Some(vol) = vol {
                    v["Source"] = json!(vol.name);
                    let mut opts = json!({"Labels": {NAMESPACE_LABEL: stack.namespace}});
                    if !vol.external && (vol.driver.is_some() || !vol.driver_opts.is_empty()) {
                        opts["DriverConfig"] = json!({
                            "Name": vol.driver.clone().unwrap_or_else(|| "local".into()),
                            "Options": vol.driver_opts,
                        });
                    }
                    v["VolumeOptions"] = opts;
                }
                v
            }
            MountKind::Bind => json!({
                "Type": "bind", "Source": m.source, "Target": m.target, "ReadOnly": m.read_only,
            }),
            MountKind::Tmpfs => json!({"Type": "tmpfs", "Target": m.target}),
        })
        .collect()
}

fn networks(stack: &SwarmStack, def: &ServiceDef) -> Vec<Value> {
    def.networks
        .iter()
        .filter_map(|n| stack.stack.networks.get(n))
        .map(|n| json!({"Target": n.name, "Aliases": [def.name]}))
        .collect()
}

fn env_list(def: &ServiceDef) -> Vec<String> {
    def.env.iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// The Engine API spec of a long-running service of the stack.
pub fn service_spec(stack: &SwarmStack, def: &ServiceDef, deployment: &str) -> Value {
    let name = stack.engine_name(&def.name);
    let mut container = json!({
        "Image": def.image,
        "Labels": {NAMESPACE_LABEL: stack.namespace},
        "Env": env_list(def),
        "Mounts": mounts(stack, def),
    });
    for (k, v) in &def.labels {
        container["Labels"][k] = json!(v);
    }
    if let Some(e) = &def.entrypoint {
        container["Command"] = json!(e);
    }
    if let Some(c) = &def.command {
        container["Args"] = json!(c);
    }
    if let Some(h) = &def.healthcheck {
        container["HealthCheck"] = json!({
            "Test": h.test, "Interval": nonzero(h.interval_ns), "Timeout": nonzero(h.timeout_ns),
            "Retries": nonzero(h.retries), "StartPeriod": nonzero(h.start_period_ns),
        });
    }
    if let Some(i) = def.init {
        container["Init"] = json!(i);
    }
    if let Some(g) = def.stop_grace_ns {
        container["StopGracePeriod"] = json!(g);
    }
    if let Some(u) = &def.user {
        container["User"] = json!(u);
    }
    if let Some(d) = &def.working_dir {
        container["Dir"] = json!(d);
    }
    if let Some(h) = &def.hostname {
        container["Hostname"] = json!(h);
    }
    let mut task = json!({
        "ContainerSpec": container,
        "Networks": networks(stack, def),
        "Placement": {"Constraints": def.constraints},
    });
    if let Some(r) = &def.restart {
        task["RestartPolicy"] = json!({
            "Condition": r.condition, "Delay": nonzero(r.delay_ns),
            "MaxAttempts": nonzero(r.max_attempts), "Window": nonzero(r.window_ns),
        });
    }
    let mode = match def.mode {
        ModeDef::Replicated(n) => json!({"Replicated": {"Replicas": n}}),
        ModeDef::Global => json!({"Global": {}}),
        ModeDef::ReplicatedJob => {
            json!({"ReplicatedJob": {"MaxConcurrent": 1, "TotalCompletions": 1}})
        }
    };
    // de-build decides what a failed update leads to (its recovery puts
    // every touched service back), so the swarm only pauses.
    let order = def.update.order.clone().unwrap_or_else(|| {
        if def.role == Role::Web {
            "start-first".into()
        } else {
            "stop-first".into()
        }
    });
    let mut update = json!({
        "Parallelism": def.update.parallelism.unwrap_or(1),
        "FailureAction": "pause",
        "Order": order,
        "MaxFailureRatio": 0,
    });
    if let Some(d) = def.update.delay_ns {
        update["Delay"] = json!(d);
    }
    if let Some(m) = def.update.monitor_ns {
        update["Monitor"] = json!(m);
    }
    let mut labels = json!({
        NAMESPACE_LABEL: stack.namespace,
        "com.docker.stack.image": def.image,
        "de-build.version": stack.version,
        "de-build.deployment": deployment,
        "de-build.role": def.role,
    });
    for (k, v) in &def.service_labels {
        labels[k] = json!(v);
    }
    let ports: Vec<Value> = def
        .ports
        .iter()
        .map(|p| {
            json!({
                "Protocol": p.protocol, "TargetPort": p.target,
                "PublishedPort": p.published, "PublishMode": p.mode,
            })
        })
        .collect();
    let mut spec = json!({
        "Name": name,
        "Labels": labels,
        "TaskTemplate": task,
        "Mode": mode,
        "EndpointSpec": {"Mode": def.endpoint_mode.clone().unwrap_or_else(|| "vip".into()), "Ports": ports},
    });
    // The engine refuses an update config on a job.
    if def.mode != ModeDef::ReplicatedJob {
        spec["UpdateConfig"] = update;
    }
    spec
}

/// A one-off job: `cmd` in `image` with the mounts, networks, environment
/// and user of `like` (the backend service), run once (no restart).
pub fn job_spec(
    stack: &SwarmStack,
    like: &ServiceDef,
    image: &str,
    name: &str,
    cmd: &[String],
    deployment: &str,
) -> Value {
    let mut def = like.clone();
    def.image = image.to_string();
    def.entrypoint = Some(cmd.to_vec());
    def.command = None;
    def.healthcheck = None;
    def.ports = Vec::new();
    def.mode = ModeDef::ReplicatedJob;
    def.role = Role::Job;
    def.service_labels = Default::default();
    let mut v = service_spec(stack, &def, deployment);
    v["Name"] = json!(name);
    v["Labels"]["de-build.job"] = json!(deployment);
    v["TaskTemplate"]["RestartPolicy"] = json!({"Condition": "none"});
    v["EndpointSpec"] = json!({"Mode": "dnsrr"});
    v
}

/// A one-off job modelled on a service as the engine runs it (its spec from
/// inspect, as bollard serializes it): the same mounts, networks,
/// environment and user, another image and command, run once.
pub fn job_spec_from_engine(
    spec: &Value,
    image: &str,
    name: &str,
    cmd: &[String],
    deployment: &str,
) -> Value {
    let mut v = json!({
        "Name": name,
        "Labels": {
            NAMESPACE_LABEL: spec["Labels"][NAMESPACE_LABEL].clone(),
            "de-build.job": deployment,
        },
        "TaskTemplate": spec["TaskTemplate"].clone(),
        "Mode": {"ReplicatedJob": {"MaxConcurrent": 1, "TotalCompletions": 1}},
        "EndpointSpec": {"Mode": "dnsrr"},
    });
    let c = &mut v["TaskTemplate"]["ContainerSpec"];
    c["Image"] = json!(image);
    c["Command"] = json!(cmd);
    if let Some(o) = c.as_object_mut() {
        o.remove("Args");
        o.remove("HealthCheck");
    }
    v["TaskTemplate"]["RestartPolicy"] = json!({"Condition": "none"});
    v
}

/// Where a job's stdin secret is mounted in its container (a tmpfs only
/// that task sees): `/run/secrets/<this>`.
pub const STDIN_FILE: &str = "de-build-stdin";

/// The stdin secret of a job: its name plus `.stdin`, within the 64
/// characters a secret's name may have.
pub fn stdin_secret_name(job: &str) -> String {
    let mut s = job.to_string();
    s.truncate(57);
    format!("{s}.stdin")
}

/// Feed a job's command the secret `name` on its standard input.
///
/// A swarm task has no stdin to write to (the manager's API cannot attach
/// to a task on another node, and a service spec has no input), and the
/// alternatives would show the password: an argument (`--db-root-password`)
/// in every process listing of the node and in `docker service inspect`, an
/// environment variable in `docker service inspect`. A swarm secret is in
/// neither: the manager keeps it encrypted, `docker secret inspect` never
/// shows its data, and only this job's container gets it, as a file in its
/// own tmpfs; `sh` redirects that file to the command. The file is readable
/// by every user of that one container (mode 0444), because the job runs as
/// the image's user, whose ID is not known here.
pub fn with_stdin_secret(spec: &mut Value, secret_id: &str, name: &str) {
    let c = &mut spec["TaskTemplate"]["ContainerSpec"];
    let cmd: Vec<Value> = c["Command"].as_array().cloned().unwrap_or_default();
    let mut wrapped = vec![
        json!("sh"),
        json!("-c"),
        json!(format!("exec \"$@\" < /run/secrets/{STDIN_FILE}")),
        json!("sh"),
    ];
    wrapped.extend(cmd);
    c["Command"] = json!(wrapped);
    let mut secrets = c["Secrets"].as_array().cloned().unwrap_or_default();
    secrets.push(json!({
        "File": {"Name": STDIN_FILE, "UID": "0", "GID": "0", "Mode": 0o444},
        "SecretID": secret_id,
        "SecretName": name,
    }));
    c["Secrets"] = json!(secrets);
}

/// A job service name: unique, short enough for the engine (63).
pub fn job_name(namespace: &str, step: &str, deployment: &str, n: usize) -> String {
    let tail: String = deployment
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_lowercase();
    let tail = &tail[tail.len().saturating_sub(12)..];
    let mut s = format!("{namespace}_de-build-{step}-{n}-{tail}");
    s.truncate(63);
    s
}

/// Parse a spec written as JSON into bollard's type.
pub fn spec_from(v: &Value) -> Result<ServiceSpec> {
    serde_json::from_value(v.clone()).map_err(|e| Error::failed(format!("service spec: {e}")))
}

/// The filter for what a deployment's one-off jobs made (services, secrets).
fn job_label(deployment: &str) -> HashMap<String, Vec<String>> {
    HashMap::from([(
        "label".to_string(),
        vec![format!("de-build.job={deployment}")],
    )])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::swarm::*;

    fn stack() -> SwarmStack {
        let yaml = r#"
services:
  backend:
    image: r:5000/x:1@sha256:ab
    command: [bench, serve]
    deploy: {replicas: 2, endpoint_mode: dnsrr}
    ports: [{target: 8000, published: 18080, mode: host}]
    healthcheck: {test: "true", interval: 1s}
    volumes: [sites:/s]
volumes:
  sites:
    driver_opts: {type: none, o: bind, device: /srv/x}
"#;
        SwarmStack {
            version: "1".into(),
            image: "r:5000/x:1@sha256:ab".into(),
            image_id: "sha256:1".into(),
            namespace: "erp".into(),
            file: "/f".into(),
            stack: crate::config::stack::parse(
                yaml,
                crate::config::stack::Roles {
                    namespace: "erp",
                    backend: "backend",
                    web: &["backend".into()],
                },
            )
            .unwrap(),
        }
    }

    #[test]
    fn a_web_service_rolls_start_first_and_pauses_on_failure() {
        let st = stack();
        let v = service_spec(&st, st.stack.service("backend").unwrap(), "d1");
        let spec = spec_from(&v).unwrap();
        assert_eq!(spec.name.as_deref(), Some("erp_backend"));
        let back = serde_json::to_value(&spec).unwrap();
        assert_eq!(back["UpdateConfig"]["Order"], "start-first");
        assert_eq!(back["UpdateConfig"]["FailureAction"], "pause");
        assert_eq!(back["EndpointSpec"]["Mode"], "dnsrr");
        assert_eq!(back["EndpointSpec"]["Ports"][0]["PublishMode"], "host");
        assert_eq!(
            back["TaskTemplate"]["ContainerSpec"]["Mounts"][0]["Source"],
            "erp_sites"
        );
        assert_eq!(
            back["TaskTemplate"]["ContainerSpec"]["Mounts"][0]["VolumeOptions"]["DriverConfig"]
                ["Options"]["device"],
            "/srv/x"
        );
        assert_eq!(back["TaskTemplate"]["Networks"][0]["Target"], "erp_default");
        assert_eq!(back["TaskTemplate"]["Networks"][0]["Aliases"][0], "backend");
        assert_eq!(
            back["TaskTemplate"]["ContainerSpec"]["HealthCheck"]["Interval"],
            1_000_000_000i64
        );
        assert_eq!(back["Labels"]["de-build.role"], "web");
    }

    #[test]
    fn a_job_runs_once_with_the_backends_mounts() {
        let st = stack();
        let cmd = vec!["bench".to_string(), "migrate".to_string()];
        let name = job_name("erp", "migrate", "20261123T101010.123Z-4242", 0);
        assert!(
            name.len() <= 63 && name.starts_with("erp_de-build-migrate-0-"),
            "{name}"
        );
        let v = job_spec(
            &st,
            st.stack.service("backend").unwrap(),
            "r:5000/x:2@sha256:cd",
            &name,
            &cmd,
            "d1",
        );
        let back = serde_json::to_value(spec_from(&v).unwrap()).unwrap();
        assert_eq!(back["Mode"]["ReplicatedJob"]["TotalCompletions"], 1);
        assert_eq!(back["TaskTemplate"]["RestartPolicy"]["Condition"], "none");
        assert_eq!(back["TaskTemplate"]["ContainerSpec"]["Command"], json!(cmd));
        assert_eq!(
            back["TaskTemplate"]["ContainerSpec"]["Image"],
            "r:5000/x:2@sha256:cd"
        );
        assert!(back["TaskTemplate"]["ContainerSpec"]
            .get("HealthCheck")
            .is_none());
        assert_eq!(
            back["TaskTemplate"]["ContainerSpec"]["Mounts"][0]["Source"],
            "erp_sites"
        );
        assert!(back.get("UpdateConfig").is_none());
    }

    #[test]
    fn a_jobs_stdin_comes_from_a_secret_file_never_from_its_spec() {
        let st = stack();
        let cmd: Vec<String> = ["bench", "--site", "a", "restore", "./a/b.sql.gz"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let name = job_name("erp", "restore", "20261123T101010.123Z-4242", 1000);
        let mut v = job_spec(
            &st,
            st.stack.service("backend").unwrap(),
            "r:5000/x:1@sha256:ab",
            &name,
            &cmd,
            "d1",
        );
        let before = v.clone();
        let secret = stdin_secret_name(&name);
        assert!(secret.len() <= 64 && secret.ends_with(".stdin"), "{secret}");
        with_stdin_secret(&mut v, "sec-id-1", &secret);
        let back = serde_json::to_value(spec_from(&v).unwrap()).unwrap();
        let c = &back["TaskTemplate"]["ContainerSpec"];
        let mut want = vec![
            json!("sh"),
            json!("-c"),
            json!("exec \"$@\" < /run/secrets/de-build-stdin"),
            json!("sh"),
        ];
        want.extend(cmd.iter().map(|a| json!(a)));
        assert_eq!(c["Command"], json!(want));
        assert_eq!(c["Secrets"][0]["SecretID"], "sec-id-1");
        assert_eq!(c["Secrets"][0]["SecretName"], json!(secret));
        assert_eq!(c["Secrets"][0]["File"]["Name"], STDIN_FILE);
        assert_eq!(c["Secrets"][0]["File"]["Mode"], 0o444);
        // Nothing else changes: no environment, no argument carries a value.
        assert_eq!(c["Env"], before["TaskTemplate"]["ContainerSpec"]["Env"]);
        assert_eq!(back["Labels"]["de-build.job"], "d1");
        // A spec that names secrets already keeps them.
        let mut v2 = before.clone();
        v2["TaskTemplate"]["ContainerSpec"]["Secrets"] =
            json!([{"SecretID": "other", "SecretName": "other", "File": {"Name": "x"}}]);
        with_stdin_secret(&mut v2, "sec-id-1", &secret);
        assert_eq!(
            v2["TaskTemplate"]["ContainerSpec"]["Secrets"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn an_engine_error_in_a_log_stream_is_said_without_its_frame_header() {
        let raw = "\u{3}\u{0}\u{0}\u{0}\u{0}\u{0}\u{0}GError grabbing logs: rpc error: code = Unknown desc = context canceled\n";
        assert_eq!(
            log_text(raw),
            "(the engine, about these logs: Error grabbing logs: rpc error: code = Unknown desc = context canceled)\n"
        );
        assert_eq!(log_text("Migrating a\n"), "Migrating a\n");
    }

    #[test]
    fn a_records_config_name_fits_the_64_characters_a_swarm_allows() {
        let id = "20260101T120000.123Z-4194304";
        assert_eq!(
            record_name("erp", id, 7),
            "de-build-record.erp.20260101T120000.123Z-4194304.7"
        );
        let long = record_name("a-rather-long-project-namespace", id, 12345);
        assert!(long.len() <= 64, "{long}");
        assert!(long.ends_with(&format!(".{id}.12345")), "{long}");
        assert_ne!(
            long,
            record_name("a-rather-long-project-namespacf", id, 12345)
        );
        let longer = record_name("ns", &"9".repeat(60), 1);
        assert!(longer.len() <= 64, "{longer}");
    }

    #[test]
    fn a_record_on_the_swarm_masks_secrets_and_fits_a_config_or_is_refused() {
        use crate::record::state::{sample, Outcome};
        let canary = "swarm-record-canary-9a8b7c";
        let _s = Secret::new(canary);
        let mut d = sample("d1", "1.0.0", Outcome::Fatal);
        d.error = Some(format!("bench said {canary}"));
        let data = record_data(&d).unwrap();
        assert!(!data.contains(canary), "{data}");
        let back: Deployment = serde_json::from_str(&data).unwrap();
        assert_eq!(back.id, "d1");
        d.error = Some("x".repeat(MAX_RECORD_BYTES));
        let e = record_data(&d).unwrap_err();
        assert!(
            e.to_string()
                .contains("more than the 500 KiB a swarm config may hold"),
            "{e}"
        );
    }

    #[test]
    fn only_a_manager_that_cannot_answer_yet_is_waited_for() {
        assert!(transient(&Error::engine_unreachable(
            "inspect service x",
            "client error (SendRequest)"
        )));
        assert!(transient(&Error::engine(
            "list tasks",
            "This node is not a swarm manager. Use \"docker swarm init\" (HTTP 503)"
        )));
        assert!(transient(&Error::engine(
            "list tasks",
            "rpc error: code = Unknown desc = The swarm does not have a leader (HTTP 500)"
        )));
        assert!(!transient(&Error::engine(
            "create or update service x",
            "update out of sequence (HTTP 500)"
        )));
        assert!(!transient(&Error::failed("job x disappeared")));
    }
}
