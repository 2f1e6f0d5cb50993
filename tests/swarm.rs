//! DE_TARGET=swarm on a real three-node Docker Swarm (tests/support/cluster.rs):
//! the demo release pushed to the cluster's registry and deployed by digest,
//! bench run as one-off jobs, the web tier rolled start-first behind a load
//! balancer, recovery by putting the recorded service specs back.
//!
//! One cluster serves every test of this file, one test at a time; it is
//! removed when the test process exits.
//!
//! Not part of `cargo test` (the README's first-contact command): building
//! the node image (debootstrap) and running these on one shared cluster
//! takes ~8 minutes on a 2-core machine. `.ci/run` runs them after it:
//! `cargo test --test integration -- --ignored swarm:: --skip bench_swarm`.

use crate::support;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};
use support::cluster::{get, wait_for, Balancer, Cluster};
use support::{engine_available, Done, ImageRepo, Project};

static CLUSTER: OnceLock<Option<Cluster>> = OnceLock::new();
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

extern "C" {
    fn atexit(cb: extern "C" fn()) -> std::os::raw::c_int;
}

extern "C" fn teardown() {
    if let Some(Some(c)) = CLUSTER.get() {
        c.teardown();
    }
}

/// The cluster, or None (skipped, said) where no engine or no way to build
/// the node image exists; under CI both are failures.
fn cluster(test: &str) -> Option<(&'static Cluster, MutexGuard<'static, ()>)> {
    if !engine_available(test) {
        return None;
    }
    let guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let c = CLUSTER.get_or_init(|| {
        if !support::cluster::can_build_nodes() {
            if std::env::var_os("CI").is_some() {
                panic!("{test}: debootstrap is needed to build the swarm node image in CI (.ci/run installs it)");
            }
            eprintln!("{test}: skipped, no swarm node image and no debootstrap to build one");
            return None;
        }
        let c = Cluster::start("sw");
        // SAFETY: registering a plain function with the C runtime's atexit.
        unsafe { atexit(teardown) };
        Some(c)
    });
    c.as_ref().map(|c| (c, guard))
}

static PORT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(18100);

/// A copy of the demo project deploying to the test cluster as its own
/// stack, with its own image repository, port and shared sites directory.
struct Sp {
    c: &'static Cluster,
    repo: ImageRepo,
    /// The registry-prefixed tags a push leaves on this machine.
    _pushed: ImageRepo,
    p: Project,
    ns: String,
    lb: Balancer,
}

impl Sp {
    fn new(c: &'static Cluster, name: &str) -> Sp {
        let repo = ImageRepo::new(&format!("sw{name}"));
        let p = Project::demo(&repo);
        let ns = format!("dbts{name}{}", std::process::id());
        let port = PORT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let lb = Balancer::start(
            c.node_ips
                .iter()
                .map(|ip| format!("{ip}:{port}").parse().unwrap())
                .collect(),
        );
        let _pushed = ImageRepo(format!("{}/{}", c.registry_local, repo.0));
        let s = Sp {
            c,
            repo,
            _pushed,
            p,
            ns,
            lb,
        };
        s.configure(&s.p, port);
        std::fs::create_dir_all(s.sites()).unwrap();
        s
    }

    fn configure(&self, p: &Project, port: u16) {
        std::fs::copy(
            support::repo_root().join("examples/demo/compose.swarm.yaml"),
            p.path().join("compose.swarm.yaml"),
        )
        .unwrap();
        for (k, v) in [
            ("DE_TARGET", "swarm".to_string()),
            ("DE_COMPOSE_FILE", "compose.swarm.yaml".into()),
            ("COMPOSE_PROJECT_NAME", self.ns.clone()),
            ("DE_REGISTRY", self.c.registry_local.clone()),
            ("DE_SWARM_REGISTRY", self.c.registry_nodes.clone()),
            (
                "DE_HEALTH_URL",
                format!("http://127.0.0.1:{}/api/method/ping", self.lb.port),
            ),
            ("DE_HEALTH_TIMEOUT", "60".into()),
            ("DE_SWARM_TIMEOUT", "90".into()),
            ("DE_SWARM_LOCK_STALE", "20".into()),
            ("HTTP_PUBLISH_PORT", port.to_string()),
            (
                "DEMO_SHARED_DIR",
                self.c.shared.join(&self.ns).display().to_string(),
            ),
        ] {
            p.set_env(k, &v);
        }
    }

    /// A second operator: another checkout of the same project (the
    /// releases committed), on "another machine" deploying the same stack.
    fn operator_b(&self) -> Project {
        let b = Project::demo(&self.repo);
        let port: u16 = self
            .p
            .read(".env")
            .lines()
            .find_map(|l| {
                l.strip_prefix("HTTP_PUBLISH_PORT=")
                    .map(|v| v.parse().unwrap())
            })
            .unwrap();
        self.configure(&b, port);
        for e in std::fs::read_dir(self.p.path().join("releases"))
            .unwrap()
            .flatten()
        {
            b.write_bytes(
                &format!("releases/{}", e.file_name().to_string_lossy()),
                &std::fs::read(e.path()).unwrap(),
            );
        }
        b
    }

    /// de-build against the manager from operator B's checkout.
    fn on_b(&self, b: &Project, args: &[&str]) -> Done {
        b.run()
            .env("DOCKER_HOST", &self.c.manager)
            .env("USER", "operator-b")
            .args(args)
            .output()
    }

    /// The stack's deployment records on the swarm: config name and its
    /// `de-build.deployment` label.
    fn record_configs(&self) -> Vec<(String, String)> {
        self.c
            .docker_ok(&[
                "config",
                "ls",
                "--filter",
                &format!("label=de-build.record={}", self.ns),
                "--format",
                "{{.Name}} {{.Labels}}",
            ])
            .lines()
            .map(|l| {
                let (name, labels) = l.split_once(' ').unwrap();
                let d = labels
                    .split(',')
                    .find_map(|kv| kv.strip_prefix("de-build.deployment="))
                    .unwrap_or_default();
                (name.to_string(), d.to_string())
            })
            .collect()
    }

    fn sites(&self) -> PathBuf {
        self.c.shared.join(&self.ns).join("sites")
    }

    /// On this machine's engine (build, push).
    fn host(&self, args: &[&str]) -> Done {
        self.p.run().args(args).output()
    }

    /// Against the swarm's manager.
    /// de-build against the manager, to spawn (stdout and stderr piped):
    /// only PATH and HOME of this environment reach it.
    fn command(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_de-build"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env(
                "HOME",
                std::env::var("HOME").unwrap_or_else(|_| "/root".into()),
            )
            .env("NO_COLOR", "1")
            .env("DOCKER_HOST", &self.c.manager)
            .args(["--project-dir", self.p.path().to_str().unwrap()])
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        cmd
    }

    fn swarm(&self, args: &[&str]) -> Done {
        self.p
            .run()
            .env("DOCKER_HOST", &self.c.manager)
            .args(args)
            .output()
    }

    fn release(&self, version: &str) {
        self.p.set_env("DE_SITE_VERSION", version);
        self.host(&["-q", "build", "--offline"]).code(0);
        self.host(&["-q", "push", version]).code(0);
    }

    fn add_patch(&self, line: &str) {
        let t = self.p.read("patches.txt") + line + "\n";
        self.p.write("patches.txt", &t);
    }

    fn digest(&self, version: &str) -> String {
        let m: serde_json::Value =
            serde_json::from_str(&self.p.read(&format!("releases/{version}.json"))).unwrap();
        let r = m["registry"]["digest_ref"].as_str().unwrap();
        r.split_once('@').unwrap().1.to_string()
    }

    fn service_image(&self, service: &str) -> String {
        self.c
            .docker_ok(&[
                "service",
                "inspect",
                "-f",
                "{{.Spec.TaskTemplate.ContainerSpec.Image}}",
                &format!("{}_{service}", self.ns),
            ])
            .trim()
            .to_string()
    }

    /// Images of the running tasks of a service.
    fn task_images(&self, service: &str) -> Vec<String> {
        let out = self.c.docker_ok(&[
            "service",
            "ps",
            "--no-trunc",
            "--filter",
            "desired-state=running",
            "--format",
            "{{.Image}} {{.CurrentState}}",
            &format!("{}_{service}", self.ns),
        ]);
        out.lines()
            .filter(|l| l.contains("Running"))
            .map(|l| l.split_whitespace().next().unwrap().to_string())
            .collect()
    }

    fn patch_log(&self) -> String {
        std::fs::read_to_string(self.sites().join("demo.localhost/patch_log.txt"))
            .unwrap_or_default()
    }

    fn fault(&self, file: &str, content: Option<&str>) {
        let d = self.sites().join(".fault");
        std::fs::create_dir_all(&d).unwrap();
        match content {
            Some(c) => std::fs::write(d.join(file), c).unwrap(),
            None => {
                let _ = std::fs::remove_file(d.join(file));
            }
        }
    }

    fn status(&self) -> serde_json::Value {
        self.swarm(&["--json", "status"]).json()
    }
}

impl Drop for Sp {
    fn drop(&mut self) {
        self.c.remove_stack(&self.ns);
    }
}

#[test]
#[cfg_attr(
    no_engine,
    ignore = "no Docker engine answered when the tests were built"
)]
#[cfg_attr(
    not(no_engine),
    ignore = "the swarm suite, on its own: cargo test --test integration -- --ignored swarm:: --skip bench_swarm"
)]
fn deploy_then_upgrade_with_one_migrate_then_roll_back_by_digest() {
    let Some((c, _one)) = cluster("swarm_deploy_upgrade_rollback") else {
        return;
    };
    let s = Sp::new(c, "up");
    s.release("1.0.0");
    s.add_patch("demo.patches.v1_1.add_field");
    s.release("1.1.0");
    let (d0, d1) = (s.digest("1.0.0"), s.digest("1.1.0"));
    assert_ne!(d0, d1);

    s.swarm(&["deploy", "1.0.0", "--dry-run"])
        .code(0)
        .stdout_has("plan (swarm): nothing deployed -> 1.0.0")
        .stdout_has("bench migrate as a one-off job");
    s.swarm(&["deploy", "1.0.0"])
        .code(0)
        .clean()
        .stdout_has("deployed 1.0.0");
    assert_eq!(get(s.lb.port), Some(200));
    assert!(
        s.service_image("backend").ends_with(&d0),
        "{}",
        s.service_image("backend")
    );
    let st = s.status();
    assert_eq!(st["consistent"], true, "{st:#}");

    let out = s.swarm(&["deploy", "1.1.0"]);
    out.code(0).clean().stdout_has("deployed 1.1.0 (was 1.0.0)");
    assert_eq!(
        out.stderr
            .matches("Executing demo.patches.v1_1.add_field")
            .count(),
        1,
        "{}",
        out.stderr
    );
    let log = s.patch_log();
    assert_eq!(
        log.matches("demo.patches.v1_0.create_demo_data").count(),
        1,
        "{log}"
    );
    assert_eq!(
        log.matches("demo.patches.v1_1.add_field").count(),
        1,
        "{log}"
    );
    assert_eq!(get(s.lb.port), Some(200));
    for svc in ["backend", "queue-short"] {
        let imgs = s.task_images(svc);
        assert!(
            !imgs.is_empty() && imgs.iter().all(|i| i.ends_with(&d1)),
            "{svc}: {imgs:?}"
        );
    }
    assert_eq!(s.task_images("backend").len(), 2);

    let st = s.status();
    assert_eq!(st["consistent"], true, "{st:#}");
    assert_eq!(st["current"]["version"], "1.1.0");
    let last = &st["deployments"][0];
    let migrates: Vec<&serde_json::Value> = last["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["step"] == "migrate")
        .collect();
    assert_eq!(migrates.len(), 1, "{last:#}");
    assert_eq!(
        migrates[0]["tasks"], 1,
        "the migrate job ran once: {last:#}"
    );
    assert_eq!(migrates[0]["exit_code"], 0);
    assert!(migrates[0]["service"].as_str().unwrap().contains("migrate"));
    // status names the task of each replica and the node it runs on
    let tasks = st["tasks"].as_array().unwrap();
    let backend: Vec<&serde_json::Value> = tasks
        .iter()
        .filter(|t| t["service"] == format!("{}_backend", s.ns) && t["state"] == "running")
        .collect();
    assert_eq!(backend.len(), 2, "{tasks:#?}");
    assert!(backend
        .iter()
        .all(|t| t["node"].as_str().unwrap().starts_with('n')));
    assert!(backend
        .iter()
        .all(|t| t["image"].as_str().unwrap().ends_with(&d1)));
    let human = s.swarm(&["status"]);
    human.code(0).stdout_has("task    ").stdout_has(" on n");

    // Back to 1.0.0: its digest again on every task, no migrate.
    let out = s.swarm(&["rollback"]);
    out.code(0)
        .clean()
        .stdout_has("rolled back to 1.0.0 (was 1.1.0)");
    assert!(
        !out.stderr.contains("bench --site demo.localhost migrate"),
        "{}",
        out.stderr
    );
    for svc in ["backend", "queue-short"] {
        let imgs = s.task_images(svc);
        assert!(
            !imgs.is_empty() && imgs.iter().all(|i| i.ends_with(&d0)),
            "{svc}: {imgs:?}"
        );
    }
    assert_eq!(get(s.lb.port), Some(200));
    assert!(
        s.patch_log().contains("v1_1.add_field"),
        "a rollback does not migrate back"
    );
    let st = s.status();
    assert_eq!(st["consistent"], true, "{st:#}");
    assert_eq!(st["current"]["version"], "1.0.0");
}

#[test]
#[cfg_attr(
    no_engine,
    ignore = "no Docker engine answered when the tests were built"
)]
#[cfg_attr(
    not(no_engine),
    ignore = "the swarm suite, on its own: cargo test --test integration -- --ignored swarm:: --skip bench_swarm"
)]
fn a_failing_migrate_restores_the_backup_and_changes_no_service() {
    let Some((c, _one)) = cluster("swarm_failing_migrate") else {
        return;
    };
    let s = Sp::new(c, "fail");
    s.release("1.0.0");
    s.swarm(&["deploy", "1.0.0"]).code(0);
    let before = s.patch_log();
    let backend_spec_before =
        s.c.docker_ok(&["service", "inspect", &format!("{}_backend", s.ns)]);
    s.add_patch("demo.patches.v1_1.first");
    s.add_patch("fail:demo.patches.v1_1.broken");
    s.release("1.1.0");

    let out = s.swarm(&["deploy", "1.1.0"]);
    out.code(3)
        .clean()
        .stderr_has("Patch fail:demo.patches.v1_1.broken failed")
        .stderr_has("1.0.0 is serving again, database restored from the pre-deploy backup");
    // The first patch had been applied before the failure: the restore took it out.
    assert_eq!(s.patch_log(), before);
    let after =
        s.c.docker_ok(&["service", "inspect", &format!("{}_backend", s.ns)]);
    let v = |t: &str| -> serde_json::Value {
        serde_json::from_str::<serde_json::Value>(t).unwrap()[0]["Version"].clone()
    };
    assert_eq!(
        v(&after),
        v(&backend_spec_before),
        "the backend service was never updated"
    );
    assert_eq!(get(s.lb.port), Some(200), "maintenance is off again");
    let st = s.status();
    assert_eq!(st["consistent"], true, "{st:#}");
    assert_eq!(st["deployments"][0]["result"], "recovered");
    assert_eq!(st["current"]["version"], "1.0.0");
}

#[test]
#[cfg_attr(
    no_engine,
    ignore = "no Docker engine answered when the tests were built"
)]
#[cfg_attr(
    not(no_engine),
    ignore = "the swarm suite, on its own: cargo test --test integration -- --ignored swarm:: --skip bench_swarm"
)]
fn two_operators_deploy_at_once_and_one_is_refused() {
    let Some((c, _one)) = cluster("swarm_two_operators") else {
        return;
    };
    let s = Sp::new(c, "two");
    // A's deploy outlasts this many seconds: only its heartbeat keeps the
    // lock from going stale (and B from taking it over).
    s.p.set_env("DE_SWARM_LOCK_STALE", "6");
    s.release("1.0.0");
    s.swarm(&["deploy", "1.0.0"]).code(0);
    s.add_patch("demo.patches.v1_1.add_field");
    s.release("1.1.0");
    let b = s.operator_b();
    b.set_env("DE_SWARM_LOCK_STALE", "6");

    // Operator A's migrate takes a while; B tries meanwhile from elsewhere.
    s.fault("migrate.sleep", Some("15"));
    let a = s
        .command(&["deploy", "1.1.0"])
        .env("USER", "operator-a")
        .spawn()
        .unwrap();
    let lock = format!("de-build-lock.{}", s.ns);
    wait_for("A's lock on the swarm", Duration::from_secs(60), || {
        (c.docker(&["config", "inspect", &lock]).code == 0).then_some(())
    });
    let out = b
        .run()
        .env("DOCKER_HOST", &c.manager)
        .env("USER", "operator-b")
        .args(&["deploy", "1.1.0"])
        .output();
    out.code(5)
        .clean()
        .stderr_has("another deployment holds the lock")
        .stderr_has("operator-a@")
        .stderr_has("`deploy` of 1.1.0");
    let st = b
        .run()
        .env("DOCKER_HOST", &c.manager)
        .args(&["--json", "status"])
        .output()
        .json();
    assert_eq!(st["lock"]["state"], "held", "{st:#}");
    assert!(st["findings"].to_string().contains("in-progress"));
    s.fault("migrate.sleep", None);
    let a = a.wait_with_output().unwrap();
    assert_eq!(
        a.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&a.stderr)
    );
    assert_eq!(
        c.docker(&["config", "inspect", &lock]).code,
        1,
        "the lock is released"
    );
    assert_eq!(s.patch_log().matches("v1_1.add_field").count(), 1);

    // A's records live on the swarm, one config per deployment (each save
    // replaced the one before): B, with no record of its own, reads them.
    let a_st = s.status();
    let a_id = a_st["current"]["deployment"].as_str().unwrap().to_string();
    let configs = s.record_configs();
    assert_eq!(configs.len(), 2, "{configs:?}");
    assert!(configs.iter().any(|(_, d)| *d == a_id), "{configs:?}");
    assert!(!b.path().join(".de-build/deployments").exists());
    let st = s.on_b(&b, &["--json", "status"]).json();
    assert_eq!(st["consistent"], true, "{st:#}");
    assert_eq!(st["current"]["version"], "1.1.0", "{st:#}");
    assert_eq!(st["current"]["deployment"], a_id.as_str(), "{st:#}");
    assert_eq!(st["previous_version"], "1.0.0", "{st:#}");
    assert_eq!(st["records"]["source"], "swarm", "{st:#}");
    assert_eq!(st["deployments"][0]["user"], "operator-a", "{st:#}");
    s.on_b(&b, &["status"])
        .code(0)
        .stdout_has("deployed: 1.1.0")
        .stdout_has(&format!("deployment {a_id}"))
        .stdout_has("records:  2 on the swarm");

    // B rolls back to A's previous release: by its digest, with the file A
    // deployed it with (from A's record).
    let d0 = s.digest("1.0.0");
    s.on_b(&b, &["rollback"])
        .code(0)
        .clean()
        .stdout_has("rolled back to 1.0.0 (was 1.1.0)");
    for svc in ["backend", "queue-short"] {
        let imgs = s.task_images(svc);
        assert!(
            !imgs.is_empty() && imgs.iter().all(|i| i.ends_with(&d0)),
            "{svc}: {imgs:?}"
        );
    }
    assert_eq!(get(s.lb.port), Some(200));
    // And A sees B's rollback.
    let st = s.status();
    assert_eq!(st["consistent"], true, "{st:#}");
    assert_eq!(st["current"]["version"], "1.0.0", "{st:#}");
    assert_eq!(st["deployments"][0]["action"], "rollback", "{st:#}");
    assert_eq!(st["deployments"][0]["user"], "operator-b", "{st:#}");
}

#[test]
#[cfg_attr(
    no_engine,
    ignore = "no Docker engine answered when the tests were built"
)]
#[cfg_attr(
    not(no_engine),
    ignore = "the swarm suite, on its own: cargo test --test integration -- --ignored swarm:: --skip bench_swarm"
)]
fn a_node_stopped_mid_deploy_is_rescheduled_around_and_status_names_it() {
    let Some((c, _one)) = cluster("swarm_node_stopped") else {
        return;
    };
    let s = Sp::new(c, "node");
    s.release("1.0.0");
    s.swarm(&["deploy", "1.0.0"]).code(0);
    s.add_patch("demo.patches.v1_1.add_field");
    s.release("1.1.0");
    let d1 = s.digest("1.1.0");
    // A worker node that runs a backend task: its tasks must move.
    let nodes = c.docker_ok(&[
        "service",
        "ps",
        "--filter",
        "desired-state=running",
        "--format",
        "{{.Node}}",
        &format!("{}_backend", s.ns),
    ]);
    let victim: usize = nodes
        .lines()
        .filter_map(|n| n.strip_prefix('n').and_then(|i| i.parse().ok()))
        .find(|i| *i != 1)
        .expect("a backend task on a worker node");
    struct Restart<'a>(&'a Cluster, usize);
    impl Drop for Restart<'_> {
        fn drop(&mut self) {
            self.0.start_node(self.1);
        }
    }

    s.fault("migrate.sleep", Some("4"));
    let started = Instant::now();
    let child = s.command(&["deploy", "1.1.0"]).spawn().unwrap();
    // Mid-deploy: while the migrate job runs.
    wait_for("the migrate job", Duration::from_secs(90), || {
        let out = c.docker(&["service", "ls", "--format", "{{.Name}}"]);
        out.stdout
            .lines()
            .any(|n| n.contains("de-build-migrate"))
            .then_some(())
    });
    c.stop_node(victim);
    let _restart = Restart(c, victim);
    let out = child.wait_with_output().unwrap();
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let code = out.status.code();
    eprintln!("deploy with n{victim} stopped: exit {code:?} after {took:?}\n{stderr}");
    // Converged (the lost tasks rescheduled) or recovered: never a hang
    // past the timeouts (DE_SWARM_TIMEOUT 90 s per wait).
    assert!(
        code == Some(0) || code == Some(3),
        "exit {code:?}\n{stderr}"
    );
    assert!(took < Duration::from_secs(600), "took {took:?}");
    let st = s.status();
    let tasks = st["tasks"].as_array().unwrap();
    let on_victim: Vec<&serde_json::Value> = tasks
        .iter()
        .filter(|t| t["node"] == format!("n{victim}"))
        .collect();
    // The manager still lists what it last knew of the lost node's tasks,
    // with the node's state.
    for t in &on_victim {
        assert_ne!(t["node_state"], "ready", "{t}");
    }
    let running_backend: Vec<&serde_json::Value> = tasks
        .iter()
        .filter(|t| {
            t["service"] == format!("{}_backend", s.ns)
                && t["state"] == "running"
                && t["desired"] == "running"
                && t["node"] != format!("n{victim}")
        })
        .collect();
    assert_eq!(
        running_backend.len(),
        2,
        "two replicas run on the live nodes: {tasks:#?}"
    );
    if code == Some(0) {
        assert!(running_backend
            .iter()
            .all(|t| t["image"].as_str().unwrap().ends_with(&d1)));
        assert_eq!(s.patch_log().matches("v1_1.add_field").count(), 1);
    }
    let human = s.swarm(&["status"]).stdout;
    if !on_victim.is_empty() {
        assert!(human.contains(&format!("on n{victim} (")), "{human}");
    }
}

#[test]
#[cfg_attr(
    no_engine,
    ignore = "no Docker engine answered when the tests were built"
)]
#[cfg_attr(
    not(no_engine),
    ignore = "the swarm suite, on its own: cargo test --test integration -- --ignored swarm:: --skip bench_swarm"
)]
fn a_deploy_killed_mid_migrate_on_one_machine_is_finished_by_recover_on_another() {
    let Some((c, _one)) = cluster("swarm_killed_deploy") else {
        return;
    };
    let s = Sp::new(c, "kill");
    s.p.set_env("DE_SWARM_LOCK_STALE", "6");
    s.release("1.0.0");
    s.swarm(&["deploy", "1.0.0"]).code(0);
    let d0 = s.digest("1.0.0");
    let before = s.patch_log();
    s.add_patch("demo.patches.v1_1.add_field");
    s.release("1.1.0");
    let b = s.operator_b();
    b.set_env("DE_SWARM_LOCK_STALE", "6");

    // As if 1.0.0 had been deployed by a de-build that kept its records on
    // its own machine: only A's file has it. A's next deploy uploads it.
    let first = s.record_configs();
    assert_eq!(first.len(), 1, "{first:?}");
    c.docker_ok(&["config", "rm", &first[0].0]);
    s.swarm(&["-v", "status"])
        .code(0)
        .stdout_has("1 only on this machine")
        .stderr_has("records only on this machine");

    s.fault("migrate.sleep", Some("20"));
    let mut child = s
        .command(&["deploy", "1.1.0"])
        .env("USER", "operator-a")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the migrate job", Duration::from_secs(90), || {
        let out = c.docker(&["service", "ls", "--format", "{{.Name}}"]);
        out.stdout
            .lines()
            .any(|n| n.starts_with(&s.ns) && n.contains("de-build-migrate"))
            .then_some(())
    });
    child.kill().unwrap(); // SIGKILL: no handler runs
    child.wait().unwrap();

    // On B's machine, with no record of its own: once A's heartbeat is
    // missed, the swarm's lock is stale and A's record on the swarm still
    // says running; status names both, and that recover works from here.
    let st = wait_for("a stale lock", Duration::from_secs(60), || {
        let st = s.on_b(&b, &["--json", "status"]).json();
        (st["lock"]["state"] == "stale").then_some(st)
    });
    assert_eq!(st["consistent"], false);
    let codes = st["findings"].to_string();
    assert!(
        codes.contains("stale-lock") && codes.contains("interrupted"),
        "{st:#}"
    );
    assert!(
        codes.contains("from any machine: its record is on the swarm"),
        "{st:#}"
    );
    // A's record of 1.0.0 was uploaded by A's deploy: B knows what ran before.
    assert_eq!(st["current"]["version"], "1.0.0", "{st:#}");
    assert_eq!(st["deployments"].as_array().unwrap().len(), 2, "{st:#}");
    assert_eq!(st["deployments"][0]["user"], "operator-a", "{st:#}");
    s.on_b(&b, &["deploy", "1.1.0"])
        .code(2)
        .stderr_has("was interrupted")
        .stderr_has("de-build recover");
    s.on_b(&b, &["recover", "--dry-run"])
        .code(0)
        .stdout_has("restore the pre-deploy backup");

    s.fault("migrate.sleep", None);
    let out = s.on_b(&b, &["recover"]);
    out.code(3)
        .clean()
        .stderr_has("stopped the deployment's jobs still running")
        .stderr_has("took over a lock")
        .stderr_has("operator-a@");
    assert!(
        !c.docker_ok(&["service", "ls", "--format", "{{.Name}}"])
            .contains("de-build-migrate"),
        "the migrate job is gone"
    );
    assert_eq!(
        s.patch_log(),
        before,
        "restored: the migrate of 1.1.0 is undone"
    );
    assert!(s.service_image("backend").ends_with(&d0));
    assert_eq!(get(s.lb.port), Some(200), "maintenance is off again");
    // A's own file still says running; the swarm's copy (B's recovery) is
    // the truth on A's machine too, and -v says they differ.
    let st = s.status();
    assert_eq!(st["consistent"], true, "{st:#}");
    assert_eq!(st["deployments"][0]["result"], "recovered");
    assert_eq!(st["current"]["version"], "1.0.0");
    assert_eq!(
        st["records"]["differs"].as_array().unwrap().len(),
        1,
        "{st:#}"
    );
    s.swarm(&["-v", "status"])
        .code(0)
        .stderr_has("differs from the swarm's copy; the swarm's newest is used");
    s.swarm(&["recover"])
        .code(0)
        .stdout_has("nothing to recover");
    // One config per deployment, never a secret: the uploaded 1.0.0 and
    // the recovered 1.1.0.
    assert_eq!(s.record_configs().len(), 2, "{:?}", s.record_configs());
}

#[test]
#[cfg_attr(
    no_engine,
    ignore = "no Docker engine answered when the tests were built"
)]
#[cfg_attr(
    not(no_engine),
    ignore = "the swarm suite, on its own: cargo test --test integration -- --ignored swarm:: --skip bench_swarm"
)]
fn a_node_that_cannot_pull_stops_the_update_which_is_reverted_and_named() {
    let Some((c, _one)) = cluster("swarm_cannot_pull") else {
        return;
    };
    let s = Sp::new(c, "pull");
    s.release("1.0.0");
    s.swarm(&["deploy", "1.0.0"]).code(0);
    let d0 = s.digest("1.0.0");
    s.release("1.0.1");
    // The worker nodes cannot reach the registry (the manager can: it
    // resolves the digest before anything changes). Wherever start-first
    // puts the new tasks (a node without the host port taken), one of them
    // lands on a worker before the update can finish. 1.0.0 is on every
    // node beforehand, so putting it back needs no registry.
    let old_image = s.service_image("backend");
    for n in &c.nodes {
        support::cluster::docker_ok(&["exec", n, "docker", "pull", "-q", &old_image]);
    }
    // Packets to the registry rejected (an idle keep-alive connection of
    // an engine included), as if the network to it were down.
    let reg_ip = support::cluster::docker_ok(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        c.registry_nodes.split(':').next().unwrap(),
    ]);
    let rule = format!(
        "OUTPUT -d {} -p tcp --dport 5000 -j REJECT --reject-with tcp-reset",
        reg_ip.trim()
    );
    struct Heal<'a>(&'a str, String);
    impl Drop for Heal<'_> {
        fn drop(&mut self) {
            support::cluster::sh(
                "docker",
                &[
                    "exec",
                    self.0,
                    "sh",
                    "-c",
                    &format!("iptables -D {}", self.1),
                ],
            );
        }
    }
    let mut _heal = Vec::new();
    for n in &c.nodes[1..] {
        support::cluster::docker_ok(&["exec", n, "sh", "-c", &format!("iptables -I {rule}")]);
        _heal.push(Heal(n, rule.clone()));
    }
    // No one-off job before the web update (the file's create-site could
    // land on that node first): the site exists already.
    let compose = s.p.read("compose.swarm.yaml");
    let (head, rest) = compose.split_once("  # One-off:").unwrap();
    let (_, tail) = rest.split_once("  backend:").unwrap();
    s.p.write("compose.swarm.yaml", &format!("{head}  backend:{tail}"));

    let out = s.swarm(&["deploy", "1.0.1", "--no-migrate"]);
    out.code(3).clean();
    let error = out
        .stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap();
    eprintln!("{error}");
    // The message says the update stopped, which task failed on which node.
    for want in ["the update of", "No such image", "1.0.0 is serving again"] {
        assert!(error.contains(want), "{want}: {error}");
    }
    assert!(
        error.contains("rejected") && (error.contains(" on n2 ") || error.contains(" on n3 ")),
        "a worker is named: {error}"
    );
    let imgs = s.task_images("backend");
    assert!(
        imgs.len() == 2 && imgs.iter().all(|i| i.ends_with(&d0)),
        "{imgs:?}"
    );
    assert_eq!(get(s.lb.port), Some(200));
    let st = s.status();
    assert_eq!(st["consistent"], true, "{st:#}");
    assert_eq!(st["deployments"][0]["result"], "recovered");
}

/// The manager's engine restarted (as `systemctl restart docker` does)
/// while the migrate job runs: de-build waits for the manager within its
/// timeouts and then either completes the deploy, or (when the restart
/// stopped the job's task, which happens when it ran on the manager)
/// recovers, saying which job failed where; `status` tells the truth after.
#[test]
#[cfg_attr(
    no_engine,
    ignore = "no Docker engine answered when the tests were built"
)]
#[cfg_attr(
    not(no_engine),
    ignore = "the swarm suite, on its own: cargo test --test integration -- --ignored swarm:: --skip bench_swarm"
)]
fn a_manager_engine_restarted_mid_deploy_is_waited_for_then_completes_or_recovers() {
    let Some((c, _one)) = cluster("swarm_manager_restart") else {
        return;
    };
    let s = Sp::new(c, "mgr");
    s.release("1.0.0");
    s.swarm(&["deploy", "1.0.0"]).code(0);
    let before = s.patch_log();
    s.add_patch("demo.patches.v1_1.add_field");
    s.release("1.1.0");
    let (d0, d1) = (s.digest("1.0.0"), s.digest("1.1.0"));

    s.fault("migrate.sleep", Some("10"));
    let started = Instant::now();
    let child = s.command(&["deploy", "1.1.0"]).spawn().unwrap();
    let job = wait_for("the migrate job", Duration::from_secs(120), || {
        let out = c.docker(&["service", "ls", "--format", "{{.Name}}"]);
        out.stdout
            .lines()
            .find(|n| n.starts_with(&s.ns) && n.contains("de-build-migrate"))
            .map(str::to_string)
    });
    let job_node = wait_for("the migrate job's node", Duration::from_secs(60), || {
        let out = c.docker(&["service", "ps", "--format", "{{.Node}}", &job]);
        let node = out.stdout.trim().to_string();
        (out.code == 0 && !node.is_empty()).then_some(node)
    });
    c.restart_engine(1);
    let out = child.wait_with_output().unwrap();
    s.fault("migrate.sleep", None);
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let code = out.status.code();
    eprintln!("deploy with the manager restarted (migrate job on {job_node}): exit {code:?} after {took:?}\n{stderr}");
    assert!(
        stderr.contains("the swarm manager did not answer"),
        "the outage was seen and waited for: {stderr}"
    );
    assert!(
        stderr.contains("the swarm manager answers again"),
        "{stderr}"
    );
    assert!(took < Duration::from_secs(600), "took {took:?}");
    match code {
        Some(0) => {
            for svc in ["backend", "queue-short"] {
                let imgs = s.task_images(svc);
                assert!(
                    !imgs.is_empty() && imgs.iter().all(|i| i.ends_with(&d1)),
                    "{svc}: {imgs:?}"
                );
            }
            assert_eq!(s.patch_log().matches("v1_1.add_field").count(), 1);
        }
        Some(3) => {
            let error = stderr.lines().find(|l| l.starts_with("error:")).unwrap();
            assert!(
                error.contains("migrate` ") && error.contains(&format!("job on {job_node},")),
                "names the job and its node: {error}"
            );
            // A task stopped by the restart may report exit code 0: never
            // said as a clean exit.
            assert!(!error.contains("exited with 0"), "{error}");
            assert!(
                error.contains("1.0.0 is serving again, database restored"),
                "{error}"
            );
            assert_eq!(s.patch_log(), before);
            assert!(s.service_image("backend").ends_with(&d0));
        }
        other => panic!("exit {other:?}: neither completed nor recovered\n{stderr}"),
    }
    let st = wait_for("every task running again", Duration::from_secs(120), || {
        let st = s.status();
        (st["consistent"] == true).then_some(st)
    });
    assert_eq!(
        st["current"]["version"],
        if code == Some(0) { "1.1.0" } else { "1.0.0" },
        "{st:#}"
    );
    assert_eq!(get(s.lb.port), Some(200));

    // The manager away while a record is saved: the last save (right after
    // the health gate, which asks no manager) waits for it, and "deployed"
    // is said once the swarm holds the record. The gate is held until the
    // manager's engine is down, then let through.
    s.release("1.1.1");
    let gate = support::cluster::Gate::start();
    s.p.set_env(
        "DE_HEALTH_URL",
        &format!("http://127.0.0.1:{}/api/method/ping", gate.port),
    );
    let child = s
        .command(&["deploy", "1.1.1", "--no-migrate"])
        .spawn()
        .unwrap();
    wait_for("the health gate", Duration::from_secs(180), || {
        (gate.requests() > 0).then_some(())
    });
    let pid = c.stop_engine(1);
    wait_for(
        "the manager to stop answering",
        Duration::from_secs(60),
        || (c.docker(&["info", "--format", "{{.ID}}"]).code != 0).then_some(()),
    );
    gate.open();
    let out = child.wait_with_output().unwrap();
    c.wait_engine_back(1, &pid);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("deployed 1.1.1"), "{stdout}");
    assert!(
        stderr.contains("did not answer") && stderr.contains("while saving the record"),
        "{stderr}"
    );
    assert!(
        stderr.contains("the record is saved on the swarm"),
        "{stderr}"
    );
    let st = wait_for("every task running again", Duration::from_secs(120), || {
        let st = s.status();
        (st["consistent"] == true).then_some(st)
    });
    assert_eq!(st["current"]["version"], "1.1.1", "{st:#}");
    assert_eq!(st["deployments"][0]["result"], "succeeded", "{st:#}");
}

/// Real `bench restore` asks for the database root password (frappe_docker
/// keeps none in the sites; the stand-in's `.require_root_password` switch
/// does the same). On a swarm the restore job reads `DB_PASSWORD` on its
/// stdin from a swarm secret that exists only while the job runs: without
/// it the recovery stops at once naming the key (exit 4); with it `recover`
/// restores, and the password is in no service spec, secret inspect,
/// output, record or log.
#[test]
#[cfg_attr(
    no_engine,
    ignore = "no Docker engine answered when the tests were built"
)]
#[cfg_attr(
    not(no_engine),
    ignore = "the swarm suite, on its own: cargo test --test integration -- --ignored swarm:: --skip bench_swarm"
)]
fn a_swarm_restore_gets_the_root_password_from_a_secret_that_lives_as_long_as_its_job() {
    let Some((c, _one)) = cluster("swarm_root_password") else {
        return;
    };
    const ROOT: &str = "root-pw-canary-swarm-5150";
    let root_b64 = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(format!("{ROOT}\n"))
    };
    let s = Sp::new(c, "rootpw");
    s.release("1.0.0");
    s.swarm(&["deploy", "1.0.0"]).code(0);
    let before = s.patch_log();
    std::fs::write(
        s.sites().join(".require_root_password"),
        format!("{ROOT}\n"),
    )
    .unwrap();
    s.add_patch("demo.patches.v1_1.first");
    s.add_patch("fail:demo.patches.v1_1.broken");
    s.release("1.1.0");

    // No DB_PASSWORD: the prompt reads end-of-file; the recovery stops
    // there, in seconds, saying what to set.
    let t = Instant::now();
    s.swarm(&["deploy", "1.1.0"])
        .code(4)
        .clean()
        .stderr_has("MySQL root password")
        .stderr_has("set DB_PASSWORD");
    assert!(t.elapsed() < Duration::from_secs(180), "{:?}", t.elapsed());
    assert_ne!(s.patch_log(), before, "not restored yet");

    // With it: `recover` restores. The stand-in's sleep switch holds the
    // restore job while its spec and its secret are looked at.
    s.p.set_env("DB_PASSWORD", ROOT);
    s.fault("restore.sleep", Some("8"));
    let child = s.command(&["recover"]).spawn().unwrap();
    let job = wait_for("the restore job", Duration::from_secs(120), || {
        let out = c.docker(&["service", "ls", "--format", "{{.Name}}"]);
        out.stdout
            .lines()
            .find(|n| n.starts_with(&s.ns) && n.contains("de-build-restore"))
            .map(str::to_string)
    });
    let spec = c.docker_ok(&["service", "inspect", &job]);
    assert!(!spec.contains(ROOT) && !spec.contains(&root_b64), "{spec}");
    assert!(spec.contains("/run/secrets/de-build-stdin"), "{spec}");
    let secret = format!("{job}.stdin");
    let shown = c.docker_ok(&["secret", "inspect", &secret]);
    assert!(
        !shown.contains(ROOT) && !shown.contains(&root_b64),
        "{shown}"
    );
    assert!(shown.contains(&s.ns), "labelled with its stack: {shown}");
    let out = child.wait_with_output().unwrap();
    s.fault("restore.sleep", None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stdout}\n{stderr}");
    assert!(stderr.contains("database restored"), "{stderr}");
    for text in [&stdout, &stderr] {
        assert!(!text.contains(ROOT), "the password was printed: {text}");
    }
    assert_eq!(
        s.patch_log(),
        before,
        "restored: 1.1.0's first patch is undone"
    );
    // The secret lived as long as its job.
    let left = c.docker_ok(&["secret", "ls", "--format", "{{.Name}}"]);
    assert!(!left.lines().any(|n| n.starts_with(&s.ns)), "{left}");
    assert_eq!(get(s.lb.port), Some(200), "maintenance is off again");
    let st = s.status();
    assert_eq!(st["consistent"], true, "{st:#}");
    assert_eq!(st["current"]["version"], "1.0.0");
    let mut dirs = vec![s.p.path().join(".de-build")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                assert!(!text.contains(ROOT), "the password is in {}", p.display());
            }
        }
    }
    // Nor in the records on the swarm, which every operator reads.
    let records = s.record_configs();
    assert!(!records.is_empty());
    for (name, _) in records {
        let shown = c.docker_ok(&["config", "inspect", "--pretty", &name]);
        assert!(shown.contains("\"result\""), "{shown}");
        assert!(!shown.contains(ROOT), "the password is in config {name}");
    }
}

/// The numbers of bench/swarm.sh (run with `--ignored`): failed requests
/// during rolling updates without migrate (two web replicas behind the
/// balancer, a GET every 50 ms), and the wall time of a deploy with migrate
/// on the swarm against the same release on one host (compose).
#[test]
#[ignore]
fn bench_swarm() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let Some((c, _one)) = cluster("bench_swarm") else {
        return;
    };
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let s = Sp::new(c, "bench");
    s.release("1.0.0");
    s.swarm(&["deploy", "1.0.0"]).code(0);
    let mut prev = "1.0.0".to_string();
    for i in 1..=rounds {
        let v = format!("1.0.{i}");
        s.release(&v);
        let stop = Arc::new(AtomicBool::new(false));
        let (st, port) = (stop.clone(), s.lb.port);
        let probe = std::thread::spawn(move || {
            let mut answers = Vec::new();
            while !st.load(Ordering::SeqCst) {
                answers.push(get(port));
                std::thread::sleep(Duration::from_millis(50));
            }
            answers
        });
        let retried_before = s.lb.retried.load(Ordering::SeqCst);
        let t = Instant::now();
        s.swarm(&["deploy", &v, "--no-migrate"]).code(0);
        let took = t.elapsed().as_secs_f64();
        stop.store(true, Ordering::SeqCst);
        let answers = probe.join().unwrap();
        let failed = answers.iter().filter(|a| **a != Some(200)).count();
        println!(
            "swarm rolling update --no-migrate {prev} -> {v} (2 web replicas): {} requests, {failed} failed (goal 0), {} node attempts retried by the balancer, deploy {took:.1}s",
            answers.len(),
            s.lb.retried.load(Ordering::SeqCst) - retried_before
        );
        prev = v;
    }
    let steps = |d: &Done| -> String {
        d.json()["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                format!(
                    "{} {:.1}s",
                    s["step"].as_str().unwrap(),
                    s["seconds"].as_f64().unwrap()
                )
            })
            .collect::<Vec<_>>()
            .join(" · ")
    };
    s.add_patch("demo.patches.v1_1.add_field");
    s.release("1.1.0");
    let t = Instant::now();
    let out = s.swarm(&["--json", "deploy", "1.1.0"]);
    out.code(0);
    let swarm_t = t.elapsed().as_secs_f64();
    println!(
        "swarm deploy {prev} -> 1.1.0 with migrate: {swarm_t:.1}s ({})",
        steps(&out)
    );

    let h = support::stack::Stack::new("benchhost");
    h.build("1.0.0");
    h.run(&["deploy", "1.0.0"]).code(0);
    support::stack::add_patch(&h, "demo.patches.v1_1.add_field");
    h.build("1.1.0");
    let t = Instant::now();
    let out = h.run(&["--json", "deploy", "1.1.0"]);
    out.code(0);
    let host_t = t.elapsed().as_secs_f64();
    println!(
        "one host (compose) deploy 1.0.0 -> 1.1.0 with migrate: {host_t:.1}s ({})",
        steps(&out)
    );
    println!(
        "wall time swarm / one host: {:.1}x (3 nodes on one 2-core machine)",
        swarm_t / host_t
    );
}
