//! The Docker engine, through its API (bollard). Images, tags, containers,
//! exec. The BuildKit build itself lives in [`buildkit`].

pub mod buildkit;
pub mod session;

use crate::error::{Error, Result};
use bollard::query_parameters as q;
use bollard::Docker;
use futures_util::StreamExt;
use std::collections::HashMap;

/// What de-build needs to know about one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    pub id: String,
    pub repo_tags: Vec<String>,
    pub labels: HashMap<String, String>,
    pub working_dir: String,
    pub created: String,
    /// sha256 over the layers and the runtime config (labels excluded): two
    /// images with the same value behave the same when run.
    pub content_digest: String,
}

/// A container of a compose project, found by label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    pub name: String,
    pub service: String,
    /// The image as the container was created from it (a reference, or an ID).
    pub image: String,
    /// The ID of the image it runs.
    pub image_id: String,
    pub state: String,
}

/// A one-shot service's container as the engine sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Oneshot {
    pub name: String,
    pub service: String,
    pub running: bool,
    pub exit_code: i64,
}

/// Exit code and combined output of a finished container or exec.
/// A file read from a container: its text, mode and owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerFile {
    pub text: String,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
}

#[derive(Debug, Clone)]
pub struct RunOutput {
    pub exit_code: i64,
    pub output: String,
}

#[derive(Clone)]
pub struct Engine {
    pub docker: Docker,
    /// (engine version, API version), read once at connect.
    versions: (String, String),
}

fn host_hint() -> String {
    std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into())
}

/// A new archive of the entries of `tar_bytes` that `target` keeps, each
/// under the path it gives (`target(path, is_file)`); with how many files.
/// `what` names the writing in errors.
fn repack(
    tar_bytes: &[u8],
    what: &str,
    mut target: impl FnMut(&std::path::Path, bool) -> Option<std::path::PathBuf>,
) -> Result<(Vec<u8>, usize)> {
    let read = |e| Error::engine("read the container archive", e);
    let mut out = tar::Builder::new(Vec::new());
    let mut files = 0;
    let mut archive = tar::Archive::new(tar_bytes);
    for entry in archive.entries().map_err(read)? {
        let mut entry = entry.map_err(read)?;
        let path = entry.path().map_err(read)?.into_owned();
        let mut header = entry.header().clone();
        let is_file = header.entry_type().is_file();
        let Some(to) = target(&path, is_file) else {
            continue;
        };
        files += usize::from(is_file);
        out.append_data(&mut header, &to, &mut entry)
            .map_err(|e| Error::engine(what, e))?;
    }
    let data = out.into_inner().map_err(|e| Error::engine(what, e))?;
    Ok((data, files))
}

fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// A bollard error as ours: answered by the engine, or no answer at all
/// (only then the "is it running?" hint).
pub fn engine_error(action: impl Into<String>, e: &bollard::errors::Error) -> Error {
    use bollard::errors::Error as B;
    let no_answer = matches!(
        e,
        B::IOError { .. }
            | B::HyperResponseError { .. }
            | B::HyperLegacyError { .. }
            | B::HttpClientError { .. }
            | B::RequestTimeoutError
            | B::SocketNotFoundError(_)
    );
    if no_answer {
        Error::engine_unreachable(action, describe(e))
    } else {
        Error::engine(action, describe(e))
    }
}

/// bollard's error text without its Debug-style wrapping.
pub fn describe(e: &bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError {
            status_code,
            message,
        } => format!("{message} (HTTP {status_code})"),
        other => other.to_string(),
    }
}

impl Engine {
    /// Connect as the docker CLI would (DOCKER_HOST, else the local socket)
    /// and agree on an API version: bollard's default is newer than 20.10's 1.41.
    pub async fn connect() -> Result<Engine> {
        let action = || format!("connect to {}", host_hint());
        let docker = Docker::connect_with_defaults().map_err(|e| engine_error(action(), &e))?;
        let docker = tokio::time::timeout(
            std::time::Duration::from_secs(15),
            docker.negotiate_version(),
        )
        .await
        .map_err(|_| Error::engine_unreachable(action(), "no answer within 15 s"))?
        .map_err(|e| engine_error(action(), &e))?;
        // One request proves the engine answers and tells its version.
        let v = crate::ui::logfile::timed("engine version", docker.version())
            .await
            .map_err(|e| engine_error(action(), &e))?;
        let versions = (
            v.version.unwrap_or_default(),
            v.api_version.unwrap_or_default(),
        );
        Ok(Engine { docker, versions })
    }

    /// (engine version, API version) for manifests.
    pub async fn version(&self) -> Result<(String, String)> {
        Ok(self.versions.clone())
    }

    pub async fn image(&self, reference: &str) -> Result<Option<ImageInfo>> {
        match self.docker.inspect_image(reference).await {
            Ok(i) => {
                let config = i.config.unwrap_or_default();
                let layers = i.root_fs.and_then(|r| r.layers).unwrap_or_default();
                let fingerprint = serde_json::json!({
                    "layers": layers, "cmd": config.cmd, "entrypoint": config.entrypoint,
                    "env": config.env, "workdir": config.working_dir, "user": config.user,
                });
                Ok(Some(ImageInfo {
                    id: i.id.unwrap_or_default(),
                    // API 1.41 reports a dangling image as ["<none>:<none>"].
                    repo_tags: i
                        .repo_tags
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|t| t != "<none>:<none>")
                        .collect(),
                    labels: config.labels.unwrap_or_default(),
                    working_dir: config.working_dir.unwrap_or_default(),
                    created: i.created.map(|c| c.to_string()).unwrap_or_default(),
                    content_digest: crate::util::sha256_hex(fingerprint.to_string().as_bytes()),
                }))
            }
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(engine_error(format!("inspect image {reference}"), &e)),
        }
    }

    /// Point `repo:tag` at `source` (an ID or reference); moves the tag if held elsewhere.
    pub async fn tag(&self, source: &str, repo: &str, tag: &str) -> Result<()> {
        let opts = q::TagImageOptions {
            repo: Some(repo.to_string()),
            tag: Some(tag.to_string()),
        };
        crate::ui::logfile::timed(
            &format!("engine tag {source} {repo}:{tag}"),
            self.docker.tag_image(source, Some(opts)),
        )
        .await
        .map_err(|e| engine_error(format!("tag {source} as {repo}:{tag}"), &e))
    }

    /// Remove one tag; the image stays while it has other tags (noprune).
    pub async fn untag(&self, reference: &str) -> Result<()> {
        let opts = q::RemoveImageOptions {
            force: false,
            noprune: true,
            ..Default::default()
        };
        crate::ui::logfile::timed(
            &format!("engine untag {reference}"),
            self.docker.remove_image(reference, Some(opts), None),
        )
        .await
        .map(|_| ())
        .map_err(|e| engine_error(format!("remove tag {reference}"), &e))
    }

    /// Delete an image by ID (it must carry no tag another caller relies on).
    pub async fn remove_image(&self, id: &str, force: bool) -> Result<()> {
        let opts = q::RemoveImageOptions {
            force,
            noprune: false,
            ..Default::default()
        };
        match crate::ui::logfile::timed(
            &format!("engine remove image {id}"),
            self.docker.remove_image(id, Some(opts), None),
        )
        .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(engine_error(format!("remove image {id}"), &e)),
        }
    }

    /// Every image with a tag in `repo`, as (id, tags).
    pub async fn images_in_repo(&self, repo: &str) -> Result<Vec<(String, Vec<String>)>> {
        let mut filters = HashMap::new();
        filters.insert("reference".to_string(), vec![format!("{repo}:*")]);
        let opts = q::ListImagesOptions {
            all: false,
            filters: Some(filters),
            ..Default::default()
        };
        let list = self
            .docker
            .list_images(Some(opts))
            .await
            .map_err(|e| engine_error("list images", &e))?;
        Ok(list
            .into_iter()
            .map(|s| {
                (
                    s.id,
                    s.repo_tags
                        .into_iter()
                        .filter(|t| t != "<none>:<none>")
                        .collect(),
                )
            })
            .collect())
    }

    /// Run `cmd` in a fresh container of `image`, wait, collect output, remove it.
    /// Used by the smoke test: no environment, no network, nothing mounted.
    pub async fn run_once(
        &self,
        image: &str,
        cmd: &[String],
        list_dir: Option<&str>,
    ) -> Result<(RunOutput, Option<Vec<String>>)> {
        let body = bollard::models::ContainerCreateBody {
            image: Some(image.to_string()),
            cmd: Some(cmd.to_vec()),
            entrypoint: Some(vec![]),
            network_disabled: Some(true),
            labels: Some(HashMap::from([(
                "de-build.smoke-test".to_string(),
                "1".to_string(),
            )])),
            host_config: Some(bollard::models::HostConfig {
                network_mode: Some("none".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let created = self
            .docker
            .create_container(None::<q::CreateContainerOptions>, body)
            .await
            .map_err(|e| engine_error(format!("create a smoke-test container from {image}"), &e))?;
        let id = created.id;
        let result = crate::ui::logfile::timed(
            &format!("engine run {image} {}", cmd.join(" ")),
            self.run_created(&id, list_dir),
        )
        .await;
        // A smoke-test container left behind is litter, not a failed build: say it.
        if let Err(e) = self
            .docker
            .remove_container(
                &id,
                Some(q::RemoveContainerOptions {
                    force: true,
                    v: true,
                    ..Default::default()
                }),
            )
            .await
        {
            crate::ui::output::diag(&format!(
                "warning: could not remove the smoke-test container {id}: {}",
                describe(&e)
            ));
        }
        result
    }

    async fn run_created(
        &self,
        id: &str,
        list_dir: Option<&str>,
    ) -> Result<(RunOutput, Option<Vec<String>>)> {
        self.docker
            .start_container(id, None::<q::StartContainerOptions>)
            .await
            .map_err(|e| engine_error("start the smoke-test container", &e))?;
        let mut wait = self
            .docker
            .wait_container(id, None::<q::WaitContainerOptions>);
        let exit_code = match wait.next().await {
            Some(Ok(r)) => r.status_code,
            // bollard reports a non-zero exit as an error carrying the code.
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
            Some(Err(e)) => return Err(engine_error("wait for the smoke-test container", &e)),
            None => -1,
        };
        let mut logs = self.docker.logs(
            id,
            Some(q::LogsOptions {
                stdout: true,
                stderr: true,
                ..Default::default()
            }),
        );
        let mut output = String::new();
        while let Some(Ok(chunk)) = logs.next().await {
            output.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
        }
        let listing = match list_dir {
            Some(path) => Some(self.list_dir(id, path).await?),
            None => None,
        };
        Ok((RunOutput { exit_code, output }, listing))
    }

    /// `path` of a container as a tar archive (the archive API); None when
    /// the path does not exist. `what` names the container in an error.
    async fn download_tar(
        &self,
        container: &str,
        path: &str,
        what: &str,
    ) -> Result<Option<Vec<u8>>> {
        let mut stream = self.docker.download_from_container(
            container,
            Some(q::DownloadFromContainerOptions {
                path: path.to_string(),
            }),
        );
        let mut tar_bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(b) => tar_bytes.extend_from_slice(&b),
                Err(e) if is_not_found(&e) => return Ok(None),
                Err(e) => return Err(engine_error(format!("read {path} from {what}"), &e)),
            }
        }
        Ok(Some(tar_bytes))
    }

    /// Extract a tar archive into `dir` of a container (the archive API);
    /// `what` says what it was, in an error.
    async fn upload_tar(
        &self,
        container: &str,
        dir: &str,
        data: Vec<u8>,
        what: &str,
    ) -> Result<()> {
        self.docker
            .upload_to_container(
                container,
                Some(q::UploadToContainerOptions {
                    path: dir.to_string(),
                    ..Default::default()
                }),
                bollard::body_full(data.into()),
            )
            .await
            .map_err(|e| engine_error(what.to_string(), &e))
    }

    /// A file of a container, as text with its mode and owner (the archive
    /// API); None when absent.
    pub async fn read_file(&self, container: &str, path: &str) -> Result<Option<ContainerFile>> {
        let Some(tar_bytes) = self.download_tar(container, path, container).await? else {
            return Ok(None);
        };
        let mut archive = tar::Archive::new(&tar_bytes[..]);
        let entries = archive
            .entries()
            .map_err(|e| Error::engine("read the container archive", e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| Error::engine("read the container archive", e))?;
            let h = entry.header();
            if !h.entry_type().is_file() {
                continue;
            }
            let bad = |e| Error::engine(format!("read {path} from {container}"), e);
            let (mode, uid, gid) = (
                h.mode().map_err(bad)?,
                h.uid().map_err(bad)?,
                h.gid().map_err(bad)?,
            );
            let mut text = String::new();
            std::io::Read::read_to_string(&mut entry, &mut text).map_err(bad)?;
            return Ok(Some(ContainerFile {
                text,
                mode,
                uid,
                gid,
            }));
        }
        Ok(None)
    }

    /// Replace a file of a container (the archive API: no shell needed in
    /// it) with this text, mode and owner: the engine extracts with the
    /// archive's owner, so a file the container's user wrote stays its own
    /// (frappe_docker's frontend runs as `frappe` and writes its config
    /// anew at each start).
    pub async fn write_file(
        &self,
        container: &str,
        path: &str,
        file: &ContainerFile,
    ) -> Result<()> {
        let p = std::path::Path::new(path);
        let (Some(parent), Some(name)) = (p.parent(), p.file_name()) else {
            return Err(Error::failed(format!("{path} is not a file path")));
        };
        let mut header = tar::Header::new_gnu();
        header.set_size(file.text.len() as u64);
        header.set_mode(file.mode);
        header.set_uid(file.uid);
        header.set_gid(file.gid);
        header.set_mtime(chrono::Utc::now().timestamp().max(0) as u64);
        header.set_cksum();
        let mut out = tar::Builder::new(Vec::new());
        out.append_data(&mut header, name, file.text.as_bytes())
            .map_err(|e| Error::engine("write the file archive", e))?;
        let data = out
            .into_inner()
            .map_err(|e| Error::engine("write the file archive", e))?;
        let parent = parent.display().to_string();
        self.upload_tar(
            container,
            &parent,
            data,
            &format!("write {path} in {container}"),
        )
        .await
    }

    /// Top-level entries of a directory in a (stopped) container, via the archive API.
    pub async fn list_dir(&self, container: &str, path: &str) -> Result<Vec<String>> {
        let Some(tar_bytes) = self.download_tar(container, path, "the container").await? else {
            return Ok(vec![]);
        };
        let mut names = std::collections::BTreeSet::new();
        let mut archive = tar::Archive::new(&tar_bytes[..]);
        let entries = archive
            .entries()
            .map_err(|e| Error::engine("read the container archive", e))?;
        for entry in entries.flatten() {
            if let Ok(p) = entry.path() {
                // Entries are `apps/<name>/...`: keep the second component.
                if let Some(name) = p.components().nth(1) {
                    names.insert(name.as_os_str().to_string_lossy().to_string());
                }
            }
        }
        Ok(names.into_iter().collect())
    }

    /// Containers of a compose project, found by label (names differ between
    /// compose v1 `proj_svc_1` and v2 `proj-svc-1`).
    pub async fn project_containers(&self, project: &str) -> Result<Vec<ContainerInfo>> {
        let mut filters = HashMap::new();
        filters.insert(
            "label".to_string(),
            vec![format!("com.docker.compose.project={project}")],
        );
        let opts = q::ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        };
        let list = self
            .docker
            .list_containers(Some(opts))
            .await
            .map_err(|e| engine_error(format!("list containers of project {project}"), &e))?;
        Ok(list
            .into_iter()
            .map(|c| {
                let labels = c.labels.unwrap_or_default();
                ContainerInfo {
                    id: c.id.unwrap_or_default(),
                    name: c
                        .names
                        .unwrap_or_default()
                        .first()
                        .map(|n| n.trim_start_matches('/').to_string())
                        .unwrap_or_default(),
                    service: labels
                        .get("com.docker.compose.service")
                        .cloned()
                        .unwrap_or_default(),
                    image: c.image.unwrap_or_default(),
                    image_id: c.image_id.unwrap_or_default(),
                    state: c.state.map(|s| s.to_string()).unwrap_or_default(),
                }
            })
            .collect())
    }

    /// The containers of these services of a project, with their run state
    /// and exit code (compose's one-shot services: frappe_docker's
    /// `configurator`, `create-site`).
    pub async fn service_states(&self, project: &str, services: &[String]) -> Result<Vec<Oneshot>> {
        let mut out = Vec::new();
        for c in self.project_containers(project).await? {
            if !services.contains(&c.service) {
                continue;
            }
            let i = match self
                .docker
                .inspect_container(&c.id, None::<q::InspectContainerOptions>)
                .await
            {
                Ok(i) => i,
                Err(e) if is_not_found(&e) => continue,
                Err(e) => return Err(Error::engine(format!("inspect {}", c.name), describe(&e))),
            };
            let st = i.state.unwrap_or_default();
            out.push(Oneshot {
                name: c.name,
                service: c.service,
                running: st.running.unwrap_or(false)
                    || st.restarting.unwrap_or(false)
                    || c.state == "created",
                exit_code: st.exit_code.unwrap_or(0),
            });
        }
        Ok(out)
    }

    /// Anonymous volumes (64-hex names) mounted by these containers.
    pub async fn anonymous_volumes(&self, containers: &[String]) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for id in containers {
            let c = match self
                .docker
                .inspect_container(id, None::<q::InspectContainerOptions>)
                .await
            {
                Ok(c) => c,
                Err(e) if is_not_found(&e) => continue,
                Err(e) => return Err(engine_error(format!("inspect container {id}"), &e)),
            };
            for m in c.mounts.unwrap_or_default() {
                let name = m.name.unwrap_or_default();
                let anonymous = name.len() == 64 && name.chars().all(|ch| ch.is_ascii_hexdigit());
                if anonymous && !out.contains(&name) {
                    out.push(name);
                }
            }
        }
        Ok(out)
    }

    pub async fn remove_volume(&self, name: &str) -> Result<()> {
        match crate::ui::logfile::timed(
            &format!("engine remove volume {name}"),
            self.docker
                .remove_volume(name, None::<q::RemoveVolumeOptions>),
        )
        .await
        {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(engine_error(format!("remove volume {name}"), &e)),
        }
    }

    /// Stop a container the way `docker stop` does (its stop signal, then
    /// SIGKILL after `grace`); one already gone or stopped is fine.
    pub async fn stop_container(&self, id: &str, grace: std::time::Duration) -> Result<()> {
        let opts = q::StopContainerOptions {
            t: Some(grace.as_secs().min(i32::MAX as u64) as i32),
            ..Default::default()
        };
        match crate::ui::logfile::timed(
            &format!("engine stop container {id}"),
            self.docker.stop_container(id, Some(opts)),
        )
        .await
        {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(engine_error(format!("stop container {id}"), &e)),
        }
    }

    /// Send a signal to a container's main process and return at once
    /// (`docker kill -s`); one already gone or stopped is fine.
    pub async fn signal_container(&self, id: &str, signal: &str) -> Result<()> {
        let opts = q::KillContainerOptions {
            signal: signal.to_string(),
        };
        match self.docker.kill_container(id, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            // 409: the container is not running.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(()),
            Err(e) => Err(engine_error(
                format!("signal {signal} to container {id}"),
                &e,
            )),
        }
    }

    /// Freeze (`docker pause`) or thaw (`docker unpause`) every process of a
    /// container: frozen, it does nothing and the engine keeps it as is (no
    /// exit to clean up). Thawing one that is not frozen is fine.
    pub async fn pause_container(&self, id: &str, pause: bool) -> Result<()> {
        let what = if pause { "pause" } else { "unpause" };
        let res = if pause {
            self.docker.pause_container(id).await
        } else {
            self.docker.unpause_container(id).await
        };
        match res {
            Ok(()) => Ok(()),
            // Unpausing one that is not paused (the engine thaws a paused
            // container it sends its stop signal, `docker kill`), or has
            // stopped since: engine 20.10 answers 500 "… is not paused" or
            // "cannot resume a stopped container", newer ones 409.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409 | 500,
                message,
            }) if !pause
                && (message.contains("is not paused") || message.contains("stopped container")) =>
            {
                Ok(())
            }
            Err(e) if !pause && is_not_found(&e) => Ok(()),
            Err(e) => Err(engine_error(format!("{what} container {id}"), &e)),
        }
    }

    /// Set a container's restart policy to `no`: one that is retired by
    /// making its process exit (`nginx -s quit`) must not be started again
    /// by `restart: unless-stopped`.
    pub async fn no_restart(&self, id: &str) -> Result<()> {
        use bollard::models::{ContainerUpdateBody, RestartPolicy, RestartPolicyNameEnum};
        let body = ContainerUpdateBody {
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::NO),
                maximum_retry_count: None,
            }),
            ..Default::default()
        };
        match self.docker.update_container(id, body).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(engine_error(
                format!("update the restart policy of {id}"),
                &e,
            )),
        }
    }

    /// The container's addresses on its networks (IPv4), by network name.
    pub async fn container_addresses(&self, id: &str) -> Result<Vec<(String, String)>> {
        let c = self
            .docker
            .inspect_container(id, None::<q::InspectContainerOptions>)
            .await
            .map_err(|e| engine_error(format!("inspect container {id}"), &e))?;
        let mut out = Vec::new();
        if let Some(nets) = c.network_settings.and_then(|n| n.networks) {
            for (name, n) in nets {
                if let Some(ip) = n.ip_address.filter(|ip| !ip.is_empty()) {
                    out.push((name, ip));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Copy the files under `dir` of `from` whose path has a `dist`
    /// component (frappe's hashed bundles: `assets/<app>/dist/...`) into the
    /// same place in `to`; returns how many files. Other files (the
    /// `assets.json` that names the release's own bundles) stay as they are.
    pub async fn copy_dist_files(&self, from: &str, to: &str, dir: &str) -> Result<usize> {
        let Some(tar_bytes) = self.download_tar(from, dir, from).await? else {
            return Ok(0);
        };
        let (data, files) = repack(&tar_bytes, "write the assets archive", |path, _| {
            path.components()
                .any(|c| c.as_os_str() == "dist")
                .then(|| path.to_path_buf())
        })?;
        if files == 0 {
            return Ok(0);
        }
        // The archive's entries start with the directory's own name.
        let parent = std::path::Path::new(dir)
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "/".into());
        self.upload_tar(to, &parent, data, &format!("copy assets into {to}"))
            .await?;
        Ok(files)
    }

    /// Copy the files of `dir` in `from` (a container about to be removed
    /// with its anonymous volumes, e.g. frappe_docker's `logs`) into `dir`
    /// of `to`, under `dir/<into>/`: the new container's own files of the
    /// same names are left alone. What an earlier carry put in a
    /// subdirectory keeps its place. How many files.
    pub async fn carry_files(&self, from: &str, to: &str, dir: &str, into: &str) -> Result<usize> {
        let Some(tar_bytes) = self.download_tar(from, dir, from).await? else {
            return Ok(0);
        };
        let (data, files) = repack(&tar_bytes, "write the files archive", |path, is_file| {
            if !is_file {
                return None;
            }
            let mut parts = path.components();
            // `logs/frappe.log` -> `logs/<into>/frappe.log`.
            let (Some(top), Some(first)) = (parts.next(), parts.next()) else {
                return None;
            };
            let rest: std::path::PathBuf = parts.collect();
            Some(match rest.as_os_str().is_empty() {
                true => std::path::Path::new(top.as_os_str()).join(into).join(first),
                false => path.to_path_buf(),
            })
        })?;
        if files == 0 {
            return Ok(0);
        }
        let parent = std::path::Path::new(dir)
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "/".into());
        self.upload_tar(to, &parent, data, &format!("copy {dir} into {to}"))
            .await?;
        Ok(files)
    }

    pub async fn remove_container(&self, id: &str) -> Result<()> {
        let opts = q::RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        crate::ui::logfile::timed(
            &format!("engine remove container {id}"),
            self.docker.remove_container(id, Some(opts)),
        )
        .await
        .map_err(|e| engine_error(format!("remove container {id}"), &e))
    }

    /// Run `cmd` in a running container, no TTY, streaming each output line
    /// to `on_line`; returns the exit code and the whole output. Its stdin is
    /// `stdin` then end-of-file (or nothing at all): a command that prompts
    /// fails at once instead of hanging.
    pub async fn exec(
        &self,
        container: &str,
        cmd: &[String],
        stdin: Option<&crate::secret::Secret>,
        mut on_line: impl FnMut(&str),
    ) -> Result<RunOutput> {
        use bollard::exec::{CreateExecOptions, StartExecResults};
        use tokio::io::AsyncWriteExt;
        let created = self
            .docker
            .create_exec(
                container,
                CreateExecOptions {
                    cmd: Some(cmd.to_vec()),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    attach_stdin: Some(true),
                    tty: Some(false),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| engine_error(format!("exec `{}`", cmd.join(" ")), &e))?;
        let mut output = String::new();
        let mut pending = String::new();
        if let StartExecResults::Attached {
            output: mut stream,
            mut input,
        } = self
            .docker
            .start_exec(&created.id, None)
            .await
            .map_err(|e| engine_error(format!("exec `{}`", cmd.join(" ")), &e))?
        {
            // The secret leaves its type only here, straight into the pipe.
            let fed = async {
                if let Some(s) = stdin {
                    input.write_all(s.expose().as_bytes()).await?;
                    input.write_all(b"\n").await?;
                }
                input.shutdown().await
            };
            fed.await.map_err(|e| {
                Error::engine(format!("write to the stdin of `{}`", cmd.join(" ")), e)
            })?;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk
                    .map_err(|e| engine_error(format!("read output of `{}`", cmd.join(" ")), &e))?;
                let text = String::from_utf8_lossy(&chunk.into_bytes()).to_string();
                output.push_str(&text);
                pending.push_str(&text);
                while let Some(i) = pending.find('\n') {
                    let line: String = pending.drain(..=i).collect();
                    on_line(line.trim_end());
                }
            }
        }
        if !pending.is_empty() {
            on_line(pending.trim_end());
        }
        crate::ui::logfile::action(
            &format!("engine exec in {container}: {}", cmd.join(" ")),
            true,
            std::time::Duration::ZERO,
            "",
        );
        let info = self
            .docker
            .inspect_exec(&created.id)
            .await
            .map_err(|e| engine_error("read the exec's exit code", &e))?;
        Ok(RunOutput {
            exit_code: info.exit_code.unwrap_or(-1),
            output,
        })
    }
}

/// Split `repo:tag` (the tag is after the last colon that follows the last slash).
pub fn split_reference(r: &str) -> (&str, Option<&str>) {
    match r.rfind(':') {
        Some(i) if !r[i..].contains('/') => (&r[..i], Some(&r[i + 1..])),
        _ => (r, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_at_the_tag() {
        assert_eq!(split_reference("a/b:1.0.0"), ("a/b", Some("1.0.0")));
        assert_eq!(
            split_reference("127.0.0.1:5000/a/b:1"),
            ("127.0.0.1:5000/a/b", Some("1"))
        );
        assert_eq!(
            split_reference("127.0.0.1:5000/a/b"),
            ("127.0.0.1:5000/a/b", None)
        );
    }
}
