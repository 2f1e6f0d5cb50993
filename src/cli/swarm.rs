//! `DE_TARGET=swarm`: deploy, rollback, status, recover and lock release on a
//! Docker Swarm, through the manager's API (`DOCKER_HOST` of a manager).
//! Gathers the facts (release digest, the compose file as `compose config`
//! resolves it, what the swarm runs now), plans, runs under the swarm's lock.
//!
//! Why services are made here rather than by `docker stack deploy`: that
//! command updates every service at once and returns before anything
//! converged; a release needs the migrate between "old code in maintenance"
//! and "new web tier", the web tier before the workers, and to know when
//! each converged or failed, and where.

use crate::adapters::compose::{child_command, Compose, Target};
use crate::adapters::engine::Engine;
use crate::adapters::swarm::{Swarm, SwarmLock};
use crate::cli::args::{RecoverArgs, RollbackArgs};
use crate::cli::run::{Signals, Terminal};
use crate::cli::status::Finding;
use crate::config::{self, Inputs};
use crate::error::{Error, Result, EXIT_FAILURE, EXIT_OK};
use crate::exec::deploy::Finished;
use crate::exec::swarm::{self as executor, RealSwarm, SwarmExecutor, SwarmWorld};
use crate::plan::deploy::MigrateMode;
use crate::plan::swarm::{self as planner, PreviousRelease, SwarmPlan, SwarmRequest, SwarmStack};
use crate::record::deploy::{Action, Gate, Sites};
use crate::record::manifest::{Loaded, Store};
use crate::record::state::{self, Backup, Deployment, Outcome, State};
use crate::record::swarm::{self as record_swarm, KnownRecords, TaskState};
use crate::ui::output::{self, Style};
use crate::util::short_id;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Is the project deployed to a swarm? `DE_TARGET` is `compose` (default) or
/// `swarm`, read by the one rule `check` applies too.
pub fn is_swarm(inputs: &Inputs) -> Result<bool> {
    match config::rules::target(inputs.env.get("DE_TARGET")) {
        Ok(t) => Ok(t == config::rules::Target::Swarm),
        Err((message, hint)) => Err(Error::refused(message, hint)),
    }
}

fn required<'a>(inputs: &'a Inputs, key: &str) -> Result<&'a str> {
    crate::cli::deploy::required(inputs, key)
}

fn secs(inputs: &Inputs, key: &str, default: u64) -> u64 {
    crate::cli::deploy::secs(inputs, key, default)
}

/// This machine's records of the stack (a project may have deployed with
/// compose before, or to another namespace), and the files it cannot read.
fn local_records(st: &State, namespace: &str) -> (Vec<Deployment>, Vec<state::Unreadable>) {
    let (all, bad) = st.deployments();
    let mine = all
        .into_iter()
        .filter(|d| {
            d.swarm
                .as_ref()
                .is_some_and(|r| r.plan.new.namespace == namespace)
        })
        .collect();
    (mine, bad)
}

/// Say (with `-v`, and in the log file) where the records disagree: the
/// swarm's copy is the truth of a swarm deployment.
fn say_merge(style: &Style, k: &KnownRecords) {
    for id in &k.differs {
        let line = format!(
            "record {id}: this machine's .de-build/deployments/{id}.json differs from the swarm's copy; the swarm's newest is used"
        );
        crate::ui::logfile::action(&line, true, Duration::ZERO, "");
        if style.verbose {
            output::progress(style, &line);
        }
    }
    if !k.local_only.is_empty() {
        let line = format!(
            "records only on this machine (uploaded to the swarm by the next deploy, rollback or recover from here): {}",
            k.local_only.join(", ")
        );
        crate::ui::logfile::action(&line, true, Duration::ZERO, "");
        if style.verbose {
            output::progress(style, &line);
        }
    }
}

struct Session<'a> {
    inputs: &'a Inputs,
    state: State,
    swarm: Swarm,
    style: Style,
    namespace: String,
    stale_secs: u64,
}

impl<'a> Session<'a> {
    async fn open(inputs: &'a Inputs, style: &Style) -> Result<Session<'a>> {
        let engine = Engine::connect().await?;
        let registry = inputs.env.get("DE_REGISTRY").unwrap_or_default();
        let swarm = Swarm::new(
            engine,
            crate::adapters::registry::credentials(&inputs.env, registry),
        );
        swarm.check_manager().await?;
        Ok(Session {
            inputs,
            state: State::new(&inputs.paths.state),
            swarm,
            style: *style,
            namespace: required(inputs, "COMPOSE_PROJECT_NAME")?.to_string(),
            stale_secs: secs(inputs, "DE_SWARM_LOCK_STALE", 60).max(5),
        })
    }

    /// The stack's records: the swarm's (readable from every machine that
    /// reaches the manager) joined with this machine's that the swarm does
    /// not have. `strict`: a record that cannot be read stops the command
    /// (it may be the one that decides); else it is said and left out.
    async fn known(&self, strict: bool) -> Result<KnownRecords> {
        let (local, bad_local) = local_records(&self.state, &self.namespace);
        let (swarm, bad_swarm) = self.swarm.records(&self.namespace).await?;
        let mut bad: Vec<(String, String, String)> = bad_swarm
            .into_iter()
            .map(|(name, e)| {
                (
                    format!("swarm config {name}"),
                    e,
                    format!("`docker config inspect --pretty {name}` on a manager; `docker config rm {name}` once you know what it said"),
                )
            })
            .collect();
        bad.extend(bad_local.into_iter().map(|u| {
            (
                u.path.display().to_string(),
                u.error,
                "move it aside (it may be the record of the release that runs; `de-build status` shows what the swarm runs)".to_string(),
            )
        }));
        if let Some((what, error, hint)) = bad.first() {
            if strict {
                return Err(Error::refused(
                    format!("deployment record {what} cannot be read: {error}"),
                    format!("{hint}, then try again"),
                ));
            }
            for (what, error, _) in &bad {
                output::diag(&format!(
                    "warning: deployment record {what} cannot be read ({error}); it is not considered"
                ));
            }
        }
        let k = record_swarm::merge(swarm, local);
        say_merge(&self.style, &k);
        Ok(k)
    }

    /// Upload the records only this machine has (kept here before records
    /// lived on the swarm, or written while it could not take them), under
    /// the swarm's lock: then every machine sees that history too. A record
    /// the swarm refuses is said and stays here; the deployment goes on.
    async fn upload(&self, world: &RealSwarm, k: &KnownRecords) {
        let mut done = Vec::new();
        for d in k.all.iter().filter(|d| k.local_only.contains(&d.id)) {
            match world.save_record(d).await {
                Ok(()) => done.push(d.id.clone()),
                Err(e) => output::diag(&format!(
                    "warning: the record of deployment {} stays on this machine only: {e}",
                    d.id
                )),
            }
        }
        if !done.is_empty() {
            output::progress(
                &self.style,
                &format!(
                    "uploaded {} record(s) this machine kept to the swarm: {}",
                    done.len(),
                    done.join(", ")
                ),
            );
        }
    }

    fn backend_name(&self) -> Result<String> {
        Ok(format!(
            "{}_{}",
            self.namespace,
            required(self.inputs, "DE_BACKEND_SERVICE")?
        ))
    }

    /// Exit 5 before reading records and services when another operator
    /// holds the lock: what they read now is a world in flux. (The lock is
    /// taken when the plan runs; a deploy that starts between this check
    /// and that is refused there.)
    async fn refuse_if_locked(&self) -> Result<()> {
        match self
            .swarm
            .lock_status(&self.namespace, self.stale_secs)
            .await?
        {
            held @ SwarmLock::Held { .. } => Err(held.refusal()),
            _ => Ok(()),
        }
    }

    /// Refuse while an earlier swarm deployment of this project is
    /// unfinished; one whose process still holds the swarm's lock is left to
    /// the lock (exit 5).
    async fn refuse_over_unfinished(&self, all: &[Deployment]) -> Result<()> {
        let Some(d) = all.last() else { return Ok(()) };
        match d.result {
            Outcome::Running | Outcome::Interrupted => {
                if let SwarmLock::Held { holder, .. } = self
                    .swarm
                    .lock_status(&self.namespace, self.stale_secs)
                    .await?
                {
                    if holder["deployment"] == json!(d.id) {
                        return Ok(());
                    }
                }
                Err(Error::refused(
                    format!(
                        "deployment {} ({} of {}) was interrupted and is not finished: services may be half-updated",
                        d.id, d.action, d.version
                    ),
                    "run `de-build recover` first (`de-build recover --dry-run` shows what it will do)",
                ))
            }
            Outcome::Fatal => Err(Error::refused(
                format!(
                    "the last deployment {} failed and its recovery did not finish",
                    d.id
                ),
                format!(
                    "finish it first: `de-build recover` (or by hand: {})",
                    d.left.as_deref().unwrap_or("see `de-build status`")
                ),
            )),
            _ => Ok(()),
        }
    }

    /// The compose file resolved by compose itself (files merged, variables
    /// interpolated) with the release's image, parsed into the stack.
    fn resolve(
        &self,
        version: &str,
        image: &str,
        sources: &[PathBuf],
    ) -> Result<(String, SwarmStack)> {
        let compose = Compose::detect();
        let source = sources
            .first()
            .map(PathBuf::as_path)
            .unwrap_or(Path::new("."));
        let project_dir = source.parent().map(Path::to_path_buf).unwrap_or_default();
        let t = Target {
            project: self.namespace.clone(),
            files: sources.to_vec(),
            project_dir,
            empty_env_file: crate::adapters::compose::empty_env_file(&self.state.dir)?,
        };
        let mut args = compose.config_args(&t);
        args.retain(|a| a != "--quiet");
        let env = self.compose_env(version, image);
        let started = Instant::now();
        let out = child_command(&compose.program[0])
            .args(&args)
            .envs(&env)
            .output()
            .map_err(|e| Error::Failed {
                message: format!("could not run `{}`: {e}", compose.program[0]),
                hint: Some("the swarm target resolves the compose file with compose (`config`): install docker-compose or the compose plugin, or set DE_COMPOSE".into()),
            })?;
        crate::ui::logfile::action(
            &format!("{} {}", compose.program.join(" "), args.join(" ")),
            out.status.success(),
            started.elapsed(),
            "",
        );
        if !out.status.success() {
            return Err(Error::refused(
                format!(
                    "compose cannot resolve {}: {}",
                    config::display(source),
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
                "fix the compose file (the message is compose's own)",
            ));
        }
        let yaml = String::from_utf8_lossy(&out.stdout).into_owned();
        let stack = self.parse(version, image, &yaml, source)?;
        Ok((yaml, stack))
    }

    fn parse(&self, version: &str, image: &str, yaml: &str, source: &Path) -> Result<SwarmStack> {
        let backend = required(self.inputs, "DE_BACKEND_SERVICE")?.to_string();
        let web = crate::config::stack::web_services(
            self.inputs.env.get("DE_SWARM_WEB_SERVICES"),
            &backend,
        );
        // The same judgement `check` made on the files, now on what compose
        // resolved (the two differ only where compose merges lists or
        // resolves `extends`/`include`, which de-build's reader does not).
        let roles = crate::config::stack::Roles {
            namespace: &self.namespace,
            backend: &backend,
            web: &web,
        };
        let stack = crate::config::stack::parse(yaml, roles).map_err(|p| {
            Error::refused(
                format!(
                    "{} cannot run on a swarm as it is: {}",
                    config::display(source),
                    p.iter().map(|p| p.message.as_str()).collect::<Vec<_>>().join("; ")
                ),
                match p.iter().find_map(|p| p.hint.clone()) {
                    Some(h) if p.len() == 1 => h,
                    _ => "`de-build check` names each problem with its file and line; the README's \"Swarm target\" lists what is supported".into(),
                },
            )
        })?;
        // A service of the release's repository must run exactly the
        // release's digest: a fixed tag would quietly run another image.
        let repo = image.split('@').next().unwrap_or(image);
        let repo = crate::adapters::engine::split_reference(repo).0;
        let local = self.inputs.env.get("DE_IMAGE").unwrap_or(repo);
        let wrong: Vec<String> = stack
            .services
            .iter()
            .filter(|s| (s.image.starts_with(repo) || s.image.contains(local)) && s.image != image)
            .map(|s| format!("{} ({})", s.name, s.image))
            .collect();
        if !wrong.is_empty() {
            return Err(Error::refused(
                format!(
                    "services of the release's image do not use its digest {image}: {}",
                    wrong.join(", ")
                ),
                "take the image from ${CUSTOM_IMAGE}:${CUSTOM_TAG} in the compose file",
            ));
        }
        Ok(SwarmStack {
            version: version.to_string(),
            image: image.to_string(),
            image_id: String::new(),
            namespace: self.namespace.clone(),
            file: PathBuf::new(),
            stack,
        })
    }

    fn compose_env(&self, version: &str, image: &str) -> BTreeMap<String, String> {
        let mut env = self.inputs.env.public();
        env.insert("COMPOSE_PROJECT_NAME".into(), self.namespace.clone());
        // `${CUSTOM_IMAGE}:${CUSTOM_TAG}` becomes `repo:version@sha256:…`:
        // the tag for people, the digest for the nodes.
        let (repo, tag) = image
            .split_once(&format!(":{version}@"))
            .map(|(r, d)| (r.to_string(), format!("{version}@{d}")))
            .unwrap_or_else(|| (image.to_string(), version.to_string()));
        // The repository the stack runs is the registry's: a file that
        // writes `${DE_IMAGE}:${CUSTOM_TAG}` gets it too.
        env.insert("CUSTOM_IMAGE".into(), repo.clone());
        env.insert("DE_IMAGE".into(), repo);
        env.insert("CUSTOM_TAG".into(), tag);
        env
    }

    #[allow(clippy::too_many_arguments)]
    async fn request(
        &self,
        action: Action,
        id: String,
        new: SwarmStack,
        yaml: String,
        sources: Vec<PathBuf>,
        migrate: bool,
        maintenance: bool,
        restore: Vec<Backup>,
    ) -> Result<SwarmRequest> {
        let services = self.swarm.services(&self.namespace).await?;
        let mut previous_specs = BTreeMap::new();
        for s in &services {
            let v = serde_json::to_value(&s.spec)
                .map_err(|e| Error::failed(format!("record the spec of {}: {e}", s.name)))?;
            previous_specs.insert(s.name.clone(), v);
        }
        let backend = self.backend_name()?;
        let b = services.iter().find(|s| s.name == backend);
        let previous = b.map(|b| PreviousRelease {
            version: b
                .label("de-build.version")
                .unwrap_or_else(|| "unknown (not deployed by de-build)".into()),
            image: b.image(),
            deployment: b.label("de-build.deployment"),
        });
        let previous_running = match b {
            Some(b) => self
                .swarm
                .tasks(std::slice::from_ref(b))
                .await?
                .iter()
                .any(|t| t.desired == "running" && t.state == "running"),
            None => false,
        };
        if let (Some(p), false) = (&previous, previous_running) {
            output::progress(
                &self.style,
                &format!(
                    "note: {} runs no task of {backend}: no maintenance mode or backup",
                    p.version
                ),
            );
        }
        let mut new = new;
        let snap = self.state.compose_snapshot_dir(&id).join("resolved.yaml");
        new.file = std::path::absolute(&snap).map_err(|e| Error::io("resolve", &snap, e))?;
        let env = self.compose_env(&new.version, &new.image);
        Ok(SwarmRequest {
            id,
            action,
            version: new.version.clone(),
            image_id: new.image_id.clone(),
            new,
            resolved: yaml,
            previous,
            previous_specs,
            previous_running,
            compose_sources: sources,
            env,
            sites: Sites::parse(self.inputs.env.get("DE_SITES").unwrap_or("all")),
            backend_service: required(self.inputs, "DE_BACKEND_SERVICE")?.to_string(),
            health_url: required(self.inputs, "DE_HEALTH_URL")?.to_string(),
            drain_timeout_secs: secs(self.inputs, "DE_DRAIN_TIMEOUT", 60),
            health_timeout_secs: secs(self.inputs, "DE_HEALTH_TIMEOUT", 60),
            timeout_secs: secs(self.inputs, "DE_SWARM_TIMEOUT", 300),
            migrate,
            maintenance,
            restore,
        })
    }

    /// Migrate or not, as on one host: `DE_MIGRATE` (or the flag), and in
    /// `auto` the schema fingerprints of the release the backend runs (its
    /// manifest, when that release's digest is the one running) and the new one.
    async fn decide_migrate(
        &self,
        mode: Option<MigrateMode>,
        new: &Loaded,
    ) -> Result<(bool, String)> {
        let mode = match mode {
            Some(m) => m,
            None => {
                let v = self.inputs.env.get("DE_MIGRATE").unwrap_or("auto");
                MigrateMode::parse(v).ok_or_else(|| {
                    Error::refused(
                        format!("DE_MIGRATE is `{v}`"),
                        "use auto (migrate when the schema fingerprint changed), always or never",
                    )
                })?
            }
        };
        let running = match self.swarm.service(&self.backend_name()?).await? {
            None => None,
            Some(b) => {
                let version = b
                    .label("de-build.version")
                    .unwrap_or_else(|| "the running release".into());
                let image = b.image();
                let fp = Store::new(&self.inputs.paths.releases)
                    .get(&version)
                    .ok()
                    .flatten()
                    .filter(|l| {
                        l.manifest
                            .registry
                            .as_ref()
                            .and_then(|r| r.digest_ref.split_once('@').map(|(_, d)| d.to_string()))
                            .is_some_and(|d| image.ends_with(&format!("@{d}")))
                    })
                    .and_then(|l| l.manifest.schema.map(|s| s.sha256));
                Some((version, fp))
            }
        };
        Ok(crate::plan::deploy::decide_migrate(
            mode,
            running.as_ref().map(|(v, fp)| (v.as_str(), fp.as_deref())),
            new.manifest.schema.as_ref().map(|s| s.sha256.as_str()),
        ))
    }

    fn holder(&self, command: &str, version: &str, deployment: &str) -> Value {
        let (user, host) = state::whoami();
        json!({
            "user": user, "host": host, "pid": std::process::id(), "command": command,
            "version": version, "deployment": deployment, "since": state::now(),
        })
    }
}

/// The release's manifest; it must have been pushed (the swarm pulls by digest).
fn manifest(inputs: &Inputs, version: &str) -> Result<Loaded> {
    let (all, _) = Store::new(&inputs.paths.releases).load_all();
    let Some(l) = all.iter().find(|l| l.manifest.version == version).cloned() else {
        let v: Vec<String> = all.iter().map(|l| l.manifest.version.clone()).collect();
        return Err(Error::refused(
            format!(
                "release {version} was never recorded in {}",
                config::display(&inputs.paths.releases)
            ),
            format!(
                "recorded releases: {}; build it first with `de-build build`",
                if v.is_empty() {
                    "none".into()
                } else {
                    v.join(", ")
                }
            ),
        ));
    };
    if l.manifest.registry.is_none() {
        return Err(Error::refused(
            format!("release {version} was never pushed: every node of a swarm pulls the release by digest from DE_REGISTRY"),
            format!("`de-build push {version}` (with DE_REGISTRY set), then deploy"),
        ));
    }
    Ok(l)
}

/// The reference the nodes pull: `registry/repo:version@sha256:…`, with the
/// registry as the nodes reach it (`DE_SWARM_REGISTRY`, else the one pushed to).
pub fn nodes_image(digest_ref: &str, version: &str, swarm_registry: Option<&str>) -> String {
    let (repo, digest) = digest_ref.split_once('@').unwrap_or((digest_ref, ""));
    let repo = match swarm_registry.map(str::trim).filter(|r| !r.is_empty()) {
        Some(reg) => match repo.split_once('/') {
            Some((_, path)) => format!("{}/{path}", reg.trim_end_matches('/')),
            None => repo.to_string(),
        },
        None => repo.to_string(),
    };
    format!("{repo}:{version}@{digest}")
}

fn release_image(inputs: &Inputs, l: &Loaded) -> String {
    let r = l.manifest.registry.as_ref().expect("checked by manifest()");
    nodes_image(
        &r.digest_ref,
        &l.manifest.version,
        inputs.env.get("DE_SWARM_REGISTRY"),
    )
}

fn digest_only(image: &str) -> String {
    match image.split_once('@') {
        Some((repo, d)) => format!("{}@{d}", crate::adapters::engine::split_reference(repo).0),
        None => image.to_string(),
    }
}

/// `DE_COMPOSE_FILE`: one file or several, merged in order by compose.
fn compose_sources(inputs: &Inputs) -> Result<Vec<PathBuf>> {
    config::compose::list(required(inputs, "DE_COMPOSE_FILE")?)
        .iter()
        .map(|f| {
            let p = inputs.paths.project_dir.join(f);
            std::fs::canonicalize(&p).map_err(|e| Error::io("read", &p, e))
        })
        .collect()
}

fn print_plan(style: &Style, plan: &SwarmPlan) {
    if style.json {
        output::json(&json!({
            "command": plan.action, "ok": true, "dry_run": true, "target": "swarm",
            "version": plan.version, "previous": plan.previous.as_ref().map(|p| p.version.clone()),
            "plan": plan,
        }));
    } else {
        output::result(&plan.to_string());
        output::result("dry run: nothing was changed");
    }
}

/// `de-build deploy [VERSION]` on a swarm.
pub async fn deploy(
    inputs: &Inputs,
    style: &Style,
    version: &str,
    dry_run: bool,
    mode: Option<MigrateMode>,
) -> Result<Option<Deployment>> {
    let s = Session::open(inputs, style).await?;
    if !dry_run {
        s.refuse_if_locked().await?;
    }
    let known = s.known(true).await?;
    s.refuse_over_unfinished(&known.all).await?;
    let l = manifest(inputs, version)?;
    let image = release_image(inputs, &l);
    s.swarm.registry_has(&digest_only(&image)).await?;
    let sources = compose_sources(inputs)?;
    let (yaml, mut new) = s.resolve(version, &image, &sources)?;
    new.image_id = l.manifest.image.id.clone();
    let (migrate, why) = s.decide_migrate(mode, &l).await?;
    output::progress(
        style,
        &format!("migrate: {} ({why})", if migrate { "yes" } else { "no" }),
    );
    let req = s
        .request(
            Action::Deploy,
            state::new_id(),
            new,
            yaml,
            sources,
            migrate,
            migrate,
            Vec::new(),
        )
        .await?;
    let plan = planner::plan(req);
    if dry_run {
        print_plan(style, &plan);
        return Ok(None);
    }
    if !style.json {
        output::progress(style, &plan.to_string());
    }
    execute(&s, &plan, &known).await.map(Some)
}

/// `de-build rollback [VERSION]` on a swarm: the same plan without migrate.
pub async fn rollback(inputs: &Inputs, args: &RollbackArgs, style: &Style) -> Result<i32> {
    let started = Instant::now();
    let s = Session::open(inputs, style).await?;
    if !args.dry_run {
        s.refuse_if_locked().await?;
    }
    let known = s.known(true).await?;
    let all = &known.all;
    s.refuse_over_unfinished(all).await?;
    let candidates: Vec<String> = state::earlier(all)
        .iter()
        .map(|d| d.version.clone())
        .collect();
    let target = match &args.version {
        Some(v) => v.clone(),
        None => candidates.first().cloned().ok_or_else(|| {
            Error::refused(
                "no earlier swarm deployment is recorded, on the swarm or here, to roll back to",
                "name a pushed release: `de-build rollback 1.2.0`",
            )
        })?,
    };
    let l = manifest(inputs, &target)?;
    let image = release_image(inputs, &l);
    s.swarm.registry_has(&digest_only(&image)).await?;
    let restore = match &args.restore_backup {
        None => Vec::new(),
        Some(id) => state::backups_of(all, id)?,
    };
    // The exact resolved file the target ran with, from whichever machine
    // deployed it (its record keeps the text); else the compose file as it
    // is now, with the target's digest.
    let recorded = all
        .iter()
        .rev()
        .filter(|d| d.result.is_up() && d.version == target)
        .find_map(|d| {
            let run = d.swarm.as_ref()?;
            let text = std::fs::read_to_string(&run.plan.new.file)
                .ok()
                .or_else(|| {
                    run.plan.steps.iter().find_map(|p| match &p.step {
                        planner::SwarmStep::Snapshot { text, .. } => Some(text.clone()),
                        _ => None,
                    })
                })?;
            Some((
                text,
                run.plan.new.file.clone(),
                run.plan.compose_sources.clone(),
            ))
        });
    let (yaml, mut new, source) = match recorded {
        Some((text, file, source)) => {
            let st = s.parse(&target, &image, &text, &file)?;
            (text, st, source)
        }
        None => {
            let sources = compose_sources(inputs)?;
            let (y, st) = s.resolve(&target, &image, &sources)?;
            (y, st, sources)
        }
    };
    new.image_id = l.manifest.image.id.clone();
    let req = s
        .request(
            Action::Rollback,
            state::new_id(),
            new,
            yaml,
            source,
            false,
            true,
            restore.clone(),
        )
        .await?;
    let plan = planner::plan(req);
    if args.dry_run {
        print_plan(style, &plan);
        return Ok(EXIT_OK);
    }
    if !style.json {
        output::progress(style, &plan.to_string());
    }
    let current = plan.previous.as_ref().map(|p| p.version.clone());
    let d = execute(&s, &plan, &known).await?;
    let db_note = if restore.is_empty() {
        current.map(|c| {
            match all.iter().rev().find(|d| d.version == c && !d.backups.is_empty()) {
                Some(b) => format!("the database stays as {c} migrated it (a rollback does not migrate back); to restore the backup taken before {c} was deployed: `de-build rollback {target} --restore-backup {}`", b.id),
                None => format!("the database stays as {c} migrated it (a rollback does not migrate back)"),
            }
        })
    } else {
        Some("the database was restored from the chosen backup".into())
    };
    crate::cli::deploy::report(style, &d, started.elapsed(), db_note);
    Ok(EXIT_OK)
}

/// Run `plan` under the swarm's lock, with signals, progress and the audit line.
async fn execute(s: &Session<'_>, plan: &SwarmPlan, known: &KnownRecords) -> Result<Deployment> {
    let signals = Signals::install_for(&s.state, &plan.id)?;
    let holder = s.holder(plan.action.as_str(), &plan.version, &plan.id);
    let (lock_id, took_over) = s
        .swarm
        .lock_acquire(&s.namespace, &holder, s.stale_secs)
        .await?;
    if let Some(l) = took_over {
        output::progress(
            &s.style,
            &format!("note: took over a lock {}", l.describe()),
        );
    }
    let lost = Arc::new(AtomicBool::new(false));
    let heartbeat = {
        let swarm = s.swarm.clone();
        let id = lock_id.clone();
        let lost = lost.clone();
        let every = Duration::from_secs((s.stale_secs / 4).clamp(1, 10));
        tokio::spawn(async move {
            let mut n = 0u64;
            loop {
                tokio::time::sleep(every).await;
                n += 1;
                match swarm.lock_heartbeat(&id, n).await {
                    Ok(true) => {}
                    Ok(false) => {
                        lost.store(true, Ordering::SeqCst);
                        output::diag("the swarm's deploy lock was taken over by another operator: stopping after this step");
                        return;
                    }
                    // A manager that does not answer for a moment: the next
                    // beat tries again (the lock goes stale only after
                    // DE_SWARM_LOCK_STALE seconds without one).
                    Err(e) => crate::ui::logfile::action(
                        "swarm lock heartbeat",
                        false,
                        Duration::ZERO,
                        &e.to_string(),
                    ),
                }
            }
        })
    };
    let logs = s.state.ensure_dir("logs")?;
    let mut term = Terminal::new(s.style, &logs.join(format!("{}.log", plan.id)));
    let started = Instant::now();
    let world = RealSwarm::new(
        s.swarm.clone(),
        crate::config::rules::health_host(&s.inputs.env),
    );
    s.upload(&world, known).await;
    let Finished { record, error } = SwarmExecutor {
        world: &world,
        records: &s.state,
        sink: &mut term,
        interrupted: signals.flag.clone(),
        lost_lock: lost.clone(),
        jobs_started: 0,
        db_root_password: s.inputs.env.secret("DB_PASSWORD"),
    }
    .run(plan)
    .await;
    heartbeat.abort();
    if let Err(e) = s.state.audit(&json!({
        "time": record.finished, "user": record.user, "host": record.host, "target": "swarm",
        "action": plan.action, "version": plan.version, "previous": record.previous_version,
        "result": record.result, "deployment": plan.id, "seconds": started.elapsed().as_secs_f64(),
        "error": record.error,
    })) {
        output::diag(&format!("warning: audit.log not written: {e}"));
    }
    if !lost.load(Ordering::SeqCst) {
        if let Err(e) = s.swarm.lock_remove(&lock_id).await {
            output::diag(&format!("warning: the swarm's lock was not released ({e}); it goes stale after {}s, or `de-build lock release`", s.stale_secs));
        }
    }
    drop(signals);
    match error {
        None => Ok(record),
        Some(e) => Err(e),
    }
}

/// What the swarm shows of the stack.
enum View {
    Unreachable(String),
    Stack {
        services: Vec<crate::adapters::swarm::ServiceView>,
        tasks: Vec<TaskState>,
        lock: SwarmLock,
        /// The records on the swarm, and its copies that cannot be read.
        records: (Vec<Deployment>, Vec<(String, String)>),
    },
}

/// `de-build status` on a swarm: records against services and tasks per node.
pub async fn status(inputs: &Inputs, style: &Style) -> Result<i32> {
    let st = State::new(&inputs.paths.state);
    let namespace = inputs
        .env
        .get("COMPOSE_PROJECT_NAME")
        .unwrap_or_default()
        .to_string();
    let (local, unreadable) = local_records(&st, &namespace);
    let stale_secs = secs(inputs, "DE_SWARM_LOCK_STALE", 60).max(5);
    let view = async {
        let engine = Engine::connect().await?;
        let swarm = Swarm::new(engine, None);
        swarm.check_manager().await?;
        let services = swarm.services(&namespace).await?;
        let tasks = swarm.tasks(&services).await?;
        let lock = swarm.lock_status(&namespace, stale_secs).await?;
        let records = swarm.records(&namespace).await?;
        Ok::<_, Error>(View::Stack {
            services,
            tasks,
            lock,
            records,
        })
    }
    .await
    .unwrap_or_else(|e| View::Unreachable(e.to_string()));
    // Without the manager, this machine's records are all there is to show.
    let (known, on_swarm) = match &view {
        View::Stack { records, .. } => (
            record_swarm::merge(records.0.clone(), local),
            Some(records.0.len()),
        ),
        View::Unreachable(_) => (
            KnownRecords {
                local_only: local.iter().map(|d| d.id.clone()).collect(),
                all: local,
                differs: Vec::new(),
            },
            None,
        ),
    };
    say_merge(style, &known);
    let all = known.all.clone();
    let current = state::current(&all).cloned();
    let mut found: Vec<Finding> = unreadable
        .iter()
        .map(|u| Finding {
            code: "unreadable-record",
            message: format!("record {} cannot be read: {}", u.path.display(), u.error),
            fix: "inspect it; move it aside if it is damaged".into(),
        })
        .collect();
    if let View::Stack { records, .. } = &view {
        found.extend(records.1.iter().map(|(name, e)| Finding {
            code: "unreadable-record",
            message: format!("the record in swarm config {name} cannot be read: {e}"),
            fix: format!("`docker config inspect --pretty {name}` on a manager; `docker config rm {name}` once you know what it said"),
        }));
    }
    let backend = format!(
        "{namespace}_{}",
        inputs.env.get("DE_BACKEND_SERVICE").unwrap_or("backend")
    );
    match &view {
        View::Unreachable(e) => found.push(Finding {
            code: "engine-unreachable",
            message: format!("the swarm manager did not answer ({e}): what runs is unknown"),
            fix: "point DOCKER_HOST at a manager (`docker node ls` must work there)".into(),
        }),
        View::Stack {
            services,
            tasks,
            lock,
            ..
        } => {
            found.extend(findings(
                &all,
                current.as_ref(),
                services,
                tasks,
                lock,
                &backend,
            ));
        }
    }
    let consistent = found.is_empty();
    let previous = state::earlier(&all).first().map(|d| d.version.clone());
    if style.json {
        let (services, tasks, lock) = match &view {
            View::Stack { services, tasks, lock, .. } => (
                services.iter().map(|s| json!({"name": s.name, "image": s.image(), "replicas": s.replicas(), "version": s.label("de-build.version"), "deployment": s.label("de-build.deployment"), "update_state": s.update_state.as_ref().map(|u| u.0.clone())})).collect::<Vec<_>>(),
                tasks.iter().filter(|t| t.desired == "running" || t.state == "running").cloned().collect::<Vec<_>>(),
                serde_json::to_value(lock).unwrap_or_default(),
            ),
            View::Unreachable(_) => (Vec::new(), Vec::new(), Value::Null),
        };
        output::json(&json!({
            "command": "status", "ok": true, "target": "swarm", "consistent": consistent,
            "exit_code": if consistent { EXIT_OK } else { EXIT_FAILURE },
            "findings": found,
            "current": current.as_ref().map(|d| json!({"version": d.version, "deployment": d.id, "image": d.swarm.as_ref().map(|r| r.plan.new.image.clone()), "since": d.finished})),
            "previous_version": previous,
            "lock": lock, "services": services, "tasks": tasks,
            "records": {
                "source": if on_swarm.is_some() { "swarm" } else { "this machine" },
                "on_swarm": on_swarm, "local_only": known.local_only, "differs": known.differs,
            },
            "deployments": all.iter().rev().take(10).map(|d| json!({"id": d.id, "action": d.action, "version": d.version, "previous": d.previous_version, "result": d.result, "started": d.started, "user": d.user, "host": d.host, "backups": d.backups, "error": d.error, "left": d.left, "data_note": d.data_note, "jobs": d.swarm.as_ref().map(|r| r.jobs.clone())})).collect::<Vec<_>>(),
        }));
        return Ok(if consistent { EXIT_OK } else { EXIT_FAILURE });
    }
    match &current {
        Some(d) => output::result(&format!(
            "deployed: {} ({}, deployment {}) on swarm stack {namespace}",
            d.version,
            d.swarm
                .as_ref()
                .map(|r| r.plan.new.image.clone())
                .unwrap_or_default(),
            d.id
        )),
        None => output::result("deployed: nothing recorded"),
    }
    output::result(&format!(
        "previous: {}",
        previous.as_deref().unwrap_or("none")
    ));
    let here = if known.local_only.is_empty() {
        String::new()
    } else {
        format!(
            "; {} only on this machine (uploaded by the next deploy, rollback or recover from here)",
            known.local_only.len()
        )
    };
    match on_swarm {
        Some(n) => output::result(&format!("records:  {n} on the swarm{here}")),
        None => output::result(&format!(
            "records:  this machine's only ({}), the swarm did not answer",
            all.len()
        )),
    }
    match &view {
        View::Unreachable(_) => output::result("swarm:    not reachable"),
        View::Stack {
            services,
            tasks,
            lock,
            ..
        } => {
            output::result(&format!("lock:     {}", lock.describe()));
            if services.is_empty() {
                output::result("swarm:    no service of the stack");
            }
            for s in services {
                let n = s
                    .replicas()
                    .map(|r| format!("{r} replica(s)"))
                    .unwrap_or_else(|| "global".into());
                let upd = s
                    .update_state
                    .as_ref()
                    .map(|u| format!(", update {}", u.0))
                    .unwrap_or_default();
                output::result(&format!(
                    "service:  {} {} ({}, {n}{upd})",
                    s.name,
                    s.label("de-build.version").unwrap_or_else(|| "?".into()),
                    short_image(&s.image())
                ));
                for t in tasks.iter().filter(|t| {
                    t.service == s.name && (t.desired == "running" || t.state == "running")
                }) {
                    output::result(&format!("  task    {}", t.describe()));
                }
            }
        }
    }
    if consistent {
        output::result(&format!(
            "{} records and swarm agree",
            style.green("consistent:")
        ));
    } else {
        for f in &found {
            output::result(&format!("{} {}", style.red("NOT CONSISTENT:"), f.message));
            output::result(&format!("  fix: {}", f.fix));
        }
    }
    if !all.is_empty() {
        output::result("last deployments:");
        for d in all.iter().rev().take(10) {
            output::result(&format!(
                "  {}  {:<8} {} -> {:<10} {}{} · by {}@{}",
                d.id,
                d.action,
                d.previous_version.as_deref().unwrap_or("-"),
                d.version,
                d.result.as_str(),
                if d.backups.is_empty() {
                    String::new()
                } else {
                    format!(" · {} backup(s)", d.backups.len())
                },
                d.user,
                d.host
            ));
            if let Some(l) = &d.left {
                output::result(&format!("      left to do: {l}"));
            }
            if let Some(n) = &d.data_note {
                output::result(&format!("      data: {n}"));
            }
        }
    }
    Ok(if consistent { EXIT_OK } else { EXIT_FAILURE })
}

fn short_image(image: &str) -> String {
    match image.split_once('@') {
        Some((r, d)) => format!("{r}@{}", short_id(d)),
        None => image.to_string(),
    }
}

/// Compare the swarm's records with its services and tasks: pure.
fn findings(
    all: &[Deployment],
    current: Option<&Deployment>,
    services: &[crate::adapters::swarm::ServiceView],
    tasks: &[TaskState],
    lock: &SwarmLock,
    backend: &str,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let last = all.last();
    match lock {
        SwarmLock::Held { .. } => out.push(Finding {
            code: "in-progress",
            message: format!("a deployment is running: the swarm's lock is {}", lock.describe()),
            fix: "wait for it to finish".into(),
        }),
        SwarmLock::Stale { holder, .. } => out.push(Finding {
            code: "stale-lock",
            message: format!("the swarm's lock was {}", lock.describe()),
            fix: if all.iter().any(|d| json!(d.id) == holder["deployment"]) {
                "`de-build recover` (from any machine: its record is on the swarm)".into()
            } else {
                "no record of its deployment is on the swarm or here: it died before its first save (nothing changed), or a de-build that kept records on its own machine held it (`de-build recover` there); else `de-build lock release` once you know the stack is sound".into()
            },
        }),
        SwarmLock::Free => {}
    }
    let held = matches!(lock, SwarmLock::Held { .. });
    if let Some(d) =
        last.filter(|d| matches!(d.result, Outcome::Running | Outcome::Interrupted) && !held)
    {
        out.push(Finding {
            code: "interrupted",
            message: format!(
                "deployment {} ({} {} -> {}) did not finish: its record says {} and nobody holds the swarm's lock",
                d.id, d.action, d.previous_version.as_deref().unwrap_or("nothing"), d.version, d.result.as_str()
            ),
            fix: "`de-build recover` (`--dry-run` first to see what it does)".into(),
        });
    } else if let Some(d) = last.filter(|d| d.result == Outcome::Fatal) {
        out.push(Finding {
            code: "recovery-failed",
            message: format!("deployment {} failed and its recovery did not finish", d.id),
            fix: format!(
                "`de-build recover`, or by hand: {}",
                d.left.as_deref().unwrap_or("see the deployment log")
            ),
        });
    }
    for s in services {
        if let Some((state, _, msg)) = &s.update_state {
            if state == "paused" || state == "rollback_paused" || state == "updating" && !held {
                out.push(Finding {
                    code: "update-stuck",
                    message: format!("the update of {} is {state}: {msg}", s.name),
                    fix: "`de-build recover` if a deployment was interrupted; else deploy the release you want".into(),
                });
            }
        }
        if s.is_job() {
            continue;
        }
        let running: Vec<&TaskState> = tasks
            .iter()
            .filter(|t| t.service == s.name && t.desired == "running")
            .collect();
        let up = running.iter().filter(|t| t.state == "running").count() as u64;
        let want = s.replicas().unwrap_or(1);
        if up < want {
            let states: Vec<String> = running
                .iter()
                .filter(|t| t.state != "running")
                .map(|t| t.describe())
                .collect();
            out.push(Finding {
                code: "tasks-not-running",
                message: format!(
                    "{}: {up} of {want} task(s) running{}",
                    s.name,
                    if states.is_empty() { String::new() } else { format!(" ({})", states.join("; ")) }
                ),
                fix: "`docker service ps --no-trunc` on a manager tells why (a node down, an image that cannot be pulled)".into(),
            });
        }
    }
    let b = services.iter().find(|s| s.name == backend);
    match (current, b) {
        (Some(d), None) => out.push(Finding {
            code: "not-running",
            message: format!("{} is recorded as deployed but the swarm has no service {backend}", d.version),
            fix: format!("`de-build deploy {}` creates it again", d.version),
        }),
        (Some(d), Some(b)) => {
            let want = d.swarm.as_ref().map(|r| r.plan.new.image.clone()).unwrap_or_default();
            if b.image() != want {
                out.push(Finding {
                    code: "wrong-image",
                    message: format!(
                        "{} is recorded as deployed ({want}) but {backend} runs {} (version label {}, deployment {})",
                        d.version,
                        b.image(),
                        b.label("de-build.version").unwrap_or_else(|| "none".into()),
                        b.label("de-build.deployment").unwrap_or_else(|| "none".into())
                    ),
                    fix: "changed since by hand (or by a de-build that keeps its records on its own machine): `de-build deploy <version>` puts the release you want".into(),
                });
            }
            for t in tasks.iter().filter(|t| t.desired == "running" && t.state == "running") {
                let app = services.iter().any(|s| s.name == t.service && s.label("de-build.role").is_some() && s.image() == want);
                if app && t.image != want {
                    out.push(Finding {
                        code: "wrong-image",
                        message: format!("{} instead of {want}", t.describe()),
                        fix: format!("`de-build deploy {}`", d.version),
                    });
                }
            }
        }
        (None, Some(b)) => out.push(Finding {
            code: "unrecorded-stack",
            message: format!(
                "no swarm deployment is recorded on the swarm or here, but {backend} runs {} (version label {})",
                b.image(),
                b.label("de-build.version").unwrap_or_else(|| "none".into())
            ),
            fix: "deployed by hand, or by a de-build that kept its records on its own machine (a deploy from there uploads them); `de-build deploy <version>` from here takes it over".into(),
        }),
        (None, None) => {}
    }
    out
}

/// `de-build recover` on a swarm.
pub async fn recover(inputs: &Inputs, args: &RecoverArgs, style: &Style) -> Result<i32> {
    // The records on the swarm: a deployment interrupted on another
    // machine is finished from this one.
    let s = Session::open(inputs, style).await?;
    let known = s.known(false).await?;
    let target = known
        .all
        .last()
        .filter(|d| {
            matches!(
                d.result,
                Outcome::Running | Outcome::Interrupted | Outcome::Fatal
            )
        })
        .cloned();
    let Some(mut record) = target else {
        if style.json {
            output::json(&json!({"command": "recover", "ok": true, "recovered": null}));
        } else {
            output::result(
                "nothing to recover: no swarm deployment of this project was interrupted",
            );
        }
        return Ok(EXIT_OK);
    };
    let (plan, recovery) = executor::recovery_of(&record)
        .ok_or_else(|| Error::failed("the record has no swarm plan"))?;
    let all_done = plan.steps.iter().all(|s| {
        record
            .swarm
            .as_ref()
            .is_some_and(|r| r.progress.done.iter().any(|d| d == s.step.name()))
    });
    if args.dry_run {
        let what = if all_done {
            format!("every step of {} finished: check the health gate and close the record as succeeded", record.id)
        } else {
            planner::describe(&recovery)
        };
        if style.json {
            output::json(
                &json!({"command": "recover", "ok": true, "dry_run": true, "deployment": record.id, "complete": all_done, "recovery": recovery}),
            );
        } else {
            output::result(&format!(
                "deployment {} ({} {} -> {}, {}): {what}",
                record.id,
                record.action,
                record.previous_version.as_deref().unwrap_or("nothing"),
                record.version,
                record.result.as_str()
            ));
            output::result("dry run: nothing was changed");
        }
        return Ok(EXIT_OK);
    }
    let holder = s.holder("recover", &record.version, &record.id);
    let (lock_id, took_over) = s
        .swarm
        .lock_acquire(&s.namespace, &holder, s.stale_secs)
        .await?;
    if let Some(l) = took_over {
        output::progress(style, &format!("note: took over a lock {}", l.describe()));
    }
    let world = RealSwarm::new(
        s.swarm.clone(),
        crate::config::rules::health_host(&s.inputs.env),
    );
    s.upload(&world, &known).await;
    let url = required(inputs, "DE_HEALTH_URL")?.to_string();
    // Never restore a database that serves users.
    let mut recovery = recovery;
    if !all_done
        && recovery
            .steps
            .iter()
            .any(|r| matches!(r, planner::SwarmRecoveryStep::Restore { .. }))
        && world
            .wait_healthy(&url, Duration::from_secs(1), Gate::Open)
            .await
            .is_ok()
    {
        output::progress(style, "note: the site answers 2xx now, so users may have written to it: its database is not restored");
        let run = record.swarm.as_mut().expect("swarm record");
        run.progress.users_let_in = true;
        recovery = executor::recovery_of(&record)
            .map(|(_, r)| r)
            .expect("swarm record");
    }
    let logs = s.state.ensure_dir("logs")?;
    let mut term = Terminal::new(s.style, &logs.join(format!("{}.log", record.id)));
    let mut ex = SwarmExecutor {
        world: &world,
        records: &s.state,
        sink: &mut term,
        interrupted: Arc::new(AtomicBool::new(false)),
        lost_lock: Arc::new(AtomicBool::new(false)),
        jobs_started: 1000,
        db_root_password: inputs.env.secret("DB_PASSWORD"),
    };
    let result = if all_done {
        match world
            .wait_healthy(
                &url,
                Duration::from_secs(secs(inputs, "DE_HEALTH_TIMEOUT", 60)),
                Gate::Open,
            )
            .await
        {
            Ok(_) => {
                record.result = Outcome::Succeeded;
                record.finished = Some(state::now());
                ex.save(&plan, &record).await.map(|_| None)
            }
            Err(e) => {
                let r = planner::recovery(
                    &plan,
                    &record.swarm.as_ref().expect("swarm record").progress,
                );
                Ok(Some(ex.recover(&plan, &mut record, r, e).await))
            }
        }
    } else {
        let cause = Error::failed(format!(
            "deployment {} was interrupted ({})",
            record.id,
            record.result.as_str()
        ));
        Ok(Some(ex.recover(&plan, &mut record, recovery, cause).await))
    };
    if let Err(e) = s.swarm.lock_remove(&lock_id).await {
        output::diag(&format!("warning: {e}"));
    }
    let result = result?.map(|e| match (e, record.result) {
        (Error::Failed { message, hint }, Outcome::Aborted) => Error::Recovered {
            message: format!(
                "{message}; {}",
                hint.unwrap_or_else(|| "the stack is consistent again".into())
            ),
        },
        (e, _) => e,
    });
    match result {
        None => {
            if style.json {
                output::json(
                    &json!({"command": "recover", "ok": true, "deployment": record.id, "result": record.result}),
                );
            } else {
                output::result(&format!(
                    "deployment {} completed: {} is deployed and healthy",
                    record.id, record.version
                ));
            }
            Ok(EXIT_OK)
        }
        Some(e) => Err(e),
    }
}

/// `de-build lock release` on a swarm: only a stale lock (no heartbeat).
pub async fn lock_release(inputs: &Inputs, style: &Style) -> Result<i32> {
    let engine = Engine::connect().await?;
    let swarm = Swarm::new(engine, None);
    swarm.check_manager().await?;
    let namespace = required(inputs, "COMPOSE_PROJECT_NAME")?;
    let lock = swarm
        .lock_status(namespace, secs(inputs, "DE_SWARM_LOCK_STALE", 60).max(5))
        .await?;
    match &lock {
        SwarmLock::Held { .. } => {
            return Err(Error::refused(
                format!("the swarm's lock is {}", lock.describe()),
                "that deployment is alive (it refreshes the lock): wait for it",
            ))
        }
        SwarmLock::Stale { id, .. } => swarm.lock_remove(id).await?,
        SwarmLock::Free => {}
    }
    if style.json {
        output::json(
            &json!({"command": "lock release", "ok": true, "target": "swarm", "was": lock}),
        );
    } else if matches!(lock, SwarmLock::Stale { .. }) {
        output::result(&format!("released the lock {}", lock.describe()));
    } else {
        output::result("the swarm's lock was free");
    }
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nodes_pull_by_digest_from_the_registry_they_reach() {
        assert_eq!(
            nodes_image("127.0.0.1:5000/acme/erp@sha256:ab", "1.1.0", None),
            "127.0.0.1:5000/acme/erp:1.1.0@sha256:ab"
        );
        assert_eq!(
            nodes_image(
                "127.0.0.1:5000/acme/erp@sha256:ab",
                "1.1.0",
                Some("registry:5000")
            ),
            "registry:5000/acme/erp:1.1.0@sha256:ab"
        );
        assert_eq!(
            digest_only("r:5000/a/b:1.1.0@sha256:ab"),
            "r:5000/a/b@sha256:ab"
        );
    }
}
