//! Where everything the user sees goes: human text on stderr/stdout, or one
//! JSON document on stdout with `--json`. Every string passes the redactor
//! first, a second fence behind the `Secret` type.

use std::io::{IsTerminal, Write};

pub mod redact {
    use std::sync::{Mutex, OnceLock};

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
        if !s.iter().any(|v| v == value) {
            s.push(value.to_string());
            // Longest first, so a secret that contains another is masked whole.
            s.sort_by_key(|v| std::cmp::Reverse(v.len()));
        }
    }

    /// Mask every registered secret, and its percent-encoded form, in `text`.
    pub fn redact(text: &str) -> String {
        let s = store().lock().unwrap_or_else(|e| e.into_inner());
        let mut out = text.to_string();
        for v in s.iter() {
            if out.contains(v.as_str()) {
                out = out.replace(v.as_str(), "***");
            }
            let enc = crate::util::percent_encode_userinfo(v);
            if enc != *v && out.contains(enc.as_str()) {
                out = out.replace(enc.as_str(), "***");
            }
        }
        out
    }
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
            format!("\x1b[{code}m{text}\x1b[0m")
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
    let line = redact::redact(line);
    super::live::suspend(|| {
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    });
}

/// Errors and warnings: always shown on stderr, redacted.
pub fn diag(line: &str) {
    let line = redact::redact(line);
    super::live::suspend(|| {
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    });
}

/// The command's result for humans: stdout, redacted.
pub fn result(line: &str) {
    let line = redact::redact(line);
    super::live::suspend(|| {
        let _ = writeln!(std::io::stdout().lock(), "{line}");
    });
}

/// The command's result for machines: one pretty JSON document on stdout.
pub fn json(value: &serde_json::Value) {
    let text = serde_json::to_string_pretty(value).unwrap_or_else(|_| "{}".into());
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{}", redact::redact(&text));
}

#[cfg(test)]
mod tests {
    use super::redact::*;

    #[test]
    fn masks_registered_values_and_their_encoded_form() {
        register("tok@en-canary-77");
        assert_eq!(redact("x tok@en-canary-77 y"), "x *** y");
        assert_eq!(redact("https://tok%40en-canary-77@h/r"), "https://***@h/r");
        assert_eq!(redact("nothing here"), "nothing here");
    }
}
