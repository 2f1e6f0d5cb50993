//! The deploy/rollback plan on a Docker Swarm as data: every step, and for
//! every step what recovering from a failure there means. Pure: computed
//! from a [`SwarmRequest`] the command gathered; `--dry-run` prints it, the
//! executor runs it, the record keeps it.
//!
//! The order differs from one host's: the new code migrates the database
//! from a one-off job *before* any service changes (old tasks keep answering
//! the maintenance 503), then the web tier rolls one task at a time
//! (start-first), then the workers. A failed migrate therefore leaves every
//! service untouched: restore the backup, maintenance off, done.

use crate::record::deploy::{Action, Gate, Sites};
use crate::record::state::{Backup, Outcome};
pub use crate::record::swarm::*;
use crate::util::short_id;
use std::collections::BTreeMap;
use std::fmt;

#[derive(Debug, Clone)]
pub struct SwarmRequest {
    pub id: String,
    pub action: Action,
    pub version: String,
    pub image_id: String,
    pub new: SwarmStack,
    /// The resolved compose file, written by the snapshot step.
    pub resolved: String,
    pub previous: Option<PreviousRelease>,
    pub previous_specs: BTreeMap<String, serde_json::Value>,
    pub previous_running: bool,
    pub compose_sources: Vec<std::path::PathBuf>,
    pub env: BTreeMap<String, String>,
    pub sites: Sites,
    pub backend_service: String,
    pub health_url: String,
    pub drain_timeout_secs: u64,
    pub health_timeout_secs: u64,
    pub timeout_secs: u64,
    /// Run `bench migrate` (a deploy; a rollback never migrates back).
    pub migrate: bool,
    /// Maintenance, drain and backup before the change (off only for a
    /// deploy the operator declared free of migrations: `--no-migrate`).
    pub maintenance: bool,
    pub restore: Vec<Backup>,
}

pub fn plan(r: SwarmRequest) -> SwarmPlan {
    let mut steps = vec![SwarmStep::Snapshot {
        to: r.new.file.clone(),
        text: r.resolved.clone(),
    }];
    let sealed = r.maintenance || r.migrate || !r.restore.is_empty();
    if let (Some(prev), true, true) = (&r.previous, r.previous_running, r.maintenance) {
        steps.push(SwarmStep::MaintenanceOn {
            image: prev.image.clone(),
        });
        steps.push(SwarmStep::Drain {
            image: prev.image.clone(),
            timeout_secs: r.drain_timeout_secs,
        });
        steps.push(SwarmStep::Backup {
            image: prev.image.clone(),
        });
    }
    let nets: Vec<String> = r
        .new
        .stack
        .networks
        .values()
        .filter(|n| !n.external)
        .map(|n| n.name.clone())
        .collect();
    if !nets.is_empty() {
        steps.push(SwarmStep::Networks { names: nets });
    }
    let of = |role: Role| -> Vec<String> {
        r.new
            .stack
            .services
            .iter()
            .filter(|s| s.role == role)
            .map(|s| r.new.engine_name(&s.name))
            .collect()
    };
    let jobs: Vec<String> = r
        .new
        .stack
        .services
        .iter()
        .filter(|s| s.role == Role::Job)
        .map(|s| s.name.clone())
        .collect();
    if !jobs.is_empty() {
        steps.push(SwarmStep::Jobs { services: jobs });
    }
    if r.migrate {
        steps.push(SwarmStep::Migrate {
            image: r.new.image.clone(),
        });
    }
    if !r.restore.is_empty() {
        steps.push(SwarmStep::Restore {
            image: r.new.image.clone(),
            backups: r.restore.clone(),
        });
    }
    let web = of(Role::Web);
    if !web.is_empty() {
        steps.push(SwarmStep::Update {
            tier: Tier::Web,
            services: web,
        });
    }
    let workers = of(Role::Worker);
    if !workers.is_empty() {
        steps.push(SwarmStep::Update {
            tier: Tier::Workers,
            services: workers,
        });
    }
    let keep: Vec<String> = r
        .new
        .stack
        .services
        .iter()
        .map(|s| r.new.engine_name(&s.name))
        .collect();
    let orphans: Vec<String> = r
        .previous_specs
        .keys()
        .filter(|k| !keep.contains(k))
        .cloned()
        .collect();
    if !orphans.is_empty() {
        steps.push(SwarmStep::RemoveOrphans { services: orphans });
    }
    steps.push(SwarmStep::Verify);
    if sealed {
        steps.push(SwarmStep::HealthGate {
            url: r.health_url.clone(),
            timeout_secs: r.health_timeout_secs,
            gate: Gate::Sealed,
        });
        steps.push(SwarmStep::MaintenanceOff {
            image: r.new.image.clone(),
        });
    }
    steps.push(SwarmStep::HealthGate {
        url: r.health_url.clone(),
        timeout_secs: r.health_timeout_secs,
        gate: Gate::Open,
    });
    let mut plan = SwarmPlan {
        id: r.id,
        action: r.action,
        version: r.version,
        image_id: r.image_id,
        new: r.new,
        previous: r.previous,
        previous_specs: r.previous_specs,
        previous_running: r.previous_running,
        compose_sources: r.compose_sources,
        env: r.env,
        sites: r.sites,
        backend_service: r.backend_service,
        migrate: r.migrate,
        timeout_secs: r.timeout_secs,
        steps: Vec::new(),
    };
    let backs_up = steps.iter().any(|s| s.name() == "backup");
    let mut progress = SwarmProgress::default();
    for step in steps {
        starting(&mut progress, &step);
        // Backups are only known at run time; plan with "the backups".
        let mut hypothetical = progress.clone();
        if backs_up && hypothetical.backups.is_empty() && progress.maintenance_on {
            hypothetical.backups.push(Backup {
                site: "(each site)".into(),
                path: "(taken by the backup step)".into(),
            });
        }
        let on_failure = recovery(&plan, &hypothetical);
        progress.done.push(step.name().into());
        plan.steps.push(PlannedSwarmStep { step, on_failure });
    }
    plan
}

impl SwarmPlan {
    /// The image whose code serves before the change (for maintenance and
    /// restore jobs in a recovery).
    pub fn previous_image(&self) -> Option<&str> {
        self.previous.as_ref().map(|p| p.image.as_str())
    }
}

/// Update `p` for a step about to run.
pub fn starting(p: &mut SwarmProgress, step: &SwarmStep) {
    match step {
        SwarmStep::MaintenanceOn { .. } => p.maintenance_on = true,
        // New code ran against the data.
        SwarmStep::Jobs { .. } | SwarmStep::Migrate { .. } | SwarmStep::Restore { .. } => {
            p.migrate_started = true
        }
        SwarmStep::Update { services, .. } | SwarmStep::RemoveOrphans { services } => {
            for s in services {
                if !p.touched.contains(s) {
                    p.touched.push(s.clone());
                }
            }
        }
        SwarmStep::MaintenanceOff { .. } if !p.touched.is_empty() || p.migrate_started => {
            p.users_let_in = true
        }
        _ => {}
    }
}

/// Update `p` for a step that finished.
pub fn finished(p: &mut SwarmProgress, step: &SwarmStep) {
    if let SwarmStep::MaintenanceOff { .. } = step {
        p.maintenance_on = false;
    }
    p.done.push(step.name().into());
}

/// How to recover from a failure at `progress`: pure.
pub fn recovery(plan: &SwarmPlan, progress: &SwarmProgress) -> SwarmRecovery {
    let mut steps = Vec::new();
    let prev_image = plan.previous_image().map(str::to_string);
    if progress.touched.is_empty() && !progress.migrate_started {
        if let (true, Some(image)) = (progress.maintenance_on, prev_image) {
            steps.push(SwarmRecoveryStep::MaintenanceOff { image });
        }
        return SwarmRecovery {
            steps,
            outcome: Outcome::Aborted,
            data_note: None,
        };
    }
    if !progress.touched.is_empty() {
        steps.push(SwarmRecoveryStep::RevertServices {
            services: progress
                .touched
                .iter()
                .rev()
                .map(|s| Revert {
                    service: s.clone(),
                    previous: plan.previous_specs.get(s).cloned(),
                })
                .collect(),
        });
    }
    let Some(image) = prev_image else {
        return SwarmRecovery {
            steps,
            outcome: Outcome::Aborted,
            data_note: None,
        };
    };
    let mut data_note = None;
    if progress.migrate_started && !progress.backups.is_empty() {
        if progress.users_let_in {
            let prev = plan
                .previous
                .as_ref()
                .map(|p| p.version.as_str())
                .unwrap_or("the previous release");
            data_note = Some(format!(
                "users could write to {v} after maintenance went off, so its database was NOT restored (a restore would discard those writes); it stays as {v} migrated it. To restore the pre-deploy backup anyway: `de-build rollback {prev} --restore-backup {id}`",
                v = plan.version,
                id = plan.id
            ));
        } else {
            steps.push(SwarmRecoveryStep::Restore {
                image: image.clone(),
                backups: progress.backups.clone(),
            });
        }
    }
    if plan.previous_running || progress.maintenance_on {
        steps.push(SwarmRecoveryStep::MaintenanceOff { image });
    }
    SwarmRecovery {
        steps,
        outcome: Outcome::Recovered,
        data_note,
    }
}

/// One line for a recovery.
pub fn describe(r: &SwarmRecovery) -> String {
    if r.steps.is_empty() {
        return "stop; no service was changed".into();
    }
    let mut s = r
        .steps
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    if r.data_note.is_some() {
        s.push_str("; the database is not restored (users may have written to the new release)");
    }
    s
}

impl fmt::Display for SwarmPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let from = self
            .previous
            .as_ref()
            .map(|p| p.version.as_str())
            .unwrap_or("nothing deployed");
        writeln!(
            f,
            "{} plan (swarm): {from} -> {} (image {}, {})",
            self.action,
            self.version,
            short_id(&self.image_id),
            self.new.image
        )?;
        writeln!(
            f,
            "  stack {} · backend service {} · sites {}",
            self.new.namespace,
            self.backend_service,
            self.sites.args().join(",")
        )?;
        writeln!(f, "  0. take the swarm's deploy lock")?;
        let mut last: Option<&SwarmRecovery> = None;
        for (i, s) in self.steps.iter().enumerate() {
            writeln!(f, "  {}. {}", i + 1, s.step)?;
            if last != Some(&s.on_failure) {
                writeln!(f, "       if it fails: {}", describe(&s.on_failure))?;
                last = Some(&s.on_failure);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(name: &str, role: Role) -> ServiceDef {
        ServiceDef {
            name: name.into(),
            role,
            image: "r/x:2@sha256:2".into(),
            entrypoint: None,
            command: None,
            env: BTreeMap::new(),
            labels: BTreeMap::new(),
            service_labels: BTreeMap::new(),
            mounts: vec![],
            networks: vec!["default".into()],
            ports: vec![],
            mode: if role == Role::Job {
                ModeDef::ReplicatedJob
            } else {
                ModeDef::Replicated(2)
            },
            endpoint_mode: None,
            update: UpdateDef::default(),
            restart: None,
            healthcheck: None,
            constraints: vec![],
            init: None,
            stop_grace_ns: None,
            user: None,
            working_dir: None,
            hostname: None,
        }
    }

    fn stack(v: &str, services: Vec<ServiceDef>) -> SwarmStack {
        SwarmStack {
            version: v.into(),
            image: format!("r/x:{v}@sha256:{v}"),
            image_id: format!("sha256:{v}"),
            namespace: "p".into(),
            file: format!("/s/{v}.yaml").into(),
            stack: StackDef {
                services,
                volumes: BTreeMap::new(),
                networks: BTreeMap::from([(
                    "default".to_string(),
                    NetworkDef {
                        name: "p_default".into(),
                        driver: None,
                        driver_opts: BTreeMap::new(),
                        attachable: true,
                        external: false,
                    },
                )]),
            },
        }
    }

    fn request(previous: bool) -> SwarmRequest {
        let services = vec![
            svc("create-site", Role::Job),
            svc("backend", Role::Web),
            svc("queue", Role::Worker),
        ];
        let mut specs = BTreeMap::new();
        if previous {
            specs.insert("p_backend".to_string(), json!({"Name": "p_backend"}));
            specs.insert("p_queue".to_string(), json!({"Name": "p_queue"}));
            specs.insert("p_old".to_string(), json!({"Name": "p_old"}));
        }
        SwarmRequest {
            id: "d1".into(),
            action: Action::Deploy,
            version: "2".into(),
            image_id: "sha256:2".into(),
            new: stack("2", services),
            resolved: "services: {}".into(),
            previous: previous.then(|| PreviousRelease {
                version: "1".into(),
                image: "r/x:1@sha256:1".into(),
                deployment: Some("d0".into()),
            }),
            previous_specs: specs,
            previous_running: previous,
            compose_sources: vec!["/p/compose.yaml".into()],
            env: BTreeMap::new(),
            sites: Sites::parse("a.local"),
            backend_service: "backend".into(),
            health_url: "http://127.0.0.1:1/".into(),
            drain_timeout_secs: 60,
            health_timeout_secs: 60,
            timeout_secs: 300,
            migrate: true,
            maintenance: true,
            restore: vec![],
        }
    }

    fn names(p: &SwarmPlan) -> Vec<&'static str> {
        p.steps.iter().map(|s| s.step.name()).collect()
    }

    #[test]
    fn an_upgrade_migrates_before_any_service_changes() {
        let p = plan(request(true));
        assert_eq!(
            names(&p),
            vec![
                "snapshot",
                "maintenance-on",
                "drain",
                "backup",
                "networks",
                "jobs",
                "migrate",
                "update-web",
                "update-workers",
                "remove-orphans",
                "verify",
                "health-gate-sealed",
                "maintenance-off",
                "health-gate"
            ]
        );
        // maintenance and backup run the old code, migrate the new.
        assert!(
            matches!(&p.steps[1].step, SwarmStep::MaintenanceOn { image } if image.contains("sha256:1"))
        );
        assert!(
            matches!(&p.steps[6].step, SwarmStep::Migrate { image } if image.contains("sha256:2"))
        );
    }

    #[test]
    fn a_failed_migrate_restores_and_touches_no_service() {
        let p = plan(request(true));
        let r = &p.steps[6].on_failure;
        assert_eq!(r.outcome, Outcome::Recovered);
        assert!(matches!(r.steps[0], SwarmRecoveryStep::Restore { .. }));
        assert!(matches!(
            r.steps[1],
            SwarmRecoveryStep::MaintenanceOff { .. }
        ));
        assert_eq!(r.steps.len(), 2);
        // before anything ran: only maintenance off again
        let r = &p.steps[3].on_failure;
        assert_eq!(r.outcome, Outcome::Aborted);
        assert_eq!(r.steps.len(), 1);
    }

    #[test]
    fn a_failed_rolling_update_puts_the_recorded_specs_back() {
        let p = plan(request(true));
        let r = &p.steps[8].on_failure;
        let SwarmRecoveryStep::RevertServices { services } = &r.steps[0] else {
            panic!("{r:?}")
        };
        // reverse order: workers first, then the web tier
        assert_eq!(services[0].service, "p_queue");
        assert_eq!(services[1].service, "p_backend");
        assert_eq!(services[1].previous, Some(json!({"Name": "p_backend"})));
        assert!(p.to_string().contains("put p_queue, p_backend back"));
    }

    #[test]
    fn after_users_were_let_in_nothing_is_restored() {
        let p = plan(request(true));
        let last = p.steps.last().unwrap();
        assert!(!last
            .on_failure
            .steps
            .iter()
            .any(|s| matches!(s, SwarmRecoveryStep::Restore { .. })));
        assert!(last.on_failure.data_note.is_some());
    }

    #[test]
    fn a_first_deploy_removes_what_it_created() {
        let p = plan(request(false));
        assert_eq!(names(&p)[1], "networks");
        let r = &p
            .steps
            .iter()
            .find(|s| s.step.name() == "update-workers")
            .unwrap()
            .on_failure;
        assert_eq!(r.outcome, Outcome::Aborted);
        let SwarmRecoveryStep::RevertServices { services } = &r.steps[0] else {
            panic!()
        };
        assert!(services.iter().all(|s| s.previous.is_none()));
    }

    #[test]
    fn no_migrate_means_no_maintenance_and_only_the_open_gate() {
        let mut r = request(true);
        r.migrate = false;
        r.maintenance = false;
        let p = plan(r);
        let n = names(&p);
        assert!(!n.contains(&"maintenance-on") && !n.contains(&"migrate"));
        assert!(!n.contains(&"health-gate-sealed"));
        assert_eq!(n.last(), Some(&"health-gate"));
    }

    #[test]
    fn the_plan_round_trips_through_json() {
        let p = plan(request(true));
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["steps"][7]["step"], "update");
        let back: SwarmPlan = serde_json::from_value(v).unwrap();
        assert_eq!(back, p);
    }
}
