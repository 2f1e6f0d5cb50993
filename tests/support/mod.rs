//! A small builder for running the real `de-build` binary in a temp project,
//! in the manner of just's test harness.
#![allow(dead_code)]

pub mod cluster;
pub mod stack;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const CANARY: &str = "canary-tok-5150-do-not-leak";

/// The repository root (where the bundled example lives).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub struct Project {
    pub dir: tempfile::TempDir,
}

/// `.env` made from the bundled example, with the canary as token.
pub fn good_env() -> String {
    let example = std::fs::read_to_string(repo_root().join("de-example.env")).unwrap();
    example
        .lines()
        .map(|l| {
            if l.starts_with("DE_MACRS_PAT=") {
                format!("DE_MACRS_PAT={CANARY}")
            } else if l.starts_with("DE_SITE_VERSION=") {
                "DE_SITE_VERSION=1.2.0".to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

impl Project {
    /// A copy of the bundled example project with a valid `.env`.
    pub fn example() -> Project {
        let p = Project::empty();
        let root = repo_root();
        for f in [
            "de-example.env",
            "apps.json",
            "compose-main.yaml",
            "images/custom/Containerfile",
        ] {
            p.write(f, &std::fs::read_to_string(root.join(f)).unwrap());
        }
        p.write(".env", &good_env());
        p
    }

    pub fn empty() -> Project {
        Project {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, rel: &str, text: &str) -> &Self {
        self.write_bytes(rel, text.as_bytes())
    }

    pub fn write_bytes(&self, rel: &str, data: &[u8]) -> &Self {
        let p = self.dir.path().join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(p, data).unwrap();
        self
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(rel)).unwrap()
    }

    /// Replace the line starting with `KEY=` in `.env` (or append it).
    pub fn set_env(&self, key: &str, value: &str) -> &Self {
        let text = self.read(".env");
        let mut found = false;
        let mut lines: Vec<String> = text
            .lines()
            .map(|l| {
                if l.starts_with(&format!("{key}=")) {
                    found = true;
                    format!("{key}={value}")
                } else {
                    l.to_string()
                }
            })
            .collect();
        if !found {
            lines.push(format!("{key}={value}"));
        }
        self.write(".env", &(lines.join("\n") + "\n"))
    }

    pub fn run(&self) -> Run {
        Run::new(self.path())
    }

    /// Every file below the project, for leak checks.
    pub fn all_files(&self) -> Vec<PathBuf> {
        fn walk(d: &Path, out: &mut Vec<PathBuf>) {
            if let Ok(rd) = std::fs::read_dir(d) {
                for e in rd.flatten() {
                    let p = e.path();
                    if p.is_dir() {
                        walk(&p, out)
                    } else {
                        out.push(p)
                    }
                }
            }
        }
        let mut out = Vec::new();
        walk(self.path(), &mut out);
        out
    }
}

/// One invocation of the binary, with a clean environment.
pub struct Run {
    cmd: Command,
}

impl Run {
    pub fn new(project: &Path) -> Run {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_de-build"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env(
                "HOME",
                std::env::var("HOME").unwrap_or_else(|_| "/root".into()),
            )
            .env("NO_COLOR", "1")
            .arg("--project-dir")
            .arg(project);
        if let Ok(h) = std::env::var("DOCKER_HOST") {
            cmd.env("DOCKER_HOST", h);
        }
        Run { cmd }
    }

    pub fn args(mut self, args: &[&str]) -> Self {
        self.cmd.args(args);
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.cmd.env(k, v);
        self
    }

    pub fn output(mut self) -> Done {
        let out = self.cmd.output().expect("run de-build");
        Done::from(out)
    }
}

pub struct Done {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Done {
    fn from(o: Output) -> Self {
        Done {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Done {
    #[track_caller]
    pub fn code(&self, want: i32) -> &Self {
        assert_eq!(
            self.code, want,
            "exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }
    #[track_caller]
    pub fn stderr_has(&self, s: &str) -> &Self {
        assert!(
            self.stderr.contains(s),
            "stderr lacks {s:?}:\n{}",
            self.stderr
        );
        self
    }
    #[track_caller]
    pub fn stdout_has(&self, s: &str) -> &Self {
        assert!(
            self.stdout.contains(s),
            "stdout lacks {s:?}:\n{}",
            self.stdout
        );
        self
    }
    #[track_caller]
    pub fn stdout_lacks(&self, s: &str) -> &Self {
        assert!(
            !self.stdout.contains(s),
            "stdout has {s:?}:\n{}",
            self.stdout
        );
        self
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
    #[track_caller]
    pub fn no_leak(&self, secret: &str) -> &Self {
        assert!(
            !self.stdout.contains(secret),
            "secret leaked to stdout:\n{}",
            self.stdout
        );
        assert!(
            !self.stderr.contains(secret),
            "secret leaked to stderr:\n{}",
            self.stderr
        );
        self
    }
    /// Never a panic or a Rust Debug dump in front of the user.
    #[track_caller]
    pub fn clean(&self) -> &Self {
        for bad in [
            "panicked",
            "RUST_BACKTRACE",
            "Os {",
            "Error {",
            "Some(",
            "kind: ",
        ] {
            assert!(
                !self.stderr.contains(bad),
                "stderr shows {bad:?}:\n{}",
                self.stderr
            );
        }
        self
    }
}

/// Is a Docker engine answering? Without one, engine tests skip locally but
/// fail under CI: a skipped engine test in CI is a hole, not a pass.
pub fn engine_available(test: &str) -> bool {
    let ok = Command::new("docker")
        .arg("info")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        if std::env::var_os("CI").is_some() {
            panic!("{test}: no Docker engine answers and CI is set: engine tests must run in CI");
        }
        eprintln!("{test}: skipped, no Docker engine answers");
    }
    ok
}

pub fn docker(args: &[&str]) -> Done {
    Done::from(
        Command::new("docker")
            .args(args)
            .output()
            .expect("run docker"),
    )
}

/// Removes what compose project `project` left: its containers, the
/// volumes they mount (compose carries a replaced container's anonymous
/// volumes to its successor by name, after which `rm -v` no longer takes
/// them), its labelled volumes and its network.
pub fn remove_project(project: &str) {
    let label = format!("label=com.docker.compose.project={project}");
    let ps = docker(&["ps", "-aq", "--filter", &label]);
    let ids: Vec<&str> = ps.stdout.lines().collect();
    let mut vols: Vec<String> = Vec::new();
    if !ids.is_empty() {
        let mut inspect = vec![
            "inspect",
            "--format",
            "{{range .Mounts}}{{if eq .Type \"volume\"}}{{.Name}} {{end}}{{end}}",
        ];
        inspect.extend(&ids);
        vols.extend(docker(&inspect).stdout.split_whitespace().map(String::from));
        let mut rm = vec!["rm", "-f", "-v"];
        rm.extend(&ids);
        docker(&rm);
    }
    let labelled = docker(&["volume", "ls", "-q", "--filter", &label]);
    vols.extend(labelled.stdout.lines().map(String::from));
    vols.sort();
    vols.dedup();
    for v in vols {
        docker(&["volume", "rm", "-f", &v]);
    }
    docker(&["network", "rm", &format!("{project}_default")]);
}

/// Removes every image of a test repository when dropped.
pub struct ImageRepo(pub String);

impl ImageRepo {
    pub fn new(test: &str) -> ImageRepo {
        ImageRepo(format!("de-build-test/{test}-{}", std::process::id()))
    }
    pub fn id_of(&self, tag: &str) -> Option<String> {
        let out = docker(&[
            "image",
            "inspect",
            "--format",
            "{{.Id}}",
            &format!("{}:{tag}", self.0),
        ]);
        (out.code == 0).then(|| out.stdout.trim().to_string())
    }
    pub fn tags(&self) -> Vec<String> {
        let out = docker(&["image", "ls", "--format", "{{.Tag}}", &self.0]);
        let mut t: Vec<String> = out.stdout.lines().map(str::to_string).collect();
        t.sort();
        t
    }
}

impl Drop for ImageRepo {
    /// Removes the repository's names (tags, or digests of pulled images),
    /// never image IDs: an image built from the same files by another test
    /// has the same ID, and removing it by ID would take it from that test.
    fn drop(&mut self) {
        let out = docker(&[
            "image",
            "ls",
            "--digests",
            "--format",
            "{{.Repository}} {{.Tag}} {{.Digest}}",
            &self.0,
        ]);
        let mut refs: Vec<String> = out
            .stdout
            .lines()
            .filter_map(|l| match l.split_whitespace().collect::<Vec<_>>()[..] {
                [repo, tag, _] if tag != "<none>" => Some(format!("{repo}:{tag}")),
                [repo, _, digest] if digest != "<none>" => Some(format!("{repo}@{digest}")),
                _ => None,
            })
            .collect();
        refs.sort();
        refs.dedup();
        for r in refs {
            let _ = docker(&["rmi", "-f", &r]);
        }
    }
}

/// The demo's door image (door/Containerfile), built once per test process
/// when an engine answers (`docker build`, the layers are cached).
pub fn door_image() -> String {
    static BUILT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let demo = repo_root().join("examples/demo");
            // Tagged by its content: test runs of other checkouts (another
            // worktree, an older commit) build their own, and a deploy never
            // finds the door's tag moved under a running door (compose would
            // recreate it).
            use sha2::Digest;
            let mut h = sha2::Sha256::new();
            for f in ["bin/nginx", "door/Containerfile", "door/door.conf"] {
                h.update(std::fs::read(demo.join(f)).unwrap());
            }
            let hex: String = h
                .finalize()
                .iter()
                .take(6)
                .map(|b| format!("{b:02x}"))
                .collect();
            let tag = format!("de-build-test/door:{hex}");
            let dir = tempfile::tempdir().unwrap();
            for d in ["bin", "door", "rootfs"] {
                std::fs::create_dir_all(dir.path().join(d)).unwrap();
            }
            std::fs::copy(demo.join("bin/nginx"), dir.path().join("bin/nginx")).unwrap();
            for f in ["Containerfile", "door.conf"] {
                std::fs::copy(demo.join("door").join(f), dir.path().join("door").join(f)).unwrap();
            }
            if std::fs::copy("/bin/busybox", dir.path().join("rootfs/busybox")).is_ok()
                && docker(&["info"]).code == 0
            {
                let d = dir.path().to_str().unwrap();
                let f = format!("{d}/door/Containerfile");
                let out = docker(&["build", "-q", "-t", &tag, "-f", &f, d]);
                assert_eq!(out.code, 0, "build the demo's door image: {}", out.stderr);
            }
            tag
        })
        .clone()
}

impl Project {
    /// A copy of the bundled demo (FROM scratch + busybox), with the canary
    /// token and its own image repository.
    pub fn demo(repo: &ImageRepo) -> Project {
        let p = Project::empty();
        let demo = repo_root().join("examples/demo");
        for f in [
            "de-example.env",
            "apps.json",
            "Containerfile",
            "bench",
            "patches.txt",
            "style.css",
            "compose.yaml",
        ] {
            std::fs::copy(demo.join(f), p.path().join(f)).unwrap();
        }
        for d in ["overrides", "door"] {
            std::fs::create_dir_all(p.path().join(d)).unwrap();
            for e in std::fs::read_dir(demo.join(d)).unwrap() {
                let e = e.unwrap();
                std::fs::copy(e.path(), p.path().join(d).join(e.file_name())).unwrap();
            }
        }
        // The stand-ins of frappe_docker's entrypoints, nginx and node.
        std::fs::create_dir_all(p.path().join("bin")).unwrap();
        for e in std::fs::read_dir(demo.join("bin")).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), p.path().join("bin").join(e.file_name())).unwrap();
        }
        std::fs::create_dir_all(p.path().join("rootfs")).unwrap();
        std::fs::copy("/bin/busybox", p.path().join("rootfs/busybox"))
            .expect("/bin/busybox (Debian's busybox-static) is needed for the demo image");
        let env = std::fs::read_to_string(demo.join("demo.env"))
            .unwrap()
            .lines()
            .map(|l| match l.split_once('=') {
                Some(("DE_MACRS_PAT", _)) => format!("DE_MACRS_PAT={CANARY}"),
                Some(("DE_IMAGE", _)) => format!("DE_IMAGE={}", repo.0),
                Some(("DOOR_IMAGE", _)) => format!("DOOR_IMAGE={}", door_image()),
                _ => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        p.write(".env", &(env + "\n"));
        p
    }
}
#[path = "git_http.rs"]
pub mod git_http;

/// Debian's docker-registry (the distribution server) on a loopback port,
/// storing into a temp dir; stopped when dropped.
pub struct Registry {
    pub addr: String,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// None when the binary is missing outside CI; in CI a missing registry fails.
    pub fn start() -> Option<Registry> {
        let bin = ["/usr/bin/docker-registry", "/usr/bin/registry"]
            .into_iter()
            .find(|p| Path::new(p).exists());
        let Some(bin) = bin else {
            if std::env::var_os("CI").is_some() {
                panic!("docker-registry is needed in CI (Debian package docker-registry)");
            }
            eprintln!("skipped: docker-registry not installed");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new(bin)
            .arg("serve")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start docker-registry");
        // Ready when it accepts connections (bounded wait on that condition).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "docker-registry did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Some(Registry {
            addr,
            child,
            _dir: dir,
        })
    }

    /// The tags the registry holds for `repo`, via its HTTP API.
    pub fn tags(&self, repo: &str) -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&self.addr).unwrap();
        write!(
            s,
            "GET /v2/{repo}/tags/list HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        )
        .unwrap();
        let mut b = String::new();
        s.read_to_string(&mut b).unwrap();
        b
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
