//! Local git repositories for tests, and a smart-HTTP server on loopback that
//! demands a token (Basic auth), enough for libgit2's ref listing.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A bare repository `<dir>/<name>.git` with one commit on `main`, the given
/// extra branches, and an annotated tag per entry of `tags`.
pub struct Repo {
    pub bare: PathBuf,
    work: PathBuf,
}

impl Repo {
    pub fn create(dir: &Path, name: &str, branches: &[&str], tags: &[&str]) -> Repo {
        let work = dir.join(format!("{name}-work"));
        std::fs::create_dir_all(&work).unwrap();
        git(&work, &["init", "-q", "-b", "main"]);
        std::fs::write(work.join("README"), name).unwrap();
        git(&work, &["add", "."]);
        git(&work, &["commit", "-q", "-m", "initial"]);
        for b in branches {
            git(&work, &["branch", b]);
        }
        for t in tags {
            git(&work, &["tag", "-a", t, "-m", t]);
        }
        let bare = dir.join(format!("{name}.git"));
        git(
            dir,
            &[
                "clone",
                "-q",
                "--bare",
                work.to_str().unwrap(),
                bare.to_str().unwrap(),
            ],
        );
        Repo { bare, work }
    }

    /// Commit on `branch` and push it: the branch moves.
    pub fn advance(&self, branch: &str) -> String {
        git(&self.work, &["checkout", "-q", branch]);
        std::fs::write(
            self.work.join("change"),
            format!("{:?}", std::time::SystemTime::now()),
        )
        .unwrap();
        git(&self.work, &["add", "."]);
        git(&self.work, &["commit", "-q", "-m", "change"]);
        git(
            &self.work,
            &["push", "-q", self.bare.to_str().unwrap(), branch],
        );
        self.commit(branch)
    }

    pub fn commit(&self, reference: &str) -> String {
        git(
            &self.bare,
            &["rev-parse", &format!("{reference}^{{commit}}")],
        )
    }

    pub fn file_url(&self) -> String {
        format!("file://{}", self.bare.display())
    }
}

/// Serves bare repositories over smart HTTP on 127.0.0.1, requiring `token`
/// as the Basic-auth user or password (none when `token` is empty). Stops
/// when dropped.
pub struct GitHttp {
    pub port: u16,
    stop: Arc<AtomicBool>,
    authorized: Arc<std::sync::atomic::AtomicUsize>,
}

impl GitHttp {
    pub fn start(root: &Path, token: &str) -> GitHttp {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let authorized = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = authorized.clone();
        let (root, token, flag) = (root.to_path_buf(), token.to_string(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(c) = conn {
                    let (root, token, count) = (root.clone(), token.clone(), count.clone());
                    std::thread::spawn(move || serve(c, &root, &token, &count));
                }
            }
        });
        GitHttp {
            port,
            stop,
            authorized,
        }
    }

    /// How many requests carried the right credentials.
    pub fn authorized_requests(&self) -> usize {
        self.authorized.load(Ordering::SeqCst)
    }

    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}.git", self.port)
    }
}

impl Drop for GitHttp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn authorized(header: Option<&str>, token: &str) -> bool {
    use base64::Engine as _;
    // Started with no token: a public server (as for erpnext on GitHub).
    if token.is_empty() {
        return true;
    }
    let Some(v) = header.and_then(|h| h.strip_prefix("Basic ")) else {
        return false;
    };
    let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(v.trim()) else {
        return false;
    };
    let text = String::from_utf8_lossy(&raw).to_string();
    let (u, p) = text.split_once(':').unwrap_or((&text, ""));
    u == token || p == token
}

fn serve(mut c: TcpStream, root: &Path, token: &str, count: &std::sync::atomic::AtomicUsize) {
    let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(c.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut auth = None;
    loop {
        let mut l = String::new();
        if reader.read_line(&mut l).unwrap_or(0) == 0 || l == "\r\n" {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("authorization") {
                auth = Some(v.trim().to_string());
            }
        }
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .to_string();
    let reply = |c: &mut TcpStream, status: &str, headers: &str, body: &[u8]| {
        let _ = write!(
            c,
            "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = c.write_all(body);
    };
    let Some(repo) = path.strip_suffix("/info/refs?service=git-upload-pack") else {
        reply(&mut c, "404 Not Found", "", b"not found");
        return;
    };
    if !authorized(auth.as_deref(), token) {
        reply(
            &mut c,
            "401 Unauthorized",
            "WWW-Authenticate: Basic realm=\"test\"\r\n",
            b"auth",
        );
        return;
    }
    count.fetch_add(1, Ordering::SeqCst);
    let dir = root.join(repo.trim_start_matches('/'));
    if !dir.is_dir() {
        reply(&mut c, "404 Not Found", "", b"no such repository");
        return;
    }
    let out = Command::new("git")
        .args(["upload-pack", "--stateless-rpc", "--advertise-refs"])
        .arg(&dir)
        .output()
        .unwrap();
    let mut body = b"001e# service=git-upload-pack\n0000".to_vec();
    body.extend_from_slice(&out.stdout);
    reply(
        &mut c,
        "200 OK",
        "Content-Type: application/x-git-upload-pack-advertisement\r\nCache-Control: no-cache\r\n",
        &body,
    );
    let _ = reader.read(&mut [0u8; 0]);
}

/// Accepts connections and never answers: for timeouts.
pub struct Silent {
    pub port: u16,
    _listener: TcpListener,
}

impl Silent {
    pub fn start() -> Silent {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        Silent {
            port: l.local_addr().unwrap().port(),
            _listener: l,
        }
    }
}

/// Answers every request with a redirect to `target` (another host:port).
pub struct Redirect {
    pub port: u16,
    _thread: std::thread::JoinHandle<()>,
}

impl Redirect {
    pub fn start(target: String) -> Redirect {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            for c in l.incoming().flatten().take(20) {
                let mut c = c;
                let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
                let mut reader = BufReader::new(c.try_clone().unwrap());
                let mut line = String::new();
                let _ = reader.read_line(&mut line);
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                }
                let _ = write!(c, "HTTP/1.1 302 Found\r\nLocation: {target}{path}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            }
        });
        Redirect { port, _thread: t }
    }
}
