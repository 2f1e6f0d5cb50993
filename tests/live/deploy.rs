//! deploy / rollback against the real engine and the real docker-compose,
//! with the demo image: migrate applies patches to a log in the sites volume,
//! backup/restore copy it, maintenance is a flag file served as 503.

use crate::support;
use std::process::Command;
use support::stack::{add_patch, Stack};
use support::{docker, engine_available, CANARY};

#[test]
#[cfg_attr(
    no_engine,
    ignore = "no Docker engine answered when the tests were built"
)]
#[cfg_attr(
    not(no_engine),
    ignore = "the live-stack suite, apart: cargo test --test integration -- --ignored live::"
)]
fn deploy_v1_then_v2_migrates_once_and_records() {
    if !engine_available("deploy_v1_then_v2") {
        return;
    }
    let s = Stack::new("two");
    s.build("1.0.0");
    add_patch(&s, "demo.patches.v1_1.add_field");
    s.build("1.1.0");

    s.run(&["deploy", "1.0.0"])
        .code(0)
        .clean()
        .stdout_has("deployed 1.0.0");
    assert_eq!(s.http(), "200");
    let dry = s.run(&["deploy", "1.1.0", "--dry-run"]);
    // With the demo's door, a migrating release moves its frontend first,
    // then maintenance covers drain, backup, migrate and the cut-over.
    dry.code(0)
        .stdout_has("2. start 1.1.0's frontend beside the running one")
        .stdout_has("9. maintenance mode on")
        .stdout_has("back up the sites")
        .stdout_has("13. cut over")
        .stdout_has("health gate, still in maintenance")
        .stdout_has("dry run");
    // The app containers (the door runs its own image and stays).
    let old_ids: String = docker(&[
        "ps",
        "-aq",
        "--no-trunc",
        "--filter",
        &format!("label=com.docker.compose.project={}", s.project),
        "--filter",
        &format!("ancestor={}:1.0.0", s.repo.0),
    ])
    .stdout;
    // The logs volume (anonymous, as in frappe_docker's images) survives.
    s.exec("echo before-upgrade > logs/marker.log");
    let out = s.run(&["deploy", "1.1.0"]);
    out.code(0)
        .clean()
        .stdout_has("deployed 1.1.0 (was 1.0.0)")
        .stderr_has("Executing demo.patches.v1_1.add_field");
    assert_eq!(s.http(), "200");
    assert_eq!(s.backend_image(), format!("{}:1.1.0", s.repo.0));
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
    // Every app container is new; the logs carried over.
    let new_ids = docker(&[
        "ps",
        "-aq",
        "--no-trunc",
        "--filter",
        &format!("label=com.docker.compose.project={}", s.project),
    ])
    .stdout;
    for id in old_ids.lines() {
        assert!(!new_ids.contains(id), "container {id} survived the deploy");
    }
    // The switch removed the old backend with its anonymous logs volume,
    // after keeping its files in the new one's, under logs/<version>-<id>/.
    assert_eq!(
        s.exec("cat logs/1.0.0-*/marker.log").trim(),
        "before-upgrade"
    );
    out.stderr_has("log file(s) of");
    assert!(s
        .exec("cat assets/release-patches.txt")
        .contains("v1_1.add_field"));

    let st = s.status();
    assert_eq!(st["consistent"], true, "{st}");
    assert_eq!(st["current"]["version"], "1.1.0");
    assert_eq!(st["previous_version"], "1.0.0");
    assert_eq!(st["deployments"][0]["backups"].as_array().unwrap().len(), 1);
    let audit = s.p.read(".de-build/audit.log");
    let lines: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["version"], "1.1.0");
    assert_eq!(lines[1]["result"], "succeeded");
    assert!(s
        .p
        .path()
        .join(format!(
            ".de-build/logs/{}.log",
            lines[1]["deployment"].as_str().unwrap()
        ))
        .exists());
}

#[test]
#[cfg_attr(
    no_engine,
    ignore = "no Docker engine answered when the tests were built"
)]
#[cfg_attr(
    not(no_engine),
    ignore = "the live-stack suite, apart: cargo test --test integration -- --ignored live::"
)]
fn a_renamed_service_leaves_no_container_behind() {
    if !engine_available("renamed_service") {
        return;
    }
    let s = Stack::new("rename");
    s.build("1.0.0");
    s.run(&["deploy", "1.0.0"]).code(0);
    assert!(s.containers().iter().any(|(svc, _)| svc == "queue-short"));
    // The release renames queue-short; the compose file on disk changes with it.
    s.p.write(
        "compose.yaml",
        &s.p.read("compose.yaml")
            .replace("queue-short:", "worker-short:"),
    );
    add_patch(&s, "demo.patches.v2.rename");
    s.build("2.0.0");
    s.run(&["deploy", "2.0.0"]).code(0);
    let services: Vec<String> = s.containers().into_iter().map(|(svc, _)| svc).collect();
    assert!(
        !services.contains(&"queue-short".to_string()),
        "{services:?}"
    );
    assert!(
        services.contains(&"worker-short".to_string()),
        "{services:?}"
    );
    // And back, the classic way: full down with 2.0.0's recorded file, then up.
    s.run(&["rollback", "1.0.0", "--full-down", "--dry-run"])
        .code(0)
        .stdout_has("compose down 2.0.0");
    s.run(&["-q", "rollback", "1.0.0", "--full-down"]).code(0);
    let services: Vec<String> = s.containers().into_iter().map(|(svc, _)| svc).collect();
    assert!(
        !services.contains(&"worker-short".to_string()),
        "{services:?}"
    );
    assert!(
        services.contains(&"queue-short".to_string()),
        "{services:?}"
    );
    assert_eq!(s.http(), "200");
}

#[test]
#[cfg_attr(
    no_engine,
    ignore = "no Docker engine answered when the tests were built"
)]
#[cfg_attr(
    not(no_engine),
    ignore = "the live-stack suite, apart: cargo test --test integration -- --ignored live::"
)]
fn a_failing_patch_recovers_the_previous_release() {
    if !engine_available("failing_patch") {
        return;
    }
    let s = Stack::new("patch");
    s.build("1.0.0");
    s.run(&["deploy", "1.0.0"]).code(0);
    s.exec("echo precious > sites/demo.localhost/data.txt");
    let log_before = s.patch_log();
    add_patch(&s, "demo.patches.v2.fine");
    add_patch(&s, "fail:demo.patches.v2.broken");
    s.build("2.0.0");

    let out = s.run(&["deploy", "2.0.0"]);
    out.code(3)
        .clean()
        .stderr_has("Patch fail:demo.patches.v2.broken failed")
        .stderr_has("1.0.0 is serving again");
    assert_eq!(s.backend_image(), format!("{}:1.0.0", s.repo.0));
    assert_eq!(s.http(), "200", "maintenance mode is off again");
    assert_eq!(
        s.patch_log(),
        log_before,
        "the half-applied patch log was restored"
    );
    assert_eq!(
        s.exec("cat sites/demo.localhost/data.txt").trim(),
        "precious"
    );
    let st = s.status();
    assert_eq!(st["current"]["version"], "1.0.0");
    assert_eq!(st["deployments"][0]["result"], "recovered");
    // The next deploy still brings 1.0.0 down with 1.0.0's recorded file.
    assert!(st["current"]["compose_file"]
        .as_str()
        .unwrap()
        .contains(".de-build/compose/"));
}

#[test]
#[cfg_attr(
    no_engine,
    ignore = "no Docker engine answered when the tests were built"
)]
#[cfg_attr(
    not(no_engine),
    ignore = "the live-stack suite, apart: cargo test --test integration -- --ignored live::"
)]
fn a_backend_that_does_not_answer_fails_the_health_gate_and_recovers() {
    if !engine_available("health_gate") {
        return;
    }
    // The replace path's gate (with a door, the direct probe before
    // maintenance stops such a release: tests/live/switch.rs).
    let s = Stack::new("health").without_door();
    s.build("1.0.0");
    s.run(&["deploy", "1.0.0"]).code(0);
    let good = s.p.read("compose.yaml");
    s.p.write(
        "compose.yaml",
        &good.replace(
            "  backend:\n    <<: *backend_defaults\n",
            "  backend:\n    <<: *backend_defaults\n    command: [\"sh\", \"-c\", \"exec sleep 2147483647\"]\n",
        ),
    );
    add_patch(&s, "demo.patches.v2.silent");
    s.build("2.0.0");
    s.p.set_env("DE_HEALTH_TIMEOUT", "3");
    let out = s.run(&["deploy", "2.0.0"]);
    // The gate runs while still in maintenance: no user reached 2.0.0, so the
    // pre-deploy backup is restored (2.0.0's migrate is undone).
    out.code(3)
        .stderr_has("did not answer 2xx or the maintenance 503 within 3s")
        .stderr_has("database restored from the pre-deploy backup");
    assert_eq!(s.backend_image(), format!("{}:1.0.0", s.repo.0));
    assert_eq!(s.http(), "200");
    assert!(!s.patch_log().contains("demo.patches.v2.silent"));
    assert_eq!(s.status()["consistent"], true);
}

#[test]
#[cfg_attr(
    no_engine,
    ignore = "no Docker engine answered when the tests were built"
)]
#[cfg_attr(
    not(no_engine),
    ignore = "the live-stack suite, apart: cargo test --test integration -- --ignored live::"
)]
fn rollback_goes_back_and_refuses_unknown_versions() {
    if !engine_available("rollback") {
        return;
    }
    let s = Stack::new("rollback");
    s.build("1.0.0");
    add_patch(&s, "demo.patches.v1_1.x");
    s.build("1.1.0");
    s.run(&["-q", "deploy", "1.0.0"]).code(0);
    s.run(&["-q", "deploy", "1.1.0"]).code(0);
    assert!(s.patch_log().contains("v1_1.x"));
    // This deployment backed up the database as 1.0.0 left it.
    let upgrade = s.status()["deployments"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let out = s.run(&["rollback"]);
    out.code(0).stdout_has("rolled back to 1.0.0 (was 1.1.0)");
    assert_eq!(s.backend_image(), format!("{}:1.0.0", s.repo.0));
    assert_eq!(s.http(), "200");
    assert!(
        s.patch_log().contains("v1_1.x"),
        "no migrate, no restore: the data stays"
    );
    // Forward again, then back with the database as it was before 1.1.0 migrated it.
    s.run(&["-q", "deploy", "1.1.0"]).code(0);
    s.run(&["rollback", "1.0.0", "--restore-backup", &upgrade])
        .code(0)
        .stderr_has("restore 1 backup(s)");
    assert!(
        !s.patch_log().contains("v1_1.x"),
        "the backup of that deployment was restored"
    );
    s.run(&["rollback", "--restore-backup", "no-such-deployment"])
        .code(2)
        .stderr_has("no deployment no-such-deployment");
    s.run(&["rollback", "9.9.9"])
        .code(2)
        .clean()
        .stderr_has("release 9.9.9 was never recorded")
        .stderr_has("recorded releases: 1.1.0, 1.0.0");
    // An image that is gone is refused with the way back.
    docker(&["rmi", "-f", &format!("{}:1.1.0", s.repo.0)]);
    s.run(&["rollback", "1.1.0"])
        .code(2)
        .stderr_has("is gone from this engine")
        .stderr_has("rebuild it from its manifest");
}

#[test]
#[cfg_attr(
    no_engine,
    ignore = "no Docker engine answered when the tests were built"
)]
#[cfg_attr(
    not(no_engine),
    ignore = "the live-stack suite, apart: cargo test --test integration -- --ignored live::"
)]
fn two_deploys_at_once_and_a_stale_lock() {
    if !engine_available("locks") {
        return;
    }
    let s = Stack::new("lock");
    s.build("1.0.0");
    let lock = s.p.path().join(".de-build/lock.json");
    let mut first = Command::new(env!("CARGO_BIN_EXE_de-build"))
        .args([
            "--project-dir",
            s.p.path().to_str().unwrap(),
            "-q",
            "deploy",
            "1.0.0",
        ])
        .env("HTTP_PUBLISH_PORT", s.port.to_string())
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait (bounded) for the first deploy to hold the lock.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !lock.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20)); // polling a condition, bounded by the deadline
    }
    assert!(lock.exists(), "first deploy never took the lock");
    let out = s.run(&["deploy", "1.0.0"]);
    out.code(5)
        .stderr_has("another deployment holds the lock")
        .stderr_has("`deploy` of 1.0.0");
    // Wait (bounded) until its record exists too, then kill -9 it: nothing
    // can be handled, so everything must be detected.
    let records = s.p.path().join(".de-build/deployments");
    while std::fs::read_dir(&records).map(|d| d.count()).unwrap_or(0) == 0
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(20)); // polling a condition, bounded by the deadline
    }
    first.kill().unwrap();
    first.wait().unwrap();
    // Only the first deploy's record exists: the refused one wrote nothing.
    for e in std::fs::read_dir(&records).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().to_string();
        assert!(name.ends_with(&format!("-{}.json", first.id())), "{name}");
    }
    // The OS lock died with the process: status knows for sure, and names
    // the unfinished deployment.
    s.run(&["status"])
        .code(1)
        .stdout_has("a process that is gone")
        .stdout_has("did not finish")
        .stdout_has("de-build recover");
    s.run(&["deploy", "1.0.0"])
        .code(2)
        .stderr_has("was interrupted")
        .stderr_has("de-build recover");
    s.run(&["recover", "--dry-run"])
        .code(0)
        .stdout_has("dry run");
    s.run(&["recover"]).code(3);
    let st = s.status();
    assert_eq!(st["consistent"], true, "{st}");
    assert_eq!(st["lock"]["state"], "free");
    assert!(!lock.exists());
    s.run(&["-q", "deploy", "1.0.0"]).code(0);
}

#[test]
#[cfg_attr(
    no_engine,
    ignore = "no Docker engine answered when the tests were built"
)]
#[cfg_attr(
    not(no_engine),
    ignore = "the live-stack suite, apart: cargo test --test integration -- --ignored live::"
)]
fn the_token_reaches_no_record_log_or_container() {
    if !engine_available("deploy_canary") {
        return;
    }
    let s = Stack::new("canary");
    s.build("1.0.0");
    // CI style: the token also sits in the process environment.
    let out =
        s.p.run()
            .env("HTTP_PUBLISH_PORT", &s.port.to_string())
            .env("DE_MACRS_PAT", CANARY)
            .args(&["deploy", "1.0.0"])
            .output();
    out.code(0).no_leak(CANARY);
    for f in s.p.all_files() {
        if f.ends_with(".env") {
            continue;
        }
        let text = String::from_utf8_lossy(&std::fs::read(&f).unwrap()).to_string();
        assert!(!text.contains(CANARY), "token in {}", f.display());
    }
    let label = format!("label=com.docker.compose.project={}", s.project);
    for id in docker(&["ps", "-aq", "--filter", &label]).stdout.lines() {
        let i = docker(&["inspect", id]);
        assert!(!i.stdout.contains(CANARY), "token in container {id}");
    }
}

#[test]
#[cfg_attr(
    no_engine,
    ignore = "no Docker engine answered when the tests were built"
)]
#[cfg_attr(
    not(no_engine),
    ignore = "the live-stack suite, apart: cargo test --test integration -- --ignored live::"
)]
fn when_recovery_fails_too_it_says_what_is_left() {
    if !engine_available("fatal") {
        return;
    }
    let s = Stack::new("fatal");
    s.build("1.0.0");
    s.run(&["-q", "deploy", "1.0.0"]).code(0);
    add_patch(&s, "fail:demo.patches.v2.broken");
    s.build("2.0.0");
    // The recorded compose file of 1.0.0 is damaged: 1.0.0 cannot come back.
    let snap = s.status()["current"]["compose_file"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::write(&snap, "services: [this is not compose\n").unwrap();
    let out = s.run(&["deploy", "2.0.0"]);
    out.code(4)
        .clean()
        .stderr_has("recovery failed too")
        .stderr_has("bring 1.0.0 back up failed")
        .stderr_has("set-maintenance-mode off");
    let out = s.run(&["--json", "status"]);
    out.code(1);
    let st: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(st["consistent"], false);
    assert_eq!(st["deployments"][0]["result"], "fatal");
    assert!(st["deployments"][0]["left"]
        .as_str()
        .unwrap()
        .contains("CUSTOM_TAG=1.0.0"));
    s.run(&["status"])
        .code(1)
        .stdout_has("left to do:")
        .stdout_has("recovery did not finish");
    // A new deploy refuses until the failed recovery is finished.
    s.run(&["deploy", "1.0.0"])
        .code(2)
        .stderr_has("de-build recover");
    // The recorded compose file of 1.0.0 is still damaged: recover says so again.
    s.run(&["recover"])
        .code(4)
        .stderr_has("bring 1.0.0 back up failed");
}

#[test]
#[cfg_attr(
    no_engine,
    ignore = "no Docker engine answered when the tests were built"
)]
#[cfg_attr(
    not(no_engine),
    ignore = "the live-stack suite, apart: cargo test --test integration -- --ignored live::"
)]
fn prune_never_removes_a_rollback_target() {
    if !engine_available("prune") {
        return;
    }
    let s = Stack::new("prune");
    for v in ["1.0.0", "1.1.0", "1.2.0", "1.3.0"] {
        add_patch(&s, &format!("demo.patches.{v}"));
        s.build(v);
    }
    let ids: Vec<String> = ["1.0.0", "1.1.0", "1.2.0", "1.3.0"]
        .iter()
        .map(|v| s.repo.id_of(v).unwrap())
        .collect();
    add_patch(&s, "demo.patches.1.3.0.fix");
    s.run(&["-q", "build", "--offline", "--replace"]).code(0);
    let superseded = ids[3].clone();
    // An image de-build did not build, in the same repository.
    let manual = tempfile::tempdir().unwrap();
    std::fs::write(
        manual.path().join("Dockerfile"),
        "FROM scratch\nCOPY f /f\n",
    )
    .unwrap();
    std::fs::write(manual.path().join("f"), "x").unwrap();
    docker(&[
        "build",
        "-q",
        "-t",
        &format!("{}:manual", s.repo.0),
        manual.path().to_str().unwrap(),
    ])
    .code(0);
    s.run(&["-q", "deploy", "1.0.0"]).code(0);
    s.run(&["-q", "deploy", "1.1.0"]).code(0);

    let dry = s.run(&["--json", "prune", "--keep", "1", "--dry-run"]);
    dry.code(0);
    let removed: Vec<String> = dry.json()["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(removed, vec![ids[2].clone()], "only 1.2.0 may go");
    assert!(s.repo.id_of("1.2.0").is_some(), "dry run removes nothing");

    s.run(&["prune", "--keep", "1"])
        .code(0)
        .stdout_has("removed 1 image(s)");
    assert_eq!(s.repo.id_of("1.2.0"), None);
    assert_eq!(
        s.repo.id_of("1.0.0").as_deref(),
        Some(ids[0].as_str()),
        "previous deployment kept"
    );
    assert_eq!(
        s.repo.id_of("1.1.0").as_deref(),
        Some(ids[1].as_str()),
        "current deployment kept"
    );
    assert!(s.repo.id_of("1.3.0").is_some(), "newest release kept");
    assert!(
        docker(&["image", "inspect", &superseded]).code == 0,
        "recovery image kept"
    );
    assert!(
        s.repo.id_of("manual").is_some(),
        "images de-build did not build are left alone"
    );
}

#[test]
#[cfg_attr(
    no_engine,
    ignore = "no Docker engine answered when the tests were built"
)]
#[cfg_attr(
    not(no_engine),
    ignore = "the live-stack suite, apart: cargo test --test integration -- --ignored live::"
)]
fn ctrl_c_stops_recovers_and_releases_the_lock() {
    if !engine_available("ctrl_c") {
        return;
    }
    let s = Stack::new("sigint");
    s.build("1.0.0");
    s.run(&["-q", "deploy", "1.0.0"]).code(0);
    add_patch(&s, "demo.patches.v2");
    s.build("2.0.0");
    let lock = s.p.path().join(".de-build/lock.json");
    let child = Command::new(env!("CARGO_BIN_EXE_de-build"))
        .args([
            "--project-dir",
            s.p.path().to_str().unwrap(),
            "deploy",
            "2.0.0",
        ])
        .env("HTTP_PUBLISH_PORT", s.port.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !lock.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10)); // polling a condition, bounded
    }
    assert!(lock.exists(), "the deploy never took the lock");
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let out = support::Done::from(child.wait_with_output().unwrap());
    assert!(
        matches!(out.code, 1 | 3),
        "interrupted deploy exits 1 (nothing changed) or 3 (recovered):\n{}",
        out.stderr
    );
    out.stderr_has("interrupt");
    assert!(!lock.exists(), "Ctrl-C releases the lock");
    let st = s.status();
    let result = st["deployments"][0]["result"].as_str().unwrap().to_string();
    assert!(result == "aborted" || result == "recovered", "{result}");
    assert_eq!(st["current"]["version"], "1.0.0");
    assert_eq!(s.http(), "200", "1.0.0 serves, maintenance off");
}

#[test]
#[cfg_attr(
    no_engine,
    ignore = "no Docker engine answered when the tests were built"
)]
#[cfg_attr(
    not(no_engine),
    ignore = "the live-stack suite, apart: cargo test --test integration -- --ignored live::"
)]
fn a_recorded_stack_that_was_stopped_is_still_replaced() {
    if !engine_available("stopped_stack") {
        return;
    }
    let s = Stack::new("stopped");
    s.build("1.0.0");
    add_patch(&s, "demo.patches.v2");
    s.build("2.0.0");
    s.run(&["-q", "deploy", "1.0.0"]).code(0);
    // Someone stops the stack by hand (or the host rebooted).
    for id in docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=com.docker.compose.project={}", s.project),
    ])
    .stdout
    .lines()
    {
        docker(&["rm", "-f", id]);
    }
    let out = s.run(&["deploy", "2.0.0"]);
    out.code(0)
        .stderr_has("is recorded as deployed but its backend is not running");
    assert_eq!(s.backend_image(), format!("{}:2.0.0", s.repo.0));
    assert_eq!(s.http(), "200");
}

#[test]
#[cfg_attr(
    no_engine,
    ignore = "no Docker engine answered when the tests were built"
)]
#[cfg_attr(
    not(no_engine),
    ignore = "the live-stack suite, apart: cargo test --test integration -- --ignored live::"
)]
fn a_stack_that_runs_another_image_fails_the_deploy_and_recovers() {
    if !engine_available("wrong_image") {
        return;
    }
    // The replace path (a switch checks the image of what it starts).
    let s = Stack::new("wrongimg").without_door();
    s.build("1.0.0");
    s.run(&["-q", "deploy", "1.0.0"]).code(0);
    add_patch(&s, "demo.patches.v2.wrong");
    s.build("2.0.0");
    // `check` refuses compose files that pin the tag, so the wrong image
    // must come from outside: while the deploy drains, someone moves the
    // 2.0.0 tag back to the 1.0.0 image (a manual `docker build -t`, another
    // checkout). Compose then brings 1.0.0 up under the name 2.0.0.
    let v1 = support::docker(&[
        "image",
        "inspect",
        "-f",
        "{{.Id}}",
        &format!("{}:1.0.0", s.repo.0),
    ])
    .stdout
    .trim()
    .to_string();
    s.exec("mkdir -p sites/.fault && echo 3 > sites/.fault/ready-for-migration.sleep");
    let child = s.spawn(&["deploy", "2.0.0"]);
    s.wait_progress("2.0.0", "maintenance_on");
    support::docker(&["tag", &v1, &format!("{}:2.0.0", s.repo.0)]).code(0);
    let done = child.wait_with_output().unwrap();
    let out = support::Done::from(done);
    s.exec("rm -rf sites/.fault");
    out.code(3)
        .stderr_has("the stack does not run 2.0.0")
        .stderr_has(&format!(
            "runs {}:2.0.0 {}",
            s.repo.0,
            &v1.trim_start_matches("sha256:")[..12]
        ))
        .stderr_has("1.0.0 is serving again");
    assert!(
        !s.patch_log().contains("demo.patches.v2.wrong"),
        "migrate never ran the old code"
    );
    let st = s.status();
    assert_eq!(st["current"]["version"], "1.0.0");
    assert_eq!(st["consistent"], true, "{st}");
}

/// Real `bench restore` asks for the database root password (frappe_docker
/// keeps none in the sites): a recovery without it fails at once, never
/// hangs; with `DB_PASSWORD` it restores, and the password is nowhere.
#[test]
#[cfg_attr(
    no_engine,
    ignore = "no Docker engine answered when the tests were built"
)]
#[cfg_attr(
    not(no_engine),
    ignore = "the live-stack suite, apart: cargo test --test integration -- --ignored live::"
)]
fn recovery_gives_bench_restore_the_root_password_on_stdin() {
    if !engine_available("root_password") {
        return;
    }
    const ROOT: &str = "root-pw-canary-8086";
    let s = Stack::new("rootpw");
    s.build("1.0.0");
    s.run(&["-q", "deploy", "1.0.0"]).code(0);
    s.exec(&format!("echo {ROOT} > sites/.require_root_password"));
    add_patch(&s, "fail:demo.patches.v2.broken");
    s.build("2.0.0");
    // Without the password: the restore cannot answer the prompt: exit 4,
    // saying which key is missing, in seconds.
    let t = std::time::Instant::now();
    let out = s.run(&["deploy", "2.0.0"]);
    out.code(4).stderr_has("set DB_PASSWORD");
    assert!(t.elapsed() < std::time::Duration::from_secs(60));
    // With it (and the failed recovery finished by `recover`): restored.
    s.p.set_env("DB_PASSWORD", ROOT);
    s.run(&["recover"]).code(3).stderr_has("database restored");
    let st = s.status();
    assert_eq!(st["consistent"], true, "{st}");
    s.run(&["deploy", "2.0.0"])
        .code(3)
        .stderr_has("database restored")
        .no_leak(ROOT);
    assert!(!s.patch_log().contains("demo.patches.v2.broken"));
    for f in walk(&s.p.path().join(".de-build")) {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        assert!(!text.contains(ROOT), "root password in {}", f.display());
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A stack started by hand (`compose up`), never recorded: the first deploy
/// protects it (maintenance, backup) and brings it back when it fails.
#[test]
#[cfg_attr(
    no_engine,
    ignore = "no Docker engine answered when the tests were built"
)]
#[cfg_attr(
    not(no_engine),
    ignore = "the live-stack suite, apart: cargo test --test integration -- --ignored live::"
)]
fn a_hand_started_stack_is_adopted_not_taken_down_unprotected() {
    if !engine_available("adopt") {
        return;
    }
    let s = Stack::new("adopt");
    s.build("1.0.0");
    add_patch(&s, "fail:demo.patches.v2.broken");
    s.build("2.0.0");
    // Up by hand, as a frappe_docker user would have it running.
    let up = Command::new("docker-compose")
        .args(["-p", &s.project, "-f", "compose.yaml", "up", "-d"])
        .current_dir(s.p.path())
        .env("CUSTOM_IMAGE", &s.repo.0)
        .env("CUSTOM_TAG", "1.0.0")
        .env("PULL_POLICY", "never")
        .env("HTTP_PUBLISH_PORT", s.port.to_string())
        .output()
        .unwrap();
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    s.exec("echo user-data > sites/demo.localhost/data.txt");
    let out = s.run(&["deploy", "2.0.0"]);
    out.code(3)
        .stderr_has("adopting the running stack")
        .stderr_has("2. maintenance mode on")
        .stderr_has("1.0.0 is serving again");
    assert_eq!(s.backend_image(), format!("{}:1.0.0", s.repo.0));
    assert_eq!(
        s.exec("cat sites/demo.localhost/data.txt").trim(),
        "user-data"
    );
    assert_eq!(s.http(), "200");
}

/// Compose v1 (Debian's docker-compose) and v2 (the plugin frappe_docker
/// users run) name containers differently and differ in `up`; de-build finds
/// containers by label. The other tests use v2 when the plugin is installed
/// (always under CI); this one runs the upgrade and the rollback on v1.
#[test]
#[cfg_attr(
    no_engine,
    ignore = "no Docker engine answered when the tests were built"
)]
#[cfg_attr(
    not(no_engine),
    ignore = "the live-stack suite, apart: cargo test --test integration -- --ignored live::"
)]
fn upgrade_and_rollback_with_compose_v1() {
    if !engine_available("compose_v1") {
        return;
    }
    let mut s = Stack::new("v1");
    s.compose = Some("docker-compose".into());
    s.build("1.0.0");
    add_patch(&s, "demo.patches.v1_1.v1");
    s.build("1.1.0");
    s.run(&["-q", "deploy", "1.0.0"]).code(0);
    s.run(&["deploy", "1.1.0"])
        .code(0)
        .stderr_has("Executing demo.patches.v1_1.v1");
    let names: Vec<String> = support::docker(&[
        "ps",
        "--filter",
        &format!("label=com.docker.compose.project={}", s.project),
        "--format",
        "{{.Names}}",
    ])
    .stdout
    .lines()
    .map(str::to_string)
    .collect();
    assert!(
        names
            .iter()
            .any(|n| n.starts_with(&format!("{}_backend_", s.project))),
        "v1 names containers proj_svc_N: {names:?}"
    );
    s.run(&["rollback"])
        .code(0)
        .stdout_has("rolled back to 1.0.0");
    assert_eq!(s.http(), "200");
    assert_eq!(s.status()["consistent"], true);
}

/// Migrate only when the schema changed: a release whose patches, hooks,
/// DocTypes and fixtures are those of the running one deploys without
/// maintenance, backup or migrate; a changed patch list migrates.
#[test]
#[cfg_attr(
    no_engine,
    ignore = "no Docker engine answered when the tests were built"
)]
#[cfg_attr(
    not(no_engine),
    ignore = "the live-stack suite, apart: cargo test --test integration -- --ignored live::"
)]
fn an_unchanged_schema_deploys_without_migrate_or_maintenance() {
    if !engine_available("schema") {
        return;
    }
    let s = Stack::new("schema");
    s.build("1.0.0");
    s.build("1.0.1");
    let m: serde_json::Value = serde_json::from_str(&s.p.read("releases/1.0.1.json")).unwrap();
    assert!(m["schema"]["files"].as_u64().unwrap() >= 1, "{m}");
    s.run(&["-q", "deploy", "1.0.0"]).code(0);
    let out = s.run(&["deploy", "1.0.1"]);
    out.code(0).stderr_has("schema unchanged since 1.0.0");
    let st = s.status();
    let steps: Vec<String> = st["deployments"][0]["id"]
        .as_str()
        .map(|id| {
            let r: serde_json::Value =
                serde_json::from_str(&s.p.read(&format!(".de-build/deployments/{id}.json")))
                    .unwrap();
            r["steps"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x["step"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap();
    for skipped in ["maintenance-on", "backup", "migrate"] {
        assert!(
            !steps.iter().any(|x| x == skipped),
            "{skipped} ran: {steps:?}"
        );
    }
    add_patch(&s, "demo.patches.v1_1.schema");
    s.build("1.1.0");
    s.run(&["deploy", "1.1.0", "--dry-run", "--no-migrate"])
        .code(0)
        .stdout_lacks("bench migrate");
    s.run(&["deploy", "1.1.0"])
        .code(0)
        .stderr_has("schema changed since 1.0.1")
        .stderr_has("Executing demo.patches.v1_1.schema");
}

/// Only the services that run the release are replaced: a database-like
/// service with its own image keeps its container (and its data) through a
/// deploy and a rollback; the app containers are all new.
#[test]
#[cfg_attr(
    no_engine,
    ignore = "no Docker engine answered when the tests were built"
)]
#[cfg_attr(
    not(no_engine),
    ignore = "the live-stack suite, apart: cargo test --test integration -- --ignored live::"
)]
fn services_that_do_not_run_the_release_are_left_running() {
    if !engine_available("keep_db") {
        return;
    }
    let s = Stack::new("keepdb");
    // A stand-in database image, built here (nothing can be pulled).
    let db_image = format!("{}-db:1", s.repo.0);
    let ctx = s.p.path().join("db-image");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::copy("/bin/busybox", ctx.join("busybox")).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nCMD [\"/bin/busybox\", \"sleep\", \"2147483647\"]\n",
    )
    .unwrap();
    let built = Command::new("docker")
        .args(["build", "-q", "-t", &db_image])
        .arg(&ctx)
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    std::fs::remove_dir_all(&ctx).unwrap();
    s.p.write(
        "compose.yaml",
        &(s.p.read("compose.yaml").replace(
            "\nvolumes:\n",
            &format!("\n  db:\n    image: {db_image}\n    init: true\n\nvolumes:\n"),
        )),
    );
    s.build("1.0.0");
    add_patch(&s, "demo.patches.v2.keepdb");
    s.build("2.0.0");
    s.run(&["-q", "deploy", "1.0.0"]).code(0);
    let ids = |svc: &str| {
        support::docker(&[
            "ps",
            "-q",
            "--no-trunc",
            "--filter",
            &format!("label=com.docker.compose.project={}", s.project),
            "--filter",
            &format!("label=com.docker.compose.service={svc}"),
        ])
        .stdout
        .trim()
        .to_string()
    };
    let db = ids("db");
    let backend = ids("backend");
    assert!(!db.is_empty() && !backend.is_empty());
    s.run(&["-q", "deploy", "2.0.0"]).code(0);
    assert_eq!(ids("db"), db, "the database container was recreated");
    assert_ne!(
        ids("backend"),
        backend,
        "the backend must run the new release"
    );
    s.run(&["-q", "rollback"]).code(0);
    assert_eq!(
        ids("db"),
        db,
        "the database container was recreated by the rollback"
    );
    assert_eq!(s.status()["consistent"], true);
    support::docker(&["rmi", "-f", &db_image]);
}

/// The drain asks `bench ready-for-migration` per site (real bench prints
/// `Number of Jobs:` in `doctor`, which a drain cannot rely on) until the
/// workers have emptied the queue; then the backup. The demo's workers take
/// one queued job a second; a timeout stops the deploy with nothing changed.
#[test]
#[cfg_attr(
    no_engine,
    ignore = "no Docker engine answered when the tests were built"
)]
#[cfg_attr(
    not(no_engine),
    ignore = "the live-stack suite, apart: cargo test --test integration -- --ignored live::"
)]
fn the_drain_waits_for_the_workers_to_empty_the_queue() {
    if !engine_available("drain") {
        return;
    }
    // The replace path: exit 1 with nothing changed on a drain timeout (a
    // switch has moved its frontend by then, and brings it back: exit 3).
    let s = Stack::new("drain").without_door();
    s.build("1.0.0");
    add_patch(&s, "demo.patches.v1_1.drained");
    s.build("1.1.0");
    s.run(&["-q", "deploy", "1.0.0"]).code(0);

    // More jobs than the timeout lets the workers take: abort, unchanged.
    s.exec("seq 1 30 > sites/demo.localhost/pending_jobs");
    s.p.set_env("DE_DRAIN_TIMEOUT", "2");
    s.run(&["deploy", "1.1.0"])
        .code(1)
        .stderr_has("demo.localhost still has pending background jobs after 2s")
        .stderr_has("maintenance mode is off again");
    assert_eq!(s.backend_image(), format!("{}:1.0.0", s.repo.0));
    assert_eq!(s.http(), "200");

    // Eight jobs: the two workers take them in about 4 s; the deploy waits.
    s.exec("seq 1 8 > sites/demo.localhost/pending_jobs");
    s.p.set_env("DE_DRAIN_TIMEOUT", "60");
    s.run(&["deploy", "1.1.0"]).code(0);
    assert_eq!(s.exec("cat sites/demo.localhost/pending_jobs").trim(), "");
    let id = s.status()["current"]["deployment"]
        .as_str()
        .unwrap()
        .to_string();
    let record: serde_json::Value =
        serde_json::from_str(&s.p.read(&format!(".de-build/deployments/{id}.json"))).unwrap();
    let drain = record["steps"]
        .as_array()
        .and_then(|st| st.iter().find(|x| x["step"] == "drain"))
        .unwrap_or_else(|| panic!("a drain step in {record}"))
        .clone();
    assert!(
        drain["seconds"].as_f64().unwrap() >= 1.0,
        "the drain waited for the queue: {drain}"
    );
    assert_eq!(s.backend_image(), format!("{}:1.1.0", s.repo.0));
}
