//! The swarm executor against a scripted world: which calls each failure
//! leads to. The real swarm is exercised by `tests/swarm.rs`.

use super::*;
use crate::plan::swarm::{plan, SwarmRequest};
use crate::record::deploy::{Action, Sites};
use std::cell::RefCell;
use std::collections::BTreeMap;

#[derive(Default)]
struct Fake {
    calls: RefCell<Vec<String>>,
    fail_job: Option<&'static str>,
    fail_converge: Option<&'static str>,
    /// A job whose task its node's engine stopped: state `shutdown`, and
    /// (as the engine may say) exit code 0.
    stopped_job: Option<&'static str>,
    /// As the demo bench's `.require_root_password`: `restore` reads the
    /// database root password on its stdin and fails without this one.
    root_password: Option<&'static str>,
    /// What each job got on its stdin.
    stdin: RefCell<Vec<(String, Option<String>)>>,
    /// How many more times the manager does not answer (its engine
    /// restarting) when asked for its time.
    manager_down: std::cell::Cell<u32>,
    /// Every copy of a record the swarm took, in order.
    on_swarm: RefCell<Vec<Deployment>>,
    /// How many more record saves the manager does not answer.
    records_down: std::cell::Cell<u32>,
    /// The manager does not answer a save of such a record (an outage
    /// longer than any wait).
    records_away: Option<fn(&Deployment) -> bool>,
    /// The swarm refuses a save of such a record (e.g. a config too big).
    records_refuse: Option<fn(&Deployment) -> bool>,
}

impl SwarmWorld for Fake {
    async fn manager_time(&self) -> Result<chrono::DateTime<chrono::Utc>> {
        let down = self.manager_down.get();
        if down > 0 {
            self.manager_down.set(down - 1);
            self.calls.borrow_mut().push("manager: no answer".into());
            return Err(Error::engine_unreachable(
                "ask the manager for its time",
                "connection closed before message completed",
            ));
        }
        Ok(chrono::Utc::now())
    }
    async fn apply(&self, spec: &Value) -> Result<()> {
        let img = spec["TaskTemplate"]["ContainerSpec"]["Image"]
            .as_str()
            .unwrap_or("previous-spec")
            .to_string();
        self.calls.borrow_mut().push(format!(
            "apply {} {img}",
            spec["Name"].as_str().unwrap_or("?")
        ));
        Ok(())
    }
    async fn remove(&self, name: &str) -> Result<()> {
        self.calls.borrow_mut().push(format!("remove {name}"));
        Ok(())
    }
    async fn wait_converged(
        &self,
        name: &str,
        _since: chrono::DateTime<chrono::Utc>,
        _timeout: Duration,
        _on_note: &mut (dyn FnMut(&str) + Send),
    ) -> Result<Vec<TaskState>> {
        let n = self
            .calls
            .borrow()
            .iter()
            .filter(|c| c.starts_with(&format!("apply {name} ")))
            .count();
        // Only the first update fails: the revert converges.
        if self.fail_converge == Some(name) && n == 1 {
            return Err(Error::failed(format!(
                "the update of {name} stopped (paused)"
            )));
        }
        Ok(vec![])
    }
    async fn ensure_network(&self, _namespace: &str, name: &str) -> Result<bool> {
        self.calls.borrow_mut().push(format!("network {name}"));
        Ok(true)
    }
    async fn run_job(
        &self,
        job: &JobRun,
        stdin: Option<&Secret>,
        _timeout: Duration,
        on_line: &mut (dyn FnMut(&str) + Send),
    ) -> Result<(JobRecord, String)> {
        let cmd = job.command.join(" ");
        let given = stdin.map(|s| s.expose().to_string());
        self.stdin.borrow_mut().push((cmd.clone(), given.clone()));
        if let (Some(want), true) = (self.root_password, cmd.contains(" restore ")) {
            if given.as_deref() != Some(want) {
                let out = match given {
                    None => "MySQL root password: Aborted!",
                    Some(_) => "MySQL root password: Access denied for user 'root'@'localhost' (using password: YES)",
                };
                on_line(out);
                let rec = JobRecord {
                    step: job.step.clone(),
                    service: job.name.clone(),
                    command: job.command.clone(),
                    tasks: 1,
                    node: "n2".into(),
                    exit_code: Some(1),
                    state: "failed".into(),
                    error: Some("task: non-zero exit (1)".into()),
                };
                return Ok((rec, out.to_string()));
            }
        }
        let image = job.spec["TaskTemplate"]["ContainerSpec"]["Image"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        self.calls.borrow_mut().push(format!("job {cmd} @{image}"));
        let (code, out) = if self.fail_job.is_some_and(|f| cmd.contains(f)) {
            (1, "failed".to_string())
        } else if cmd.contains("backup") {
            (
                0,
                "Backup Summary for a.local at x\nDatabase: ./a.local/b.sql.gz 1B\n".into(),
            )
        } else if cmd.contains("ready-for-migration") {
            (0, "READY for migration: site a.local".into())
        } else {
            (0, String::new())
        };
        on_line(&out);
        let stopped = self.stopped_job.is_some_and(|f| cmd.contains(f));
        Ok((
            JobRecord {
                step: job.step.clone(),
                service: job.name.clone(),
                command: job.command.clone(),
                tasks: 1,
                node: "n2".into(),
                exit_code: Some(code),
                state: match (stopped, code) {
                    (true, _) => "shutdown",
                    (false, 0) => "complete",
                    (false, _) => "failed",
                }
                .into(),
                error: stopped.then(|| "task: stopped by its node".into()),
            },
            out,
        ))
    }
    async fn remove_jobs(&self, _deployment: &str) -> Result<Vec<String>> {
        Ok(vec![])
    }
    async fn stack_tasks(&self, _namespace: &str) -> Result<Vec<TaskState>> {
        Ok(["p_backend", "p_queue"]
            .iter()
            .map(|s| TaskState {
                service: s.to_string(),
                slot: Some(1),
                node: "n1".into(),
                node_state: "ready".into(),
                state: "running".into(),
                desired: "running".into(),
                image: "r/x:2@sha256:2".into(),
                error: None,
            })
            .collect())
    }
    async fn wait_healthy(&self, _url: &str, _t: Duration, _g: Gate) -> Result<Duration> {
        Ok(Duration::ZERO)
    }
    async fn sleep(&self, _d: Duration) {}
    fn write_snapshot(&self, _to: &std::path::Path, _text: &str) -> Result<()> {
        Ok(())
    }
    async fn save_record(&self, d: &Deployment) -> Result<()> {
        let down = self.records_down.get();
        if down > 0 || self.records_away.is_some_and(|f| f(d)) {
            self.records_down.set(down.saturating_sub(1));
            self.calls.borrow_mut().push("record: no answer".into());
            return Err(Error::engine_unreachable(
                "save the record on the swarm",
                "connection refused",
            ));
        }
        if self.records_refuse.is_some_and(|f| f(d)) {
            return Err(Error::engine(
                "save the record on the swarm",
                "config data exceeds the limit (http 400)",
            ));
        }
        self.on_swarm.borrow_mut().push(d.clone());
        Ok(())
    }
}

#[derive(Default)]
struct Saved(RefCell<Vec<Deployment>>);

impl Records for Saved {
    fn save(&self, d: &Deployment) -> Result<()> {
        self.0.borrow_mut().push(d.clone());
        Ok(())
    }
}

#[derive(Default)]
struct Lines(Vec<String>);

impl Sink for Lines {
    fn step(&mut self, _i: usize, _n: usize, step: &str) {
        self.0.push(format!("step {step}"));
    }
    fn step_done(&mut self, _s: f64, _ok: bool) {}
    fn line(&mut self, l: &str) {
        self.0.push(l.into());
    }
    fn note(&mut self, l: &str) {
        self.0.push(l.into());
    }
}

fn stack(v: &str) -> SwarmStack {
    let yaml = format!(
        "services:\n  backend:\n    image: r/x:{v}@sha256:{v}\n    volumes: [sites:/s]\n  queue:\n    image: r/x:{v}@sha256:{v}\nvolumes:\n  sites: {{}}\n"
    );
    SwarmStack {
        version: v.into(),
        image: format!("r/x:{v}@sha256:{v}"),
        image_id: format!("sha256:{v}"),
        namespace: "p".into(),
        file: "/f".into(),
        stack: crate::config::stack::parse(
            &yaml,
            crate::config::stack::Roles {
                namespace: "p",
                backend: "backend",
                web: &["backend".into()],
            },
        )
        .unwrap(),
    }
}

fn upgrade() -> SwarmPlan {
    plan(SwarmRequest {
        id: "d1".into(),
        action: Action::Deploy,
        version: "2".into(),
        image_id: "sha256:2".into(),
        new: stack("2"),
        resolved: String::new(),
        previous: Some(crate::plan::swarm::PreviousRelease {
            version: "1".into(),
            image: "r/x:1@sha256:1".into(),
            deployment: None,
        }),
        previous_specs: BTreeMap::from([
            (
                "p_backend".to_string(),
                serde_json::json!({"Name": "p_backend"}),
            ),
            (
                "p_queue".to_string(),
                serde_json::json!({"Name": "p_queue"}),
            ),
        ]),
        previous_running: true,
        compose_sources: vec!["/p/compose.yaml".into()],
        env: BTreeMap::new(),
        sites: Sites::parse("a.local"),
        backend_service: "backend".into(),
        health_url: "http://127.0.0.1:1/".into(),
        drain_timeout_secs: 5,
        health_timeout_secs: 5,
        timeout_secs: 5,
        migrate: true,
        maintenance: true,
        restore: vec![],
    })
}

fn run(world: &Fake) -> (Finished, Vec<String>) {
    run_with(world, None)
}

fn run_with(world: &Fake, db_root_password: Option<&Secret>) -> (Finished, Vec<String>) {
    let records = Saved::default();
    let mut sink = Lines::default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let p = upgrade();
    let f = rt.block_on(
        SwarmExecutor {
            world,
            records: &records,
            sink: &mut sink,
            interrupted: Arc::new(AtomicBool::new(false)),
            lost_lock: Arc::new(AtomicBool::new(false)),
            jobs_started: 0,
            db_root_password,
        }
        .run(&p),
    );
    (f, world.calls.borrow().clone())
}

#[test]
fn an_upgrade_runs_bench_jobs_of_the_right_release_in_order() {
    let w = Fake::default();
    let (f, calls) = run(&w);
    assert!(f.error.is_none(), "{:?}", f.error);
    assert_eq!(
        calls,
        vec![
            "job bench --site a.local set-maintenance-mode on @r/x:1@sha256:1",
            "job bench --site a.local ready-for-migration @r/x:1@sha256:1",
            "job bench --site a.local backup @r/x:1@sha256:1",
            "network p_default",
            "job bench --site a.local migrate @r/x:2@sha256:2",
            "apply p_backend r/x:2@sha256:2",
            "apply p_queue r/x:2@sha256:2",
            "job bench --site a.local set-maintenance-mode off @r/x:2@sha256:2",
        ]
    );
    let run = f.record.swarm.unwrap();
    assert_eq!(run.jobs.iter().filter(|j| j.step == "migrate").count(), 1);
    assert_eq!(run.tasks.len(), 2);
    assert_eq!(f.record.result, Outcome::Succeeded);
}

#[test]
fn a_failed_migrate_restores_with_the_old_code_and_changes_no_service() {
    let w = Fake {
        fail_job: Some("migrate"),
        ..Default::default()
    };
    let (f, calls) = run(&w);
    assert_eq!(f.error.as_ref().unwrap().exit_code(), 3);
    assert!(!calls.iter().any(|c| c.starts_with("apply")), "{calls:?}");
    let tail: Vec<&str> = calls.iter().rev().take(2).map(String::as_str).collect();
    assert_eq!(
        tail,
        vec![
            "job bench --site a.local set-maintenance-mode off @r/x:1@sha256:1",
            "job bench --site a.local restore ./a.local/b.sql.gz @r/x:1@sha256:1",
        ]
    );
    assert_eq!(f.record.result, Outcome::Recovered);
}

#[test]
fn a_paused_rolling_update_puts_back_the_recorded_specs() {
    let w = Fake {
        fail_converge: Some("p_backend"),
        ..Default::default()
    };
    let (f, calls) = run(&w);
    let e = f.error.unwrap();
    assert_eq!(e.exit_code(), 3, "{e}");
    assert!(e.to_string().contains("database restored"), "{e}");
    let after: Vec<&str> = calls
        .iter()
        .skip_while(|c| !c.starts_with("apply p_backend r/x:2"))
        .skip(1)
        .map(String::as_str)
        .collect();
    assert_eq!(
        after,
        vec![
            "apply p_backend previous-spec",
            "apply p_backend previous-spec",
            "job bench --site a.local restore ./a.local/b.sql.gz @r/x:1@sha256:1",
            "job bench --site a.local set-maintenance-mode off @r/x:1@sha256:1",
        ]
    );
}

#[test]
fn verify_names_tasks_that_run_another_image() {
    let st = stack("2");
    let mut tasks = vec![TaskState {
        service: "p_backend".into(),
        slot: Some(1),
        node: "n3".into(),
        node_state: "down".into(),
        state: "running".into(),
        desired: "running".into(),
        image: "r/x:1@sha256:1".into(),
        error: None,
    }];
    let v = verify(&st, &tasks);
    assert!(
        v.iter()
            .any(|p| p.contains("n3 (down)") && p.contains("instead of")),
        "{v:?}"
    );
    assert!(v.iter().any(|p| p.contains("p_queue has no task")), "{v:?}");
    tasks[0].image = st.image.clone();
    assert_eq!(verify(&st, &tasks).len(), 1);
}

/// Real `bench restore` asks for the root password (frappe_docker keeps
/// none in the sites): the restore job, and only it, reads DB_PASSWORD on
/// its stdin; without it the recovery stops at once, saying which key.
#[test]
fn the_restore_job_reads_the_root_password_on_stdin_and_only_it() {
    const PW: &str = "root-pw-canary-4711";
    let w = Fake {
        fail_job: Some("migrate"),
        root_password: Some(PW),
        ..Default::default()
    };
    let pw = Secret::new(PW);
    let (f, _) = run_with(&w, Some(&pw));
    assert_eq!(f.error.as_ref().unwrap().exit_code(), 3, "{:?}", f.error);
    let given = w.stdin.borrow().clone();
    let with: Vec<&str> = given
        .iter()
        .filter(|(_, g)| g.is_some())
        .map(|(c, _)| c.as_str())
        .collect();
    assert_eq!(with, ["bench --site a.local restore ./a.local/b.sql.gz"]);
    assert!(given
        .iter()
        .all(|(_, g)| g.as_deref().is_none_or(|g| g == PW)));
    let record = serde_json::to_string(&f.record).unwrap();
    assert!(!record.contains(PW), "the password is in the record");

    // Without DB_PASSWORD: the prompt reads end-of-file, the job fails, the
    // recovery stops there (exit 4) and says which key to set.
    let w = Fake {
        fail_job: Some("migrate"),
        root_password: Some(PW),
        ..Default::default()
    };
    let (f, _) = run_with(&w, None);
    let e = f.error.unwrap();
    assert_eq!(e.exit_code(), 4, "{e}");
    let left = f.record.left.clone().unwrap_or_default();
    assert!(left.contains("set DB_PASSWORD"), "{left}");
    // A wrong one is named as rejected.
    let w = Fake {
        fail_job: Some("migrate"),
        root_password: Some(PW),
        ..Default::default()
    };
    let wrong = Secret::new("not-it");
    let (f, _) = run_with(&w, Some(&wrong));
    assert_eq!(f.error.unwrap().exit_code(), 4);
    assert!(f
        .record
        .left
        .unwrap_or_default()
        .contains("bench rejected the database root password"));
}

/// A manager whose engine restarts while a deployment fails: the recovery
/// waits for it to answer again instead of giving up on the first refusal.
#[test]
fn a_recovery_waits_for_a_manager_that_restarts() {
    let w = Fake {
        fail_job: Some("migrate"),
        manager_down: std::cell::Cell::new(3),
        ..Default::default()
    };
    let records = Saved::default();
    let mut sink = Lines::default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let f = rt.block_on(
        SwarmExecutor {
            world: &w,
            records: &records,
            sink: &mut sink,
            interrupted: Arc::new(AtomicBool::new(false)),
            lost_lock: Arc::new(AtomicBool::new(false)),
            jobs_started: 0,
            db_root_password: None,
        }
        .run(&upgrade()),
    );
    let e = f.error.unwrap();
    assert_eq!(e.exit_code(), 3, "{e}");
    let calls = w.calls.borrow();
    let waited = calls.iter().filter(|c| *c == "manager: no answer").count();
    assert_eq!(waited, 3, "{calls:?}");
    assert!(calls
        .iter()
        .any(|c| c.starts_with("job bench --site a.local restore")));
    assert_eq!(
        sink.0
            .iter()
            .filter(|l| l.contains("the swarm manager does not answer"))
            .count(),
        1,
        "{:?}",
        sink.0
    );
}

/// A job's task that its node's engine stopped may end `shutdown` with exit
/// code 0: that migrate did not run, and is not taken for one that did.
#[test]
fn a_job_stopped_by_its_node_is_no_success_even_with_exit_code_0() {
    let w = Fake {
        stopped_job: Some("migrate"),
        ..Default::default()
    };
    let (f, calls) = run(&w);
    let e = f.error.unwrap();
    assert_eq!(e.exit_code(), 3, "{e}");
    assert!(
        e.to_string().contains(
            "did not complete: its task ended `shutdown`: task: stopped by its node (exit code 0)"
        ),
        "{e}"
    );
    assert!(!calls.iter().any(|c| c.starts_with("apply")), "{calls:?}");
    assert_eq!(f.record.result, Outcome::Recovered);
}

#[test]
fn a_job_that_did_not_complete_is_said_as_the_swarm_says_it() {
    let rec = |state: &str, code: Option<i64>, error: Option<&str>| JobRecord {
        step: "migrate".into(),
        service: "p_de-build-migrate-3-x".into(),
        command: vec!["bench".into(), "migrate".into()],
        tasks: 1,
        node: "n1".into(),
        exit_code: code,
        state: state.into(),
        error: error.map(str::to_string),
    };
    assert_eq!(
        job_failure(&rec("failed", Some(1), Some("task: non-zero exit (1)"))),
        "`bench migrate` exited with 1 (one-off job on n1, 1 task(s))"
    );
    // Stopped by its node's engine: exit code 0, but it did not run to its end.
    assert_eq!(
        job_failure(&rec("failed", Some(0), Some("context canceled"))),
        "`bench migrate` did not complete: its task ended `failed`: context canceled (exit code 0) (one-off job on n1, 1 task(s))"
    );
    // Restarted by the swarm after the engine came back, and refused.
    assert_eq!(
        job_failure(&rec("rejected", None, Some("Conflict. The container name is already in use"))),
        "`bench migrate` did not complete: its task ended `rejected`: Conflict. The container name is already in use (one-off job on n1, 1 task(s))"
    );
    assert!(!rec("shutdown", Some(0), None).completed());
    assert!(rec("complete", Some(0), None).completed());
    assert!(
        rec("", Some(0), None).completed(),
        "records from before `state`"
    );
}

/// Run the upgrade; also this machine's saved records and what was said.
fn run_seen(world: &Fake, lost: bool) -> (Finished, Vec<Deployment>, Vec<String>) {
    let records = Saved::default();
    let mut sink = Lines::default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let f = rt.block_on(
        SwarmExecutor {
            world,
            records: &records,
            sink: &mut sink,
            interrupted: Arc::new(AtomicBool::new(false)),
            lost_lock: Arc::new(AtomicBool::new(lost)),
            jobs_started: 0,
            db_root_password: None,
        }
        .run(&upgrade()),
    );
    let local = records.0.borrow().clone();
    (f, local, sink.0)
}

/// Every save reaches the swarm (what other machines read) as well as this
/// machine's file, the first before anything changes, the last saying
/// succeeded: "deployed" is said only once the swarm holds it.
#[test]
fn every_save_of_the_record_reaches_the_swarm_and_the_last_says_succeeded() {
    let w = Fake::default();
    let (f, local, _) = run_seen(&w, false);
    assert!(f.error.is_none(), "{:?}", f.error);
    let swarm = w.on_swarm.borrow();
    assert_eq!(
        *swarm, local,
        "the swarm took every copy this machine wrote"
    );
    assert_eq!(swarm[0].result, Outcome::Running);
    assert!(swarm[0].steps.is_empty(), "saved before the first step");
    assert_eq!(swarm.last().unwrap().result, Outcome::Succeeded);
    assert_eq!(*swarm.last().unwrap(), f.record);
}

/// A manager restarting while a record is saved: the save waits for it
/// (said once, and when it answers again) and the deploy completes.
#[test]
fn a_save_waits_for_a_manager_that_restarts() {
    let w = Fake {
        records_down: std::cell::Cell::new(3),
        ..Default::default()
    };
    let (f, _, said) = run_seen(&w, false);
    assert!(f.error.is_none(), "{:?}", f.error);
    let calls = w.calls.borrow();
    assert_eq!(
        calls.iter().filter(|c| *c == "record: no answer").count(),
        3,
        "{calls:?}"
    );
    assert_eq!(
        said.iter()
            .filter(|l| l.contains("did not answer") && l.contains("while saving the record"))
            .count(),
        1,
        "{said:?}"
    );
    assert!(said
        .iter()
        .any(|l| l.contains("the record is saved on the swarm")));
    assert_eq!(
        w.on_swarm.borrow().last().unwrap().result,
        Outcome::Succeeded
    );
}

/// A manager away longer than DE_SWARM_TIMEOUT from the migrate on: the
/// deploy stops (its record cannot be kept where other machines read it)
/// and recovers, saying why; the swarm's last copy still says running, so
/// every machine sees a deployment to recover.
#[test]
fn a_manager_away_longer_than_the_timeout_while_saving_fails_the_deploy_truthfully() {
    let w = Fake {
        records_away: Some(|d| d.swarm.as_ref().unwrap().progress.migrate_started),
        ..Default::default()
    };
    let (f, local, said) = run_seen(&w, false);
    let e = f.error.unwrap();
    assert_eq!(e.exit_code(), 3, "{e}");
    assert!(
        e.to_string()
            .contains("the swarm manager did not take the record within 5s"),
        "{e}"
    );
    let calls = w.calls.borrow();
    assert!(!calls.iter().any(|c| c.contains(" migrate @")), "{calls:?}");
    assert!(
        said.iter()
            .any(|l| l.contains("warning: the deployment record could not be written")),
        "{said:?}"
    );
    assert_eq!(local.last().unwrap().result, Outcome::Recovered);
    assert_eq!(w.on_swarm.borrow().last().unwrap().result, Outcome::Running);
}

/// The swarm refusing the final record: the release runs, but the deploy
/// is not reported as done (exit 1, `recover` closes it).
#[test]
fn the_swarm_refusing_the_final_record_is_no_success() {
    let w = Fake {
        records_refuse: Some(|d| d.result == Outcome::Succeeded),
        ..Default::default()
    };
    let (f, _, _) = run_seen(&w, false);
    let e = f.error.unwrap();
    assert_eq!(e.exit_code(), 1, "{e}");
    assert!(
        e.to_string()
            .contains("runs and answers, but its record could not be written"),
        "{e}"
    );
    assert!(e
        .hint()
        .unwrap()
        .contains("`de-build recover` closes deployment d1"));
    assert_eq!(w.on_swarm.borrow().last().unwrap().result, Outcome::Running);
}

/// A refused write mid-deploy stops it before the next step and recovers.
#[test]
fn the_swarm_refusing_a_record_mid_deploy_stops_and_recovers() {
    let w = Fake {
        records_refuse: Some(|d| {
            let p = &d.swarm.as_ref().unwrap().progress;
            p.migrate_started && d.result == Outcome::Running
        }),
        ..Default::default()
    };
    let (f, _, _) = run_seen(&w, false);
    let e = f.error.unwrap();
    assert_eq!(e.exit_code(), 3, "{e}");
    assert!(
        e.to_string()
            .contains("the deployment record could not be written"),
        "{e}"
    );
    assert!(!w.calls.borrow().iter().any(|c| c.contains(" migrate @")));
    // The recovery's own record is saved.
    assert_eq!(
        w.on_swarm.borrow().last().unwrap().result,
        Outcome::Recovered
    );
}

/// A holder that lost the swarm's lock writes no more to the swarm: the
/// new holder may be recovering this very deployment there.
#[test]
fn a_holder_that_lost_the_lock_writes_only_its_own_file() {
    let w = Fake::default();
    let (f, local, _) = run_seen(&w, true);
    assert_eq!(f.error.unwrap().exit_code(), 4);
    assert_eq!(local.last().unwrap().result, Outcome::Interrupted);
    let swarm = w.on_swarm.borrow();
    assert_eq!(
        swarm.len(),
        1,
        "only the first save, before the loss was seen"
    );
    assert_eq!(swarm[0].result, Outcome::Running);
}
