//! The ports the deploy executor changes the world through. Production uses
//! [`Real`] (the Docker engine via bollard, compose as a child process, the
//! HTTP probe, files); the executor's unit tests use a scripted fake, so every
//! step × failure × recovery case runs in milliseconds.

// The executor is generic over these traits and never boxes them, so the
// futures need no `Send` bound that `async fn` in a public trait would hide.
#![allow(async_fn_in_trait)]

use crate::adapters::compose::{Compose, Target};
use crate::adapters::engine::{ContainerInfo, Engine, RunOutput};
use crate::error::{Error, Result};
use crate::record::deploy::Gate;
use crate::record::state::{Deployment, State};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// A compose invocation, as data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ComposeCall {
    Up(Target),
    /// `up --force-recreate --renew-anon-volumes --remove-orphans`
    Replace(Target),
    Down(Target),
}

impl ComposeCall {
    pub fn target(&self) -> &Target {
        match self {
            ComposeCall::Up(t) | ComposeCall::Replace(t) | ComposeCall::Down(t) => t,
        }
    }
}

pub trait World {
    /// Containers of a compose project (found by label), running or not.
    async fn containers(&self, project: &str) -> Result<Vec<ContainerInfo>>;
    /// Run a command in a running container, no TTY, stdin closed.
    async fn exec(
        &self,
        container: &str,
        cmd: &[String],
        on_line: &mut (dyn FnMut(&str) + Send),
    ) -> Result<RunOutput>;
    async fn compose(&self, call: &ComposeCall, env: &BTreeMap<String, String>) -> Result<()>;
    async fn anonymous_volumes(&self, containers: &[String]) -> Result<Vec<String>>;
    async fn remove_container(&self, id: &str) -> Result<()>;
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
}

impl World for Real {
    async fn containers(&self, project: &str) -> Result<Vec<ContainerInfo>> {
        self.engine.project_containers(project).await
    }

    async fn exec(
        &self,
        container: &str,
        cmd: &[String],
        on_line: &mut (dyn FnMut(&str) + Send),
    ) -> Result<RunOutput> {
        self.engine.exec(container, cmd, on_line).await
    }

    async fn compose(&self, call: &ComposeCall, env: &BTreeMap<String, String>) -> Result<()> {
        let args = match call {
            ComposeCall::Up(t) => self.compose.up_args(t),
            ComposeCall::Replace(t) => self.compose.replace_args(t),
            ComposeCall::Down(t) => self.compose.down_args(t),
        };
        tokio::task::block_in_place(|| self.compose.run(&args, env)).map(|_| ())
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

    async fn wait_healthy(&self, url: &str, timeout: Duration, gate: Gate) -> Result<Duration> {
        let url = url.to_string();
        tokio::task::spawn_blocking(move || match gate {
            Gate::Open => crate::adapters::health::wait_healthy(&url, timeout),
            // In maintenance the application itself answers 503; a proxy
            // whose upstream is down answers 502/504, or nothing answers.
            Gate::Sealed => crate::adapters::health::wait_until(
                &url,
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
