//! The Containerfile as de-build's build needs it.

use crate::error::Problem;

/// What de-build's build needs from a Containerfile: apps.json arrives only as
/// the secret `apps_json`, and BuildKit does not key its cache on secret
/// values, so a `CACHE_BUST` build-arg must be in scope of that step.
pub fn containerfile_problems(shown: &str, text: &str) -> Vec<Problem> {
    let mut problems = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    let mount = lines
        .iter()
        .position(|l| l.contains("--mount=type=secret") && l.contains("id=apps_json"));
    let Some(mount) = mount else {
        // frappe_docker's Containerfiles before the secret read apps.json from
        // a base64 build-arg, which `docker history` keeps.
        let legacy = lines.iter().position(|l| l.contains("APPS_JSON_BASE64"));
        let mut p = Problem::new(
            shown,
            "no-apps-secret",
            "no RUN mounts the BuildKit secret apps_json",
        );
        p = match legacy {
            Some(i) => p.line(i + 1).hint("this Containerfile reads APPS_JSON_BASE64, a build-arg that leaks the token into `docker history`; frappe_docker moved apps.json to the BuildKit secret `apps_json`: take its current images/custom/Containerfile (`RUN --mount=type=secret,id=apps_json,target=/opt/frappe/apps.json ...`)"),
            None => p.hint("de-build hands apps.json to the build only as `RUN --mount=type=secret,id=apps_json,...`"),
        };
        problems.push(p);
        return problems;
    };
    let arg = lines[..mount]
        .iter()
        .rposition(|l| l.trim_start().starts_with("ARG CACHE_BUST"));
    let from = lines[..mount]
        .iter()
        .rposition(|l| l.trim_start().to_ascii_uppercase().starts_with("FROM "));
    if arg.is_none() || from > arg {
        problems.push(
            Problem::new(shown, "no-cache-bust", "the step that mounts apps_json has no `ARG CACHE_BUST` in scope")
                .line(mount + 1)
                .hint("add `ARG CACHE_BUST` in the same stage before that RUN: BuildKit ignores secret contents when caching, so changed apps would not rebuild"),
        );
    }
    if lines.first().is_some_and(|l| {
        l.trim_start().starts_with('#') && l.to_ascii_lowercase().contains("syntax=")
    }) {
        problems.push(
            Problem::new(
                shown,
                "syntax-line",
                "a `# syntax=` line makes BuildKit pull a frontend image",
            )
            .line(1)
            .hint("remove it: the built-in Dockerfile frontend handles --mount=type=secret"),
        );
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containerfile_needs_the_secret_and_a_cache_bust_in_scope() {
        let good = "FROM scratch\nARG CACHE_BUST\nRUN --mount=type=secret,id=apps_json true\n";
        assert!(containerfile_problems("cf", good).is_empty());
        let codes = |t: &str| {
            containerfile_problems("cf", t)
                .iter()
                .map(|p| p.code)
                .collect::<Vec<_>>()
        };
        assert_eq!(codes("FROM scratch\nRUN true\n"), vec!["no-apps-secret"]);
        let old = containerfile_problems(
            "cf",
            "FROM scratch\nARG APPS_JSON_BASE64\nRUN echo ${APPS_JSON_BASE64} | base64 -d\n",
        );
        assert_eq!(old[0].line, Some(2));
        assert!(old[0]
            .hint
            .as_deref()
            .unwrap()
            .contains("moved apps.json to the BuildKit secret"));
        assert_eq!(
            codes("FROM scratch\nRUN --mount=type=secret,id=apps_json true\n"),
            vec!["no-cache-bust"]
        );
        assert_eq!(
            codes("ARG CACHE_BUST\nFROM scratch\nRUN --mount=type=secret,id=apps_json true\n"),
            vec!["no-cache-bust"],
            "an ARG before FROM is out of scope"
        );
        assert_eq!(codes("# syntax=docker/dockerfile:1\nFROM scratch\nARG CACHE_BUST\nRUN --mount=type=secret,id=apps_json true\n"), vec!["syntax-line"]);
    }
}
