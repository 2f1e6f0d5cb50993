//! The `.env` schema, read from the annotated example file (`de-example.env`).
//!
//! Every `KEY=value` line of the example declares a key; the example value is
//! shown to users as an example and, for optional keys, used as the default.
//! The comment lines directly above a key (no blank line between) document it;
//! those starting with `@` are annotations:
//!
//! | annotation | meaning |
//! |---|---|
//! | `@type T` | value type; T is `string` (default), `semver`, `int`, `bool`, `url`, `path`, `list` |
//! | `@optional` | the key may be absent or empty (default: required, non-empty) |
//! | `@secret` | the value is a credential: never printed, stored or passed to a child |
//!
//! Several annotations may share a line: `# @type url @optional`.

use super::parse::{parse, Entry};
use crate::error::Problem;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueType {
    String,
    Semver,
    Int,
    Bool,
    Url,
    Path,
    List,
}

impl ValueType {
    pub const ALL: [(&'static str, ValueType); 7] = [
        ("string", ValueType::String),
        ("semver", ValueType::Semver),
        ("int", ValueType::Int),
        ("bool", ValueType::Bool),
        ("url", ValueType::Url),
        ("path", ValueType::Path),
        ("list", ValueType::List),
    ];

    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, t)| *t == self)
            .map(|(n, _)| *n)
            .unwrap_or("string")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeySpec {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: ValueType,
    pub optional: bool,
    pub secret: bool,
    /// The example's value; never a real secret (the check warns if it looks like one).
    #[serde(skip)]
    pub example: String,
    pub doc: String,
    pub line: usize,
}

impl KeySpec {
    /// The example value is a stand-in to be replaced (`<your token>`, `changeme`).
    pub fn example_is_placeholder(&self) -> bool {
        is_placeholder(&self.example)
    }
}

pub fn is_placeholder(v: &str) -> bool {
    let l = v.to_ascii_lowercase();
    (v.contains('<') && v.contains('>')) || l.contains("changeme") || l.contains("change-me")
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schema {
    pub keys: Vec<KeySpec>,
}

impl Schema {
    pub fn get(&self, name: &str) -> Option<&KeySpec> {
        self.keys.iter().find(|k| k.name == name)
    }

    /// Parse an example file; problems name `display` (the path the user sees).
    pub fn from_example(display: &str, text: &str) -> (Schema, Vec<Problem>) {
        let parsed = parse(text);
        let mut problems: Vec<Problem> = parsed
            .issues
            .iter()
            .map(|i| {
                let mut p = Problem::new(display, i.code, i.message.clone()).line(i.line);
                p.column = i.column;
                match &i.hint {
                    Some(h) => p.hint(h.clone()),
                    None => p,
                }
            })
            .collect();
        let mut schema = Schema::default();
        let mut seen: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for entry in &parsed.entries {
            if let Some(first) = seen.insert(&entry.key, entry.line) {
                problems.push(
                    Problem::new(
                        display,
                        "duplicate-key",
                        format!("{} is declared twice (first on line {first})", entry.key),
                    )
                    .line(entry.line)
                    .key(&entry.key),
                );
                continue;
            }
            match spec_from(entry) {
                Ok(spec) => schema.keys.push(spec),
                Err((line, msg)) => problems.push(
                    Problem::new(display, "bad-annotation", msg)
                        .line(line)
                        .key(&entry.key)
                        .hint("annotations are `@type T` (string, semver, int, bool, url, path, list), `@optional`, `@secret`"),
                ),
            }
        }
        if schema.keys.is_empty() && problems.is_empty() {
            problems.push(
                Problem::new(display, "empty-schema", "the example file declares no keys").hint(
                    "the example file is the schema of .env: it must list every key as KEY=example",
                ),
            );
        }
        (schema, problems)
    }
}

fn spec_from(entry: &Entry) -> Result<KeySpec, (usize, String)> {
    let mut spec = KeySpec {
        name: entry.key.clone(),
        ty: ValueType::String,
        optional: false,
        secret: false,
        example: entry.value.to_string(),
        doc: String::new(),
        line: entry.line,
    };
    let mut doc = Vec::new();
    for (line, text) in &entry.comments {
        let t = text.trim();
        if !t.starts_with('@') {
            doc.push(t.to_string());
            continue;
        }
        let mut words = t.split_whitespace();
        while let Some(w) = words.next() {
            match w {
                "@optional" => spec.optional = true,
                "@secret" => spec.secret = true,
                "@type" => {
                    let Some(name) = words.next() else {
                        return Err((*line, "@type needs a type name".into()));
                    };
                    spec.ty = ValueType::ALL
                        .iter()
                        .find(|(n, _)| *n == name)
                        .map(|(_, t)| *t)
                        .ok_or_else(|| {
                            (*line, format!("unknown type `{name}` for {}", entry.key))
                        })?;
                }
                other => {
                    return Err((
                        *line,
                        format!("unknown annotation `{other}` for {}", entry.key),
                    ))
                }
            }
        }
    }
    spec.doc = doc.join(" ").trim().to_string();
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotations_and_docs() {
        let (s, p) = Schema::from_example(
            "ex",
            "# Title\n\n# The version.\n# @type semver\nV=1.0.0\n# Token\n# @secret @optional\nT=<token>\nPLAIN=x\n",
        );
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(s.keys.len(), 3);
        assert_eq!(s.keys[0].ty, ValueType::Semver);
        assert_eq!(s.keys[0].doc, "The version.");
        assert!(s.keys[1].secret && s.keys[1].optional);
        assert!(s.keys[1].example_is_placeholder());
        assert_eq!(s.keys[2].ty, ValueType::String);
        assert!(!s.keys[2].optional);
    }

    #[test]
    fn bad_annotations_name_their_line() {
        let (_, p) = Schema::from_example("ex", "# @type float\nA=1\n# @frob\nB=2\nA=3\n");
        let got: Vec<_> = p.iter().map(|p| (p.line, p.code)).collect();
        assert_eq!(
            got,
            vec![
                (Some(1), "bad-annotation"),
                (Some(3), "bad-annotation"),
                (Some(5), "duplicate-key")
            ]
        );
    }
}
