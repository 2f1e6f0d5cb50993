//! Releases without a database change, through the demo's door, against the
//! real engine and compose: the new web tier starts beside the old one and
//! the door switches, with a probe every 20 ms counting failed requests.

use crate::support;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::engine_available;
use support::stack::Stack;

/// One GET through the door with the site's Host: the status code, or 0
/// when nothing answered.
fn get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: demo.localhost\r\nConnection: close\r\n\r\n"
    );
    let mut b = String::new();
    let _ = s.read_to_string(&mut b);
    let code = b
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = match code {
        // No status line: say what came (nothing, or a cut answer).
        0 => format!("{} bytes: {:?}", b.len(), &b[..b.len().min(120)]),
        _ => b.split("\r\n\r\n").nth(1).unwrap_or("").to_string(),
    };
    (code, body)
}

/// Requests every 20 ms until stopped: (sent, failed, the first failures,
/// the slowest answer in seconds).
struct Probe {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Probed>,
}

#[derive(Default)]
struct Probed {
    sent: u32,
    failed: u32,
    seen: Vec<String>,
    slowest: f64,
    /// Frappe's maintenance answers (allowed only where told): how many,
    /// and the span from the first to the last, in seconds.
    maintenance: u32,
    window: Option<(f64, f64)>,
}

impl Probe {
    fn start(port: u16) -> Probe {
        Probe::start_with(port, false)
    }

    /// `allow_503`: a migrating release answers the maintenance 503 for a
    /// while; anything else that is not 200 still fails.
    fn start_with(port: u16, allow_503: bool) -> Probe {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut p = Probed::default();
            let t0 = std::time::Instant::now();
            while !flag.load(Ordering::SeqCst) {
                let at = t0.elapsed();
                let (code, body) = get(port, "/api/method/ping");
                p.sent += 1;
                let took = (t0.elapsed() - at).as_secs_f64();
                p.slowest = p.slowest.max(took);
                if allow_503 && code == 503 {
                    p.maintenance += 1;
                    let t = at.as_secs_f64();
                    p.window = Some(p.window.map_or((t, t), |(a, _)| (a, t)));
                } else if code != 200 {
                    p.failed += 1;
                    if p.seen.len() < 5 {
                        p.seen.push(format!(
                            "at {:.2}s, after {took:.2}s: {code} {}",
                            at.as_secs_f64(),
                            body.trim()
                        ));
                    }
                }
                std::thread::sleep(Duration::from_millis(20)); // the probe's interval
            }
            p
        });
        Probe { stop, handle }
    }

    fn finish(self) -> (u32, u32, Vec<String>, f64) {
        let p = self.finish_all();
        (p.sent, p.failed, p.seen, p.slowest)
    }

    fn finish_all(self) -> Probed {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().unwrap()
    }
}

/// A demo stack with its door: the demo's stand-in, or another door image
/// (e.g. Debian's real nginx with door/door.conf in conf.d, see the README)
/// with DE_TEST_DOOR_IMAGE=<image>.
fn stack(name: &str) -> Stack {
    let s = Stack::new(name);
    if let Ok(image) = std::env::var("DE_TEST_DOOR_IMAGE") {
        s.p.set_env("DOOR_IMAGE", &image);
    }
    s
}

/// The hashed stylesheet the page links.
fn page_css(port: u16) -> String {
    let (code, body) = get(port, "/");
    assert_eq!(code, 200, "{body}");
    let start = body.find("href=\"").expect("a stylesheet link") + 6;
    body[start..][..body[start..].find('"').unwrap()].to_string()
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
fn a_release_without_migrate_and_a_rollback_switch_without_a_failed_request() {
    if !engine_available("switch") {
        return;
    }
    let s = stack("switch");
    s.build("1.0.0");
    s.run(&["-q", "deploy", "1.0.0"]).code(0);
    let css_1 = page_css(s.port);
    // A style change: a new bundle name, the same schema.
    s.p.write("style.css", "body { color: #123; }\n");
    s.build("1.0.1");
    let door_before = door_id(&s);

    let probe = Probe::start(s.port);
    let out = s.run(&["deploy", "1.0.1"]);
    let (sent, failed, seen, slowest) = probe.finish();
    eprintln!("deploy: {sent} requests, {failed} failed, slowest {slowest:.2}s");
    out.code(0)
        .stderr_has("schema unchanged since 1.0.0")
        .stderr_has("start 1.0.1 beside the running release")
        // The new frontend reaches the new backend by address, the door the
        // new frontend: nothing is sent to an old container as it retires.
        .stderr_has("frontend-2: upstreams pinned to backend")
        .stderr_has("door-1: upstreams pinned to frontend")
        .stderr_has("retired ");
    assert!(
        sent > 20,
        "the probe ran through the deploy ({sent} requests)"
    );
    assert!(
        failed == 0,
        "{failed} of {sent} requests failed: {seen:?}\n{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("maintenance mode on"),
        "{}",
        out.stderr
    );

    // One container per service, all 1.0.1; the door is the same container.
    let cs = s.containers();
    let count = |svc: &str| cs.iter().filter(|(s, _)| s == svc).count();
    for svc in ["backend", "frontend", "websocket", "queue-short", "door"] {
        assert_eq!(count(svc), 1, "{svc}: {cs:?}");
    }
    assert!(
        cs.iter()
            .filter(|(svc, _)| svc != "door" && svc != "configurator" && svc != "create-site")
            .all(|(_, i)| i.ends_with(":1.0.1")),
        "{cs:?}"
    );
    assert_eq!(door_id(&s), door_before);

    // The new frontend's config, pinned, still belongs to the user that
    // wrote it (frappe_docker's frontend rewrites it at each start as uid 1000).
    let front = support::docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=com.docker.compose.project={}", s.project),
        "--filter",
        "label=com.docker.compose.service=frontend",
    ])
    .stdout
    .trim()
    .to_string();
    let conf = "/etc/nginx/conf.d/frappe.conf";
    let stat = support::docker(&["exec", &front, "stat", "-c", "%u:%g %a", conf]);
    assert_eq!(stat.stdout.trim(), "1000:1000 644", "{}", stat.stderr);
    let text = support::docker(&["exec", &front, "cat", conf]).stdout;
    assert!(text.contains("# de-build: backend"), "{text}");

    // A page 1.0.0 rendered before the switch still finds its bundle, and
    // the new page links the new one.
    let css_2 = page_css(s.port);
    assert_ne!(css_1, css_2);
    assert_eq!(
        get(s.port, &css_1).0,
        200,
        "1.0.0's {css_1} after the switch"
    );
    assert_eq!(get(s.port, &css_2).0, 200, "{css_2}");

    // The rollback takes the same path.
    let probe = Probe::start(s.port);
    let out = s.run(&["rollback"]);
    let (sent, failed, seen, slowest) = probe.finish();
    eprintln!("rollback: {sent} requests, {failed} failed, slowest {slowest:.2}s");
    out.code(0).stderr_has("retired ");
    assert!(failed == 0, "rollback: {failed} of {sent} failed: {seen:?}");
    assert_eq!(page_css(s.port), css_1);
}

fn door_id(s: &Stack) -> String {
    s.ids("label=com.docker.compose.service=door").join(" ")
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
fn a_new_release_that_fails_its_direct_probe_never_takes_traffic() {
    if !engine_available("switch-bad") {
        return;
    }
    let s = stack("switchbad");
    s.p.set_env("DE_HEALTH_TIMEOUT", "5");
    s.build("1.0.0");
    s.run(&["-q", "deploy", "1.0.0"]).code(0);
    // 1.0.1's backend never serves (its start script waits forever); the
    // schema is the same, so it would switch.
    s.p.write("bin/start.sh", "#!/bin/sh\nexec sleep 2147483647\n");
    s.build("1.0.1");
    let probe = Probe::start(s.port);
    let out = s.run(&["deploy", "1.0.1"]);
    let (sent, failed, seen, _) = probe.finish();
    out.code(3)
        .stderr_has("did not answer")
        .stderr_has("1.0.0 is serving again");
    assert_eq!(failed, 0, "{failed} of {sent} failed: {seen:?}");
    let cs = s.containers();
    assert!(
        cs.iter().all(|(_, i)| !i.ends_with(":1.0.1")),
        "1.0.1's containers are gone: {cs:?}"
    );
    assert_eq!(get(s.port, "/api/method/ping").0, 200);
}

/// A release with a migrate: its frontend moves first, the new backend
/// starts beside, and the site is in maintenance only for drain, backup,
/// migrate and the cut-over. Through the door, every answer is 200 or the
/// maintenance 503: never a 502, a reset or nothing.
#[test]
#[cfg_attr(
    no_engine,
    ignore = "no Docker engine answered when the tests were built"
)]
#[cfg_attr(
    not(no_engine),
    ignore = "the live-stack suite, apart: cargo test --test integration -- --ignored live::"
)]
fn a_migrating_release_answers_only_200_or_the_maintenance_503() {
    if !engine_available("switch-migrate") {
        return;
    }
    let s = stack("swmig");
    s.build("1.0.0");
    s.run(&["-q", "deploy", "1.0.0"]).code(0);
    support::stack::add_patch(&s, "demo.patches.v1_1.beside");
    s.build("1.1.0");

    let probe = Probe::start_with(s.port, true);
    let out = s.run(&["deploy", "1.1.0"]);
    let p = probe.finish_all();
    out.code(0)
        .stderr_has("start 1.1.0's frontend beside the running one")
        .stderr_has("cut over")
        .stderr_has("Executing demo.patches.v1_1.beside");
    let (first, last) = p.window.unwrap_or((0.0, 0.0));
    eprintln!(
        "migrating deploy: {} requests, {} failed, {} maintenance answers over {:.2}s, slowest {:.2}s",
        p.sent,
        p.failed,
        p.maintenance,
        last - first,
        p.slowest
    );
    assert!(p.sent > 20, "the probe ran through the deploy ({})", p.sent);
    assert!(
        p.failed == 0,
        "{} of {} requests were neither 200 nor the maintenance 503: {:?}\n{}",
        p.failed,
        p.sent,
        p.seen,
        out.stderr
    );
    assert!(p.maintenance > 0, "the probe saw the maintenance window");
    assert_eq!(s.backend_image(), format!("{}:1.1.0", s.repo.0));
    let log = s.patch_log();
    assert_eq!(log.matches("demo.patches.v1_1.beside").count(), 1, "{log}");
    let cs = s.containers();
    for svc in ["backend", "frontend", "websocket", "queue-short", "door"] {
        assert_eq!(
            cs.iter().filter(|(x, _)| x == svc).count(),
            1,
            "{svc}: {cs:?}"
        );
    }
    assert_eq!(s.status()["consistent"], true);
}
