//! Where everything the user sees goes: human text on stderr/stdout, or one
//! JSON document on stdout with `--json`. Every string passes the redactor
//! first, a second fence behind the `Secret` type; then terminal control
//! characters are escaped, so a value can never move the cursor, clear the
//! screen or hide text (see [`escape_controls`]).

use std::io::{IsTerminal, Write};

pub mod redact {
    use std::sync::{Mutex, OnceLock};

    /// A fragment at least this long of a secret's start or end is masked
    /// too: text cut by a width limit (ours or another program's) or split at
    /// a chunk boundary must not print most of a token.
    pub const MIN_FRAGMENT: usize = 8;

    fn store() -> &'static Mutex<Vec<String>> {
        static S: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
        S.get_or_init(|| Mutex::new(Vec::new()))
    }

    /// Remember a secret value so that [`redact`] masks it wherever it shows up.
    /// Values under 4 characters are skipped: masking "a" everywhere would
    /// mangle all output, and real tokens are far longer.
    pub fn register(value: &str) {
        if value.len() < 4 {
            return;
        }
        let mut s = store().lock().unwrap_or_else(|e| e.into_inner());
        for f in forms(value) {
            if !s.contains(&f) {
                s.push(f);
            }
        }
        // Longest first, so a secret that contains another is masked whole.
        s.sort_by_key(|v| std::cmp::Reverse(v.len()));
    }

    /// A value as written, and the forms it takes when embedded: in a
    /// URL's userinfo (percent-encoded), in JSON (escaped).
    pub fn forms(value: &str) -> Vec<String> {
        let mut out = vec![value.to_string()];
        let enc = crate::util::percent_encode_userinfo(value);
        if enc != value {
            out.push(enc);
        }
        let json = serde_json::to_string(value).unwrap_or_default();
        if let Some(inner) = json.strip_prefix('"').and_then(|j| j.strip_suffix('"')) {
            if inner != value {
                out.push(inner.to_string());
            }
        }
        out
    }

    /// Mask every registered secret in `text`: whole occurrences, and
    /// fragments of at least [`MIN_FRAGMENT`] bytes that match a secret's
    /// start (text cut after it) or its end (text cut before it).
    pub fn mask(text: &str) -> String {
        let s = store().lock().unwrap_or_else(|e| e.into_inner());
        let mut out = text.to_string();
        // Whole values first (longest first), so that one form's fragment
        // does not eat part of another form's whole occurrence.
        for v in s.iter() {
            if out.contains(v.as_str()) {
                out = out.replace(v.as_str(), "***");
            }
        }
        for v in s.iter().filter(|v| v.len() >= MIN_FRAGMENT) {
            out = mask_fragments(&out, v);
        }
        out
    }

    fn mask_fragments(text: &str, secret: &str) -> String {
        let t = text.as_bytes();
        let s = secret.as_bytes();
        // Spans to mask, found by the secret's first and last MIN_FRAGMENT bytes.
        let mut spans: Vec<(usize, usize)> = Vec::new();
        {
            let head = &s[..MIN_FRAGMENT];
            for i in memchr::memmem::find_iter(t, head) {
                let n = t[i..].iter().zip(s).take_while(|(a, b)| a == b).count();
                spans.push((i, i + n));
            }
            let tail = &s[s.len() - MIN_FRAGMENT..];
            for i in memchr::memmem::find_iter(t, tail) {
                let end = i + MIN_FRAGMENT;
                let n = t[..end]
                    .iter()
                    .rev()
                    .zip(s.iter().rev())
                    .take_while(|(a, b)| a == b)
                    .count();
                spans.push((end - n, end));
            }
        }
        if spans.is_empty() {
            return text.to_string();
        }
        spans.sort();
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for (a, b) in spans {
            // Widen to character boundaries: a partial match may end inside a
            // multi-byte character of the text.
            let mut a = a;
            while !text.is_char_boundary(a) {
                a -= 1;
            }
            let mut b = b;
            while !text.is_char_boundary(b) {
                b += 1;
            }
            if a < at {
                // Overlaps the span masked last: extend it.
                at = at.max(b);
                continue;
            }
            out.push_str(&text[at..a]);
            out.push_str("***");
            at = b;
        }
        out.push_str(&text[at..]);
        out
    }

    /// For files and records: secrets masked, terminal controls escaped,
    /// style marks removed.
    pub fn redact(text: &str) -> String {
        super::strip_marks(&super::escape_controls(&mask(text)))
    }
}

/// Replace terminal control characters (C0 except newline and tab, DEL, C1)
/// with `\u001b`-style escapes: a value in a message (a line of `.env`, a
/// git error, a container's output) can never drive the terminal. The
/// notation is also a valid JSON escape, so records stay parseable.
pub fn escape_controls(text: &str) -> String {
    if !text.chars().any(is_escaped) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if is_escaped(c) {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

fn is_escaped(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t') || ('\u{80}'..='\u{9f}').contains(&c)
}

/// Our own colour codes travel as marks that content cannot forge (a
/// per-process nonce), so the sink can escape every control character of
/// the content and still colour its labels.
fn mark() -> &'static str {
    static M: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    M.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        format!("\u{fdd0}{:016x}[", h.finish())
    })
}

/// Remove colour marks (for files).
fn strip_marks(text: &str) -> String {
    let m = mark();
    if !text.contains(m) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(m) {
        out.push_str(&rest[..i]);
        let after = &rest[i + m.len()..];
        let code_end = after.find('m').map(|j| j + 1).unwrap_or(0);
        rest = &after[code_end..];
    }
    out.push_str(rest);
    out
}

/// What reaches a terminal: secrets masked, controls escaped, marks turned
/// into real colour codes.
pub fn render(text: &str) -> String {
    escape_controls(&redact::mask(text)).replace(mark(), "\x1b[")
}

/// Cut `text` to `width` characters for one line, masking secrets first:
/// a token cut in the middle no longer matches the secret, so the order
/// matters (and [`redact::mask`] catches a fragment cut elsewhere).
pub fn fit(text: &str, width: usize) -> String {
    let masked = redact::mask(text);
    if masked.chars().count() <= width {
        return masked;
    }
    let mut out: String = masked.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// How output should look for this invocation.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub json: bool,
    pub color: bool,
    pub verbose: bool,
    pub quiet: bool,
    /// stderr is an interactive terminal and neither `CI` nor `NO_COLOR` is
    /// set (nor `TERM=dumb`): live lines (elapsed time, latest output) allowed.
    pub interactive: bool,
}

impl Style {
    pub fn detect(json: bool, verbose: bool, quiet: bool) -> Style {
        let tty = std::io::stderr().is_terminal();
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty());
        let dumb = std::env::var_os("TERM").is_some_and(|v| v == "dumb");
        Style {
            json,
            color: tty && !no_color && !ci,
            verbose,
            quiet,
            interactive: tty && !ci && !no_color && !dumb,
        }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            let m = mark();
            format!("{m}{code}m{text}{m}0m")
        } else {
            text.to_string()
        }
    }

    pub fn red(&self, t: &str) -> String {
        self.paint("31;1", t)
    }
    pub fn yellow(&self, t: &str) -> String {
        self.paint("33;1", t)
    }
    pub fn green(&self, t: &str) -> String {
        self.paint("32;1", t)
    }
    pub fn dim(&self, t: &str) -> String {
        self.paint("2", t)
    }
    pub fn bold(&self, t: &str) -> String {
        self.paint("1", t)
    }
}

/// Human progress and diagnostics: stderr, redacted, silent under `--quiet`.
pub fn progress(style: &Style, line: &str) {
    if style.quiet {
        return;
    }
    let line = render(line);
    super::live::suspend(|| {
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    });
}

/// Errors and warnings: always shown on stderr, redacted.
pub fn diag(line: &str) {
    let line = render(line);
    super::live::suspend(|| {
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    });
}

/// The command's result for humans: stdout, redacted.
pub fn result(line: &str) {
    let line = render(line);
    super::live::suspend(|| {
        let _ = writeln!(std::io::stdout().lock(), "{line}");
    });
}

/// The command's result for machines: one pretty JSON document on stdout.
/// serde_json escapes control characters itself; marks are removed.
pub fn json(value: &serde_json::Value) {
    let text = serde_json::to_string_pretty(value).unwrap_or_else(|_| "{}".into());
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{}", redact::redact(&text));
}

#[cfg(test)]
mod tests {
    use super::redact::*;
    use super::*;

    #[test]
    fn masks_registered_values_and_their_encoded_form() {
        register("tok@en-canary-77");
        assert_eq!(mask("x tok@en-canary-77 y"), "x *** y");
        assert_eq!(mask("https://tok%40en-canary-77@h/r"), "https://***@h/r");
        assert_eq!(mask("nothing here"), "nothing here");
    }

    #[test]
    fn masks_fragments_cut_at_either_end() {
        let tok = "canary_pat_CANARY_not_a_real_token_0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUV";
        assert_eq!(tok.len(), 93);
        register(tok);
        // Cut after 40 characters (a width limit), and a fragment missing its start.
        let cut = format!("step: echo {}", &tok[..40]);
        assert_eq!(mask(&cut), "step: echo ***");
        assert_eq!(mask(&format!("{}…", &tok[..9])), "***…");
        assert_eq!(mask(&format!("…{} tail", &tok[70..])), "…*** tail");
        // Shorter than a fragment: printed (it could be anything).
        assert_eq!(mask(&tok[..7]), &tok[..7]);
        // Multi-byte text right after a fragment: no panic, boundaries kept.
        assert_eq!(mask(&format!("{}é", &tok[..20])), "***é");
        for width in 10..120 {
            let line = format!("#7 [3/5] RUN echo {tok} && true");
            let shown = fit(&line, width);
            for w in tok.as_bytes().windows(MIN_FRAGMENT) {
                let w = std::str::from_utf8(w).unwrap();
                assert!(!shown.contains(w), "width {width}: {shown}");
            }
        }
    }

    #[test]
    fn control_characters_are_escaped_but_our_colours_kept() {
        assert_eq!(
            escape_controls("a\x1b[2Jb\0c\td\ne\r"),
            "a\\u001b[2Jb\\u0000c\td\ne\\u000d"
        );
        assert_eq!(escape_controls("csi\u{9b}x"), "csi\\u009bx");
        let style = Style {
            json: false,
            color: true,
            verbose: false,
            quiet: false,
            interactive: true,
        };
        let line = format!("{} value \x1b]0;title\x07", style.red("error:"));
        assert_eq!(
            render(&line),
            "\x1b[31;1merror:\x1b[0m value \\u001b]0;title\\u0007"
        );
        assert_eq!(redact(&line), "error: value \\u001b]0;title\\u0007");
        // A forged mark without the nonce stays text.
        assert_eq!(render("\u{fdd0}[31m"), "\u{fdd0}[31m");
    }
}
