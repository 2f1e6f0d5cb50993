//! A real three-node Docker Swarm for tests, on this one machine: three
//! Docker engines in containers (dockerd in a Debian rootfs made by
//! debootstrap, no image pulled), a registry on the cluster network, a
//! directory the nodes share (the stand-in for NFS), and a small load
//! balancer on loopback in front of the nodes' host-mode ports (the stand-in
//! for the one a real cluster has; this kernel has no IPVS, so no routing
//! mesh). Traffic goes only to loopback and to these containers.
//!
//! The node image is built once (≈1–4 min) and cached under a tag that is
//! the hash of its recipe (`swarm-node.sh`). Everything a cluster starts is
//! labelled with the test process's pid: dropped clusters are removed, and
//! those of test processes that died are removed by the next start.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const LABEL: &str = "de-build-test.swarm";

pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn sh(program: &str, args: &[&str]) -> Out {
    let o = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// `docker …` on this machine's engine; panics with the output on failure.
pub fn docker_ok(args: &[&str]) -> String {
    let o = sh("docker", args);
    assert_eq!(
        o.code,
        0,
        "docker {}\n{}{}",
        args.join(" "),
        o.stdout,
        o.stderr
    );
    o.stdout
}

/// Poll `f` until it is Some or `within` passes (a bounded wait on a
/// condition, never a sleep standing in for one).
pub fn wait_for<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn fnv(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in data {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// The node image, built if this recipe was never built here.
pub fn node_image() -> String {
    let recipe = super::repo_root().join("tests/support/swarm-node.sh");
    let text = std::fs::read(&recipe).unwrap();
    let name = format!("de-build-test/swarm-node:{:012x}", fnv(&text) >> 16);
    // One build at a time across test processes.
    let lock = std::fs::File::create("/tmp/de-build-swarm-node.lock").unwrap();
    lock.lock().unwrap();
    if sh("docker", &["image", "inspect", &name]).code != 0 {
        eprintln!("building the swarm node image {name} (debootstrap, once)…");
        let started = Instant::now();
        let o = sh(recipe.to_str().unwrap(), &[&name]);
        assert_eq!(o.code, 0, "{}: {}{}", recipe.display(), o.stdout, o.stderr);
        eprintln!(
            "node image built in {:.0}s",
            started.elapsed().as_secs_f64()
        );
    }
    name
}

/// The node image exists, or debootstrap is here to build it.
pub fn can_build_nodes() -> bool {
    let recipe = super::repo_root().join("tests/support/swarm-node.sh");
    let text = std::fs::read(&recipe).unwrap();
    let name = format!("de-build-test/swarm-node:{:012x}", fnv(&text) >> 16);
    sh("docker", &["image", "inspect", &name]).code == 0
        || [
            "/usr/sbin/debootstrap",
            "/sbin/debootstrap",
            "/usr/bin/debootstrap",
        ]
        .iter()
        .any(|p| Path::new(p).exists())
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Remove clusters left by test processes that are gone.
fn sweep() {
    let out = sh(
        "docker",
        &[
            "ps",
            "-a",
            "--filter",
            &format!("label={LABEL}"),
            "--format",
            &format!("{{{{.ID}}}} {{{{.Label \"{LABEL}\"}}}}"),
        ],
    );
    for l in out.stdout.lines() {
        let Some((id, pid)) = l.split_once(' ') else {
            continue;
        };
        if pid.parse().map(|p| !alive(p)).unwrap_or(false) {
            sh("docker", &["rm", "-f", "-v", id]);
        }
    }
    let nets = sh(
        "docker",
        &[
            "network",
            "ls",
            "--filter",
            &format!("label={LABEL}"),
            "--format",
            &format!("{{{{.ID}}}} {{{{.Label \"{LABEL}\"}}}}"),
        ],
    );
    for l in nets.stdout.lines() {
        if let Some((id, pid)) = l.split_once(' ') {
            if pid.parse().map(|p| !alive(p)).unwrap_or(false) {
                sh("docker", &["network", "rm", id]);
            }
        }
    }
}

pub struct Cluster {
    pub id: String,
    pub network: String,
    pub nodes: Vec<String>,
    pub node_ips: Vec<String>,
    /// `tcp://127.0.0.1:PORT`: the manager's engine API.
    pub manager: String,
    /// The registry as this machine's engine pushes to it (loopback).
    pub registry_local: String,
    /// The registry as the nodes pull from it.
    pub registry_nodes: String,
    /// Shared by every node at the same path (the sites volume lives here).
    pub shared: PathBuf,
    containers: Vec<String>,
}

fn ip_of(container: &str) -> String {
    docker_ok(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        container,
    ])
    .trim()
    .to_string()
}

fn host_port(container: &str, port: &str) -> u16 {
    let out = docker_ok(&["port", container, port]);
    out.lines()
        .next()
        .and_then(|l| l.rsplit(':').next())
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no host port for {container} {port}: {out}"))
}

impl Cluster {
    pub fn start(name: &str) -> Cluster {
        sweep();
        let image = node_image();
        let pid = std::process::id().to_string();
        let id = format!("dbt-{name}-{pid}");
        let network = format!("{id}-net");
        docker_ok(&[
            "network",
            "create",
            "--label",
            &format!("{LABEL}={pid}"),
            &network,
        ]);
        let shared = PathBuf::from(format!("/tmp/{id}-shared"));
        std::fs::create_dir_all(shared.join("sites")).unwrap();
        let mut c = Cluster {
            id: id.clone(),
            network: network.clone(),
            nodes: Vec::new(),
            node_ips: Vec::new(),
            manager: String::new(),
            registry_local: String::new(),
            registry_nodes: String::new(),
            shared: shared.clone(),
            containers: Vec::new(),
        };
        // The registry: Debian's docker-registry, from the node image.
        let reg = format!("{id}-reg");
        docker_ok(&[
            "run", "-d", "--name", &reg, "--label", &format!("{LABEL}={pid}"),
            "--network", &network, "-p", "127.0.0.1::5000",
            &image, "sh", "-c",
            // Debian's default config wants htpasswd auth: a plain one.
            "printf 'version: 0.1\nlog: {level: error}\nstorage: {filesystem: {rootdirectory: /var/lib/docker-registry}}\nhttp: {addr: \":5000\"}\n' >/etc/registry.yml && exec docker-registry serve /etc/registry.yml",
        ]);
        c.containers.push(reg.clone());
        c.registry_nodes = format!("{reg}:5000");
        c.registry_local = format!("127.0.0.1:{}", host_port(&reg, "5000/tcp"));
        // Nodes: every capability but SYS_RESOURCE (which the sandbox lacks,
        // so --privileged fails), the host's cgroups, their own /var/lib/docker.
        let shared_s = shared.display().to_string();
        for i in 1..=3 {
            let n = format!("{id}-n{i}");
            let mut args: Vec<String> = [
                "run",
                "-d",
                "--name",
                &n,
                "--hostname",
                &format!("n{i}"),
                "--label",
                &format!("{LABEL}={pid}"),
                "--network",
                &network,
                "--cap-add",
                "ALL",
                "--cap-drop",
                "SYS_RESOURCE",
                "--security-opt",
                "seccomp=unconfined",
                "--security-opt",
                "apparmor=unconfined",
                "-v",
                "/sys/fs/cgroup:/sys/fs/cgroup:rw",
                "--tmpfs",
                "/run",
                "--tmpfs",
                "/tmp",
                "-v",
                "/var/lib/docker",
                "-v",
                &format!("{shared_s}:{shared_s}"),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            if i == 1 {
                args.extend(["-p".to_string(), "127.0.0.1::2375".to_string()]);
            }
            // dockerd under a loop (and docker-init as PID 1, reaping): an
            // engine that exits starts again in the same container, with the
            // same address and published port, as systemd would restart it
            // on a real node (`restart_engine`).
            args.push("--init".into());
            args.push(image.clone());
            args.extend(
                [
                    "sh",
                    "-c",
                    "while :; do dockerd \"$@\"; echo \"dockerd exited $?\" >&2; sleep 1; done",
                    "sh",
                    "--host",
                    "unix:///var/run/docker.sock",
                    "--host",
                    "tcp://0.0.0.0:2375",
                    "--tls=false",
                    "--insecure-registry",
                    &c.registry_nodes,
                ]
                .iter()
                .map(|s| s.to_string()),
            );
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            docker_ok(&a);
            c.containers.push(n.clone());
            c.nodes.push(n);
        }
        for n in &c.nodes {
            wait_for(&format!("dockerd in {n}"), Duration::from_secs(60), || {
                (sh("docker", &["exec", n, "docker", "info"]).code == 0).then_some(())
            });
            c.node_ips.push(ip_of(n));
        }
        let m = &c.nodes[0];
        docker_ok(&[
            "exec",
            m,
            "docker",
            "swarm",
            "init",
            "--advertise-addr",
            &c.node_ips[0],
        ]);
        let token = docker_ok(&["exec", m, "docker", "swarm", "join-token", "-q", "worker"]);
        for n in &c.nodes[1..] {
            docker_ok(&[
                "exec",
                n,
                "docker",
                "swarm",
                "join",
                "--token",
                token.trim(),
                &format!("{}:2377", c.node_ips[0]),
            ]);
        }
        c.manager = format!("tcp://127.0.0.1:{}", host_port(m, "2375/tcp"));
        wait_for("three ready nodes", Duration::from_secs(60), || {
            let out = c.docker(&["node", "ls", "--format", "{{.Status}}"]);
            (out.stdout.lines().filter(|l| *l == "Ready").count() == 3).then_some(())
        });
        c
    }

    /// `docker …` against the manager.
    pub fn docker(&self, args: &[&str]) -> Out {
        let mut a = vec!["-H", self.manager.as_str()];
        a.extend_from_slice(args);
        sh("docker", &a)
    }

    pub fn docker_ok(&self, args: &[&str]) -> String {
        let o = self.docker(args);
        assert_eq!(
            o.code,
            0,
            "docker -H manager {}\n{}{}",
            args.join(" "),
            o.stdout,
            o.stderr
        );
        o.stdout
    }

    /// Stop node `i` (1-based) the hard way: its engine and tasks vanish.
    pub fn stop_node(&self, i: usize) {
        docker_ok(&["kill", &self.nodes[i - 1]]);
    }

    /// Start node `i` again and wait until the manager sees it ready.
    pub fn start_node(&self, i: usize) {
        docker_ok(&["start", &self.nodes[i - 1]]);
        let host = format!("n{i}");
        wait_for(
            &format!("{host} ready again"),
            Duration::from_secs(90),
            || {
                let out = self.docker(&["node", "ls", "--format", "{{.Hostname}} {{.Status}}"]);
                out.stdout
                    .lines()
                    .any(|l| l == format!("{host} Ready"))
                    .then_some(())
            },
        );
    }

    /// Restart the engine of node `i` (1-based) in place, as `systemctl
    /// restart docker` would: SIGTERM to its dockerd (by the pid it wrote),
    /// which stops its containers; the node's loop starts it again. Returns
    /// once the manager answers for three ready nodes.
    pub fn restart_engine(&self, i: usize) {
        let pid = self.stop_engine(i);
        self.wait_engine_back(i, &pid);
    }

    /// SIGTERM to node `i`'s dockerd (its restart loop starts it again);
    /// returns the stopped engine's pid for [`Cluster::wait_engine_back`].
    pub fn stop_engine(&self, i: usize) -> String {
        let n = &self.nodes[i - 1];
        let pid = docker_ok(&["exec", n, "cat", "/var/run/docker.pid"]);
        let pid = pid.trim().to_string();
        docker_ok(&["exec", n, "kill", "-TERM", &pid]);
        pid
    }

    /// Wait until node `i` runs a new engine and every node is ready again.
    pub fn wait_engine_back(&self, i: usize, pid: &str) {
        let n = &self.nodes[i - 1];
        wait_for(
            &format!("n{i}'s engine to restart"),
            Duration::from_secs(120),
            || {
                let now = sh("docker", &["exec", n, "cat", "/var/run/docker.pid"]);
                let fresh =
                    now.code == 0 && !now.stdout.trim().is_empty() && now.stdout.trim() != pid;
                (fresh && sh("docker", &["exec", n, "docker", "info"]).code == 0).then_some(())
            },
        );
        wait_for("three ready nodes", Duration::from_secs(120), || {
            let out = self.docker(&["node", "ls", "--format", "{{.Status}}"]);
            (out.code == 0 && out.stdout.lines().filter(|l| *l == "Ready").count() == 3)
                .then_some(())
        });
    }

    /// Remove a stack's services (and its de-build jobs) by namespace label.
    pub fn remove_stack(&self, namespace: &str) {
        let ids = self.docker(&[
            "service",
            "ls",
            "-q",
            "--filter",
            &format!("label=com.docker.stack.namespace={namespace}"),
        ]);
        for id in ids.stdout.lines() {
            self.docker(&["service", "rm", id]);
        }
        self.docker(&["config", "rm", &format!("de-build-lock.{namespace}")]);
        let secrets = self.docker(&[
            "secret",
            "ls",
            "-q",
            "--filter",
            &format!("label=com.docker.stack.namespace={namespace}"),
        ]);
        for id in secrets.stdout.lines() {
            self.docker(&["secret", "rm", id]);
        }
    }
}

impl Cluster {
    /// Remove the nodes, the registry, the network and the shared directory.
    pub fn teardown(&self) {
        for c in &self.containers {
            sh("docker", &["rm", "-f", "-v", c]);
        }
        sh("docker", &["network", "rm", &self.network]);
        let _ = std::fs::remove_dir_all(&self.shared);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// A load balancer on loopback in front of the nodes' host-mode ports, as a
/// real cluster has one: it takes a whole request, tries the nodes in turn
/// and moves on when one refuses or closes without answering (a node with
/// no task, a task shutting down). GET requests only; one per connection.
/// A health URL the test opens: 503 until [`Gate::open`], then 200; counts
/// the requests, so a test knows when a deploy reached its health gate.
pub struct Gate {
    pub port: u16,
    requests: Arc<AtomicUsize>,
    open: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Gate {
    pub fn start() -> Gate {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        l.set_nonblocking(true).unwrap();
        let (requests, open, stop) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let (r, o, s) = (requests.clone(), open.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((mut c, _)) => {
                        let _ = c.set_nonblocking(false);
                        let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
                        let mut req = Vec::new();
                        let mut buf = [0u8; 1024];
                        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                            match c.read(&mut buf) {
                                Ok(n) if n > 0 => req.extend_from_slice(&buf[..n]),
                                _ => break,
                            }
                        }
                        r.fetch_add(1, Ordering::SeqCst);
                        let status = if o.load(Ordering::SeqCst) {
                            "200 OK"
                        } else {
                            "503 Service Unavailable"
                        };
                        let _ = write!(
                            c,
                            "HTTP/1.1 {status}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                        );
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Gate {
            port,
            requests,
            open,
            stop,
        }
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    pub fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

pub struct Balancer {
    pub port: u16,
    /// Attempts on a node that refused or closed without an answer, each
    /// followed by a try on the next node.
    pub retried: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Balancer {
    pub fn start(backends: Vec<SocketAddr>) -> Balancer {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        l.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let next = Arc::new(AtomicUsize::new(0));
        let retried = Arc::new(AtomicUsize::new(0));
        let r = retried.clone();
        std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((c, _)) => {
                        let b = backends.clone();
                        let n = next.clone();
                        let r = r.clone();
                        std::thread::spawn(move || {
                            let _ = serve(c, &b, &n, &r);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Balancer {
            port,
            retried,
            stop,
        }
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn serve(
    mut client: TcpStream,
    backends: &[SocketAddr],
    next: &AtomicUsize,
    retried: &AtomicUsize,
) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut req = Vec::new();
    let mut buf = [0u8; 4096];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = client.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        req.extend_from_slice(&buf[..n]);
    }
    let start = next.fetch_add(1, Ordering::SeqCst);
    for k in 0..backends.len() {
        let addr = backends[(start + k) % backends.len()];
        let Ok(mut up) = TcpStream::connect_timeout(&addr, Duration::from_millis(300)) else {
            retried.fetch_add(1, Ordering::SeqCst);
            continue;
        };
        up.set_read_timeout(Some(Duration::from_secs(5)))?;
        if up.write_all(&req).is_err() {
            retried.fetch_add(1, Ordering::SeqCst);
            continue;
        }
        let mut resp = Vec::new();
        loop {
            match up.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => resp.extend_from_slice(&buf[..n]),
                Err(_) => break,
            }
        }
        if resp.is_empty() {
            retried.fetch_add(1, Ordering::SeqCst);
            continue;
        }
        return client.write_all(&resp);
    }
    client.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
}

/// One GET through `port`: the status code, or None when nothing answered.
pub fn get(port: u16) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET /api/method/ping HTTP/1.1\r\nHost: demo.localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut b = String::new();
    s.read_to_string(&mut b).ok()?;
    b.split_whitespace().nth(1)?.parse().ok()
}
