//! `de-build release` as a CI job runs it: `env -i` plus the needed variables,
//! no .env file, the real engine and a real registry on loopback.

use crate::support;
use std::process::Command;
use support::{docker, engine_available, ImageRepo, Project, Registry, CANARY};

/// Everything a CI job would set, from the demo's settings.
fn ci_env(
    repo: &ImageRepo,
    project: &str,
    port: u16,
    registry: Option<&str>,
) -> Vec<(String, String)> {
    let demo =
        std::fs::read_to_string(support::repo_root().join("examples/demo/demo.env")).unwrap();
    let mut env: Vec<(String, String)> = demo
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    let mut set = |k: &str, v: &str| {
        env.retain(|(a, _)| a != k);
        env.push((k.to_string(), v.to_string()));
    };
    set("DE_IMAGE", &repo.0);
    set("DOOR_IMAGE", &support::door_image());
    set("DE_MACRS_PAT", CANARY);
    set("COMPOSE_PROJECT_NAME", project);
    set(
        "DE_HEALTH_URL",
        &format!("http://127.0.0.1:{port}/api/method/ping"),
    );
    set("HTTP_PUBLISH_PORT", &port.to_string());
    set("DE_REGISTRY", registry.unwrap_or(""));
    set("CI", "true");
    env
}

struct CiProject {
    p: Project,
    env: Vec<(String, String)>,
    project: String,
}

impl CiProject {
    fn new(repo: &ImageRepo, name: &str, registry: Option<&str>) -> CiProject {
        let p = Project::demo(repo);
        std::fs::remove_file(p.path().join(".env")).unwrap(); // CI: no .env at all
        let project = format!("dbtrel{name}{}", std::process::id());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let env = ci_env(repo, &project, port, registry);
        CiProject { p, env, project }
    }

    /// `env -i` + the CI variables + PATH/HOME, nothing else.
    fn run(&self, version: &str, args: &[&str]) -> support::Done {
        let out = Command::new(env!("CARGO_BIN_EXE_de-build"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap())
            .env(
                "HOME",
                std::env::var("HOME").unwrap_or_else(|_| "/root".into()),
            )
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("DE_SITE_VERSION", version)
            .arg("--project-dir")
            .arg(self.p.path())
            .args(args)
            .output()
            .unwrap();
        support::Done::from(out)
    }
}

impl Drop for CiProject {
    fn drop(&mut self) {
        support::remove_project(&self.project);
    }
}

#[test]
#[cfg_attr(
    no_engine,
    ignore = "no Docker engine answered when the tests were built"
)]
fn ci_release_pushes_records_the_digest_and_rollback_pulls_it_back() {
    if !engine_available("ci_release") {
        return;
    }
    let Some(reg) = Registry::start() else { return };
    let repo = ImageRepo::new("release");
    // The registry-prefixed tags a push leaves on this machine.
    let _pushed = ImageRepo(format!("{}/{}", reg.addr, repo.0));
    let ci = CiProject::new(&repo, "push", Some(&reg.addr));

    let out = ci.run("1.0.0", &["--json", "release", "--offline", "--deploy"]);
    out.code(0).no_leak(CANARY);
    let j = out.json();
    assert_eq!(j["result"], "deployed");
    let pushed = j["pushed_digest"].as_str().unwrap().to_string();
    assert!(
        pushed.starts_with(&format!("{}/{}@sha256:", reg.addr, repo.0)),
        "{pushed}"
    );
    for phase in ["check", "build", "push", "manifest", "deploy"] {
        assert!(
            j["durations"][phase].is_number(),
            "phase {phase} timed: {j}"
        );
    }
    let m: serde_json::Value = serde_json::from_str(&ci.p.read("releases/1.0.0.json")).unwrap();
    assert_eq!(m["registry"]["digest_ref"], pushed.as_str());
    assert!(reg.tags(&repo.0).contains("1.0.0"));
    let v1_id = m["image"]["id"].as_str().unwrap().to_string();

    let patches = ci.p.read("patches.txt") + "demo.patches.v2.next\n";
    ci.p.write("patches.txt", &patches);
    ci.run("2.0.0", &["--json", "release", "--offline", "--deploy"])
        .code(0);

    // The image of 1.0.0 is gone from this machine: rollback pulls it by digest.
    docker(&["rmi", "-f", &v1_id]).code(0);
    assert!(docker(&["image", "inspect", &v1_id]).code != 0);
    let out = ci.run("2.0.0", &["rollback"]);
    out.code(0)
        .stderr_has("pulling")
        .stdout_has("rolled back to 1.0.0");
    let backend = docker(&[
        "ps",
        "--filter",
        &format!("label=com.docker.compose.project={}", ci.project),
        "--filter",
        "label=com.docker.compose.service=backend",
        "--format",
        "{{.Image}}",
    ]);
    assert_eq!(backend.stdout.trim(), format!("{}:1.0.0", repo.0));
    assert_eq!(
        docker(&[
            "image",
            "inspect",
            "--format",
            "{{.Id}}",
            &format!("{}:1.0.0", repo.0)
        ])
        .stdout
        .trim(),
        v1_id
    );

    // A pushed tag is immutable: another image under 3.0.0 in the registry is refused.
    docker(&["tag", &v1_id, &format!("{}/{}:3.0.0", reg.addr, repo.0)]).code(0);
    docker(&["push", &format!("{}/{}:3.0.0", reg.addr, repo.0)]).code(0);
    let patches = ci.p.read("patches.txt") + "demo.patches.v3.other\n";
    ci.p.write("patches.txt", &patches);
    let out = ci.run("3.0.0", &["release", "--offline"]);
    out.code(1)
        .stderr_has("tags are immutable")
        .stderr_has("de-build push 3.0.0");

    // The token is nowhere: manifests, state, logs.
    for f in ci.p.all_files() {
        let text = String::from_utf8_lossy(&std::fs::read(&f).unwrap()).to_string();
        assert!(!text.contains(CANARY), "token in {}", f.display());
    }
}

/// This file's part of the live-stack suite (README, "The live-stack suite").
mod live {
    use super::*;

    #[test]
    #[cfg_attr(
        no_engine,
        ignore = "no Docker engine answered when the tests were built"
    )]
    #[cfg_attr(
        not(no_engine),
        ignore = "the live-stack suite, apart: cargo test --test integration -- --ignored live::"
    )]
    fn release_exit_codes_follow_the_table() {
        if !engine_available("release_exit_codes") {
            return;
        }
        let repo = ImageRepo::new("codes");
        let ci = CiProject::new(&repo, "codes", None);
        // 2: invalid input.
        ci.run("not-semver", &["release", "--offline"])
            .code(2)
            .stderr_has("not a semantic version");
        // 1: engine unreachable.
        let mut dead = CiProject::new(&repo, "dead", None);
        dead.env.push((
            "DOCKER_HOST".into(),
            "unix:///nonexistent/docker.sock".into(),
        ));
        dead.run("1.0.0", &["release", "--offline"])
            .code(1)
            .stderr_has("Docker engine");
        // 0: released and deployed.
        ci.run("1.0.0", &["release", "--offline", "--deploy"])
            .code(0);
        // 3: the deploy fails (a failing patch) and 1.0.0 is recovered.
        let patches = ci.p.read("patches.txt") + "fail:demo.patches.v2.broken\n";
        ci.p.write("patches.txt", &patches);
        ci.run("2.0.0", &["--json", "release", "--offline", "--deploy"])
            .code(3);
        // 5: another deployment holds the lock.
        let (user, host) = (
            std::env::var("USER").unwrap_or_default(),
            std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default(),
        );
        let holder = serde_json::json!({"user": user, "host": host.trim(), "pid": std::process::id(), "command": "deploy", "version": "9.9.9", "since": "now"});
        // A live holder: the OS lock on .de-build/lock, held by this test process.
        ci.p.write(".de-build/lock.json", &holder.to_string());
        let held = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(ci.p.path().join(".de-build/lock"))
            .unwrap();
        held.try_lock().unwrap();
        let patches =
            ci.p.read("patches.txt")
                .replace("fail:demo.patches.v2.broken\n", "demo.patches.v3.ok\n");
        ci.p.write("patches.txt", &patches);
        ci.run("3.0.0", &["release", "--offline", "--deploy"])
            .code(5)
            .stderr_has("another deployment holds the lock");
        drop(held);
        std::fs::remove_file(ci.p.path().join(".de-build/lock.json")).unwrap();
        // 4: recovery impossible (the running release's recorded compose file is damaged).
        let status = ci.run("3.0.0", &["--json", "status"]);
        let snap = status.json()["current"]["compose_file"]
            .as_str()
            .unwrap()
            .to_string();
        std::fs::write(&snap, "services: [broken\n").unwrap();
        let patches = ci.p.read("patches.txt") + "fail:demo.patches.v4.broken\n";
        ci.p.write("patches.txt", &patches);
        ci.run("4.0.0", &["release", "--offline", "--deploy"])
            .code(4)
            .stderr_has("recovery failed too");
    }
}
