//! Secrets against the real binary: a token in the environment (the CI way)
//! through every command, with every child process watched; secret files in
//! the build context; a long token cut in live progress on a terminal; file
//! modes of the state directory; the engine hint only without an answer.

use crate::support;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use support::{docker, engine_available, ImageRepo, Project};

/// Any run of 8 characters of `secret` in `text`.
fn fragment_of(text: &str, secret: &str) -> Option<String> {
    secret
        .as_bytes()
        .windows(8)
        .map(|w| std::str::from_utf8(w).unwrap())
        .find(|w| text.contains(w))
        .map(str::to_string)
}

fn assert_no_leak(what: &str, text: &str, secret: &str) {
    if let Some(f) = fragment_of(text, secret) {
        panic!("{what} shows {f:?} of the secret:\n{text}");
    }
}

/// A unique token per test run: leftovers of other runs cannot mask a leak,
/// nor fake one.
fn canary(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("ghp_{tag}{}x{nanos}Canary", std::process::id())
}

/// `docker` and `docker-compose` wrappers first on PATH: each appends its
/// argv and its whole environment to a log, then runs the real program.
struct Spy {
    dir: tempfile::TempDir,
}

impl Spy {
    fn new() -> Spy {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("children.log");
        for prog in ["docker", "docker-compose"] {
            let real = std::env::var("PATH")
                .unwrap_or_default()
                .split(':')
                .map(|d| Path::new(d).join(prog))
                .find(|p| p.is_file())
                .unwrap_or_else(|| panic!("{prog} not on PATH"));
            let script = format!(
                "#!/bin/sh\n{{ printf 'argv:'; printf ' %s' \"$@\"; printf '\\n'; export -p; printf -- '---\\n'; }} >> '{}'\nexec '{}' \"$@\"\n",
                log.display(),
                real.display()
            );
            let p = dir.path().join(prog);
            std::fs::write(&p, script).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        Spy { dir }
    }

    fn path_var(&self) -> String {
        format!(
            "{}:{}",
            self.dir.path().display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("children.log")).unwrap_or_default()
    }
}

/// A demo stack on its own project name and port; taken down when dropped.
struct Stack {
    _repo: ImageRepo,
    p: Project,
    project: String,
    port: u16,
}

impl Stack {
    fn new(name: &str) -> Stack {
        let repo = ImageRepo::new(name);
        let p = Project::demo(&repo);
        let project = format!("dbt{name}{}", std::process::id());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        p.set_env("COMPOSE_PROJECT_NAME", &project)
            .set_env(
                "DE_HEALTH_URL",
                &format!("http://127.0.0.1:{port}/api/method/ping"),
            )
            .set_env("DE_HEALTH_TIMEOUT", "15");
        Stack {
            _repo: repo,
            p,
            project,
            port,
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        support::remove_project(&self.project);
    }
}

fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.push(p.clone());
                out.extend(files_below(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
}

/// The CI way: the token only in the environment, never in `.env`. Every
/// command runs with `docker`/`docker-compose` wrappers first on PATH that
/// record each child's argv and environment; no child, no output, no file,
/// no image shows any part of the token (nor of an unrelated secret-looking
/// variable: children get an allow-list, not de-build's environment).
#[test]
#[cfg_attr(
    no_engine,
    ignore = "no Docker engine answered when the tests were built"
)]
fn a_token_in_the_environment_reaches_no_child_output_file_or_image() {
    if !engine_available("a_token_in_the_environment_reaches_no_child") {
        return;
    }
    let token = canary("Env");
    let other = canary("Other");
    let s = Stack::new("envtok");
    let env_text =
        s.p.read(".env")
            .lines()
            .filter(|l| !l.starts_with("DE_MACRS_PAT="))
            .collect::<Vec<_>>()
            .join("\n");
    s.p.write(".env", &(env_text + "\n"));
    let spy = Spy::new();
    let run = |args: &[&str]| {
        let out =
            s.p.run()
                .env("PATH", &spy.path_var())
                .env("DE_MACRS_PAT", &token)
                .env("GITHUB_TOKEN", &other)
                .env("HTTP_PUBLISH_PORT", &s.port.to_string())
                .args(args)
                .output();
        for secret in [&token, &other] {
            assert_no_leak(&format!("stdout of {args:?}"), &out.stdout, secret);
            assert_no_leak(&format!("stderr of {args:?}"), &out.stderr, secret);
        }
        out
    };
    // Every command; the ones that must succeed say so.
    run(&["check"]).code(0);
    run(&["-v", "build", "--offline"]).code(0);
    run(&["releases", "list"]).code(0);
    run(&["--json", "releases", "show", "1.0.0"]).code(0);
    run(&["releases", "diff", "1.0.0", "1.0.0"]).code(0);
    run(&["tags", "repair", "--dry-run"]).code(0);
    run(&["deploy", "--dry-run"]).code(0);
    run(&["deploy"]).code(0);
    run(&["status"]).code(0);
    run(&["rollback", "--dry-run"]);
    run(&["recover", "--dry-run"]).code(0);
    run(&["prune", "--dry-run"]).code(0);
    run(&["push"]).code(2);
    run(&["lock", "release"]);
    run(&["check", "--online", "--timeout", "1"]);
    run(&["--json", "release", "--offline"]);

    // The children ran (compose detection and the deploy's compose calls),
    // and none saw the token.
    let log = spy.log();
    assert!(
        log.contains("argv: compose version") && log.contains(" up "),
        "the wrappers saw no compose run:\n{log}"
    );
    for secret in [&token, &other] {
        assert_no_leak("a child's argv or environment", &log, secret);
    }
    assert!(!log.contains("DE_MACRS_PAT") && !log.contains("GITHUB_TOKEN"));

    // No file of the project, no record, no log.
    for f in files_below(s.p.path()) {
        if f.is_file() {
            let text = String::from_utf8_lossy(&std::fs::read(&f).unwrap()).into_owned();
            for secret in [&token, &other] {
                assert_no_leak(&f.display().to_string(), &text, secret);
            }
        }
    }
    // Nothing in the image's config or history.
    let m: serde_json::Value = serde_json::from_str(&s.p.read("releases/1.0.0.json")).unwrap();
    let id = m["image"]["id"].as_str().unwrap();
    let inspect = docker(&["image", "inspect", id]);
    let history = docker(&["history", "--no-trunc", id]);
    assert_eq!(inspect.code, 0);
    assert_no_leak("docker image inspect", &inspect.stdout, &token);
    assert_no_leak("docker history", &history.stdout, &token);

    // Modes: the state directory and all below it is the owner's only.
    let state = s.p.path().join(".de-build");
    let below = files_below(&state);
    for must in ["de-build.log", "compose.env", "logs"] {
        assert!(
            below.iter().any(|f| f.ends_with(must)),
            "{must} not written: {below:?}"
        );
    }
    assert_eq!(mode(&state), 0o700, ".de-build");
    for f in below {
        let want = if f.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode(&f), want, "{}", f.display());
    }
}

/// Copies of `.env` beside the Containerfile: `.env*` is left out of the
/// context; a file holding a secret value (`custom.env`, or `.env.bak`
/// brought back by `!` in `.dockerignore`) stops the build with exit 2,
/// naming the file and the key, never the value. Afterwards the engine's
/// data directory holds no trace of the token (and does hold a marker sent
/// in the same context, so the search can find what was sent).
#[test]
#[cfg_attr(
    no_engine,
    ignore = "no Docker engine answered when the tests were built"
)]
fn secret_files_in_the_context_never_reach_the_engine() {
    if !engine_available("secret_files_in_the_context_never_reach_the_engine") {
        return;
    }
    let token = canary("Ctx");
    let marker = canary("Marker");
    let repo = ImageRepo::new("ctxsecret");
    let p = Project::demo(&repo);
    p.set_env("DE_MACRS_PAT", &token);
    let patches = p.read("patches.txt") + &format!("# {marker}\n");
    p.write("patches.txt", &patches);
    p.write(".env.bak", &p.read(".env"));
    p.write("sub/.env.old", &p.read(".env"));
    let out = p.run().args(&["build", "--offline"]).output();
    out.code(0);
    assert_no_leak(
        "build output",
        &format!("{}{}", out.stdout, out.stderr),
        &token,
    );

    // A secret in a file the context does include.
    p.write("custom.env", &format!("DE_MACRS_PAT={token}\n"));
    p.set_env("DE_SITE_VERSION", "1.0.1");
    let out = p.run().args(&["build", "--offline"]).output();
    out.code(2)
        .stderr_has("the build context file custom.env holds the value of the secret DE_MACRS_PAT")
        .stderr_has("the build stopped before any of it was sent");
    assert_no_leak("refusal", &format!("{}{}", out.stdout, out.stderr), &token);
    assert!(!p.path().join("releases/1.0.1.json").exists());

    // The same value percent-encoded, as in a URL.
    std::fs::remove_file(p.path().join("custom.env")).unwrap();
    let json = serde_json::json!({"url": format!("https://{token}@github.com/x")}).to_string();
    p.write("notes/urls.json", &json);
    p.run()
        .args(&["build", "--offline"])
        .output()
        .code(2)
        .stderr_has("notes/urls.json holds the value of the secret DE_MACRS_PAT");
    std::fs::remove_dir_all(p.path().join("notes")).unwrap();

    // `.env.bak` brought back by a negation: scanned like any file.
    p.write(".dockerignore", "!.env.bak\n");
    p.run()
        .args(&["--json", "build", "--offline"])
        .output()
        .code(2)
        .stdout_has(".env.bak holds the value of the secret DE_MACRS_PAT");
    std::fs::remove_file(p.path().join(".dockerignore")).unwrap();
    p.run().args(&["build", "--offline"]).output().code(0);

    let root = docker(&["info", "--format", "{{.DockerRootDir}}"]);
    let root = root.stdout.trim();
    let grep = |needle: &str| {
        std::process::Command::new("grep")
            .args(["-r", "-l", "-F", "-D", "skip", "-s", needle, root])
            .output()
            .unwrap()
    };
    // Files vanish under a busy engine (grep then exits 2 even with a
    // match): what was found is what grep printed.
    let found = grep(&marker);
    if found.stdout.is_empty() {
        let readable = std::fs::read_dir(root).is_ok();
        if std::env::var_os("CI").is_some() || readable {
            panic!(
                "the marker sent in the context is not found under {root} (readable: {readable}): the search cannot prove anything"
            );
        }
        eprintln!("skipped the data directory search: {root} is not readable");
        return;
    }
    let leaked = grep(&token);
    assert!(
        leaked.stdout.is_empty(),
        "the token is under the engine's data directory:\n{}",
        String::from_utf8_lossy(&leaked.stdout)
    );
}

/// A 93-character `github_pat_…` token printed by a build step, shown in the
/// live line on a terminal (cut to its width): no 8-character fragment of
/// the token reaches the terminal. The step's name is short enough that the
/// cut falls inside the token.
#[test]
#[cfg_attr(
    no_engine,
    ignore = "no Docker engine answered when the tests were built"
)]
fn a_long_token_cut_in_live_progress_is_never_shown() {
    if !engine_available("a_long_token_cut_in_live_progress_is_never_shown") {
        return;
    }
    if !Path::new("/usr/bin/script").exists() {
        if std::env::var_os("CI").is_some() {
            panic!("script (util-linux) is needed for a terminal");
        }
        eprintln!("skipped: no script(1) for a terminal");
        return;
    }
    let tail = canary("Pat");
    let token = format!("github_pat_{}{}", tail, "Z".repeat(82 - tail.len()));
    assert_eq!(token.len(), 93);
    let repo = ImageRepo::new("patcut");
    let p = Project::demo(&repo);
    p.set_env("DE_MACRS_PAT", &token);
    p.write(
        "apps.json",
        r#"[{"url": "https://${DE_MACRS_PAT}@github.com/desiredeffect/de_macrs.git", "branch": "v0.0.4"}]"#,
    );
    // Prints apps.json without its first 17 characters (`[{"url":"https://`):
    // the token starts the line, after a step name of about 75 characters.
    let cf = p.read("Containerfile").replace(
        "WORKDIR /home/frappe/frappe-bench",
        "RUN --mount=type=secret,id=apps_json,target=/s cut -c18- /s; exit 3\nWORKDIR /home/frappe/frappe-bench",
    );
    p.write("Containerfile", &cf);
    let cmd = format!(
        "'{}' --project-dir '{}' build --offline",
        env!("CARGO_BIN_EXE_de-build"),
        p.path().display()
    );
    let out = std::process::Command::new("script")
        .args(["-q", "-e", "-c", &cmd, "/dev/null"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env(
            "HOME",
            std::env::var("HOME").unwrap_or_else(|_| "/root".into()),
        )
        .env("TERM", "xterm")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "the step fails:\n{text}");
    // The live line was drawn (the terminal got our erase sequence) and the
    // failed step's output is reported, masked.
    assert!(
        text.contains("\r\x1b[K") || text.contains("\x1b[2K"),
        "no live progress:\n{text}"
    );
    assert!(text.contains("output of"), "{text}");
    assert!(text.contains("***@github.com"), "{text}");
    assert_no_leak("the terminal", &text, &token);
}

/// `.de-build/` and the tool's log are the owner's only, also when an older
/// de-build left them readable to all.
#[test]
fn the_state_directory_and_log_are_private() {
    let p = Project::example();
    p.run().args(&["check"]).output().code(0);
    let state = p.path().join(".de-build");
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&state.join("de-build.log")), 0o600);
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        state.join("de-build.log"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    p.run().args(&["check"]).output().code(0);
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&state.join("de-build.log")), 0o600);
}

/// An engine that answers every request with an error: the error is the
/// engine's, so no "is the engine running?" hint. With no engine at all,
/// the hint is there.
#[test]
fn the_engine_hint_only_when_the_engine_does_not_answer() {
    use std::io::{BufRead, BufReader, Write};
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("engine.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                line.clear();
            }
            let body = r#"{"message":"fake engine refuses this request"}"#;
            let mut c = conn;
            let _ = write!(
                c,
                "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let p = Project::example();
    let out = p
        .run()
        .env("DOCKER_HOST", &format!("unix://{}", sock.display()))
        .args(&["build", "--offline"])
        .output();
    out.code(1).stderr_has("fake engine refuses this request");
    assert!(
        !out.stderr.contains("is the Docker engine running"),
        "{}",
        out.stderr
    );
    let out = p
        .run()
        .env(
            "DOCKER_HOST",
            &format!("unix://{}", dir.path().join("none.sock").display()),
        )
        .args(&["build", "--offline"])
        .output();
    out.code(1)
        .stderr_has("is the Docker engine running and reachable?");
}
