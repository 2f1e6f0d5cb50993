//! The build context: which files of the context directory go to the engine.
//!
//! `.dockerignore` is honoured with the engine's rules: one pattern per line,
//! `#` comments, `!` exceptions, `*`/`?`/`[..]` within a path segment, `**`
//! across segments, a pattern also excludes everything below a matched
//! directory, and the last matching pattern wins. On top of that de-build
//! always leaves out what must never reach an image: `.env`, the env file in
//! use, `releases/` and its own state directory `.de-build/`; and it leaves
//! out `.env*` at any depth (`.env.bak`, `.env.old`) by default, as if the
//! `.dockerignore` began with `**/.env*`, so a `!` line there can bring such
//! a file back.
//!
//! Whatever is sent is scanned while it streams ([`ScanReader`]): a file
//! whose bytes hold a secret value (`custom.env`, a re-included `.env.bak`)
//! stops the build before the value leaves the process.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    segments: Vec<String>,
    exception: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ignore {
    patterns: Vec<Pattern>,
}

impl Ignore {
    pub fn parse(text: &str) -> Ignore {
        let mut patterns = Vec::new();
        for line in text.lines() {
            let l = line.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let (exception, l) = match l.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, l),
            };
            let segments: Vec<String> = l
                .split('/')
                .filter(|s| !s.is_empty() && *s != ".")
                .map(str::to_string)
                .collect();
            if !segments.is_empty() {
                patterns.push(Pattern {
                    segments,
                    exception,
                });
            }
        }
        Ignore { patterns }
    }

    pub fn add(&mut self, pattern: &str) {
        self.patterns.extend(Ignore::parse(pattern).patterns);
    }

    pub fn has_exceptions(&self) -> bool {
        self.patterns.iter().any(|p| p.exception)
    }

    /// Is `rel` (a `/`-separated path inside the context) excluded?
    pub fn excluded(&self, rel: &str) -> bool {
        let parts: Vec<&str> = rel.split('/').filter(|s| !s.is_empty()).collect();
        let mut excluded = false;
        for p in &self.patterns {
            // A pattern matches the path itself or any directory above it.
            let hit = (1..=parts.len()).any(|n| match_segments(&p.segments, &parts[..n]));
            if hit {
                excluded = !p.exception;
            }
        }
        excluded
    }
}

fn match_segments(pat: &[String], path: &[&str]) -> bool {
    match pat.split_first() {
        None => path.is_empty(),
        Some((first, rest)) if first == "**" => {
            (0..=path.len()).any(|skip| match_segments(rest, &path[skip..]))
        }
        Some((first, rest)) => match path.split_first() {
            Some((seg, path_rest)) => {
                glob(first.as_bytes(), seg.as_bytes()) && match_segments(rest, path_rest)
            }
            None => false,
        },
    }
}

/// Shell-style match of one segment: `*`, `?`, `[abc]`, `[a-z]`, `[^x]`, `\x`.
fn glob(p: &[u8], s: &[u8]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some(b'*') => (0..=s.len()).any(|i| glob(&p[1..], &s[i..])),
        Some(b'?') => !s.is_empty() && glob(&p[1..], &s[1..]),
        Some(b'[') => {
            let Some(c) = s.first() else { return false };
            let Some(end) = p.iter().skip(1).position(|b| *b == b']').map(|i| i + 1) else {
                return !s.is_empty() && s[0] == b'[' && glob(&p[1..], &s[1..]);
            };
            let (neg, class) = match p[1] {
                b'^' | b'!' => (true, &p[2..end]),
                _ => (false, &p[1..end]),
            };
            let mut found = false;
            let mut i = 0;
            while i < class.len() {
                if i + 2 < class.len() && class[i + 1] == b'-' {
                    found |= class[i] <= *c && *c <= class[i + 2];
                    i += 3;
                } else {
                    found |= class[i] == *c;
                    i += 1;
                }
            }
            found != neg && glob(&p[end + 1..], &s[1..])
        }
        Some(b'\\') if p.len() > 1 => !s.is_empty() && s[0] == p[1] && glob(&p[2..], &s[1..]),
        Some(c) => !s.is_empty() && s[0] == *c && glob(&p[1..], &s[1..]),
    }
}

/// Left out unless `.dockerignore` brings a file back with `!`: copies of
/// env files (`.env.bak`, `.env.old`, `.env.production`) hold secrets.
pub const DEFAULT_IGNORE: &str = "**/.env*";

/// One file to send: its path on disk and its name in the context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextFile {
    pub path: PathBuf,
    pub name: String,
}

/// What goes into the context, computed before anything is sent.
#[derive(Debug, Clone)]
pub struct Context {
    pub dir: PathBuf,
    pub files: Vec<ContextFile>,
    pub total_bytes: u64,
}

/// List the context of `dir`; `always_exclude` are extra paths (e.g. the env
/// file) and `always_include` the Containerfile, as `/`-separated names.
pub fn collect(
    dir: &Path,
    always_exclude: &[String],
    always_include: &[String],
) -> Result<Context> {
    // Defaults first: the user's patterns come later and win.
    let mut ignore = Ignore::parse(DEFAULT_IGNORE);
    match crate::config::read_capped(&dir.join(".dockerignore")) {
        Ok(t) => ignore
            .patterns
            .extend(Ignore::parse(&String::from_utf8_lossy(&t)).patterns),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("read", dir.join(".dockerignore"), e)),
    }
    let mut forced = Ignore::default();
    for p in [".env", "releases", ".de-build"]
        .iter()
        .map(|s| s.to_string())
        .chain(always_exclude.iter().cloned())
    {
        forced.add(&p);
    }
    ignore.patterns.retain(|p| !p.segments.is_empty());
    let mut files = Vec::new();
    let mut total = 0u64;
    walk(
        dir,
        "",
        &ignore,
        &forced,
        always_include,
        &mut files,
        &mut total,
    )?;
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Context {
        dir: dir.to_path_buf(),
        files,
        total_bytes: total,
    })
}

fn walk(
    dir: &Path,
    prefix: &str,
    ignore: &Ignore,
    forced: &Ignore,
    include: &[String],
    out: &mut Vec<ContextFile>,
    total: &mut u64,
) -> Result<()> {
    let rd = std::fs::read_dir(dir)
        .map_err(|e| Error::io("read the build context directory", dir, e))?;
    for entry in rd {
        let entry = entry.map_err(|e| Error::io("read the build context directory", dir, e))?;
        let name = entry.file_name().to_string_lossy().to_string();
        let rel = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        if forced.excluded(&rel) {
            continue;
        }
        let ft = entry
            .file_type()
            .map_err(|e| Error::io("inspect", entry.path(), e))?;
        let wanted = include.contains(&rel) || !ignore.excluded(&rel);
        if ft.is_dir() {
            // Directories are sent too, so empty ones survive a COPY.
            if wanted {
                out.push(ContextFile {
                    path: entry.path(),
                    name: rel.clone(),
                });
            }
            // An excluded directory is skipped whole unless an exception may re-include part of it.
            if wanted || ignore.has_exceptions() {
                walk(&entry.path(), &rel, ignore, forced, include, out, total)?;
            }
        } else if wanted {
            if ft.is_file() {
                *total += entry.metadata().map(|m| m.len()).unwrap_or(0);
            }
            out.push(ContextFile {
                path: entry.path(),
                name: rel,
            });
        }
    }
    Ok(())
}

/// A value the context must not contain, and the key it belongs to (for
/// the message: the value itself is never shown).
pub struct Needle {
    pub key: String,
    pub bytes: zeroize::Zeroizing<Vec<u8>>,
}

/// The secret found in a context file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretInFile {
    pub file: String,
    pub key: String,
}

impl std::fmt::Display for SecretInFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} holds the value of {}", self.file, self.key)
    }
}

impl std::error::Error for SecretInFile {}

const CHUNK: usize = 64 * 1024;

/// Reads a file for the tar stream and passes bytes on only once no secret
/// can begin in them: the last `longest - 1` bytes are held back until the
/// next read shows how they continue, so not even a prefix of a value is
/// sent before the match is seen.
pub struct ScanReader<'a, R> {
    inner: R,
    name: &'a str,
    needles: &'a [Needle],
    keep: usize,
    window: Vec<u8>,
    chunk: Vec<u8>,
    /// `window[..ready]` has been searched and may go out.
    ready: usize,
    sent: usize,
    eof: bool,
}

impl<'a, R: std::io::Read> ScanReader<'a, R> {
    pub fn new(inner: R, name: &'a str, needles: &'a [Needle]) -> Self {
        let longest = needles.iter().map(|n| n.bytes.len()).max().unwrap_or(0);
        ScanReader {
            inner,
            name,
            needles,
            keep: longest.saturating_sub(1),
            window: Vec::with_capacity(CHUNK + longest),
            chunk: vec![0; CHUNK],
            ready: 0,
            sent: 0,
            eof: false,
        }
    }

    fn refill(&mut self) -> std::io::Result<()> {
        self.window.drain(..self.sent);
        self.ready -= self.sent;
        self.sent = 0;
        let n = loop {
            match self.inner.read(&mut self.chunk) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => break r?,
            }
        };
        self.window.extend_from_slice(&self.chunk[..n]);
        if n == 0 {
            self.eof = true;
            self.ready = self.window.len();
            return Ok(());
        }
        for needle in self.needles {
            if !needle.bytes.is_empty()
                && memchr::memmem::find(&self.window, &needle.bytes).is_some()
            {
                return Err(std::io::Error::other(SecretInFile {
                    file: self.name.to_string(),
                    key: needle.key.clone(),
                }));
            }
        }
        self.ready = self.window.len().saturating_sub(self.keep);
        Ok(())
    }
}

impl<R: std::io::Read> std::io::Read for ScanReader<'_, R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.sent == self.ready && !self.eof {
            self.refill()?;
        }
        let n = (self.ready - self.sent).min(out.len());
        out[..n].copy_from_slice(&self.window[self.sent..self.sent + n]);
        self.sent += n;
        Ok(n)
    }
}

/// If `e` (or an error it wraps) says a context file holds a secret.
pub fn secret_in_file(e: &std::io::Error) -> Option<SecretInFile> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<SecretInFile>())
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerignore_rules() {
        let i = Ignore::parse(
            "# c\n*.log\nbuild/\n!build/keep.txt\n**/secret*\n/docs\ntmp?\n[ab].txt\n",
        );
        assert!(i.excluded("x.log"));
        assert!(!i.excluded("sub/x.log"), "*.log is anchored at the root");
        assert!(i.excluded("build/out.o"));
        assert!(!i.excluded("build/keep.txt"));
        assert!(i.excluded("a/b/secret.key"));
        assert!(i.excluded("secret"));
        assert!(i.excluded("docs/readme.md"));
        assert!(i.excluded("tmp1"));
        assert!(!i.excluded("tmp12"));
        assert!(i.excluded("a.txt") && !i.excluded("c.txt"));
        assert!(!i.excluded("src/main.rs"));
    }

    #[test]
    fn collect_leaves_out_secrets_state_and_ignored() {
        let d = tempfile::tempdir().unwrap();
        for f in [
            ".env",
            "prod.env",
            "releases/1.0.0.json",
            ".de-build/lock",
            "Containerfile",
            "app/x.py",
            "big.log",
            ".dockerignore",
        ] {
            let p = d.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "x").unwrap();
        }
        std::fs::write(d.path().join(".dockerignore"), "*.log\nContainerfile\n").unwrap();
        let c = collect(d.path(), &["prod.env".into()], &["Containerfile".into()]).unwrap();
        let names: Vec<_> = c.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            vec![".dockerignore", "Containerfile", "app", "app/x.py"]
        );
    }

    #[test]
    fn env_copies_are_left_out_unless_brought_back() {
        let d = tempfile::tempdir().unwrap();
        for f in [
            ".env",
            ".env.bak",
            "sub/.env.old",
            ".envrc",
            "custom.env",
            "Containerfile",
        ] {
            let p = d.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "x").unwrap();
        }
        let names = |d: &Path| {
            collect(d, &[], &[])
                .unwrap()
                .files
                .into_iter()
                .map(|f| f.name)
                .collect::<Vec<_>>()
        };
        assert_eq!(names(d.path()), vec!["Containerfile", "custom.env", "sub"]);
        std::fs::write(d.path().join(".dockerignore"), "!.env.bak\n!.env\n").unwrap();
        assert_eq!(
            names(d.path()),
            vec![
                ".dockerignore",
                ".env.bak",
                "Containerfile",
                "custom.env",
                "sub"
            ],
            "a negation brings a copy back (then scanned); .env itself never"
        );
    }

    fn needles(v: &[&str]) -> Vec<Needle> {
        v.iter()
            .map(|s| Needle {
                key: "TOK".into(),
                bytes: zeroize::Zeroizing::new(s.as_bytes().to_vec()),
            })
            .collect()
    }

    /// Yields its data one byte per read: the worst case for a match that
    /// spans reads.
    struct Trickle<'a>(&'a [u8]);
    impl std::io::Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            match self.0.split_first() {
                Some((b, rest)) if !out.is_empty() => {
                    out[0] = *b;
                    self.0 = rest;
                    Ok(1)
                }
                _ => Ok(0),
            }
        }
    }

    #[test]
    fn scanning_stops_before_any_byte_of_a_secret_is_passed_on() {
        use std::io::Read;
        let secret = "canary-scan-0123456789";
        let n = needles(&[secret, "shortval"]);
        let mut data = vec![b'a'; 3 * CHUNK - 5];
        data.extend_from_slice(secret.as_bytes());
        data.extend_from_slice(b"after");
        for trickle in [true, false] {
            let inner: Box<dyn Read> = if trickle {
                Box::new(Trickle(&data))
            } else {
                Box::new(&data[..])
            };
            let mut r = ScanReader::new(inner, "custom.env", &n);
            let mut passed = Vec::new();
            let mut buf = [0u8; 7000];
            let err = loop {
                match r.read(&mut buf) {
                    Ok(0) => panic!("the secret was not found"),
                    Ok(k) => passed.extend_from_slice(&buf[..k]),
                    Err(e) => break e,
                }
            };
            assert_eq!(
                secret_in_file(&err),
                Some(SecretInFile {
                    file: "custom.env".into(),
                    key: "TOK".into()
                })
            );
            assert!(
                passed.len() <= 3 * CHUNK - 5,
                "no byte of the value went out"
            );
            assert!(!err.to_string().contains(secret));
        }
        // A clean file passes whole, byte for byte.
        let clean: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut out = Vec::new();
        ScanReader::new(Trickle(&clean), "f", &n)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, clean);
    }
}
