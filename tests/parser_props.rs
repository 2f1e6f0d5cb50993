//! Property tests over the `.env` and apps.json parsers: any input, no
//! panic; and a secret value placed anywhere a user might paste one (a
//! value, a bare line, after a colon, after a closing quote, where a key
//! belongs, in a URL's userinfo or a placeholder) never shows in an error
//! message, hint or key.
//!
//! "Never shows" is checked as: no run of 4 bytes of the secret appears.
//! Secrets are drawn from `j q x z` (no English word has 4 of those in a
//! row) and the surrounding junk never contains those letters, so a hit can
//! only be an echo.

use de_build::config::apps;
use de_build::config::envfile::parse::parse_with;
use de_build::config::envfile::{schema::Schema, validate, EnvInput};
use proptest::prelude::*;
use std::path::Path;

const EXAMPLE: &str = "# @type semver\nV=1.0.0\n# @secret\nTOK=<token>\n# @optional\nNAME=x\n# @type list\nSITES=all\n";

fn leaks(text: &str, secret: &str) -> bool {
    secret
        .as_bytes()
        .windows(4)
        .any(|w| text.contains(std::str::from_utf8(w).unwrap()))
}

fn secret() -> impl Strategy<Value = String> {
    "[jqxz]{16,48}"
}

/// Text around the secret: anything (control characters, quotes, `=`, `#`,
/// newlines, non-ASCII) except the secret's letters, and no upper case, so
/// junk never names a declared key whose (non-secret) value is shown.
fn junk() -> impl Strategy<Value = String> {
    "[^jqxzA-Z]{0,24}"
}

/// A line carrying the secret in one of the ways it gets pasted.
fn env_line(s: String, a: String, b: String) -> impl Strategy<Value = String> {
    prop_oneof![
        Just(format!("TOK={s}")),
        Just(format!("TOK='{s}'")),
        Just(format!("TOK=\"{s}")),
        Just(format!("TOK='{s}'{a}")),
        Just(format!("TOK=\"{s}\" {a}")),
        Just(format!("TOK: {s}")),
        Just(format!("TOK {s}")),
        Just(s.clone()),
        Just(format!("'{s}'{a}")),
        Just(format!("{s}=")),
        Just(format!("{s}={a}")),
        Just(format!("export {s}")),
        Just(format!("{a}{s}{b}")),
        Just(format!("{a}={s}")),
        Just(format!("UNKNOWN={s}")),
        Just(format!("  export TOK = {s} # {a}")),
        Just(format!("\u{feff}{s}\r")),
    ]
}

fn env_text() -> impl Strategy<Value = (String, String)> {
    (secret(), junk(), junk(), junk(), 0usize..4).prop_flat_map(|(s, a, b, c, at)| {
        env_line(s.clone(), a, b).prop_map(move |line| {
            // The secret's line among plain and junk lines.
            let mut lines = vec!["V=1.2".to_string(), c.clone(), "NAME=".to_string()];
            lines.insert(at.min(lines.len()), line);
            (s.clone(), lines.join("\n"))
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2000,
        // Failures are printed with their minimal input; no files written.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn env_parser_never_panics(text in "\\PC{0,200}|[\\x00-\\x7f]{0,200}") {
        let p = parse_with(&text, &["A".to_string()]);
        for i in p.issues {
            prop_assert!(i.line >= 1);
        }
    }

    #[test]
    fn env_errors_never_echo_a_secret((s, text) in env_text()) {
        let (schema, _) = Schema::from_example("ex", EXAMPLE);
        let none = |_: &str| None;
        let (_, problems) = validate(
            &schema,
            &EnvInput {
                file: Some((".env", &text)),
                lookup_env: &none,
                project_dir: Path::new("/"),
            },
        );
        for p in &problems {
            let shown = format!("{} {} {:?} {:?} {}", p.file, p.message, p.hint, p.key, p.location());
            prop_assert!(!leaks(&shown, &s), "{text:?} -> {shown}");
        }
    }

    #[test]
    fn apps_parser_never_panics(text in "\\PC{0,200}") {
        let _ = apps::parse("apps.json", &text);
    }

    #[test]
    fn apps_errors_never_echo_a_secret(
        s in secret(),
        a in junk(),
        form in 0usize..9,
        cut in proptest::option::of(0usize..120),
        insert in proptest::option::of((0usize..120, "[^jqxzA-Z]")),
    ) {
        let a = serde_json::to_string(&a).unwrap();
        let a = &a[1..a.len() - 1];
        let entry = match form {
            0 => format!(r#"{{"url": "https://{s}@github.com/o/de_macrs.git", "branch": "v1"}}"#),
            1 => format!(r#"{{"url": "https://x:{s}@github.com/o/de_macrs.git", "branch": "v1"}}"#),
            2 => format!(r#"{{"url": "https//{s}@github.com/o/de_macrs.git", "branch": "v1"}}"#),
            3 => format!(r#"{{"url": "ftp://{s}@github.com/o/de_macrs.git", "branch": "v1"}}"#),
            4 => format!(r#"{{"url": "https://${{{s}}}@github.com/o/de_macrs.git", "branch": "v1"}}"#),
            5 => format!(r#"{{"url": "https://${{{s}-{a}}}@h/o/x.git", "branch": "v1"}}"#),
            6 => format!(r#"{{"{s}": "{a}", "url": "https://h/o/y.git", "branch": "v1"}}"#),
            7 => format!(r#"{{"url": "https://{s}@h", "branch": "v1"}}"#),
            _ => format!(r#"{{"url": "{a}{s}@{a}", "branch": "{a}"}}"#),
        };
        let mut text = format!("[{entry}, {{\"url\": \"https://github.com/frappe/erpnext\", \"branch\": \"v15\"}}]");
        // Damage: cut the file short, or insert one character anywhere.
        if let Some(c) = cut {
            let mut at = c.min(text.len());
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            text.truncate(at);
        }
        if let Some((i, ch)) = insert {
            let mut at = i.min(text.len());
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            text.insert_str(at, &ch);
        }
        let (apps, problems) = apps::parse("apps.json", &text);
        for p in &problems {
            let shown = format!("{} {:?} {:?} {}", p.message, p.hint, p.key, p.location());
            prop_assert!(!leaks(&shown, &s), "{text} -> {shown}");
        }
        // Placeholders against an env: unknown names are not echoed either.
        let (schema, _) = Schema::from_example("ex", EXAMPLE);
        let none = |_: &str| None;
        let (env, _) = validate(
            &schema,
            &EnvInput {
                file: Some((".env", "TOK=abcd1234\n")),
                lookup_env: &none,
                project_dir: Path::new("/"),
            },
        );
        for p in apps::check_placeholders("apps.json", &apps, &env, ".env") {
            let shown = format!("{} {:?} {:?} {}", p.message, p.hint, p.key, p.location());
            prop_assert!(!leaks(&shown, &s), "{text} -> {shown}");
        }
    }
}
