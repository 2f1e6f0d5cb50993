//! The build context: which files of the context directory go to the engine.
//!
//! `.dockerignore` is honoured with the engine's rules: one pattern per line,
//! `#` comments, `!` exceptions, `*`/`?`/`[..]` within a path segment, `**`
//! across segments, a pattern also excludes everything below a matched
//! directory, and the last matching pattern wins. On top of that de-build
//! always leaves out what must never reach an image: `.env`, the env file in
//! use, `releases/` and its own state directory `.de-build/`.

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
    let mut ignore = match std::fs::read_to_string(dir.join(".dockerignore")) {
        Ok(t) => Ignore::parse(&t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ignore::default(),
        Err(e) => return Err(Error::io("read", dir.join(".dockerignore"), e)),
    };
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
}
