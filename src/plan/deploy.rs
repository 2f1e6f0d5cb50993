//! The deploy/rollback plan as data: every step, and for every step what
//! recovering from a failure there means. Computed from a [`DeployRequest`]
//! without touching anything; `--dry-run` prints it, the executor runs it,
//! the deployment record keeps it so `de-build recover` can finish the job
//! of a process that died.

pub use crate::record::deploy::*;
use crate::record::state::{Backup, Outcome};
use crate::util::short_id;
use std::fmt;
use std::path::PathBuf;

/// Everything the planner needs; gathered by the command from inputs, records
/// and the engine.
#[derive(Debug, Clone)]
pub struct DeployRequest {
    pub id: String,
    pub action: Action,
    pub version: String,
    pub image_id: String,
    /// The stack to bring up (its files are the snapshot paths to write).
    pub new: StackSpec,
    /// The compose files to snapshot, in the order of `new.target.files`.
    pub compose_sources: Vec<PathBuf>,
    pub previous: Option<StackSpec>,
    pub previous_running: bool,
    pub sites: Sites,
    pub backend_service: String,
    pub health_url: String,
    pub drain_timeout_secs: u64,
    pub drain_on_timeout: OnDrainTimeout,
    pub health_timeout_secs: u64,
    pub migrate: bool,
    /// Why (or why not) it migrates, for the plan and the record.
    pub migrate_reason: String,
    pub restore: Vec<Backup>,
    pub full_down: bool,
    /// One-shot services of the stack to wait for after it is up.
    pub oneshots: Vec<String>,
    /// The door in front of the web tier (`DE_DOOR`), and the web tier it
    /// reaches: with both, a release that changes no database switches
    /// beside the running one instead of replacing it.
    pub door: Option<Door>,
    pub web: Option<WebTier>,
}

/// `DE_MIGRATE` / `--migrate` / `--no-migrate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrateMode {
    Auto,
    Always,
    Never,
}

impl MigrateMode {
    pub fn parse(v: &str) -> Option<MigrateMode> {
        match v.trim() {
            "" | "auto" => Some(MigrateMode::Auto),
            "always" => Some(MigrateMode::Always),
            "never" => Some(MigrateMode::Never),
            _ => None,
        }
    }
}

/// Decide whether a deploy migrates: pure. `running` is the schema
/// fingerprint of the release up now (None: unknown or nothing up), `new`
/// the deployed release's.
pub fn decide_migrate(
    mode: MigrateMode,
    running: Option<(&str, Option<&str>)>,
    new: Option<&str>,
) -> (bool, String) {
    match mode {
        MigrateMode::Always => (true, "DE_MIGRATE=always".into()),
        MigrateMode::Never => (false, "DE_MIGRATE=never".into()),
        MigrateMode::Auto => match (running, new) {
            (None, _) => (true, "nothing recorded runs: a first deploy migrates".into()),
            (Some((v, None)), _) => (true, format!("{v} has no schema fingerprint")),
            (_, None) => (true, "the new release has no schema fingerprint".into()),
            (Some((v, Some(a))), Some(b)) if a == b => (
                false,
                format!("schema unchanged since {v} (patches, hooks, DocTypes, fixtures): no migrate, no maintenance"),
            ),
            (Some((v, Some(_))), Some(_)) => {
                (true, format!("schema changed since {v}"))
            }
        },
    }
}

/// Compute the plan: pure.
pub fn plan(r: DeployRequest) -> DeployPlan {
    let new_project = r.new.target.project.clone();
    let old_project = r
        .previous
        .as_ref()
        .map(|p| p.target.project.clone())
        .unwrap_or_else(|| new_project.clone());
    let mut steps = vec![Step::Snapshot {
        sources: r.compose_sources.clone(),
        to: r.new.target.files.clone(),
    }];
    // Only a database change needs the site closed and a backup first.
    let changes_db = r.migrate || !r.restore.is_empty();
    // With a door, the new web tier starts beside the old one: at once for a
    // release that changes no database, before maintenance for one that
    // migrates (a restore, which rewrites the database from a backup, keeps
    // the replace).
    let switch = match (&r.previous, &r.door, &r.web) {
        (Some(prev), Some(door), Some(web))
            if r.previous_running
                && r.restore.is_empty()
                && !r.full_down
                && !prev.image_id.is_empty()
                && prev.image_id != r.new.image_id =>
        {
            Some((prev.clone(), door.clone(), web.clone()))
        }
        _ => None,
    };
    let beside = |tier: Tier, web: &WebTier| {
        [
            Step::StartBeside {
                stack: r.new.clone(),
                web: web.clone(),
                tier,
            },
            Step::ProbeBeside {
                stack: r.new.clone(),
                web: web.clone(),
                url_path: url_path(&r.health_url),
                timeout_secs: r.health_timeout_secs,
                tier,
            },
        ]
    };
    let retire = |tier: Tier, prev: &StackSpec, door: &Door, web: &WebTier| Step::RetireOld {
        from: prev.clone(),
        to: r.new.clone(),
        web: web.clone(),
        door: door.clone(),
        tier,
    };
    let share = |prev: &StackSpec, web: &WebTier| Step::ShareAssets {
        from: prev.clone(),
        to: r.new.clone(),
        web: web.clone(),
    };
    let reload_door = |door: &Door| Step::ReloadDoor {
        project: new_project.clone(),
        door: door.clone(),
    };
    match &switch {
        Some((prev, door, web)) if r.migrate => {
            // Before maintenance, nothing that needs the old release
            // stopped: the new frontends start while only the old backends
            // exist (nginx resolves them once), so the door can move to
            // them and users are still served by the old code on the old
            // schema; then the new backends start, known to no frontend.
            steps.extend(beside(Tier::Frontend, web));
            steps.push(share(prev, web));
            steps.push(reload_door(door));
            steps.push(retire(Tier::Frontend, prev, door, web));
            steps.extend(beside(Tier::Upstream, web));
            // Maintenance covers drain, backup, migrate and the cut-over.
            steps.push(Step::MaintenanceOn {
                project: old_project.clone(),
            });
            steps.push(Step::Drain {
                project: old_project.clone(),
                timeout_secs: r.drain_timeout_secs,
                on_timeout: r.drain_on_timeout,
            });
            steps.push(Step::Backup {
                project: old_project.clone(),
            });
            steps.push(Step::Migrate {
                project: new_project.clone(),
                image_id: Some(r.new.image_id.clone()),
            });
            steps.push(Step::Cutover {
                from: prev.clone(),
                to: r.new.clone(),
                web: web.clone(),
            });
            steps.push(Step::HealthGate {
                url: r.health_url.clone(),
                timeout_secs: r.health_timeout_secs,
                gate: Gate::Sealed,
            });
            steps.push(Step::MaintenanceOff {
                project: new_project.clone(),
            });
            // The workers and the scheduler start after it, in one compose
            // pass; the web services already match and are left alone.
            steps.push(Step::Replace {
                from: prev.clone(),
                to: r.new.clone(),
                web_moved: true,
            });
        }
        Some((prev, door, web)) => {
            // No database change: the whole web tier beside, then the door.
            steps.extend(beside(Tier::All, web));
            steps.push(share(prev, web));
            steps.push(reload_door(door));
            steps.push(retire(Tier::All, prev, door, web));
            steps.push(Step::Replace {
                from: prev.clone(),
                to: r.new.clone(),
                web_moved: true,
            });
        }
        None if r.previous_running && changes_db => {
            steps.push(Step::MaintenanceOn {
                project: old_project.clone(),
            });
            steps.push(Step::Drain {
                project: old_project.clone(),
                timeout_secs: r.drain_timeout_secs,
                on_timeout: r.drain_on_timeout,
            });
            steps.push(Step::Backup {
                project: old_project.clone(),
            });
        }
        None => {}
    }
    match (&r.previous, r.full_down) {
        _ if switch.is_some() => {}
        (Some(prev), false) => steps.push(Step::Replace {
            from: prev.clone(),
            to: r.new.clone(),
            web_moved: false,
        }),
        (Some(prev), true) => {
            steps.push(Step::Down {
                stack: prev.clone(),
            });
            steps.push(Step::Up {
                stack: r.new.clone(),
            });
        }
        // Nothing recorded: `up` alone (anything of the project that runs
        // unrecorded is the adoption case, decided by the command).
        (None, _) => steps.push(Step::Up {
            stack: r.new.clone(),
        }),
    }
    // A door resolves the frontend once (nginx without a resolver): after
    // compose recreated it, the door learns its new address.
    if let (Some(door), None) = (&r.door, &switch) {
        steps.push(Step::ReloadDoor {
            project: new_project.clone(),
            door: door.clone(),
        });
    }
    if !r.oneshots.is_empty() {
        steps.push(Step::WaitOneshots {
            project: new_project.clone(),
            services: r.oneshots.clone(),
            timeout_secs: r.health_timeout_secs,
        });
    }
    steps.push(Step::VerifyImage {
        stack: r.new.clone(),
    });
    let migrated_beside = switch.is_some() && r.migrate;
    if r.migrate && !migrated_beside {
        steps.push(Step::Migrate {
            project: new_project.clone(),
            image_id: None,
        });
    }
    if !r.restore.is_empty() {
        steps.push(Step::Restore {
            project: new_project.clone(),
            backups: r.restore.clone(),
        });
    }
    // A gate that accepts the maintenance page and maintenance off, only
    // where this plan put the site in maintenance or ran bench migrate or
    // restore: a release without either never touches the flag (nor turns
    // off a maintenance an operator set).
    let maintenance_touched = steps.iter().any(|s| {
        matches!(
            s,
            Step::MaintenanceOn { .. } | Step::Migrate { .. } | Step::Restore { .. }
        )
    });
    if !migrated_beside && maintenance_touched {
        steps.push(Step::HealthGate {
            url: r.health_url.clone(),
            timeout_secs: r.health_timeout_secs,
            gate: Gate::Sealed,
        });
        steps.push(Step::MaintenanceOff {
            project: new_project.clone(),
        });
    }
    steps.push(Step::HealthGate {
        url: r.health_url.clone(),
        timeout_secs: r.health_timeout_secs,
        gate: Gate::Open,
    });
    let mut plan = DeployPlan {
        id: r.id,
        action: r.action,
        version: r.version,
        image_id: r.image_id,
        new: r.new,
        previous: r.previous,
        previous_running: r.previous_running,
        compose_sources: r.compose_sources,
        sites: r.sites,
        backend_service: r.backend_service,
        migrate_reason: r.migrate_reason,
        door: r.door,
        steps: Vec::new(),
    };
    // What a failure in each step leads to: the progress as it stands when
    // that step has started.
    let mut progress = Progress::default();
    for step in steps {
        starting(&mut progress, &step);
        // Backups are only known at run time; once the backup step is behind,
        // say "the backups".
        let mut hypothetical = progress.clone();
        let backed_up = progress.done.iter().any(|d| d == "backup");
        if plan.previous_running && hypothetical.backups.is_empty() && backed_up {
            hypothetical.backups.push(Backup {
                site: "(each site)".into(),
                path: "(taken by the backup step)".into(),
            });
        }
        let on_failure = recovery(&plan, &hypothetical);
        plan.steps.push(PlannedStep { step, on_failure });
        progress
            .done
            .push(plan.steps[plan.steps.len() - 1].step.name().into());
    }
    plan
}

/// Update `p` for a step that is about to run.
pub fn starting(p: &mut Progress, step: &Step) {
    match step {
        Step::MaintenanceOn { .. } => p.maintenance_on = true,
        Step::Down { .. } | Step::Up { .. } | Step::Replace { .. } => p.stack_touched = true,
        Step::StartBeside { .. } => p.beside_started = true,
        Step::ReloadDoor { .. } if p.beside_started => p.traffic_moved = true,
        Step::Migrate { .. } | Step::Restore { .. } => p.migrate_started = true,
        // Only the new release turning maintenance off lets users in.
        Step::MaintenanceOff { .. } if p.stack_touched || p.traffic_moved => p.users_let_in = true,
        _ => {}
    }
}

/// Update `p` for a step that finished.
pub fn finished(p: &mut Progress, step: &Step) {
    if let Step::MaintenanceOff { .. } = step {
        p.maintenance_on = false;
    }
    p.done.push(step.name().into());
}

/// How to recover from a failure at `progress`: pure.
pub fn recovery(plan: &DeployPlan, progress: &Progress) -> Recovery {
    let mut steps = Vec::new();
    let old_project = plan
        .previous
        .as_ref()
        .map(|p| p.target.project.clone())
        .unwrap_or_else(|| plan.new.target.project.clone());
    if progress.beside_started {
        return switch_recovery(plan, progress);
    }
    if !progress.stack_touched {
        if progress.maintenance_on {
            steps.push(RecoveryStep::MaintenanceOff {
                project: old_project,
            });
        }
        return Recovery {
            steps,
            outcome: Outcome::Aborted,
            data_note: None,
        };
    }
    steps.push(RecoveryStep::TakeDown {
        stack: plan.new.clone(),
    });
    let Some(prev) = plan.previous.clone() else {
        return Recovery {
            steps,
            outcome: Outcome::Aborted,
            data_note: None,
        };
    };
    steps.push(RecoveryStep::BringUp {
        stack: prev.clone(),
    });
    if let Some(door) = &plan.door {
        steps.push(RecoveryStep::ReloadDoor {
            project: prev.target.project.clone(),
            door: door.clone(),
        });
    }
    let mut data_note = None;
    // The database only needs restoring when a migrate (or restore) may have
    // changed it, and only automatically while no user could write to it.
    if progress.migrate_started && !progress.backups.is_empty() {
        if progress.users_let_in {
            data_note = Some(format!(
                "users could write to {} after maintenance went off, so its database was NOT restored (a restore would discard those writes); it stays as {} migrated it. To restore the pre-deploy backup anyway: `de-build rollback {} --restore-backup {}`",
                plan.version, plan.version, prev.version, plan.id
            ));
        } else {
            steps.push(RecoveryStep::Restore {
                project: prev.target.project.clone(),
                backups: progress.backups.clone(),
            });
        }
    }
    if plan.previous_running || progress.maintenance_on || progress.migrate_started {
        steps.push(RecoveryStep::MaintenanceOff {
            project: prev.target.project.clone(),
        });
    }
    Recovery {
        steps,
        outcome: Outcome::Recovered,
        data_note,
    }
}

/// A switch: going back means removing what it started and, once the door
/// may have sent traffic to the new release, bringing the previous one back
/// whole (compose recreates what was retired or replaced) and telling the
/// door. A migrating switch also restores its backups, as long as no user
/// could write to the migrated database, then turns maintenance off.
fn switch_recovery(plan: &DeployPlan, progress: &Progress) -> Recovery {
    let (Some(prev), Some(door)) = (&plan.previous, &plan.door) else {
        return Recovery {
            steps: Vec::new(),
            outcome: Outcome::Aborted,
            data_note: None,
        };
    };
    let web = plan.steps.iter().find_map(|s| match &s.step {
        Step::StartBeside { web, .. } => Some(web.all()),
        _ => None,
    });
    let mut steps = vec![RecoveryStep::RemoveBeside {
        project: plan.new.target.project.clone(),
        services: web.unwrap_or_default(),
        image_id: plan.new.image_id.clone(),
        version: plan.version.clone(),
    }];
    if progress.traffic_moved || progress.stack_touched {
        steps.push(RecoveryStep::BringUp {
            stack: prev.clone(),
        });
        steps.push(RecoveryStep::ReloadDoor {
            project: prev.target.project.clone(),
            door: door.clone(),
        });
    }
    let mut data_note = None;
    if progress.migrate_started && !progress.backups.is_empty() {
        if progress.users_let_in {
            data_note = Some(format!(
                "users could write to {} after maintenance went off, so its database was NOT restored (a restore would discard those writes); it stays as {} migrated it. To restore the pre-deploy backup anyway: `de-build rollback {} --restore-backup {}`",
                plan.version, plan.version, prev.version, plan.id
            ));
        } else {
            steps.push(RecoveryStep::Restore {
                project: prev.target.project.clone(),
                backups: progress.backups.clone(),
            });
        }
    }
    if progress.maintenance_on || progress.migrate_started {
        steps.push(RecoveryStep::MaintenanceOff {
            project: prev.target.project.clone(),
        });
    }
    Recovery {
        steps,
        outcome: Outcome::Recovered,
        data_note,
    }
}

/// The path (and query) of the health URL: the direct probes ask each new
/// container for it.
fn url_path(url: &str) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    match rest.find('/') {
        Some(i) => rest[i..].to_string(),
        None => "/".into(),
    }
}

impl fmt::Display for DeployPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let from = self
            .previous
            .as_ref()
            .map(|p| p.version.as_str())
            .unwrap_or("nothing deployed");
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
        if !self.migrate_reason.is_empty() {
            writeln!(f, "  migrate: {}", self.migrate_reason)?;
        }
        writeln!(f, "  0. take the deploy lock")?;
        let mut last_failure: Option<&Recovery> = None;
        for (i, s) in self.steps.iter().enumerate() {
            writeln!(f, "  {}. {}", i + 1, s.step)?;
            // Say what a failure means only where it changes.
            if last_failure != Some(&s.on_failure) {
                writeln!(f, "       if it fails: {}", describe(&s.on_failure))?;
                last_failure = Some(&s.on_failure);
            }
        }
        Ok(())
    }
}

/// One line for a recovery, true for the situation.
pub fn describe(r: &Recovery) -> String {
    if r.steps.is_empty() {
        return "stop; nothing was changed".into();
    }
    let steps: Vec<String> = r.steps.iter().map(|s| s.to_string()).collect();
    let mut s = steps.join(", ");
    if r.outcome == Outcome::Aborted && r.steps.len() == 1 {
        if let RecoveryStep::MaintenanceOff { .. } = r.steps[0] {
            s.push_str("; nothing else was changed");
        }
    }
    if r.data_note.is_some() {
        s.push_str("; the database is not restored (users may have written to the new release)");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::BTreeMap;

    fn stack(v: &str) -> StackSpec {
        StackSpec {
            version: v.into(),
            image_id: format!("sha256:{v}"),
            target: Target {
                project: "p".into(),
                files: vec![format!("/s/{v}.yaml").into()],
                project_dir: "/p".into(),
                empty_env_file: "/s/compose.env".into(),
            },
            env: BTreeMap::new(),
        }
    }

    pub fn request(previous: Option<&str>, running: bool) -> DeployRequest {
        DeployRequest {
            id: "d1".into(),
            action: Action::Deploy,
            version: "2.0.0".into(),
            image_id: "sha256:2.0.0".into(),
            new: stack("2.0.0"),
            compose_sources: vec!["/p/compose.yaml".into()],
            previous: previous.map(stack),
            previous_running: running,
            sites: Sites::parse("a.local"),
            backend_service: "backend".into(),
            health_url: "http://127.0.0.1:1/ping".into(),
            drain_timeout_secs: 60,
            drain_on_timeout: OnDrainTimeout::Abort,
            health_timeout_secs: 60,
            migrate: true,
            migrate_reason: String::new(),
            restore: vec![],
            full_down: false,
            oneshots: vec![],
            door: None,
            web: None,
        }
    }

    fn names(p: &DeployPlan) -> Vec<&'static str> {
        p.steps.iter().map(|s| s.step.name()).collect()
    }

    #[test]
    fn an_upgrade_keeps_maintenance_on_until_the_sealed_gate_passed() {
        let p = plan(request(Some("1.0.0"), true));
        assert_eq!(
            names(&p),
            vec![
                "snapshot",
                "maintenance-on",
                "drain",
                "backup",
                "replace",
                "verify-image",
                "migrate",
                "health-gate-sealed",
                "maintenance-off",
                "health-gate"
            ]
        );
    }

    #[test]
    fn a_first_deploy_has_no_maintenance_backup_or_down() {
        let p = plan(request(None, false));
        assert_eq!(
            names(&p),
            vec![
                "snapshot",
                "up",
                "verify-image",
                "migrate",
                "health-gate-sealed",
                "maintenance-off",
                "health-gate"
            ]
        );
        let text = p.to_string();
        assert!(!text.contains("compose down"), "{text}");
        assert!(text.contains("if it fails: take 2.0.0 down"), "{text}");
        assert!(text.contains("nothing deployed -> 2.0.0"), "{text}");
    }

    #[test]
    fn full_down_is_down_then_up() {
        let mut r = request(Some("1.0.0"), true);
        r.full_down = true;
        assert!(names(&plan(r)).windows(2).any(|w| w == ["down", "up"]));
    }

    #[test]
    fn recovery_before_the_stack_is_touched_only_undoes_maintenance() {
        let p = plan(request(Some("1.0.0"), true));
        let backup = &p.steps[3];
        assert_eq!(backup.step.name(), "backup");
        assert_eq!(backup.on_failure.outcome, Outcome::Aborted);
        assert_eq!(
            backup.on_failure.steps,
            vec![RecoveryStep::MaintenanceOff {
                project: "p".into()
            }]
        );
        assert!(p.steps[0].on_failure.steps.is_empty());
    }

    #[test]
    fn recovery_restores_only_after_a_migrate_and_only_before_users_were_let_in() {
        let p = plan(request(Some("1.0.0"), true));
        let b = vec![Backup {
            site: "a.local".into(),
            path: "x".into(),
        }];
        // replace failed: no migrate ran, the database is as it was.
        let mut pr = Progress {
            maintenance_on: true,
            stack_touched: true,
            backups: b.clone(),
            ..Default::default()
        };
        let r = recovery(&p, &pr);
        assert!(!r
            .steps
            .iter()
            .any(|s| matches!(s, RecoveryStep::Restore { .. })));
        assert_eq!(r.outcome, Outcome::Recovered);
        // migrate failed: restore, in maintenance.
        pr.migrate_started = true;
        let r = recovery(&p, &pr);
        assert_eq!(
            r.steps,
            vec![
                RecoveryStep::TakeDown {
                    stack: p.new.clone()
                },
                RecoveryStep::BringUp {
                    stack: p.previous.clone().unwrap()
                },
                RecoveryStep::Restore {
                    project: "p".into(),
                    backups: b.clone()
                },
                RecoveryStep::MaintenanceOff {
                    project: "p".into()
                },
            ]
        );
        assert!(r.data_note.is_none());
        // the open gate failed: users were let in, no silent restore.
        pr.users_let_in = true;
        let r = recovery(&p, &pr);
        assert!(!r
            .steps
            .iter()
            .any(|s| matches!(s, RecoveryStep::Restore { .. })));
        let note = r.data_note.unwrap();
        assert!(
            note.contains("rollback 1.0.0 --restore-backup d1"),
            "{note}"
        );
    }

    #[test]
    fn a_failed_first_deploy_is_taken_down() {
        let p = plan(request(None, false));
        let r = &p.steps[1].on_failure;
        assert_eq!(r.outcome, Outcome::Aborted);
        assert_eq!(
            r.steps,
            vec![RecoveryStep::TakeDown {
                stack: p.new.clone()
            }]
        );
    }

    #[test]
    fn the_plan_serializes_with_its_recovery() {
        let p = plan(request(Some("1.0.0"), true));
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["steps"][4]["step"], "replace");
        assert_eq!(v["steps"][4]["on_failure"]["outcome"], "recovered");
        let back: DeployPlan = serde_json::from_value(v).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn an_unchanged_schema_skips_migrate_and_maintenance() {
        let mut r = request(Some("1.0.0"), true);
        let (m, why) = decide_migrate(MigrateMode::Auto, Some(("1.0.0", Some("a"))), Some("a"));
        assert!(!m, "{why}");
        r.migrate = m;
        let names: Vec<&str> = plan(r).steps.iter().map(|s| s.step.name()).collect();
        assert!(!names.contains(&"migrate"));
        assert!(!names.contains(&"maintenance-on"));
        assert!(!names.contains(&"backup"));
        assert!(names.contains(&"replace"));
    }

    #[test]
    fn migrate_decisions() {
        use MigrateMode::*;
        let d = |m, run, new| decide_migrate(m, run, new).0;
        assert!(d(Auto, Some(("1", Some("a"))), Some("b")), "changed");
        assert!(d(Auto, Some(("1", None)), Some("b")), "unknown running");
        assert!(d(Auto, Some(("1", Some("a"))), None), "unknown new");
        assert!(d(Auto, None, Some("a")), "first deploy");
        assert!(d(Always, Some(("1", Some("a"))), Some("a")));
        assert!(!d(Never, Some(("1", Some("a"))), Some("b")));
        assert_eq!(MigrateMode::parse("sometimes"), None);
    }

    #[test]
    fn sites() {
        assert_eq!(Sites::parse("all").args(), vec!["all"]);
        assert_eq!(Sites::parse("a.x, b.x").args(), vec!["a.x", "b.x"]);
    }
}
