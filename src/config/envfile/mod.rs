//! `.env` files: parsing, the schema from the example file, and validation.
//!
//! Values come from two sources. **The process environment wins over the
//! `.env` file** for keys the schema declares (as with docker compose), so a
//! CI job can run with no `.env` at all and a developer can override one key
//! for one run; every value remembers where it came from.

pub mod parse;
pub mod schema;

use crate::error::Problem;
use crate::secret::Secret;
use schema::{Schema, ValueType};
use std::collections::BTreeMap;
use std::path::Path;
use zeroize::Zeroizing;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Source {
    File { line: usize },
    Environment,
    Default,
}

#[derive(Debug, Clone)]
pub enum Text {
    Plain(String),
    Secret(Secret),
}

#[derive(Debug, Clone)]
pub struct Value {
    pub text: Text,
    pub source: Source,
    /// Set when the environment overrode a line of the file.
    pub overrides_line: Option<usize>,
}

/// The checked key/value set a command works from.
#[derive(Debug, Clone, Default)]
pub struct EnvValues {
    values: BTreeMap<String, Value>,
    /// Keys the schema marks `@secret`, set or not.
    secret_keys: std::collections::BTreeSet<String>,
}

impl EnvValues {
    /// A non-secret value. Secret keys return `None`: use [`EnvValues::secret`].
    pub fn get(&self, key: &str) -> Option<&str> {
        match self.values.get(key).map(|v| &v.text) {
            Some(Text::Plain(s)) if !s.is_empty() => Some(s),
            _ => None,
        }
    }

    pub fn secret(&self, key: &str) -> Option<&Secret> {
        match self.values.get(key).map(|v| &v.text) {
            Some(Text::Secret(s)) if !s.is_empty() => Some(s),
            _ => None,
        }
    }

    pub fn source(&self, key: &str) -> Option<&Source> {
        self.values.get(key).map(|v| &v.source)
    }

    /// The schema declares `key` as a secret (whether or not it has a value).
    pub fn declares_secret(&self, key: &str) -> bool {
        self.secret_keys.contains(key)
    }

    pub fn is_secret(&self, key: &str) -> bool {
        matches!(self.values.get(key).map(|v| &v.text), Some(Text::Secret(_)))
    }

    pub fn entries(&self) -> impl Iterator<Item = (&String, &Value)> {
        self.values.iter()
    }

    /// Non-secret keys and values, e.g. for compose's environment and records.
    pub fn public(&self) -> BTreeMap<String, String> {
        self.values
            .iter()
            .filter_map(|(k, v)| match &v.text {
                Text::Plain(s) => Some((k.clone(), s.clone())),
                Text::Secret(_) => None,
            })
            .collect()
    }

    pub fn insert_plain(&mut self, key: &str, value: &str) {
        self.values.insert(
            key.to_string(),
            Value {
                text: Text::Plain(value.to_string()),
                source: Source::Default,
                overrides_line: None,
            },
        );
    }
}

/// Where `.env` values were read from, for [`validate`].
pub struct EnvInput<'a> {
    /// Path as shown to the user, and the file's text; `None` when there is no file.
    pub file: Option<(&'a str, &'a str)>,
    pub lookup_env: &'a dyn Fn(&str) -> Option<String>,
    pub project_dir: &'a Path,
}

/// Check the env against the schema; returns the values and every problem.
pub fn validate(schema: &Schema, input: &EnvInput) -> (EnvValues, Vec<Problem>) {
    let mut problems = Vec::new();
    let display = input.file.map(|f| f.0).unwrap_or(".env");
    let mut from_file: BTreeMap<String, (Zeroizing<String>, usize)> = BTreeMap::new();

    if let Some((display, text)) = input.file {
        let declared: Vec<String> = schema.keys.iter().map(|k| k.name.clone()).collect();
        let parsed = parse::parse_with(text, &declared);
        for i in &parsed.issues {
            let mut p = Problem::new(display, i.code, i.message.clone()).line(i.line);
            p.column = i.column;
            p.key = i.key.clone();
            p.hint = i.hint.clone();
            problems.push(p);
        }
        for e in parsed.entries {
            let shown = parse::shown_key(&e.key, &declared);
            if let Some((_, first)) = from_file.get(&e.key) {
                let mut p = Problem::new(
                    display,
                    "duplicate-key",
                    format!(
                        "{} is set twice (first on line {first})",
                        shown.unwrap_or("a key")
                    ),
                )
                .line(e.line)
                .hint("keep one line: tools disagree on which one wins");
                p.key = shown.map(str::to_string);
                problems.push(p);
                continue;
            }
            if schema.get(&e.key).is_none() {
                let message = match shown {
                    Some(k) => format!("{k} is not declared in the example file"),
                    // A lower-case "key" may be a token that ended in `=`.
                    None => "a key that is not declared in the example file (its name is not shown: it is not in UPPER_CASE and may be a secret)".to_string(),
                };
                let mut p = Problem::new(display, "unknown-key", message).line(e.line);
                p.key = shown.map(str::to_string);
                p.hint = Some(match e.key.as_str() {
                    // frappe_docker's docs put these in .env; de-build sets
                    // them for compose, so a value here would be ignored.
                    "CUSTOM_IMAGE" => "de-build sets CUSTOM_IMAGE from DE_IMAGE: move the value to DE_IMAGE and remove this line".into(),
                    "CUSTOM_TAG" => "de-build sets CUSTOM_TAG to the release it brings up (DE_SITE_VERSION for a build): remove this line".into(),
                    _ => match did_you_mean(&e.key, schema.keys.iter().map(|k| k.name.as_str())) {
                        Some(s) => format!("did you mean {s}?"),
                        None => "remove it, or declare it in the example file if it is new".into(),
                    },
                });
                problems.push(p);
            }
            let key = e.key.clone();
            from_file.insert(key, (e.value.clone(), e.line));
        }
    }

    let mut values = EnvValues {
        values: BTreeMap::new(),
        secret_keys: schema
            .keys
            .iter()
            .filter(|k| k.secret)
            .map(|k| k.name.clone())
            .collect(),
    };
    for spec in &schema.keys {
        let file_val = from_file.get(&spec.name);
        let env_val = (input.lookup_env)(&spec.name);
        let (raw, source, overrides_line) = match (env_val.map(Zeroizing::new), file_val) {
            (Some(v), f) => (v, Source::Environment, f.map(|(_, l)| *l)),
            (None, Some((v, l))) => (v.clone(), Source::File { line: *l }, None),
            (None, None) => {
                if !spec.optional {
                    let mut p =
                        Problem::new(display, "missing-key", format!("{} is missing", spec.name))
                            .key(&spec.name);
                    let doc = if spec.doc.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", spec.doc)
                    };
                    p.hint = Some(if spec.secret {
                        format!(
                            "add `{}=...` to the file or set it in the environment{doc}",
                            spec.name
                        )
                    } else {
                        format!("add a line like `{}={}`{doc}", spec.name, spec.example)
                    });
                    problems.push(p);
                } else if !spec.secret && !spec.example.is_empty() && !spec.example_is_placeholder()
                {
                    values.values.insert(
                        spec.name.clone(),
                        Value {
                            text: Text::Plain(spec.example.clone()),
                            source: Source::Default,
                            overrides_line: None,
                        },
                    );
                }
                continue;
            }
        };
        let at = |p: Problem| match &source {
            Source::File { line } => p.line(*line),
            _ => p,
        };
        let origin = match &source {
            Source::Environment => " (from the environment)".to_string(),
            _ => String::new(),
        };
        let file_for = if source == Source::Environment {
            "environment"
        } else {
            display
        };
        if raw.trim().is_empty() {
            if !spec.optional {
                problems.push(at(Problem::new(
                    file_for,
                    "empty-value",
                    format!("{} is empty{origin}", spec.name),
                )
                .key(&spec.name)
                .hint(if spec.doc.is_empty() {
                    format!("give {} a value", spec.name)
                } else {
                    spec.doc.clone()
                })));
            }
        } else if spec.example_is_placeholder() && *raw == spec.example {
            problems.push(at(Problem::new(
                file_for,
                "placeholder",
                format!(
                    "{} still has the example's placeholder value{origin}",
                    spec.name
                ),
            )
            .key(&spec.name)
            .hint("replace it with the real value")));
        } else if let Err(msg) = check_type(spec.ty, &raw, input.project_dir) {
            let shown = if spec.secret {
                String::new()
            } else {
                format!(" `{}`", crate::ui::output::fit(&raw, 60))
            };
            problems.push(at(Problem::new(
                file_for,
                "bad-type",
                format!("{}{shown}: {msg}{origin}", spec.name),
            )
            .key(&spec.name)));
        }
        let text = if spec.secret {
            Text::Secret(Secret::new(raw.as_str()))
        } else {
            Text::Plain(raw.to_string())
        };
        values.values.insert(
            spec.name.clone(),
            Value {
                text,
                source,
                overrides_line,
            },
        );
    }
    (values, problems)
}

/// Check one value against its declared type; the message says what was expected.
pub fn check_type(ty: ValueType, v: &str, project_dir: &Path) -> Result<(), String> {
    match ty {
        ValueType::String | ValueType::List if v.chars().any(|c| c.is_control()) => {
            Err("contains control characters".into())
        }
        ValueType::String => Ok(()),
        ValueType::List => {
            if v.split(',').any(|s| s.trim().is_empty()) {
                Err("expected a comma-separated list with no empty items, e.g. a.example.com,b.example.com".into())
            } else {
                Ok(())
            }
        }
        ValueType::Semver => semver::Version::parse(v).map(|_| ()).map_err(|e| {
            format!("not a semantic version ({e}); expected MAJOR.MINOR.PATCH, e.g. 1.4.0")
        }),
        ValueType::Int => v
            .parse::<i64>()
            .map(|_| ())
            .map_err(|_| "expected a whole number".into()),
        ValueType::Bool => match v {
            "true" | "false" | "1" | "0" | "yes" | "no" => Ok(()),
            _ => Err("expected true or false".into()),
        },
        ValueType::Url => match url::Url::parse(v) {
            Ok(u) if u.scheme() == "file" || u.host_str().is_some_and(|h| !h.is_empty()) => Ok(()),
            Ok(_) => Err("URL has no host".into()),
            Err(e) => Err(format!(
                "not a URL ({e}); expected e.g. https://github.com/frappe/frappe"
            )),
        },
        ValueType::Path => {
            let p = project_dir.join(v);
            match std::fs::metadata(&p) {
                Ok(m) if m.is_file() => Ok(()),
                Ok(m) => Err(format!(
                    "{} is {}, a regular file was expected",
                    p.display(),
                    crate::config::kind_of(&m)
                )),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Err(format!("file {} does not exist", p.display()))
                }
                Err(e) => Err(format!(
                    "cannot read {}: {}",
                    p.display(),
                    crate::error::io_reason(&e)
                )),
            }
        }
    }
}

/// The closest candidate within a small edit distance, for "did you mean".
pub fn did_you_mean<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let w = word.to_ascii_uppercase();
    candidates
        .map(|c| (edit_distance(&w, &c.to_ascii_uppercase()), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 5))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Schema {
        Schema::from_example(
            "ex",
            "# @type semver\nV=1.0.0\n# @secret\nTOK=<token>\n# @optional\nOPT=dflt\nNAME=x\n",
        )
        .0
    }

    fn run(file: &str, env: &[(&str, &str)]) -> (EnvValues, Vec<Problem>) {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let lookup = move |k: &str| env.iter().find(|(a, _)| a == k).map(|(_, b)| b.clone());
        validate(
            &schema(),
            &EnvInput {
                file: Some((".env", file)),
                lookup_env: &lookup,
                project_dir: Path::new("/"),
            },
        )
    }

    #[test]
    fn good_file() {
        let (v, p) = run("V=1.2.3\nTOK=abcd1234\nNAME=n\n", &[]);
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(v.get("V"), Some("1.2.3"));
        assert_eq!(v.get("TOK"), None, "secrets are not plain values");
        assert_eq!(v.secret("TOK").map(|s| s.expose()), Some("abcd1234"));
        assert_eq!(
            v.get("OPT"),
            Some("dflt"),
            "optional keys default to the example"
        );
    }

    #[test]
    fn environment_wins_and_says_so() {
        let (v, p) = run("V=1.2.3\nTOK=abcd1234\nNAME=n\n", &[("V", "2.0.0")]);
        assert!(p.is_empty());
        assert_eq!(v.get("V"), Some("2.0.0"));
        let val = v.entries().find(|(k, _)| *k == "V").unwrap().1;
        assert_eq!(val.source, Source::Environment);
        assert_eq!(val.overrides_line, Some(1));
    }

    #[test]
    fn all_problems_at_once() {
        let (_, p) = run("V=1.2\nTOK=<token>\nNAMEE=n\nV=3.0.0\n", &[]);
        let got: Vec<_> = p.iter().map(|p| (p.line, p.code)).collect();
        assert_eq!(
            got,
            vec![
                (Some(3), "unknown-key"),
                (Some(4), "duplicate-key"),
                (Some(1), "bad-type"),
                (Some(2), "placeholder"),
                (None, "missing-key"),
            ]
        );
        assert_eq!(p[0].hint.as_deref(), Some("did you mean NAME?"));
    }

    #[test]
    fn did_you_mean_is_close_only() {
        let c = ["DE_SITE_VERSION", "DE_IMAGE"];
        assert_eq!(
            did_you_mean("DE_SITE_VERSON", c.into_iter()),
            Some("DE_SITE_VERSION")
        );
        assert_eq!(did_you_mean("de_image", c.into_iter()), Some("DE_IMAGE"));
        assert_eq!(did_you_mean("TOTALLY_ELSE", c.into_iter()), None);
    }
}
