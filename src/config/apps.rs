//! `apps.json` in frappe_docker's format: `[{"url": "...", "branch": "..."}]`.
//!
//! URLs may carry `${NAME}` placeholders for credentials, filled from secret
//! `.env` keys in memory only ([`inject`]). Everything that leaves the process
//! (manifests, output) uses [`App::public_url`], with the credential removed.

use crate::config::envfile::EnvValues;
use crate::error::Problem;
use crate::secret::Secret;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct App {
    /// Derived from the URL's last path segment (`.../de_macrs.git` -> `de_macrs`).
    pub name: String,
    /// As written in apps.json, placeholders and all (never a real token).
    pub url_template: String,
    /// `None`: no `"branch"`, so bench clones the remote's default branch.
    pub branch: Option<String>,
    /// 1-based position in the file.
    pub index: usize,
}

impl App {
    pub fn label(&self) -> String {
        format!("#{} ({})", self.index, self.name)
    }

    /// The URL without any credential, fit for manifests and messages.
    pub fn public_url(&self) -> String {
        strip_userinfo(&self.url_template)
    }

    pub fn placeholders(&self) -> Vec<String> {
        placeholders(&self.url_template).unwrap_or_default()
    }

    /// The ref to ask the remote for: the branch or tag, or `HEAD` (the
    /// default branch, which bench clones when apps.json names none).
    pub fn git_ref(&self) -> &str {
        self.branch.as_deref().unwrap_or("HEAD")
    }

    /// The directory bench leaves the app in under `apps/`.
    pub fn package_dir(&self) -> String {
        package_dir(&self.name)
    }
}

/// The directory bench installs an app into, from its repository name.
///
/// bench clones into the repository's name, then renames the directory to
/// the app's package name (`[project] name` of pyproject.toml, else
/// setup.cfg or setup.py: frappe/bench `bench/utils/app.py` `get_app_name`,
/// called from `App.install` in `bench/app.py`). A Frappe app's package is
/// its Python module, which cannot hold `-`: `india-compliance` becomes
/// `india_compliance`. The package name itself is only known inside the
/// build, so this is the rule for repositories named after their app.
pub fn package_dir(repo_name: &str) -> String {
    repo_name.replace('-', "_")
}

/// Remove `user[:pass]@` from a URL (or a URL template).
pub fn strip_userinfo(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if let Some(at) = authority.rfind('@') {
            return format!("{scheme}://{}{path}", &authority[at + 1..]);
        }
    }
    url.to_string()
}

/// The `${NAME}` placeholders of a template, in order; Err on an unclosed `${`.
pub fn placeholders(template: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(i) = rest.find("${") {
        let after = &rest[i + 2..];
        let Some(end) = after.find('}') else {
            return Err("a `${` placeholder is never closed".into());
        };
        let name = &after[..end];
        if !crate::config::envfile::parse::valid_key(name) {
            // Not quoted: what sits between the braces may be a pasted token.
            return Err(
                "a `${...}` placeholder must hold a key name (ASCII letters, digits, _)".into(),
            );
        }
        out.push(name.to_string());
        rest = &after[end + 1..];
    }
    Ok(out)
}

/// App name as bench derives it: last path segment without `.git`. The
/// credential is removed first: `https://TOKEN@host` has no path, and its
/// "last segment" would be the token.
pub fn app_name(url: &str) -> String {
    let clean = strip_userinfo(url);
    let clean = match clean.split_once("://") {
        Some(_) => clean.as_str(),
        // scp-like `user@host:path`: the user is left of the last `@`.
        None => clean.rsplit('@').next().unwrap_or(&clean),
    };
    let trimmed = clean.trim_end_matches('/');
    let last = trimmed.rsplit(['/', ':']).next().unwrap_or(trimmed);
    // No app name holds `@`; a userinfo out of place (`https:///TOKEN@h`,
    // which has no authority to strip) does.
    let last = last.rsplit('@').next().unwrap_or(last);
    last.strip_suffix(".git").unwrap_or(last).to_string()
}

pub use crate::util::{breaks_userinfo, percent_encode_userinfo};

const KNOWN_FIELDS: [&str; 2] = ["url", "branch"];

/// A field name as messages may show it: a short lowercase word, as JSON
/// fields are named (`brnch`, `tag`); anything longer may be a pasted token.
fn field_name_shown(k: &str) -> Option<&str> {
    (k.len() <= 12
        && k.chars()
            .all(|c| c.is_ascii_lowercase() || c == '_' || c == '-'))
    .then_some(k)
}

/// Parse and check apps.json. `display` is the path shown in problems.
pub fn parse(display: &str, text: &str) -> (Vec<App>, Vec<Problem>) {
    let mut problems = Vec::new();
    let text = match text.strip_prefix('\u{feff}') {
        Some(t) => {
            problems.push(
                Problem::new(display, "bom", "file starts with a UTF-8 byte-order mark")
                    .line(1)
                    .hint("save the file as UTF-8 without BOM; JSON tools reject it"),
            );
            t
        }
        None => text,
    };
    if text.trim().is_empty() {
        problems.push(Problem::new(display, "empty-file", "apps.json is empty")
            .hint(r#"it must be a JSON list like [{"url": "https://github.com/frappe/erpnext", "branch": "version-15"}]"#));
        return (vec![], problems);
    }
    let value: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            let what = match e.classify() {
                serde_json::error::Category::Eof => {
                    "the JSON ends too early (truncated file?)".to_string()
                }
                _ => format!("invalid JSON: {}", strip_position(&e.to_string())),
            };
            problems.push(Problem::new(display, "bad-json", what).line(e.line().max(1)));
            return (vec![], problems);
        }
    };
    let Some(list) = value.as_array() else {
        problems.push(
            Problem::new(
                display,
                "not-a-list",
                "apps.json must be a JSON list of apps",
            )
            .hint(r#"wrap the entries in [ ... ]: [{"url": "...", "branch": "..."}]"#),
        );
        return (vec![], problems);
    };
    // `[]` is valid: bench builds Frappe alone (a frappe-only image).
    let mut apps: Vec<App> = Vec::new();
    let mut seen: Vec<(String, usize)> = Vec::new();
    for (i, item) in list.iter().enumerate() {
        let index = i + 1;
        let Some(obj) = item.as_object() else {
            problems.push(
                Problem::new(display, "bad-entry", "entry is not an object")
                    .entry(format!("#{index}"))
                    .hint(r#"each entry is {"url": "...", "branch": "..."}"#),
            );
            continue;
        };
        let url = obj
            .get("url")
            .and_then(|v| v.as_str())
            .map(str::trim)
            .unwrap_or("");
        let name = if url.is_empty() {
            "?".to_string()
        } else {
            app_name(url)
        };
        let label = format!("#{index} ({name})");
        let before = problems.len();
        for k in obj.keys() {
            if !KNOWN_FIELDS.contains(&k.as_str()) {
                let hint = match crate::config::envfile::did_you_mean(k, KNOWN_FIELDS.into_iter()) {
                    Some(s) => format!("did you mean \"{s}\"?"),
                    None => "frappe_docker's format knows only \"url\" and \"branch\"".into(),
                };
                problems.push(
                    Problem::new(
                        display,
                        "unknown-field",
                        match field_name_shown(k) {
                            Some(k) => format!("unknown field \"{k}\""),
                            None => "an unknown field (its name is not shown)".to_string(),
                        },
                    )
                    .entry(&label)
                    .hint(hint),
                );
            }
        }
        for field in KNOWN_FIELDS {
            match obj.get(field) {
                // bench clones the default branch then: valid, but see [`warnings`].
                None if field == "branch" => {}
                None => problems.push(
                    Problem::new(display, "missing-field", format!("\"{field}\" is missing"))
                        .entry(&label)
                        .hint("give the git URL of the app"),
                ),
                Some(v) if !v.is_string() => problems.push(
                    Problem::new(
                        display,
                        "bad-field",
                        format!("\"{field}\" must be a string"),
                    )
                    .entry(&label),
                ),
                Some(v) if v.as_str().is_some_and(|s| s.trim().is_empty()) => problems.push(
                    Problem::new(display, "empty-field", format!("\"{field}\" is empty"))
                        .entry(&label),
                ),
                _ => {}
            }
        }
        if !url.is_empty() {
            if let Err(msg) = placeholders(url) {
                problems.push(Problem::new(display, "bad-placeholder", msg).entry(&label));
            } else if let Some(what) = literal_credential(url) {
                // Neither the URL nor the credential is quoted: it is a token.
                problems.push(Problem::new(display, "literal-credential", format!("\"url\" holds a literal {what} (not shown): only the values of @secret keys are masked in output and logs and kept out of files"))
                    .entry(&label)
                    .hint("move it to a `# @secret` key of the example file, set it in .env, and write the URL as https://${KEY}@host/org/app.git (or https://x-access-token:${KEY}@host/...)"));
            } else if let Some(why) = url_problem(url) {
                problems.push(Problem::new(display, "bad-url", format!("\"url\" is not a git URL bench can clone: it {why}")).entry(&label)
                    .hint("use https://host/org/app.git (credentials as ${TOKEN}@), ssh://, git:// or git@host:org/app.git; bench clones inside the build, where local paths and file:// do not exist"));
            }
        }
        // Compared by the directory bench installs into: `india-compliance`
        // and `india_compliance` would both land in apps/india_compliance.
        let dir = package_dir(&name);
        if let Some((prev_name, prev)) = seen
            .iter()
            .find(|(n, _)| package_dir(n) == dir && name != "?")
        {
            let message = if *prev_name == name {
                format!("app {name} is listed twice (also entry #{prev})")
            } else {
                format!("app {name} installs into apps/{dir}, as {prev_name} of entry #{prev} does")
            };
            problems.push(
                Problem::new(display, "duplicate-app", message)
                    .entry(&label)
                    .hint("bench installs each app once: keep one entry"),
            );
        }
        seen.push((name.clone(), index));
        if problems.len() == before {
            apps.push(App {
                name,
                url_template: url.to_string(),
                branch: obj
                    .get("branch")
                    .and_then(|v| v.as_str())
                    .map(|b| b.trim().to_string()),
                index,
            });
        }
    }
    (apps, problems)
}

/// What does not stop a build but should be known: an app without a
/// `"branch"` follows whatever its default branch is at when built.
pub fn warnings(display: &str, apps: &[App]) -> Vec<Problem> {
    apps.iter()
        .filter(|a| a.branch.is_none())
        .map(|a| {
            Problem::new(
                display,
                "no-branch",
                format!("no \"branch\": bench clones the default branch of {}, so each build follows wherever that branch has moved", a.name),
            )
            .entry(a.label())
            .hint("pin a release tag (e.g. \"branch\": \"v15.17.0\") or at least a branch, so that a rebuild gives the same app")
        })
        .collect()
}

/// `${KEY}` placeholders removed: what is written literally.
fn literal_part(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        match rest[i..].find('}') {
            Some(end) => rest = &rest[i + end + 1..],
            None => return out + &rest[i..],
        }
    }
    out + rest
}

/// Whether a URL's userinfo holds a credential written out rather than a
/// `${KEY}` placeholder; what it is, never its value. A password must be
/// placeholders only. A user alone counts for http(s) and git, where a lone
/// `https://TOKEN@host` is sent as user and password; for ssh it is the
/// login name (`ssh://git@host`). `user@host:path` has no password.
pub fn literal_credential(url: &str) -> Option<&'static str> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    let userinfo = &authority[..authority.rfind('@')?];
    match userinfo.split_once(':') {
        Some((_, password)) => (!literal_part(password).is_empty()).then_some("password"),
        None => (scheme != "ssh" && !literal_part(userinfo).is_empty()).then_some("credential"),
    }
}

fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// A URL bench can clone inside the build: https, http, ssh or git with a
/// host and a path, or scp-like `user@host:path`. Local paths and `file://`
/// name the host's disk, which the build does not see.
pub fn url_shape_ok(url: &str) -> bool {
    url_problem(url).is_none()
}

/// What is wrong with a URL, without quoting it (it may hold a token).
pub fn url_problem(url: &str) -> Option<String> {
    if let Some(i) = url
        .chars()
        .position(|c| c.is_whitespace() || c.is_control())
    {
        return Some(format!(
            "has a blank or control character at column {}",
            i + 1
        ));
    }
    if let Some((scheme, _)) = url.split_once("://") {
        if !matches!(scheme, "https" | "http" | "ssh" | "git") {
            let shown = scheme.len() <= 10
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+.-".contains(c));
            return Some(if shown {
                format!("`{scheme}://` is not a scheme bench clones (https, http, ssh, git)")
            } else {
                "the scheme is not one bench clones (https, http, ssh, git)".into()
            });
        }
        let clean = strip_userinfo(url);
        let rest = clean.split_once("://").map(|(_, r)| r).unwrap_or("");
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        if host.is_empty() {
            return Some("has no host".into());
        }
        if path.trim_matches('/').is_empty() {
            return Some("names no repository (nothing after the host)".into());
        }
        return None;
    }
    // scp-like: git@github.com:org/app.git
    let scp = url.split_once('@').and_then(|(user, rest)| {
        let (host, path) = rest.split_once(':')?;
        (!user.is_empty()
            && !user.contains('/')
            && !host.is_empty()
            && !host.contains('/')
            && !path.is_empty())
        .then_some(())
    });
    match scp {
        Some(()) => None,
        None => Some(
            "is neither scheme://host/path nor user@host:path (a local path is not cloned inside the build)"
                .into(),
        ),
    }
}

/// Check placeholders against the env: each must name a secret key with a
/// usable value. Values are never printed; a bad character is named instead.
pub fn check_placeholders(
    display: &str,
    apps: &[App],
    env: &EnvValues,
    env_display: &str,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    for app in apps {
        for name in app.placeholders() {
            if env.declares_secret(&name) && !env.is_secret(&name) {
                // Declared but missing: the env check reports it, once.
                continue;
            }
            if env.secret(&name).is_some() || env.get(&name).is_some() || env.is_secret(&name) {
                if !env.is_secret(&name) {
                    problems.push(Problem::new(display, "placeholder-not-secret", format!("${{{name}}} names {name}, which is not marked secret"))
                        .entry(app.label())
                        .hint(format!("mark {name} with `# @secret` in the example file so it is never printed or stored")));
                    continue;
                }
                let Some(secret) = env.secret(&name) else {
                    continue;
                }; // empty: reported by the env check
                if let Some(c) = secret.expose().chars().find(|c| breaks_userinfo(*c)) {
                    let what = match c {
                        c if c.is_whitespace() => "whitespace".to_string(),
                        c if c.is_control() => "a control character".to_string(),
                        c => format!("'{c}'"),
                    };
                    let mut p = Problem::new(
                        env_display,
                        "secret-breaks-url",
                        format!(
                            "the value of {name} contains {what}, which would break the URL of {}",
                            app.name
                        ),
                    )
                    .key(&name);
                    if let Some(crate::config::envfile::Source::File { line }) = env.source(&name) {
                        p = p.line(*line);
                    }
                    problems.push(p
                        .hint("check the token was pasted whole; if the character is real, percent-encode it (e.g. @ as %40)"));
                }
            } else {
                let declared: Vec<String> = env.entries().map(|(k, _)| k.clone()).collect();
                let shown = crate::config::envfile::parse::shown_key(&name, &declared)
                    .map(|n| format!("${{{n}}}"))
                    .unwrap_or_else(|| "a `${...}` placeholder".into());
                problems.push(Problem::new(display, "unknown-placeholder", format!("{shown} does not name a key of the env"))
                    .entry(app.label())
                    .hint(match crate::config::envfile::did_you_mean(&name, env.entries().map(|(k, _)| k.as_str())) {
                        Some(s) => format!("did you mean ${{{s}}}?"),
                        None => match crate::config::envfile::parse::shown_key(&name, &declared) {
                            Some(n) => format!("declare {n} as `# @secret` in the example file and set it in .env"),
                            None => "a placeholder names a `# @secret` key of the example file, in UPPER_CASE".into(),
                        },
                    }));
            }
        }
    }
    // One report per secret is enough even when several apps use it.
    problems.dedup_by(|a, b| a.code == "secret-breaks-url" && a.code == b.code && a.key == b.key);
    problems
}

/// An app with its URL filled in: only the build and `--online` see this.
pub struct InjectedApp<'a> {
    pub app: &'a App,
    pub url: Secret,
}

pub fn inject_url(app: &App, env: &EnvValues) -> Secret {
    // Built in a buffer that zeroes what it leaves behind: no plain copy of
    // the token stays in freed memory.
    let mut url = crate::secret::ZeroBuf::with_capacity(app.url_template.len() + 128);
    let mut rest = app.url_template.as_str();
    while let Some(i) = rest.find("${") {
        let Some(end) = rest[i..].find('}').map(|e| i + e) else {
            break;
        };
        url.push(&rest.as_bytes()[..i]);
        if let Some(v) = env.secret(&rest[i + 2..end]) {
            url.push(v.expose().as_bytes());
        }
        rest = &rest[end + 1..];
    }
    url.push(rest.as_bytes());
    url.into_secret()
}

/// The apps.json BuildKit receives: tokens filled in, in memory only.
pub fn inject(apps: &[App], env: &EnvValues) -> Secret {
    #[derive(serde::Serialize)]
    struct Entry<'a> {
        url: &'a str,
        // Left out, not null, as it was written: bench clones the default branch.
        #[serde(skip_serializing_if = "Option::is_none")]
        branch: Option<&'a str>,
    }
    let urls: Vec<Secret> = apps.iter().map(|a| inject_url(a, env)).collect();
    let list: Vec<Entry> = apps
        .iter()
        .zip(&urls)
        .map(|(a, u)| Entry {
            url: u.expose(),
            branch: a.branch.as_deref(),
        })
        .collect();
    let mut out = crate::secret::ZeroBuf::with_capacity(1024);
    let _ = serde_json::to_writer(&mut out, &list);
    out.into_secret()
}

/// The redacted apps.json (credentials removed): what manifests hash and show.
pub fn redacted_json(apps: &[App]) -> String {
    let list: Vec<serde_json::Value> = apps
        .iter()
        .map(|a| match &a.branch {
            Some(b) => serde_json::json!({"url": a.public_url(), "branch": b}),
            None => serde_json::json!({"url": a.public_url()}),
        })
        .collect();
    serde_json::to_string_pretty(&list).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::envfile::{schema::Schema, validate, EnvInput};
    use std::path::Path;

    const GOOD: &str = r#"[
      {"url": "https://github.com/frappe/erpnext", "branch": "version-15"},
      {"url": "https://${TOK}@github.com/org/de_macrs.git", "branch": "v0.0.4"}
    ]"#;

    fn env(tok: &str) -> EnvValues {
        let (schema, _) = Schema::from_example("ex", "# @secret\nTOK=<t>\nPLAIN=x\n");
        let text = format!("TOK={tok}\nPLAIN=y\n");
        let none = |_: &str| None;
        validate(
            &schema,
            &EnvInput {
                file: Some((".env", &text)),
                lookup_env: &none,
                project_dir: Path::new("/"),
            },
        )
        .0
    }

    #[test]
    fn parses_and_names_apps() {
        let (apps, p) = parse("apps.json", GOOD);
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(apps[1].name, "de_macrs");
        assert_eq!(apps[1].public_url(), "https://github.com/org/de_macrs.git");
        assert_eq!(apps[1].placeholders(), vec!["TOK"]);
        assert_eq!(app_name("git@github.com:org/hrms.git"), "hrms");
        assert_eq!(
            app_name("https:///tok3n-value@h"),
            "h",
            "no token in a label"
        );
    }

    #[test]
    fn injection_fills_tokens_in_memory_only() {
        let (apps, _) = parse("apps.json", GOOD);
        let e = env("canary-inject-9");
        assert!(check_placeholders("apps.json", &apps, &e, ".env").is_empty());
        let injected = inject(&apps, &e);
        assert!(injected
            .expose()
            .contains("https://canary-inject-9@github.com/org/de_macrs.git"));
        assert!(!redacted_json(&apps).contains("canary-inject-9"));
        assert!(!format!("{injected} {injected:?}").contains("canary"));
    }

    #[test]
    fn bad_tokens_and_placeholders_are_reported_without_the_value() {
        let (apps, _) = parse("apps.json", GOOD);
        let p = check_placeholders("apps.json", &apps, &env("bad@canary-x"), ".env");
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].code, "secret-breaks-url");
        assert!(!format!("{p:?}").contains("canary"));
        let (apps, _) = parse(
            "apps.json",
            r#"[{"url":"https://${NOPE}@h/o/a.git","branch":"b"}]"#,
        );
        let p = check_placeholders("apps.json", &apps, &env("fine-token"), ".env");
        assert_eq!(p[0].code, "unknown-placeholder");
        let p = check_placeholders(
            "apps.json",
            &parse(
                "apps.json",
                r#"[{"url":"https://${PLAIN}@h/o/a.git","branch":"b"}]"#,
            )
            .0,
            &env("t0ken"),
            ".env",
        );
        assert_eq!(p[0].code, "placeholder-not-secret");
    }

    #[test]
    fn a_declared_secret_that_is_missing_is_reported_once_by_the_env_check() {
        let (schema, _) = Schema::from_example("ex", "# @secret\nTOK=<t>\nPLAIN=x\n");
        let none = |_: &str| None;
        let (e, env_problems) = validate(
            &schema,
            &EnvInput {
                file: Some((".env", "PLAIN=y\n")),
                lookup_env: &none,
                project_dir: Path::new("/"),
            },
        );
        assert_eq!(env_problems[0].code, "missing-key");
        let (apps, _) = parse("apps.json", GOOD);
        assert!(check_placeholders("apps.json", &apps, &e, ".env").is_empty());
    }

    #[test]
    fn structural_problems_point_at_entries() {
        let (_, p) = parse(
            "apps.json",
            r#"[{"url":"https://h/o/a.git","brnch":"x"},{"url":"https://h/o/a","branch":"y"}, 3]"#,
        );
        let got: Vec<_> = p
            .iter()
            .map(|p| (p.entry.clone().unwrap_or_default(), p.code))
            .collect();
        assert_eq!(
            got,
            vec![
                ("#1 (a)".to_string(), "unknown-field"),
                ("#2 (a)".to_string(), "duplicate-app"),
                ("#3".to_string(), "bad-entry"),
            ]
        );
        assert_eq!(p[0].hint.as_deref(), Some("did you mean \"branch\"?"));
        let (_, p) = parse("apps.json", "[{\"url\": \"x\"");
        assert_eq!(p[0].code, "bad-json");
        assert!(p[0].message.contains("truncated"));
    }

    #[test]
    fn an_app_without_branch_is_valid_with_a_warning_and_asks_for_head() {
        let text = r#"[{"url": "https://github.com/frappe/erpnext"},
                       {"url": "https://github.com/frappe/hrms", "branch": "v15.13.1"}]"#;
        let (apps, p) = parse("apps.json", text);
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(apps[0].branch, None);
        assert_eq!(apps[0].git_ref(), "HEAD");
        assert_eq!(apps[1].git_ref(), "v15.13.1");
        let w = warnings("apps.json", &apps);
        assert_eq!(w.len(), 1, "only the app without a branch: {w:?}");
        assert_eq!(w[0].code, "no-branch");
        assert_eq!(w[0].entry.as_deref(), Some("#1 (erpnext)"));
        assert!(w[0].message.contains("default branch"));
        assert!(w[0].hint.as_deref().unwrap().contains("pin"));
        // bench reads the entry as written: no "branch" key, not "" or null.
        let e = env("t0ken-x");
        let injected: serde_json::Value = serde_json::from_str(inject(&apps, &e).expose()).unwrap();
        assert_eq!(
            injected[0],
            serde_json::json!({"url": "https://github.com/frappe/erpnext"})
        );
        assert_eq!(injected[1]["branch"], "v15.13.1");
        assert!(!redacted_json(&apps).contains("null"));
        // An empty branch is still a mistake, not "the default branch".
        let (_, p) = parse(
            "apps.json",
            r#"[{"url": "https://github.com/frappe/erpnext", "branch": " "}]"#,
        );
        assert_eq!(p[0].code, "empty-field");
    }

    #[test]
    fn an_empty_list_is_a_frappe_only_image() {
        let (apps, p) = parse("apps.json", "[]");
        assert!(apps.is_empty());
        assert!(p.is_empty(), "{p:?}");
        assert!(warnings("apps.json", &apps).is_empty());
        assert_eq!(redacted_json(&apps), "[]");
    }

    #[test]
    fn literal_credentials_are_refused_without_their_value() {
        let token = "canary_Literal5150DoNotLeak";
        for url in [
            format!("https://{token}@github.com/o/a.git"),
            format!("https://user:{token}@host/o/a.git"),
            format!("https://x-access-token:{token}@github.com/o/a.git"),
            format!("https://${{TOK}}:{token}@github.com/o/a.git"),
            format!("http://{token}@host/o/a.git"),
            format!("ssh://git:{token}@host/o/a.git"),
            format!("https://${{TOK}}{token}@github.com/o/a.git"),
        ] {
            let text = serde_json::json!([{"url": url, "branch": "v1"}]).to_string();
            let (apps, p) = parse("apps.json", &text);
            assert!(apps.is_empty(), "{url}");
            assert_eq!(
                p.iter().map(|p| p.code).collect::<Vec<_>>(),
                vec!["literal-credential"],
                "{url}"
            );
            let shown = serde_json::to_string(&p).unwrap();
            assert!(!shown.contains("Literal5150"), "{shown}");
            assert!(p[0].hint.as_deref().unwrap().contains("${KEY}"));
        }
        for ok in [
            "https://${TOK}@github.com/o/a.git",
            "https://x-access-token:${TOK}@github.com/o/a.git",
            "https://oauth2:${TOK}@gitlab.com/o/a.git",
            "https://${USER}:${TOK}@host/o/a.git",
            "ssh://git@github.com/o/a.git",
            "git@github.com:o/a.git",
            "https://github.com/o/a.git",
            "https://github.com/o/a@b.git",
        ] {
            assert_eq!(literal_credential(ok), None, "{ok}");
        }
    }

    #[test]
    fn apps_are_looked_for_under_their_package_name() {
        let (apps, p) = parse(
            "apps.json",
            r#"[{"url": "https://github.com/resilient-tech/india-compliance.git", "branch": "v15"}]"#,
        );
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(apps[0].name, "india-compliance");
        assert_eq!(apps[0].package_dir(), "india_compliance");
        assert_eq!(package_dir("erpnext"), "erpnext");
        // Both would land in apps/india_compliance.
        let (_, p) = parse(
            "apps.json",
            r#"[{"url": "https://h/o/india-compliance", "branch": "a"},
                {"url": "https://h/x/india_compliance", "branch": "b"}]"#,
        );
        assert_eq!(p[0].code, "duplicate-app");
        assert!(
            p[0].message.contains("installs into apps/india_compliance"),
            "{}",
            p[0].message
        );
    }

    #[test]
    fn strip_userinfo_removes_credentials() {
        assert_eq!(strip_userinfo("https://a:b@h/x"), "https://h/x");
        assert_eq!(strip_userinfo("https://h/x@y"), "https://h/x@y");
        assert_eq!(strip_userinfo("/local/path"), "/local/path");
    }
}
