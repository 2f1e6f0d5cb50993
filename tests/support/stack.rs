//! A deployable copy of the bundled demo for engine tests: its own image
//! repository, compose project and port, removed on drop.

use super::{docker, ImageRepo, Project};

/// A demo project with its own image repository, compose project and port.
pub struct Stack {
    pub repo: ImageRepo,
    pub p: Project,
    pub project: String,
    pub port: u16,
    /// `DE_COMPOSE` for this stack's commands (None: de-build's detection,
    /// the v2 plugin when installed).
    pub compose: Option<String>,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Stack {
    pub fn new(name: &str) -> Stack {
        let repo = ImageRepo::new(name);
        let p = Project::demo(&repo);
        let project = format!("dbt{name}{}", std::process::id());
        let port = free_port();
        p.set_env("COMPOSE_PROJECT_NAME", &project).set_env(
            "DE_HEALTH_URL",
            &format!("http://127.0.0.1:{port}/api/method/ping"),
        );
        p.set_env("DE_HEALTH_TIMEOUT", "15");
        Stack {
            repo,
            p,
            project,
            port,
            compose: None,
        }
    }

    /// The stack without the demo's door: the frontend publishes the port
    /// (frappe_docker's noproxy override), so a release replaces the web
    /// tier in one compose pass instead of switching beside it.
    pub fn without_door(self) -> Stack {
        self.p
            .set_env(
                "DE_COMPOSE_FILE",
                "compose.yaml,overrides/compose.noproxy.yaml",
            )
            .set_env("DE_DOOR", "");
        self
    }

    pub fn run(&self, args: &[&str]) -> super::Done {
        let mut r = self
            .p
            .run()
            .env("HTTP_PUBLISH_PORT", &self.port.to_string());
        if let Some(c) = &self.compose {
            r = r.env("DE_COMPOSE", c);
        }
        r.args(args).output()
    }

    /// de-build in the background, output piped (for signal and race tests).
    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_de-build"));
        cmd.arg("--project-dir")
            .arg(self.p.path())
            .args(args)
            .env("HTTP_PUBLISH_PORT", self.port.to_string())
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        if let Some(c) = &self.compose {
            cmd.env("DE_COMPOSE", c);
        }
        cmd.spawn().unwrap()
    }

    /// Wait (bounded) until the record of a deployment of `version` holds
    /// `"field": true` in its progress.
    pub fn wait_progress(&self, version: &str, field: &str) {
        let dir = self.p.path().join(".de-build/deployments");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let (v, f) = (
            format!("\"version\": \"{version}\""),
            format!("\"{field}\": true"),
        );
        while std::time::Instant::now() < deadline {
            let hit = std::fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .any(|t| t.contains(&v) && t.contains(&f));
            if hit {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50)); // polling a condition, bounded by the deadline
        }
        panic!("no deployment of {version} reached {field} within 60s");
    }

    pub fn build(&self, version: &str) {
        self.p.set_env("DE_SITE_VERSION", version);
        self.run(&["-q", "build", "--offline"]).code(0);
    }

    pub fn http(&self) -> String {
        match std::net::TcpStream::connect(("127.0.0.1", self.port)) {
            Err(_) => "refused".into(),
            Ok(mut s) => {
                use std::io::{Read, Write};
                let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(3)));
                let _ = write!(
                    s,
                    "GET /api/method/ping HTTP/1.1\r\nHost: demo.localhost\r\n\r\n"
                );
                let mut b = String::new();
                let _ = s.read_to_string(&mut b);
                b.split_whitespace().nth(1).unwrap_or("none").to_string()
            }
        }
    }

    pub fn containers(&self) -> Vec<(String, String)> {
        let out = docker(&[
            "ps",
            "-a",
            "--filter",
            &format!("label=com.docker.compose.project={}", self.project),
            "--format",
            "{{.Label \"com.docker.compose.service\"}} {{.Image}}",
        ]);
        out.stdout
            .lines()
            .filter_map(|l| {
                l.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
            })
            .collect()
    }

    /// Full ids of this stack's running containers matching a `docker ps`
    /// filter (`label=…`, `status=paused`).
    pub fn ids(&self, filter: &str) -> Vec<String> {
        let out = docker(&[
            "ps",
            "-q",
            "--no-trunc",
            "--filter",
            &format!("label=com.docker.compose.project={}", self.project),
            "--filter",
            filter,
        ]);
        out.stdout.lines().map(str::to_string).collect()
    }

    pub fn backend_ids(&self) -> Vec<String> {
        self.ids("label=com.docker.compose.service=backend")
    }

    pub fn backend_image(&self) -> String {
        self.containers()
            .into_iter()
            .find(|(s, _)| s == "backend")
            .map(|(_, i)| i)
            .unwrap_or_default()
    }

    pub fn exec(&self, cmd: &str) -> String {
        let id = docker(&[
            "ps",
            "-q",
            "--filter",
            &format!("label=com.docker.compose.project={}", self.project),
            "--filter",
            "label=com.docker.compose.service=backend",
        ]);
        docker(&["exec", id.stdout.trim(), "sh", "-c", cmd]).stdout
    }

    pub fn patch_log(&self) -> String {
        self.exec("cat sites/demo.localhost/patch_log.txt")
    }

    pub fn status(&self) -> serde_json::Value {
        let out = self.run(&["--json", "status"]);
        out.code(0);
        out.json()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        super::remove_project(&self.project);
    }
}

pub fn add_patch(s: &Stack, line: &str) {
    let t = s.p.read("patches.txt") + line + "\n";
    s.p.write("patches.txt", &t);
}
