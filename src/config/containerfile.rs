//! The Containerfile as de-build's build needs it: the apps_json secret and
//! `CACHE_BUST` (see [`containerfile_problems`]), and the `ARG`s it declares,
//! which are the build-args a build may pass ([`resolve_build_args`]).

use crate::config::envfile::{self, EnvValues};
use crate::error::Problem;
use std::collections::BTreeMap;

/// The build-arg de-build sets itself (the hash of the app commits).
pub const RESERVED_ARG: &str = "CACHE_BUST";

/// One name an `ARG` instruction declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDecl {
    pub name: String,
    /// `ARG NAME=default`, unquoted.
    pub default: Option<String>,
    /// 1-based line of the instruction's first line.
    pub line: usize,
}

/// The Containerfile's declared `ARG`s, with the path shown in problems.
#[derive(Debug, Clone, Default)]
pub struct Declared {
    pub shown: String,
    pub args: Vec<ArgDecl>,
}

impl Declared {
    pub fn declares(&self, name: &str) -> bool {
        self.args.iter().any(|a| a.name == name)
    }

    /// Each declared name once, in order of first declaration.
    pub fn names(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for a in &self.args {
            if !out.contains(&a.name.as_str()) {
                out.push(&a.name);
            }
        }
        out
    }
}

/// The `ARG`s of a Containerfile, as BuildKit's Dockerfile frontend reads
/// them: instructions continue over lines ending in the escape character
/// (`\`, or another set by a leading `# escape=` directive), comment lines
/// (also inside a continuation) and heredoc bodies are not instructions,
/// and one `ARG` may declare several names (`ARG A=1 B`).
pub fn declared_args(text: &str) -> Vec<ArgDecl> {
    let lines: Vec<&str> = text.lines().collect();
    let mut escape = '\\';
    // Parser directives: `# key=value` lines before anything else.
    for l in &lines {
        let Some(d) = l.trim().strip_prefix('#') else {
            break;
        };
        match d.split_once('=') {
            Some((k, v)) if k.trim().eq_ignore_ascii_case("escape") => {
                if let Some(c) = v.trim().chars().next() {
                    escape = c;
                }
            }
            Some(_) => {}
            None => break,
        }
    }
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let first = i;
        let mut instruction = String::new();
        // Join the physical lines of one instruction.
        loop {
            let l = lines[i];
            i += 1;
            let t = l.trim();
            if t.starts_with('#') || (t.is_empty() && !instruction.is_empty()) {
                if instruction.is_empty() {
                    break; // a comment of its own
                }
                if i >= lines.len() {
                    break;
                }
                continue; // a comment inside a continuation
            }
            let body = l.trim_end();
            match body.strip_suffix(escape) {
                Some(b) if i < lines.len() => instruction.push_str(b),
                _ => {
                    instruction.push_str(body);
                    break;
                }
            }
        }
        let trimmed = instruction.trim_start();
        let keyword = trimmed.split_whitespace().next().unwrap_or("");
        if keyword.eq_ignore_ascii_case("ARG") {
            for word in words(&trimmed[keyword.len()..]) {
                let (name, default) = match word.split_once('=') {
                    Some((n, d)) => (n.to_string(), Some(d.to_string())),
                    None => (word, None),
                };
                if !name.is_empty() {
                    out.push(ArgDecl {
                        name,
                        default,
                        line: first + 1,
                    });
                }
            }
        } else if let Some(end) = heredoc_end(trimmed) {
            // `RUN <<EOF` ... `EOF`: the body is the command's input.
            while i < lines.len() {
                let l = lines[i];
                i += 1;
                if l.trim_start_matches('\t') == end || l.trim() == end {
                    break;
                }
            }
        }
    }
    out
}

/// Split an instruction's arguments at blanks, honouring '…' and "…" quotes
/// (removed) and backslash escapes inside double quotes.
fn words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            (_, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    out
}

/// The delimiter of the first heredoc an instruction opens (`<<EOF`,
/// `<<-EOF`, `<<"EOF"`), if any.
fn heredoc_end(instruction: &str) -> Option<String> {
    let at = instruction.find("<<")?;
    let rest = instruction[at + 2..].trim_start_matches('-');
    let rest = rest.trim_start_matches(['"', '\'']);
    let word: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    (!word.is_empty()).then_some(word)
}

/// `ARG`s that name a `@secret` key of the schema: such a value would become
/// a build-arg, which `docker history` and the manifest keep.
pub fn secret_arg_problems(declared: &Declared, env: &EnvValues) -> Vec<Problem> {
    let mut seen: Vec<&str> = Vec::new();
    let mut problems = Vec::new();
    for a in &declared.args {
        if env.declares_secret(&a.name) && !seen.contains(&a.name.as_str()) {
            seen.push(&a.name);
            problems.push(
                Problem::new(
                    &declared.shown,
                    "secret-build-arg",
                    format!(
                        "ARG {} names a @secret key; secrets reach the build only as the BuildKit secret apps_json, never as a build-arg (`docker history` keeps those)",
                        a.name
                    ),
                )
                .line(a.line)
                .key(&a.name)
                .hint("rename the ARG; or, if its value is no credential, drop @secret from the key in the example file"),
            );
        }
    }
    problems
}

/// The build-args a build passes besides `CACHE_BUST`: every non-secret key
/// of the env that the Containerfile declares as an `ARG`, then each
/// `--build-arg KEY=VALUE` (later ones win, as with `docker build`). A key the
/// Containerfile does not declare, `CACHE_BUST`, and a value holding a
/// secret's value are problems; a value is never quoted in one.
pub fn resolve_build_args(
    declared: &Declared,
    env: &EnvValues,
    env_shown: &str,
    cli: &[String],
) -> (BTreeMap<String, String>, Vec<Problem>) {
    let mut args = BTreeMap::new();
    let mut problems = Vec::new();
    for name in declared.names() {
        // A @secret key is refused by `secret_arg_problems`, once, at load.
        if name != RESERVED_ARG {
            if let Some(v) = env.get(name) {
                args.insert(name.to_string(), v.to_string());
            }
        }
    }
    // What a user may pass: CACHE_BUST is de-build's.
    let names: Vec<&str> = declared
        .names()
        .into_iter()
        .filter(|n| *n != RESERVED_ARG)
        .collect();
    let listed = if names.is_empty() {
        "it declares none".to_string()
    } else {
        format!("it declares {}", names.join(", "))
    };
    let shown_keys: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    for (i, raw) in cli.iter().enumerate() {
        let p = |code, msg: String| Problem::new("--build-arg", code, msg);
        let Some((key, value)) = raw.split_once('=') else {
            problems.push(
                p(
                    "bad-build-arg",
                    format!("--build-arg #{} is not KEY=VALUE (not shown)", i + 1),
                )
                .hint("write --build-arg NAME=value; a name alone (docker's form that reads the environment) is not taken"),
            );
            continue;
        };
        let Some(shown) = envfile::parse::shown_key(key, &shown_keys) else {
            problems.push(
                p(
                    "bad-build-arg",
                    format!(
                        "--build-arg #{}: the name before `=` is not an ARG name (not shown)",
                        i + 1
                    ),
                )
                .hint(format!(
                    "a build-arg names an ARG of {}: {listed}",
                    declared.shown
                )),
            );
            continue;
        };
        if key == RESERVED_ARG {
            problems.push(
                p("reserved-build-arg", format!("{RESERVED_ARG} is set by de-build"))
                    .key(key)
                    .hint("it is the hash of the resolved app commits, so that moved apps rebuild; leave it out"),
            );
            continue;
        }
        if !declared.declares(key) {
            let hint = match envfile::did_you_mean(key, names.iter().copied()) {
                Some(s) => format!("did you mean {s}? ({listed})"),
                None => format!("{listed}; BuildKit ignores a build-arg no ARG takes"),
            };
            problems.push(
                p(
                    "undeclared-build-arg",
                    format!("{shown} is not an ARG of {}", declared.shown),
                )
                .key(key)
                .hint(hint),
            );
            continue;
        }
        args.insert(key.to_string(), value.to_string());
    }
    // Build-args are stored in the image's history and in the manifest.
    for (key, value) in &args {
        if let Some(secret_key) = holds_secret(value, env) {
            let from_cli = cli
                .iter()
                .rev()
                .any(|r| r.split_once('=').is_some_and(|(k, _)| k == key));
            let file = if from_cli { "--build-arg" } else { env_shown };
            problems.push(
                Problem::new(
                    file,
                    "secret-in-build-arg",
                    format!("the value of build-arg {key} holds the value of the secret {secret_key}"),
                )
                .key(key)
                .hint("build-args are kept in `docker history` and the manifest; secrets reach the build only as the BuildKit secret apps_json"),
            );
        }
    }
    (args, problems)
}

/// The secret key whose value (as written, percent-encoded or JSON-escaped)
/// `value` contains.
fn holds_secret<'a>(value: &str, env: &'a EnvValues) -> Option<&'a str> {
    env.entries().find_map(|(k, v)| {
        let envfile::Text::Secret(s) = &v.text else {
            return None;
        };
        // As short as the redactor goes: shorter would match by chance.
        (s.expose().len() >= 4
            && crate::ui::output::redact::forms(s.expose())
                .iter()
                .any(|f| value.contains(f.as_str())))
        .then_some(k.as_str())
    })
}

/// What de-build's build needs from a Containerfile: apps.json arrives only as
/// the secret `apps_json`, and BuildKit does not key its cache on secret
/// values, so a `CACHE_BUST` build-arg must be in scope of that step.
pub fn containerfile_problems(shown: &str, text: &str) -> Vec<Problem> {
    let mut problems = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    let mount = lines
        .iter()
        .position(|l| l.contains("--mount=type=secret") && l.contains("id=apps_json"));
    let Some(mount) = mount else {
        // frappe_docker's Containerfiles before the secret read apps.json from
        // a base64 build-arg, which `docker history` keeps.
        let legacy = lines.iter().position(|l| l.contains("APPS_JSON_BASE64"));
        let mut p = Problem::new(
            shown,
            "no-apps-secret",
            "no RUN mounts the BuildKit secret apps_json",
        );
        p = match legacy {
            Some(i) => p.line(i + 1).hint("this Containerfile reads APPS_JSON_BASE64, a build-arg that leaks the token into `docker history`; frappe_docker moved apps.json to the BuildKit secret `apps_json`: take its current images/custom/Containerfile (`RUN --mount=type=secret,id=apps_json,target=/opt/frappe/apps.json ...`)"),
            None => p.hint("de-build hands apps.json to the build only as `RUN --mount=type=secret,id=apps_json,...`"),
        };
        problems.push(p);
        return problems;
    };
    let arg = lines[..mount]
        .iter()
        .rposition(|l| l.trim_start().starts_with("ARG CACHE_BUST"));
    let from = lines[..mount]
        .iter()
        .rposition(|l| l.trim_start().to_ascii_uppercase().starts_with("FROM "));
    if arg.is_none() || from > arg {
        problems.push(
            Problem::new(shown, "no-cache-bust", "the step that mounts apps_json has no `ARG CACHE_BUST` in scope")
                .line(mount + 1)
                .hint("add `ARG CACHE_BUST` in the same stage before that RUN: BuildKit ignores secret contents when caching, so changed apps would not rebuild"),
        );
    }
    if lines.first().is_some_and(|l| {
        l.trim_start().starts_with('#') && l.to_ascii_lowercase().contains("syntax=")
    }) {
        problems.push(
            Problem::new(
                shown,
                "syntax-line",
                "a `# syntax=` line makes BuildKit pull a frontend image",
            )
            .line(1)
            .hint("remove it: the built-in Dockerfile frontend handles --mount=type=secret"),
        );
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::envfile::{schema::Schema, validate, EnvInput};
    use std::path::Path;

    fn names(text: &str) -> Vec<(String, Option<String>, usize)> {
        declared_args(text)
            .into_iter()
            .map(|a| (a.name, a.default, a.line))
            .collect()
    }

    fn arg(name: &str, default: Option<&str>, line: usize) -> (String, Option<String>, usize) {
        (name.into(), default.map(str::to_string), line)
    }

    #[test]
    fn args_are_read_as_buildkit_reads_them() {
        let text = "ARG PYTHON_VERSION=3.11.6\n\
                    FROM python:${PYTHON_VERSION} AS base\n\
                    # ARG COMMENTED=1\n\
                    arg lower=\"a b\" BARE\n\
                    ARG WKHTMLTOPDF_VERSION=0.12.6.1-3 \\\n\
                    # a comment inside the continuation\n\
                    \x20   WKHTMLTOPDF_DISTRO='bookworm'\n\
                    RUN echo ARG NOT_ONE=1 \\\n\
                    \x20   && true\n\
                    RUN <<EOF\n\
                    ARG IN_HEREDOC=1\n\
                    EOF\n\
                    ARG CACHE_BUST\n";
        assert_eq!(
            names(text),
            vec![
                arg("PYTHON_VERSION", Some("3.11.6"), 1),
                arg("lower", Some("a b"), 4),
                arg("BARE", None, 4),
                arg("WKHTMLTOPDF_VERSION", Some("0.12.6.1-3"), 5),
                arg("WKHTMLTOPDF_DISTRO", Some("bookworm"), 5),
                arg("CACHE_BUST", None, 13),
            ]
        );
        // `# escape=`` (Windows style): the backtick continues a line.
        assert_eq!(
            names("# escape=`\nARG A=1 `\n  B\nARG C=x\\\n"),
            vec![
                arg("A", Some("1"), 2),
                arg("B", None, 2),
                arg("C", Some("x\\"), 4)
            ]
        );
        let repo = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("images/custom/Containerfile"),
        )
        .unwrap();
        let d = Declared {
            shown: "cf".into(),
            args: declared_args(&repo),
        };
        for want in [
            "PYTHON_VERSION",
            "DEBIAN_BASE",
            "NODE_VERSION",
            "WKHTMLTOPDF_VERSION",
            "FRAPPE_BRANCH",
            "FRAPPE_PATH",
            "CACHE_BUST",
        ] {
            assert!(d.declares(want), "{want} in {:?}", d.names());
        }
    }

    fn env(text: &str) -> EnvValues {
        let (schema, p) = Schema::from_example(
            "ex",
            "FRAPPE_BRANCH=version-15\nNODE_VERSION=18.18.2\nDE_IMAGE=x\n# @secret\nTOK=<t>\n# @secret @optional\nDB_PASSWORD=\n",
        );
        assert!(p.is_empty(), "{p:?}");
        let none = |_: &str| None;
        validate(
            &schema,
            &EnvInput {
                file: Some((".env", text)),
                lookup_env: &none,
                project_dir: Path::new("/"),
            },
        )
        .0
    }

    fn declared(text: &str) -> Declared {
        Declared {
            shown: "Containerfile".into(),
            args: declared_args(text),
        }
    }

    #[test]
    fn build_args_come_from_declared_env_keys_and_the_command_line() {
        let e = env(
            "FRAPPE_BRANCH=version-14\nNODE_VERSION=20.1.0\nDE_IMAGE=x\nTOK=canary-buildarg-77\n",
        );
        let d = declared("FROM scratch\nARG FRAPPE_BRANCH=version-15\nARG DEBIAN_BASE=bookworm\nARG INSTALL_CHROMIUM\nARG CACHE_BUST\n");
        let cli = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (args, p) = resolve_build_args(&d, &e, ".env", &[]);
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(
            args,
            BTreeMap::from([("FRAPPE_BRANCH".to_string(), "version-14".to_string())]),
            "NODE_VERSION and DE_IMAGE are no ARGs of this file"
        );
        let (args, p) = resolve_build_args(
            &d,
            &e,
            ".env",
            &cli(&[
                "DEBIAN_BASE=trixie",
                "FRAPPE_BRANCH=develop",
                "INSTALL_CHROMIUM=",
                "DEBIAN_BASE=bookworm",
            ]),
        );
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(args["FRAPPE_BRANCH"], "develop", "the command line wins");
        assert_eq!(args["DEBIAN_BASE"], "bookworm", "the last one wins");
        assert_eq!(args["INSTALL_CHROMIUM"], "");

        let (_, p) = resolve_build_args(
            &d,
            &e,
            ".env",
            &cli(&[
                "DEBIAN_BAS=x",
                "NOPE=1",
                "CACHE_BUST=1",
                "just-a-word",
                "canary_pastedtoken=1",
                "INSTALL_CHROMIUM=pre-canary-buildarg-77-post",
            ]),
        );
        let codes: Vec<_> = p.iter().map(|p| (p.code, p.key.clone())).collect();
        assert_eq!(
            codes,
            vec![
                ("undeclared-build-arg", Some("DEBIAN_BAS".into())),
                ("undeclared-build-arg", Some("NOPE".into())),
                ("reserved-build-arg", Some("CACHE_BUST".into())),
                ("bad-build-arg", None),
                ("bad-build-arg", None),
                ("secret-in-build-arg", Some("INSTALL_CHROMIUM".into())),
            ]
        );
        assert_eq!(
            p[0].hint.as_deref().unwrap(),
            "did you mean DEBIAN_BASE? (it declares FRAPPE_BRANCH, DEBIAN_BASE, INSTALL_CHROMIUM)"
        );
        assert!(p[1]
            .hint
            .as_deref()
            .unwrap()
            .contains("it declares FRAPPE_BRANCH, DEBIAN_BASE"));
        assert!(p[5].message.contains("the secret TOK"));
        let shown = serde_json::to_string(&p).unwrap();
        for leak in ["canary-buildarg", "canary_pasted", "just-a-word"] {
            assert!(!shown.contains(leak), "{leak} in {shown}");
        }
    }

    #[test]
    fn an_arg_named_like_a_secret_key_is_refused() {
        let e = env("FRAPPE_BRANCH=v\nNODE_VERSION=1.0.0\nDE_IMAGE=x\nTOK=canary-arg-secret\n");
        let d = declared("FROM scratch\nARG DB_PASSWORD\nARG FRAPPE_BRANCH\nARG TOK=x\nARG TOK\n");
        let p = secret_arg_problems(&d, &e);
        let got: Vec<_> = p.iter().map(|p| (p.key.clone().unwrap(), p.line)).collect();
        assert_eq!(
            got,
            vec![
                ("DB_PASSWORD".to_string(), Some(2)),
                ("TOK".to_string(), Some(4))
            ],
            "set or not, once per key"
        );
        assert!(p[0]
            .message
            .contains("only as the BuildKit secret apps_json"));
        // And it never becomes a build-arg from .env.
        let (args, _) = resolve_build_args(&d, &e, ".env", &[]);
        assert!(!args.contains_key("TOK"), "{args:?}");
    }

    #[test]
    fn containerfile_needs_the_secret_and_a_cache_bust_in_scope() {
        let good = "FROM scratch\nARG CACHE_BUST\nRUN --mount=type=secret,id=apps_json true\n";
        assert!(containerfile_problems("cf", good).is_empty());
        let codes = |t: &str| {
            containerfile_problems("cf", t)
                .iter()
                .map(|p| p.code)
                .collect::<Vec<_>>()
        };
        assert_eq!(codes("FROM scratch\nRUN true\n"), vec!["no-apps-secret"]);
        let old = containerfile_problems(
            "cf",
            "FROM scratch\nARG APPS_JSON_BASE64\nRUN echo ${APPS_JSON_BASE64} | base64 -d\n",
        );
        assert_eq!(old[0].line, Some(2));
        assert!(old[0]
            .hint
            .as_deref()
            .unwrap()
            .contains("moved apps.json to the BuildKit secret"));
        assert_eq!(
            codes("FROM scratch\nRUN --mount=type=secret,id=apps_json true\n"),
            vec!["no-cache-bust"]
        );
        assert_eq!(
            codes("ARG CACHE_BUST\nFROM scratch\nRUN --mount=type=secret,id=apps_json true\n"),
            vec!["no-cache-bust"],
            "an ARG before FROM is out of scope"
        );
        assert_eq!(codes("# syntax=docker/dockerfile:1\nFROM scratch\nARG CACHE_BUST\nRUN --mount=type=secret,id=apps_json true\n"), vec!["syntax-line"]);
    }
}
