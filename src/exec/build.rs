//! `de-build build`: check, resolve, plan, then build, smoke-test and record.

use crate::adapters::context;
use crate::adapters::engine::{buildkit, Engine};
use crate::config::apps;
use crate::config::{self, Inputs};
use crate::error::{Error, Problem, Result};
use crate::plan::build::{self as plan, BuildPlan, Existing, Step};
use crate::record::manifest::{self, AppRecord, Manifest, Store};
use crate::ui::output::{self, Style};
use crate::ui::progress::Progress;
use crate::util::short_id;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How to build, from the command line (`build`, `release`).
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// Keep an image that holds the tag as `-superseded-` and build anyway.
    pub replace: bool,
    /// Do not resolve app refs with the git remotes.
    pub offline: bool,
    pub no_cache: bool,
    /// The build context [default: the project directory].
    pub context: Option<PathBuf>,
    /// Seconds for each git remote.
    pub timeout: u64,
    /// The build-args besides `CACHE_BUST`, checked: from [`build_args`].
    pub build_args: BTreeMap<String, String>,
}

/// The build-args of `.env` keys the Containerfile declares as `ARG`s and of
/// `--build-arg KEY=VALUE`, checked before anything else happens (exit 2 on
/// any problem, every one listed).
pub fn build_args(inputs: &Inputs, cli: &[String]) -> Result<BTreeMap<String, String>> {
    let (args, problems) = config::containerfile::resolve_build_args(
        &inputs.containerfile,
        &inputs.env,
        &config::display(&inputs.paths.env_file),
        cli,
    );
    if problems.is_empty() {
        Ok(args)
    } else {
        Err(Error::Invalid(problems))
    }
}

pub const DEFAULT_SMOKE: [&str; 2] = ["bench", "version"];

fn required<'a>(inputs: &'a Inputs, key: &str) -> Result<&'a str> {
    inputs.env.get(key).ok_or_else(|| {
        Error::Invalid(vec![Problem::new(
            config::display(&inputs.paths.env_file),
            "missing-key",
            format!("{key} is needed to build"),
        )
        .hint(format!(
            "declare {key} in the example file and set it in .env"
        ))])
    })
}

/// Resolve every app's ref to a commit (or record them unresolved with `--offline`).
pub fn app_records(
    inputs: &Inputs,
    offline: bool,
    timeout: Duration,
    style: &Style,
) -> Result<Vec<AppRecord>> {
    let mut records: Vec<AppRecord> = inputs
        .apps
        .iter()
        .map(|a| AppRecord {
            name: a.name.clone(),
            url: a.public_url(),
            // No branch: bench clones the default branch, HEAD.
            reference: a.git_ref().to_string(),
            commit: None,
        })
        .collect();
    if offline {
        output::progress(
            style,
            "offline: app commits not resolved; the cache key is the apps.json hash",
        );
        return Ok(records);
    }
    let results = crate::adapters::online::resolve_apps(inputs, timeout, style);
    let mut problems = Vec::new();
    for ((rec, r), app) in records.iter_mut().zip(results).zip(&inputs.apps) {
        match r {
            Ok(res) => {
                rec.reference = res.reference(app);
                rec.commit = Some(res.commit);
            }
            Err(p) => problems.push(p),
        }
    }
    if problems.is_empty() {
        Ok(records)
    } else if problems
        .iter()
        .all(|p| p.code == "timeout" || p.code == "git-error")
    {
        let detail: Vec<String> = problems
            .iter()
            .map(|p| format!("{}: {}", p.location(), p.message))
            .collect();
        Err(Error::Failed {
            message: format!("could not resolve app commits:\n  {}", detail.join("\n  ")),
            hint: Some(
                "retry, or build with --offline (the cache key is then the apps.json hash)".into(),
            ),
        })
    } else {
        Err(Error::Invalid(problems))
    }
}

/// The labels every de-build image carries.
pub fn labels(
    version: &str,
    created: &str,
    revision: Option<&str>,
    source: &str,
    apps: &[AppRecord],
    cache_key: &str,
) -> BTreeMap<String, String> {
    let apps_label: Vec<_> = apps
        .iter()
        .map(|a| json!({"name": a.name, "ref": a.reference, "commit": a.commit}))
        .collect();
    let mut l = BTreeMap::from([
        (
            "org.opencontainers.image.version".to_string(),
            version.to_string(),
        ),
        (
            "org.opencontainers.image.created".to_string(),
            created.to_string(),
        ),
        (
            "org.opencontainers.image.source".to_string(),
            source.to_string(),
        ),
        (
            "de-build.version".to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        ),
        (
            "de-build.apps".to_string(),
            serde_json::to_string(&apps_label).unwrap_or_default(),
        ),
        ("de-build.cache-key".to_string(), cache_key.to_string()),
    ]);
    if let Some(r) = revision {
        l.insert("org.opencontainers.image.revision".into(), r.to_string());
    }
    l
}

pub struct Prepared {
    pub plan: BuildPlan,
    pub context: context::Context,
    pub created: String,
    pub revision: Option<String>,
}

/// Everything up to the plan: checks, commits, collision, context.
pub async fn prepare(
    inputs: &Inputs,
    args: &BuildOptions,
    engine: &Engine,
    style: &Style,
) -> Result<Prepared> {
    let mut problems = inputs.problems.clone();
    problems.extend(crate::config::version::check_version(inputs, args.replace).1);
    if !problems.is_empty() {
        return Err(Error::Invalid(problems));
    }
    let version = required(inputs, "DE_SITE_VERSION")?.to_string();
    let repository = required(inputs, "DE_IMAGE")?.to_string();
    let reference = format!("{repository}:{version}");
    let context_dir = args
        .context
        .clone()
        .unwrap_or_else(|| inputs.paths.project_dir.clone());
    let containerfile_path = inputs
        .paths
        .project_dir
        .join(required(inputs, "DE_CONTAINERFILE")?);
    let containerfile = relative_name(&context_dir, &containerfile_path).ok_or_else(|| {
        Error::refused(
            format!(
                "the Containerfile {} is outside the build context {}",
                config::display(&containerfile_path),
                config::display(&context_dir)
            ),
            "point DE_CONTAINERFILE at a file inside the context, or pass --context",
        )
    })?;
    let cf_bytes = config::read_capped(&containerfile_path)
        .map_err(|e| Error::io("read", &containerfile_path, e))?;

    let existing = match engine.image(&reference).await? {
        None => None,
        Some(img) => {
            let store = Store::new(&inputs.paths.releases);
            let manifest = store.get(&version).ok().flatten().map(|l| l.path);
            if !args.replace {
                let recorded = manifest
                    .as_ref()
                    .map(|p| format!(", recorded in {}", config::display(p)))
                    .unwrap_or_else(|| ", not recorded by de-build".into());
                let v = semver::Version::parse(&version)
                    .map(|v| semver::Version::new(v.major, v.minor, v.patch + 1).to_string())
                    .unwrap_or_else(|_| "a newer version".into());
                return Err(Error::refused(
                    format!("{reference} already exists (image {}{recorded}); building would move the tag and leave that image untagged", short_id(&img.id)),
                    format!("bump DE_SITE_VERSION (e.g. to {v}) for a new release, or run `de-build build --replace` to rebuild {version} and keep the current image as {repository}:{}", plan::superseded_tag(&version, &img.id)),
                ));
            }
            Some(Existing {
                id: img.id,
                manifest,
            })
        }
    };

    let records = app_records(
        inputs,
        args.offline,
        Duration::from_secs(args.timeout),
        style,
    )?;
    let redacted = apps::redacted_json(&inputs.apps);
    let cache_key = plan::cache_key(&records, &redacted);

    let mut exclude = Vec::new();
    if let Some(env_rel) = relative_name(&context_dir, &inputs.paths.env_file) {
        exclude.push(env_rel);
    }
    let ctx = context::collect(&context_dir, &exclude, std::slice::from_ref(&containerfile))?;

    let mut build_args = args.build_args.clone();
    build_args.insert(
        config::containerfile::RESERVED_ARG.into(),
        cache_key.value.clone(),
    );

    let created = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let revision = crate::adapters::git::head_revision(&inputs.paths.project_dir);
    let source = crate::adapters::git::origin_url(&inputs.paths.project_dir).unwrap_or_else(|| {
        let abs = std::fs::canonicalize(&inputs.paths.project_dir)
            .unwrap_or_else(|_| inputs.paths.project_dir.clone());
        format!("file://{}", abs.display())
    });
    let labels = labels(
        &version,
        &created,
        revision.as_deref(),
        &source,
        &records,
        &cache_key.value,
    );
    let smoke_command = inputs
        .env
        .get("DE_SMOKE_COMMAND")
        .map(|c| c.split_whitespace().map(str::to_string).collect())
        .unwrap_or_else(|| DEFAULT_SMOKE.iter().map(|s| s.to_string()).collect());

    let plan = BuildPlan {
        version: version.clone(),
        repository,
        reference,
        context_dir,
        containerfile,
        containerfile_sha256: crate::util::sha256_hex(&cf_bytes),
        context_files: ctx.files.len(),
        context_bytes: ctx.total_bytes,
        build_args,
        labels,
        apps: records,
        cache_key,
        no_cache: args.no_cache,
        existing,
        smoke_command,
        manifest_path: Store::new(&inputs.paths.releases).path_for(&version),
    };
    Ok(Prepared {
        plan,
        context: ctx,
        created,
        revision,
    })
}

/// `/`-separated path of `path` inside `dir`, if it is inside.
fn relative_name(dir: &std::path::Path, path: &std::path::Path) -> Option<String> {
    let d = std::fs::canonicalize(dir).ok()?;
    let p = std::fs::canonicalize(path).ok()?;
    let rel = p.strip_prefix(&d).ok()?;
    Some(
        rel.components()
            .map(|c| c.as_os_str().to_string_lossy().to_string())
            .collect::<Vec<_>>()
            .join("/"),
    )
}

/// What a finished build produced.
pub struct Built {
    pub manifest: Manifest,
    pub manifest_path: std::path::PathBuf,
    pub durations: BTreeMap<String, f64>,
}

/// Execute the plan's steps in order; on failure put tags back as they were.
pub async fn execute(
    inputs: &Inputs,
    prepared: Prepared,
    engine: &Engine,
    style: &Style,
) -> Result<Built> {
    let Prepared {
        plan,
        context,
        created,
        revision,
    } = prepared;
    let mut durations = BTreeMap::new();
    let mut superseded: Option<manifest::Superseded> = None;
    let mut image_id = String::new();
    let mut content_digest = None;
    let mut reused_from = None;
    let mut recorded: Option<(Manifest, std::path::PathBuf)> = None;
    let mut schema: Option<manifest::SchemaFingerprint> = None;
    let (engine_version, api_version) = engine.version().await?;
    for step in plan.steps() {
        let started = Instant::now();
        output::progress(style, &format!("{} {step}", style.bold("==>")));
        match &step {
            Step::Supersede { id, to } => {
                let (repo, tag) = crate::adapters::engine::split_reference(to);
                engine.tag(id, repo, tag.unwrap_or_default()).await?;
                superseded = Some(manifest::Superseded {
                    reference: to.clone(),
                    id: id.clone(),
                });
                durations.insert("supersede".into(), started.elapsed().as_secs_f64());
            }
            Step::Build { reference } => {
                let injected = apps::inject(&inputs.apps, &inputs.env);
                let req = buildkit::BuildRequest {
                    tag: reference.clone(),
                    dockerfile: plan.containerfile.clone(),
                    build_args: plan.build_args.clone(),
                    labels: plan.labels.clone(),
                    no_cache: plan.no_cache,
                    context_files: context
                        .files
                        .iter()
                        .map(|f| (f.path.clone(), f.name.clone()))
                        .collect(),
                    secrets: vec![("apps_json".to_string(), injected)],
                    forbidden: forbidden_values(inputs),
                };
                let mut progress = Progress::new(*style);
                let result = buildkit::build(&api_version, req, |ev| progress.on_event(ev)).await;
                progress.finish();
                crate::ui::logfile::action(
                    &format!("buildkit build {reference}"),
                    result.is_ok(),
                    started.elapsed(),
                    &result
                        .as_ref()
                        .err()
                        .map(|e| e.to_string())
                        .unwrap_or_default(),
                );
                match result {
                    Ok(id) => {
                        image_id = id;
                        output::progress(
                            style,
                            &format!(
                                "built {reference} ({}): {} step(s) run, {} cached",
                                short_id(&image_id),
                                progress.executed,
                                progress.cached
                            ),
                        );
                    }
                    Err(buildkit::BuildFailure::SecretInContext(found)) => {
                        undo_supersede(engine, &superseded).await;
                        return Err(Error::refused(
                            format!(
                                "the build context file {} holds the value of the secret {}; the build stopped before any of it was sent",
                                found.file, found.key
                            ),
                            format!(
                                "remove the file from {} or list it in .dockerignore; secrets reach the build only as the apps_json secret",
                                config::display(&plan.context_dir)
                            ),
                        ));
                    }
                    Err(e) => {
                        for l in progress.failure_report() {
                            output::diag(&l);
                        }
                        undo_supersede(engine, &superseded).await;
                        return Err(Error::Failed {
                            message: format!("the build of {reference} failed: {e}"),
                            hint: Some(format!("the step's output is shown above (all of it with -v); nothing was recorded and the tag {reference} was not changed")),
                        });
                    }
                }
                durations.insert("build".into(), started.elapsed().as_secs_f64());
            }
            Step::SmokeTest {
                reference,
                command,
                apps,
            } => {
                let info = engine.image(reference).await?.ok_or_else(|| {
                    Error::failed(format!("{reference} is missing right after its build"))
                })?;
                content_digest = Some(info.content_digest.clone());
                // Same layers and runtime config as a release that passed: same result.
                let (earlier, _) = Store::new(&inputs.paths.releases).load_all();
                if let Some(prev) = earlier.iter().find(|l| {
                    let t = &l.manifest.smoke_test;
                    t.passed
                        && t.command == *command
                        && t.content_digest.as_deref() == Some(info.content_digest.as_str())
                }) {
                    output::progress(style, &format!("smoke test passed for release {} with identical layers and config; not run again", prev.manifest.version));
                    reused_from = Some(prev.manifest.version.clone());
                    schema = match &prev.manifest.schema {
                        Some(s) => Some(s.clone()),
                        None => fingerprint(engine, reference, &info, style).await,
                    };
                    continue;
                }
                let expected: Vec<(&str, &str)> = plan
                    .apps
                    .iter()
                    .map(|a| a.name.as_str())
                    .zip(apps.iter().map(String::as_str))
                    .collect();
                if let Err(e) = smoke_test(engine, reference, &info, command, &expected).await {
                    let kept = quarantine(engine, &plan, &image_id, &superseded).await;
                    return Err(Error::Failed {
                        message: format!("smoke test of {reference} failed: {e}"),
                        hint: Some(format!("nothing was recorded; the image is kept as {kept} for inspection, and the tag was put back as it was")),
                    });
                }
                schema = fingerprint(engine, reference, &info, style).await;
                durations.insert("smoke_test".into(), started.elapsed().as_secs_f64());
            }
            Step::WriteManifest { path } => {
                let m = Manifest {
                    schema_version: manifest::SCHEMA_VERSION,
                    version: plan.version.clone(),
                    created: created.clone(),
                    de_build_version: env!("CARGO_PKG_VERSION").to_string(),
                    image: manifest::ImageRef {
                        repository: plan.repository.clone(),
                        tag: plan.version.clone(),
                        reference: plan.reference.clone(),
                        id: image_id.clone(),
                    },
                    build_args: plan.build_args.clone(),
                    containerfile: manifest::FileDigest {
                        path: plan.containerfile.clone(),
                        sha256: plan.containerfile_sha256.clone(),
                    },
                    apps: plan.apps.clone(),
                    apps_json_sha256: crate::util::sha256_hex(
                        apps::redacted_json(&inputs.apps).as_bytes(),
                    ),
                    cache_key: plan.cache_key.clone(),
                    project_revision: revision.clone(),
                    superseded: superseded.clone(),
                    builder: manifest::Builder {
                        engine_version: engine_version.clone(),
                        api_version: api_version.clone(),
                    },
                    smoke_test: manifest::SmokeTest {
                        command: plan.smoke_command.clone(),
                        passed: true,
                        content_digest: content_digest.clone(),
                        reused_from: reused_from.clone(),
                    },
                    registry: None,
                    schema: schema.clone(),
                };
                let written = Store::new(&inputs.paths.releases).write(&m)?;
                debug_assert_eq!(&written, path);
                durations.insert("record".into(), started.elapsed().as_secs_f64());
                recorded = Some((m, written));
            }
        }
    }
    let Some((manifest, manifest_path)) = recorded else {
        return Err(Error::failed(
            "the build plan had no step that records the release",
        ));
    };
    Ok(Built {
        manifest,
        manifest_path,
        durations,
    })
}

/// Undo steps run after a failure: a failure of their own is said (the tag
/// state is then not as the message claims), never dropped.
fn warn_undo(what: &str, r: Result<()>) {
    if let Err(e) = r {
        output::diag(&format!(
            "warning: could not {what}: {e}; `de-build tags repair` fixes recorded tags"
        ));
    }
}

/// The files of every app that make `bench migrate` do work, hashed in a
/// container of the image. None (said) when the image cannot tell: a deploy
/// then migrates, as it must when it does not know.
async fn fingerprint(
    engine: &Engine,
    reference: &str,
    info: &crate::adapters::engine::ImageInfo,
    style: &Style,
) -> Option<manifest::SchemaFingerprint> {
    let bench = if info.working_dir.is_empty() {
        "/home/frappe/frappe-bench".to_string()
    } else {
        info.working_dir.trim_end_matches("/sites").to_string()
    };
    let cmd: Vec<String> = vec!["sh".into(), "-c".into(), schema_script(&bench)];
    match engine.run_once(reference, &cmd, None).await {
        Ok((out, _)) if out.exit_code == 0 => {
            let lines: Vec<&str> = out.output.lines().filter(|l| l.len() > 66).collect();
            Some(manifest::SchemaFingerprint {
                sha256: crate::util::sha256_hex(lines.join("\n").as_bytes()),
                files: lines.len(),
            })
        }
        Ok((out, _)) => {
            output::progress(style, &format!("warning: no schema fingerprint (exit {}): deploys of this release always migrate", out.exit_code));
            None
        }
        Err(e) => {
            output::progress(
                style,
                &format!(
                    "warning: no schema fingerprint ({e}): deploys of this release always migrate"
                ),
            );
            None
        }
    }
}

/// sha256sum of each migrate-relevant file under `<bench>/apps`, sorted by
/// path: a POSIX `find`, present in Frappe's Debian images and in busybox.
pub fn schema_script(bench: &str) -> String {
    format!(
        "cd '{bench}/apps' && find . -type f \\( -name patches.txt -o -name hooks.py \
         -o -path '*/doctype/*.json' -o -path '*/fixtures/*' -o -path '*/custom/*.json' \
         -o -path '*/report/*.json' -o -path '*/workspace/*.json' \\) \
         -not -path '*/node_modules/*' -not -path '*/.git/*' | LC_ALL=C sort | while read -r f; do sha256sum \"$f\"; done"
    )
}

/// Every secret value of the env, in the forms it may be written in, with
/// the key it belongs to: no context file may hold one.
fn forbidden_values(inputs: &Inputs) -> Vec<context::Needle> {
    let mut out = Vec::new();
    for (key, v) in inputs.env.entries() {
        let crate::config::envfile::Text::Secret(s) = &v.text else {
            continue;
        };
        // As short as the redactor goes: shorter would match by chance.
        if s.expose().len() < 4 {
            continue;
        }
        for form in crate::ui::output::redact::forms(s.expose()) {
            out.push(context::Needle {
                key: key.clone(),
                bytes: zeroize::Zeroizing::new(form.into_bytes()),
            });
        }
    }
    out
}

async fn undo_supersede(engine: &Engine, superseded: &Option<manifest::Superseded>) {
    if let Some(s) = superseded {
        warn_undo(
            &format!("remove the tag {}", s.reference),
            engine.untag(&s.reference).await,
        );
    }
}

/// After a failed smoke test: keep the new image under `-failed-`, and give
/// the version tag back to whoever had it (or to nobody).
async fn quarantine(
    engine: &Engine,
    plan: &BuildPlan,
    new_id: &str,
    superseded: &Option<manifest::Superseded>,
) -> String {
    let failed_tag = format!("{}-failed-{}", plan.version, short_id(new_id));
    warn_undo(
        &format!("keep the failed image as {failed_tag}"),
        engine.tag(new_id, &plan.repository, &failed_tag).await,
    );
    match superseded {
        Some(s) => {
            warn_undo(
                &format!("give {} back to {}", plan.reference, short_id(&s.id)),
                engine.tag(&s.id, &plan.repository, &plan.version).await,
            );
            warn_undo(
                &format!("remove the tag {}", s.reference),
                engine.untag(&s.reference).await,
            );
        }
        None => warn_undo(
            &format!("remove the tag {}", plan.reference),
            engine.untag(&plan.reference).await,
        ),
    }
    format!("{}:{failed_tag}", plan.repository)
}

/// `expected`: each app's name and the directory bench installs it into.
async fn smoke_test(
    engine: &Engine,
    reference: &str,
    info: &crate::adapters::engine::ImageInfo,
    command: &[String],
    expected: &[(&str, &str)],
) -> std::result::Result<(), String> {
    let workdir = if info.working_dir.is_empty() {
        "/home/frappe/frappe-bench".to_string()
    } else {
        info.working_dir.clone()
    };
    let apps_dir = format!("{}/apps", workdir.trim_end_matches('/'));
    let (out, listing) = engine
        .run_once(reference, command, Some(&apps_dir))
        .await
        .map_err(|e| e.to_string())?;
    if out.exit_code != 0 {
        let tail: Vec<&str> = out
            .output
            .lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        return Err(format!(
            "`{}` exited with {}:\n  {}",
            command.join(" "),
            out.exit_code,
            tail.join("\n  ")
        ));
    }
    match missing_apps(&apps_dir, expected, &listing.unwrap_or_default()) {
        Some(message) => Err(message),
        None => Ok(()),
    }
}

/// What the smoke test says when apps are not where bench puts them: the
/// directory it looked for (the package name, e.g. india_compliance for
/// india-compliance) and what it found.
pub fn missing_apps(
    apps_dir: &str,
    expected: &[(&str, &str)],
    present: &[String],
) -> Option<String> {
    let missing: Vec<String> = expected
        .iter()
        .filter(|(_, dir)| !present.iter().any(|p| p == dir))
        .map(|(name, dir)| {
            if name == dir {
                format!("{apps_dir}/{dir}")
            } else {
                format!(
                    "{apps_dir}/{dir} (for {name}: bench installs an app under its package name)"
                )
            }
        })
        .collect();
    if missing.is_empty() {
        return None;
    }
    let found = if present.is_empty() {
        "nothing".to_string()
    } else {
        present.join(", ")
    };
    Some(format!(
        "expected {}; not there (found: {found})",
        missing.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_smoke_test_looks_for_the_package_directory_and_says_which() {
        let dir = "/home/frappe/frappe-bench/apps";
        let expected = [
            ("erpnext", "erpnext"),
            ("india-compliance", "india_compliance"),
        ];
        let present = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            missing_apps(
                dir,
                &expected,
                &present(&["frappe", "erpnext", "india_compliance"])
            ),
            None
        );
        let msg = missing_apps(
            dir,
            &expected,
            &present(&["frappe", "erpnext", "india-compliance"]),
        )
        .expect("the repo name is not where bench installs it");
        assert_eq!(
            msg,
            "expected /home/frappe/frappe-bench/apps/india_compliance (for india-compliance: bench installs an app under its package name); not there (found: frappe, erpnext, india-compliance)"
        );
        assert_eq!(
            missing_apps(dir, &expected[..1], &[]).unwrap(),
            "expected /home/frappe/frappe-bench/apps/erpnext; not there (found: nothing)"
        );
        assert_eq!(
            missing_apps(dir, &[], &present(&["frappe"])),
            None,
            "no apps: frappe alone"
        );
    }
}
