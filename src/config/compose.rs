//! The compose files a deploy brings up (`DE_COMPOSE_FILE`: one file, or a
//! comma-separated list merged in order as `-f a -f b` would), read and
//! checked before anything touches the stack:
//!
//! - every file exists and is YAML (a problem names file and line);
//! - services that run the release image take it from the variables a deploy
//!   sets (`${CUSTOM_IMAGE}:${CUSTOM_TAG}`, or `${DE_IMAGE}:${CUSTOM_TAG}`);
//!   a file with the tag written in (`docker compose config` output) would
//!   keep running the old image after a "successful" deploy;
//! - `DE_BACKEND_SERVICE` is one of the services; `DE_HEALTH_URL` is http;
//! - no service migrates on `up` (frappe_docker's `migrator` override):
//!   de-build migrates once, after its backup, and never on rollback.
//!
//! It also tells which services are one-shot (`configurator`, `create-site`),
//! so a deploy can wait for them to complete before it migrates.
//!
//! The model covers what these checks need, merged by compose's rules for
//! it: mappings merge key by key, a later scalar or list replaces, `!reset`
//! removes, `!override` replaces, `depends_on` lists and mappings combine.
//! Not modelled: `extends` and `include` (services using them are not
//! judged by their image).

pub mod interp;
pub mod yaml;

use crate::config::display;
use crate::config::envfile::{did_you_mean, EnvValues, Source, Text};
use crate::error::Problem;
use interp::{interpolate, variables, Lookup};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use yaml::{Node, Value};

/// The variables a deploy sets for the release image.
const IMAGE_VARS: [&str; 3] = ["CUSTOM_IMAGE", "DE_IMAGE", "CUSTOM_TAG"];
/// Stand-ins for the release's repository and tag while checking: an image
/// that resolves to exactly these takes both from the variables.
const PROBE_REPO: &str = "de-build.check/release-image";
const PROBE_TAG: &str = "de-build-release-tag";

const IMAGE_FIX: &str = "write `image: ${CUSTOM_IMAGE}:${CUSTOM_TAG}` (frappe_docker's form; de-build sets CUSTOM_IMAGE from DE_IMAGE and CUSTOM_TAG to the release) for every service that runs the custom image. A file written by `docker compose config` has the tag written in: set DE_COMPOSE_FILE to the files it was made from instead, e.g. DE_COMPOSE_FILE=compose.yaml,overrides/compose.mariadb.yaml,overrides/compose.redis.yaml";

/// One file of the set, as the user named it and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    pub shown: String,
    pub path: PathBuf,
}

/// A value and where it is written: file index in the set, 1-based line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct At<T> {
    pub value: T,
    pub file: usize,
    pub line: usize,
}

/// What the checks and the deploy need to know of one service, merged over
/// every file of the set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    /// As written (before interpolation).
    pub image: Option<At<String>>,
    pub command: Option<At<Vec<String>>>,
    pub entrypoint: Option<At<Vec<String>>>,
    /// `restart:`, interpolated.
    pub restart: Option<String>,
    /// `deploy.restart_policy.condition`, interpolated.
    pub restart_condition: Option<String>,
    /// Services this one waits for, with the condition.
    pub depends_on: Vec<(String, String)>,
    pub profiles: Vec<String>,
    /// Uses `extends` (not modelled: its image may come from elsewhere).
    pub extends: bool,
    /// Where it publishes ports (`ports:`), if it does.
    pub ports: Option<At<()>>,
    /// Where it sets a fixed `container_name`, if it does.
    pub container_name: Option<At<()>>,
}

/// The merged set of compose files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComposeSet {
    pub files: Vec<File>,
    pub services: BTreeMap<String, Service>,
    /// Profiles `up` activates (`COMPOSE_PROFILES`).
    pub active_profiles: Vec<String>,
    /// Every file merged into one document (all top-level keys, `services`
    /// merged as above), as written: what the swarm check reads.
    pub doc: Node,
}

/// The items of a `DE_COMPOSE_FILE` value.
pub fn list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

impl ComposeSet {
    /// Services `up` starts (no profile, or an active one).
    pub fn active(&self) -> impl Iterator<Item = &Service> {
        self.services.values().filter(|s| {
            s.profiles.is_empty()
                || s.profiles
                    .iter()
                    .any(|p| self.active_profiles.iter().any(|a| a == p || a == "*"))
        })
    }

    /// Services that run once and exit (frappe_docker's `configurator`, the
    /// `create-site` of `pwd.yml`), as [`runs_once`] tells. A deploy waits
    /// for these before migrating.
    pub fn one_shot_services(&self) -> Vec<String> {
        let awaited: Vec<&str> = self
            .active()
            .flat_map(|s| s.depends_on.iter())
            .filter(|(_, c)| c == COMPLETED)
            .map(|(d, _)| d.as_str())
            .collect();
        self.active()
            .filter(|s| {
                runs_once(
                    awaited.contains(&s.name.as_str()),
                    s.restart.as_deref(),
                    s.restart_condition.as_deref(),
                    s.command.is_some() || s.entrypoint.is_some(),
                )
            })
            .map(|s| s.name.clone())
            .collect()
    }

    fn shown(&self, i: usize) -> &str {
        self.files.get(i).map(|f| f.shown.as_str()).unwrap_or("")
    }

    fn names(&self) -> String {
        self.files
            .iter()
            .map(|f| f.shown.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn problem<T>(&self, at: &At<T>, code: &'static str, message: String) -> Problem {
        Problem::new(self.shown(at.file), code, message).line(at.line)
    }
}

/// The `depends_on` condition of a service that waits for another to exit 0.
pub const COMPLETED: &str = "service_completed_successfully";

/// Does a service run once and exit? Another service waits for it to
/// complete (`awaited`), or its restart policy is explicitly "no"/"none" and
/// it runs a command of its own. One rule for both targets: compose waits
/// for such a service before migrating, a swarm must run it as a job.
pub fn runs_once(
    awaited: bool,
    restart: Option<&str>,
    restart_condition: Option<&str>,
    has_command: bool,
) -> bool {
    let no_restart = restart == Some("no") || restart_condition == Some("none");
    awaited || (no_restart && has_command)
}

/// Where each file of a set goes in a snapshot directory: at its path
/// relative to the files' deepest common directory, so the layout (and any
/// relative reference between the files) survives the copy.
pub fn snapshot_layout(files: &[PathBuf], dir: &Path) -> Vec<PathBuf> {
    let mut common = files
        .first()
        .and_then(|f| f.parent())
        .map(Path::to_path_buf)
        .unwrap_or_default();
    for f in files {
        while !f.starts_with(&common) {
            match common.parent() {
                Some(p) => common = p.to_path_buf(),
                None => break,
            }
        }
    }
    files
        .iter()
        .map(|f| match f.strip_prefix(&common) {
            Ok(rel) => dir.join(rel),
            Err(_) => dir.join(f.file_name().unwrap_or_default()),
        })
        .collect()
}

/// Read, parse and merge the files named by `value` (relative to
/// `project_dir`); `vars` is compose's environment at deploy time.
pub fn load(project_dir: &Path, value: &str, vars: &Lookup) -> (Option<ComposeSet>, Vec<Problem>) {
    let mut problems = Vec::new();
    let mut files = Vec::new();
    let mut docs = Vec::new();
    for item in list(value) {
        let path = project_dir.join(&item);
        let shown = display(&path);
        let text = match crate::config::read_text(&path, "compose file (DE_COMPOSE_FILE)") {
            Ok(t) => t,
            Err(p) => {
                problems.push(p.key("DE_COMPOSE_FILE").hint(
                    "DE_COMPOSE_FILE lists compose files relative to the project directory, comma-separated, in the order of `docker compose -f A -f B`",
                ));
                continue;
            }
        };
        match yaml::parse(&text) {
            Ok(doc) => {
                let i = files.len();
                files.push(File { shown, path });
                if let Some(mut d) = doc {
                    d.set_file(i);
                    docs.push((i, d));
                }
            }
            Err(e) => problems.push(
                Problem::new(
                    &shown,
                    "yaml",
                    format!("not valid YAML (column {}): {}", e.col, e.message),
                )
                .line(e.line)
                .hint("compose would refuse this file at deploy time; fix the line (`docker compose config` shows the same error)"),
            ),
        }
    }
    if !problems.is_empty() {
        return (None, problems);
    }
    let mut services: Vec<(String, Node)> = Vec::new();
    let mut whole = Node {
        value: Value::Map(Vec::new()),
        line: 1,
        key_line: 0,
        file: 0,
        reset: false,
        replace: false,
    };
    for (i, doc) in docs {
        let shown = files[i].shown.clone();
        let Value::Map(top) = doc.value else {
            problems.push(
                Problem::new(
                    &shown,
                    "compose-shape",
                    format!(
                        "a compose file is a mapping (with `services:`), found {}",
                        doc.kind()
                    ),
                )
                .line(doc.line),
            );
            continue;
        };
        problems.extend(required_variables(&shown, &top, vars));
        let rest: Vec<(String, Node)> = top
            .iter()
            .filter(|(k, _)| k != "services")
            .cloned()
            .collect();
        merge(
            &mut whole,
            Node {
                value: Value::Map(rest),
                line: doc.line,
                key_line: 0,
                file: i,
                reset: false,
                replace: false,
            },
        );
        let Some((_, svcs)) = top.into_iter().find(|(k, _)| k == "services") else {
            continue;
        };
        match svcs.value {
            Value::Null => {}
            Value::Map(entries) => {
                for (name, mut node) in entries {
                    match node.value {
                        Value::Map(_) => {}
                        Value::Null => node.value = Value::Map(Vec::new()),
                        _ => {
                            problems.push(
                                Problem::new(
                                    &shown,
                                    "compose-shape",
                                    format!(
                                        "service `{name}` must be a mapping, found {}",
                                        node.kind()
                                    ),
                                )
                                .line(node.line),
                            );
                            continue;
                        }
                    }
                    normalize_depends_on(&mut node);
                    match services.iter_mut().find(|(n, _)| *n == name) {
                        Some((_, base)) => merge(base, node),
                        None => services.push((name, node)),
                    }
                }
            }
            _ => problems.push(
                Problem::new(
                    &shown,
                    "compose-shape",
                    format!(
                        "`services` must be a mapping of service names, found {}",
                        svcs.kind()
                    ),
                )
                .line(svcs.line),
            ),
        }
    }
    if !problems.is_empty() {
        return (None, problems);
    }
    if let Value::Map(top) = &mut whole.value {
        let line = services.first().map(|(_, n)| n.key_line).unwrap_or(1);
        top.push((
            "services".into(),
            Node {
                value: Value::Map(services.clone()),
                line,
                key_line: line.saturating_sub(1),
                file: services.first().map(|(_, n)| n.file).unwrap_or(0),
                reset: false,
                replace: false,
            },
        ));
    }
    let mut set = ComposeSet {
        files,
        services: BTreeMap::new(),
        active_profiles: vars("COMPOSE_PROFILES")
            .map(|p| list(&p))
            .unwrap_or_default(),
        doc: whole,
    };
    for (name, node) in services {
        match service(&name, &node, vars) {
            Ok(s) => {
                set.services.insert(name, s);
            }
            Err((at, msg)) => problems.push(set.problem(&at, "compose-shape", msg)),
        }
    }
    if set.services.is_empty() {
        problems.push(
            Problem::new(
                set.shown(0),
                "compose-shape",
                format!("{} define no services", set.names()),
            )
            .key("DE_COMPOSE_FILE"),
        );
    }
    (Some(set), problems)
}

/// `${VAR:?}` / `${VAR?}` whose variable compose will not have: compose
/// would stop at deploy time, after maintenance and the backup.
fn required_variables(shown: &str, top: &[(String, Node)], vars: &Lookup) -> Vec<Problem> {
    fn walk(n: &Node, vars: &Lookup, out: &mut Vec<(usize, interp::Required)>) {
        match &n.value {
            Value::Str(s) if s.contains('$') => {
                if let Err(r) = interpolate(s, vars) {
                    out.push((n.line, r));
                }
            }
            Value::Seq(items) => items.iter().for_each(|i| walk(i, vars, out)),
            Value::Map(m) => m.iter().for_each(|(_, v)| walk(v, vars, out)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    // Extension fields (`x-…`) reach compose through anchors only.
    for (k, v) in top.iter().filter(|(k, _)| !k.starts_with("x-")) {
        if k != "name" {
            walk(v, vars, &mut found);
        }
    }
    found
        .into_iter()
        .map(|(line, r)| {
            let why = if r.message.is_empty() {
                String::new()
            } else {
                format!(" (\"{}\")", r.message)
            };
            Problem::new(
                shown,
                "missing-variable",
                format!("compose needs variable {}{why}, which a deploy would not give it", r.var),
            )
            .line(line)
            .key(&r.var)
            .hint(format!(
                "declare {} in de-example.env and set it in .env (compose receives the declared keys and nothing else)",
                r.var
            ))
        })
        .collect()
}

/// `depends_on: [a, b]` is `depends_on: {a: {condition: service_started}, …}`.
fn normalize_depends_on(service: &mut Node) {
    let Value::Map(entries) = &mut service.value else {
        return;
    };
    for (k, v) in entries.iter_mut() {
        if k != "depends_on" {
            continue;
        }
        if let Value::Seq(items) = &v.value {
            let map = items
                .iter()
                .filter_map(|i| i.str().map(|s| (s.to_string(), i.clone())))
                .map(|(name, item)| {
                    let cond = Node {
                        value: Value::Str("service_started".into()),
                        ..item.clone()
                    };
                    let entry = Node {
                        value: Value::Map(vec![("condition".into(), cond)]),
                        ..item
                    };
                    (name, entry)
                })
                .collect();
            v.value = Value::Map(map);
        }
    }
}

/// Merge a later file's node over an earlier one, as compose does for the
/// keys modelled here.
fn merge(base: &mut Node, over: Node) {
    match (&mut base.value, over.value) {
        (Value::Map(b), Value::Map(o)) if !over.replace => {
            for (k, v) in o {
                if v.reset {
                    b.retain(|(bk, _)| *bk != k);
                    continue;
                }
                match b.iter_mut().find(|(bk, _)| *bk == k) {
                    Some((_, bv)) => merge(bv, v),
                    None => b.push((k, v)),
                }
            }
        }
        (_, value) => {
            *base = Node {
                value,
                reset: false,
                replace: false,
                ..over
            }
        }
    }
}

type ShapeError = (At<()>, String);

fn strings(n: &Node, what: &str, service: &str) -> Result<Option<At<Vec<String>>>, ShapeError> {
    let at = |value| {
        Some(At {
            value,
            file: n.file,
            line: n.line,
        })
    };
    match &n.value {
        Value::Null => Ok(None),
        Value::Str(s) => Ok(at(vec![s.clone()])),
        Value::Seq(items) if items.iter().all(|i| i.str().is_some()) => Ok(at(items
            .iter()
            .filter_map(|i| i.str().map(str::to_string))
            .collect())),
        _ => Err((
            At {
                value: (),
                file: n.file,
                line: n.line,
            },
            format!("service `{service}`: `{what}` must be a string or a list of strings"),
        )),
    }
}

fn service(name: &str, n: &Node, vars: &Lookup) -> Result<Service, ShapeError> {
    let resolved = |node: Option<&Node>| -> Option<String> {
        node.and_then(Node::str)
            .map(|s| interpolate(s, vars).unwrap_or_else(|_| s.to_string()))
    };
    let image = match n.get("image") {
        None => None,
        Some(i) if i.is_null() => None,
        Some(i) => match i.str() {
            Some(s) => Some(At {
                value: s.to_string(),
                file: i.file,
                line: i.line,
            }),
            None => {
                return Err((
                    At {
                        value: (),
                        file: i.file,
                        line: i.line,
                    },
                    format!("service `{name}`: `image` must be a string"),
                ))
            }
        },
    };
    let command = match n.get("command") {
        Some(c) => strings(c, "command", name)?,
        None => None,
    };
    let entrypoint = match n.get("entrypoint") {
        Some(c) => strings(c, "entrypoint", name)?,
        None => None,
    };
    let depends_on = match n.get("depends_on").map(|d| &d.value) {
        Some(Value::Map(m)) => m
            .iter()
            .map(|(dep, spec)| {
                let cond = spec
                    .get("condition")
                    .and_then(Node::str)
                    .unwrap_or("service_started");
                (dep.clone(), cond.to_string())
            })
            .collect(),
        _ => Vec::new(),
    };
    let profiles = match n.get("profiles").map(|p| &p.value) {
        Some(Value::Seq(items)) => items
            .iter()
            .filter_map(Node::str)
            .map(|s| interpolate(s, vars).unwrap_or_else(|_| s.to_string()))
            .collect(),
        _ => Vec::new(),
    };
    Ok(Service {
        name: name.to_string(),
        image,
        command,
        entrypoint,
        restart: resolved(n.get("restart")),
        restart_condition: resolved(
            n.get("deploy")
                .and_then(|d| d.get("restart_policy"))
                .and_then(|r| r.get("condition")),
        ),
        depends_on,
        profiles,
        extends: n.get("extends").is_some_and(|e| !e.is_null()),
        ports: at_key(n.get("ports")),
        container_name: at_key(n.get("container_name")),
    })
}

/// Where a key that is set (not null, not an empty list) is written.
fn at_key(node: Option<&Node>) -> Option<At<()>> {
    let n = node.filter(|n| !n.is_null())?;
    if let Value::Seq(items) = &n.value {
        if items.is_empty() {
            return None;
        }
    }
    Some(At {
        value: (),
        file: n.file,
        line: if n.key_line > 0 { n.key_line } else { n.line },
    })
}

/// The repository of an image reference, without tag, digest, `docker.io/`
/// or `library/`.
fn repository(image: &str) -> &str {
    let no_digest = image.split('@').next().unwrap_or(image);
    let slash = no_digest.rfind('/').map(|i| i + 1).unwrap_or(0);
    let repo = match no_digest[slash..].find(':') {
        Some(c) => &no_digest[..slash + c],
        None => no_digest,
    };
    let repo = repo.strip_prefix("docker.io/").unwrap_or(repo);
    repo.strip_prefix("library/").unwrap_or(repo)
}

/// Compose's environment at deploy time, as far as the checks need it: the
/// declared keys (secrets are present, their values never read here), the
/// project name, the image variables a deploy sets (as `image_vars` says),
/// and what a child process inherits from de-build's own environment.
pub fn deploy_vars<'a>(
    env: &'a EnvValues,
    process: &'a Lookup<'a>,
    image_vars: Option<(&'a str, &'a str)>,
) -> impl Fn(&str) -> Option<String> + 'a {
    move |k: &str| {
        if let Some((repo, tag)) = image_vars {
            match k {
                "CUSTOM_IMAGE" | "DE_IMAGE" => return Some(repo.to_string()),
                "CUSTOM_TAG" => return Some(tag.to_string()),
                _ => {}
            }
        }
        if let Some((_, v)) = env.entries().find(|(key, _)| key.as_str() == k) {
            return Some(match &v.text {
                Text::Plain(s) => s.clone(),
                Text::Secret(_) => "(secret)".to_string(),
            });
        }
        if crate::config::CHILD_ENV_ALLOW.contains(&k) {
            return process(k);
        }
        None
    }
}

/// Where a `.env` key is set, for problems about its value.
fn key_problem(
    env: &EnvValues,
    env_shown: &str,
    key: &str,
    code: &'static str,
    message: String,
) -> Problem {
    let p = match env.source(key) {
        Some(Source::Environment) => Problem::new("environment", code, message),
        Some(Source::File { line }) => Problem::new(env_shown, code, message).line(*line),
        _ => Problem::new(env_shown, code, message),
    };
    p.key(key)
}

/// The checks a deploy relies on, over a loaded set.
pub fn check(set: &ComposeSet, env: &EnvValues, env_shown: &str, process: &Lookup) -> Vec<Problem> {
    let mut problems = Vec::new();
    let probe = deploy_vars(env, process, Some((PROBE_REPO, PROBE_TAG)));
    let de_image = env.get("DE_IMAGE");
    let real = deploy_vars(env, process, de_image.map(|i| (i, PROBE_TAG)));
    let backend = env.get("DE_BACKEND_SERVICE");

    match backend {
        Some(b) if !set.active().any(|s| s.name == b) => {
            let names: Vec<&str> = set.active().map(|s| s.name.as_str()).collect();
            let mut msg = format!(
                "DE_BACKEND_SERVICE `{b}` is not a service of {}",
                set.names()
            );
            if let Some(s) = set.services.get(b) {
                msg = format!(
                    "DE_BACKEND_SERVICE `{b}` is in profile(s) {} of {}, which `up` does not start",
                    s.profiles.join(", "),
                    set.names()
                );
            }
            let hint = match did_you_mean(b, names.iter().copied()) {
                Some(m) => format!("did you mean `{m}`? (services: {})", names.join(", ")),
                None => format!(
                    "set it to the service where bench runs (services: {})",
                    names.join(", ")
                ),
            };
            problems.push(
                key_problem(env, env_shown, "DE_BACKEND_SERVICE", "backend-service", msg)
                    .hint(hint),
            );
        }
        _ => {}
    }

    // App services: those that name the image variables, run DE_IMAGE's
    // repository, are the backend (migrate must run the new code), or run
    // exactly the backend's image.
    let backend_image = backend
        .and_then(|b| set.services.get(b))
        .and_then(|s| s.image.as_ref())
        .map(|i| i.value.clone());
    // Keyed by where the image is written: one anchored line shared by many
    // services is one problem.
    let mut wrong: BTreeMap<(usize, usize, String), (String, Vec<String>)> = BTreeMap::new();
    for s in set.active() {
        let Some(img) = &s.image else { continue };
        if s.extends {
            continue;
        }
        let raw = &img.value;
        let names_var = variables(raw)
            .iter()
            .any(|v| IMAGE_VARS.contains(&v.as_str()));
        let runs_repo = match (de_image, interpolate(raw, &real)) {
            (Some(de), Ok(r)) => {
                let (repo, de) = (repository(&r), repository(de));
                repo == de || repo.ends_with(&format!("/{de}"))
            }
            _ => false,
        };
        let is_app = names_var
            || runs_repo
            || Some(s.name.as_str()) == backend
            || backend_image.as_deref() == Some(raw.as_str());
        if !is_app {
            continue;
        }
        let Ok(resolved) = interpolate(raw, &probe) else {
            continue; // reported as a missing variable
        };
        if resolved == format!("{PROBE_REPO}:{PROBE_TAG}") {
            continue;
        }
        let repo_ok = resolved.starts_with(&format!("{PROBE_REPO}:"))
            || resolved.starts_with(&format!("{PROBE_REPO}@"));
        let tag_ok = resolved.ends_with(&format!(":{PROBE_TAG}"));
        let what = match (repo_ok, tag_ok) {
            (true, false) => "takes its repository from the variables but not its tag: the tag must be ${CUSTOM_TAG} (a fallback like ${CUSTOM_TAG:-$ERPNEXT_VERSION} is fine)".to_string(),
            (false, true) => "takes its tag from ${CUSTOM_TAG} but not its repository: write ${CUSTOM_IMAGE} (or ${DE_IMAGE}) for it".to_string(),
            _ => "has the image written in: a deploy sets CUSTOM_IMAGE and CUSTOM_TAG, so this would keep running the same image whatever release is deployed".to_string(),
        };
        wrong
            .entry((img.file, img.line, raw.clone()))
            .or_insert_with(|| (what, Vec::new()))
            .1
            .push(s.name.clone());
    }
    for ((file, line, raw), (what, names)) in wrong {
        let who = if names.len() == 1 {
            format!("service `{}`", names[0])
        } else {
            format!(
                "services {}",
                names
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        problems.push(
            Problem::new(
                set.shown(file),
                "image-not-release",
                format!("{who}: image `{raw}` {what}"),
            )
            .line(line)
            .hint(IMAGE_FIX),
        );
    }

    for s in set.active() {
        let runs = [&s.entrypoint, &s.command]
            .into_iter()
            .flatten()
            .find(|c| runs_migrate(&c.value));
        if let Some(c) = runs {
            problems.push(
                set.problem(
                    c,
                    "migrates-on-up",
                    format!(
                        "service `{}` runs `bench … migrate` whenever the stack comes up (like frappe_docker's overrides/compose.migrator.yaml): de-build migrates once itself, after its backup; with this service every deploy would migrate twice and a rollback would migrate the database with the old code",
                        s.name
                    ),
                )
                .hint(format!(
                    "remove the service `{}` (or the override file that adds it) from DE_COMPOSE_FILE",
                    s.name
                )),
            );
        }
    }
    problems.extend(door_problems(set, env, env_shown));
    problems
}

/// `DE_DOOR`: the door exists and is no app service; the frontend it
/// reaches and the services a switch starts beside the old ones publish no
/// port and have no fixed name (compose cannot run two of them).
fn door_problems(set: &ComposeSet, env: &EnvValues, env_shown: &str) -> Vec<Problem> {
    let mut problems = Vec::new();
    let Some(door) = env.get("DE_DOOR").filter(|d| !d.is_empty()) else {
        return problems;
    };
    // A swarm updates its web tier start-first itself; the door is the
    // compose target's.
    if env.get("DE_TARGET") == Some("swarm") {
        return problems;
    }
    let names: Vec<&str> = set.active().map(|s| s.name.as_str()).collect();
    let Some(d) = set.active().find(|s| s.name == door) else {
        let hint = match did_you_mean(door, names.iter().copied()) {
            Some(m) => format!("did you mean `{m}`? (services: {})", names.join(", ")),
            None => format!(
                "name the proxy service that publishes the port (services: {}), or leave DE_DOOR empty",
                names.join(", ")
            ),
        };
        problems.push(
            key_problem(
                env,
                env_shown,
                "DE_DOOR",
                "door-service",
                format!("DE_DOOR `{door}` is not a service of {}", set.names()),
            )
            .hint(hint),
        );
        return problems;
    };
    if d.image.as_ref().is_some_and(|i| {
        variables(&i.value)
            .iter()
            .any(|v| IMAGE_VARS.contains(&v.as_str()))
    }) {
        problems.push(
            key_problem(
                env,
                env_shown,
                "DE_DOOR",
                "door-is-release",
                format!("DE_DOOR `{door}` runs the release image: a door must outlive releases"),
            )
            .hint("the door is a proxy with its own image (an nginx proxying to the frontend)"),
        );
    }
    let frontend = env
        .get("DE_FRONTEND_SERVICE")
        .filter(|f| !f.is_empty())
        .unwrap_or("frontend");
    let backend = env.get("DE_BACKEND_SERVICE").unwrap_or("backend");
    if !names.contains(&frontend) {
        problems.push(key_problem(
            env,
            env_shown,
            "DE_FRONTEND_SERVICE",
            "frontend-service",
            format!(
                "DE_DOOR is set but the frontend `{frontend}` is not a service of {}",
                set.names()
            ),
        ));
    }
    for s in set
        .active()
        .filter(|s| [frontend, backend, "websocket"].contains(&s.name.as_str()))
    {
        let what = [
            (&s.ports, "publishes a port"),
            (&s.container_name, "has a fixed container_name"),
        ];
        for (at, what) in what {
            if let Some(at) = at {
                problems.push(
                    set.problem(
                        at,
                        "switch-needs-two",
                        format!(
                            "service `{}` {what}: with a door (DE_DOOR={door}) a release starts a second one beside it, which compose cannot",
                            s.name
                        ),
                    )
                    .hint(format!(
                        "let the door `{door}` publish the port (drop overrides/compose.noproxy.yaml), or leave DE_DOOR empty"
                    )),
                );
            }
        }
    }
    problems
}

/// Does a command (exec or shell form) run `bench … migrate`? The bench
/// subcommand is the first word after `bench` that is not an option (or the
/// site named by `--site`).
fn runs_migrate(cmd: &[String]) -> bool {
    let text = cmd.join(" ");
    let words: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || ";&|()`'\"".contains(c))
        .filter(|w| !w.is_empty())
        .collect();
    words.iter().enumerate().any(|(i, w)| {
        if *w != "bench" {
            return false;
        }
        let mut j = i + 1;
        while let Some(t) = words.get(j) {
            if *t == "--site" {
                j += 2;
            } else if t.starts_with('-') {
                j += 1;
            } else {
                return *t == "migrate";
            }
        }
        false
    })
}

/// The health gate speaks plain HTTP: an https URL would fail it after the
/// whole timeout, and the deploy would be rolled back for nothing.
pub fn health_url_problems(env: &EnvValues, env_shown: &str) -> Vec<Problem> {
    let Some(u) = env.get("DE_HEALTH_URL") else {
        return Vec::new();
    };
    let scheme = url::Url::parse(u).map(|u| u.scheme().to_string()).ok();
    match scheme.as_deref() {
        Some("http") | None => Vec::new(),
        Some(s) => vec![key_problem(
            env,
            env_shown,
            "DE_HEALTH_URL",
            "health-url-scheme",
            format!("DE_HEALTH_URL `{u}` uses {s}: the health gate speaks plain HTTP only, so every deploy would fail its gate and be rolled back"),
        )
        .hint("point it at the frontend or the backend over http on loopback, where the stack publishes its port, e.g. http://127.0.0.1:8080/api/method/ping (TLS ends in front of the stack; the gate checks the stack itself)")],
    }
}

/// Load and check `DE_COMPOSE_FILE` and the keys that refer to it.
pub fn load_and_check(
    project_dir: &Path,
    env: &EnvValues,
    env_shown: &str,
    process: &Lookup,
) -> (Option<ComposeSet>, Vec<Problem>) {
    let mut problems = health_url_problems(env, env_shown);
    let Some(value) = env.get("DE_COMPOSE_FILE") else {
        return (None, problems);
    };
    let vars = deploy_vars(env, process, Some((PROBE_REPO, PROBE_TAG)));
    let (set, p) = load(project_dir, value, &vars);
    problems.extend(p);
    if let Some(s) = &set {
        if problems.iter().all(|p| p.code != "compose-shape") {
            problems.extend(check(s, env, env_shown, process));
            // A bad DE_TARGET is the rules' problem; the stack is judged
            // for the target named.
            let swarm = crate::config::rules::target(env.get("DE_TARGET"))
                .is_ok_and(|t| t == crate::config::rules::Target::Swarm);
            if swarm {
                problems.extend(crate::config::stack::check(s, env, env_shown, &vars));
            }
        }
    }
    (set, problems)
}

#[cfg(test)]
mod tests;
