//! Compose invocations as plain argument lists, for the v2 plugin
//! (`docker compose`) and the v1 binary (`docker-compose`).
//!
//! Every invocation names the project (`-p`), the files (`-f` each, in
//! order) and the project directory (so a snapshot of the files resolves
//! relative paths as the originals did), and reads no `.env` of its own
//! (`--env-file` points at an empty file): de-build hands compose exactly the
//! non-secret keys.

use crate::error::{Error, Result};
pub use crate::record::deploy::Target;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compose {
    /// `["docker", "compose"]` or `["docker-compose"]` (or `DE_COMPOSE`).
    pub program: Vec<String>,
}

impl Compose {
    pub fn v2() -> Compose {
        Compose {
            program: vec!["docker".into(), "compose".into()],
        }
    }

    pub fn v1() -> Compose {
        Compose {
            program: vec!["docker-compose".into()],
        }
    }

    /// `DE_COMPOSE` if set (e.g. `docker-compose`), else the v2 plugin when
    /// `docker compose version` works, else the v1 binary.
    pub fn detect() -> Compose {
        if let Ok(v) = std::env::var("DE_COMPOSE") {
            let program: Vec<String> = v.split_whitespace().map(str::to_string).collect();
            if !program.is_empty() {
                return Compose { program };
            }
        }
        let v2 = child_command("docker")
            .args(["compose", "version"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if v2 {
            Compose::v2()
        } else {
            Compose::v1()
        }
    }

    fn base(&self, t: &Target) -> Vec<String> {
        let mut a: Vec<String> = self.program[1..].to_vec();
        a.extend(["--project-name".into(), t.project.clone()]);
        for f in &t.files {
            a.extend(["--file".into(), f.display().to_string()]);
        }
        a.extend([
            "--project-directory".into(),
            t.project_dir.display().to_string(),
            "--env-file".into(),
            t.empty_env_file.display().to_string(),
        ]);
        a
    }

    pub fn up_args(&self, t: &Target) -> Vec<String> {
        let mut a = self.base(t);
        a.extend(["up", "--detach", "--remove-orphans"].map(String::from));
        a
    }

    /// Replace a running stack in one pass: compose recreates the containers
    /// whose configuration changed (those of the release image: its tag
    /// changed) and leaves the rest (database, redis) running. No
    /// `--renew-anon-volumes`: in v2 it recreates every container, and it
    /// would wipe frappe_docker's anonymous `logs` volume (assets live in the
    /// image now, so nothing stale is carried over).
    pub fn replace_args(&self, t: &Target) -> Vec<String> {
        let mut a = self.base(t);
        a.extend(["up", "--detach", "--remove-orphans"].map(String::from));
        a
    }

    /// New containers of `scale`'s services beside the running ones: compose
    /// scales each to the count given and, with `--no-recreate`, leaves the
    /// existing containers (the old release) untouched; `--no-deps` leaves
    /// every other service alone.
    pub fn beside_args(&self, t: &Target, scale: &[(String, usize)]) -> Vec<String> {
        let mut a = self.base(t);
        a.extend(["up", "--detach", "--no-deps", "--no-recreate"].map(String::from));
        for (s, n) in scale {
            a.push("--scale".into());
            a.push(format!("{s}={n}"));
        }
        a.extend(scale.iter().map(|(s, _)| s.clone()));
        a
    }

    pub fn down_args(&self, t: &Target) -> Vec<String> {
        let mut a = self.base(t);
        a.extend(["down", "--remove-orphans"].map(String::from));
        a
    }

    pub fn config_args(&self, t: &Target) -> Vec<String> {
        let mut a = self.base(t);
        a.extend(["config", "--quiet"].map(String::from));
        a
    }

    /// Run one invocation with `env` on top of the allow-listed environment
    /// (see [`child_command`]), capturing its output.
    pub fn run(&self, args: &[String], env: &BTreeMap<String, String>) -> Result<String> {
        let mut cmd = child_command(&self.program[0]);
        cmd.args(args);
        cmd.envs(env);
        let shown = format!("{} {}", self.program[0], args.join(" "));
        let started = std::time::Instant::now();
        let out = cmd.output().map_err(|e| Error::Failed {
            message: format!("could not run `{}`: {e}", self.program[0]),
            hint: Some(
                "install docker-compose or the docker compose plugin, or point DE_COMPOSE at it"
                    .into(),
            ),
        })?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let tail: Vec<&str> = text.lines().rev().take(3).collect();
        crate::ui::logfile::action(
            &shown,
            out.status.success(),
            started.elapsed(),
            &tail.join(" | "),
        );
        if out.status.success() {
            Ok(text)
        } else {
            Err(Error::Failed {
                message: format!("`{shown}` failed:\n{}", text.trim_end()),
                hint: None,
            })
        }
    }
}

/// A command whose environment is the allow-list only.
pub fn child_command(program: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear();
    for k in crate::config::CHILD_ENV_ALLOW {
        if let Some(v) = std::env::var_os(k) {
            cmd.env(k, v);
        }
    }
    cmd
}

/// Write an empty env file for `--env-file` (compose must not read `.env`).
/// Like everything in the state directory: the directory 0700, the file 0600.
pub fn empty_env_file(state_dir: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)
        .map_err(|e| Error::io("create", state_dir, e))?;
    let p = state_dir.join("compose.env");
    if !p.exists() {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&p)
            .map_err(|e| Error::io("write", &p, e))?;
        std::io::Write::write_all(
            &mut f,
            b"# de-build passes compose its variables itself; this file stays empty.\n",
        )
        .map_err(|e| Error::io("write", &p, e))?;
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_empty_env_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let state = d.path().join(".de-build");
        let p = empty_env_file(&state).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&p), 0o600);
        assert_eq!(mode(&state), 0o700);
        assert_eq!(empty_env_file(&state).unwrap(), p, "written once");
    }

    fn target() -> Target {
        Target {
            project: "erp".into(),
            files: vec!["/p/.de-build/compose/7/compose.yaml".into()],
            project_dir: "/p".into(),
            empty_env_file: "/p/.de-build/compose.env".into(),
        }
    }

    #[test]
    fn v2_and_v1_argument_lists() {
        let t = target();
        let common = [
            "--project-name",
            "erp",
            "--file",
            "/p/.de-build/compose/7/compose.yaml",
            "--project-directory",
            "/p",
            "--env-file",
            "/p/.de-build/compose.env",
        ];
        let mut up2: Vec<&str> = vec!["compose"];
        up2.extend(common);
        up2.extend(["up", "--detach", "--remove-orphans"]);
        assert_eq!(Compose::v2().up_args(&t), up2);
        let mut down1: Vec<&str> = common.to_vec();
        down1.extend(["down", "--remove-orphans"]);
        assert_eq!(Compose::v1().down_args(&t), down1);
        assert_eq!(Compose::v1().program, vec!["docker-compose"]);
        assert_eq!(
            Compose::v1().replace_args(&t)[8..],
            ["up", "--detach", "--remove-orphans"]
        );
        assert_eq!(
            Compose::v2().config_args(&t).last().map(String::as_str),
            Some("--quiet")
        );
    }

    #[test]
    fn every_file_of_a_set_gets_its_own_file_flag_in_order() {
        let t = Target {
            files: vec![
                "/p/.de-build/compose/7/compose.yaml".into(),
                "/p/.de-build/compose/7/overrides/compose.mariadb.yaml".into(),
            ],
            ..target()
        };
        assert_eq!(
            Compose::v2().down_args(&t)[..9],
            [
                "compose",
                "--project-name",
                "erp",
                "--file",
                "/p/.de-build/compose/7/compose.yaml",
                "--file",
                "/p/.de-build/compose/7/overrides/compose.mariadb.yaml",
                "--project-directory",
                "/p",
            ]
        );
    }
}
