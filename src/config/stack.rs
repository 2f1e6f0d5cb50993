//! The compose file as a swarm stack: the YAML that `compose config` printed
//! (files merged, variables interpolated by compose itself) → the services,
//! volumes and networks de-build creates through the manager's API.
//!
//! The subset is the one `docker stack deploy` honours; keys it ignores on a
//! swarm are ignored here too (`depends_on`, `restart`, `container_name`,
//! `build`), keys that would change what runs and are not handled are
//! reported — never dropped in silence.

use crate::record::swarm::{
    HealthDef, ModeDef, MountDef, MountKind, NetworkDef, PortDef, RestartDef, Role, ServiceDef,
    StackDef, UpdateDef, VolumeDef,
};
use serde_json::Value;
use std::collections::BTreeMap;

/// Parse the resolved compose YAML. `web` names the web tier (updated first,
/// start-first); every problem is returned at once.
pub fn parse(yaml: &str, namespace: &str, web: &[String]) -> Result<StackDef, Vec<String>> {
    let doc = match crate::config::compose::yaml::parse(yaml) {
        Ok(Some(node)) => json_of(&node),
        Ok(None) => Value::Null,
        Err(e) => {
            return Err(vec![format!(
                "not YAML (line {}, column {}): {}",
                e.line, e.col, e.message
            )])
        }
    };
    let mut p = Problems::default();
    let top = doc.as_object().cloned().unwrap_or_default();
    for k in top.keys() {
        match k.as_str() {
            "services" | "volumes" | "networks" | "version" | "name" => {}
            k if k.starts_with("x-") => {}
            other => p.push(format!(
                "top-level `{other}` is not supported on the swarm target"
            )),
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
            p.push(format!(
                "network `{key}` uses driver `{d}`: a swarm stack needs `overlay`"
            ));
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
    let mut services = Vec::new();
    for (name, v) in obj(top.get("services")) {
        if let Some(s) = service(&name, &v, web, &mut p) {
            for m in &s.mounts {
                if m.kind == MountKind::Volume
                    && !m.source.is_empty()
                    && !volumes.contains_key(&m.source)
                {
                    p.push(format!(
                        "service `{name}` mounts volume `{}`, which the file does not declare",
                        m.source
                    ));
                }
            }
            for n in &s.networks {
                if n != "default" && !networks.contains_key(n) {
                    p.push(format!(
                        "service `{name}` joins network `{n}`, which the file does not declare"
                    ));
                }
            }
            services.push(s);
        }
    }
    if services.is_empty() {
        p.push("the compose file has no services".into());
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
    for w in web {
        if !services.iter().any(|s| &s.name == w) {
            p.push(format!(
                "DE_SWARM_WEB_SERVICES names `{w}`, which is not a service of the file"
            ));
        }
    }
    if p.0.is_empty() {
        Ok(StackDef {
            services,
            volumes,
            networks,
        })
    } else {
        Err(p.0)
    }
}

/// The YAML tree as JSON; every scalar stays a string (as written), which
/// the readers below accept for numbers and booleans too.
fn json_of(n: &crate::config::compose::yaml::Node) -> Value {
    use crate::config::compose::yaml::Value as Y;
    match &n.value {
        Y::Null => Value::Null,
        Y::Str(s) => Value::String(s.clone()),
        Y::Seq(items) => Value::Array(items.iter().map(json_of).collect()),
        Y::Map(entries) => Value::Object(
            entries
                .iter()
                .map(|(k, v)| (k.clone(), json_of(v)))
                .collect(),
        ),
    }
}

#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn push(&mut self, s: String) {
        self.0.push(s);
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

fn opt_duration(v: Option<&Value>, what: &str, service: &str, p: &mut Problems) -> Option<i64> {
    let v = v?;
    match duration_ns(v) {
        Ok(n) => Some(n),
        Err(e) => {
            p.push(format!("service `{service}`: {what}: {e}"));
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

fn mount(service: &str, v: &Value, p: &mut Problems) -> Option<MountDef> {
    match v {
        Value::String(s) => {
            let parts: Vec<&str> = s.split(':').collect();
            let (source, target, mode) = match parts.as_slice() {
                [t] => ("", *t, ""),
                [s, t] => (*s, *t, ""),
                [s, t, m] => (*s, *t, *m),
                _ => {
                    p.push(format!(
                        "service `{service}`: volume `{s}` is not understood"
                    ));
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
                    p.push(format!(
                        "service `{service}`: mount type `{other}` is not supported"
                    ));
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
            p.push(format!(
                "service `{service}`: a volume entry is not understood"
            ));
            None
        }
    }
}

fn port(service: &str, v: &Value, p: &mut Problems) -> Option<PortDef> {
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
                p.push(format!("service `{service}`: a port has no target"));
                return None;
            };
            if m.get("host_ip").and_then(Value::as_str).is_some() {
                p.push(format!(
                    "service `{service}`: port {target} binds a host address, which a swarm cannot"
                ));
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
                    p.push(format!(
                        "service `{service}`: port `{s}` binds a host address, which a swarm cannot (use the long syntax with `mode: host`)"
                    ));
                    return None;
                }
            };
            let Some(target) = target else {
                p.push(format!("service `{service}`: port `{s}` is not understood"));
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

fn service(name: &str, v: &Value, web: &[String], p: &mut Problems) -> Option<ServiceDef> {
    let m = v.as_object()?;
    for k in m.keys() {
        match k.as_str() {
            "image" | "command" | "entrypoint" | "environment" | "labels" | "volumes"
            | "networks" | "ports" | "deploy" | "healthcheck" | "init" | "stop_grace_period"
            | "user" | "working_dir" | "hostname" => {}
            // Ignored on a swarm, as `docker stack deploy` ignores them.
            "depends_on" | "restart" | "container_name" | "build" | "links" | "pull_policy" => {}
            k if k.starts_with("x-") => {}
            other => p.push(format!(
                "service `{name}`: `{other}` is not supported on the swarm target"
            )),
        }
    }
    let Some(image) = m.get("image").and_then(Value::as_str) else {
        p.push(format!("service `{name}` has no image"));
        return None;
    };
    let deploy = m
        .get("deploy")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for k in deploy.keys() {
        match k.as_str() {
            "mode" | "replicas" | "endpoint_mode" | "update_config" | "restart_policy"
            | "placement" | "labels" | "rollback_config" => {}
            other => p.push(format!(
                "service `{name}`: `deploy.{other}` is not supported on the swarm target yet"
            )),
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
            p.push(format!(
                "service `{name}`: deploy.mode `{other}` is not supported"
            ));
            ModeDef::Replicated(1)
        }
    };
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
    let update = UpdateDef {
        order: uc.get("order").and_then(Value::as_str).map(str::to_string),
        parallelism: opt_int(uc.get("parallelism")),
        delay_ns: opt_duration(uc.get("delay"), "update_config.delay", name, p),
        monitor_ns: opt_duration(uc.get("monitor"), "update_config.monitor", name, p),
    };
    let restart = deploy
        .get("restart_policy")
        .and_then(Value::as_object)
        .map(|r| RestartDef {
            condition: r
                .get("condition")
                .and_then(Value::as_str)
                .map(str::to_string),
            delay_ns: opt_duration(r.get("delay"), "restart_policy.delay", name, p),
            max_attempts: opt_int(r.get("max_attempts")),
            window_ns: opt_duration(r.get("window"), "restart_policy.window", name, p),
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
            interval_ns: opt_duration(h.get("interval"), "healthcheck.interval", name, p),
            timeout_ns: opt_duration(h.get("timeout"), "healthcheck.timeout", name, p),
            retries: opt_int(h.get("retries")),
            start_period_ns: opt_duration(
                h.get("start_period"),
                "healthcheck.start_period",
                name,
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
    Some(ServiceDef {
        name: name.to_string(),
        role,
        image: image.to_string(),
        entrypoint: m.get("entrypoint").and_then(words),
        command: m.get("command").and_then(words),
        env: string_map(m.get("environment")),
        labels: string_map(m.get("labels")),
        service_labels: string_map(deploy.get("labels")),
        mounts: m
            .get("volumes")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|v| mount(name, v, p)).collect())
            .unwrap_or_default(),
        networks,
        ports: m
            .get("ports")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|v| port(name, v, p)).collect())
            .unwrap_or_default(),
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
        stop_grace_ns: opt_duration(m.get("stop_grace_period"), "stop_grace_period", name, p),
        user: m.get("user").and_then(scalar),
        working_dir: m.get("working_dir").and_then(scalar),
        hostname: m.get("hostname").and_then(scalar),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let s = parse(V1, "erp", &["backend".into()]).unwrap();
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
        let e = parse(y, "p", &["nope".into()]).unwrap_err().join("\n");
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
}
