//! de-build's own state going bad: a full disk under `.de-build/`, a corrupt
//! record, a garbage lock file. Nothing may be claimed that was not written,
//! and nothing may read as "free" or "consistent" that is not.

use crate::support;
use std::process::Command;
use support::stack::{add_patch, Stack};
use support::{engine_available, Project};

/// A small tmpfs mounted on a directory, unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    /// Needs root (mount); outside CI a machine without it skips, visibly.
    fn mount(dir: &std::path::Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            assert!(
                std::env::var_os("CI").is_none(),
                "mounting a tmpfs failed under CI: the full-disk test cannot run"
            );
            eprintln!("SKIPPED: cannot mount a tmpfs here (not root?)");
            return None;
        }
        Some(Tmpfs(dir.to_path_buf()))
    }

    /// Fill it up: every further write fails with ENOSPC.
    fn fill(&self) {
        let _ = Command::new("dd")
            .args(["if=/dev/zero", "bs=4k"])
            .arg(format!("of={}", self.0.join("filler").display()))
            .stderr(std::process::Stdio::null())
            .status();
    }

    fn free(&self) {
        std::fs::remove_file(self.0.join("filler")).unwrap();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_corrupt_record_is_reported_never_skipped() {
    let p = Project::empty();
    let d = p.path().join(".de-build/deployments");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("20260101T000000.000Z-1.json"), "{\"id\": ").unwrap();
    let out = p.run().args(&["status"]).output();
    out.code(1)
        .stdout_has("cannot be read")
        .stdout_has("20260101T000000.000Z-1.json");
    let out = p.run().args(&["--json", "status"]).output();
    out.code(1);
    assert_eq!(out.json()["consistent"], false);
}

#[test]
fn a_garbage_lock_file_is_never_free() {
    let p = Project::empty();
    let d = p.path().join(".de-build");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("lock.json"), "\u{0}\u{0}garbage").unwrap();
    // Nobody holds the OS lock: a holder that is gone, whose file is unreadable.
    let out = p.run().args(&["--json", "status"]).output();
    out.code(1);
    let st = out.json();
    assert_eq!(st["lock"]["state"], "stale", "{st}");
    p.run()
        .args(&["lock", "release"])
        .output()
        .code(0)
        .stdout_has("released the lock");
    let st = p.run().args(&["--json", "status"]).output().json();
    assert_eq!(st["lock"]["state"], "free", "{st}");
}

/// A deploy or rollback started while another holds the lock is refused
/// with exit 5 before it reads anything: here the version it names was
/// never built, which it would otherwise have judged first (exit 2). On a
/// live stack, judging first meant judging the other deploy's half-made
/// containers (a CI run refused with "no deployment is recorded").
#[test]
#[cfg_attr(
    no_engine,
    ignore = "no Docker engine answered when the tests were built"
)]
fn a_held_lock_is_checked_before_anything_is_judged() {
    if !engine_available("a_held_lock_is_checked_before_anything_is_judged") {
        return;
    }
    let repo = support::ImageRepo::new("heldlock");
    let p = Project::demo(&repo);
    let holder = serde_json::json!({"user": "ops", "host": "elsewhere", "pid": std::process::id(),
        "command": "deploy", "version": "1.0.0", "since": "now"});
    p.write(".de-build/lock.json", &holder.to_string());
    let held = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(p.path().join(".de-build/lock"))
        .unwrap();
    held.try_lock().unwrap();
    for args in [
        &["deploy", "9.9.9"][..],
        &["rollback", "9.9.9"],
        &["rollback"],
    ] {
        p.run()
            .args(args)
            .output()
            .code(5)
            .stderr_has("another deployment holds the lock")
            .stderr_has("`deploy` of 1.0.0");
    }
    // A dry run changes nothing and takes no lock: it still plans.
    p.run()
        .args(&["deploy", "9.9.9", "--dry-run"])
        .output()
        .code(2)
        .stderr_has("9.9.9");
    let records = p.path().join(".de-build/deployments");
    let written = std::fs::read_dir(&records).map(|d| d.count()).unwrap_or(0);
    assert_eq!(written, 0, "a refused deploy wrote a record");
    drop(held);
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
    fn a_full_disk_claims_nothing_and_recover_finishes_later() {
        if !engine_available("full_disk") {
            return;
        }
        let s = Stack::new("full");
        let Some(fs) = Tmpfs::mount(&s.p.path().join(".de-build"), "2m") else {
            return;
        };
        s.build("1.0.0");
        add_patch(&s, "demo.patches.v2.disk");
        s.build("2.0.0");

        // Full before anything: the deploy does not start, the stack is untouched.
        fs.fill();
        s.run(&["deploy", "1.0.0"])
            .code(1)
            .stderr_has("No space left on device");
        assert!(s.containers().is_empty(), "nothing may have started");
        fs.free();
        s.run(&["-q", "deploy", "1.0.0"]).code(0);

        // Full in the middle (while migrate runs): the deploy stops and recovers,
        // and says the record could not be written; it never says "deployed".
        s.exec("mkdir -p sites/.fault && echo 3 > sites/.fault/migrate.sleep");
        let child = s.spawn(&["deploy", "2.0.0"]);
        // Fill once the migrate has started (its record was written before it).
        s.wait_progress("2.0.0", "migrate_started");
        fs.fill();
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(3), "{stderr}");
        assert!(stderr.contains("record could not be written"), "{stderr}");
        assert!(!stdout.contains("deployed"), "{stdout}");
        assert_eq!(s.http(), "200");
        assert_eq!(s.backend_image(), format!("{}:1.0.0", s.repo.0));
        fs.free();
        s.exec("rm -rf sites/.fault");
        // The record on disk could not be closed: status says so, recover closes
        // it without restoring again (the site serves users).
        s.run(&["status"]).code(1).stdout_has("did not finish");
        s.run(&["recover"])
            .code(3)
            .stderr_has("database is not restored");
        let st = s.status();
        assert_eq!(st["consistent"], true, "{st}");
        assert_eq!(st["current"]["version"], "1.0.0");
        assert!(!s.patch_log().contains("demo.patches.v2.disk"));
    }
}
