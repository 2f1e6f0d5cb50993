//! A value that must never be printed: tokens, passwords.
//!
//! `Debug` and `Display` print `***`, `Serialize` is not implemented, and the
//! only way to read the value is the explicitly named [`Secret::expose`].
//! Every secret is also registered with the output redactor so that, should a
//! token reach a log line by another road (e.g. a git error echoing a URL), the
//! sink still masks it.

use std::fmt;

#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        let value = value.into();
        crate::ui::output::redact::register(&value);
        Secret(value)
    }

    /// A value built from registered secrets (an injected URL or apps.json):
    /// as unprintable as any, but not registered itself — the secrets inside
    /// are masked already, and registering the whole value would mask plain
    /// text too (a URL that carries no token).
    pub fn derived(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The raw value. Call sites are few and greppable on purpose.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_formats_its_value() {
        let s = Secret::new("canary-secret-value-42");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(format!("{:?}", Some(&s)), "Some(Secret(***))");
        assert_eq!(s.expose(), "canary-secret-value-42");
    }
}
