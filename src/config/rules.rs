//! Values that pass their schema type but would fail later, in the engine,
//! compose or bench: checked here so `check` (exit 2) says so, not a build
//! or a deploy halfway through. Each rule names the key and where its value
//! came from.

use crate::config::envfile::{EnvValues, Source};
use crate::error::Problem;

/// Where deploy, rollback, status and recover act (`DE_TARGET`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// One Docker host, with compose (the default).
    Compose,
    /// A Docker Swarm, through a manager's API.
    Swarm,
}

/// `DE_TARGET`: absent or empty is `compose`. Err: the message and a hint.
/// The one reading of the key: `check` and every command agree on it.
pub fn target(v: Option<&str>) -> Result<Target, (String, String)> {
    match v.map(str::trim).unwrap_or("") {
        "" | "compose" => Ok(Target::Compose),
        "swarm" => Ok(Target::Swarm),
        other => {
            let names = ["compose", "swarm"];
            let hint = match crate::config::envfile::did_you_mean(other, names.into_iter()) {
                Some(m) => format!("did you mean `{m}`? (`compose`: one host, the default; `swarm`: a Docker Swarm)"),
                None => "`compose` (one host, the default) or `swarm` (a Docker Swarm, DOCKER_HOST of a manager)".into(),
            };
            Err((format!("DE_TARGET `{other}` is not a deploy target"), hint))
        }
    }
}

/// Seconds a swarm key may hold: (key, least). A lock whose
/// heartbeat (every quarter of the limit) could not beat once a second
/// would go stale under a live holder, hence 5 s at least.
pub const SWARM_SECS: [(&str, u64); 2] = [("DE_SWARM_TIMEOUT", 1), ("DE_SWARM_LOCK_STALE", 5)];

/// Every rule over the values that are set (absent or empty ones are the
/// schema check's business).
pub fn check(env: &EnvValues, env_shown: &str, example_shown: &str) -> Vec<Problem> {
    let mut problems = Vec::new();
    // Problems the `flag` closure cannot push while it borrows `problems`.
    let mut late = Vec::new();
    let mut flag = |key: &str, code: &'static str, message: String, hint: &str| {
        let mut p = match env.source(key) {
            Some(Source::File { line }) => Problem::new(env_shown, code, message).line(*line),
            Some(Source::Environment) => Problem::new("environment", code, message),
            _ => Problem::new(example_shown, code, message),
        }
        .key(key);
        if !hint.is_empty() {
            p = p.hint(hint);
        }
        problems.push(p);
    };

    if let Some(v) = env.get("DE_IMAGE") {
        if let Err(e) = repository(v) {
            flag(
                "DE_IMAGE",
                "bad-image",
                format!("DE_IMAGE `{v}`: {e}"),
                "a repository as Docker names it, without a tag: e.g. acme/erpnext-custom (the tag is DE_SITE_VERSION)",
            );
        }
    }
    if let Some(v) = env.get("DE_SITE_VERSION") {
        if let Err(e) = version_tag(v) {
            flag(
                "DE_SITE_VERSION",
                "bad-tag",
                format!("DE_SITE_VERSION `{v}`: {e}"),
                "use MAJOR.MINOR.PATCH, optionally with a pre-release: 1.4.0, 1.4.0-rc.1",
            );
        }
    }
    if let Some(reg) = env.get("DE_REGISTRY") {
        if let Err(e) = registry(reg, env.get("DE_IMAGE").unwrap_or("image")) {
            flag(
                "DE_REGISTRY",
                "bad-registry",
                format!("DE_REGISTRY `{reg}`: {e}"),
                "the registry's host and port, e.g. registry.example.com:5000 or 127.0.0.1:5000",
            );
        }
    }
    if let Some(v) = env.get("COMPOSE_PROJECT_NAME") {
        if let Err(e) = project_name(v) {
            flag(
                "COMPOSE_PROJECT_NAME",
                "bad-project-name",
                format!("COMPOSE_PROJECT_NAME `{v}`: {e}"),
                "compose accepts lowercase letters, digits, - and _, starting with a letter or digit",
            );
        }
    }
    if let Some(v) = env.get("DE_BACKEND_SERVICE") {
        if let Err(e) = service_name(v) {
            flag(
                "DE_BACKEND_SERVICE",
                "bad-service",
                format!("DE_BACKEND_SERVICE `{v}`: {e}"),
                "the name of a service in the compose file, e.g. backend",
            );
        }
    }
    if let Some(v) = env.get("DE_SITES") {
        if let Err(e) = sites(v) {
            flag(
                "DE_SITES",
                "bad-sites",
                format!("DE_SITES: {e}"),
                "`all`, or site names separated by commas, e.g. erp.example.com,shop.example.com",
            );
        }
    }
    if let Some(v) = env.get("FRAPPE_PATH") {
        if !crate::config::apps::url_shape_ok(v) {
            flag(
                "FRAPPE_PATH",
                "bad-url",
                format!("FRAPPE_PATH `{v}` is not a URL bench can clone"),
                "https://, http://, ssh://, git:// or git@host:org/repo.git",
            );
        }
    }
    if let Some(v) = env.get("DE_HEALTH_URL") {
        if !v.starts_with("http://") {
            flag(
                "DE_HEALTH_URL",
                "bad-url",
                format!("DE_HEALTH_URL `{v}`: the health gate speaks plain http:// only"),
                "point it at the stack's http port, e.g. http://127.0.0.1:8080/api/method/ping",
            );
        }
    }
    if let Some(v) = env.get("DE_DRAIN_ON_TIMEOUT") {
        if crate::record::deploy::OnDrainTimeout::parse(v).is_none() {
            flag(
                "DE_DRAIN_ON_TIMEOUT",
                "bad-choice",
                format!("DE_DRAIN_ON_TIMEOUT `{v}`: expected abort or proceed"),
                "abort: stop the deploy (maintenance goes off, nothing else changed); proceed: back up and migrate with the jobs still queued",
            );
        }
    }
    if let Some(v) = env.get("DE_HEALTH_HOST") {
        if let Err(e) = site_name(v) {
            flag(
                "DE_HEALTH_HOST",
                "bad-host",
                format!("DE_HEALTH_HOST `{v}`: {e}"),
                "a site's host name as Frappe knows it, e.g. erp.example.com (no scheme, no path)",
            );
        }
    }
    for key in ["DE_DRAIN_TIMEOUT", "DE_HEALTH_TIMEOUT"] {
        if let Some(v) = env.get(key) {
            if !v.parse::<u64>().is_ok_and(|n| n <= 86_400) {
                flag(
                    key,
                    "bad-timeout",
                    format!("{key} `{v}`: expected seconds from 0 to 86400"),
                    "",
                );
            }
        }
    }
    match target(env.get("DE_TARGET")) {
        Err((message, hint)) => flag("DE_TARGET", "bad-target", message, &hint),
        Ok(Target::Compose) => {}
        Ok(Target::Swarm) => {
            if env.get("DE_REGISTRY").is_none() {
                // Said where the swarm was chosen: the registry key is unset.
                let message = "DE_TARGET is `swarm` but DE_REGISTRY is not set: every node of a swarm pulls the release by digest from the registry it was pushed to".to_string();
                let p = match env.source("DE_TARGET") {
                    Some(Source::File { line }) => {
                        Problem::new(env_shown, "swarm-registry", message).line(*line)
                    }
                    Some(Source::Environment) => {
                        Problem::new("environment", "swarm-registry", message)
                    }
                    _ => Problem::new(env_shown, "swarm-registry", message),
                };
                late.push(p.key("DE_REGISTRY").hint(
                    "set DE_REGISTRY to the registry's host and port (e.g. registry.example.com:5000), then `de-build push VERSION` before each deploy",
                ));
            }
            if let Some(reg) = env.get("DE_SWARM_REGISTRY") {
                if let Err(e) = registry(reg, env.get("DE_IMAGE").unwrap_or("image")) {
                    flag(
                        "DE_SWARM_REGISTRY",
                        "bad-registry",
                        format!("DE_SWARM_REGISTRY `{reg}`: {e}"),
                        "the registry's host and port as the nodes reach it, e.g. registry:5000",
                    );
                }
            }
            for (key, least) in SWARM_SECS {
                if let Some(v) = env.get(key) {
                    if !v
                        .parse::<u64>()
                        .is_ok_and(|n| (least..=86_400).contains(&n))
                    {
                        let why = if least > 1 {
                            " (the holder refreshes the lock every quarter of it)"
                        } else {
                            ""
                        };
                        flag(
                            key,
                            "bad-timeout",
                            format!("{key} `{v}`: expected seconds from {least} to 86400{why}"),
                            "",
                        );
                    }
                }
            }
        }
    }
    if let Some(v) = env.get("DE_SMOKE_COMMAND") {
        if v.contains(['"', '\'', '\\']) {
            flag(
                "DE_SMOKE_COMMAND",
                "bad-command",
                "DE_SMOKE_COMMAND: the command is split at blanks, quotes and backslashes are not understood".into(),
                "write the words without quotes, e.g. bench version",
            );
        }
    }
    problems.extend(late);
    problems
}

/// Docker's reference grammar for a repository (distribution/reference):
/// `[host[:port]/]component(/component)*`, each component lowercase
/// alphanumerics joined by `.`, `_`, `__` or dashes; 255 characters at most.
/// A tag or digest is refused: de-build adds the tag itself.
pub fn repository(v: &str) -> Result<(), String> {
    if let Some(c) = v.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(if c.is_whitespace() {
            "contains a blank".into()
        } else {
            "contains a control character".into()
        });
    }
    if v.contains('@') {
        return Err("carries a digest (`@…`); give the repository only".into());
    }
    let last = v.rsplit('/').next().unwrap_or(v);
    if let Some((_, tag)) = last.split_once(':') {
        return Err(format!(
            "carries a tag (`:{tag}`); de-build tags the image with DE_SITE_VERSION"
        ));
    }
    if v.len() > 255 {
        return Err("is longer than 255 characters".into());
    }
    let parts: Vec<&str> = v.split('/').collect();
    let (domain, path) = match parts.split_first() {
        Some((first, rest))
            if !rest.is_empty() && (first.contains(['.', ':']) || *first == "localhost") =>
        {
            (Some(*first), rest)
        }
        _ => (None, &parts[..]),
    };
    if let Some(d) = domain {
        host_port(d)?;
    }
    for c in path {
        component(c)?;
    }
    Ok(())
}

fn host_port(d: &str) -> Result<(), String> {
    let (host, port) = match d.strip_prefix('[') {
        // An IPv6 address in brackets, then maybe a port.
        Some(rest) => match rest.split_once(']') {
            Some((_, after)) => (None, after.strip_prefix(':')),
            None => return Err(format!("`{d}`: the `[` is never closed")),
        },
        None => match d.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(d), None),
        },
    };
    if let Some(p) = port {
        if p.is_empty() || !p.chars().all(|c| c.is_ascii_digit()) || p.parse::<u16>().is_err() {
            return Err(format!("`{d}`: the port must be a number up to 65535"));
        }
    }
    let Some(host) = host else {
        return Ok(());
    };
    let ok = !host.is_empty()
        && host.split('.').all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!("`{host}` is not a host name"))
    }
}

fn component(c: &str) -> Result<(), String> {
    if c.is_empty() {
        return Err("has an empty path component (`//`, or a `/` at an end)".into());
    }
    if c.chars().any(|ch| ch.is_ascii_uppercase()) {
        return Err("repository names must be lowercase".into());
    }
    if let Some(bad) = c
        .chars()
        .find(|ch| !(ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(*ch)))
    {
        return Err(format!(
            "`{bad}` is not allowed (lowercase letters, digits, and . _ - between them)"
        ));
    }
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return Err(format!("`{c}` must start and end with a letter or digit"));
    }
    // Separators: one `.`, one or two `_`, or any number of `-`.
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.chars().all(|x| x == '-');
        if !ok {
            return Err(format!("`{sep}` cannot join two parts of a name"));
        }
    }
    Ok(())
}

/// The version is also the image tag: `[A-Za-z0-9_][A-Za-z0-9_.-]*`. Room is
/// left for the longest suffix de-build adds (`-superseded-<12 hex>`) within
/// the 128 characters a tag may have.
pub fn version_tag(v: &str) -> Result<(), String> {
    if v.contains('+') {
        return Err(
            "build metadata (`+…`) cannot be part of a Docker tag (`+` is not allowed in tags)"
                .into(),
        );
    }
    if let Some(c) = v
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "_.-".contains(*c)))
    {
        return Err(format!("`{c}` is not allowed in a Docker tag"));
    }
    if v.len() > 104 {
        return Err(
            "is longer than 104 characters (a tag holds 128, with de-build's suffixes)".into(),
        );
    }
    Ok(())
}

fn registry(reg: &str, image: &str) -> Result<(), String> {
    if let Some((scheme, _)) = reg.split_once("://") {
        return Err(format!(
            "no scheme (`{scheme}://`): write the host and port only"
        ));
    }
    let host = reg.split('/').next().unwrap_or(reg);
    if !(host.contains(['.', ':']) || host == "localhost") {
        return Err("is not a registry host: Docker would read it as a namespace on Docker Hub (a host needs a dot or a port)".into());
    }
    repository(&crate::util::registry_repository(reg, image))
}

/// Compose's rule for project names.
pub fn project_name(v: &str) -> Result<(), String> {
    let mut chars = v.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !first_ok {
        return Err("must start with a lowercase letter or a digit".into());
    }
    match chars.find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '_'))
    {
        Some(c) if c.is_ascii_uppercase() => Err("must be lowercase".into()),
        Some(c) if c.is_whitespace() => Err("contains a blank".into()),
        Some(c) => Err(format!("`{}` is not allowed", c.escape_default())),
        None => Ok(()),
    }
}

/// Compose's rule for service names.
pub fn service_name(v: &str) -> Result<(), String> {
    let ok = v.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if ok {
        Ok(())
    } else {
        Err("a service name has letters, digits, . _ - and starts with a letter or digit".into())
    }
}

/// `all`, or site names (host names as Frappe uses them for directories
/// under `sites/`): no blanks, no `/`, no `..`.
/// The Host header the health gate sends: `DE_HEALTH_HOST`, else the first
/// site of an explicit `DE_SITES`, else none (the URL's own host). Frappe
/// finds the site by Host (frappe/app.py `init_request`, through
/// X-Frappe-Site-Name in frappe_docker's nginx), so a gate probing
/// `http://127.0.0.1:8080/` would otherwise ask for site `127.0.0.1`.
pub fn health_host(env: &EnvValues) -> Option<String> {
    if let Some(h) = env.get("DE_HEALTH_HOST").filter(|h| !h.is_empty()) {
        return Some(h.to_string());
    }
    let sites = env.get("DE_SITES")?;
    let first = sites.split(',').map(str::trim).find(|s| !s.is_empty())?;
    (first != "all").then(|| first.to_string())
}

/// A host name as a Host header carries it (an optional port allowed).
fn site_name(v: &str) -> Result<(), String> {
    let host = v.rsplit_once(':').map_or(v, |(h, p)| {
        if p.chars().all(|c| c.is_ascii_digit()) {
            h
        } else {
            v
        }
    });
    if host.is_empty()
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_')
    {
        return Err("not a host name".into());
    }
    Ok(())
}

pub fn sites(v: &str) -> Result<(), String> {
    if v.trim() == "all" {
        return Ok(());
    }
    let items: Vec<&str> = v.split(',').map(str::trim).collect();
    for (i, s) in items.iter().enumerate() {
        let n = i + 1;
        if *s == "all" {
            return Err(format!(
                "item {n} is `all`, which stands alone (it means every site)"
            ));
        }
        let bad = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "._-".contains(*c)));
        if let Some(c) = bad {
            let what = if c.is_whitespace() {
                "a blank".to_string()
            } else {
                format!("`{}`", c.escape_default())
            };
            return Err(format!(
                "site `{s}` (item {n}) contains {what}; a site name is a host name"
            ));
        }
        if s.contains("..") || s.starts_with(['.', '-']) || s.ends_with(['.', '-']) || s.len() > 253
        {
            return Err(format!("site `{s}` (item {n}) is not a host name"));
        }
        if items[..i].contains(s) {
            return Err(format!("site `{s}` is listed twice"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_follow_docker_grammar() {
        for ok in [
            "acme/erpnext-custom",
            "erpnext",
            "127.0.0.1:5000/a/b",
            "localhost/x",
            "registry.example.com/team/app_x.y__z---w",
            "Registry.Example.com:443/acme/x",
        ] {
            assert_eq!(repository(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("Acme/ERP", "lowercase"),
            ("acme/erp:latest", "carries a tag"),
            ("acme/erp@sha256:00", "digest"),
            ("acme /erp", "blank"),
            ("acme//erp", "empty path component"),
            ("acme/erp-", "start and end"),
            ("acme/e..rp", "cannot join"),
            ("acme/e___rp", "cannot join"),
            ("acme/ér", "not allowed"),
            ("host:99999/x", "port"),
            ("bad_host.com/x", "not a host name"),
        ] {
            let e = repository(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn tags_names_and_sites() {
        assert!(version_tag("1.2.3-rc.1").is_ok());
        assert!(version_tag("1.2.3+build.5")
            .unwrap_err()
            .contains("build metadata"));
        assert!(project_name("erp_1-x").is_ok());
        assert!(project_name("Erp").is_err());
        assert!(project_name("erp name").unwrap_err().contains("blank"));
        assert!(project_name("-erp").is_err());
        assert!(project_name("erp/x").is_err());
        assert!(sites("all").is_ok());
        assert!(sites("a.example.com, b.localhost").is_ok());
        assert!(sites("a.example.com,../../etc")
            .unwrap_err()
            .contains("`/`"));
        assert!(sites("a..b").unwrap_err().contains("not a host name"));
        assert!(sites("my site").unwrap_err().contains("a blank"));
        assert!(sites("all,a.x").unwrap_err().contains("stands alone"));
        assert!(sites("a.x,a.x").unwrap_err().contains("twice"));
        assert!(registry("https://r.example.com", "a/b").is_err());
        assert!(registry("myregistry", "a/b")
            .unwrap_err()
            .contains("namespace"));
        assert!(registry("127.0.0.1:5000", "a/b").is_ok());
        assert!(service_name("backend").is_ok());
        assert!(service_name("back end").is_err());
    }

    /// Values as read from a `.env` text (each key's line known).
    fn env_of(text: &str) -> EnvValues {
        let example = "# @optional\nDE_TARGET=compose\n# @optional\nDE_REGISTRY=\n# @optional\nDE_SWARM_REGISTRY=\n# @type int @optional\nDE_SWARM_TIMEOUT=300\n# @type int @optional\nDE_SWARM_LOCK_STALE=60\n";
        let (schema, p) = crate::config::envfile::schema::Schema::from_example("ex", example);
        assert!(p.is_empty(), "{p:?}");
        let (env, p) = crate::config::envfile::validate(
            &schema,
            &crate::config::envfile::EnvInput {
                file: Some((".env", text)),
                lookup_env: &|_| None,
                project_dir: std::path::Path::new("."),
            },
        );
        assert!(p.is_empty(), "{p:?}");
        env
    }

    fn found(text: &str) -> Vec<(&'static str, Option<usize>, String)> {
        check(&env_of(text), ".env", "ex")
            .into_iter()
            .map(|p| (p.code, p.line, p.key.unwrap_or_default()))
            .collect()
    }

    #[test]
    fn the_target_is_compose_or_swarm_and_a_typo_is_named() {
        assert_eq!(target(None), Ok(Target::Compose));
        assert_eq!(target(Some(" swarm ")), Ok(Target::Swarm));
        let (msg, hint) = target(Some("swram")).unwrap_err();
        assert!(msg.contains("`swram`"), "{msg}");
        assert!(hint.contains("did you mean `swarm`?"), "{hint}");
        let (_, hint) = target(Some("kubernetes")).unwrap_err();
        assert!(!hint.contains("did you mean"), "{hint}");
        assert_eq!(
            found("DE_REGISTRY=r.example.com:5000\nDE_TARGET=Compose\n"),
            [("bad-target", Some(2), "DE_TARGET".to_string())]
        );
    }

    #[test]
    fn a_swarm_needs_a_registry_said_where_the_swarm_is_chosen() {
        assert_eq!(
            found("\nDE_TARGET=swarm\n"),
            [("swarm-registry", Some(2), "DE_REGISTRY".to_string())]
        );
        assert_eq!(found("DE_TARGET=swarm\nDE_REGISTRY=127.0.0.1:5000\n"), []);
        // One host needs none.
        assert_eq!(found("DE_TARGET=compose\n"), []);
        assert_eq!(
            found("DE_TARGET=swarm\nDE_REGISTRY=r:5000\nDE_SWARM_REGISTRY=https://registry:5000\n"),
            [("bad-registry", Some(3), "DE_SWARM_REGISTRY".to_string())]
        );
    }

    #[test]
    fn swarm_seconds_are_positive_and_the_lock_limit_leaves_room_for_heartbeats() {
        let on = |extra: &str| found(&format!("DE_TARGET=swarm\nDE_REGISTRY=r:5000\n{extra}"));
        assert_eq!(on("DE_SWARM_TIMEOUT=1\nDE_SWARM_LOCK_STALE=5\n"), []);
        assert_eq!(
            on("DE_SWARM_TIMEOUT=0\nDE_SWARM_LOCK_STALE=4\n"),
            [
                ("bad-timeout", Some(3), "DE_SWARM_TIMEOUT".to_string()),
                ("bad-timeout", Some(4), "DE_SWARM_LOCK_STALE".to_string())
            ]
        );
        assert_eq!(
            on("DE_SWARM_TIMEOUT=-3\n"),
            [("bad-timeout", Some(3), "DE_SWARM_TIMEOUT".to_string())]
        );
        // Keys of a swarm mean nothing to one host.
        assert_eq!(found("DE_SWARM_TIMEOUT=0\n"), []);
    }
}
