//! A BuildKit build through the Engine API, with a client session.
//!
//! Why not bollard's build helpers: in bollard 0.21 the Moby driver serves
//! secrets but needs the whole context in memory and reports no progress,
//! and `build_image` with BuildKit opens a session that serves no secrets.
//! So de-build speaks the two endpoints itself, as the docker CLI does:
//!
//! 1. `POST /session` upgraded to h2c: de-build is the gRPC *server* on that
//!    connection, offering the Secrets service (apps.json, from memory) and
//!    Health, which the engine checks (see [`super::session`]).
//! 2. `POST /build?version=2&session=<id>`: the context is a tar streamed as
//!    the request body (produced file by file on a blocking thread, behind a
//!    small bounded channel), and the response is BuildKit's status stream:
//!    `moby.buildkit.trace` messages carrying a base64 protobuf
//!    `StatusResponse` (steps, logs), then the image ID.

use super::session::{self, pb::StatusResponse};
use crate::adapters::context::{secret_in_file, Needle, ScanReader, SecretInFile};
use crate::secret::Secret;
use crate::ui::progress::Event;
use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

pub struct BuildRequest {
    pub tag: String,
    /// Containerfile path inside the context.
    pub dockerfile: String,
    pub build_args: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub no_cache: bool,
    /// (file on disk, name in the context)
    pub context_files: Vec<(PathBuf, String)>,
    /// (secret id, value); held in memory only.
    pub secrets: Vec<(String, Secret)>,
    /// Values no context file may contain (see [`ScanReader`]).
    pub forbidden: Vec<Needle>,
}

/// Why a build did not produce an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildFailure {
    /// A context file holds a secret value; nothing of it was sent.
    SecretInContext(SecretInFile),
    /// The engine, BuildKit or the connection said no.
    Failed(String),
}

impl std::fmt::Display for BuildFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BuildFailure::SecretInContext(s) => write!(f, "{s}"),
            BuildFailure::Failed(m) => f.write_str(m),
        }
    }
}

/// Where the engine listens, as the docker CLI reads it from DOCKER_HOST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Unix(PathBuf),
    Tcp(String),
}

impl Host {
    pub fn from_env() -> Result<Host, String> {
        if std::env::var_os("DOCKER_TLS_VERIFY").is_some_and(|v| !v.is_empty()) {
            return Err("DOCKER_TLS_VERIFY is set: builds over a TLS-protected engine connection are not supported; run de-build on the engine's host (unix socket)".into());
        }
        Host::parse(&std::env::var("DOCKER_HOST").unwrap_or_default())
    }

    pub fn parse(v: &str) -> Result<Host, String> {
        if v.is_empty() {
            return Ok(Host::Unix("/var/run/docker.sock".into()));
        }
        if let Some(p) = v.strip_prefix("unix://") {
            return Ok(Host::Unix(p.into()));
        }
        if let Some(a) = v
            .strip_prefix("tcp://")
            .or_else(|| v.strip_prefix("http://"))
        {
            return Ok(Host::Tcp(a.trim_end_matches('/').to_string()));
        }
        Err(format!(
            "DOCKER_HOST={v} is not supported for builds (use unix:// or tcp:// without TLS)"
        ))
    }
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

async fn connect(host: &Host) -> Result<Box<dyn Io>, String> {
    match host {
        Host::Unix(p) => tokio::net::UnixStream::connect(p)
            .await
            .map(|s| Box::new(s) as Box<dyn Io>)
            .map_err(|e| format!("connect to unix://{}: {e}", p.display())),
        Host::Tcp(a) => tokio::net::TcpStream::connect(a.as_str())
            .await
            .map(|s| Box::new(s) as Box<dyn Io>)
            .map_err(|e| format!("connect to tcp://{a}: {e}")),
    }
}

fn host_header(host: &Host) -> String {
    match host {
        Host::Unix(_) => "docker".into(),
        Host::Tcp(a) => a.clone(),
    }
}

/// The engine's API version prefix for the paths (negotiated by the caller).
fn path(api: &str, p: &str) -> String {
    format!("/v{api}{p}")
}

/// Open the session and serve it in the background until the handle is dropped.
async fn start_session(
    host: &Host,
    api: &str,
    id: &str,
    secrets: HashMap<String, Secret>,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let io = connect(host).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, http_body_util::Empty<Bytes>>(TokioIo::new(io))
            .await
            .map_err(|e| format!("session handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let mut req = hyper::Request::post(path(api, "/session"))
        .header("Host", host_header(host))
        .header("Connection", "Upgrade")
        .header("Upgrade", "h2c")
        .header("X-Docker-Expose-Session-Uuid", id)
        .header("X-Docker-Expose-Session-Name", "de-build")
        .header("X-Docker-Expose-Session-Sharedkey", id);
    for m in session::METHODS {
        req = req.header("X-Docker-Expose-Session-Grpc-Method", m);
    }
    let req = req
        .body(http_body_util::Empty::new())
        .map_err(|e| e.to_string())?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("open session: {e}"))?;
    if resp.status() != hyper::StatusCode::SWITCHING_PROTOCOLS {
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        return Err(format!(
            "the engine refused the build session ({status}): {}",
            String::from_utf8_lossy(&body).trim()
        ));
    }
    let upgraded = hyper::upgrade::on(resp)
        .await
        .map_err(|e| format!("session upgrade: {e}"))?;
    Ok(tokio::spawn(session::serve(upgraded, secrets)))
}

type FrameStream =
    Pin<Box<dyn futures_util::Stream<Item = Result<Frame<Bytes>, std::io::Error>> + Send>>;

/// Stream the context as tar, chunk by chunk, without holding it whole.
/// Regular files are read through a [`ScanReader`]: one holding a secret
/// value stops the stream before the value is written, and `refused` says
/// which.
fn tar_stream(
    files: Vec<(PathBuf, String)>,
    forbidden: Vec<Needle>,
    refused: std::sync::Arc<std::sync::Mutex<Option<SecretInFile>>>,
) -> StreamBody<FrameStream> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::task::spawn_blocking(move || {
        struct ChanWriter {
            tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
            buf: Vec<u8>,
        }
        impl std::io::Write for ChanWriter {
            fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
                self.buf.extend_from_slice(data);
                if self.buf.len() >= 256 * 1024 {
                    self.flush()?;
                }
                Ok(data.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                if !self.buf.is_empty() {
                    let chunk = Bytes::from(std::mem::take(&mut self.buf));
                    self.tx.blocking_send(Ok(chunk)).map_err(|_| {
                        std::io::Error::new(
                            std::io::ErrorKind::BrokenPipe,
                            "the engine stopped reading the context",
                        )
                    })?;
                }
                Ok(())
            }
        }
        let tx_err = tx.clone();
        let mut builder = tar::Builder::new(ChanWriter {
            tx,
            buf: Vec::with_capacity(256 * 1024),
        });
        builder.follow_symlinks(false);
        // Owner root and a fixed mtime, as the docker CLI sends them: the
        // image does not depend on who ran the build, and touching a file
        // without changing it keeps the cache.
        builder.mode(tar::HeaderMode::Deterministic);
        let result = (|| -> std::io::Result<()> {
            for (p, name) in &files {
                let meta = std::fs::symlink_metadata(p)?;
                if meta.is_file() {
                    let mut header = tar::Header::new_gnu();
                    header.set_metadata_in_mode(&meta, tar::HeaderMode::Deterministic);
                    let f = std::fs::File::open(p)?;
                    builder.append_data(&mut header, name, ScanReader::new(f, name, &forbidden))?;
                } else {
                    builder.append_path_with_name(p, name)?;
                }
            }
            builder.finish()?;
            std::io::Write::flush(builder.get_mut())
        })();
        if let Err(e) = result {
            if let Some(found) = secret_in_file(&e) {
                *refused.lock().unwrap_or_else(|p| p.into_inner()) = Some(found);
            }
            let _ = tx_err.blocking_send(Err(e));
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item.map(Frame::data), rx))
    });
    StreamBody::new(Box::pin(stream))
}

fn query_string(req: &BuildRequest, session: &str) -> String {
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let mut q = vec![
        format!("t={}", enc(&req.tag)),
        format!("dockerfile={}", enc(&req.dockerfile)),
        format!(
            "buildargs={}",
            enc(&serde_json::to_string(&req.build_args).unwrap_or_default())
        ),
        format!(
            "labels={}",
            enc(&serde_json::to_string(&req.labels).unwrap_or_default())
        ),
        "version=2".into(),
        format!("session={}", enc(session)),
        // The engine keys the status stream by build ID: without a unique one,
        // concurrent builds steal each other's progress.
        format!("buildid={}", enc(&format!("{session}-build"))),
        "rm=1".into(),
        "forcerm=1".into(),
    ];
    if req.no_cache {
        q.push("nocache=1".into());
    }
    q.join("&")
}

/// Turn one status message into progress events.
fn events_from(status: StatusResponse, started: &mut HashSet<String>, out: &mut Vec<Event>) {
    for v in status.vertexes {
        if v.started.is_some() && started.insert(v.digest.clone()) {
            out.push(Event::Started {
                id: v.digest.clone(),
                name: v.name.clone(),
            });
        }
        if v.completed.is_some() {
            if started.insert(v.digest.clone()) {
                out.push(Event::Started {
                    id: v.digest.clone(),
                    name: v.name.clone(),
                });
            }
            let duration = match (&v.started, &v.completed) {
                (Some(s), Some(c)) => {
                    let ns = (c.seconds - s.seconds) as i128 * 1_000_000_000
                        + (c.nanos - s.nanos) as i128;
                    u64::try_from(ns).ok().map(Duration::from_nanos)
                }
                _ => None,
            };
            let error = if v.error.is_empty() {
                None
            } else {
                Some(v.error.clone())
            };
            out.push(Event::Finished {
                id: v.digest,
                name: v.name,
                cached: v.cached,
                duration,
                error,
            });
        }
    }
    for l in status.logs {
        out.push(Event::Log {
            id: l.vertex,
            data: l.msg,
        });
    }
}

/// Build; `on_event` sees every step and log line as it happens. Returns the image ID.
pub async fn build(
    api_version: &str,
    req: BuildRequest,
    on_event: impl FnMut(Event),
) -> Result<String, BuildFailure> {
    let refused = std::sync::Arc::new(std::sync::Mutex::new(None));
    let result = run_build(api_version, req, on_event, refused.clone()).await;
    // The stream stopped on a secret: whatever the engine made of the cut
    // request, that is the reason.
    if let Some(found) = refused.lock().unwrap_or_else(|p| p.into_inner()).take() {
        return Err(BuildFailure::SecretInContext(found));
    }
    result.map_err(BuildFailure::Failed)
}

async fn run_build(
    api_version: &str,
    req: BuildRequest,
    mut on_event: impl FnMut(Event),
    refused: std::sync::Arc<std::sync::Mutex<Option<SecretInFile>>>,
) -> Result<String, String> {
    use base64::Engine as _;
    let host = Host::from_env()?;
    let session_id = format!(
        "de-build-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
    );
    let secrets: HashMap<String, Secret> = req.secrets.iter().cloned().collect();
    let session = start_session(&host, api_version, &session_id, secrets).await?;

    let io = connect(&host).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("build connection: {e}"))?;
    let conn_task = tokio::spawn(conn);
    let uri = format!(
        "{}?{}",
        path(api_version, "/build"),
        query_string(&req, &session_id)
    );
    let http_req = hyper::Request::post(uri)
        .header("Host", host_header(&host))
        .header("Content-Type", "application/x-tar")
        .body(tar_stream(req.context_files, req.forbidden, refused))
        .map_err(|e| e.to_string())?;
    let resp = sender
        .send_request(http_req)
        .await
        .map_err(|e| format!("send the build request: {e}"))?;
    let status = resp.status();
    let mut body = resp.into_body();
    let mut buf: Vec<u8> = Vec::new();
    let mut image_id = None;
    let mut error = None;
    let mut started = HashSet::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("read the build output: {e}"))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buf.extend_from_slice(&data);
        // The engine writes one JSON object per line.
        while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            let Ok(msg) = serde_json::from_slice::<serde_json::Value>(&line) else {
                continue;
            };
            if !status.is_success() {
                error = msg
                    .get("message")
                    .and_then(|m| m.as_str())
                    .map(str::to_string);
                continue;
            }
            if let Some(e) = msg
                .get("errorDetail")
                .and_then(|d| d.get("message"))
                .and_then(|m| m.as_str())
                .or_else(|| msg.get("error").and_then(|m| m.as_str()))
            {
                error = Some(e.to_string());
            }
            match msg.get("id").and_then(|i| i.as_str()) {
                Some("moby.buildkit.trace") => {
                    let Some(aux) = msg.get("aux").and_then(|a| a.as_str()) else {
                        continue;
                    };
                    let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(aux) else {
                        continue;
                    };
                    if let Ok(st) = StatusResponse::decode(&raw) {
                        let mut evs = Vec::new();
                        events_from(st, &mut started, &mut evs);
                        evs.into_iter().for_each(&mut on_event);
                    }
                }
                Some("moby.image.id") => {
                    image_id = msg
                        .get("aux")
                        .and_then(|a| a.get("ID"))
                        .and_then(|i| i.as_str())
                        .map(str::to_string);
                }
                _ => {}
            }
        }
    }
    if !status.is_success() && error.is_none() {
        error = Some(format!(
            "the engine answered {status}: {}",
            String::from_utf8_lossy(&buf).trim()
        ));
    }
    session.abort();
    conn_task.abort();
    match (error, image_id) {
        (Some(e), _) => Err(e),
        (None, Some(id)) => Ok(id),
        (None, None) => Err("the engine reported no image ID".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_host_forms() {
        assert_eq!(
            Host::parse("").unwrap(),
            Host::Unix("/var/run/docker.sock".into())
        );
        assert_eq!(
            Host::parse("unix:///tmp/d.sock").unwrap(),
            Host::Unix("/tmp/d.sock".into())
        );
        assert_eq!(
            Host::parse("tcp://127.0.0.1:2375").unwrap(),
            Host::Tcp("127.0.0.1:2375".into())
        );
        assert!(Host::parse("ssh://x").is_err());
    }

    #[test]
    fn secrets_never_reach_the_query() {
        let req = BuildRequest {
            tag: "a/b:1".into(),
            dockerfile: "Containerfile".into(),
            build_args: BTreeMap::from([("K".into(), "v w".into())]),
            labels: BTreeMap::new(),
            no_cache: false,
            context_files: vec![],
            secrets: vec![("apps_json".into(), Secret::derived("canary-in-secret"))],
            forbidden: vec![],
        };
        let q = query_string(&req, "sid");
        assert!(
            q.contains("version=2")
                && q.contains("session=sid")
                && q.contains("buildargs=%7B%22K%22%3A%22v+w%22%7D")
        );
        assert!(!q.contains("canary"));
    }
}
