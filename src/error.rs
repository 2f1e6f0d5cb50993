//! One error type for the whole tool, and the exit-code table.
//!
//! | code | meaning |
//! |------|---------|
//! | 0 | success |
//! | 1 | failure: engine, git, I/O, a build step, anything not the user's input |
//! | 2 | invalid input: validation problems, usage errors, refused operations |
//! | 3 | deploy/rollback failed and the previous release was recovered |
//! | 4 | fatal: recovery failed, manual action needed (the message says what) |
//! | 5 | another deploy/rollback holds the lock |

use serde::Serialize;
use std::path::PathBuf;

pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILURE: i32 = 1;
pub const EXIT_INVALID: i32 = 2;
pub const EXIT_RECOVERED: i32 = 3;
pub const EXIT_FATAL: i32 = 4;
pub const EXIT_LOCKED: i32 = 5;

/// One validation finding, pointing at a place the user can open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Display path of the file concerned (as the user named it).
    pub file: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// 1-based, in characters, when a place inside the line matters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
    /// For apps.json: the entry, as `#3 (de_macrs)`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entry: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Stable identifier for scripts, e.g. `missing-key`.
    pub code: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Problem {
    pub fn new(file: impl Into<String>, code: &'static str, message: impl Into<String>) -> Self {
        Problem {
            file: file.into(),
            line: None,
            column: None,
            entry: None,
            key: None,
            code,
            message: message.into(),
            hint: None,
        }
    }
    pub fn line(mut self, line: usize) -> Self {
        self.line = Some(line);
        self
    }
    pub fn column(mut self, column: usize) -> Self {
        self.column = Some(column);
        self
    }
    pub fn entry(mut self, entry: impl Into<String>) -> Self {
        self.entry = Some(entry.into());
        self
    }
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// `file:line[:column]: message` / `file: entry #2 (x): message`.
    pub fn location(&self) -> String {
        let mut s = self.file.clone();
        if let Some(l) = self.line {
            s.push_str(&format!(":{l}"));
            if let Some(c) = self.column {
                s.push_str(&format!(":{c}"));
            }
        }
        if let Some(e) = &self.entry {
            s.push_str(&format!(": entry {e}"));
        }
        s
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The user's files or settings are wrong; every problem is listed.
    #[error("{} problem(s) found; nothing was changed", .0.len())]
    Invalid(Vec<Problem>),

    /// A request that cannot be carried out as asked (bad argument, refused
    /// operation); `hint` says how to get what the user wants.
    #[error("{message}")]
    Refused {
        message: String,
        hint: Option<String>,
    },

    #[error("could not {action} {}: {source}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("Docker engine: {action}: {message}")]
    Engine {
        action: String,
        message: String,
        /// The engine could not be reached (no answer at all): only then
        /// does the hint ask whether it runs. An answered error is the
        /// engine's verdict on the request.
        unreachable: bool,
    },

    #[error("{message}")]
    Failed {
        message: String,
        hint: Option<String>,
    },

    #[error("{message}")]
    Locked { message: String, hint: String },

    #[error("{message}")]
    Recovered { message: String },

    #[error("{message}")]
    Fatal { message: String, hint: String },
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Invalid(_) | Error::Refused { .. } => EXIT_INVALID,
            Error::Io { .. } | Error::Engine { .. } | Error::Failed { .. } => EXIT_FAILURE,
            Error::Recovered { .. } => EXIT_RECOVERED,
            Error::Fatal { .. } => EXIT_FATAL,
            Error::Locked { .. } => EXIT_LOCKED,
        }
    }

    /// What the user can do next, when we know.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::Refused { hint, .. } | Error::Failed { hint, .. } => hint.clone(),
            Error::Locked { hint, .. } | Error::Fatal { hint, .. } => Some(hint.clone()),
            Error::Engine {
                unreachable: true, ..
            } => Some(
                "is the Docker engine running and reachable? (DOCKER_HOST, `docker info`)".into(),
            ),
            _ => None,
        }
    }

    /// Stable kind for `--json` consumers.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Invalid(_) => "invalid",
            Error::Refused { .. } => "refused",
            Error::Io { .. } => "io",
            Error::Engine { .. } => "engine",
            Error::Failed { .. } => "failed",
            Error::Locked { .. } => "locked",
            Error::Recovered { .. } => "recovered",
            Error::Fatal { .. } => "fatal",
        }
    }

    pub fn refused(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Error::Refused {
            message: message.into(),
            hint: Some(hint.into()),
        }
    }

    pub fn failed(message: impl Into<String>) -> Self {
        Error::Failed {
            message: message.into(),
            hint: None,
        }
    }

    /// An error the engine answered with.
    pub fn engine(action: impl Into<String>, err: impl std::fmt::Display) -> Self {
        Error::Engine {
            action: action.into(),
            message: err.to_string(),
            unreachable: false,
        }
    }

    /// No answer from the engine: connection refused, socket missing, timeout.
    pub fn engine_unreachable(action: impl Into<String>, err: impl std::fmt::Display) -> Self {
        Error::Engine {
            action: action.into(),
            message: err.to_string(),
            unreachable: true,
        }
    }

    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An I/O error as a reason in a sentence: "Permission denied", without the
/// "(os error 13)" suffix.
pub fn io_reason(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_table() {
        assert_eq!(Error::Invalid(vec![]).exit_code(), 2);
        assert_eq!(Error::refused("x", "y").exit_code(), 2);
        assert_eq!(Error::failed("x").exit_code(), 1);
        assert_eq!(Error::engine("ping", "down").exit_code(), 1);
        assert_eq!(
            Error::engine("inspect", "invalid reference format").hint(),
            None
        );
        assert!(Error::engine_unreachable("connect", "refused")
            .hint()
            .unwrap()
            .contains("running"));
        assert_eq!(
            Error::Recovered {
                message: "r".into()
            }
            .exit_code(),
            3
        );
        assert_eq!(
            Error::Fatal {
                message: "f".into(),
                hint: "h".into()
            }
            .exit_code(),
            4
        );
        assert_eq!(
            Error::Locked {
                message: "l".into(),
                hint: "h".into()
            }
            .exit_code(),
            5
        );
    }
}
