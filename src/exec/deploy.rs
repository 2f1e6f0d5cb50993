//! Runs a [`DeployPlan`] through the ports, one step at a time, saving the
//! record before and after each; on failure runs the recovery the plan
//! computes for the progress reached. Also runs the recovery of an
//! interrupted deployment (`de-build recover`).
//!
//! Invariants: the record is written before anything changes and after every
//! step (a failed write stops the deployment); every message about what was
//! done or is left is computed from what happened.

use crate::adapters::bench::{self, Readiness};
use crate::adapters::engine::{ContainerFile, ContainerInfo};
use crate::adapters::nginx::{self, Pin};
use crate::error::{Error, Result};
use crate::exec::ports::{ComposeCall, Records, World};
use crate::plan::deploy::{
    self as planner, DeployPlan, Door, Gate, OnDrainTimeout, Progress, Recovery, RecoveryStep,
    StackSpec, Step, Tier, WebTier,
};
use crate::record::state::{self, Backup, Deployment, Outcome, StepRecord};
use crate::secret::Secret;
use crate::util::short_id;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// frappe_docker's ports: gunicorn binds 8000 in the backend, the nginx
/// template listens on 8080 (resources/core/nginx/nginx-template.conf).
const BACKEND_PORT: u16 = 8000;
const FRONTEND_PORT: u16 = 8080;
/// Where frappe_docker's image keeps the release's built assets
/// (images/production/Containerfile moves sites/assets there;
/// main-entrypoint.sh links sites/assets to it).
const ASSETS_DIR: &str = "/home/frappe/frappe-bench/assets";
/// frappe_docker's image declares it a VOLUME: each container has its own
/// anonymous one, which goes when a switch removes the container.
const LOGS_DIR: &str = "/home/frappe/frappe-bench/logs";
/// How long a frontend may take to write its nginx configuration after it
/// started: NGINX_DUMP_RETRIES more `nginx -T`, NGINX_DUMP_PAUSE apart.
const NGINX_DUMP_RETRIES: u32 = 40;
const NGINX_DUMP_PAUSE: Duration = Duration::from_millis(250);
/// How long a door's reload may take to reach its workers.
const DOOR_SETTLE: Duration = Duration::from_millis(500);
/// How long an old container may take to finish its requests.
const RETIRE_GRACE: Duration = Duration::from_secs(30);

/// Where step progress and bench output go (terminal and the deployment log).
pub trait Sink: Send {
    fn step(&mut self, index: usize, total: usize, step: &str);
    fn step_done(&mut self, seconds: f64, ok: bool);
    fn line(&mut self, text: &str);
    fn note(&mut self, text: &str);
}

/// The final state of a run: the record, and the error to exit with if any.
pub struct Finished {
    pub record: Deployment,
    pub error: Option<Error>,
}

pub struct Executor<'a, W: World, R: Records, S: Sink> {
    pub world: &'a W,
    pub records: &'a R,
    pub sink: &'a mut S,
    /// Set by the first SIGINT/SIGTERM/SIGHUP: stop after the running step.
    pub interrupted: Arc<AtomicBool>,
    /// The database root password `bench restore` asks for (frappe_docker
    /// stores none in the sites): handed to it on stdin, never in argv.
    pub db_root_password: Option<&'a Secret>,
    /// `DE_SITES=all` resolved to the sites of the bench, once.
    pub sites: Option<Vec<String>>,
    /// The project's containers as listed once inside a maintenance window.
    pub listing: Listing,
}

/// One listing of a project's containers, kept while only steps that change
/// no container run (maintenance, drain, backup, migrate, the sealed gate, a
/// pinned cut-over): inside the window every engine round trip is time the
/// site is closed.
#[derive(Default)]
pub struct Listing {
    held: std::sync::Mutex<Option<(String, Vec<ContainerInfo>)>>,
    /// Set while such a step runs; any other step forgets the listing.
    on: AtomicBool,
}

impl Listing {
    /// Whether a listing taken before `step` still holds after it. A pinned
    /// cut-over only pauses workers; the listing's state is not used for
    /// them afterwards.
    fn holds_across(step: &Step, progress: &Progress) -> bool {
        match step {
            Step::MaintenanceOn { .. }
            | Step::Drain { .. }
            | Step::Backup { .. }
            | Step::Migrate { .. }
            | Step::HealthGate { .. }
            | Step::MaintenanceOff { .. } => true,
            Step::Cutover { .. } => progress.fronts_pinned,
            _ => false,
        }
    }

    fn set(&self, on: bool) {
        self.on.store(on, Ordering::SeqCst);
        if !on {
            *self.held.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }

    fn get(&self, project: &str) -> Option<Vec<ContainerInfo>> {
        if !self.on.load(Ordering::SeqCst) {
            return None;
        }
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.as_ref()
            .filter(|(p, _)| p == project)
            .map(|(_, l)| l.clone())
    }

    fn keep(&self, project: &str, list: &[ContainerInfo]) {
        if self.on.load(Ordering::SeqCst) {
            *self.held.lock().unwrap_or_else(|e| e.into_inner()) =
                Some((project.to_string(), list.to_vec()));
        }
    }
}

/// A new record for `plan`, before anything runs.
pub fn new_record(plan: &DeployPlan) -> Deployment {
    let (user, host) = state::whoami();
    Deployment {
        id: plan.id.clone(),
        action: plan.action,
        version: plan.version.clone(),
        image_id: plan.image_id.clone(),
        previous_version: plan.previous.as_ref().map(|p| p.version.clone()),
        project: plan.new.target.project.clone(),
        compose_file: plan.new.target.main_file().to_path_buf(),
        compose_source: plan.compose_sources.first().cloned().unwrap_or_default(),
        env: plan.new.env.clone(),
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
        plan: Some(plan.clone()),
        progress: Progress::default(),
        swarm: None,
    }
}

impl<W: World, R: Records, S: Sink> Executor<'_, W, R, S> {
    fn save(&self, d: &Deployment) -> Result<()> {
        self.records.save(d)
    }

    /// Run the whole plan. The record is saved first; if that fails nothing
    /// was changed.
    pub async fn run(&mut self, plan: &DeployPlan) -> Finished {
        let mut record = new_record(plan);
        if let Err(e) = self.save(&record) {
            return Finished {
                record,
                error: Some(Error::Failed {
                    message: format!("{} of {} did not start: {e}", plan.action, plan.version),
                    hint: Some(
                        "nothing was changed; free some space or fix the permissions of .de-build/"
                            .into(),
                    ),
                }),
            };
        }
        let total = plan.steps.len();
        let mut failure: Option<Error> = None;
        for (i, planned) in plan.steps.iter().enumerate() {
            let step = &planned.step;
            if self.interrupted.load(Ordering::SeqCst) {
                failure = Some(Error::failed("interrupted by a signal"));
                break;
            }
            planner::starting(&mut record.progress, step);
            if let Err(e) = self.save(&record) {
                failure = Some(write_failure(e));
                break;
            }
            self.listing
                .set(Listing::holds_across(step, &record.progress));
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
                planner::finished(&mut record.progress, step);
            }
            let saved = self.save(&record);
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
                match self.save(&record) {
                    Ok(()) => Finished {
                        record,
                        error: None,
                    },
                    // The release runs and serves, but nothing says so on disk.
                    Err(e) => Finished {
                        error: Some(Error::Failed {
                            message: format!(
                                "{} {} is up and passed its health gate, but its record could not be written: {e}",
                                plan.action, plan.version
                            ),
                            hint: Some(format!(
                                "free some space, then `de-build recover` closes deployment {} (status and rollback read it)",
                                plan.id
                            )),
                        }),
                        record,
                    },
                }
            }
            Some(e) => {
                let recovery = planner::recovery(plan, &record.progress);
                let error = self.recover(plan, &mut record, recovery, e).await;
                Finished {
                    record,
                    error: Some(error),
                }
            }
        }
    }

    /// Recover from `cause` with `recovery`, close the record, and return the
    /// error to exit with (exit 1 aborted, 3 recovered, 4 fatal).
    pub async fn recover(
        &mut self,
        plan: &DeployPlan,
        record: &mut Deployment,
        recovery: Recovery,
        cause: Error,
    ) -> Error {
        self.listing.set(false);
        record.error = Some(cause.to_string());
        if !recovery.steps.is_empty() {
            self.sink
                .note(&format!("recovering: {}", planner::describe(&recovery)));
        }
        let mut left: Option<String> = None;
        let mut maintenance_off_done = false;
        let ended = record.progress.ended.clone();
        let paused = record.progress.paused.clone();
        for (i, rs) in recovery.steps.iter().enumerate() {
            match self.recovery_step(plan, rs, &ended, &paused).await {
                Ok(()) => {
                    if matches!(rs, RecoveryStep::MaintenanceOff { .. }) {
                        maintenance_off_done = true;
                    }
                }
                Err(e) => {
                    left = Some(left_to_do(plan, &recovery.steps[i..], &e));
                    break;
                }
            }
        }
        if maintenance_off_done {
            record.progress.maintenance_on = false;
        }
        record.data_note = recovery.data_note.clone();
        record.finished = Some(state::now());
        let restored = recovery
            .steps
            .iter()
            .any(|s| matches!(s, RecoveryStep::Restore { .. }));
        let aborted_hint = if record.progress.stack_touched {
            "nothing was deployed before; the failed stack was taken down"
        } else if recovery.steps.is_empty() {
            "nothing was changed"
        } else {
            "the stack was not touched; maintenance mode is off again"
        };
        let error = close_recovery(
            record,
            &ClosedRecovery {
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
        if let Err(e) = self.save(record) {
            self.sink.note(&format!(
                "warning: the deployment record could not be written ({e}); it may still say running"
            ));
        }
        error
    }

    async fn recovery_step(
        &mut self,
        plan: &DeployPlan,
        rs: &RecoveryStep,
        ended: &[String],
        paused: &[String],
    ) -> Result<()> {
        match rs {
            RecoveryStep::TakeDown { stack } => {
                let removed = self.down(stack).await?;
                if !removed.is_empty() {
                    self.sink.note(&format!("removed: {}", removed.join(", ")));
                }
                Ok(())
            }
            RecoveryStep::BringUp { stack } => {
                // Those a cut-over froze go on as they were (drained, in
                // maintenance); compose would leave them paused.
                for id in paused {
                    self.world.pause(id, false).await?;
                }
                // Compose starts a stopped container again but leaves one
                // it sees running: those a cut-over told to stop must have
                // ended first.
                self.wait_ended(
                    &stack.target.project,
                    ended,
                    RETIRE_GRACE,
                    Duration::from_secs(1),
                )
                .await?;
                self.world
                    .compose(&ComposeCall::Up(stack.target.clone()), &stack.env)
                    .await?;
                self.verify_image(stack).await
            }
            RecoveryStep::Restore { project, backups } => {
                self.restore(plan, project, backups).await
            }
            RecoveryStep::MaintenanceOff { project } => {
                self.maintenance(plan, project, false).await
            }
            RecoveryStep::RemoveBeside {
                project,
                services,
                image_id,
                ..
            } => {
                for c in self.world.containers(project).await? {
                    if services.contains(&c.service) && &c.image_id == image_id {
                        self.world.remove_container(&c.id).await?;
                        self.sink
                            .note(&format!("removed {} ({})", c.name, c.service));
                    }
                }
                Ok(())
            }
            RecoveryStep::ReloadDoor { project, door } => {
                let to = plan
                    .previous
                    .as_ref()
                    .map(|p| (p.image_id.as_str(), p.version.as_str()));
                self.reload_door(project, door, to).await.map(|_| ())
            }
        }
    }

    async fn step(
        &mut self,
        plan: &DeployPlan,
        step: &Step,
        record: &mut Deployment,
    ) -> Result<()> {
        match step {
            Step::Snapshot { sources, to } => sources
                .iter()
                .zip(to)
                .try_for_each(|(from, to)| self.world.snapshot(from, to)),
            Step::MaintenanceOn { project } => self.maintenance(plan, project, true).await,
            Step::Drain {
                project,
                timeout_secs,
                on_timeout,
            } => {
                // A migrating switch with pinned frontends: they reload onto
                // the new backends while the queues drain (in maintenance old
                // and new answer the same 503), one engine round trip less
                // inside the window for the cut-over.
                let cut_over = plan.steps.iter().find_map(|s| match &s.step {
                    Step::Cutover { to, web, .. } => Some((to, web)),
                    _ => None,
                });
                let fronts = match cut_over {
                    Some((to, web)) if record.progress.fronts_pinned => {
                        self.running_of(&to.target.project, &web.frontend, &to.image_id)
                            .await?
                    }
                    _ => Vec::new(),
                };
                if fronts.is_empty() {
                    return self.drain(plan, project, *timeout_secs, *on_timeout).await;
                }
                let world = self.world;
                let (drained, moved) = futures_util::future::join(
                    self.drain(plan, project, *timeout_secs, *on_timeout),
                    reload_all(world, &fronts),
                )
                .await;
                moved?;
                record.progress.fronts_moved = true;
                drained
            }
            Step::Backup { project } => {
                let c = self.backend(plan, project).await?;
                for site in self.site_list(plan, &c).await? {
                    let out = self
                        .bench(&c, &bench::site_args(&site, &["backup"]))
                        .await?;
                    let found = bench::parse_backups(&site, &out);
                    if found.is_empty() {
                        return Err(Error::failed(format!(
                            "`bench --site {site} backup` printed no database backup (no `Database:` line)"
                        )));
                    }
                    record.progress.backups.extend(found.clone());
                    record.backups.extend(found);
                }
                Ok(())
            }
            Step::Replace {
                from,
                to,
                web_moved,
            } => {
                if *web_moved {
                    // Those the cut-over froze get SIGTERM now (the engine
                    // thaws a paused container it sends its stop signal,
                    // and the signal is handled first: an idle rq worker
                    // exits without taking a job). Then they and any told
                    // to stop in the window have ended; one still running
                    // (or paused) 5 s on is stopped.
                    let paused = std::mem::take(&mut record.progress.paused);
                    let project = &to.target.project;
                    if !paused.is_empty() {
                        record.progress.ended.extend(paused.iter().cloned());
                        self.save(record)?;
                        // An image whose stop signal is another stays
                        // paused: `docker stop` ends it below (the engine
                        // thaws it for its own stop signal).
                        for id in &paused {
                            self.world.signal(id, "SIGTERM").await?;
                        }
                    }
                    let ended = record.progress.ended.clone();
                    let ignored = self
                        .wait_ended(project, &ended, Duration::from_secs(5), RETIRE_GRACE)
                        .await?;
                    if !ignored.is_empty() {
                        self.sink.note(&format!(
                            "warning: {} had not ended 5 s after SIGTERM (stopped now, after maintenance went off)",
                            ignored.join(", ")
                        ));
                    }
                    self.remove_retired(from, to).await?;
                }
                let removed = self.replace(from, to).await?;
                if !removed.is_empty() {
                    self.sink.note(&format!(
                        "removed old containers compose left behind: {}",
                        removed.join(", ")
                    ));
                }
                Ok(())
            }
            Step::Down { stack } => {
                let removed = self.down(stack).await?;
                if !removed.is_empty() {
                    self.sink.note(&format!(
                        "removed containers compose left behind: {}",
                        removed.join(", ")
                    ));
                }
                Ok(())
            }
            Step::Up { stack } => {
                self.world
                    .compose(&ComposeCall::Up(stack.target.clone()), &stack.env)
                    .await
            }
            Step::VerifyImage { stack } => self.verify_image(stack).await,
            Step::WaitOneshots {
                project,
                services,
                timeout_secs,
            } => self.wait_oneshots(project, services, *timeout_secs).await,
            Step::Migrate { project, image_id } => {
                let c = match image_id {
                    Some(image) => self.backend_of(plan, project, image).await?,
                    None => self.backend(plan, project).await?,
                };
                for site in self.site_list(plan, &c).await? {
                    self.bench(&c, &bench::site_args(&site, &["migrate"]))
                        .await?;
                }
                Ok(())
            }
            Step::Restore { project, backups } => self.restore(plan, project, backups).await,
            Step::HealthGate {
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
            Step::MaintenanceOff { project } => self.maintenance(plan, project, false).await,
            Step::StartBeside { stack, web, tier } => {
                self.start_beside(stack, web, *tier, record).await
            }
            Step::ProbeBeside {
                stack,
                web,
                url_path,
                timeout_secs,
                tier,
            } => {
                self.probe_beside(stack, web, url_path, *timeout_secs, *tier)
                    .await
            }
            Step::ShareAssets { from, to, web } => self.share_assets(from, to, web).await,
            Step::ReloadDoor { project, door } => {
                record.progress.door_pinned = self
                    .reload_door(project, door, Some((&plan.new.image_id, &plan.version)))
                    .await?;
                Ok(())
            }
            Step::RetireOld {
                from,
                to,
                web,
                door,
                tier,
            } => {
                let pinned = (record.progress.door_pinned, record.progress.fronts_pinned);
                self.retire_old(from, to, web, door, *tier, pinned).await
            }
            Step::Cutover { from, to, web } => self.cutover(from, to, web, record).await,
        }
    }

    /// The cut-over inside the maintenance window. When the new frontends'
    /// upstreams were pinned to the new backends before the window (`pinned`),
    /// one reload moves them and only the old workers and scheduler stop
    /// here (no job may run old code on the migrated schema); the old web
    /// upstreams, which nothing routes to any more, stop after the window.
    /// Otherwise (a frontend whose config names its backends another way)
    /// the frontends resolve by name: they learn the new backends beside
    /// the old, the old ones stop, and they resolve again.
    async fn cutover(
        &mut self,
        from: &StackSpec,
        to: &StackSpec,
        web: &WebTier,
        record: &mut Deployment,
    ) -> Result<()> {
        let pinned = record.progress.fronts_pinned;
        let project = &to.target.project;
        let reload = nginx_cmd(&["-s", "reload"]);
        // One listing (the window's): every engine call here is inside it.
        let all = self.listed(project).await?;
        let fronts: Vec<ContainerInfo> = all
            .iter()
            .filter(|c| c.image_id == to.image_id && c.state == "running")
            .filter(|c| c.service == web.frontend)
            .cloned()
            .collect();
        let old: Vec<ContainerInfo> = all
            .iter()
            .filter(|c| c.image_id == from.image_id && c.state == "running")
            .cloned()
            .collect();
        // First the new frontends learn the new backends (in maintenance old
        // and new answer the same 503), so a request meets a running backend
        // while the old ones stop. Pinned, they send only to the new ones
        // after it, and the old workers are told to stop meanwhile (below).
        if !pinned {
            for f in &fronts {
                self.run_checked(f, &reload).await?;
            }
        }
        let (web_old, rest): (Vec<&ContainerInfo>, Vec<&ContainerInfo>) =
            old.iter().partition(|c| web.upstream.contains(&c.service));
        // Pinned, the old backends and websockets stay up until after the
        // window: nginx's `-s reload` returns before its workers took the
        // new config, and until they did a frontend still sends to them
        // (they answer the maintenance 503, as the new ones do).
        let web_old = if pinned { Vec::new() } else { web_old };
        if pinned {
            // On disk before any is frozen: a recovery after a kill -9
            // thaws them.
            record.progress.paused = rest.iter().map(|c| c.id.clone()).collect();
            self.save(record)?;
        }
        // The old web upstreams and the old workers stop at once; as soon as
        // the upstreams are down (a stopped container leaves the engine's
        // DNS), the frontends resolve again. An address that vanished is
        // not refused: a frontend that still knew it would wait on it.
        let world = &self.world;
        let moved = record.progress.fronts_moved;
        let reload_fronts = || reload_all(*world, &fronts);
        let web_part = async {
            if pinned && moved {
                return Ok(());
            }
            if pinned {
                return reload_fronts().await;
            }
            if web_old.is_empty() {
                return Ok(());
            }
            stop_all(*world, &web_old).await?;
            reload_fronts().await
        };
        // The old workers and scheduler were drained and the site is in
        // maintenance: they only have to take no new job. With pinned
        // frontends they are frozen (`docker pause`: the cgroup freezer, a
        // few ms, nothing for the engine to clean up) and get SIGTERM after
        // the window; ending them here cost the window ~0.1 s of the
        // engine's bookkeeping of their exits on this 2-core machine. One
        // that cannot be frozen gets SIGTERM now, as before (an rq worker
        // told to stop while idle takes no job; its exit is confirmed after
        // the window). SIGTERM is frappe_docker's stop signal (its images
        // set none): the engine restarts no container it sent it.
        let workers_part = async {
            if pinned {
                let freezes = rest.iter().map(|c| world.pause(&c.id, true));
                let frozen = futures_util::future::join_all(freezes).await;
                let (unfrozen, why): (Vec<&ContainerInfo>, Vec<String>) = rest
                    .iter()
                    .zip(frozen)
                    .filter_map(|(c, r)| r.err().map(|e| (*c, e.to_string())))
                    .unzip();
                signal_all(*world, &unfrozen).await?;
                return Ok((unfrozen, why));
            }
            stop_all(*world, &rest)
                .await
                .map(|()| (Vec::new(), Vec::new()))
        };
        let (a, b) = futures_util::future::join(web_part, workers_part).await;
        a?;
        let (unfrozen, why) = b?;
        if !unfrozen.is_empty() {
            record
                .progress
                .paused
                .retain(|id| !unfrozen.iter().any(|c| &c.id == id));
            record
                .progress
                .ended
                .extend(unfrozen.iter().map(|c| c.id.clone()));
        }
        // Their logs are kept and they are removed after maintenance went
        // off (the replace step), outside the window.
        let stopped: Vec<&str> = web_old
            .iter()
            .chain(&rest)
            .map(|c| c.name.as_str())
            .collect();
        let mut note = if stopped.is_empty() {
            "nothing ran the old image any more".to_string()
        } else if pinned && unfrozen.is_empty() {
            format!(
                "froze {} (docker pause; SIGTERM after the window)",
                stopped.join(", ")
            )
        } else if pinned {
            let (told, froze): (Vec<&str>, Vec<&str>) = stopped
                .iter()
                .partition(|n| unfrozen.iter().any(|c| c.name == **n));
            let froze = match froze.is_empty() {
                true => String::new(),
                false => format!(
                    "froze {} (docker pause; SIGTERM after the window); ",
                    froze.join(", ")
                ),
            };
            format!(
                "{froze}{} could not be frozen ({}) and were told to stop (SIGTERM)",
                told.join(", "),
                why.join("; ")
            )
        } else {
            format!("stopped {}", stopped.join(", "))
        };
        if pinned {
            note.push_str("; the new frontends are pinned to the new backends, the old ones stop after the window");
        }
        self.sink.note(&note);
        Ok(())
    }

    /// The addresses of the running containers of each upstream service of
    /// the web tier that run `image_id`.
    async fn upstream_pins(
        &self,
        project: &str,
        web: &WebTier,
        image_id: &str,
    ) -> Result<Vec<Pin>> {
        let mut pins = Vec::new();
        for s in &web.upstream {
            let mut addresses = Vec::new();
            for c in self.running_of(project, s, image_id).await? {
                match self.world.address(&c.id).await? {
                    Some(ip) => addresses.push(ip),
                    None => {
                        return Err(Error::failed(format!("{} has no network address", c.name)))
                    }
                }
            }
            if !addresses.is_empty() {
                pins.push(Pin {
                    service: s.clone(),
                    addresses,
                });
            }
        }
        Ok(pins)
    }

    /// `nginx -T` in a container: its whole configuration, checked. A
    /// frontend just started may not have written it yet (frappe_docker's
    /// nginx-entrypoint.sh renders its template with envsubst, then execs
    /// nginx): asked again for up to 10 s.
    async fn nginx_dump(&mut self, c: &ContainerInfo) -> Result<String> {
        let cmd = nginx_cmd(&["-T"]);
        let mut attempt = 0;
        let out = loop {
            let mut quiet = |_: &str| {};
            let out = self.world.exec(&c.id, &cmd, None, &mut quiet).await?;
            if out.exit_code == 0 || attempt == NGINX_DUMP_RETRIES {
                break out;
            }
            attempt += 1;
            self.world.sleep(NGINX_DUMP_PAUSE).await;
        };
        if out.exit_code != 0 {
            return Err(Error::Failed {
                message: format!(
                    "reading the nginx configuration of {} before pinning its upstreams: `nginx -T` exited with {} (for {} s): {}",
                    c.name,
                    out.exit_code,
                    (NGINX_DUMP_PAUSE * NGINX_DUMP_RETRIES).as_secs(),
                    out.output.trim()
                ),
                hint: Some("nothing was changed in it; its configuration must pass `nginx -t`".into()),
            });
        }
        Ok(out.output)
    }

    /// Point the upstreams of the nginx in `c` that name one of the pinned
    /// services at their containers by address (`adapters::nginx::pin`),
    /// check that nginx reads it (`nginx -T` passes and shows every server
    /// written; else the files are put back), then run `reload` if given
    /// (a cut-over writes before its window and reloads in it).
    /// Ok(false): no upstream block of its config names those services.
    async fn pin_nginx(
        &mut self,
        c: &ContainerInfo,
        pins: &[Pin],
        why: &str,
        reload: Option<&[String]>,
    ) -> Result<bool> {
        let dump = self.nginx_dump(c).await?;
        let mut written: Vec<(String, ContainerFile)> = Vec::new();
        let mut servers = Vec::new();
        for (path, dumped) in nginx::dumped_files(&dump) {
            if !dumped.contains("upstream") {
                continue;
            }
            // The file itself, not the dump's copy: what is written back
            // must be exactly what was there, with its mode and owner.
            let Some(file) = self.world.read_file(&c.id, &path).await? else {
                continue;
            };
            if let Some(p) = nginx::pin(&file.text, pins, why) {
                let pinned = ContainerFile {
                    text: p.text,
                    ..file.clone()
                };
                self.world.write_file(&c.id, &path, &pinned).await?;
                written.push((path, file));
                servers.extend(p.servers);
            }
        }
        if written.is_empty() {
            return Ok(false);
        }
        let check = self.nginx_dump(c).await;
        let missing: Vec<&String> = match &check {
            Ok(d) => servers
                .iter()
                .filter(|s| !d.contains(&format!("server {s}")))
                .collect(),
            Err(_) => servers.iter().collect(),
        };
        if !missing.is_empty() {
            for (path, file) in &written {
                self.world.write_file(&c.id, path, file).await?;
            }
            let why = match check {
                Err(e) => e.to_string(),
                Ok(_) => format!(
                    "`nginx -T` does not show {}",
                    missing
                        .iter()
                        .map(|s| format!("server {s}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            return Err(Error::Failed {
                message: format!(
                    "the upstreams pinned in {} were not taken by its nginx ({why}); its configuration was put back",
                    c.name
                ),
                hint: Some(format!(
                    "see `docker exec {} nginx -T`: de-build rewrites `server` lines of upstream blocks written with `upstream NAME {{` and `}}` on lines of their own",
                    c.name
                )),
            });
        }
        let when = match reload {
            Some(cmd) => {
                self.run_checked(c, cmd).await?;
                "reloaded"
            }
            None => "read at its next reload",
        };
        let list: Vec<String> = pins
            .iter()
            .map(|p| format!("{} {}", p.service, p.addresses.join(" ")))
            .collect();
        self.sink.note(&format!(
            "{}: upstreams pinned to {} (checked with nginx -T; {when})",
            c.name,
            list.join(", ")
        ));
        Ok(true)
    }

    /// Pin each new frontend's upstreams to the new backends and websockets;
    /// true when every one was pinned.
    async fn pin_frontends(
        &mut self,
        stack: &StackSpec,
        web: &WebTier,
        reload: bool,
    ) -> Result<bool> {
        let project = &stack.target.project;
        let pins = self.upstream_pins(project, web, &stack.image_id).await?;
        let cmd = nginx_cmd(&["-s", "reload"]);
        let mut all = !pins.is_empty();
        for f in self
            .running_of(project, &web.frontend, &stack.image_id)
            .await?
        {
            let why = format!("{} {}", stack.version, f.name);
            let done = self
                .pin_nginx(&f, &pins, &why, reload.then_some(&cmd[..]))
                .await?;
            if !done {
                self.sink.note(&format!(
                    "{}: its nginx names {} in no upstream block; it resolves them by name",
                    f.name,
                    web.upstream.join(", ")
                ));
            }
            all &= done;
        }
        Ok(all)
    }

    /// The containers of `project`: listed by the engine, or as listed
    /// earlier in the same maintenance window (`Listing`).
    async fn listed(&self, project: &str) -> Result<Vec<ContainerInfo>> {
        if let Some(l) = self.listing.get(project) {
            return Ok(l);
        }
        let l = self.world.containers(project).await?;
        self.listing.keep(project, &l);
        Ok(l)
    }

    /// Running containers of `service` in `project` that run `image_id`.
    async fn running_of(
        &self,
        project: &str,
        service: &str,
        image_id: &str,
    ) -> Result<Vec<ContainerInfo>> {
        Ok(self
            .listed(project)
            .await?
            .into_iter()
            .filter(|c| c.service == service && c.image_id == image_id && c.state == "running")
            .collect())
    }

    /// New containers of the web tier beside the old: the upstream services
    /// first, then the frontend, whose nginx resolves them once at start and
    /// so must find the new backend already there.
    async fn start_beside(
        &mut self,
        stack: &StackSpec,
        web: &WebTier,
        tier: Tier,
        record: &mut Deployment,
    ) -> Result<()> {
        let project = &stack.target.project;
        let groups = match tier {
            Tier::All => vec![web.upstream.clone(), vec![web.frontend.clone()]],
            Tier::Frontend => vec![vec![web.frontend.clone()]],
            Tier::Upstream => vec![web.upstream.clone()],
        };
        for group in groups {
            let before = self.world.containers(project).await?;
            let mut scale = Vec::new();
            for s in &group {
                let old = before
                    .iter()
                    .filter(|c| &c.service == s && c.state == "running")
                    .filter(|c| c.image_id != stack.image_id)
                    .count();
                let new = before
                    .iter()
                    .filter(|c| &c.service == s && c.image_id == stack.image_id)
                    .count();
                // As many new as old (one at least); a rerun counts the new
                // ones it already started.
                scale.push((s.clone(), old + old.max(1).max(new)));
            }
            self.world
                .compose(
                    &ComposeCall::Beside(stack.target.clone(), scale),
                    &stack.env,
                )
                .await?;
            for s in &group {
                let started = self.running_of(project, s, &stack.image_id).await?;
                if started.is_empty() {
                    return Err(Error::failed(format!(
                        "compose started no container of {s} running {} (image {})",
                        stack.version,
                        short_id(&stack.image_id)
                    )));
                }
                let names: Vec<&str> = started.iter().map(|c| c.name.as_str()).collect();
                self.sink.note(&format!("{s}: {}", names.join(", ")));
            }
        }
        // The new frontends reach only the new backends, by address: at
        // once when the whole tier moves (before the door hears of them);
        // written now and reloaded at the cut-over when the backends move
        // inside a maintenance window.
        match tier {
            Tier::All => {
                record.progress.fronts_pinned = self.pin_frontends(stack, web, true).await?
            }
            Tier::Upstream => {
                record.progress.fronts_pinned = self.pin_frontends(stack, web, false).await?
            }
            Tier::Frontend => {}
        }
        Ok(())
    }

    /// Each new backend, then each new frontend, answers the health path
    /// 2xx at its own address (frappe_docker's gunicorn on 8000, nginx on
    /// 8080), before the door sends it anything.
    async fn probe_beside(
        &mut self,
        stack: &StackSpec,
        web: &WebTier,
        path: &str,
        timeout_secs: u64,
        tier: Tier,
    ) -> Result<()> {
        let project = &stack.target.project;
        let mut targets = Vec::new();
        if let (Some(b), Tier::All | Tier::Upstream) = (web.upstream.first(), tier) {
            targets.push((b.clone(), BACKEND_PORT));
        }
        if tier != Tier::Upstream {
            targets.push((web.frontend.clone(), FRONTEND_PORT));
        }
        for (service, port) in targets {
            for c in self.running_of(project, &service, &stack.image_id).await? {
                let Some(ip) = self.world.address(&c.id).await? else {
                    return Err(Error::failed(format!("{} has no network address", c.name)));
                };
                let url = format!("http://{ip}:{port}{path}");
                let took = self
                    .world
                    .wait_healthy(&url, Duration::from_secs(timeout_secs), Gate::Open)
                    .await
                    .map_err(|e| {
                        Error::failed(format!(
                            "the new {service} {} did not answer at {url}: {e}",
                            c.name
                        ))
                    })?;
                self.sink.note(&format!(
                    "{} answered at {url} after {:.1}s",
                    c.name,
                    took.as_secs_f64()
                ));
            }
        }
        Ok(())
    }

    async fn share_assets(
        &mut self,
        from: &StackSpec,
        to: &StackSpec,
        web: &WebTier,
    ) -> Result<()> {
        let project = &to.target.project;
        let old = self
            .running_of(project, &web.frontend, &from.image_id)
            .await?;
        let new = self
            .running_of(project, &web.frontend, &to.image_id)
            .await?;
        let (mut into_new, mut into_old) = (0, 0);
        for o in &old {
            for n in &new {
                into_new += self.world.copy_dist(&o.id, &n.id, ASSETS_DIR).await?;
                into_old += self.world.copy_dist(&n.id, &o.id, ASSETS_DIR).await?;
            }
        }
        self.sink.note(&format!(
            "{into_new} bundle file(s) of {} copied into the new {}, {into_old} of {} into the old",
            from.version, web.frontend, to.version
        ));
        Ok(())
    }

    /// Point the door at the frontends of release `to` (every running
    /// frontend when it has none, or none is given): an nginx door gets its
    /// upstream that names the frontend service pinned to their addresses,
    /// checked and reloaded; any other door (or an nginx whose config names
    /// the frontend no such way) runs its reload command and resolves them
    /// by name.
    async fn reload_door(
        &mut self,
        project: &str,
        door: &Door,
        to: Option<(&str, &str)>,
    ) -> Result<bool> {
        let all = self.world.containers(project).await?;
        let doors: Vec<ContainerInfo> = all
            .iter()
            .filter(|c| c.service == door.service && c.state == "running")
            .cloned()
            .collect();
        if doors.is_empty() {
            return Err(Error::Failed {
                message: format!(
                    "no running container of the door service {} (DE_DOOR)",
                    door.service
                ),
                hint: Some("DE_DOOR names the proxy service that publishes the port".into()),
            });
        }
        let fronts: Vec<&ContainerInfo> = all
            .iter()
            .filter(|c| c.service == door.frontend && c.state == "running")
            .collect();
        let of_release: Vec<&ContainerInfo> = fronts
            .iter()
            .copied()
            .filter(|c| to.is_some_and(|(image, _)| c.image_id == image))
            .collect();
        let chosen = if of_release.is_empty() {
            fronts
        } else {
            of_release
        };
        let mut addresses = Vec::new();
        for c in &chosen {
            if let Some(ip) = self.world.address(&c.id).await? {
                addresses.push(ip);
            }
        }
        let pins = [Pin {
            service: door.frontend.clone(),
            addresses,
        }];
        let why = match to {
            Some((_, version)) => format!("the frontends of {version}"),
            None => "the running frontends".into(),
        };
        let nginx = door.reload.first().is_some_and(|p| p.ends_with("nginx"));
        let mut all_pinned = true;
        for d in doors {
            let pinned = nginx
                && !pins[0].addresses.is_empty()
                && self.pin_nginx(&d, &pins, &why, Some(&door.reload)).await?;
            if !pinned {
                if nginx {
                    self.sink.note(&format!(
                        "{}: its nginx names {} in no upstream block; it resolves the frontends by name",
                        d.name, door.frontend
                    ));
                }
                self.run_checked(&d, &door.reload).await?;
            }
            all_pinned &= pinned;
        }
        // `nginx -s reload` only signals the master: the new workers take
        // over a moment later, and until then the old ones still send to
        // what they resolved before (and a request they sent is accepted by
        // its frontend before that one is told to quit).
        self.world.sleep(DOOR_SETTLE).await;
        Ok(all_pinned)
    }

    /// Run a command in a container; a non-zero exit is an error with its output.
    async fn run_checked(&mut self, c: &ContainerInfo, cmd: &[String]) -> Result<()> {
        exec_checked(self.world, c, cmd).await
    }

    async fn retire_old(
        &mut self,
        from: &StackSpec,
        to: &StackSpec,
        web: &WebTier,
        door: &Door,
        tier: Tier,
        (door_pinned, fronts_pinned): (bool, bool),
    ) -> Result<()> {
        let project = &to.target.project;
        let mut old_fronts = Vec::new();
        if tier != Tier::Upstream {
            old_fronts = self
                .retire_frontends(from, to, web, door, project, door_pinned)
                .await?;
        }
        let mut old_up = Vec::new();
        if tier != Tier::Frontend {
            old_up = self
                .retire_upstream(from, to, web, project, fronts_pinned)
                .await?;
        }
        let names: Vec<&str> = old_fronts
            .iter()
            .chain(&old_up)
            .map(|c| c.name.as_str())
            .collect();
        self.sink.note(&format!("retired {}", names.join(", ")));
        Ok(())
    }

    async fn retire_frontends(
        &mut self,
        from: &StackSpec,
        to: &StackSpec,
        web: &WebTier,
        door: &Door,
        project: &str,
        door_pinned: bool,
    ) -> Result<Vec<ContainerInfo>> {
        // 1. The old frontends stop accepting and finish what they have
        // (`nginx -s quit`). A pinned door sends them nothing any more; one
        // that resolves by name retries a refused connection on a new
        // frontend (proxy_next_upstream) and forgets them at its reload.
        let old_fronts = self
            .running_of(project, &web.frontend, &from.image_id)
            .await?;
        for c in &old_fronts {
            // Else `restart: unless-stopped` starts it again once nginx
            // exited, and the door may send it requests it will not finish.
            self.world.no_restart(&c.id).await?;
            let quit = nginx_cmd(&["-s", "quit"]);
            if let Err(e) = self.run_checked(c, &quit).await {
                self.sink.note(&format!("{e}; stopping {} instead", c.name));
                self.world.stop_container(&c.id, RETIRE_GRACE).await?;
            }
        }
        let ids: Vec<String> = old_fronts.iter().map(|c| c.id.clone()).collect();
        self.wait_ended(project, &ids, RETIRE_GRACE, Duration::from_secs(1))
            .await?;
        if !door_pinned {
            // An exited container has left the engine's DNS: the door
            // forgets it at this reload.
            self.reload_door(project, door, Some((&to.image_id, &to.version)))
                .await?;
        }
        // Its logs are kept, then it is removed.
        for c in &old_fronts {
            self.carry_logs(c, &from.version, project, to).await?;
            self.world.remove_container(&c.id).await?;
        }
        Ok(old_fronts)
    }

    async fn retire_upstream(
        &mut self,
        from: &StackSpec,
        to: &StackSpec,
        web: &WebTier,
        project: &str,
        fronts_pinned: bool,
    ) -> Result<Vec<ContainerInfo>> {
        // 2. The old backends and websockets stop gracefully (gunicorn
        // finishes its requests on SIGTERM). Pinned new frontends never knew
        // them, and the old frontends are gone: all stop at once. Frontends
        // that resolved them by name are reloaded as each stops: a
        // connection to an address that vanished is not refused but waits
        // (ARP, then proxy_connect_timeout: 60 s in frappe_docker's
        // template) before nginx tries the next server.
        let mut old_up = Vec::new();
        for s in &web.upstream {
            old_up.extend(self.running_of(project, s, &from.image_id).await?);
        }
        if fronts_pinned {
            stop_all(self.world, &old_up.iter().collect::<Vec<_>>()).await?;
        }
        for c in &old_up {
            if !fronts_pinned {
                self.world.stop_container(&c.id, RETIRE_GRACE).await?;
                let fronts = self
                    .running_of(project, &web.frontend, &to.image_id)
                    .await?;
                reload_all(self.world, &fronts).await?;
            }
            self.carry_logs(c, &from.version, project, to).await?;
            self.world.remove_container(&c.id).await?;
        }
        Ok(old_up)
    }

    /// Keep the logs of a container a switch is about to remove (its
    /// anonymous volume goes with it) in its successor of the same service,
    /// under `logs/<version>-<container>/`, as compose keeps them when it
    /// recreates a container.
    async fn carry_logs(
        &mut self,
        old: &ContainerInfo,
        version: &str,
        project: &str,
        to: &StackSpec,
    ) -> Result<()> {
        let Some(next) = self
            .running_of(project, &old.service, &to.image_id)
            .await?
            .into_iter()
            .next()
        else {
            return Ok(());
        };
        let into = format!("{version}-{}", short_id(&old.id));
        let n = self
            .world
            .carry_files(&old.id, &next.id, LOGS_DIR, &into)
            .await
            .map_err(|e| {
                Error::failed(format!(
                    "keep the logs of {} before removing it: {e}",
                    old.name
                ))
            })?;
        if n > 0 {
            self.sink.note(&format!(
                "{n} log file(s) of {} kept in {}: logs/{into}/",
                old.name, next.name
            ));
        }
        Ok(())
    }

    /// The old web upstreams a cut-over left: those still running (nothing
    /// routes to them once the new frontends were pinned) stop gracefully,
    /// all at once; the logs of every one go to its successor, then it goes
    /// (with its anonymous volumes). Only containers of a service that runs
    /// the new release already: the old workers are compose's to replace.
    async fn remove_retired(&mut self, from: &StackSpec, to: &StackSpec) -> Result<()> {
        let project = &to.target.project;
        let all = self.world.containers(project).await?;
        let succeeded = |service: &str| {
            all.iter()
                .any(|c| c.service == service && c.image_id == to.image_id && c.state == "running")
        };
        let retired: Vec<ContainerInfo> = all
            .iter()
            .filter(|c| {
                c.image_id == from.image_id && from.image_id != to.image_id && succeeded(&c.service)
            })
            .cloned()
            .collect();
        let running: Vec<&ContainerInfo> =
            retired.iter().filter(|c| c.state == "running").collect();
        stop_all(self.world, &running).await?;
        for c in &retired {
            self.carry_logs(c, &from.version, project, to).await?;
            self.world.remove_container(&c.id).await?;
        }
        Ok(())
    }

    /// Wait until the containers with these ids no longer run: at most
    /// `within` (real time, or the sum of the pauses, so a world whose sleep
    /// returns at once still reaches it); those still running then are
    /// stopped with `grace`. The names of those that had to be stopped.
    async fn wait_ended(
        &mut self,
        project: &str,
        ids: &[String],
        within: Duration,
        grace: Duration,
    ) -> Result<Vec<String>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let started = Instant::now();
        let mut paused = Duration::ZERO;
        loop {
            let running: Vec<ContainerInfo> = self
                .world
                .containers(project)
                .await?
                .into_iter()
                // A paused one has not ended either.
                .filter(|c| (c.state == "running" || c.state == "paused") && ids.contains(&c.id))
                .collect();
            if running.is_empty() {
                return Ok(Vec::new());
            }
            if started.elapsed().max(paused) >= within {
                for c in &running {
                    self.world.stop_container(&c.id, grace).await?;
                }
                return Ok(running.into_iter().map(|c| c.name).collect());
            }
            let pause = Duration::from_millis(50);
            self.world.sleep(pause).await;
            paused += pause;
        }
    }

    /// A running backend container of `image_id` (a migrating switch runs
    /// the old and the new backends side by side).
    async fn backend_of(
        &self,
        plan: &DeployPlan,
        project: &str,
        image_id: &str,
    ) -> Result<ContainerInfo> {
        self.running_of(project, &plan.backend_service, image_id)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| {
                Error::failed(format!(
                    "no running container of service {} in compose project {project} runs {} (image {})",
                    plan.backend_service,
                    plan.version,
                    short_id(image_id)
                ))
            })
    }

    async fn backend(&self, plan: &DeployPlan, project: &str) -> Result<ContainerInfo> {
        let mut all: Vec<ContainerInfo> = self
            .listed(project)
            .await?
            .into_iter()
            .filter(|c| c.service == plan.backend_service && c.state == "running")
            .collect();
        // While a switch runs both releases, the backups, drain and restore
        // are the running release's: its code made the database.
        let prev = plan.previous.as_ref().map(|p| p.image_id.as_str());
        all.sort_by_key(|c| Some(c.image_id.as_str()) != prev);
        all.into_iter().next().ok_or_else(|| Error::Failed {
            message: format!(
                "no running container of service {} in compose project {project}",
                plan.backend_service
            ),
            hint: Some("check DE_BACKEND_SERVICE and the compose file".into()),
        })
    }

    /// Run bench; a non-zero exit is an error naming the command.
    async fn bench(&mut self, c: &ContainerInfo, cmd: &[String]) -> Result<String> {
        let out = self.bench_raw(c, cmd).await?;
        if out.exit_code != 0 {
            return Err(Error::failed(format!(
                "`{}` exited with {} in {}",
                cmd.join(" "),
                out.exit_code,
                c.name
            )));
        }
        Ok(out.output)
    }

    async fn bench_raw(
        &mut self,
        c: &ContainerInfo,
        cmd: &[String],
    ) -> Result<crate::adapters::engine::RunOutput> {
        self.bench_input(c, cmd, None).await
    }

    async fn bench_input(
        &mut self,
        c: &ContainerInfo,
        cmd: &[String],
        stdin: Option<&Secret>,
    ) -> Result<crate::adapters::engine::RunOutput> {
        self.sink.line(&format!("$ {}", cmd.join(" ")));
        let sink = &mut *self.sink;
        let mut on_line = |l: &str| sink.line(l);
        self.world.exec(&c.id, cmd, stdin, &mut on_line).await
    }

    /// The sites bench commands address, one by one: real bench's
    /// `--site all` reaches only the first site for most commands
    /// (`set-maintenance-mode` among them), so `all` is expanded into the
    /// sites that have a `site_config.json`.
    async fn site_list(&mut self, plan: &DeployPlan, c: &ContainerInfo) -> Result<Vec<String>> {
        if let crate::plan::deploy::Sites::List(l) = &plan.sites {
            return Ok(l.clone());
        }
        if let Some(s) = &self.sites {
            return Ok(s.clone());
        }
        let cmd: Vec<String> = [
            "sh",
            "-c",
            "cd /home/frappe/frappe-bench/sites && for f in */site_config.json; do [ -f \"$f\" ] && echo \"${f%/site_config.json}\"; done; true",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut quiet = |_: &str| {};
        let out = self.world.exec(&c.id, &cmd, None, &mut quiet).await?;
        let sites: Vec<String> = out
            .output
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        if sites.is_empty() {
            return Err(Error::Failed {
                message: format!(
                    "DE_SITES is `all` but {} holds no site (no sites/*/site_config.json)",
                    c.name
                ),
                hint: Some("name the sites in DE_SITES, or create the site first".into()),
            });
        }
        self.sink.note(&format!("sites: {}", sites.join(", ")));
        self.sites = Some(sites.clone());
        Ok(sites)
    }

    async fn wait_oneshots(
        &mut self,
        project: &str,
        services: &[String],
        timeout_secs: u64,
    ) -> Result<()> {
        let started = Instant::now();
        loop {
            let states = self.world.service_states(project, services).await?;
            if let Some(bad) = states.iter().find(|s| !s.running && s.exit_code != 0) {
                return Err(Error::Failed {
                    message: format!(
                        "the one-shot service {} exited with {} ({})",
                        bad.service, bad.exit_code, bad.name
                    ),
                    hint: Some(format!("its output: `docker logs {}`", bad.name)),
                });
            }
            let waiting: Vec<&str> = states
                .iter()
                .filter(|s| s.running)
                .map(|s| s.service.as_str())
                .collect();
            if waiting.is_empty() {
                return Ok(());
            }
            if started.elapsed().as_secs() >= timeout_secs {
                return Err(Error::failed(format!(
                    "{} still running after {timeout_secs}s",
                    waiting.join(", ")
                )));
            }
            self.world.sleep(Duration::from_millis(500)).await;
        }
    }

    async fn maintenance(&mut self, plan: &DeployPlan, project: &str, on: bool) -> Result<()> {
        // Off from the release that serves next: after a cut-over the old
        // backends are ending (the engine lists them as running a moment
        // longer, but an exec there fails).
        let new = match on {
            true => None,
            false => self
                .backend_of(plan, project, &plan.new.image_id)
                .await
                .ok(),
        };
        let c = match new {
            Some(c) => c,
            None => self.backend(plan, project).await?,
        };
        let state = if on { "on" } else { "off" };
        for site in self.site_list(plan, &c).await? {
            self.bench(
                &c,
                &bench::site_args(&site, &["set-maintenance-mode", state]),
            )
            .await?;
        }
        Ok(())
    }

    async fn drain(
        &mut self,
        plan: &DeployPlan,
        project: &str,
        timeout_secs: u64,
        on_timeout: OnDrainTimeout,
    ) -> Result<()> {
        let c = self.backend(plan, project).await?;
        let started = Instant::now();
        let limit = Duration::from_secs(timeout_secs);
        // Real time governs; the sum of the pauses too, so a world whose
        // sleep returns at once (the tests' fake) still reaches the limit.
        let mut paused = Duration::ZERO;
        let mut late = Vec::new();
        for site in self.site_list(plan, &c).await? {
            loop {
                let cmd = bench::site_args(&site, &["ready-for-migration"]);
                let out = self.bench_raw(&c, &cmd).await?;
                match bench::readiness(out.exit_code, &out.output) {
                    Readiness::Ready => break,
                    Readiness::Unknown => {
                        return Err(Error::failed(format!(
                            "`{}` exited with {} and did not say whether {site} is ready for migration",
                            cmd.join(" "),
                            out.exit_code
                        )))
                    }
                    Readiness::NotReady if started.elapsed().max(paused) >= limit => {
                        match on_timeout {
                            OnDrainTimeout::Abort => {
                                return Err(Error::failed(format!(
                                    "{site} still has pending background jobs after {timeout_secs}s (raise DE_DRAIN_TIMEOUT, or set DE_DRAIN_ON_TIMEOUT=proceed to go on with them queued)"
                                )))
                            }
                            OnDrainTimeout::Proceed => {
                                late.push(site.clone());
                                break;
                            }
                        }
                    }
                    Readiness::NotReady => {
                        let pause = Duration::from_millis(500);
                        self.world.sleep(pause).await;
                        paused += pause;
                    }
                }
            }
        }
        if !late.is_empty() {
            self.sink.note(&format!(
                "{} still had queued jobs after {timeout_secs}s; going on as DE_DRAIN_ON_TIMEOUT=proceed says: the backup holds them queued, and they run on the new release",
                late.join(", ")
            ));
        }
        Ok(())
    }

    /// `bench restore` asks for the database root password unless the sites
    /// hold it; it gets it on stdin (then end-of-file), so it never waits on
    /// a prompt and the password is in no argv, record or log.
    async fn restore(
        &mut self,
        plan: &DeployPlan,
        project: &str,
        backups: &[Backup],
    ) -> Result<()> {
        let c = self.backend(plan, project).await?;
        for b in backups {
            let cmd = bench::site_args(&b.site, &["restore", &b.path]);
            let pw = self.db_root_password;
            let out = self.bench_input(&c, &cmd, pw).await?;
            if out.exit_code != 0 {
                return Err(Error::Failed {
                    message: format!(
                        "`{}` exited with {} in {}",
                        cmd.join(" "),
                        out.exit_code,
                        c.name
                    ),
                    hint: bench::restore_hint(&out.output, pw.is_some()),
                });
            }
        }
        Ok(())
    }

    /// Every container of the stack's app services runs the release image.
    /// App services are those whose containers run an image of the release's
    /// repository (a fixed tag in the compose file shows up here as another
    /// image ID of the same repository).
    async fn verify_image(&self, stack: &StackSpec) -> Result<()> {
        if stack.image_id.is_empty() {
            return Ok(());
        }
        let repo = stack.env.get("CUSTOM_IMAGE").cloned().unwrap_or_default();
        let all = self.world.containers(&stack.target.project).await?;
        let wrong: Vec<String> = all
            .iter()
            .filter(|c| c.state == "running" || c.state == "restarting")
            .filter(|c| {
                c.image_id == stack.image_id
                    || (!repo.is_empty()
                        && crate::adapters::engine::split_reference(&c.image).0 == repo)
            })
            .filter(|c| c.image_id != stack.image_id)
            .map(|c| {
                format!(
                    "{} ({}) runs {} {}",
                    c.name,
                    c.service,
                    c.image,
                    short_id(&c.image_id)
                )
            })
            .collect();
        let right = all.iter().any(|c| c.image_id == stack.image_id);
        if !wrong.is_empty() || !right {
            return Err(Error::Failed {
                message: format!(
                    "the stack does not run {} (image {}): {}",
                    stack.version,
                    short_id(&stack.image_id),
                    if wrong.is_empty() {
                        "no container runs it".to_string()
                    } else {
                        wrong.join("; ")
                    }
                ),
                hint: Some("the compose file must take the app image from ${CUSTOM_IMAGE}:${CUSTOM_TAG} (a merged file from `compose config` has the tag written in: regenerate it or use the source files)".into()),
            });
        }
        Ok(())
    }

    /// Down, then make sure nothing of the project is left (by label), and
    /// drop the anonymous volumes its containers had.
    async fn down(&self, stack: &StackSpec) -> Result<Vec<String>> {
        let before = self.world.containers(&stack.target.project).await?;
        let ids: Vec<String> = before.iter().map(|c| c.id.clone()).collect();
        let anon = self.world.anonymous_volumes(&ids).await?;
        self.world
            .compose(&ComposeCall::Down(stack.target.clone()), &stack.env)
            .await?;
        let mut removed = Vec::new();
        for c in self.world.containers(&stack.target.project).await? {
            self.world.remove_container(&c.id).await?;
            removed.push(format!("{} ({})", c.name, c.service));
        }
        for v in anon {
            self.world.remove_volume(&v).await?;
        }
        Ok(removed)
    }

    /// Replace the running stack by `to` in one compose pass: compose
    /// recreates the containers whose configuration changed — every service
    /// that runs the release image, since its tag changed — carrying their
    /// anonymous volumes (frappe_docker's `logs`) over, and leaves the others
    /// (database, redis) running. An old app container compose left behind
    /// (a renamed service) is removed.
    async fn replace(&self, from: &StackSpec, to: &StackSpec) -> Result<Vec<String>> {
        let project = &to.target.project;
        let before = self.world.containers(project).await?;
        self.world
            .compose(&ComposeCall::Replace(to.target.clone()), &to.env)
            .await?;
        let after: Vec<String> = self
            .world
            .containers(project)
            .await?
            .into_iter()
            .map(|c| c.id)
            .collect();
        let mut removed = Vec::new();
        for c in before.iter().filter(|c| after.contains(&c.id)) {
            let old_app = !from.image_id.is_empty()
                && c.image_id == from.image_id
                && from.image_id != to.image_id;
            if old_app {
                self.world.remove_container(&c.id).await?;
                removed.push(format!("{} ({})", c.name, c.service));
            }
        }
        Ok(removed)
    }
}

/// How a recovery ended, as both executors (compose, swarm) report it.
pub struct ClosedRecovery<'a> {
    /// "deploy of 1.1.0".
    pub what: String,
    pub cause: Error,
    /// What is left to do by hand when a recovery step failed.
    pub left: Option<String>,
    /// The result the recovery leads to when every step succeeded.
    pub outcome: Outcome,
    /// Whether it restored the pre-deploy backup.
    pub restored: bool,
    pub data_note: Option<&'a str>,
    pub previous: Option<&'a str>,
    /// Said when it ends aborted (nothing serves that did not before).
    pub aborted_hint: &'a str,
}

/// An nginx command line (frappe_docker's frontend and the door run nginx).
fn nginx_cmd(args: &[&str]) -> Vec<String> {
    std::iter::once("nginx")
        .chain(args.iter().copied())
        .map(String::from)
        .collect()
}

/// `nginx -s reload` in each of these (frontend) containers, one after the
/// other; a non-zero exit is an error with its output.
async fn reload_all<W: World>(world: &W, cs: &[ContainerInfo]) -> Result<()> {
    let reload = nginx_cmd(&["-s", "reload"]);
    for f in cs {
        exec_checked(world, f, &reload).await?;
    }
    Ok(())
}

/// Run a command in a container; a non-zero exit is an error with its output.
async fn exec_checked<W: World>(world: &W, c: &ContainerInfo, cmd: &[String]) -> Result<()> {
    let mut quiet = |_: &str| {};
    let out = world.exec(&c.id, cmd, None, &mut quiet).await?;
    if out.exit_code != 0 {
        return Err(Error::failed(format!(
            "`{}` exited with {} in {}: {}",
            cmd.join(" "),
            out.exit_code,
            c.name,
            out.output.trim()
        )));
    }
    Ok(())
}

/// SIGTERM to these containers at once (their stop signal: the engine
/// restarts none of them); returns without waiting for them to end.
async fn signal_all<W: World>(world: &W, cs: &[&ContainerInfo]) -> Result<()> {
    let ends = cs.iter().map(|c| world.signal(&c.id, "SIGTERM"));
    for r in futures_util::future::join_all(ends).await {
        r?;
    }
    Ok(())
}

/// `docker stop` these containers at once, each with RETIRE_GRACE.
async fn stop_all<W: World>(world: &W, cs: &[&ContainerInfo]) -> Result<()> {
    let stops = cs.iter().map(|c| world.stop_container(&c.id, RETIRE_GRACE));
    for r in futures_util::future::join_all(stops).await {
        r?;
    }
    Ok(())
}

/// Close the record's result and build the error to exit with: exit 4 with
/// what is left, 3 recovered (saying what happened to the database), or 1.
pub fn close_recovery(record: &mut Deployment, c: &ClosedRecovery<'_>) -> Error {
    let (what, cause) = (&c.what, &c.cause);
    match (&c.left, c.outcome) {
        (Some(left), _) => {
            record.result = Outcome::Fatal;
            record.left = Some(left.clone());
            Error::Fatal {
                message: format!("{what} failed ({cause}) and recovery failed too"),
                hint: left.clone(),
            }
        }
        (None, Outcome::Recovered) => {
            record.result = Outcome::Recovered;
            let db = if c.restored {
                "database restored from the pre-deploy backup"
            } else if c.data_note.is_some() {
                "database NOT restored"
            } else {
                "database untouched"
            };
            Error::Recovered {
                message: format!(
                    "{what} failed ({cause}); {} is serving again, {db}{}",
                    c.previous.unwrap_or_default(),
                    c.data_note.map(|n| format!(". {n}")).unwrap_or_default()
                ),
            }
        }
        (None, _) => {
            record.result = Outcome::Aborted;
            Error::Failed {
                message: format!("{what} failed: {cause}"),
                hint: Some(c.aborted_hint.to_string()),
            }
        }
    }
}

fn write_failure(e: Error) -> Error {
    Error::failed(format!("the deployment record could not be written: {e}"))
}

/// What is left after recovery step `rest[0]` failed with `e`, as commands.
fn left_to_do(plan: &DeployPlan, rest: &[RecoveryStep], e: &Error) -> String {
    let hint = e.hint().map(|h| format!(": {h}")).unwrap_or_default();
    let mut out = vec![format!("{} failed ({e}){hint}", rest[0])];
    for s in rest {
        out.push(match s {
            RecoveryStep::TakeDown { stack } => format!(
                "take {} down: {}",
                stack.version,
                manual_compose(stack, "down --remove-orphans")
            ),
            RecoveryStep::BringUp { stack } => format!(
                "bring {} up: {}",
                stack.version,
                manual_compose(stack, "up --detach --remove-orphans")
            ),
            RecoveryStep::Restore { backups, .. } => format!(
                "restore: {}",
                backups
                    .iter()
                    .map(|b| format!("bench --site {} restore {}", b.site, b.path))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            RecoveryStep::RemoveBeside {
                services,
                version,
                ..
            } => format!(
                "remove the containers of {} that run {version}: docker rm -f <their names> (see `docker ps`)",
                services.join(", ")
            ),
            RecoveryStep::ReloadDoor { door, .. } => format!(
                "reload the door: docker exec <the {} container> {}",
                door.service,
                door.reload.join(" ")
            ),
            RecoveryStep::MaintenanceOff { .. } => format!(
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
    format!(
        "{}; or run `de-build recover` to retry (deployment {})",
        out.join("; then "),
        plan.id
    )
}

fn manual_compose(s: &StackSpec, tail: &str) -> String {
    let vars: Vec<String> = ["CUSTOM_IMAGE", "CUSTOM_TAG", "COMPOSE_PROJECT_NAME"]
        .iter()
        .filter_map(|k| s.env.get(*k).map(|v| format!("{k}={v}")))
        .collect();
    let files: Vec<String> = s
        .target
        .files
        .iter()
        .map(|f| format!("-f {}", f.display()))
        .collect();
    format!(
        "{} docker compose -p {} {} --project-directory {} {tail}",
        vars.join(" "),
        s.target.project,
        files.join(" "),
        s.target.project_dir.display()
    )
}

/// The recovery of an interrupted deployment from its record.
pub fn recovery_of(record: &Deployment) -> Option<(DeployPlan, Recovery)> {
    let plan = record.plan.clone()?;
    let mut progress = record.progress.clone();
    // A process that died mid-step may have left maintenance on, whatever
    // the flags say: turning it off again is harmless.
    if plan.previous_running {
        progress.maintenance_on = true;
    }
    let r = planner::recovery(&plan, &progress);
    Some((plan, r))
}

#[cfg(test)]
#[path = "deploy_tests.rs"]
mod tests;
