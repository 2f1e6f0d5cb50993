//! A `.env` parser that keeps line numbers and reports every bad line.
//!
//! Grammar (one assignment per line, like docker compose's env files):
//! - blank lines and lines whose first non-blank character is `#` are ignored;
//! - `KEY=value`, optionally prefixed by `export `; KEY matches `[A-Za-z_][A-Za-z0-9_]*`;
//! - an unquoted value runs to the end of the line; ` #` (blank then hash)
//!   starts a comment; surrounding blanks are trimmed;
//! - `'single quoted'` values are literal; `"double quoted"` values understand
//!   `\"`, `\\`, `\n`, `\t`; after the closing quote only a comment may follow;
//! - no variable interpolation: `$` is an ordinary character;
//! - a UTF-8 byte-order mark or CRLF line endings are reported, not silently
//!   accepted: the same file is read by compose and shell scripts, which keep
//!   the stray bytes in the first key or in every value.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: String,
    pub line: usize,
    /// Comment lines directly above the entry (without `#`), for schemas.
    pub comments: Vec<(usize, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseIssue {
    pub line: usize,
    pub code: &'static str,
    pub message: String,
    pub hint: Option<String>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub entries: Vec<Entry>,
    pub issues: Vec<ParseIssue>,
}

fn issue(line: usize, code: &'static str, message: String, hint: Option<&str>) -> ParseIssue {
    ParseIssue {
        line,
        code,
        message,
        hint: hint.map(str::to_string),
    }
}

pub fn valid_key(key: &str) -> bool {
    let mut chars = key.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

pub fn parse(text: &str) -> Parsed {
    let mut out = Parsed::default();
    let mut text = text;
    if let Some(rest) = text.strip_prefix('\u{feff}') {
        out.issues.push(issue(
            1,
            "bom",
            "file starts with a UTF-8 byte-order mark".into(),
            Some("save the file as UTF-8 without BOM; compose would read the mark as part of the first key"),
        ));
        text = rest;
    }
    let mut crlf_reported = false;
    let mut comments: Vec<(usize, String)> = Vec::new();
    for (idx, raw) in text.split('\n').enumerate() {
        let lineno = idx + 1;
        let line = match raw.strip_suffix('\r') {
            Some(l) => {
                if !crlf_reported {
                    out.issues.push(issue(
                        lineno,
                        "crlf",
                        "line ends with CRLF (Windows line ending)".into(),
                        Some("convert the file to LF endings (e.g. `sed -i 's/\\r$//' FILE`); shell scripts and compose would keep the \\r in values"),
                    ));
                    crlf_reported = true;
                }
                l
            }
            None => raw,
        };
        let trimmed = line.trim();
        if trimmed.is_empty() {
            comments.clear();
            continue;
        }
        if let Some(c) = trimmed.strip_prefix('#') {
            comments.push((lineno, c.strip_prefix(' ').unwrap_or(c).to_string()));
            continue;
        }
        let body = trimmed
            .strip_prefix("export ")
            .map(str::trim_start)
            .unwrap_or(trimmed);
        let Some((key, rest)) = body.split_once('=') else {
            let hint = if valid_key(body) {
                format!("write `{body}=` followed by the value")
            } else {
                "each line must be KEY=value, a # comment, or blank".into()
            };
            out.issues.push(issue(
                lineno,
                "syntax",
                format!("expected KEY=value, found `{}`", shorten(trimmed)),
                Some(&hint),
            ));
            comments.clear();
            continue;
        };
        let key = key.trim_end();
        if !valid_key(key) {
            out.issues.push(issue(
                lineno,
                "bad-key",
                format!("`{}` is not a valid variable name", shorten(key)),
                Some("names use ASCII letters, digits and _ and do not start with a digit"),
            ));
            comments.clear();
            continue;
        }
        match parse_value(rest.trim_start()) {
            Ok(value) => out.entries.push(Entry {
                key: key.to_string(),
                value,
                line: lineno,
                comments: std::mem::take(&mut comments),
            }),
            Err((code, msg, hint)) => {
                out.issues
                    .push(issue(lineno, code, format!("{key}: {msg}"), Some(hint)));
                comments.clear();
            }
        }
    }
    out
}

type ValueError = (&'static str, String, &'static str);

fn parse_value(v: &str) -> Result<String, ValueError> {
    let quote_hint = "close the quote on the same line, or remove it";
    match v.chars().next() {
        Some('\'') => {
            let inner = &v[1..];
            let Some(end) = inner.find('\'') else {
                return Err((
                    "unterminated-quote",
                    "single quote is never closed".into(),
                    quote_hint,
                ));
            };
            trailing(&inner[end + 1..])?;
            Ok(inner[..end].to_string())
        }
        Some('"') => {
            let mut out = String::new();
            let mut chars = v[1..].char_indices();
            while let Some((i, c)) = chars.next() {
                match c {
                    '"' => {
                        trailing(&v[1 + i + 1..])?;
                        return Ok(out);
                    }
                    '\\' => match chars.next() {
                        Some((_, 'n')) => out.push('\n'),
                        Some((_, 't')) => out.push('\t'),
                        Some((_, '"')) => out.push('"'),
                        Some((_, '\\')) => out.push('\\'),
                        Some((_, '$')) => out.push('$'),
                        Some((_, other)) => {
                            out.push('\\');
                            out.push(other);
                        }
                        None => break,
                    },
                    c => out.push(c),
                }
            }
            Err((
                "unterminated-quote",
                "double quote is never closed".into(),
                quote_hint,
            ))
        }
        _ => {
            // An unquoted value ends at a comment introduced by blank + '#'.
            let mut end = v.len();
            let bytes = v.as_bytes();
            for i in 1..bytes.len() {
                if bytes[i] == b'#' && (bytes[i - 1] == b' ' || bytes[i - 1] == b'\t') {
                    end = i;
                    break;
                }
            }
            Ok(v[..end].trim_end().to_string())
        }
    }
}

fn trailing(rest: &str) -> Result<(), ValueError> {
    let rest = rest.trim_start();
    if rest.is_empty() || rest.starts_with('#') {
        Ok(())
    } else {
        Err((
            "syntax",
            format!(
                "unexpected text after the closing quote: `{}`",
                shorten(rest)
            ),
            "put a comment after ` #`, or quote the whole value",
        ))
    }
}

/// Keep messages readable and never dump a whole long line.
fn shorten(s: &str) -> String {
    let mut out: String = s.chars().take(40).collect();
    if s.chars().count() > 40 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> (String, String) {
        let p = parse(text);
        assert!(p.issues.is_empty(), "{:?}", p.issues);
        assert_eq!(p.entries.len(), 1);
        (p.entries[0].key.clone(), p.entries[0].value.clone())
    }

    #[test]
    fn values() {
        assert_eq!(one("A=b").1, "b");
        assert_eq!(one("A = b  ").1, "b");
        assert_eq!(one("export A=b").1, "b");
        assert_eq!(one("A=b # note").1, "b");
        assert_eq!(one("A=b#c").1, "b#c");
        assert_eq!(one("A='x # y'").1, "x # y");
        assert_eq!(one("A=\"x # y\" # c").1, "x # y");
        assert_eq!(one(r#"A="q\"t\\n""#).1, "q\"t\\n");
        assert_eq!(one(r#"A="l1\nl2""#).1, "l1\nl2");
        assert_eq!(one("A=").1, "");
        assert_eq!(one("A=${B}").1, "${B}");
        assert_eq!(one("A=héllo").1, "héllo");
    }

    #[test]
    fn comments_attach_to_the_next_key_only() {
        let p = parse("# section\n\n# about A\n# @secret\nA=1\nB=2\n");
        assert_eq!(
            p.entries[0].comments,
            vec![(3, "about A".into()), (4, "@secret".into())]
        );
        assert!(p.entries[1].comments.is_empty());
    }

    #[test]
    fn bad_lines_are_reported_with_their_line() {
        let p = parse("A=1\nnot a line\n1X=2\nB='open\nC=\"x\" y\n");
        let got: Vec<_> = p.issues.iter().map(|i| (i.line, i.code)).collect();
        assert_eq!(
            got,
            vec![
                (2, "syntax"),
                (3, "bad-key"),
                (4, "unterminated-quote"),
                (5, "syntax")
            ]
        );
        assert_eq!(p.entries.len(), 1);
    }

    #[test]
    fn bom_and_crlf_are_reported() {
        let p = parse("\u{feff}A=1\r\nB=2\r\n");
        let codes: Vec<_> = p.issues.iter().map(|i| i.code).collect();
        assert_eq!(codes, vec!["bom", "crlf"]);
        assert_eq!(p.entries[1].value, "2");
    }
}
