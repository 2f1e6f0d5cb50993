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
//!
//! A line that does not parse is never quoted back: it may be a pasted token
//! (`ghp_…` alone, `DE_MACRS_PAT: ghp_…`, `'tok'rest`). Issues name the line,
//! the column and what was expected, and show a key only if it is declared
//! or named like a variable ([`shown_key`]).

use zeroize::Zeroizing;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    /// Zeroed on drop: the value may be a token.
    pub value: Zeroizing<String>,
    pub line: usize,
    /// Comment lines directly above the entry (without `#`), for schemas.
    pub comments: Vec<(usize, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseIssue {
    pub line: usize,
    pub column: Option<usize>,
    /// The key the line assigns, when it may be shown.
    pub key: Option<String>,
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
        column: None,
        key: None,
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

fn key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// A key as a message may show it: one of the `declared` names, or a name in
/// UPPER_CASE as variables are written. Anything else may be a token pasted
/// where a key was expected (`ghp_…` alone on a line, a base64 value ending
/// in `=`), so it is not shown.
pub fn shown_key<'a>(key: &'a str, declared: &[String]) -> Option<&'a str> {
    let upper = valid_key(key) && key.len() <= 64 && !key.chars().any(|c| c.is_ascii_lowercase());
    (upper || declared.iter().any(|d| d == key)).then_some(key)
}

/// Parse with no declared names (the example file itself).
pub fn parse(text: &str) -> Parsed {
    parse_with(text, &[])
}

/// Parse an env file; `declared` are the schema's keys, which messages may
/// name and suggest.
pub fn parse_with(text: &str, declared: &[String]) -> Parsed {
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
    let suggest = |near: &str| {
        super::did_you_mean(near, declared.iter().map(String::as_str))
            .map(|s| format!("did you mean {s}? "))
            .unwrap_or_default()
    };
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
        // Columns count characters of the line as written, from 1.
        let indent = line.chars().count() - line.trim_start().chars().count();
        let body = trimmed
            .strip_prefix("export ")
            .map(str::trim_start)
            .unwrap_or(trimmed);
        let body_col = indent + 1 + (trimmed.chars().count() - body.chars().count());
        let Some((key, rest)) = body.split_once('=') else {
            let name: String = body.chars().take_while(|c| key_char(*c)).collect();
            let column = body_col + name.chars().count();
            let mut i = issue(lineno, "syntax", String::new(), None);
            i.column = Some(column);
            match shown_key(&name, declared).filter(|_| valid_key(&name)) {
                Some(k) => {
                    let found = match body[name.len()..].chars().next() {
                        None => "the line ends".to_string(),
                        Some(c) if c.is_whitespace() => "a blank".to_string(),
                        Some(c) if c.is_ascii_punctuation() => format!("`{c}`"),
                        Some(_) => "another character".to_string(),
                    };
                    i.message = format!("{k}: expected `=` after the key, found {found}");
                    i.hint = Some(format!("write `{k}=` followed by the value"));
                    i.key = Some(k.to_string());
                }
                None => {
                    i.message =
                        "expected KEY=value; the line's text is not shown (it may be a secret)"
                            .into();
                    i.hint = Some(format!(
                        "{}each line must be KEY=value, a # comment, or blank",
                        suggest(&name)
                    ));
                }
            }
            out.issues.push(i);
            comments.clear();
            continue;
        };
        let key = key.trim_end();
        if !valid_key(key) {
            let bad = key.chars().position(|c| !key_char(c)).unwrap_or(0);
            let mut i = issue(
                lineno,
                "bad-key",
                "the name before `=` is not a valid variable name".into(),
                None,
            );
            i.column = Some(body_col + bad);
            i.hint = Some(format!(
                "{}names use ASCII letters, digits and _ and do not start with a digit",
                suggest(key)
            ));
            out.issues.push(i);
            comments.clear();
            continue;
        }
        let value_col = body_col + key.chars().count() + 1 + {
            let r = rest.chars().count();
            r - rest.trim_start().chars().count()
        };
        match parse_value(rest.trim_start()) {
            Ok(value) => out.entries.push(Entry {
                key: key.to_string(),
                value,
                line: lineno,
                comments: std::mem::take(&mut comments),
            }),
            Err((code, msg, at, hint)) => {
                let mut i = issue(lineno, code, String::new(), Some(hint));
                i.column = Some(value_col + at);
                i.message = match shown_key(key, declared) {
                    Some(k) => {
                        i.key = Some(k.to_string());
                        format!("{k}: {msg}")
                    }
                    None => msg,
                };
                out.issues.push(i);
                comments.clear();
            }
        }
    }
    out
}

/// (code, what is wrong, column offset inside the value, hint)
type ValueError = (&'static str, String, usize, &'static str);

fn parse_value(v: &str) -> Result<Zeroizing<String>, ValueError> {
    let quote_hint = "close the quote on the same line, or remove it";
    match v.chars().next() {
        Some('\'') => {
            let inner = &v[1..];
            let Some(end) = inner.find('\'') else {
                return Err((
                    "unterminated-quote",
                    "single quote is never closed".into(),
                    0,
                    quote_hint,
                ));
            };
            trailing(&inner[end + 1..], 1 + inner[..end].chars().count() + 1)?;
            Ok(Zeroizing::new(inner[..end].to_string()))
        }
        Some('"') => {
            // Never grows: no unzeroed copy of a partial value is left behind.
            let mut out = Zeroizing::new(String::with_capacity(v.len()));
            let mut chars = v[1..].char_indices();
            while let Some((i, c)) = chars.next() {
                match c {
                    '"' => {
                        let rest = &v[1 + i + 1..];
                        trailing(rest, v[..1 + i + 1].chars().count())?;
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
                0,
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
            Ok(Zeroizing::new(v[..end].trim_end().to_string()))
        }
    }
}

/// After a closing quote only a comment may follow. `at` is the column
/// offset (inside the value) just past the quote.
fn trailing(rest: &str, at: usize) -> Result<(), ValueError> {
    let skipped = rest.chars().count() - rest.trim_start().chars().count();
    let rest = rest.trim_start();
    if rest.is_empty() || rest.starts_with('#') {
        Ok(())
    } else {
        Err((
            "syntax",
            "unexpected text after the closing quote (not shown)".into(),
            at + skipped,
            "put a comment after ` #`, or quote the whole value",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> (String, String) {
        let p = parse(text);
        assert!(p.issues.is_empty(), "{:?}", p.issues);
        assert_eq!(p.entries.len(), 1);
        (p.entries[0].key.clone(), p.entries[0].value.to_string())
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
    fn bad_lines_are_reported_with_their_line_and_column() {
        let p = parse("A=1\nnot a line\n1X=2\nB='open\n  C=\"x\" y\n");
        let got: Vec<_> = p
            .issues
            .iter()
            .map(|i| (i.line, i.column, i.code))
            .collect();
        assert_eq!(
            got,
            vec![
                (2, Some(4), "syntax"),
                (3, Some(1), "bad-key"),
                (4, Some(3), "unterminated-quote"),
                (5, Some(9), "syntax")
            ]
        );
        assert_eq!(p.entries.len(), 1);
    }

    #[test]
    fn bom_and_crlf_are_reported() {
        let p = parse("\u{feff}A=1\r\nB=2\r\n");
        let codes: Vec<_> = p.issues.iter().map(|i| i.code).collect();
        assert_eq!(codes, vec!["bom", "crlf"]);
        assert_eq!(p.entries[1].value.as_str(), "2");
    }

    /// Lines that do not parse are never echoed: a token pasted alone, after
    /// a colon, after a closing quote, or where a key belongs.
    #[test]
    fn unparsable_lines_are_never_echoed() {
        let tok = "canary_NotARealTokenDoNotLeak5150";
        let declared = vec!["DE_MACRS_PAT".to_string(), "DE_IMAGE".to_string()];
        let lines = [
            tok.to_string(),
            format!("DE_MACRS_PAT: {tok}"),
            format!("'{tok}'rest"),
            format!("DE_MACRS_PAT='ok'{tok}"),
            format!("DE_MACRS_PAT=\"ok\" {tok}"),
            format!("DE_MACRS_PAT='{tok}"),
            format!("{tok}: x"),
            format!("export {tok}"),
            format!("{tok}-x=1"),
            format!("x{tok}é=1"),
            format!("DE_IMAGE {tok}"),
        ];
        for l in &lines {
            let p = parse_with(&format!("{l}\n"), &declared);
            assert_eq!(p.issues.len(), 1, "{l}: {:?}", p.issues);
            let i = &p.issues[0];
            let text = format!("{} {:?} {:?}", i.message, i.hint, i.key);
            for w in tok.as_bytes().windows(4) {
                let w = std::str::from_utf8(w).unwrap();
                assert!(!text.contains(w), "{l} -> {text}");
            }
            assert!(i.column.is_some(), "{l}");
        }
        let p = parse_with(&format!("DE_MACRS_PAT: {tok}\n"), &declared);
        assert_eq!(
            p.issues[0].message,
            "DE_MACRS_PAT: expected `=` after the key, found `:`"
        );
        assert_eq!(p.issues[0].column, Some(13));
        let p = parse_with("DE_IMAG\n", &declared);
        assert_eq!(
            p.issues[0].message,
            "DE_IMAG: expected `=` after the key, found the line ends"
        );
        let p = parse_with("DÉ_IMAGE=x\n", &declared);
        assert_eq!(p.issues[0].column, Some(2));
        assert!(p.issues[0]
            .hint
            .as_deref()
            .unwrap()
            .starts_with("did you mean DE_IMAGE?"));
    }
}
