//! Asking the apps' git remotes (with the injected URLs) which commit each
//! branch or tag is at: `check --online` and `build` share this.

use crate::adapters::git::{self, RemoteError};
use crate::config::apps::{inject_url, App};
use crate::config::{self, Inputs};
use crate::error::Problem;
use crate::ui::output::{self, Style};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, serde::Serialize)]
pub struct Resolved {
    pub commit: String,
    pub kind: &'static str,
    /// For an app without a branch: the remote's default branch, when it
    /// names it (else the ref is just `HEAD`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_branch: Option<String>,
}

impl Resolved {
    /// The ref to record: the branch or tag of apps.json, or the default
    /// branch it stood for.
    pub fn reference(&self, app: &App) -> String {
        match (&app.branch, &self.default_branch) {
            (Some(b), _) => b.clone(),
            (None, Some(d)) => d.clone(),
            (None, None) => app.git_ref().to_string(),
        }
    }
}

/// One result per app, in apps.json order; failures are problems naming the app.
pub fn resolve_apps(
    inputs: &Inputs,
    timeout: Duration,
    style: &Style,
) -> Vec<Result<Resolved, Problem>> {
    if inputs.apps.is_empty() {
        return Vec::new(); // a frappe-only image: no remote to ask
    }
    let started = Instant::now();
    output::progress(
        style,
        &format!(
            "asking {} git remote(s) (timeout {}s each)…",
            inputs.apps.len(),
            timeout.as_secs()
        ),
    );
    let items: Vec<(crate::secret::Secret, String)> = inputs
        .apps
        .iter()
        .map(|a| (inject_url(a, &inputs.env), a.git_ref().to_string()))
        .collect();
    let results = git::resolve_all(&items, timeout);
    for (app, r) in inputs.apps.iter().zip(&results) {
        let detail = match r {
            Ok(rr) => format!("{} -> {}", app.git_ref(), rr.commit),
            Err(e) => format!("{} -> {e:?}", app.git_ref()),
        };
        crate::ui::logfile::action(
            &format!("git ls-remote {}", app.public_url()),
            r.is_ok(),
            started.elapsed(),
            &detail,
        );
    }
    let shown = config::display(&inputs.paths.apps);
    let out: Vec<_> = inputs
        .apps
        .iter()
        .zip(results)
        .map(|(app, r)| match r {
            Ok(rr) => Ok(Resolved {
                commit: rr.commit,
                kind: rr.kind.as_str(),
                default_branch: rr.head_branch,
            }),
            Err(e) => Err(problem(&shown, app, &e, timeout)),
        })
        .collect();
    output::progress(
        style,
        &format!(
            "remotes answered in {:.1}s",
            started.elapsed().as_secs_f64()
        ),
    );
    out
}

fn problem(shown: &str, app: &App, e: &RemoteError, timeout: Duration) -> Problem {
    let p = |code, msg: String| Problem::new(shown, code, msg).entry(app.label());
    let tokens = app.placeholders();
    match e {
        RemoteError::AuthFailed => p("auth-failed", format!("authentication failed for {} ({})", app.name, app.public_url())).hint(if tokens.is_empty() {
            "the repository wants credentials: put a ${TOKEN} placeholder in its URL".to_string()
        } else {
            format!("check that {} is valid, not expired, and may read this repository", tokens.join(", "))
        }),
        RemoteError::NotFound => p("repo-not-found", format!("repository {} not found", app.public_url()))
            .hint("check the URL; a private repository also answers 'not found' to a token without access"),
        RemoteError::RefNotFound { .. } if app.branch.is_none() => p("ref-not-found", format!("{} has no default branch to clone (the remote shows no HEAD: an empty repository?)", app.public_url()))
            .hint("name the branch or tag to build with \"branch\" in apps.json"),
        RemoteError::RefNotFound { available_hint } => {
            let pr = p("ref-not-found", format!("{} has no branch or tag \"{}\"", app.name, app.git_ref()));
            match available_hint {
                Some(h) => pr.hint(format!("did you mean {h}?")),
                None => pr.hint("check the branch or release tag name in apps.json"),
            }
        }
        RemoteError::CrossHostRedirect => p("redirected", format!("{} redirects to another host; the credentials were not sent there", app.public_url()))
            .hint("put the final repository URL in apps.json"),
        RemoteError::Timeout => p("timeout", format!("{} did not answer within {}s", app.public_url(), timeout.as_secs()))
            .hint("check the network, or raise --timeout"),
        RemoteError::Other(msg) => p("git-error", format!("could not query {}: {msg}", app.public_url())),
    }
}
