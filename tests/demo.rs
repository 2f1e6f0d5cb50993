//! The README's first command, end to end: `examples/demo/run --clean` runs
//! the whole job (check, build, deploy, a second release with a migrate,
//! diff, deploy, rollback, status) in a throw-away copy of the demo, leaves
//! this checkout as it was, and removes every container, volume, network and
//! image it made.

use crate::support;
use std::process::Command;
use support::{docker, engine_available, repo_root};

/// What git sees in the checkout, untracked and ignored files included:
/// a demo that wrote into `examples/demo/` or `releases/` shows up here.
fn checkout_state() -> String {
    let out = Command::new("git")
        .args([
            "status",
            "--porcelain",
            "--untracked-files=all",
            "--ignored",
        ])
        .args(["--", "examples", "releases", ".de-build", ".env"])
        .current_dir(repo_root())
        .output()
        .expect("run git");
    assert!(out.status.success(), "git status failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn listed(args: &[&str]) -> Vec<String> {
    let out = docker(args);
    assert_eq!(out.code, 0, "docker {args:?}: {}", out.stderr);
    out.stdout.lines().map(str::to_string).collect()
}

#[test]
#[cfg_attr(
    no_engine,
    ignore = "no Docker engine answered when the tests were built"
)]
fn demo_runs_the_whole_job_and_leaves_nothing_behind() {
    if !engine_available("demo_runs_the_whole_job_and_leaves_nothing_behind") {
        return;
    }
    if !std::path::Path::new("/bin/busybox").exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "/bin/busybox (busybox-static) is needed in CI"
        );
        eprintln!("skipped: /bin/busybox missing (apt-get install busybox-static)");
        return;
    }
    let id = format!("t{}", std::process::id());
    let project = format!("dedemo{id}");
    let repo = format!("de-build-demo-{id}/erpnext");
    let before = checkout_state();

    let out = Command::new(repo_root().join("examples/demo/run"))
        .arg("--clean")
        .env("DE_BUILD_BIN", env!("CARGO_BIN_EXE_de-build"))
        .env("DEMO_ID", &id)
        .env("NO_COLOR", "1")
        // A key of the demo's schema set by the caller must not leak in.
        .env("DE_SITE_VERSION", "9.9.9")
        .env("COMPOSE_PROJECT_NAME", "not-the-demo")
        .current_dir(repo_root())
        .output()
        .expect("run examples/demo/run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let all = format!("{stdout}\n--- stderr\n{stderr}");
    assert_eq!(out.status.code(), Some(0), "{all}");

    // The whole job, each step with its result and duration.
    for (i, title) in [
        "check the configuration",
        "build release 1.0.0",
        "deploy 1.0.0",
        "build release 1.0.1",
        "what changed from 1.0.0 to 1.0.1",
        "deploy 1.0.1",
        "build release 1.0.2",
        "deploy 1.0.2 (no migrate",
        "roll back to 1.0.0",
        "status",
        "releases recorded",
    ]
    .iter()
    .enumerate()
    {
        assert!(
            stdout.contains(&format!("── {}/11 {title}", i + 1)),
            "step {title} missing:\n{all}"
        );
    }
    assert_eq!(stdout.matches("   -> ok in ").count(), 11, "{all}");
    // Its own names, not the caller's environment.
    assert!(all.contains(&format!("project {project}")), "{all}");
    assert!(all.contains(&format!("{repo}:1.0.1")), "{all}");
    assert!(
        !all.contains("9.9.9") && !all.contains("not-the-demo"),
        "{all}"
    );
    // The second release migrates its new patch; the diff sees the new image;
    // the rollback says the database stays migrated; status agrees.
    assert!(
        all.contains("Executing demo.patches.v1_0_1.add_demo_field"),
        "{all}"
    );
    assert!(
        all.contains("~ image content (layers + runtime config)"),
        "{all}"
    );
    assert!(
        all.contains("the database stays as") && all.contains("migrated it"),
        "{all}"
    );
    assert!(
        all.contains("consistent: records and engine agree"),
        "{all}"
    );
    assert!(all.contains(r#"answers: {"message":"pong"}"#), "{all}");
    // 1.0.2 changed no schema: it started beside 1.0.1 and the door switched.
    assert!(all.contains("schema unchanged since 1.0.1"), "{all}");
    assert!(all.contains("retired "), "{all}");

    // The checkout is as it was: no release, state or busybox copy added.
    assert_eq!(checkout_state(), before, "the demo changed the checkout");

    // Everything it made is gone.
    let label = format!("label=com.docker.compose.project={project}");
    assert!(
        listed(&["ps", "-aq", "--filter", &label]).is_empty(),
        "{all}"
    );
    assert!(
        listed(&["volume", "ls", "-q", "--filter", &label]).is_empty(),
        "{all}"
    );
    assert!(
        listed(&["network", "ls", "-q", "--filter", &label]).is_empty(),
        "{all}"
    );
    assert!(listed(&["image", "ls", "-q", &repo]).is_empty(), "{all}");
    let door = format!("de-build-demo-{id}/door");
    assert!(listed(&["image", "ls", "-q", &door]).is_empty(), "{all}");
    let dir = stderr
        .lines()
        .find_map(|l| l.strip_prefix(&format!("demo: demo {id} in ")))
        .unwrap_or_else(|| panic!("no demo directory announced:\n{all}"));
    assert!(!std::path::Path::new(dir).exists(), "{dir} is still there");
}
