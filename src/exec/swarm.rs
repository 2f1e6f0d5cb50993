//! Runs a [`SwarmPlan`] through the [`SwarmWorld`] port, one step at a time,
//! saving the record before and after each; on failure runs the recovery the
//! plan computes for the progress reached. Also runs the recovery of an
//! interrupted swarm deployment (`de-build recover`).
//!
//! Invariants as on one host: the record is written before anything changes
//! and after every step; messages say what happened, read from the swarm.

use crate::adapters::bench::{self, Readiness};
use crate::adapters::swarm::{self as sw, JobRun, Swarm};
use crate::error::{Error, Result};
use crate::exec::deploy::{Finished, Sink};
use crate::exec::ports::Records;
use crate::plan::swarm::{
    self as planner, JobRecord, Role, ServiceDef, SwarmPlan, SwarmRecovery, SwarmRecoveryStep,
    SwarmRun, SwarmStack, SwarmStep, TaskState,
};
use crate::record::deploy::{Gate, Progress};
use crate::record::state::{self, Backup, Deployment, Outcome, StepRecord};
use crate::secret::Secret;
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

// The executor is generic over the port and never boxes it.
#[allow(async_fn_in_trait)]
pub trait SwarmWorld {
    async fn manager_time(&self) -> Result<chrono::DateTime<chrono::Utc>>;
    /// Create or update a service to this Engine API spec.
    async fn apply(&self, spec: &Value) -> Result<()>;
    async fn remove(&self, name: &str) -> Result<()>;
    async fn wait_converged(
        &self,
        name: &str,
        since: chrono::DateTime<chrono::Utc>,
        timeout: Duration,
        on_note: &mut (dyn FnMut(&str) + Send),
    ) -> Result<Vec<TaskState>>;
    async fn ensure_network(&self, namespace: &str, name: &str) -> Result<bool>;
    /// Run a one-off job; `stdin` is what its command reads on its standard
    /// input (never in its spec, argv, record or log).
    async fn run_job(
        &self,
        job: &JobRun,
        stdin: Option<&Secret>,
        timeout: Duration,
        on_line: &mut (dyn FnMut(&str) + Send),
    ) -> Result<(JobRecord, String)>;
    /// Remove one-off jobs of `deployment` still on the swarm.
    async fn remove_jobs(&self, deployment: &str) -> Result<Vec<String>>;
    /// Every task of the namespace's services.
    async fn stack_tasks(&self, namespace: &str) -> Result<Vec<TaskState>>;
    async fn wait_healthy(&self, url: &str, timeout: Duration, gate: Gate) -> Result<Duration>;
    async fn sleep(&self, d: Duration);
    fn write_snapshot(&self, to: &std::path::Path, text: &str) -> Result<()>;
    /// Keep the record on the swarm, where every operator's machine reads
    /// it (this machine's file is written by [`Records`]). One attempt: the
    /// executor waits out a manager that does not answer.
    async fn save_record(&self, d: &Deployment) -> Result<()>;
}

/// The production world: the manager's API.
pub struct RealSwarm {
    pub swarm: Swarm,
    /// The health gate's Host header (`config::rules::health_host`).
    pub health_host: Option<String>,
    /// The sequence number of the last copy of each record this process
    /// saved on the swarm (the first save of a record continues after the
    /// copies already there: `recover` of another machine's deployment).
    saved: std::sync::Mutex<std::collections::HashMap<String, u64>>,
}

impl RealSwarm {
    pub fn new(swarm: Swarm, health_host: Option<String>) -> RealSwarm {
        RealSwarm {
            swarm,
            health_host,
            saved: Default::default(),
        }
    }
}

impl SwarmWorld for RealSwarm {
    async fn manager_time(&self) -> Result<chrono::DateTime<chrono::Utc>> {
        self.swarm.manager_time().await
    }

    async fn apply(&self, spec: &Value) -> Result<()> {
        self.swarm.apply(sw::spec_from(spec)?).await
    }

    async fn remove(&self, name: &str) -> Result<()> {
        self.swarm.remove(name).await
    }

    async fn wait_converged(
        &self,
        name: &str,
        since: chrono::DateTime<chrono::Utc>,
        timeout: Duration,
        on_note: &mut (dyn FnMut(&str) + Send),
    ) -> Result<Vec<TaskState>> {
        self.swarm
            .wait_converged(name, since, timeout, on_note)
            .await
    }

    async fn ensure_network(&self, namespace: &str, name: &str) -> Result<bool> {
        self.swarm
            .ensure_network(namespace, name, &Default::default())
            .await
    }

    async fn run_job(
        &self,
        job: &JobRun,
        stdin: Option<&Secret>,
        timeout: Duration,
        on_line: &mut (dyn FnMut(&str) + Send),
    ) -> Result<(JobRecord, String)> {
        self.swarm.run_job(job, stdin, timeout, on_line).await
    }

    async fn remove_jobs(&self, deployment: &str) -> Result<Vec<String>> {
        self.swarm.remove_jobs(deployment).await
    }

    async fn stack_tasks(&self, namespace: &str) -> Result<Vec<TaskState>> {
        let services = self.swarm.services(namespace).await?;
        self.swarm.tasks(&services).await
    }

    async fn wait_healthy(&self, url: &str, timeout: Duration, gate: Gate) -> Result<Duration> {
        let url = url.to_string();
        let host = self.health_host.clone();
        tokio::task::spawn_blocking(move || match gate {
            Gate::Open => crate::adapters::health::wait_healthy(&url, host.as_deref(), timeout),
            Gate::Sealed => crate::adapters::health::wait_until(
                &url,
                host.as_deref(),
                timeout,
                |c| (200..300).contains(&c) || c == 503,
                "2xx or the maintenance 503",
            ),
        })
        .await
        .map_err(|e| Error::failed(format!("health probe task: {e}")))?
        .map_err(Error::failed)
    }

    async fn sleep(&self, d: Duration) {
        tokio::time::sleep(d).await
    }

    fn write_snapshot(&self, to: &std::path::Path, text: &str) -> Result<()> {
        if let Some(d) = to.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .create(d)
                .map_err(|e| Error::io("create", d, e))?;
        }
        state::write_private(to, text.as_bytes())
    }

    async fn save_record(&self, d: &Deployment) -> Result<()> {
        let data = sw::record_data(d)?;
        let namespace = d
            .swarm
            .as_ref()
            .map(|r| r.plan.new.namespace.clone())
            .unwrap_or_else(|| d.project.clone());
        let last = self
            .saved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&d.id)
            .copied();
        let last = match last {
            Some(n) => n,
            None => self
                .swarm
                .record_copies(&namespace, Some(&d.id))
                .await?
                .iter()
                .map(|c| c.seq)
                .max()
                .unwrap_or(0),
        };
        let seq = last + 1;
        self.swarm.put_record(&namespace, d, &data, seq).await?;
        self.saved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(d.id.clone(), seq);
        // A leftover older copy is harmless (readers take the newest) and
        // the next save removes it: not worth failing a deployment over.
        let started = Instant::now();
        if let Err(e) = self
            .swarm
            .remove_records_before(&namespace, &d.id, seq)
            .await
        {
            crate::ui::logfile::action(
                &format!("remove older copies of record {}", d.id),
                false,
                started.elapsed(),
                &e.to_string(),
            );
        }
        Ok(())
    }
}

pub struct SwarmExecutor<'a, W: SwarmWorld, R: Records, S: Sink> {
    pub world: &'a W,
    pub records: &'a R,
    pub sink: &'a mut S,
    /// Set by the first SIGINT/SIGTERM/SIGHUP: stop after the running step.
    pub interrupted: Arc<AtomicBool>,
    /// Set when the swarm's lock was taken over by another operator: stop
    /// after the running step and change nothing more (not even a recovery:
    /// the cluster is theirs now).
    pub lost_lock: Arc<AtomicBool>,
    pub jobs_started: usize,
    /// The database root password `bench restore` asks for (frappe_docker
    /// stores none in the sites): the restore job reads it on its stdin,
    /// from a swarm secret that lives as long as the job.
    pub db_root_password: Option<&'a Secret>,
}

/// A new record for `plan`, before anything runs.
pub fn new_record(plan: &SwarmPlan) -> Deployment {
    let (user, host) = state::whoami();
    Deployment {
        id: plan.id.clone(),
        action: plan.action,
        version: plan.version.clone(),
        image_id: plan.image_id.clone(),
        previous_version: plan.previous.as_ref().map(|p| p.version.clone()),
        project: plan.new.namespace.clone(),
        compose_file: plan.new.file.clone(),
        compose_source: plan.compose_sources.first().cloned().unwrap_or_default(),
        env: plan.env.clone(),
        backups: Vec::new(),
        started: state::now(),
        finished: None,
        result: Outcome::Running,
        steps: Vec::new(),
        error: None,
        left: None,
        data_note: None,
        user,
        host,
        pid: std::process::id(),
        plan: None,
        progress: Progress::default(),
        swarm: Some(SwarmRun {
            plan: plan.clone(),
            progress: Default::default(),
            jobs: Vec::new(),
            tasks: Vec::new(),
        }),
    }
}

fn run_of(d: &mut Deployment) -> &mut SwarmRun {
    d.swarm.as_mut().expect("a swarm record carries its run")
}

impl<W: SwarmWorld, R: Records, S: Sink> SwarmExecutor<'_, W, R, S> {
    pub async fn run(&mut self, plan: &SwarmPlan) -> Finished {
        let mut record = new_record(plan);
        if let Err(e) = self.save(plan, &record).await {
            let hint = e
                .hint()
                .unwrap_or_else(|| "free some space or fix the permissions of .de-build/".into());
            return Finished {
                record,
                error: Some(Error::Failed {
                    message: format!("{} of {} did not start: {e}", plan.action, plan.version),
                    hint: Some(format!("nothing was changed; {hint}")),
                }),
            };
        }
        let total = plan.steps.len();
        let mut failure: Option<Error> = None;
        for (i, planned) in plan.steps.iter().enumerate() {
            let step = &planned.step;
            if self.lost_lock.load(Ordering::SeqCst) {
                return self.lost(record);
            }
            if self.interrupted.load(Ordering::SeqCst) {
                failure = Some(Error::failed("interrupted by a signal"));
                break;
            }
            planner::starting(&mut run_of(&mut record).progress, step);
            if let Err(e) = self.save(plan, &record).await {
                failure = Some(write_failure(e));
                break;
            }
            self.sink.step(i + 1, total, &step.to_string());
            let t = Instant::now();
            let res = self.step(plan, step, &mut record).await;
            let secs = t.elapsed().as_secs_f64();
            self.sink.step_done(secs, res.is_ok());
            record.steps.push(StepRecord {
                step: step.name().to_string(),
                ok: res.is_ok(),
                seconds: secs,
            });
            if res.is_ok() {
                planner::finished(&mut run_of(&mut record).progress, step);
            }
            let saved = self.save(plan, &record).await;
            if let Err(e) = res {
                failure = Some(e);
                break;
            }
            if let Err(e) = saved {
                failure = Some(write_failure(e));
                break;
            }
        }
        match failure {
            None => {
                record.result = Outcome::Succeeded;
                record.finished = Some(state::now());
                // "deployed" only once the swarm holds the final record:
                // what every other machine reads must not say "running".
                match self.save(plan, &record).await {
                    Ok(()) => Finished {
                        record,
                        error: None,
                    },
                    Err(e) => Finished {
                        error: Some(Error::Failed {
                            message: format!(
                                "{} runs and answers, but its record could not be written: {e}",
                                plan.version
                            ),
                            hint: Some(format!(
                                "{}then `de-build recover` closes deployment {}",
                                e.hint().map(|h| format!("{h}; ")).unwrap_or_default(),
                                plan.id
                            )),
                        }),
                        record,
                    },
                }
            }
            Some(e) => {
                if self.lost_lock.load(Ordering::SeqCst) {
                    return self.lost(record);
                }
                let recovery = planner::recovery(plan, &run_of(&mut record).progress);
                let error = self.recover(plan, &mut record, recovery, e).await;
                Finished {
                    record,
                    error: Some(error),
                }
            }
        }
    }

    fn lost(&mut self, mut record: Deployment) -> Finished {
        record.result = Outcome::Interrupted;
        record.error = Some("the swarm's deploy lock was taken over by another operator".into());
        // This machine's file only: the swarm's copy belongs to the new
        // holder now (it may be recovering this very deployment), and a
        // save from here could replace its newer copy.
        let _ = self.records.save(&record);
        Finished {
            error: Some(Error::Fatal {
                message: format!(
                    "deployment {} stopped: another operator took over the swarm's deploy lock (this process had not refreshed it in time)",
                    record.id
                ),
                hint: "nothing more was changed; when their deployment has finished, `de-build status` shows what runs and `de-build recover` finishes this one".into(),
            }),
            record,
        }
    }

    /// Recover from `cause` with `recovery`, close the record, and return
    /// the error to exit with (1 aborted, 3 recovered, 4 fatal).
    pub async fn recover(
        &mut self,
        plan: &SwarmPlan,
        record: &mut Deployment,
        recovery: SwarmRecovery,
        cause: Error,
    ) -> Error {
        record.error = Some(cause.to_string());
        if !recovery.steps.is_empty() {
            self.sink
                .note(&format!("recovering: {}", planner::describe(&recovery)));
        }
        let mut left: Option<String> = None;
        // A manager restarting is waited for (bounded), not mistaken for a
        // recovery that cannot be done.
        if let Err(e) = self.wait_for_manager(plan).await {
            left = Some(format!(
                "the swarm manager did not answer within {}s ({e}): once it does, `de-build recover` (deployment {})",
                plan.timeout_secs, plan.id
            ));
        }
        // A job of this deployment still running (its process died during
        // it) would go on changing the data under the recovery: stop it.
        let removed = match left {
            Some(_) => Ok(Vec::new()),
            None => self.world.remove_jobs(&plan.id).await,
        };
        match removed {
            Ok(gone) if !gone.is_empty() => self
                .sink
                .note(&format!("stopped the deployment's jobs still running: {}", gone.join(", "))),
            Ok(_) => {}
            Err(e) => {
                left = Some(format!(
                    "stop the deployment's one-off jobs (`docker service rm` the services labelled de-build.job={}) ({e}); then `de-build recover`",
                    plan.id
                ))
            }
        }
        for (i, rs) in recovery.steps.iter().enumerate() {
            if left.is_some() {
                break;
            }
            if let Err(e) = self.recovery_step(plan, rs, record).await {
                left = Some(left_to_do(plan, &recovery.steps[i..], &e));
                break;
            }
            if matches!(rs, SwarmRecoveryStep::MaintenanceOff { .. }) {
                run_of(record).progress.maintenance_on = false;
            }
        }
        if let Ok(t) = self.world.stack_tasks(&plan.new.namespace).await {
            run_of(record).tasks = t;
        }
        record.data_note = recovery.data_note.clone();
        record.finished = Some(state::now());
        let restored = recovery
            .steps
            .iter()
            .any(|s| matches!(s, SwarmRecoveryStep::Restore { .. }));
        let aborted_hint = if !run_of(record).progress.touched.is_empty() {
            "nothing was deployed before; the services it created were removed"
        } else if recovery.steps.is_empty() {
            "no service was changed"
        } else {
            "no service was changed; maintenance mode is off again"
        };
        let error = crate::exec::deploy::close_recovery(
            record,
            &crate::exec::deploy::ClosedRecovery {
                what: format!("{} of {}", plan.action, plan.version),
                cause,
                left,
                outcome: recovery.outcome,
                restored,
                data_note: recovery.data_note.as_deref(),
                previous: plan.previous.as_ref().map(|p| p.version.as_str()),
                aborted_hint,
            },
        );
        if let Err(e) = self.save(plan, record).await {
            self.sink.note(&format!(
                "warning: the deployment record could not be written ({e}); it may still say running"
            ));
        }
        error
    }

    /// Save the record on this machine (offline reading) and on the swarm
    /// (what every machine reads, the truth of a swarm deployment). A
    /// manager that does not answer (its engine restarting) is waited for,
    /// at most `DE_SWARM_TIMEOUT`, as every other wait for the swarm.
    pub async fn save(&mut self, plan: &SwarmPlan, record: &Deployment) -> Result<()> {
        self.records.save(record)?;
        let timeout = Duration::from_secs(plan.timeout_secs);
        let started = Instant::now();
        // Counted too: a world whose sleep takes no time still ends the wait.
        let mut waited = Duration::ZERO;
        let mut since: Option<Instant> = None;
        loop {
            match self.world.save_record(record).await {
                Ok(()) => {
                    if let Some(t) = since {
                        self.sink.note(&format!(
                            "the swarm manager answers again after {:.0}s: the record is saved on the swarm",
                            t.elapsed().as_secs_f64()
                        ));
                    }
                    return Ok(());
                }
                Err(e)
                    if sw::transient(&e) && started.elapsed() < timeout && waited < timeout =>
                {
                    if since.is_none() {
                        since = Some(Instant::now());
                        self.sink.note(&format!(
                            "the swarm manager did not answer ({e}) while saving the record: waiting for it, {}s at most (DE_SWARM_TIMEOUT)",
                            plan.timeout_secs
                        ));
                    }
                    self.world.sleep(Duration::from_secs(1)).await;
                    waited += Duration::from_secs(1);
                }
                Err(e) if sw::transient(&e) => {
                    return Err(Error::Failed {
                        message: format!(
                            "the swarm manager did not take the record within {}s (DE_SWARM_TIMEOUT): {e}",
                            plan.timeout_secs
                        ),
                        hint: Some("once the manager answers (`docker node ls` on it)".into()),
                    })
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Wait until the manager answers, at most `DE_SWARM_TIMEOUT`.
    async fn wait_for_manager(&mut self, plan: &SwarmPlan) -> Result<()> {
        let started = Instant::now();
        let mut said = false;
        loop {
            match self.world.manager_time().await {
                Ok(_) => return Ok(()),
                Err(e)
                    if sw::transient(&e)
                        && started.elapsed() < Duration::from_secs(plan.timeout_secs) =>
                {
                    if !said {
                        self.sink.note(&format!(
                            "the swarm manager does not answer ({e}): waiting for it before recovering"
                        ));
                        said = true;
                    }
                    self.world.sleep(Duration::from_secs(1)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn recovery_step(
        &mut self,
        plan: &SwarmPlan,
        rs: &SwarmRecoveryStep,
        record: &mut Deployment,
    ) -> Result<()> {
        match rs {
            SwarmRecoveryStep::RevertServices { services } => {
                for r in services {
                    match &r.previous {
                        None => {
                            self.world.remove(&r.service).await?;
                            self.sink.note(&format!("removed {}", r.service));
                        }
                        Some(spec) => {
                            // Back stop-first: start-first needs a node
                            // with room (a free host port) for each new
                            // task, and after a failed update the old and
                            // new tasks may hold every node. Then the
                            // recorded spec exactly (its update order
                            // again; no task changes).
                            let mut back = spec.clone();
                            back["UpdateConfig"]["Order"] = Value::from("stop-first");
                            let since = self.world.manager_time().await?;
                            self.world.apply(&back).await?;
                            let sink = &mut *self.sink;
                            let mut note = |l: &str| sink.note(l);
                            self.world
                                .wait_converged(
                                    &r.service,
                                    since,
                                    Duration::from_secs(plan.timeout_secs),
                                    &mut note,
                                )
                                .await?;
                            if &back != spec {
                                self.world.apply(spec).await?;
                            }
                        }
                    }
                }
                Ok(())
            }
            SwarmRecoveryStep::Restore { image, backups } => {
                self.restore(plan, image, backups, record).await
            }
            SwarmRecoveryStep::MaintenanceOff { image } => {
                self.maintenance(plan, image, false, record).await
            }
        }
    }

    async fn step(
        &mut self,
        plan: &SwarmPlan,
        step: &SwarmStep,
        record: &mut Deployment,
    ) -> Result<()> {
        match step {
            SwarmStep::Snapshot { to, text } => self.world.write_snapshot(to, text),
            SwarmStep::MaintenanceOn { image } => self.maintenance(plan, image, true, record).await,
            SwarmStep::MaintenanceOff { image } => {
                self.maintenance(plan, image, false, record).await
            }
            SwarmStep::Drain {
                image,
                timeout_secs,
            } => self.drain(plan, image, *timeout_secs, record).await,
            SwarmStep::Backup { image } => {
                for site in plan.sites.args() {
                    let out = self
                        .bench(
                            plan,
                            "backup",
                            image,
                            &bench::site_args(&site, &["backup"]),
                            record,
                        )
                        .await?;
                    let found = bench::parse_backups(&site, &out);
                    if found.is_empty() {
                        return Err(Error::failed(format!(
                            "`bench --site {site} backup` printed no database backup (no `Database:` line)"
                        )));
                    }
                    run_of(record).progress.backups.extend(found.clone());
                    record.backups.extend(found);
                }
                Ok(())
            }
            SwarmStep::Networks { names } => {
                for n in names {
                    if self.world.ensure_network(&plan.new.namespace, n).await? {
                        self.sink.note(&format!("created network {n}"));
                    }
                }
                Ok(())
            }
            SwarmStep::Jobs { services } => {
                for name in services {
                    let def = service_def(&plan.new, name)?;
                    let mut spec = sw::service_spec(&plan.new, def, &plan.id);
                    spec["TaskTemplate"]["RestartPolicy"] =
                        serde_json::json!({"Condition": "none"});
                    spec["Labels"]["de-build.job"] = serde_json::json!(plan.id);
                    let job = JobRun {
                        step: "jobs".into(),
                        name: plan.new.engine_name(name),
                        spec,
                        command: def
                            .command
                            .clone()
                            .or_else(|| def.entrypoint.clone())
                            .unwrap_or_else(|| vec![name.clone()]),
                    };
                    self.job(plan, job, record).await?;
                }
                Ok(())
            }
            SwarmStep::Migrate { image } => {
                for site in plan.sites.args() {
                    self.bench(
                        plan,
                        "migrate",
                        image,
                        &bench::site_args(&site, &["migrate"]),
                        record,
                    )
                    .await?;
                }
                Ok(())
            }
            SwarmStep::Restore { image, backups } => {
                self.restore(plan, image, backups, record).await
            }
            SwarmStep::Update { services, .. } => {
                for name in services {
                    let short = name
                        .strip_prefix(&format!("{}_", plan.new.namespace))
                        .unwrap_or(name);
                    let def = service_def(&plan.new, short)?;
                    let spec = sw::service_spec(&plan.new, def, &plan.id);
                    let since = self.world.manager_time().await?;
                    self.world.apply(&spec).await?;
                    let sink = &mut *self.sink;
                    let mut note = |l: &str| sink.note(l);
                    let tasks = self
                        .world
                        .wait_converged(
                            name,
                            since,
                            Duration::from_secs(plan.timeout_secs),
                            &mut note,
                        )
                        .await?;
                    let on: Vec<String> = tasks
                        .iter()
                        .filter(|t| t.desired == "running")
                        .map(|t| t.node.clone())
                        .collect();
                    self.sink
                        .note(&format!("{name} converged: tasks on {}", on.join(", ")));
                }
                Ok(())
            }
            SwarmStep::RemoveOrphans { services } => {
                for s in services {
                    self.world.remove(s).await?;
                    self.sink.note(&format!("removed {s}"));
                }
                Ok(())
            }
            SwarmStep::Verify => {
                let tasks = self.world.stack_tasks(&plan.new.namespace).await?;
                let problems = verify(&plan.new, &tasks);
                run_of(record).tasks = tasks;
                if problems.is_empty() {
                    Ok(())
                } else {
                    Err(Error::failed(format!(
                        "the stack does not run {} everywhere: {}",
                        plan.version,
                        problems.join("; ")
                    )))
                }
            }
            SwarmStep::HealthGate {
                url,
                timeout_secs,
                gate,
            } => {
                let took = self
                    .world
                    .wait_healthy(url, Duration::from_secs(*timeout_secs), *gate)
                    .await?;
                self.sink
                    .note(&format!("answered after {:.1}s", took.as_secs_f64()));
                Ok(())
            }
        }
    }

    /// The spec of a bench job of `image`: modelled on the backend as the
    /// release of that image runs it — the engine's spec for the release
    /// that runs now (whoever deployed it), the file's for the new one.
    fn job_spec(&self, plan: &SwarmPlan, image: &str, name: &str, cmd: &[String]) -> Result<Value> {
        let backend = plan.new.engine_name(&plan.backend_service);
        if let Some(prev) = plan.previous.as_ref().filter(|p| p.image == image) {
            let spec = plan.previous_specs.get(&backend).ok_or_else(|| {
                Error::failed(format!(
                    "no spec of {backend} was recorded before the deployment, so no bench job of {} can be made",
                    prev.version
                ))
            })?;
            return Ok(sw::job_spec_from_engine(spec, image, name, cmd, &plan.id));
        }
        let def = plan
            .new
            .stack
            .service(&plan.backend_service)
            .ok_or_else(|| Error::Failed {
                message: format!(
                    "the compose file of {} has no service {} (DE_BACKEND_SERVICE)",
                    plan.new.version, plan.backend_service
                ),
                hint: Some("bench runs as a one-off job modelled on that service".into()),
            })?;
        Ok(sw::job_spec(&plan.new, def, image, name, cmd, &plan.id))
    }

    async fn job(
        &mut self,
        plan: &SwarmPlan,
        job: JobRun,
        record: &mut Deployment,
    ) -> Result<String> {
        self.job_with(plan, job, None, &|_| None, record).await
    }

    /// Run a job; a non-zero exit is an error naming it, with the hint
    /// `hint` finds in its output.
    async fn job_with(
        &mut self,
        plan: &SwarmPlan,
        job: JobRun,
        stdin: Option<&Secret>,
        hint: &dyn Fn(&str) -> Option<String>,
        record: &mut Deployment,
    ) -> Result<String> {
        self.sink.line(&format!("$ {}", job.command.join(" ")));
        let sink = &mut *self.sink;
        let mut on_line = |l: &str| sink.line(l);
        let (rec, out) = self
            .world
            .run_job(
                &job,
                stdin,
                Duration::from_secs(plan.timeout_secs),
                &mut on_line,
            )
            .await?;
        let failed = (!rec.completed()).then(|| job_failure(&rec));
        run_of(record).jobs.push(rec);
        if let Some(message) = failed {
            return Err(Error::Failed {
                message,
                hint: hint(&out),
            });
        }
        Ok(out)
    }

    /// Run bench in a one-off job; a non-zero exit is an error naming it.
    async fn bench(
        &mut self,
        plan: &SwarmPlan,
        step: &str,
        image: &str,
        cmd: &[String],
        record: &mut Deployment,
    ) -> Result<String> {
        let job = self.bench_job(plan, step, image, cmd)?;
        self.job(plan, job, record).await
    }

    fn bench_job(
        &mut self,
        plan: &SwarmPlan,
        step: &str,
        image: &str,
        cmd: &[String],
    ) -> Result<JobRun> {
        let n = self.jobs_started;
        self.jobs_started += 1;
        let name = sw::job_name(&plan.new.namespace, step, &plan.id, n);
        Ok(JobRun {
            step: step.into(),
            name: name.clone(),
            spec: self.job_spec(plan, image, &name, cmd)?,
            command: cmd.to_vec(),
        })
    }

    async fn maintenance(
        &mut self,
        plan: &SwarmPlan,
        image: &str,
        on: bool,
        record: &mut Deployment,
    ) -> Result<()> {
        let state = if on { "on" } else { "off" };
        for site in plan.sites.args() {
            self.bench(
                plan,
                &format!("maintenance-{state}"),
                image,
                &bench::site_args(&site, &["set-maintenance-mode", state]),
                record,
            )
            .await?;
        }
        Ok(())
    }

    async fn drain(
        &mut self,
        plan: &SwarmPlan,
        image: &str,
        timeout_secs: u64,
        record: &mut Deployment,
    ) -> Result<()> {
        let started = Instant::now();
        for site in plan.sites.args() {
            loop {
                let cmd = bench::site_args(&site, &["ready-for-migration"]);
                let n = self.jobs_started;
                self.jobs_started += 1;
                let name = sw::job_name(&plan.new.namespace, "drain", &plan.id, n);
                let job = JobRun {
                    step: "drain".into(),
                    name: name.clone(),
                    spec: self.job_spec(plan, image, &name, &cmd)?,
                    command: cmd.clone(),
                };
                self.sink.line(&format!("$ {}", cmd.join(" ")));
                let sink = &mut *self.sink;
                let mut on_line = |l: &str| sink.line(l);
                let (rec, out) = self
                    .world
                    .run_job(
                        &job,
                        None,
                        Duration::from_secs(plan.timeout_secs),
                        &mut on_line,
                    )
                    .await?;
                let code = rec.exit_code.unwrap_or(-1);
                // Not run to its end (rejected, shut down): no answer at all.
                let stopped = !matches!(rec.state.as_str(), "" | "complete" | "failed");
                let failure = job_failure(&rec);
                run_of(record).jobs.push(rec);
                if stopped {
                    return Err(Error::failed(failure));
                }
                match bench::readiness(code, &out) {
                    Readiness::Ready => break,
                    Readiness::Unknown => {
                        return Err(Error::failed(format!(
                            "`{}` exited with {code} and did not say whether {site} is ready for migration",
                            cmd.join(" ")
                        )))
                    }
                    Readiness::NotReady if started.elapsed().as_secs() >= timeout_secs => {
                        return Err(Error::failed(format!(
                            "{site} still has pending background jobs after {timeout_secs}s (DE_DRAIN_TIMEOUT)"
                        )))
                    }
                    Readiness::NotReady => self.world.sleep(Duration::from_millis(500)).await,
                }
            }
        }
        Ok(())
    }

    /// `bench restore` asks for the database root password unless the sites
    /// hold it: it reads `DB_PASSWORD` on its stdin (then end-of-file, so
    /// it never waits on a prompt), as on one host.
    async fn restore(
        &mut self,
        plan: &SwarmPlan,
        image: &str,
        backups: &[Backup],
        record: &mut Deployment,
    ) -> Result<()> {
        let pw = self.db_root_password;
        for b in backups {
            let cmd = bench::site_args(&b.site, &["restore", &b.path]);
            let job = self.bench_job(plan, "restore", image, &cmd)?;
            let hint = |out: &str| bench::restore_hint(out, pw.is_some());
            self.job_with(plan, job, pw, &hint, record).await?;
        }
        Ok(())
    }
}

fn service_def<'a>(stack: &'a SwarmStack, name: &str) -> Result<&'a ServiceDef> {
    stack.stack.service(name).ok_or_else(|| {
        Error::failed(format!(
            "service {name} is not in the stack of {}",
            stack.version
        ))
    })
}

/// What does not run as planned: app services (those of the release's
/// image) must run its digest on every task that should run, and every
/// long-running service must have its tasks running.
pub fn verify(stack: &SwarmStack, tasks: &[TaskState]) -> Vec<String> {
    let mut out = Vec::new();
    for def in stack.stack.services.iter().filter(|d| d.role != Role::Job) {
        let name = stack.engine_name(&def.name);
        let mine: Vec<&TaskState> = tasks
            .iter()
            .filter(|t| t.service == name && t.desired == "running")
            .collect();
        if mine.is_empty() {
            out.push(format!("{name} has no task that should run"));
        }
        for t in mine {
            if t.state != "running" {
                out.push(t.describe());
            } else if def.image == stack.image && t.image != stack.image {
                out.push(format!(
                    "{} runs {} instead of {}",
                    t.describe(),
                    t.image,
                    stack.image
                ));
            }
        }
    }
    out
}

/// What a job that did not complete did, as the swarm says it. Only a task
/// that ended `complete` ran to its end: one its node stopped (an engine
/// restart) may report exit code 0, and is not said as an exit.
fn job_failure(rec: &JobRecord) -> String {
    let ended = match (rec.state.as_str(), rec.exit_code) {
        ("" | "complete" | "failed", Some(c)) if c != 0 => format!("exited with {c}"),
        ("", None) => "exited with no exit code".into(),
        (state, code) => format!(
            "did not complete: its task ended `{state}`{}{}",
            rec.error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default(),
            code.map(|c| format!(" (exit code {c})"))
                .unwrap_or_default()
        ),
    };
    format!(
        "`{}` {ended} (one-off job on {}, {} task(s))",
        rec.command.join(" "),
        rec.node,
        rec.tasks
    )
}

fn write_failure(e: Error) -> Error {
    Error::failed(format!("the deployment record could not be written: {e}"))
}

/// What is left after recovery step `rest[0]` failed, as commands.
fn left_to_do(plan: &SwarmPlan, rest: &[SwarmRecoveryStep], e: &Error) -> String {
    let hint = e.hint().map(|h| format!(": {h}")).unwrap_or_default();
    let mut out = vec![format!("{} failed ({e}){hint}", rest[0])];
    for s in rest {
        out.push(match s {
            SwarmRecoveryStep::RevertServices { services } => services
                .iter()
                .map(|r| match &r.previous {
                    Some(_) => format!(
                        "`docker service rollback {}` (check with `docker service inspect`)",
                        r.service
                    ),
                    None => format!("`docker service rm {}`", r.service),
                })
                .collect::<Vec<_>>()
                .join("; "),
            SwarmRecoveryStep::Restore { backups, .. } => format!(
                "restore: {}",
                backups
                    .iter()
                    .map(|b| format!("bench --site {} restore {}", b.site, b.path))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            SwarmRecoveryStep::MaintenanceOff { .. } => format!(
                "maintenance off: {}",
                plan.sites
                    .args()
                    .iter()
                    .map(|s| format!("bench --site {s} set-maintenance-mode off"))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        });
    }
    out.push(format!(
        "or run `de-build recover` to retry (deployment {})",
        plan.id
    ));
    out.join("; then ")
}

/// The recovery of an interrupted swarm deployment, from its record.
pub fn recovery_of(record: &Deployment) -> Option<(SwarmPlan, SwarmRecovery)> {
    let run = record.swarm.as_ref()?;
    let mut progress = run.progress.clone();
    // A process that died mid-step may have left maintenance on.
    if run.plan.previous_running
        && run
            .plan
            .steps
            .iter()
            .any(|s| s.step.name() == "maintenance-on")
    {
        progress.maintenance_on = true;
    }
    Some((run.plan.clone(), planner::recovery(&run.plan, &progress)))
}

#[cfg(test)]
#[path = "swarm_tests.rs"]
mod tests;
