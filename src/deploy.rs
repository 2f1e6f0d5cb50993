//! `de-build deploy` and `de-build rollback`: one locked, logged, reversible
//! operation. The plan is computed first (and printed by `--dry-run`); one
//! executor runs it and, when a step from `down` on fails, recovers the
//! previous release automatically.

use crate::check::short_id;
use crate::compose::{self, Compose, Target};
use crate::config::{self, Inputs};
use crate::engine::{ContainerInfo, Engine};
use crate::error::{Error, Result, EXIT_OK};
use crate::manifest::{Loaded, Store};
use crate::output::{self, Style};
use crate::state::{self, Backup, Deployment, Outcome, State, StepRecord};
use serde_json::json;
use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Set by SIGINT: the executor stops at the next step and recovers.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Which sites bench commands address: `all` or a list.
#[derive(Debug, Clone, PartialEq, Eq)]
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackSpec {
    pub version: String,
    pub target: Target,
    pub env: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    MaintenanceOn,
    DrainJobs {
        timeout: Duration,
    },
    Backup,
    Down {
        stack: StackSpec,
    },
    Up {
        stack: StackSpec,
    },
    /// Recreate every container of the stack with the new release in one
    /// compose pass (see [`replace`]); the short-outage form of down + up.
    Replace {
        from: StackSpec,
        to: StackSpec,
    },
    Migrate,
    Restore {
        backups: Vec<Backup>,
    },
    MaintenanceOff,
    HealthGate {
        url: String,
        timeout: Duration,
    },
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::MaintenanceOn => write!(f, "maintenance mode on"),
            Step::DrainJobs { timeout } => write!(
                f,
                "wait for queued jobs to drain (at most {}s)",
                timeout.as_secs()
            ),
            Step::Backup => write!(f, "back up the sites"),
            Step::Down { stack } => write!(
                f,
                "compose down {} with {} (as brought up) and --remove-orphans",
                stack.version,
                config::display(&stack.target.file)
            ),
            Step::Replace { from, to } => write!(
                f,
                "replace {} by {}: recreate every container with {}, renew anonymous volumes, remove orphans",
                from.version,
                to.version,
                config::display(&to.target.file)
            ),
            Step::Up { stack } => write!(
                f,
                "compose up {} with {}",
                stack.version,
                config::display(&stack.target.file)
            ),
            Step::Migrate => write!(f, "bench migrate"),
            Step::Restore { backups } => write!(f, "restore {} backup(s)", backups.len()),
            Step::MaintenanceOff => write!(f, "maintenance mode off"),
            Step::HealthGate { url, timeout } => write!(
                f,
                "health gate: {url} answers 2xx within {}s",
                timeout.as_secs()
            ),
        }
    }
}

#[derive(Debug, Clone)]
pub struct DeployPlan {
    pub action: &'static str,
    pub version: String,
    pub image_id: String,
    pub new: StackSpec,
    /// The stack up now (from the last successful deployment), if any.
    pub previous: Option<StackSpec>,
    pub compose_source: PathBuf,
    pub sites: Sites,
    pub backend_service: String,
    pub steps: Vec<Step>,
}

impl fmt::Display for DeployPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let from = self
            .previous
            .as_ref()
            .map(|p| p.version.as_str())
            .unwrap_or("nothing");
        writeln!(
            f,
            "{} plan: {from} -> {} (image {})",
            self.action,
            self.version,
            short_id(&self.image_id)
        )?;
        writeln!(
            f,
            "  project {} · backend service {} · sites {}",
            self.new.target.project,
            self.backend_service,
            self.sites.args().join(",")
        )?;
        writeln!(f, "  0. take the deploy lock")?;
        for (i, s) in self.steps.iter().enumerate() {
            writeln!(f, "  {}. {s}", i + 1)?;
        }
        writeln!(f, "  on failure from `compose down` on: bring {from} back with its recorded compose file, restore the backups, maintenance off")
    }
}

fn env_secs(inputs: &Inputs, key: &str, default: u64) -> Duration {
    Duration::from_secs(
        inputs
            .env
            .get(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
    )
}

/// The non-secret env compose receives for `version`.
fn compose_env(
    public: &BTreeMap<String, String>,
    project: &str,
    version: &str,
) -> BTreeMap<String, String> {
    let mut env = public.clone();
    env.insert("COMPOSE_PROJECT_NAME".into(), project.to_string());
    env.insert("CUSTOM_TAG".into(), version.to_string());
    env
}

pub struct Ctx<'a> {
    pub inputs: &'a Inputs,
    pub state: State,
    pub engine: Engine,
    pub compose: Compose,
    pub style: Style,
    pub secret_keys: Vec<String>,
}

fn required<'a>(inputs: &'a Inputs, key: &str) -> Result<&'a str> {
    inputs.env.get(key).ok_or_else(|| {
        Error::refused(
            format!("{key} is not set"),
            format!("set {key} in .env (see de-example.env)"),
        )
    })
}

/// The manifest of `version`, with its image present (re-tagged if only the tag is gone).
pub async fn release_image(ctx: &Ctx<'_>, version: &str) -> Result<Loaded> {
    let store = Store::new(&ctx.inputs.paths.releases);
    let (all, _) = store.load_all();
    let candidates = || {
        let v: Vec<String> = all.iter().map(|l| l.manifest.version.clone()).collect();
        if v.is_empty() {
            "none recorded yet".to_string()
        } else {
            v.join(", ")
        }
    };
    let Some(l) = all.iter().find(|l| l.manifest.version == version).cloned() else {
        return Err(Error::refused(
            format!(
                "release {version} was never recorded in {}",
                config::display(&ctx.inputs.paths.releases)
            ),
            format!(
                "recorded releases: {}; build it first with `de-build build`",
                candidates()
            ),
        ));
    };
    let m = &l.manifest;
    if ctx.engine.image(&m.image.id).await?.is_none() && m.registry.is_some() {
        let r = m
            .registry
            .as_ref()
            .map(|r| r.digest_ref.clone())
            .unwrap_or_default();
        output::progress(
            &ctx.style,
            &format!("the image of {version} is not here; pulling {r}"),
        );
        let registry = r.split('/').next().unwrap_or_default();
        crate::registry::pull_by_digest(
            &ctx.engine,
            m,
            crate::registry::credentials(&ctx.inputs.env, registry),
        )
        .await?;
    }
    if ctx.engine.image(&m.image.id).await?.is_none() {
        let rev = m
            .project_revision
            .as_deref()
            .map(|r| format!("`git checkout {r}`, "))
            .unwrap_or_default();
        return Err(Error::refused(
            format!("the image of release {version} ({}) is gone from this engine", short_id(&m.image.id)),
            format!("rebuild it from its manifest: {rev}set DE_SITE_VERSION={version} and the app refs of {} (`de-build releases show {version}`), then `de-build build --replace`; candidates with images: {}", config::display(&l.path), candidates()),
        ));
    }
    match ctx.engine.image(&m.image.reference).await? {
        Some(i) if i.id == m.image.id => {}
        _ => {
            output::progress(
                &ctx.style,
                &format!(
                    "re-tagging {} as {} (the tag had gone)",
                    short_id(&m.image.id),
                    m.image.reference
                ),
            );
            ctx.engine
                .tag(&m.image.id, &m.image.repository, &m.image.tag)
                .await?;
        }
    }
    Ok(l)
}

/// Snapshot of the compose file for deployment `id`, and the target using it.
fn new_target(ctx: &Ctx<'_>, id: &str, source: &std::path::Path) -> Result<Target> {
    let snap = ctx.state.compose_snapshot_path(id);
    if let Some(d) = snap.parent() {
        std::fs::create_dir_all(d).map_err(|e| Error::io("create", d, e))?;
    }
    std::fs::copy(source, &snap).map_err(|e| Error::io("snapshot the compose file", source, e))?;
    let project_dir = std::fs::canonicalize(source.parent().unwrap_or(std::path::Path::new(".")))
        .map_err(|e| Error::io("resolve", source, e))?;
    Ok(Target {
        project: required(ctx.inputs, "COMPOSE_PROJECT_NAME")?.to_string(),
        file: std::fs::canonicalize(&snap).unwrap_or(snap),
        project_dir,
        empty_env_file: compose::empty_env_file(&ctx.state.dir)?,
    })
}

fn stack_of(d: &Deployment) -> StackSpec {
    StackSpec {
        version: d.version.clone(),
        target: Target {
            project: d.project.clone(),
            file: d.compose_file.clone(),
            project_dir: d
                .compose_source
                .parent()
                .map(|p| p.to_path_buf())
                .unwrap_or_default(),
            empty_env_file: d
                .compose_file
                .parent()
                .and_then(|p| p.parent())
                .map(|s| s.join("compose.env"))
                .unwrap_or_default(),
        },
        env: d.env.clone(),
    }
}

/// Compute the plan (no side effects but the compose snapshot file).
#[allow(clippy::too_many_arguments)]
pub async fn plan(
    ctx: &Ctx<'_>,
    action: &'static str,
    id: &str,
    version: &str,
    image_id: &str,
    new_stack: Option<StackSpec>,
    migrate: bool,
    restore: Vec<Backup>,
    full_down: bool,
) -> Result<DeployPlan> {
    let inputs = ctx.inputs;
    let sites = Sites::parse(inputs.env.get("DE_SITES").unwrap_or("all"));
    let backend_service = required(inputs, "DE_BACKEND_SERVICE")?.to_string();
    let health_url = required(inputs, "DE_HEALTH_URL")?.to_string();
    let compose_source = inputs
        .paths
        .project_dir
        .join(required(inputs, "DE_COMPOSE_FILE")?);
    let project = required(inputs, "COMPOSE_PROJECT_NAME")?.to_string();
    let new = match new_stack {
        Some(s) => s,
        None => StackSpec {
            version: version.to_string(),
            target: new_target(ctx, id, &compose_source)?,
            env: compose_env(&inputs.env.public(), &project, version),
        },
    };
    let previous = ctx.state.current().map(|d| stack_of(&d));
    // A recorded stack that is not running (stopped by hand, a reboot) has
    // nothing to put in maintenance or back up; it is still replaced.
    let running = match &previous {
        Some(p) => backend(ctx, &p.target.project, &backend_service)
            .await
            .is_ok(),
        None => false,
    };
    if let (Some(p), false) = (&previous, running) {
        output::progress(&ctx.style, &format!("note: {} is recorded as deployed but its {backend_service} is not running: no maintenance mode or backup", p.version));
    }
    let mut steps = Vec::new();
    if running {
        steps.push(Step::MaintenanceOn);
        steps.push(Step::DrainJobs {
            timeout: env_secs(inputs, "DE_DRAIN_TIMEOUT", 60),
        });
        steps.push(Step::Backup);
    }
    match (&previous, full_down) {
        (Some(prev), false) => steps.push(Step::Replace {
            from: prev.clone(),
            to: new.clone(),
        }),
        _ => {
            steps.push(Step::Down {
                stack: previous.clone().unwrap_or_else(|| new.clone()),
            });
            steps.push(Step::Up { stack: new.clone() });
        }
    }
    if migrate {
        steps.push(Step::Migrate);
    }
    if !restore.is_empty() {
        steps.push(Step::Restore { backups: restore });
    }
    steps.push(Step::MaintenanceOff);
    steps.push(Step::HealthGate {
        url: health_url,
        timeout: env_secs(inputs, "DE_HEALTH_TIMEOUT", 60),
    });
    Ok(DeployPlan {
        action,
        version: version.to_string(),
        image_id: image_id.to_string(),
        new,
        previous,
        compose_source,
        sites,
        backend_service,
        steps,
    })
}

/// Output of bench commands goes to the terminal and to the deployment's log.
struct Log {
    file: Option<std::fs::File>,
    style: Style,
}

impl Log {
    fn line(&mut self, l: &str) {
        let l = crate::output::redact::redact(l);
        if let Some(f) = self.file.as_mut() {
            let _ = writeln!(f, "{l}");
        }
        output::progress(&self.style, &format!("   {} {l}", self.style.dim("│")));
    }
}

async fn backend(ctx: &Ctx<'_>, project: &str, service: &str) -> Result<ContainerInfo> {
    let all = ctx.engine.project_containers(project).await?;
    all.into_iter()
        .find(|c| c.service == service && c.state == "running")
        .ok_or_else(|| Error::Failed {
            message: format!(
                "no running container of service {service} in compose project {project}"
            ),
            hint: Some("check DE_BACKEND_SERVICE and the compose file".into()),
        })
}

async fn bench(
    ctx: &Ctx<'_>,
    plan: &DeployPlan,
    project: &str,
    args: &[String],
    log: &mut Log,
) -> Result<String> {
    let c = backend(ctx, project, &plan.backend_service).await?;
    let mut cmd = vec!["bench".to_string()];
    cmd.extend(args.iter().cloned());
    log.line(&format!("$ {}", cmd.join(" ")));
    let out = ctx.engine.exec(&c.id, &cmd, |l| log.line(l)).await?;
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

async fn bench_sites(
    ctx: &Ctx<'_>,
    plan: &DeployPlan,
    project: &str,
    tail: &[&str],
    log: &mut Log,
) -> Result<Vec<(String, String)>> {
    let mut outs = Vec::new();
    for site in plan.sites.args() {
        let mut args = vec!["--site".to_string(), site.clone()];
        args.extend(tail.iter().map(|s| s.to_string()));
        outs.push((site, bench(ctx, plan, project, &args, log).await?));
    }
    Ok(outs)
}

/// Backup locations as bench prints them: tokens under `/private/backups/`.
pub fn parse_backups(site_arg: &str, output: &str) -> Vec<Backup> {
    let mut out: Vec<Backup> = Vec::new();
    for tok in output.split_whitespace() {
        let Some(i) = tok.find("/private/backups/") else {
            continue;
        };
        let before = &tok[..i];
        let site = before
            .rsplit('/')
            .next()
            .filter(|s| !s.is_empty() && *s != ".")
            .unwrap_or(site_arg)
            .to_string();
        let is_db = tok.contains("database") || !tok.contains('.');
        match out.iter_mut().find(|b| b.site == site) {
            Some(b) if is_db => b.path = tok.to_string(),
            Some(_) => {}
            None => out.push(Backup {
                site,
                path: tok.to_string(),
            }),
        }
    }
    out
}

fn compose_step(
    ctx: &Ctx<'_>,
    args: Vec<String>,
    env: &BTreeMap<String, String>,
) -> Result<String> {
    tokio::task::block_in_place(|| ctx.compose.run(&args, env, &ctx.secret_keys))
}

/// Down, then make sure nothing of the project is left (by label), and drop
/// the anonymous volumes its containers had (stale assets must not survive).
async fn down(ctx: &Ctx<'_>, stack: &StackSpec) -> Result<Vec<String>> {
    let before = ctx.engine.project_containers(&stack.target.project).await?;
    let anon = ctx
        .engine
        .anonymous_volumes(&before.iter().map(|c| c.id.clone()).collect::<Vec<_>>())
        .await?;
    compose_step(ctx, ctx.compose.down_args(&stack.target), &stack.env)?;
    let mut removed = Vec::new();
    for c in ctx.engine.project_containers(&stack.target.project).await? {
        ctx.engine.remove_container(&c.id).await?;
        removed.push(format!("{} ({})", c.name, c.service));
    }
    for v in anon {
        ctx.engine.remove_volume(&v).await?;
    }
    Ok(removed)
}

/// Replace the running stack by `to` in one compose pass, then prove the
/// guarantee of a full down: no container that existed before survives (any
/// left is removed), and the old anonymous volumes are deleted.
async fn replace(ctx: &Ctx<'_>, to: &StackSpec) -> Result<Vec<String>> {
    let before = ctx.engine.project_containers(&to.target.project).await?;
    let before_ids: Vec<String> = before.iter().map(|c| c.id.clone()).collect();
    let anon = ctx.engine.anonymous_volumes(&before_ids).await?;
    compose_step(ctx, ctx.compose.replace_args(&to.target), &to.env)?;
    let mut removed = Vec::new();
    for c in ctx.engine.project_containers(&to.target.project).await? {
        if before_ids.contains(&c.id) {
            ctx.engine.remove_container(&c.id).await?;
            removed.push(format!("{} ({})", c.name, c.service));
        }
    }
    for v in anon {
        ctx.engine.remove_volume(&v).await?;
    }
    Ok(removed)
}

fn check_interrupt() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        Err(Error::failed("interrupted (Ctrl-C)"))
    } else {
        Ok(())
    }
}

struct Run<'a, 'b> {
    ctx: &'a Ctx<'b>,
    plan: &'a DeployPlan,
    record: Deployment,
    log: Log,
    maintenance_on: bool,
    down_done: bool,
}

impl Run<'_, '_> {
    fn save(&self) {
        let _ = self.ctx.state.save(&self.record);
    }

    async fn step(&mut self, step: &Step) -> Result<()> {
        let ctx = self.ctx;
        let plan = self.plan;
        let prev_project = plan
            .previous
            .as_ref()
            .map(|p| p.target.project.clone())
            .unwrap_or_default();
        match step {
            Step::MaintenanceOn => {
                bench_sites(
                    ctx,
                    plan,
                    &prev_project,
                    &["set-maintenance-mode", "on"],
                    &mut self.log,
                )
                .await?;
                self.maintenance_on = true;
            }
            Step::DrainJobs { timeout } => {
                let started = Instant::now();
                loop {
                    let out = bench(
                        ctx,
                        plan,
                        &prev_project,
                        &["doctor".to_string()],
                        &mut self.log,
                    )
                    .await
                    .unwrap_or_default();
                    let pending: u64 = out
                        .lines()
                        .filter_map(|l| {
                            l.to_ascii_lowercase()
                                .split_once("pending jobs:")
                                .map(|(_, n)| n.trim().parse::<u64>().unwrap_or(0))
                        })
                        .sum();
                    if pending == 0 {
                        break;
                    }
                    if started.elapsed() > *timeout {
                        output::progress(
                            &ctx.style,
                            &format!(
                                "{pending} job(s) still queued after {}s; going on",
                                timeout.as_secs()
                            ),
                        );
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
            Step::Backup => {
                for (site, out) in
                    bench_sites(ctx, plan, &prev_project, &["backup"], &mut self.log).await?
                {
                    let found = parse_backups(&site, &out);
                    if found.is_empty() {
                        return Err(Error::failed(format!(
                            "bench backup for {site} printed no backup location"
                        )));
                    }
                    self.record.backups.extend(found);
                }
                self.save();
            }
            Step::Replace { to, .. } => {
                self.down_done = true;
                let removed = replace(ctx, to).await?;
                if !removed.is_empty() {
                    output::progress(
                        &ctx.style,
                        &format!(
                            "removed old containers compose left behind: {}",
                            removed.join(", ")
                        ),
                    );
                }
            }
            Step::Down { stack } => {
                self.down_done = true;
                let removed = down(ctx, stack).await?;
                if !removed.is_empty() {
                    output::progress(
                        &ctx.style,
                        &format!(
                            "removed containers compose left behind: {}",
                            removed.join(", ")
                        ),
                    );
                }
            }
            Step::Up { stack } => {
                compose_step(ctx, ctx.compose.up_args(&stack.target), &stack.env)?;
            }
            Step::Migrate => {
                bench_sites(
                    ctx,
                    plan,
                    &plan.new.target.project,
                    &["migrate"],
                    &mut self.log,
                )
                .await?;
            }
            Step::Restore { backups } => {
                restore(ctx, plan, &plan.new.target.project, backups, &mut self.log).await?;
            }
            Step::MaintenanceOff => {
                bench_sites(
                    ctx,
                    plan,
                    &plan.new.target.project,
                    &["set-maintenance-mode", "off"],
                    &mut self.log,
                )
                .await?;
                self.maintenance_on = false;
            }
            Step::HealthGate { url, timeout } => {
                let (url, t) = (url.clone(), *timeout);
                let took =
                    tokio::task::spawn_blocking(move || crate::health::wait_healthy(&url, t))
                        .await
                        .map_err(|e| Error::failed(e.to_string()))?
                        .map_err(Error::failed)?;
                output::progress(
                    &ctx.style,
                    &format!("healthy after {:.1}s", took.as_secs_f64()),
                );
            }
        }
        Ok(())
    }

    /// Bring the previous release back; Err says what is left to do by hand.
    async fn recover(&mut self) -> std::result::Result<(), String> {
        let ctx = self.ctx;
        let plan = self.plan;
        let Some(prev) = plan.previous.clone() else {
            // Nothing ran before: take the failed stack down, leave nothing half-up.
            return down(ctx, &plan.new).await.map(|_| ()).map_err(|e| {
                format!(
                    "the failed stack could not be brought down ({e}); run: {}",
                    manual_down(ctx, &plan.new)
                )
            });
        };
        output::progress(
            &ctx.style,
            &format!(
                "{} bringing {} back",
                ctx.style.yellow("recovering:"),
                prev.version
            ),
        );
        if let Err(e) = down(ctx, &plan.new).await {
            return Err(format!(
                "could not bring the failed stack down ({e}); run: {}; then {}",
                manual_down(ctx, &plan.new),
                manual_up(ctx, &prev)
            ));
        }
        if let Err(e) = compose_step(ctx, ctx.compose.up_args(&prev.target), &prev.env) {
            return Err(format!(
                "could not bring {} back up ({e}); run: {}",
                prev.version,
                manual_up(ctx, &prev)
            ));
        }
        let backups = self.record.backups.clone();
        if !backups.is_empty() {
            if let Err(e) = restore(ctx, plan, &prev.target.project, &backups, &mut self.log).await
            {
                return Err(format!(
                    "{} is up but its backups could not be restored ({e}); restore by hand: {}",
                    prev.version,
                    manual_restore(&backups)
                ));
            }
        }
        if let Err(e) = bench_sites(
            ctx,
            plan,
            &prev.target.project,
            &["set-maintenance-mode", "off"],
            &mut self.log,
        )
        .await
        {
            return Err(format!("{} is up and restored, but maintenance mode is still on ({e}); run: bench --site <site> set-maintenance-mode off", prev.version));
        }
        self.maintenance_on = false;
        Ok(())
    }
}

async fn restore(
    ctx: &Ctx<'_>,
    plan: &DeployPlan,
    project: &str,
    backups: &[Backup],
    log: &mut Log,
) -> Result<()> {
    for b in backups {
        bench(
            ctx,
            plan,
            project,
            &[
                "--site".into(),
                b.site.clone(),
                "restore".into(),
                b.path.clone(),
            ],
            log,
        )
        .await?;
    }
    Ok(())
}

fn manual_down(ctx: &Ctx<'_>, s: &StackSpec) -> String {
    format!(
        "{} {}",
        ctx.compose.program.join(" "),
        ctx.compose.down_args(&s.target)[ctx.compose.program.len() - 1..].join(" ")
    )
}

fn manual_up(ctx: &Ctx<'_>, s: &StackSpec) -> String {
    let vars: Vec<String> = ["DE_IMAGE", "CUSTOM_TAG", "COMPOSE_PROJECT_NAME"]
        .iter()
        .filter_map(|k| s.env.get(*k).map(|v| format!("{k}={v}")))
        .collect();
    format!(
        "{} {} {} (with the other non-secret keys of .env in the environment)",
        vars.join(" "),
        ctx.compose.program.join(" "),
        ctx.compose.up_args(&s.target)[ctx.compose.program.len() - 1..].join(" ")
    )
}

fn manual_restore(backups: &[Backup]) -> String {
    backups
        .iter()
        .map(|b| format!("bench --site {} restore {}", b.site, b.path))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Run a plan under the lock. Returns the final record (or the error to exit with).
pub async fn execute(ctx: &Ctx<'_>, plan: &DeployPlan, id: &str) -> Result<Deployment> {
    // Ctrl-C: finish the running step, then recover and release the lock; a
    // second Ctrl-C stops at once. The handler is in place before the lock is
    // taken, so no interrupt can leave a lock behind.
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| Error::failed(format!("install the Ctrl-C handler: {e}")))?;
    let lock = ctx.state.lock(plan.action, &plan.version)?;
    let (user, host) = state::whoami();
    let log_path = ctx.state.log_path(id);
    if let Some(d) = log_path.parent() {
        let _ = std::fs::create_dir_all(d);
    }
    let record = Deployment {
        id: id.to_string(),
        action: plan.action.to_string(),
        version: plan.version.clone(),
        image_id: plan.image_id.clone(),
        previous_version: plan.previous.as_ref().map(|p| p.version.clone()),
        project: plan.new.target.project.clone(),
        compose_file: plan.new.target.file.clone(),
        compose_source: std::fs::canonicalize(&plan.compose_source)
            .unwrap_or(plan.compose_source.clone()),
        env: plan.new.env.clone(),
        backups: Vec::new(),
        started: state::now(),
        finished: None,
        result: Outcome::Running,
        steps: Vec::new(),
        error: None,
        left: None,
        user,
        host,
    };
    let mut run = Run {
        ctx,
        plan,
        record,
        log: Log {
            file: std::fs::File::create(&log_path).ok(),
            style: ctx.style,
        },
        maintenance_on: false,
        down_done: false,
    };
    run.save();
    let lock_file = ctx.state.dir.join("lock.json");
    let watcher = tokio::spawn(async move {
        if sigint.recv().await.is_some() {
            INTERRUPTED.store(true, Ordering::SeqCst);
            eprintln!(
                "interrupt: stopping after this step, then recovering; Ctrl-C again stops at once"
            );
            if sigint.recv().await.is_some() {
                let _ = std::fs::remove_file(&lock_file);
                eprintln!("stopped: the stack may be half-changed; check `de-build status` and the deployment log");
                std::process::exit(130);
            }
        }
    });
    let started = Instant::now();
    let mut failure: Option<Error> = None;
    for (i, step) in plan.steps.iter().enumerate() {
        let t = Instant::now();
        output::progress(
            &ctx.style,
            &format!(
                "{} [{}/{}] {step}",
                ctx.style.bold("==>"),
                i + 1,
                plan.steps.len()
            ),
        );
        let res = match check_interrupt() {
            Ok(()) => run.step(step).await,
            Err(e) => Err(e),
        };
        run.record.steps.push(StepRecord {
            step: step.to_string(),
            ok: res.is_ok(),
            seconds: t.elapsed().as_secs_f64(),
        });
        run.save();
        if let Err(e) = res {
            failure = Some(e);
            break;
        }
    }
    watcher.abort();

    let result = match failure {
        None => {
            run.record.result = Outcome::Succeeded;
            Ok(())
        }
        Some(e) if !run.down_done => {
            // Nothing was torn down: undo maintenance mode and stop.
            if run.maintenance_on {
                let prev = plan
                    .previous
                    .as_ref()
                    .map(|p| p.target.project.clone())
                    .unwrap_or_default();
                let _ = bench_sites(
                    ctx,
                    plan,
                    &prev,
                    &["set-maintenance-mode", "off"],
                    &mut run.log,
                )
                .await;
            }
            run.record.result = Outcome::Aborted;
            run.record.error = Some(e.to_string());
            Err(Error::Failed {
                message: format!(
                    "{} of {} stopped before changing the stack: {e}",
                    plan.action, plan.version
                ),
                hint: Some("nothing was changed; maintenance mode is off again".into()),
            })
        }
        Some(e) => {
            output::diag(&format!("{} {e}", ctx.style.red("failed:")));
            run.record.error = Some(e.to_string());
            match run.recover().await {
                Ok(()) if plan.previous.is_some() => {
                    run.record.result = Outcome::Recovered;
                    let prev = plan
                        .previous
                        .as_ref()
                        .map(|p| p.version.clone())
                        .unwrap_or_default();
                    Err(Error::Recovered {
                        message: format!(
                            "{} of {} failed ({e}); {prev} is serving again, backups restored",
                            plan.action, plan.version
                        ),
                    })
                }
                Ok(()) => {
                    run.record.result = Outcome::Aborted;
                    Err(Error::Failed {
                        message: format!("{} of {} failed: {e}", plan.action, plan.version),
                        hint: Some(
                            "nothing was deployed before; the failed stack was brought down".into(),
                        ),
                    })
                }
                Err(left) => {
                    run.record.result = Outcome::Fatal;
                    run.record.left = Some(left.clone());
                    Err(Error::Fatal {
                        message: format!(
                            "{} of {} failed ({e}) and recovery failed too",
                            plan.action, plan.version
                        ),
                        hint: left,
                    })
                }
            }
        }
    };
    run.record.finished = Some(state::now());
    run.save();
    let _ = ctx.state.audit(&json!({
        "time": run.record.finished, "user": run.record.user, "host": run.record.host,
        "action": plan.action, "version": plan.version, "previous": run.record.previous_version,
        "result": run.record.result, "deployment": id, "seconds": started.elapsed().as_secs_f64(),
        "error": run.record.error,
    }));
    lock.release();
    result.map(|_| run.record)
}

pub fn print_plan(style: &Style, plan: &DeployPlan) {
    if style.json {
        output::json(&json!({
            "command": plan.action, "ok": true, "dry_run": true, "version": plan.version,
            "previous": plan.previous.as_ref().map(|p| p.version.clone()),
            "steps": plan.steps.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        }));
    } else {
        output::result(&plan.to_string());
        output::result("dry run: nothing was changed");
    }
}

pub fn report(style: &Style, d: &Deployment, elapsed: Duration) {
    if style.json {
        output::json(&json!({
            "command": d.action, "ok": true, "version": d.version, "previous": d.previous_version,
            "deployment": d.id, "result": d.result, "backups": d.backups, "steps": d.steps,
            "seconds": elapsed.as_secs_f64(),
        }));
    } else {
        output::result(&format!(
            "{} {}{} in {:.1}s (deployment {})",
            style.green(if d.action == "rollback" {
                "rolled back to"
            } else {
                "deployed"
            }),
            d.version,
            d.previous_version
                .as_deref()
                .map(|p| format!(" (was {p})"))
                .unwrap_or_default(),
            elapsed.as_secs_f64(),
            d.id
        ));
    }
}

pub fn context<'a>(inputs: &'a Inputs, engine: Engine, style: &Style) -> Ctx<'a> {
    Ctx {
        inputs,
        state: State::new(&inputs.paths.state),
        engine,
        compose: Compose::detect(),
        style: *style,
        secret_keys: inputs
            .schema
            .keys
            .iter()
            .filter(|k| k.secret)
            .map(|k| k.name.clone())
            .collect(),
    }
}

/// `de-build deploy [VERSION]`.
pub async fn run_deploy(
    global: &crate::cli::Global,
    args: &crate::cli::DeployArgs,
    style: &Style,
) -> Result<i32> {
    let started = Instant::now();
    let inputs = config::load_checked(global)?;
    let version = match &args.version {
        Some(v) => v.clone(),
        None => required(&inputs, "DE_SITE_VERSION")?.to_string(),
    };
    let engine = Engine::connect().await?;
    if let Some(d) = deploy_version(
        &inputs,
        engine,
        style,
        &version,
        args.dry_run,
        args.full_down,
    )
    .await?
    {
        report(style, &d, started.elapsed());
    }
    Ok(EXIT_OK)
}

/// Deploy one recorded release (`None` for a dry run, which prints the plan).
pub async fn deploy_version(
    inputs: &Inputs,
    engine: Engine,
    style: &Style,
    version: &str,
    dry_run: bool,
    full_down: bool,
) -> Result<Option<Deployment>> {
    let ctx = context(inputs, engine, style);
    let release = release_image(&ctx, version).await?;
    let id = state::new_id();
    let plan = plan(
        &ctx,
        "deploy",
        &id,
        version,
        &release.manifest.image.id,
        None,
        true,
        Vec::new(),
        full_down,
    )
    .await?;
    if dry_run {
        let _ = std::fs::remove_file(&plan.new.target.file);
        print_plan(style, &plan);
        return Ok(None);
    }
    if !style.json {
        output::progress(style, &plan.to_string());
    }
    execute(&ctx, &plan, &id).await.map(Some)
}

/// Successful deployments, oldest first, one entry per distinct run.
fn succeeded(state: &State) -> Vec<Deployment> {
    state
        .deployments()
        .into_iter()
        .filter(|d| d.result == Outcome::Succeeded)
        .collect()
}

/// `de-build rollback [VERSION]`: default the previous successfully deployed version.
pub async fn run_rollback(
    global: &crate::cli::Global,
    args: &crate::cli::RollbackArgs,
    style: &Style,
) -> Result<i32> {
    let started = Instant::now();
    let inputs = config::load_checked(global)?;
    let engine = Engine::connect().await?;
    let ctx = context(&inputs, engine, style);
    let done = succeeded(&ctx.state);
    let current = ctx.state.current();
    let candidates: Vec<String> = {
        let mut v: Vec<String> = done
            .iter()
            .rev()
            .map(|d| d.version.clone())
            .filter(|v| Some(v) != current.as_ref().map(|c| &c.version))
            .collect();
        v.dedup();
        v
    };
    let target = match &args.version {
        Some(v) => v.clone(),
        None => candidates.first().cloned().ok_or_else(|| {
            Error::refused("there is no earlier deployment to roll back to", "`de-build status` lists the deployments; name a recorded version: `de-build rollback 1.2.0`")
        })?,
    };
    let release = release_image(&ctx, &target).await.map_err(|e| match e {
        Error::Refused { message, hint } => Error::Refused {
            message,
            hint: Some(format!(
                "{} (deployed before: {})",
                hint.unwrap_or_default(),
                if candidates.is_empty() {
                    "none".into()
                } else {
                    candidates.join(", ")
                }
            )),
        },
        other => other,
    })?;
    // The exact compose file and env the target ran with, when it ran here before.
    let recorded = done
        .iter()
        .rev()
        .find(|d| d.version == target)
        .map(stack_of);
    let restore = match &args.restore_backup {
        None => Vec::new(),
        Some(dep_id) => {
            let d = ctx
                .state
                .deployments()
                .into_iter()
                .find(|d| &d.id == dep_id)
                .ok_or_else(|| {
                    Error::refused(
                        format!("no deployment {dep_id}"),
                        "`de-build status` lists deployments and their backups",
                    )
                })?;
            if d.backups.is_empty() {
                return Err(Error::refused(
                    format!("deployment {dep_id} took no backups"),
                    "pick a deployment that replaced a running release",
                ));
            }
            d.backups
        }
    };
    let id = state::new_id();
    let new_stack = match recorded {
        Some(s) => {
            // Keep a copy under this deployment's id: its record must outlive others.
            let snap = ctx.state.compose_snapshot_path(&id);
            if let Some(d) = snap.parent() {
                std::fs::create_dir_all(d).map_err(|e| Error::io("create", d, e))?;
            }
            std::fs::copy(&s.target.file, &snap)
                .map_err(|e| Error::io("copy the recorded compose file", &s.target.file, e))?;
            let snap = std::fs::canonicalize(&snap).unwrap_or(snap);
            Some(StackSpec {
                target: Target {
                    file: snap,
                    ..s.target
                },
                ..s
            })
        }
        None => None,
    };
    let plan = plan(
        &ctx,
        "rollback",
        &id,
        &target,
        &release.manifest.image.id,
        new_stack,
        false,
        restore,
        args.full_down,
    )
    .await?;
    if args.dry_run {
        let _ = std::fs::remove_file(&plan.new.target.file);
        print_plan(style, &plan);
        return Ok(EXIT_OK);
    }
    if !style.json {
        output::progress(style, &plan.to_string());
    }
    let d = execute(&ctx, &plan, &id).await?;
    report(style, &d, started.elapsed());
    Ok(EXIT_OK)
}

/// `de-build status`.
pub fn run_status(paths: &config::Paths, style: &Style) -> Result<i32> {
    let state = State::new(&paths.state);
    let all = state.deployments();
    let current = state.current();
    let done: Vec<&Deployment> = all
        .iter()
        .filter(|d| d.result == Outcome::Succeeded)
        .collect();
    let previous = done
        .iter()
        .rev()
        .map(|d| d.version.clone())
        .find(|v| Some(v) != current.as_ref().map(|c| &c.version));
    let lock = state.lock_state();
    if style.json {
        output::json(&json!({
            "command": "status", "ok": true,
            "current": current.as_ref().map(|d| json!({"version": d.version, "deployment": d.id, "since": d.finished, "compose_file": d.compose_file})),
            "previous_version": previous,
            "lock": lock,
            "deployments": all.iter().rev().take(10).map(|d| json!({"id": d.id, "action": d.action, "version": d.version, "previous": d.previous_version, "result": d.result, "started": d.started, "backups": d.backups, "error": d.error, "left": d.left})).collect::<Vec<_>>(),
        }));
        return Ok(EXIT_OK);
    }
    match &current {
        Some(d) => output::result(&format!(
            "deployed: {} (deployment {}, compose file {})",
            d.version,
            d.id,
            config::display(&d.compose_file)
        )),
        None => output::result("deployed: nothing yet"),
    }
    output::result(&format!(
        "previous: {}",
        previous.as_deref().unwrap_or("none")
    ));
    match &lock {
        Some(l) => output::result(&format!(
            "lock:     held by {}@{} pid {} ({} {}) since {}{}",
            l.holder.user,
            l.holder.host,
            l.holder.pid,
            l.holder.command,
            l.holder.version,
            l.holder.since,
            if l.stale {
                " — STALE: `de-build lock release`"
            } else {
                ""
            }
        )),
        None => output::result("lock:     free"),
    }
    if !all.is_empty() {
        output::result("last deployments:");
        for d in all.iter().rev().take(10) {
            let backups = if d.backups.is_empty() {
                String::new()
            } else {
                format!(" · {} backup(s)", d.backups.len())
            };
            let result = serde_json::to_value(d.result)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            output::result(&format!(
                "  {}  {:<8} {} -> {:<10} {result}{backups}",
                d.id,
                d.action,
                d.previous_version.as_deref().unwrap_or("-"),
                d.version
            ));
            if let Some(l) = &d.left {
                output::result(&format!("      left to do: {l}"));
            }
        }
    }
    Ok(EXIT_OK)
}

/// `de-build lock release`.
pub fn run_lock_release(paths: &config::Paths, force: bool, style: &Style) -> Result<i32> {
    let state = State::new(&paths.state);
    let broken = state.break_lock(force)?;
    if style.json {
        output::json(&json!({"command": "lock release", "ok": true, "released": broken}));
    } else {
        match broken {
            Some(h) => output::result(&format!(
                "released the lock of {}@{} pid {} ({} {})",
                h.user, h.host, h.pid, h.command, h.version
            )),
            None => output::result("the lock was free"),
        }
    }
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backups_are_read_from_bench_output() {
        let demo = "Backup for demo.localhost: /home/frappe/frappe-bench/sites/demo.localhost/private/backups/20261123_101010-42\n";
        assert_eq!(parse_backups("demo.localhost", demo), vec![Backup { site: "demo.localhost".into(), path: "/home/frappe/frappe-bench/sites/demo.localhost/private/backups/20261123_101010-42".into() }]);
        let frappe = "Backup Summary for a.local at 2024-01-01\nConfig  : ./a.local/private/backups/20240101-a_local-site_config_backup.json 94.0B\nDatabase: ./a.local/private/backups/20240101-a_local-database.sql.gz 1.1KiB\n";
        assert_eq!(
            parse_backups("all", frappe),
            vec![Backup {
                site: "a.local".into(),
                path: "./a.local/private/backups/20240101-a_local-database.sql.gz".into()
            }]
        );
        assert!(parse_backups("x", "nothing").is_empty());
    }

    #[test]
    fn sites() {
        assert_eq!(Sites::parse("all").args(), vec!["all"]);
        assert_eq!(Sites::parse("a.x, b.x").args(), vec!["a.x", "b.x"]);
    }
}
