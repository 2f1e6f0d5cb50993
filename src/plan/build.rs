//! Build plans: what a build will do, computed ahead as plain values.
//! `build --dry-run` prints them; `build` executes them step by step.

use crate::record::manifest::{AppRecord, CacheKey};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

/// The image that already holds the tag we are about to build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Existing {
    pub id: String,
    pub manifest: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BuildPlan {
    pub version: String,
    pub repository: String,
    /// `repository:version`.
    pub reference: String,
    pub context_dir: PathBuf,
    /// Containerfile path inside the context, `/`-separated.
    pub containerfile: String,
    pub containerfile_sha256: String,
    pub context_files: usize,
    pub context_bytes: u64,
    pub build_args: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub apps: Vec<AppRecord>,
    pub cache_key: CacheKey,
    pub no_cache: bool,
    pub existing: Option<Existing>,
    pub smoke_command: Vec<String>,
    pub manifest_path: PathBuf,
}

/// One action of a build, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// Keep the image that holds the tag under a recovery tag first (`--replace`).
    Supersede {
        id: String,
        to: String,
    },
    Build {
        reference: String,
    },
    SmokeTest {
        reference: String,
        command: Vec<String>,
        /// The directories under `apps/` that must exist: each app's
        /// package name, as bench installs it.
        apps: Vec<String>,
    },
    WriteManifest {
        path: PathBuf,
    },
}

/// The recovery tag of a superseded image: `<version>-superseded-<short id>`.
pub fn superseded_tag(version: &str, id: &str) -> String {
    format!("{version}-superseded-{}", crate::util::short_id(id))
}

impl BuildPlan {
    pub fn steps(&self) -> Vec<Step> {
        let mut steps = Vec::new();
        if let Some(e) = &self.existing {
            steps.push(Step::Supersede {
                id: e.id.clone(),
                to: format!(
                    "{}:{}",
                    self.repository,
                    superseded_tag(&self.version, &e.id)
                ),
            });
        }
        steps.push(Step::Build {
            reference: self.reference.clone(),
        });
        steps.push(Step::SmokeTest {
            reference: self.reference.clone(),
            command: self.smoke_command.clone(),
            apps: self
                .apps
                .iter()
                .map(|a| crate::config::apps::package_dir(&a.name))
                .collect(),
        });
        steps.push(Step::WriteManifest {
            path: self.manifest_path.clone(),
        });
        steps
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Supersede { id, to } => write!(
                f,
                "keep the current image {} as {to}",
                crate::util::short_id(id)
            ),
            Step::Build { reference } => write!(
                f,
                "build {reference} with BuildKit (apps.json as secret apps_json)"
            ),
            Step::SmokeTest { command, apps, .. } if apps.is_empty() => write!(
                f,
                "smoke test: `{}` exits 0 (apps.json lists no apps)",
                command.join(" ")
            ),
            Step::SmokeTest { command, apps, .. } => write!(
                f,
                "smoke test: `{}` exits 0 and apps/ holds {}",
                command.join(" "),
                apps.join(", ")
            ),
            Step::WriteManifest { path } => write!(f, "write {}", crate::config::display(path)),
        }
    }
}

impl fmt::Display for BuildPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "build plan for {}", self.reference)?;
        writeln!(
            f,
            "  context       {} ({} entries, {})",
            crate::config::display(&self.context_dir),
            self.context_files,
            crate::util::human_bytes(self.context_bytes)
        )?;
        writeln!(f, "  containerfile {}", self.containerfile)?;
        writeln!(
            f,
            "  cache key     {} (from {})",
            &self.cache_key.value[..self.cache_key.value.len().min(16)],
            self.cache_key.source
        )?;
        writeln!(f, "  build-args")?;
        for (k, v) in &self.build_args {
            writeln!(f, "    {k}={v}")?;
        }
        writeln!(f, "  apps")?;
        for a in &self.apps {
            let commit = a
                .commit
                .as_deref()
                .map(|c| &c[..c.len().min(12)])
                .unwrap_or("(not resolved)");
            writeln!(f, "    {:<14} {:<16} {commit}", a.name, a.reference)?;
        }
        writeln!(f, "  steps")?;
        for (i, s) in self.steps().iter().enumerate() {
            writeln!(f, "    {}. {s}", i + 1)?;
        }
        Ok(())
    }
}

/// `CACHE_BUST`: a hash of the resolved app commits, or of the redacted
/// apps.json when commits are not resolved (`--offline`).
pub fn cache_key(apps: &[AppRecord], redacted_apps_json: &str) -> CacheKey {
    if !apps.is_empty() && apps.iter().all(|a| a.commit.is_some()) {
        let lines: Vec<String> = apps
            .iter()
            .map(|a| format!("{} {}\n", a.name, a.commit.as_deref().unwrap_or("")))
            .collect();
        CacheKey {
            value: crate::util::sha256_hex(lines.concat().as_bytes()),
            source: "app-commits".into(),
        }
    } else {
        CacheKey {
            value: crate::util::sha256_hex(redacted_apps_json.as_bytes()),
            source: "apps-json".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(name: &str, commit: Option<&str>) -> AppRecord {
        AppRecord {
            name: name.into(),
            url: format!("https://h/{name}"),
            reference: "main".into(),
            commit: commit.map(str::to_string),
        }
    }

    #[test]
    fn cache_key_follows_commits_not_tokens() {
        let a = cache_key(&[app("x", Some("c1")), app("y", Some("c2"))], "json");
        let b = cache_key(&[app("x", Some("c1")), app("y", Some("c3"))], "json");
        assert_eq!(a.source, "app-commits");
        assert_ne!(a.value, b.value, "a moved branch changes the key");
        assert_eq!(
            a,
            cache_key(&[app("x", Some("c1")), app("y", Some("c2"))], "other json")
        );
        let off = cache_key(&[app("x", None)], "json");
        assert_eq!(off.source, "apps-json");
        assert_eq!(off.value, crate::util::sha256_hex(b"json"));
    }

    #[test]
    fn steps_supersede_only_when_the_tag_is_taken() {
        let mut p = BuildPlan {
            version: "1.0.0".into(),
            repository: "r/x".into(),
            reference: "r/x:1.0.0".into(),
            context_dir: ".".into(),
            containerfile: "Containerfile".into(),
            containerfile_sha256: "00".into(),
            context_files: 1,
            context_bytes: 1,
            build_args: BTreeMap::new(),
            labels: BTreeMap::new(),
            apps: vec![app("erpnext", None)],
            cache_key: cache_key(&[], "[]"),
            no_cache: false,
            existing: None,
            smoke_command: vec!["bench".into(), "version".into()],
            manifest_path: "releases/1.0.0.json".into(),
        };
        assert_eq!(
            p.steps(),
            vec![
                Step::Build {
                    reference: "r/x:1.0.0".into()
                },
                Step::SmokeTest {
                    reference: "r/x:1.0.0".into(),
                    command: vec!["bench".into(), "version".into()],
                    apps: vec!["erpnext".into()]
                },
                Step::WriteManifest {
                    path: "releases/1.0.0.json".into()
                },
            ]
        );
        p.existing = Some(Existing {
            id: "sha256:abcdef0123456789".into(),
            manifest: None,
        });
        assert_eq!(
            p.steps()[0],
            Step::Supersede {
                id: "sha256:abcdef0123456789".into(),
                to: "r/x:1.0.0-superseded-abcdef012345".into()
            }
        );
        assert!(p.to_string().contains(
            "1. keep the current image abcdef012345 as r/x:1.0.0-superseded-abcdef012345"
        ));
    }
}
