//! The ports the deploy executor changes the world through. Production uses
//! [`Real`] (the Docker engine via bollard, compose as a child process, the
//! HTTP probe, files); the executor's unit tests use a scripted fake, so every
//! step × failure × recovery case runs in milliseconds.

// The executor is generic over these traits and never boxes them, so the
// futures need no `Send` bound that `async fn` in a public trait would hide.
#![allow(async_fn_in_trait)]

use crate::adapters::compose::{Compose, Target};
use crate::adapters::engine::{ContainerFile, ContainerInfo, Engine, Oneshot, RunOutput};
use crate::error::{Error, Result};
use crate::record::deploy::Gate;
use crate::record::state::{Deployment, State};
use crate::secret::Secret;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// A compose invocation, as data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ComposeCall {
    Up(Target),
    /// `up --remove-orphans` over a running stack: compose recreates what changed
    Replace(Target),
    Down(Target),
    /// `up --no-deps --no-recreate --scale S=N S…`: new containers of these
    /// services beside the running ones, which are left as they are.
    Beside(Target, Vec<(String, usize)>),
}

impl ComposeCall {
    pub fn target(&self) -> &Target {
        match self {
            ComposeCall::Up(t)
            | ComposeCall::Replace(t)
            | ComposeCall::Down(t)
            | ComposeCall::Beside(t, _) => t,
        }
    }
}

pub trait World {
    /// Containers of a compose project (found by label), running or not.
    async fn containers(&self, project: &str) -> Result<Vec<ContainerInfo>>;
    /// Run a command in a running container, no TTY; its stdin is `stdin`
    /// then end-of-file.
    async fn exec(
        &self,
        container: &str,
        cmd: &[String],
        stdin: Option<&Secret>,
        on_line: &mut (dyn FnMut(&str) + Send),
    ) -> Result<RunOutput>;
    /// The containers of these services: name, whether still running, exit code.
    async fn service_states(&self, project: &str, services: &[String]) -> Result<Vec<Oneshot>>;
    async fn compose(&self, call: &ComposeCall, env: &BTreeMap<String, String>) -> Result<()>;
    async fn anonymous_volumes(&self, containers: &[String]) -> Result<Vec<String>>;
    async fn remove_container(&self, id: &str) -> Result<()>;
    /// Restart policy `no`: a container about to be retired stays down.
    async fn no_restart(&self, id: &str) -> Result<()>;
    /// `docker stop`: the container's stop signal, SIGKILL after `grace`.
    async fn stop_container(&self, id: &str, grace: Duration) -> Result<()>;
    /// `docker kill -s SIGNAL`: returns once the signal was sent, not when
    /// the container has exited (the engine's bookkeeping of an exit takes
    /// ~0.3 s here, longer than the process takes to end).
    async fn signal(&self, id: &str, signal: &str) -> Result<()>;
    /// `docker pause` (true) or `docker unpause` (false): its processes
    /// frozen or thawed; thawing one that is not paused is fine.
    async fn pause(&self, id: &str, pause: bool) -> Result<()>;
    /// A container's IPv4 address on its (first) network.
    async fn address(&self, id: &str) -> Result<Option<String>>;
    /// Copy `dir`'s hashed bundles (paths with a `dist` component) from one
    /// container into another; how many files.
    async fn copy_dist(&self, from: &str, to: &str, dir: &str) -> Result<usize>;
    /// Copy the files of `dir` (logs) from a container about to be removed
    /// into another, under `dir/<into>/`; how many files.
    async fn carry_files(&self, from: &str, to: &str, dir: &str, into: &str) -> Result<usize>;
    /// A file of a container, with its mode and owner; None when it has
    /// none there.
    async fn read_file(&self, container: &str, path: &str) -> Result<Option<ContainerFile>>;
    /// Replace a file of a container, with that mode and owner.
    async fn write_file(&self, container: &str, path: &str, file: &ContainerFile) -> Result<()>;
    async fn remove_volume(&self, name: &str) -> Result<()>;
    /// Poll `url` until the gate accepts its answer; Err names the last answer.
    async fn wait_healthy(&self, url: &str, timeout: Duration, gate: Gate) -> Result<Duration>;
    async fn sleep(&self, d: Duration);
    /// Copy a file (the compose snapshot), private to the state directory.
    fn snapshot(&self, from: &Path, to: &Path) -> Result<()>;
}

/// Where deployment records go.
pub trait Records {
    fn save(&self, d: &Deployment) -> Result<()>;
}

impl Records for State {
    fn save(&self, d: &Deployment) -> Result<()> {
        State::save(self, d)
    }
}

/// The production world.
pub struct Real {
    pub engine: Engine,
    pub compose: Compose,
    /// The `@secret` keys of the schema. Compose gets only those its files
    /// reference (`${DB_PASSWORD}` for MariaDB), at the call, never in a
    /// record or a snapshot.
    pub secrets: Vec<(String, Secret)>,
    /// The Host header of the health gate (`health_host`), when it is not
    /// the URL's own.
    pub health_host: Option<String>,
}

/// Does compose file text use variable `key` (`$KEY`, `${KEY}`, `${KEY:-…}`…)?
pub fn references(text: &str, key: &str) -> bool {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    for pat in [format!("${{{key}"), format!("${key}")] {
        let mut rest = text;
        while let Some(i) = rest.find(&pat) {
            let after = &rest[i + pat.len()..];
            if !after.chars().next().is_some_and(ident) {
                return true;
            }
            rest = after;
        }
    }
    false
}

impl World for Real {
    async fn containers(&self, project: &str) -> Result<Vec<ContainerInfo>> {
        self.engine.project_containers(project).await
    }

    async fn exec(
        &self,
        container: &str,
        cmd: &[String],
        stdin: Option<&Secret>,
        on_line: &mut (dyn FnMut(&str) + Send),
    ) -> Result<RunOutput> {
        self.engine.exec(container, cmd, stdin, on_line).await
    }

    async fn service_states(&self, project: &str, services: &[String]) -> Result<Vec<Oneshot>> {
        self.engine.service_states(project, services).await
    }

    async fn compose(&self, call: &ComposeCall, env: &BTreeMap<String, String>) -> Result<()> {
        let args = match call {
            ComposeCall::Up(t) => self.compose.up_args(t),
            ComposeCall::Replace(t) => self.compose.replace_args(t),
            ComposeCall::Down(t) => self.compose.down_args(t),
            ComposeCall::Beside(t, scale) => self.compose.beside_args(t, scale),
        };
        let mut text = String::new();
        for f in &call.target().files {
            text.push_str(&std::fs::read_to_string(f).map_err(|e| Error::io("read", f, e))?);
        }
        let mut env = env.clone();
        for (k, v) in &self.secrets {
            if references(&text, k) {
                // The value leaves its type here, into compose's environment only.
                env.insert(k.clone(), v.expose().to_string());
            }
        }
        tokio::task::block_in_place(|| self.compose.run(&args, &env)).map(|_| ())
    }

    async fn anonymous_volumes(&self, containers: &[String]) -> Result<Vec<String>> {
        self.engine.anonymous_volumes(containers).await
    }

    async fn remove_container(&self, id: &str) -> Result<()> {
        self.engine.remove_container(id).await
    }

    async fn remove_volume(&self, name: &str) -> Result<()> {
        self.engine.remove_volume(name).await
    }

    async fn read_file(&self, container: &str, path: &str) -> Result<Option<ContainerFile>> {
        self.engine.read_file(container, path).await
    }

    async fn write_file(&self, container: &str, path: &str, file: &ContainerFile) -> Result<()> {
        self.engine.write_file(container, path, file).await
    }

    async fn signal(&self, id: &str, signal: &str) -> Result<()> {
        self.engine.signal_container(id, signal).await
    }

    async fn no_restart(&self, id: &str) -> Result<()> {
        self.engine.no_restart(id).await
    }

    async fn pause(&self, id: &str, pause: bool) -> Result<()> {
        self.engine.pause_container(id, pause).await
    }

    async fn stop_container(&self, id: &str, grace: Duration) -> Result<()> {
        self.engine.stop_container(id, grace).await
    }

    async fn address(&self, id: &str) -> Result<Option<String>> {
        Ok(self
            .engine
            .container_addresses(id)
            .await?
            .into_iter()
            .next()
            .map(|(_, ip)| ip))
    }

    async fn copy_dist(&self, from: &str, to: &str, dir: &str) -> Result<usize> {
        self.engine.copy_dist_files(from, to, dir).await
    }

    async fn carry_files(&self, from: &str, to: &str, dir: &str, into: &str) -> Result<usize> {
        self.engine.carry_files(from, to, dir, into).await
    }

    async fn wait_healthy(&self, url: &str, timeout: Duration, gate: Gate) -> Result<Duration> {
        let url = url.to_string();
        let host = self.health_host.clone();
        tokio::task::spawn_blocking(move || match gate {
            Gate::Open => crate::adapters::health::wait_healthy(&url, host.as_deref(), timeout),
            // In maintenance the application itself answers 503; a proxy
            // whose upstream is down answers 502/504, or nothing answers.
            Gate::Sealed => crate::adapters::health::wait_until(
                &url,
                host.as_deref(),
                timeout,
                |c| (200..300).contains(&c) || c == 503,
                "2xx or the maintenance 503",
            ),
        })
        .await
        .map_err(|e| Error::failed(format!("health probe task: {e}")))?
        .map_err(Error::failed)
    }

    async fn sleep(&self, d: Duration) {
        tokio::time::sleep(d).await
    }

    fn snapshot(&self, from: &Path, to: &Path) -> Result<()> {
        let data = std::fs::read(from).map_err(|e| Error::io("read", from, e))?;
        if let Some(d) = to.parent() {
            // Inside the state directory: the owner's only, like the rest.
            std::os::unix::fs::DirBuilderExt::mode(
                std::fs::DirBuilder::new().recursive(true),
                0o700,
            )
            .create(d)
            .map_err(|e| Error::io("create", d, e))?;
        }
        crate::record::state::write_private(to, &data)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_variable_is_referenced_only_by_its_whole_name() {
        use super::references;
        assert!(references("x: ${DB_PASSWORD:-123}", "DB_PASSWORD"));
        assert!(references("x: $DB_PASSWORD\n", "DB_PASSWORD"));
        assert!(references("x: ${DB_PASSWORD}", "DB_PASSWORD"));
        assert!(!references("x: ${DB_PASSWORD_FILE}", "DB_PASSWORD"));
        assert!(!references("x: ${DE_MACRS_PAT_X}", "DE_MACRS_PAT"));
        assert!(!references("nothing", "DB_PASSWORD"));
    }
}
