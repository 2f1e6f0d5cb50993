//! The compose file as a swarm stack: the YAML that `compose config` printed
//! (files merged, variables interpolated by compose itself) → the services,
//! volumes and networks de-build creates through the manager's API.
//!
//! The subset is the one `docker stack deploy` honours; keys it ignores on a
//! swarm are ignored here too (`depends_on`, `restart`, `build` next to an
//! `image`), keys that would change what runs and are not handled are
//! reported — never dropped in silence.
//!
//! One function, [`analyse`], judges a stack for both `check` (over the
//! user's files, merged and interpolated by de-build's own reader, so each
//! problem names file and line: [`check`]) and `deploy` (over what compose
//! resolved: [`parse`]), so the two never disagree on what a swarm can run.

use crate::config::compose::yaml::{self, Node};
use crate::config::compose::{interp, runs_once, ComposeSet, COMPLETED};
use crate::config::envfile::{did_you_mean, EnvValues, Source};
use crate::error::Problem;
use crate::record::swarm::{
    HealthDef, ModeDef, MountDef, MountKind, NetworkDef, PortDef, RestartDef, Role, ServiceDef,
    StackDef, UpdateDef, VolumeDef,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;

/// Where the README lists what a swarm stack may use.
const SUPPORTED: &str = "the README's \"Swarm target\" lists what a swarm stack may use; keep what only one host needs in a compose override that the swarm's DE_COMPOSE_FILE does not list";

/// One thing a swarm cannot run as the file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackProblem {
    /// Where in the document: keys from the top (`services`, `backend`,
    /// `ports`, `0`); empty for the whole file.
    pub path: Vec<String>,
    /// The `.env` key it is about, when it is one (then `.env` is the place).
    pub key: Option<&'static str>,
    pub code: &'static str,
    pub message: String,
    pub hint: Option<String>,
}

impl StackProblem {
    fn hint(&mut self, h: impl Into<String>) -> &mut Self {
        self.hint = Some(h.into());
        self
    }

    fn key(&mut self, k: &'static str) -> &mut Self {
        self.key = Some(k);
        self
    }
}

impl fmt::Display for StackProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// What the file is judged against, from `.env`.
#[derive(Debug, Clone, Copy)]
pub struct Roles<'a> {
    /// `COMPOSE_PROJECT_NAME`: the stack's namespace.
    pub namespace: &'a str,
    /// `DE_BACKEND_SERVICE`: bench jobs are modelled on it.
    pub backend: &'a str,
    /// The web tier: updated first, start-first.
    pub web: &'a [String],
}

/// `DE_SWARM_WEB_SERVICES`, or the backend alone when it is empty.
pub fn web_services(value: Option<&str>, backend: &str) -> Vec<String> {
    let named: Vec<String> = value
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if named.is_empty() {
        vec![backend.to_string()]
    } else {
        named
    }
}

/// Parse the resolved compose YAML (`compose config`'s output); every
/// problem is returned at once.
pub fn parse(yaml: &str, roles: Roles<'_>) -> Result<StackDef, Vec<StackProblem>> {
    let doc = match yaml::parse(yaml) {
        Ok(Some(node)) => json_of(&node, &mut Vec::new(), &mut BTreeMap::new(), &|s| {
            s.to_string()
        }),
        Ok(None) => Value::Null,
        Err(e) => {
            return Err(vec![StackProblem {
                path: Vec::new(),
                key: None,
                code: "yaml",
                message: format!(
                    "not YAML (line {}, column {}): {}",
                    e.line, e.col, e.message
                ),
                hint: None,
            }])
        }
    };
    let (stack, problems) = analyse(&doc, roles);
    if problems.is_empty() {
        Ok(stack)
    } else {
        Err(problems)
    }
}

/// Judge a compose document (merged, interpolated) as a swarm stack: the
/// stack, and everything a swarm cannot run as written.
pub fn analyse(doc: &Value, r: Roles<'_>) -> (StackDef, Vec<StackProblem>) {
    let namespace = r.namespace;
    let mut p = Problems::default();
    let top = doc.as_object().cloned().unwrap_or_default();
    for k in top.keys() {
        match k.as_str() {
            "services" | "volumes" | "networks" | "version" | "name" => {}
            k if k.starts_with("x-") => {}
            other => {
                p.push(
                    &[other],
                    "swarm-unsupported",
                    format!("top-level `{other}` is not supported on the swarm target"),
                )
                .hint(SUPPORTED);
            }
        }
    }
    let mut volumes = BTreeMap::new();
    for (key, v) in obj(top.get("volumes")) {
        let external = v.get("external").is_some_and(truthy);
        let name = v
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| {
                if external {
                    key.clone()
                } else {
                    format!("{namespace}_{key}")
                }
            });
        volumes.insert(
            key.clone(),
            VolumeDef {
                name,
                driver: v.get("driver").and_then(Value::as_str).map(str::to_string),
                driver_opts: string_map(v.get("driver_opts")),
                external,
            },
        );
    }
    let mut networks = BTreeMap::new();
    for (key, v) in obj(top.get("networks")) {
        let external = v.get("external").is_some_and(truthy);
        let driver = v.get("driver").and_then(Value::as_str).map(str::to_string);
        if let Some(d) = driver.as_deref().filter(|d| *d != "overlay") {
            p.push(
                &["networks", &key, "driver"],
                "swarm-unsupported",
                format!("network `{key}` uses driver `{d}`: a swarm stack needs `overlay`"),
            )
            .hint("write `driver: overlay` (or leave the driver out: de-build creates overlay networks)");
        }
        networks.insert(
            key.clone(),
            NetworkDef {
                name: v
                    .get("name")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| {
                        if external {
                            key.clone()
                        } else {
                            format!("{namespace}_{key}")
                        }
                    }),
                driver,
                driver_opts: string_map(v.get("driver_opts")),
                attachable: v.get("attachable").map(truthy).unwrap_or(true),
                external,
            },
        );
    }
    let all = obj(top.get("services"));
    // Services another one waits for to exit 0: a swarm ignores
    // `depends_on`, so nothing would wait for them unless they are jobs.
    let mut awaited: BTreeMap<String, String> = BTreeMap::new();
    for (name, v) in &all {
        // The short form (a list) waits for a start only.
        if let Some(Value::Object(deps)) = v.get("depends_on") {
            for (dep, spec) in deps {
                if spec.get("condition").and_then(Value::as_str) == Some(COMPLETED) {
                    awaited.entry(dep.clone()).or_insert_with(|| name.clone());
                }
            }
        }
    }
    let mut services = Vec::new();
    for (name, v) in &all {
        if let Some(s) = service(name, v, r.web, awaited.get(name), &mut p) {
            for (i, m) in s.mounts.iter().enumerate() {
                if m.kind == MountKind::Volume
                    && !m.source.is_empty()
                    && !volumes.contains_key(&m.source)
                {
                    p.push(
                        &["services", name, "volumes", &i.to_string()],
                        "swarm-undeclared",
                        format!(
                            "service `{name}` mounts volume `{}`, which the file does not declare",
                            m.source
                        ),
                    )
                    .hint(format!(
                        "declare it under the top-level `volumes:` (`{}: {{}}`); on a swarm it must be storage every node mounts",
                        m.source
                    ));
                }
            }
            for n in &s.networks {
                if n != "default" && !networks.contains_key(n) {
                    p.push(
                        &["services", name, "networks"],
                        "swarm-undeclared",
                        format!(
                            "service `{name}` joins network `{n}`, which the file does not declare"
                        ),
                    )
                    .hint(format!(
                        "declare it under the top-level `networks:` (`{n}: {{driver: overlay}}`)"
                    ));
                }
            }
            services.push(s);
        }
    }
    if all.is_empty() {
        p.push(
            &["services"],
            "swarm-no-services",
            "the compose file has no services".into(),
        );
    }
    if services
        .iter()
        .any(|s| s.networks.iter().any(|n| n == "default"))
        && !networks.contains_key("default")
    {
        networks.insert(
            "default".into(),
            NetworkDef {
                name: format!("{namespace}_default"),
                driver: None,
                driver_opts: BTreeMap::new(),
                attachable: true,
                external: false,
            },
        );
    }
    let names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
    let is_job = |n: &str| {
        services
            .iter()
            .any(|s| s.name == n && s.mode == ModeDef::ReplicatedJob)
    };
    let missing = |what: &str, n: &str| {
        let hint = match did_you_mean(n, names.iter().copied()) {
            Some(m) => format!("did you mean `{m}`? (services: {})", names.join(", ")),
            None => format!("services of the file: {}", names.join(", ")),
        };
        (
            format!("{what} names `{n}`, which is not a service of the file"),
            hint,
        )
    };
    if !all.is_empty() {
        if !names.contains(&r.backend) {
            let (m, h) = missing("DE_BACKEND_SERVICE", r.backend);
            p.push(&[], "swarm-backend", m)
                .key("DE_BACKEND_SERVICE")
                .hint(h);
        } else if is_job(r.backend) {
            p.push(
                &["services", r.backend, "deploy", "mode"],
                "swarm-backend",
                format!(
                    "DE_BACKEND_SERVICE `{}` is a replicated-job: bench runs as one-off jobs modelled on a service that keeps running (its mounts, networks, environment)",
                    r.backend
                ),
            )
            .hint("name the service that serves the app (e.g. backend)");
        }
        for w in r.web {
            if !names.contains(&w.as_str()) {
                let (m, h) = missing("DE_SWARM_WEB_SERVICES", w);
                p.push(&[], "swarm-web-service", m)
                    .key("DE_SWARM_WEB_SERVICES")
                    .hint(h);
            } else if is_job(w) {
                p.push(
                    &[],
                    "swarm-web-service",
                    format!("DE_SWARM_WEB_SERVICES names `{w}`, a replicated-job: the web tier is services that keep running"),
                )
                .key("DE_SWARM_WEB_SERVICES")
                .hint("list the services that serve users (e.g. backend,frontend)");
            }
        }
    }
    (
        StackDef {
            services,
            volumes,
            networks,
        },
        p.0,
    )
}

/// The swarm checks over a loaded compose set, for `check` (and every
/// command that loads the inputs): the merged files interpolated as a deploy
/// would, judged by [`analyse`], each problem at its file and line.
pub fn check(
    set: &ComposeSet,
    env: &EnvValues,
    env_shown: &str,
    vars: &interp::Lookup,
) -> Vec<Problem> {
    let backend = env.get("DE_BACKEND_SERVICE").unwrap_or("backend");
    let web = web_services(env.get("DE_SWARM_WEB_SERVICES"), backend);
    let namespace = env.get("COMPOSE_PROJECT_NAME").unwrap_or("stack");
    // What `compose config` would print: only the services `up` starts, and
    // nothing de-build's reader does not model (`include` is resolved by
    // compose; a service using `extends` gets its keys from elsewhere).
    let active: Vec<&str> = set.active().map(|s| s.name.as_str()).collect();
    let extends: Vec<&str> = set
        .services
        .values()
        .filter(|s| s.extends)
        .map(|s| s.name.as_str())
        .collect();
    let mut doc = set.doc.clone();
    let includes = doc.get("include").is_some();
    if let yaml::Value::Map(top) = &mut doc.value {
        top.retain(|(k, _)| k != "include");
        for (k, v) in top.iter_mut() {
            if let (true, yaml::Value::Map(svcs)) = (k == "services", &mut v.value) {
                svcs.retain(|(n, _)| active.contains(&n.as_str()));
                for (_, s) in svcs.iter_mut() {
                    if let yaml::Value::Map(keys) = &mut s.value {
                        keys.retain(|(k, _)| k != "extends" && k != "profiles");
                    }
                }
            }
        }
    }
    let mut index = BTreeMap::new();
    let resolve = |s: &str| interp::interpolate(s, vars).unwrap_or_else(|_| s.to_string());
    let value = json_of(&doc, &mut Vec::new(), &mut index, &resolve);
    let (_, found) = analyse(
        &value,
        Roles {
            namespace,
            backend,
            web: &web,
        },
    );
    found
        .into_iter()
        .filter(|p| {
            let said = match p.code {
                // By the compose checks already (with the same did-you-mean).
                "swarm-backend" => p.key.is_some(),
                "swarm-no-services" => true,
                // Not modelled here: compose resolves them at deploy time.
                "swarm-build-only" => p.path.get(1).is_some_and(|s| extends.contains(&s.as_str())),
                "swarm-web-service" => includes,
                _ => false,
            };
            !said
        })
        .map(|sp| to_problem(sp, set, &index, env, env_shown))
        .collect()
}

/// A stack problem as a `check` problem: at the `.env` line of its key, or
/// at the file and line of the deepest part of its path that is written.
fn to_problem(
    sp: StackProblem,
    set: &ComposeSet,
    index: &BTreeMap<Vec<String>, (usize, usize)>,
    env: &EnvValues,
    env_shown: &str,
) -> Problem {
    let mut p = match sp.key {
        Some(k) => {
            let p = match env.source(k) {
                Some(Source::File { line }) => {
                    Problem::new(env_shown, sp.code, sp.message).line(*line)
                }
                Some(Source::Environment) => Problem::new("environment", sp.code, sp.message),
                _ => Problem::new(env_shown, sp.code, sp.message),
            };
            p.key(k)
        }
        None => {
            let mut at = None;
            for n in (0..=sp.path.len()).rev() {
                if let Some(found) = index.get(&sp.path[..n]) {
                    at = Some(*found);
                    break;
                }
            }
            let (file, line) = at.unwrap_or((0, 0));
            let shown = set
                .files
                .get(file)
                .map(|f| f.shown.clone())
                .unwrap_or_default();
            let p = Problem::new(shown, sp.code, sp.message);
            if line > 0 {
                p.line(line)
            } else {
                p
            }
        }
    };
    if let Some(h) = sp.hint {
        p = p.hint(h);
    }
    p
}

/// The YAML tree as JSON, every scalar passed through `scalar_of` (a
/// string, as written, which the readers below accept for numbers and
/// booleans too); `index` gets the file and line of every path.
fn json_of(
    n: &Node,
    path: &mut Vec<String>,
    index: &mut BTreeMap<Vec<String>, (usize, usize)>,
    scalar_of: &dyn Fn(&str) -> String,
) -> Value {
    use crate::config::compose::yaml::Value as Y;
    let line = if n.key_line > 0 { n.key_line } else { n.line };
    index.insert(path.clone(), (n.file, line));
    match &n.value {
        Y::Null => Value::Null,
        Y::Str(s) => Value::String(scalar_of(s)),
        Y::Seq(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    path.push(i.to_string());
                    let v = json_of(item, path, index, scalar_of);
                    path.pop();
                    v
                })
                .collect(),
        ),
        Y::Map(entries) => Value::Object(
            entries
                .iter()
                .map(|(k, v)| {
                    path.push(k.clone());
                    let j = json_of(v, path, index, scalar_of);
                    path.pop();
                    (k.clone(), j)
                })
                .collect(),
        ),
    }
}

#[derive(Default)]
struct Problems(Vec<StackProblem>);

impl Problems {
    fn push(&mut self, path: &[&str], code: &'static str, message: String) -> &mut StackProblem {
        self.0.push(StackProblem {
            path: path.iter().map(|s| s.to_string()).collect(),
            key: None,
            code,
            message,
            hint: None,
        });
        self.0.last_mut().expect("just pushed")
    }
}

fn obj(v: Option<&Value>) -> Vec<(String, Value)> {
    v.and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::String(s) => s == "true",
        // `external: {name: x}` (old syntax)
        Value::Object(_) => true,
        _ => false,
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    match v {
        Some(Value::Object(m)) => m
            .iter()
            .filter_map(|(k, v)| scalar(v).map(|s| (k.clone(), s)))
            .collect(),
        // `- KEY=value` lists (environment, labels)
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .filter_map(|s| s.split_once('=').map(|(k, v)| (k.into(), v.into())))
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// A command as a list: YAML lists as they are, strings split like a shell.
fn words(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::Array(a) => Some(a.iter().filter_map(scalar).collect()),
        Value::String(s) => Some(split_words(s)),
        _ => None,
    }
}

/// Split a command line as `sh` would for plain words and quotes (no
/// expansion): what compose does with a string `command:`.
pub fn split_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    cur.push(c);
                }
            }
            '"' => {
                in_word = true;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => {
                            if let Some(n) = chars.next() {
                                cur.push(n);
                            }
                        }
                        c => cur.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    out
}

/// A compose duration (`1m30s`, `500ms`, `2s`) in nanoseconds.
pub fn duration_ns(v: &Value) -> Result<i64, String> {
    let s = match v {
        Value::Number(n) => return n.as_i64().ok_or_else(|| format!("bad duration {n}")),
        Value::String(s) => s.trim(),
        other => return Err(format!("bad duration {other}")),
    };
    let mut total: f64 = 0.0;
    let mut rest = s;
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_len);
        let n: f64 = num.parse().map_err(|_| format!("bad duration `{s}`"))?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let mult = match unit {
            "h" => 3_600e9,
            "m" => 60e9,
            "s" => 1e9,
            "ms" => 1e6,
            "us" | "µs" => 1e3,
            "ns" => 1.0,
            _ => return Err(format!("bad duration `{s}` (units: h, m, s, ms, us, ns)")),
        };
        total += n * mult;
        rest = tail;
    }
    Ok(total as i64)
}

fn opt_duration(v: Option<&Value>, path: &[&str], p: &mut Problems) -> Option<i64> {
    let v = v?;
    match duration_ns(v) {
        Ok(n) => Some(n),
        Err(e) => {
            p.push(
                path,
                "swarm-value",
                format!("service `{}`: {}: {e}", path[1], path[2..].join(".")),
            )
            .hint("a duration as compose writes it: 1m30s, 500ms, 2s");
            None
        }
    }
}

fn opt_int(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn mount(service: &str, i: usize, v: &Value, p: &mut Problems) -> Option<MountDef> {
    let at = i.to_string();
    let path = ["services", service, "volumes", at.as_str()];
    match v {
        Value::String(s) => {
            let parts: Vec<&str> = s.split(':').collect();
            let (source, target, mode) = match parts.as_slice() {
                [t] => ("", *t, ""),
                [s, t] => (*s, *t, ""),
                [s, t, m] => (*s, *t, *m),
                _ => {
                    p.push(
                        &path,
                        "swarm-value",
                        format!("service `{service}`: volume `{s}` is not understood"),
                    )
                    .hint("SOURCE:TARGET[:MODE], or the long syntax (type, source, target)");
                    return None;
                }
            };
            let kind = if source.starts_with('/') || source.starts_with('.') {
                MountKind::Bind
            } else {
                MountKind::Volume
            };
            Some(MountDef {
                kind,
                source: source.into(),
                target: target.into(),
                read_only: mode.split(',').any(|m| m == "ro"),
            })
        }
        Value::Object(m) => {
            let kind = match m.get("type").and_then(Value::as_str).unwrap_or("volume") {
                "volume" => MountKind::Volume,
                "bind" => MountKind::Bind,
                "tmpfs" => MountKind::Tmpfs,
                other => {
                    p.push(
                        &[&path[..], &["type"]].concat(),
                        "swarm-unsupported",
                        format!("service `{service}`: mount type `{other}` is not supported"),
                    )
                    .hint("volume, bind or tmpfs");
                    return None;
                }
            };
            Some(MountDef {
                kind,
                source: m
                    .get("source")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .into(),
                target: m
                    .get("target")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .into(),
                read_only: m.get("read_only").is_some_and(truthy),
            })
        }
        _ => {
            p.push(
                &path,
                "swarm-value",
                format!("service `{service}`: a volume entry is not understood"),
            );
            None
        }
    }
}

fn port(service: &str, i: usize, v: &Value, p: &mut Problems) -> Option<PortDef> {
    let at = i.to_string();
    let path = ["services", service, "ports", at.as_str()];
    const HOST_IP: &str = "a swarm publishes a port on every address of a node: leave the address out (the long syntax with `mode: host` publishes on the nodes that run a task; a firewall or the load balancer in front decides who reaches it)";
    let num = |v: Option<&Value>| -> Option<u16> {
        match v? {
            Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
            Value::String(s) => s.parse().ok(),
            _ => None,
        }
    };
    match v {
        Value::Object(m) => {
            let Some(target) = num(m.get("target")) else {
                p.push(
                    &path,
                    "swarm-port",
                    format!("service `{service}`: a port has no target"),
                );
                return None;
            };
            if m.get("host_ip").and_then(Value::as_str).is_some() {
                p.push(
                    &[&path[..], &["host_ip"]].concat(),
                    "swarm-port",
                    format!(
                        "service `{service}`: port {target} binds a host address, which a swarm cannot"
                    ),
                )
                .hint(HOST_IP);
            }
            Some(PortDef {
                target,
                published: num(m.get("published")),
                protocol: m
                    .get("protocol")
                    .and_then(Value::as_str)
                    .unwrap_or("tcp")
                    .into(),
                mode: m
                    .get("mode")
                    .and_then(Value::as_str)
                    .unwrap_or("ingress")
                    .into(),
            })
        }
        other => {
            let s = scalar(other).unwrap_or_default();
            let (spec, protocol) = s.split_once('/').unwrap_or((&s, "tcp"));
            let parts: Vec<&str> = spec.split(':').collect();
            let (published, target) = match parts.as_slice() {
                [t] => (None, t.parse().ok()),
                [p, t] => (p.parse().ok(), t.parse().ok()),
                _ => {
                    p.push(
                        &path,
                        "swarm-port",
                        format!(
                            "service `{service}`: port `{s}` binds a host address, which a swarm cannot"
                        ),
                    )
                    .hint(HOST_IP);
                    return None;
                }
            };
            let Some(target) = target else {
                p.push(
                    &path,
                    "swarm-port",
                    format!("service `{service}`: port `{s}` is not understood"),
                )
                .hint("PUBLISHED:TARGET[/PROTOCOL], or the long syntax (target, published, mode)");
                return None;
            };
            Some(PortDef {
                target,
                published,
                protocol: protocol.into(),
                mode: "ingress".into(),
            })
        }
    }
}

/// One service; `awaited_by`: a service that waits for it to complete.
fn service(
    name: &str,
    v: &Value,
    web: &[String],
    awaited_by: Option<&String>,
    p: &mut Problems,
) -> Option<ServiceDef> {
    let m = v.as_object()?;
    for k in m.keys() {
        match k.as_str() {
            "image" | "command" | "entrypoint" | "environment" | "labels" | "volumes"
            | "networks" | "ports" | "deploy" | "healthcheck" | "init" | "stop_grace_period"
            | "user" | "working_dir" | "hostname" => {}
            // Ignored on a swarm, as `docker stack deploy` ignores them (a
            // one-shot that relies on `depends_on` or `restart` is judged
            // below; `build` without an image too). `profiles` only says
            // whether compose printed the service at all.
            "depends_on" | "restart" | "build" | "links" | "pull_policy" | "profiles" => {}
            "container_name" => {
                p.push(
                    &["services", name, "container_name"],
                    "swarm-container-name",
                    format!(
                        "service `{name}`: `container_name` cannot hold on a swarm: its tasks are named by the swarm (`<stack>_{name}.<slot>.<id>`), so whatever reaches it by that name would not find it"
                    ),
                )
                .hint(format!(
                    "remove it (in the files the swarm's DE_COMPOSE_FILE lists); other services reach it as `{name}`, its service name, on the stack's networks"
                ));
            }
            k if k.starts_with("x-") => {}
            other => {
                p.push(
                    &["services", name, other],
                    "swarm-unsupported",
                    format!("service `{name}`: `{other}` is not supported on the swarm target"),
                )
                .hint(SUPPORTED);
            }
        }
    }
    // Without an image nothing can run, but every other problem of the
    // service is still said, at once.
    let image = m.get("image").and_then(Value::as_str);
    if image.is_none() {
        if m.contains_key("build") {
            p.push(
                &["services", name, "build"],
                "swarm-build-only",
                format!("service `{name}` has `build:` and no `image:`: the nodes of a swarm pull images, they never build one"),
            )
            .hint("give it an `image:` that a registry holds (for the release's code: ${CUSTOM_IMAGE}:${CUSTOM_TAG}, which de-build builds and pushes)");
        } else {
            p.push(
                &["services", name],
                "swarm-build-only",
                format!("service `{name}` has no image"),
            )
            .hint("give it an `image:` that a registry holds");
        }
    }
    let deploy = m
        .get("deploy")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for k in deploy.keys() {
        match k.as_str() {
            "mode" | "replicas" | "endpoint_mode" | "update_config" | "restart_policy"
            | "placement" | "labels" | "rollback_config" => {}
            other => {
                p.push(
                    &["services", name, "deploy", other],
                    "swarm-unsupported",
                    format!(
                        "service `{name}`: `deploy.{other}` is not supported on the swarm target yet"
                    ),
                )
                .hint(SUPPORTED);
            }
        }
    }
    let mode = match deploy
        .get("mode")
        .and_then(Value::as_str)
        .unwrap_or("replicated")
    {
        "replicated" => ModeDef::Replicated(
            opt_int(deploy.get("replicas"))
                .map(|n| n.max(0) as u64)
                .unwrap_or(1),
        ),
        "global" => ModeDef::Global,
        "replicated-job" => ModeDef::ReplicatedJob,
        other => {
            p.push(
                &["services", name, "deploy", "mode"],
                "swarm-unsupported",
                format!("service `{name}`: deploy.mode `{other}` is not supported"),
            )
            .hint("replicated, global or replicated-job");
            ModeDef::Replicated(1)
        }
    };
    let restart = m.get("restart").and_then(scalar);
    let restart_condition = deploy
        .get("restart_policy")
        .and_then(|r| r.get("condition"))
        .and_then(scalar);
    let has_command = m.contains_key("command") || m.contains_key("entrypoint");
    if mode != ModeDef::ReplicatedJob
        && runs_once(
            awaited_by.is_some(),
            restart.as_deref(),
            restart_condition.as_deref(),
            has_command,
        )
    {
        let why = match awaited_by {
            Some(w) => format!("`{w}` waits for it to complete (`condition: {COMPLETED}`)"),
            None => "its restart policy says not to restart it".to_string(),
        };
        p.push(
            &["services", name],
            "swarm-one-shot",
            format!(
                "service `{name}` runs once and exits ({why}), but a swarm ignores `depends_on` and `restart`: as a replicated service nothing would wait for it, and its task would be restarted, or never count as running"
            ),
        )
        .hint(format!(
            "make it a job: `deploy: {{mode: replicated-job}}` on `{name}` (in an override for the swarm); de-build runs the file's jobs to completion before it updates any service"
        ));
    }
    let role = match mode {
        ModeDef::ReplicatedJob => Role::Job,
        _ if web.iter().any(|w| w == name) => Role::Web,
        _ => Role::Worker,
    };
    let uc = deploy
        .get("update_config")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let dur = |k: &[&'static str]| {
        let mut v = vec!["services", name];
        v.extend_from_slice(k);
        v
    };
    let update = UpdateDef {
        order: uc.get("order").and_then(Value::as_str).map(str::to_string),
        parallelism: opt_int(uc.get("parallelism")),
        delay_ns: opt_duration(
            uc.get("delay"),
            &dur(&["deploy", "update_config", "delay"]),
            p,
        ),
        monitor_ns: opt_duration(
            uc.get("monitor"),
            &dur(&["deploy", "update_config", "monitor"]),
            p,
        ),
    };
    let restart = deploy
        .get("restart_policy")
        .and_then(Value::as_object)
        .map(|r| RestartDef {
            condition: r
                .get("condition")
                .and_then(Value::as_str)
                .map(str::to_string),
            delay_ns: opt_duration(
                r.get("delay"),
                &dur(&["deploy", "restart_policy", "delay"]),
                p,
            ),
            max_attempts: opt_int(r.get("max_attempts")),
            window_ns: opt_duration(
                r.get("window"),
                &dur(&["deploy", "restart_policy", "window"]),
                p,
            ),
        });
    let healthcheck = m.get("healthcheck").and_then(Value::as_object).map(|h| {
        let test = if h.get("disable").is_some_and(truthy) {
            vec!["NONE".to_string()]
        } else {
            match h.get("test") {
                Some(Value::String(s)) => vec!["CMD-SHELL".to_string(), s.clone()],
                Some(v) => words(v).unwrap_or_default(),
                None => Vec::new(),
            }
        };
        HealthDef {
            test,
            interval_ns: opt_duration(h.get("interval"), &dur(&["healthcheck", "interval"]), p),
            timeout_ns: opt_duration(h.get("timeout"), &dur(&["healthcheck", "timeout"]), p),
            retries: opt_int(h.get("retries")),
            start_period_ns: opt_duration(
                h.get("start_period"),
                &dur(&["healthcheck", "start_period"]),
                p,
            ),
        }
    });
    let networks = match m.get("networks") {
        Some(Value::Array(a)) => a.iter().filter_map(scalar).collect(),
        Some(Value::Object(o)) => o.keys().cloned().collect(),
        _ => vec!["default".to_string()],
    };
    let constraints = deploy
        .get("placement")
        .and_then(|pl| pl.get("constraints"))
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(scalar).collect())
        .unwrap_or_default();
    let mounts = m
        .get("volumes")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .enumerate()
                .filter_map(|(i, v)| mount(name, i, v, p))
                .collect()
        })
        .unwrap_or_default();
    let ports = m
        .get("ports")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .enumerate()
                .filter_map(|(i, v)| port(name, i, v, p))
                .collect()
        })
        .unwrap_or_default();
    let stop_grace_ns = opt_duration(m.get("stop_grace_period"), &dur(&["stop_grace_period"]), p);
    Some(ServiceDef {
        name: name.to_string(),
        role,
        image: image?.to_string(),
        entrypoint: m.get("entrypoint").and_then(words),
        command: m.get("command").and_then(words),
        env: string_map(m.get("environment")),
        labels: string_map(m.get("labels")),
        service_labels: string_map(deploy.get("labels")),
        mounts,
        networks,
        ports,
        mode,
        endpoint_mode: deploy
            .get("endpoint_mode")
            .and_then(Value::as_str)
            .map(str::to_string),
        update,
        restart,
        healthcheck,
        constraints,
        init: m.get("init").map(truthy),
        stop_grace_ns,
        user: m.get("user").and_then(scalar),
        working_dir: m.get("working_dir").and_then(scalar),
        hostname: m.get("hostname").and_then(scalar),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roles<'a>(namespace: &'a str, backend: &'a str, web: &'a [String]) -> Roles<'a> {
        Roles {
            namespace,
            backend,
            web,
        }
    }

    // What `docker-compose config` (v1) prints for a swarm file.
    const V1: &str = r#"
services:
  backend:
    command:
    - bench
    - serve
    deploy:
      endpoint_mode: dnsrr
      replicas: 2
      update_config:
        monitor: 1s
        order: start-first
    healthcheck:
      interval: 1s
      test: printf x | nc 127.0.0.1 8000
    image: reg:5000/demo/erp:1.1.0@sha256:abc
    ports:
    - mode: host
      published: 18080
      target: 8000
    volumes:
    - sites:/home/frappe/frappe-bench/sites:rw
  create-site:
    command: bench new-site "demo site"
    deploy:
      mode: replicated-job
    image: reg:5000/demo/erp:1.1.0@sha256:abc
    depends_on: [backend]
  queue-short:
    environment:
      A: '1'
    image: reg:5000/demo/erp:1.1.0@sha256:abc
version: '3.9'
volumes:
  sites:
    driver_opts:
      device: /srv/shared/sites
      o: bind
      type: none
"#;

    #[test]
    fn a_v1_config_becomes_services() {
        let s = parse(V1, roles("erp", "backend", &["backend".into()])).unwrap();
        let b = s.service("backend").unwrap();
        assert_eq!(b.role, Role::Web);
        assert_eq!(b.mode, ModeDef::Replicated(2));
        assert_eq!(b.endpoint_mode.as_deref(), Some("dnsrr"));
        assert_eq!(b.update.order.as_deref(), Some("start-first"));
        assert_eq!(b.update.monitor_ns, Some(1_000_000_000));
        assert_eq!(
            b.healthcheck.as_ref().unwrap().test,
            vec!["CMD-SHELL", "printf x | nc 127.0.0.1 8000"]
        );
        assert_eq!(
            b.ports,
            vec![PortDef {
                target: 8000,
                published: Some(18080),
                protocol: "tcp".into(),
                mode: "host".into()
            }]
        );
        assert_eq!(b.mounts[0].source, "sites");
        assert_eq!(b.networks, vec!["default"]);
        let c = s.service("create-site").unwrap();
        assert_eq!(c.role, Role::Job);
        assert_eq!(
            c.command.clone().unwrap(),
            vec!["bench", "new-site", "demo site"]
        );
        assert_eq!(s.service("queue-short").unwrap().role, Role::Worker);
        assert_eq!(s.volumes["sites"].name, "erp_sites");
        assert_eq!(s.volumes["sites"].driver_opts["o"], "bind");
        assert_eq!(s.networks["default"].name, "erp_default");
    }

    #[test]
    fn what_a_swarm_cannot_do_is_reported_not_dropped() {
        let y = r#"
services:
  web:
    image: x
    ports: ["127.0.0.1:8080:80"]
    privileged: true
    volumes: [data:/d]
    deploy:
      resources: {limits: {memory: 1G}}
configs:
  c: {file: ./c}
"#;
        let e = parse(y, roles("p", "web", &["nope".into()]))
            .unwrap_err()
            .iter()
            .map(|p| p.message.clone())
            .collect::<Vec<_>>()
            .join("\n");
        for want in [
            "top-level `configs`",
            "binds a host address",
            "`privileged` is not supported",
            "`deploy.resources`",
            "volume `data`, which the file does not declare",
            "names `nope`",
        ] {
            assert!(e.contains(want), "{want}: {e}");
        }
    }

    #[test]
    fn durations_and_words() {
        assert_eq!(duration_ns(&"1m30s".into()).unwrap(), 90_000_000_000);
        assert_eq!(duration_ns(&"500ms".into()).unwrap(), 500_000_000);
        assert!(duration_ns(&"5 parsecs".into()).is_err());
        assert_eq!(
            split_words(r#"sh -c 'echo "a b"' x\ y"#),
            vec!["sh", "-c", "echo \"a b\"", "x y"]
        );
    }

    fn problems(yaml: &str, backend: &str, web: &[&str]) -> Vec<StackProblem> {
        let web: Vec<String> = web.iter().map(|s| s.to_string()).collect();
        match parse(yaml, roles("p", backend, &web)) {
            Ok(_) => Vec::new(),
            Err(p) => p,
        }
    }

    fn codes(p: &[StackProblem]) -> Vec<&'static str> {
        p.iter().map(|p| p.code).collect()
    }

    #[test]
    fn container_name_is_refused_with_where_and_why() {
        let p = problems(
            "services:\n  backend:\n    image: x\n    container_name: erp-backend\n",
            "backend",
            &[],
        );
        assert_eq!(codes(&p), ["swarm-container-name"]);
        assert_eq!(p[0].path, ["services", "backend", "container_name"]);
        assert!(
            p[0].message.contains("<stack>_backend.<slot>.<id>"),
            "{p:?}"
        );
        assert!(p[0].hint.as_deref().unwrap().contains("as `backend`"));
    }

    #[test]
    fn a_build_only_service_is_refused_and_build_next_to_an_image_is_ignored() {
        let p = problems(
            "services:\n  backend:\n    image: x\n    build: .\n  tool:\n    build: ./tool\n",
            "backend",
            &[],
        );
        assert_eq!(codes(&p), ["swarm-build-only"]);
        assert_eq!(p[0].path, ["services", "tool", "build"]);
        assert!(p[0].message.contains("never build"), "{p:?}");
    }

    #[test]
    fn a_one_shot_that_another_service_awaits_must_be_a_job() {
        // frappe_docker's configurator: restart_policy none, the others
        // wait for it to complete.
        let y = "services:
  configurator:
    image: x
    command: [bench, set-config]
    deploy: {restart_policy: {condition: none}}
  backend:
    image: x
    depends_on:
      configurator: {condition: service_completed_successfully}
";
        let p = problems(y, "backend", &[]);
        assert_eq!(codes(&p), ["swarm-one-shot"]);
        assert_eq!(p[0].path, ["services", "configurator"]);
        assert!(
            p[0].message.contains("`backend` waits for it to complete"),
            "{p:?}"
        );
        assert!(p[0].hint.as_deref().unwrap().contains("replicated-job"));
        // Awaited, without any restart policy: the same.
        let y2 = y.replace("    deploy: {restart_policy: {condition: none}}\n", "");
        assert_eq!(codes(&problems(&y2, "backend", &[])), ["swarm-one-shot"]);
        // `restart: "no"` and a command, awaited by nobody: runs once too.
        let y3 = "services:\n  backend:\n    image: x\n  once:\n    image: x\n    command: [true]\n    restart: \"no\"\n";
        let p3 = problems(y3, "backend", &[]);
        assert_eq!(codes(&p3), ["swarm-one-shot"]);
        assert!(p3[0].message.contains("restart policy"), "{p3:?}");
        // As a job it is what de-build runs before the services: fine, and
        // a start-only dependency (`[backend]`) asks nothing.
        let ok = y.replace(
            "    deploy: {restart_policy: {condition: none}}",
            "    deploy: {mode: replicated-job}",
        ) + "  frontend:\n    image: y\n    depends_on: [backend]\n";
        assert_eq!(problems(&ok, "backend", &[]), []);
    }

    #[test]
    fn web_services_and_the_backend_must_be_long_running_services_of_the_file() {
        let y = "services:\n  backend:\n    image: x\n  frontend:\n    image: y\n  create-site:\n    image: x\n    deploy: {mode: replicated-job}\n";
        assert_eq!(problems(y, "backend", &["backend", "frontend"]), []);
        let p = problems(y, "backend", &["fronted", "create-site"]);
        assert_eq!(codes(&p), ["swarm-web-service", "swarm-web-service"]);
        assert!(p.iter().all(|p| p.key == Some("DE_SWARM_WEB_SERVICES")));
        assert!(
            p[0].hint
                .as_deref()
                .unwrap()
                .contains("did you mean `frontend`?"),
            "{p:?}"
        );
        assert!(p[1].message.contains("a replicated-job"), "{p:?}");
        let p = problems(y, "create-site", &["backend"]);
        assert_eq!(codes(&p), ["swarm-backend"]);
        assert_eq!(p[0].path, ["services", "create-site", "deploy", "mode"]);
        let p = problems(y, "bakend", &["backend"]);
        assert_eq!(codes(&p), ["swarm-backend"]);
        assert_eq!(p[0].key, Some("DE_BACKEND_SERVICE"));
        assert!(p[0].hint.as_deref().unwrap().contains("`backend`"));
    }

    #[test]
    fn published_ports_are_fine_a_host_address_is_not() {
        let y = "services:\n  backend:\n    image: x\n    ports:\n      - \"8080:8000\"\n      - {target: 8001, published: 8081, mode: host}\n      - \"127.0.0.1:9000:9000\"\n";
        let p = problems(y, "backend", &[]);
        assert_eq!(codes(&p), ["swarm-port"]);
        assert_eq!(p[0].path, ["services", "backend", "ports", "2"]);
    }

    #[test]
    fn web_services_default_to_the_backend() {
        assert_eq!(web_services(None, "backend"), ["backend"]);
        assert_eq!(web_services(Some(" , "), "backend"), ["backend"]);
        assert_eq!(
            web_services(Some("backend, frontend"), "backend"),
            ["backend", "frontend"]
        );
    }
}
