//! git through libgit2 (git2), in process: a token never reaches a child's
//! argv or environment. Used to resolve app refs to commits and to read the
//! project's own revision.

use crate::secret::Secret;
use std::path::Path;
use std::sync::mpsc;
use zeroize::Zeroizing;

/// (user, password) as sent to the remote; zeroed on drop.
pub type Credentials = (Zeroizing<String>, Zeroizing<String>);
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefKind {
    Branch,
    Tag,
    Commit,
}

impl RefKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RefKind::Branch => "branch",
            RefKind::Tag => "tag",
            RefKind::Commit => "commit",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteRef {
    pub commit: String,
    pub kind: RefKind,
    /// Asked for `HEAD`: the branch it points to, when the remote says.
    pub head_branch: Option<String>,
}

/// Why a remote could not answer. Never carries a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteError {
    AuthFailed,
    NotFound,
    RefNotFound {
        available_hint: Option<String>,
    },
    /// The server redirected to another host; the credentials were withheld.
    CrossHostRedirect,
    Timeout,
    Other(String),
}

/// Split credentials off a URL: (`url without userinfo`, `Some((user, pass))`).
/// A lone `TOKEN@` is sent as user TOKEN with the token as password too, which
/// GitHub, GitLab and Gitea accept for personal access tokens.
pub fn split_credentials(url: &str) -> (String, Option<Credentials>) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_string(), None);
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let Some(at) = authority.rfind('@') else {
        return (url.to_string(), None);
    };
    let userinfo = &authority[..at];
    let clean = format!("{scheme}://{}{path}", &authority[at + 1..]);
    let decode = |s: &str| percent_decode(s);
    let creds = match userinfo.split_once(':') {
        Some((u, p)) => (decode(u), decode(p)),
        None => (decode(userinfo), decode(userinfo)),
    };
    (clean, Some(creds))
}

fn percent_decode(s: &str) -> Zeroizing<String> {
    let b = s.as_bytes();
    // Never grows past its capacity: no unzeroed copy is left behind.
    let mut out = Zeroizing::new(Vec::with_capacity(b.len()));
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    Zeroizing::new(String::from_utf8_lossy(&out).into_owned())
}

/// Remove `secret` from a libgit2 message, in case it echoes a URL.
fn scrub(msg: &str, creds: &Option<Credentials>) -> String {
    let mut m = crate::ui::output::redact::redact(msg);
    if let Some((u, p)) = creds {
        for s in [u, p] {
            if s.len() >= 4 {
                m = m.replace(s.as_str(), "***");
            }
        }
    }
    m
}

/// Host and port of a URL, to tell whether a redirect left the host.
fn authority(url: &str) -> Option<(String, Option<u16>)> {
    let u = url::Url::parse(url).ok()?;
    Some((
        u.host_str()?.to_ascii_lowercase(),
        u.port_or_known_default(),
    ))
}

/// libgit2 has no per-call deadline; its global socket timeouts bound how
/// long an abandoned query (see [`resolve_remote`]) keeps a thread and socket.
fn init_network_timeouts() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: libgit2 global settings, written once before any de-build
        // network query; nothing else in the process configures libgit2.
        unsafe {
            let _ = git2::opts::set_server_connect_timeout_in_milliseconds(30_000);
            let _ = git2::opts::set_server_timeout_in_milliseconds(60_000);
        }
    });
}

fn query(url: &str, reference: &str) -> Result<RemoteRef, RemoteError> {
    init_network_timeouts();
    let (clean, creds) = split_credentials(url);
    let origin = authority(&clean);
    let mut remote = git2::Remote::create_detached(clean.as_str())
        .map_err(|e| RemoteError::Other(scrub(e.message(), &creds)))?;
    let mut callbacks = git2::RemoteCallbacks::new();
    let mut attempts = 0;
    let cb_creds = creds.clone();
    // libgit2 calls back again after a rejected credential: answer once, then
    // stop, or a wrong token loops forever.
    callbacks.credentials(move |asking, _user, _allowed| {
        attempts += 1;
        // libgit2 follows a redirect to another host and would ask for
        // credentials there: the token is only for the host it was written for.
        if authority(asking) != origin {
            return Err(git2::Error::from_str(
                "refusing to send credentials to another host",
            ));
        }
        match (&cb_creds, attempts) {
            // libgit2 copies the pair and zeroes its copy when it frees it.
            (Some((u, p)), 1) => git2::Cred::userpass_plaintext(u, p),
            _ => Err(git2::Error::from_str("authentication failed")),
        }
    });
    if let Err(e) = remote.connect_auth(git2::Direction::Fetch, Some(callbacks), None) {
        return Err(classify(&e, &creds));
    }
    let heads = remote.list().map_err(|e| classify(&e, &creds))?;
    let mut branch = None;
    let mut tag = None;
    let mut peeled = None;
    let mut head = None;
    let mut names = Vec::new();
    for h in heads {
        let name = h.name();
        let oid = h.oid().to_string();
        if name == "HEAD" {
            // The default branch a clone without --branch checks out; the
            // remote names it in its `symref` capability.
            let target = h
                .symref_target()
                .and_then(|t| t.strip_prefix("refs/heads/"))
                .map(str::to_string);
            head = Some((oid.clone(), target));
        }
        if let Some(b) = name.strip_prefix("refs/heads/") {
            names.push(b.to_string());
            if b == reference {
                branch = Some(oid.clone());
            }
        } else if let Some(t) = name.strip_prefix("refs/tags/") {
            if let Some(t) = t.strip_suffix("^{}") {
                if t == reference {
                    peeled = Some(oid.clone());
                }
            } else {
                names.push(t.to_string());
                if t == reference {
                    tag = Some(oid.clone());
                }
            }
        }
    }
    let all_oids: Vec<String> = remote
        .list()
        .map(|l| l.iter().map(|h| h.oid().to_string()).collect())
        .unwrap_or_default();
    let _ = remote.disconnect();
    if let Some(c) = branch {
        return Ok(RemoteRef {
            commit: c,
            kind: RefKind::Branch,
            head_branch: None,
        });
    }
    if let Some(c) = peeled.or(tag) {
        return Ok(RemoteRef {
            commit: c,
            kind: RefKind::Tag,
            head_branch: None,
        });
    }
    if reference == "HEAD" {
        if let Some((commit, target)) = head {
            return Ok(RemoteRef {
                commit,
                kind: RefKind::Branch,
                head_branch: target,
            });
        }
    }
    let is_hex =
        (7..=40).contains(&reference.len()) && reference.chars().all(|c| c.is_ascii_hexdigit());
    if is_hex {
        if let Some(full) = all_oids
            .iter()
            .find(|o| o.starts_with(&reference.to_ascii_lowercase()))
        {
            return Ok(RemoteRef {
                commit: full.clone(),
                kind: RefKind::Commit,
                head_branch: None,
            });
        }
    }
    let hint = crate::config::envfile::did_you_mean(reference, names.iter().map(|s| s.as_str()))
        .map(|s| format!("\"{s}\""));
    Err(RemoteError::RefNotFound {
        available_hint: hint,
    })
}

fn classify(e: &git2::Error, creds: &Option<Credentials>) -> RemoteError {
    let msg = e.message().to_ascii_lowercase();
    if msg.contains("refusing to send credentials to another host") {
        return RemoteError::CrossHostRedirect;
    }
    if e.class() == git2::ErrorClass::Http
        && (msg.contains("401")
            || msg.contains("403")
            || msg.contains("authentication")
            || msg.contains("credentials"))
    {
        return RemoteError::AuthFailed;
    }
    if msg.contains("authentication")
        || msg.contains("too many redirects or authentication replays")
        || e.code() == git2::ErrorCode::Auth
    {
        return RemoteError::AuthFailed;
    }
    if msg.contains("404")
        || msg.contains("not found")
        || msg.contains("could not find repository")
        || msg.contains("does not appear to be a git repository")
        || msg.contains("failed to resolve path")
    {
        return RemoteError::NotFound;
    }
    RemoteError::Other(scrub(e.message(), creds))
}

/// Which commit `reference` (branch, tag or sha) is at on `url`, within `timeout`.
pub fn resolve_remote(
    url: &Secret,
    reference: &str,
    timeout: Duration,
) -> Result<RemoteRef, RemoteError> {
    let (tx, rx) = mpsc::channel();
    let (url, reference) = (url.clone(), reference.to_string());
    // libgit2 has no per-call deadline: the query runs on its own thread and
    // is abandoned (left to finish in the background) when time is up.
    std::thread::spawn(move || {
        let _ = tx.send(query(url.expose(), &reference));
    });
    rx.recv_timeout(timeout)
        .unwrap_or(Err(RemoteError::Timeout))
}

/// Resolve many (url, ref) pairs in parallel; results keep the input order.
pub fn resolve_all(
    items: &[(Secret, String)],
    timeout: Duration,
) -> Vec<Result<RemoteRef, RemoteError>> {
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .iter()
            .map(|(u, r)| s.spawn(move || resolve_remote(u, r, timeout)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or(Err(RemoteError::Other("internal error".into())))
            })
            .collect()
    })
}

/// The git directory of the repository containing `dir` (following a
/// `.git` file's `gitdir:` as worktrees and submodules use).
fn git_dir(dir: &Path) -> Option<std::path::PathBuf> {
    let start = std::fs::canonicalize(dir).ok()?;
    for d in start.ancestors() {
        let g = d.join(".git");
        if g.is_dir() {
            return Some(g);
        }
        if let Ok(text) = std::fs::read_to_string(&g) {
            let target = text.trim().strip_prefix("gitdir:")?.trim().to_string();
            return Some(d.join(target));
        }
    }
    None
}

/// The directory holding shared refs and config (a worktree's `commondir`).
fn common_dir(git: &Path) -> std::path::PathBuf {
    match std::fs::read_to_string(git.join("commondir")) {
        Ok(c) => git.join(c.trim()),
        Err(_) => git.to_path_buf(),
    }
}

fn resolve_ref(git: &Path, name: &str) -> Option<String> {
    let common = common_dir(git);
    for base in [git, common.as_path()] {
        if let Ok(v) = std::fs::read_to_string(base.join(name)) {
            return Some(v.trim().to_string());
        }
    }
    let packed = std::fs::read_to_string(common.join("packed-refs")).ok()?;
    packed.lines().find_map(|l| {
        let (oid, r) = l.split_once(' ')?;
        (r == name).then(|| oid.to_string())
    })
}

/// HEAD of the repository containing `dir`, if any. Read from the files
/// directly: initialising libgit2 (and with it OpenSSL) costs tens of ms that
/// an offline build does not need.
pub fn head_revision(dir: &Path) -> Option<String> {
    let git = git_dir(dir)?;
    let head = std::fs::read_to_string(git.join("HEAD")).ok()?;
    let head = head.trim();
    let oid = match head.strip_prefix("ref:") {
        Some(r) => resolve_ref(&git, r.trim())?,
        None => head.to_string(),
    };
    (oid.len() == 40 && oid.chars().all(|c| c.is_ascii_hexdigit())).then_some(oid)
}

/// The `origin` remote of the repository containing `dir`, credentials removed.
pub fn origin_url(dir: &Path) -> Option<String> {
    let config = std::fs::read_to_string(common_dir(&git_dir(dir)?).join("config")).ok()?;
    let mut in_origin = false;
    for line in config.lines() {
        let l = line.trim();
        if l.starts_with('[') {
            in_origin = l.replace(' ', "") == "[remote\"origin\"]";
        } else if in_origin {
            if let Some((k, v)) = l.split_once('=') {
                if k.trim() == "url" {
                    return Some(crate::config::apps::strip_userinfo(v.trim()));
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_and_origin_are_read_from_the_repository_files() {
        let d = tempfile::tempdir().unwrap();
        let g = d.path().join(".git");
        std::fs::create_dir_all(g.join("refs/heads")).unwrap();
        let oid = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";
        std::fs::write(g.join("HEAD"), "ref: refs/heads/main\n").unwrap();
        std::fs::write(
            g.join("packed-refs"),
            format!("# pack-refs\n{oid} refs/heads/main\n"),
        )
        .unwrap();
        std::fs::write(g.join("config"), "[core]\n\tbare = false\n[remote \"origin\"]\n\turl = https://tok@example.com/acme/site.git\n").unwrap();
        let sub = d.path().join("a/b");
        std::fs::create_dir_all(&sub).unwrap();
        assert_eq!(head_revision(&sub).as_deref(), Some(oid));
        assert_eq!(
            origin_url(&sub).as_deref(),
            Some("https://example.com/acme/site.git")
        );
        std::fs::write(
            g.join("refs/heads/main"),
            "c0ffee0000000000000000000000000000000000\n",
        )
        .unwrap();
        assert_eq!(
            head_revision(d.path()).as_deref(),
            Some("c0ffee0000000000000000000000000000000000"),
            "loose refs win"
        );
    }

    #[test]
    fn credentials_are_split_off() {
        assert_eq!(
            split_credentials("https://tok@h/o/a.git"),
            (
                "https://h/o/a.git".into(),
                Some((Zeroizing::new("tok".into()), Zeroizing::new("tok".into())))
            )
        );
        assert_eq!(
            split_credentials("https://u:p%40q@h/a"),
            (
                "https://h/a".into(),
                Some((Zeroizing::new("u".into()), Zeroizing::new("p@q".into())))
            )
        );
        assert_eq!(
            split_credentials("/srv/repo.git"),
            ("/srv/repo.git".into(), None)
        );
        assert_eq!(
            split_credentials("https://h/a@b"),
            ("https://h/a@b".into(), None)
        );
    }
}
