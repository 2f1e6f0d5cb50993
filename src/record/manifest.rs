//! Release manifests: `releases/<version>.json`, one per successful build.
//!
//! The schema is versioned (`schema_version`) and documented field by field in
//! `releases/README.md`. Manifests never hold a credential: app URLs are stored
//! with userinfo removed and only non-secret build-args are kept.

use crate::error::{Error, Problem, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub schema_version: u32,
    pub version: String,
    /// UTC, RFC 3339.
    pub created: String,
    pub de_build_version: String,
    pub image: ImageRef,
    pub build_args: BTreeMap<String, String>,
    pub containerfile: FileDigest,
    pub apps: Vec<AppRecord>,
    /// sha256 of the apps.json with credentials removed.
    pub apps_json_sha256: String,
    /// The `CACHE_BUST` build-arg and what it was derived from.
    pub cache_key: CacheKey,
    /// HEAD of the project's git repository at build time, if it is one.
    pub project_revision: Option<String>,
    /// The image that held this tag before a `--replace` build.
    pub superseded: Option<Superseded>,
    pub builder: Builder,
    pub smoke_test: SmokeTest,
    /// Set once the image was pushed to a registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<RegistryRecord>,
    /// What makes `bench migrate` do work in this image; equal fingerprints
    /// mean a deploy between the two releases needs no migrate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<SchemaFingerprint>,
}

/// A sha256 over the files that make `bench migrate` do work, app by app:
/// `patches.txt`, `hooks.py`, DocType and other module JSON, fixtures,
/// `custom/` (the rules Frappe Cloud uses to decide whether an update needs a
/// migrate, in `press`'s app release difference).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaFingerprint {
    pub sha256: String,
    /// How many files it covers.
    pub files: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRef {
    pub repository: String,
    pub tag: String,
    /// `repository:tag`.
    pub reference: String,
    /// `sha256:...` image ID (config digest) as the engine reports it.
    pub id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    pub path: String,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppRecord {
    pub name: String,
    /// URL with credentials removed.
    pub url: String,
    /// Branch or tag as written in apps.json; for an app without one, the
    /// default branch the remote's HEAD named, or `HEAD`.
    #[serde(rename = "ref")]
    pub reference: String,
    /// Commit the ref resolved to at build time (`None` with `--offline`).
    pub commit: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheKey {
    pub value: String,
    /// `app-commits` (normal) or `apps-json` (`--offline`).
    pub source: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Superseded {
    pub reference: String,
    pub id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Builder {
    pub engine_version: String,
    pub api_version: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmokeTest {
    pub command: Vec<String>,
    pub passed: bool,
    /// Layers + runtime config digest of the tested image (labels excluded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_digest: Option<String>,
    /// Set when an earlier release had the identical content and passed:
    /// the test was not run again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reused_from: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryRecord {
    pub repository: String,
    /// `repository@sha256:...`.
    pub digest_ref: String,
    pub pushed: String,
}

/// The `releases/` directory.
pub struct Store {
    pub dir: PathBuf,
}

/// A manifest that could be read, with its file.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub path: PathBuf,
    pub manifest: Manifest,
    pub version: semver::Version,
}

impl Store {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Store { dir: dir.into() }
    }

    pub fn path_for(&self, version: &str) -> PathBuf {
        self.dir.join(format!("{version}.json"))
    }

    /// Every manifest, newest version first, plus a problem per unreadable one.
    pub fn load_all(&self) -> (Vec<Loaded>, Vec<Problem>) {
        let mut out = Vec::new();
        let mut problems = Vec::new();
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (out, problems),
            Err(e) => {
                problems.push(Problem::new(
                    self.dir.display().to_string(),
                    "unreadable",
                    format!("cannot list releases: {e}"),
                ));
                return (out, problems);
            }
        };
        let mut paths: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        paths.sort();
        for path in paths {
            match Self::read(&path) {
                Ok(l) => out.push(l),
                Err(msg) => problems.push(
                    Problem::new(path.display().to_string(), "bad-manifest", msg)
                        .hint("fix or move the file: de-build reads every manifest in releases/ to keep versions unique"),
                ),
            }
        }
        out.sort_by(|a, b| b.version.cmp(&a.version));
        (out, problems)
    }

    fn read(path: &Path) -> std::result::Result<Loaded, String> {
        let bytes = crate::secret::read_capped(path)
            .map_err(|e| format!("cannot read: {}", crate::error::io_reason(&e)))?;
        let manifest: Manifest =
            serde_json::from_slice(&bytes).map_err(|e| format!("not a release manifest: {e}"))?;
        if manifest.schema_version > SCHEMA_VERSION {
            return Err(format!(
                "schema_version {} is newer than this de-build understands ({SCHEMA_VERSION}); upgrade de-build",
                manifest.schema_version
            ));
        }
        let version = semver::Version::parse(&manifest.version)
            .map_err(|e| format!("version \"{}\" is not semver: {e}", manifest.version))?;
        Ok(Loaded {
            path: path.to_path_buf(),
            manifest,
            version,
        })
    }

    /// The manifest of `version`. A version is semver or refused (exit 2):
    /// it comes from the command line and names a file, which must stay in
    /// `releases/` (`releases show ../../evil` reads nothing).
    pub fn get(&self, version: &str) -> Result<Option<Loaded>> {
        if semver::Version::parse(version).is_err() {
            let shown = crate::ui::output::fit(version, 40);
            return Err(Error::refused(
                format!("`{shown}` is not a release version"),
                "versions are semantic versions as in releases/: MAJOR.MINOR.PATCH, e.g. 1.2.0 (see `de-build releases list`)",
            ));
        }
        let path = self.path_for(version);
        if !path.exists() {
            return Ok(None);
        }
        Self::read(&path).map(Some).map_err(|m| {
            Error::Invalid(vec![Problem::new(
                path.display().to_string(),
                "bad-manifest",
                m,
            )])
        })
    }

    /// Write atomically: temp file in the same directory, fsync, rename, fsync dir.
    pub fn write(&self, m: &Manifest) -> Result<PathBuf> {
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::io("create", &self.dir, e))?;
        let path = self.path_for(&m.version);
        let text = serde_json::to_string_pretty(m)
            .map_err(|e| Error::failed(format!("serialise manifest: {e}")))?
            + "\n";
        // Nothing secret goes in by construction; the redactor is a second fence.
        let text = crate::ui::output::redact::redact(&text);
        write_atomic(&path, text.as_bytes())?;
        Ok(path)
    }
}

/// Manifests are meant to be committed and read by anyone: 0644.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    crate::record::state::write_file(path, data, 0o644)
}

#[cfg(test)]
pub mod tests {

    #[test]
    fn versions_from_the_command_line_stay_in_releases() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path().join("releases"));
        std::fs::write(dir.path().join("evil.json"), "{}").unwrap();
        for bad in [
            "../evil",
            "../../etc/passwd",
            "/etc/passwd",
            "1.0",
            "",
            "1.0.0/../../evil",
        ] {
            match store.get(bad) {
                Err(e) => assert_eq!(e.exit_code(), 2, "{bad}"),
                Ok(_) => panic!("{bad} accepted"),
            }
        }
        assert!(store.get("1.0.0").unwrap().is_none());
    }

    use super::*;

    pub fn sample(version: &str) -> Manifest {
        Manifest {
            schema_version: SCHEMA_VERSION,
            version: version.into(),
            created: "2026-11-23T10:00:00Z".into(),
            de_build_version: "0.1.0".into(),
            image: ImageRef {
                repository: "example/erpnext-custom".into(),
                tag: version.into(),
                reference: format!("example/erpnext-custom:{version}"),
                id: "sha256:0123".into(),
            },
            build_args: BTreeMap::from([("FRAPPE_BRANCH".into(), "version-15".into())]),
            containerfile: FileDigest {
                path: "images/custom/Containerfile".into(),
                sha256: "ab".into(),
            },
            apps: vec![AppRecord {
                name: "erpnext".into(),
                url: "https://github.com/frappe/erpnext".into(),
                reference: "v15.17.0".into(),
                commit: Some("c0ffee".into()),
            }],
            apps_json_sha256: "cd".into(),
            cache_key: CacheKey {
                value: "ef".into(),
                source: "app-commits".into(),
            },
            project_revision: None,
            superseded: None,
            builder: Builder {
                engine_version: "20.10.24".into(),
                api_version: "1.41".into(),
            },
            smoke_test: SmokeTest {
                command: vec!["bench".into(), "version".into()],
                passed: true,
                content_digest: None,
                reused_from: None,
            },
            registry: None,
            schema: None,
        }
    }

    #[test]
    fn write_then_load_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        for v in ["1.2.0", "1.10.0", "1.9.1"] {
            store.write(&sample(v)).unwrap();
        }
        std::fs::write(dir.path().join("junk.json"), "{").unwrap();
        let (all, problems) = store.load_all();
        let versions: Vec<_> = all.iter().map(|l| l.manifest.version.as_str()).collect();
        assert_eq!(versions, vec!["1.10.0", "1.9.1", "1.2.0"]);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].code, "bad-manifest");
        assert_eq!(
            store.get("1.9.1").unwrap().unwrap().manifest,
            sample("1.9.1")
        );
        // No temp files left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 4);
    }
}

#[cfg(test)]
mod schema_snapshot {
    use super::tests::sample;
    use super::*;

    fn full() -> Manifest {
        let mut m = sample("1.2.0");
        m.project_revision = Some("4b825dc642cb6eb9a060e54bf8d69288fbee4904".into());
        m.superseded = Some(Superseded {
            reference: "example/erpnext-custom:1.2.0-superseded-0123".into(),
            id: "sha256:0123".into(),
        });
        m.smoke_test.content_digest = Some("9f".into());
        m.registry = Some(RegistryRecord {
            repository: "registry.example.com:5000/example/erpnext-custom".into(),
            digest_ref: "registry.example.com:5000/example/erpnext-custom@sha256:beef".into(),
            pushed: "2026-11-23T10:05:00Z".into(),
        });
        m
    }

    /// The documented schema, field by field: a change here is a change of
    /// `schema_version` and of the README table.
    #[test]
    fn manifest_v1_matches_the_fixture() {
        let fixture = include_str!("../../tests/fixtures/manifest-v1.json");
        let written = serde_json::to_string_pretty(&full()).unwrap() + "\n";
        assert_eq!(written, fixture);
        let read: Manifest = serde_json::from_str(fixture).unwrap();
        assert_eq!(read, full());
    }
}
