//! Deploys interrupted by signals, on the real engine and compose, one test
//! per family: kill -9 (only detectable), SIGTERM, SIGHUP (handled like a
//! first Ctrl-C), a double SIGINT (record closed as interrupted). Every step ×
//! every interruption is covered in milliseconds by the executor's unit tests
//! (src/exec/deploy_tests.rs); these prove the signal handling, the OS lock
//! and `recover` against the real thing.
//!
//! The demo bench's test switches hold a step: `sites/.fault/<cmd>.sleep`.

use crate::support;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use support::engine_available;
use support::stack::{add_patch, Stack};

/// A deploy running in the background, its stderr lines arriving on a channel.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    fn start(s: &Stack, args: &[&str]) -> Running {
        let mut child = Command::new(env!("CARGO_BIN_EXE_de-build"))
            .arg("--project-dir")
            .arg(s.p.path())
            .args(args)
            .env("HTTP_PUBLISH_PORT", s.port.to_string())
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Wait (bounded) for a stderr line containing `marker`.
    fn wait_for(&mut self, marker: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            match self.lines.recv_timeout(Duration::from_millis(200)) {
                Ok(l) => {
                    let hit = l.contains(marker);
                    self.seen.push(l);
                    if hit {
                        return;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        panic!(
            "never saw {marker:?}; stderr so far:\n{}",
            self.seen.join("\n")
        );
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args(["-s", sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -s {sig}");
    }

    /// Exit code (None when killed by a signal) and the rest of stderr.
    fn finish(mut self) -> (Option<i32>, String) {
        let status = self.child.wait().unwrap();
        self.seen.extend(self.lines.try_iter());
        while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(200)) {
            self.seen.push(l);
        }
        (status.code(), self.seen.join("\n"))
    }
}

/// 1.0.0 deployed and serving; 2.0.0 built with one more patch.
/// 1.0.0 deployed, 2.0.0 (a migrate) built, on the replace path: without
/// a door, a release recreates the web tier in one compose pass.
fn upgrade_ready(name: &str) -> Stack {
    upgrade_ready_in(Stack::new(name).without_door())
}

fn upgrade_ready_in(s: Stack) -> Stack {
    s.build("1.0.0");
    s.run(&["-q", "deploy", "1.0.0"]).code(0);
    add_patch(&s, "demo.patches.v2.interrupted");
    s.build("2.0.0");
    s
}

fn hold(s: &Stack, command: &str, secs: u32) {
    s.exec(&format!(
        "mkdir -p sites/.fault && echo {secs} > sites/.fault/{command}.sleep"
    ));
}

/// After recovery: 1.0.0 serves, maintenance off, lock free, records and
/// engine agree, the database as before the deploy.
fn assert_back_on_1_0_0(s: &Stack) {
    let st = s.status();
    assert_eq!(st["consistent"], true, "{st}");
    assert_eq!(st["current"]["version"], "1.0.0", "{st}");
    assert_eq!(st["lock"]["state"], "free", "{st}");
    assert_eq!(s.http(), "200");
    assert_eq!(s.backend_image(), format!("{}:1.0.0", s.repo.0));
    assert!(!s.patch_log().contains("demo.patches.v2.interrupted"));
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
fn kill_9_during_migrate_is_detected_and_recovered() {
    if !engine_available("kill_9") {
        return;
    }
    let s = upgrade_ready("kill9");
    hold(&s, "migrate", 30);
    let mut d = Running::start(&s, &["deploy", "2.0.0"]);
    d.wait_for("$ bench --site demo.localhost migrate");
    d.signal("KILL");
    let (code, _) = d.finish();
    assert_eq!(code, None);
    // The site is left in maintenance, and status says what happened.
    assert_eq!(s.http(), "503");
    let out = s.run(&["status"]);
    out.code(1)
        .stdout_has("did not finish")
        .stdout_has("a process that is gone")
        .stdout_has("de-build recover");
    s.run(&["deploy", "2.0.0"])
        .code(2)
        .stderr_has("de-build recover");
    s.run(&["recover", "--dry-run"])
        .code(0)
        .stdout_has("restore the pre-deploy backup");
    s.run(&["recover"])
        .code(3)
        .stderr_has("1.0.0 is serving again")
        .stderr_has("database restored");
    assert_back_on_1_0_0(&s);
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
fn sigterm_during_the_backup_stops_before_the_stack_is_touched() {
    if !engine_available("sigterm") {
        return;
    }
    let s = upgrade_ready("term");
    hold(&s, "backup", 3);
    let mut d = Running::start(&s, &["deploy", "2.0.0"]);
    d.wait_for("$ bench --site demo.localhost backup");
    d.signal("TERM");
    let (code, err) = d.finish();
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("SIGTERM: stopping after this step"), "{err}");
    assert!(err.contains("maintenance mode is off again"), "{err}");
    assert_back_on_1_0_0(&s);
    let st = s.status();
    assert_eq!(st["deployments"][0]["result"], "aborted");
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
fn sighup_during_the_replace_recovers_the_previous_release() {
    if !engine_available("sighup") {
        return;
    }
    let s = upgrade_ready("hup");
    let mut d = Running::start(&s, &["deploy", "2.0.0"]);
    d.wait_for("] replace 1.0.0 by 2.0.0");
    d.signal("HUP");
    let (code, err) = d.finish();
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("interrupted by a signal"), "{err}");
    assert_back_on_1_0_0(&s);
    assert_eq!(s.status()["deployments"][0]["result"], "recovered");
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
fn a_second_sigint_stops_at_once_and_recover_finishes_the_job() {
    if !engine_available("double_sigint") {
        return;
    }
    let s = upgrade_ready("int2");
    hold(&s, "migrate", 20);
    let mut d = Running::start(&s, &["deploy", "2.0.0"]);
    d.wait_for("$ bench --site demo.localhost migrate");
    d.signal("INT");
    d.wait_for("stopping after this step");
    d.signal("INT");
    let (code, err) = d.finish();
    assert_eq!(code, Some(130), "{err}");
    assert!(err.contains("recorded as interrupted"), "{err}");
    let out = s.run(&["--json", "status"]);
    out.code(1);
    let st = out.json();
    assert_eq!(st["deployments"][0]["result"], "interrupted");
    assert_eq!(st["interrupted"], st["deployments"][0]["id"]);
    // The lock did not survive its holder, and never reads as free while held.
    assert_ne!(st["lock"]["state"], "held");
    s.run(&["recover"]).code(3);
    assert_back_on_1_0_0(&s);
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
fn sigterm_during_a_switch_backup_brings_the_running_release_back_whole() {
    if !engine_available("sigterm-switch") {
        return;
    }
    // With the door, a migrating release has moved its frontends before
    // maintenance went on: stopping in the backup is a recovery, not an abort.
    let s = upgrade_ready_in(Stack::new("swterm"));
    hold(&s, "backup", 3);
    let mut d = Running::start(&s, &["deploy", "2.0.0"]);
    d.wait_for("$ bench --site demo.localhost backup");
    d.signal("TERM");
    let (code, err) = d.finish();
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("SIGTERM: stopping after this step"), "{err}");
    assert_back_on_1_0_0(&s);
    let st = s.status();
    assert_eq!(st["deployments"][0]["result"], "recovered", "{st}");
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
fn kill_9_after_the_cutover_froze_the_workers_and_recover_thaws_them() {
    if !engine_available("kill9-frozen") {
        return;
    }
    // With the door, the migrating cut-over freezes the old workers and
    // scheduler (docker pause) and ends them only after maintenance went
    // off. Killed in between, the record holds them; `recover` must thaw
    // them: compose would leave a paused container paused.
    let s = upgrade_ready_in(Stack::new("frozen"));
    hold(&s, "set-maintenance-mode", 2);
    let mut d = Running::start(&s, &["deploy", "2.0.0"]);
    d.wait_for("froze ");
    d.signal("KILL");
    let (code, err) = d.finish();
    assert_eq!(code, None, "{err}");
    let paused = |s: &Stack| s.ids("status=paused").len();
    assert!(paused(&s) > 0, "the cut-over froze nothing:\n{err}");
    s.exec("rm -f sites/.fault/set-maintenance-mode.sleep");
    // Killed before maintenance went off, the backup is restored; once that
    // step had started (users may have written), the database stays as
    // 2.0.0 migrated it and the message says how to restore it.
    let out = s.run(&["recover"]);
    let out = out.code(3).stderr_has("1.0.0 is serving again");
    let text = &out.stderr;
    if text.contains("database restored") {
        assert!(!s.patch_log().contains("demo.patches.v2.interrupted"));
    } else {
        assert!(text.contains("--restore-backup"), "{text}");
    }
    assert_eq!(paused(&s), 0);
    let st = s.status();
    assert_eq!(st["consistent"], true, "{st}");
    assert_eq!(st["current"]["version"], "1.0.0", "{st}");
    assert_eq!(st["lock"]["state"], "free", "{st}");
    assert_eq!(s.http(), "200");
    for (svc, image) in s.containers() {
        if ["queue-short", "queue-long", "scheduler", "backend"].contains(&svc.as_str()) {
            assert_eq!(image, format!("{}:1.0.0", s.repo.0), "{svc}");
        }
    }
    let running = support::docker(&[
        "ps",
        "--filter",
        &format!("label=com.docker.compose.project={}", s.project),
        "--filter",
        "label=com.docker.compose.service=queue-short",
        "--format",
        "{{.Status}}",
    ]);
    assert!(running.stdout.starts_with("Up"), "{}", running.stdout);
}
