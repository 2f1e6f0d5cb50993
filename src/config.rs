//! Raw options + files -> one checked set of inputs every command starts from.

use crate::apps::{self, App};
use crate::cli::Global;
use crate::envfile::{self, schema::Schema, EnvValues};
use crate::error::Problem;
use std::path::{Path, PathBuf};

/// Every path the tool reads or writes, resolved once.
#[derive(Debug, Clone)]
pub struct Paths {
    pub project_dir: PathBuf,
    pub env_file: PathBuf,
    /// The user named the env file: its absence is then an error.
    pub env_file_explicit: bool,
    pub example: PathBuf,
    pub apps: PathBuf,
    pub releases: PathBuf,
    /// Deployment state, locks, logs: `<project>/.de-build/` (git-ignored).
    pub state: PathBuf,
}

impl Paths {
    pub fn from_global(g: &Global) -> Paths {
        let p = &g.project_dir;
        Paths {
            project_dir: p.clone(),
            env_file: g.env_file.clone().unwrap_or_else(|| p.join(".env")),
            env_file_explicit: g.env_file.is_some(),
            example: g
                .example
                .clone()
                .unwrap_or_else(|| p.join("de-example.env")),
            apps: g.apps.clone().unwrap_or_else(|| p.join("apps.json")),
            releases: p.join("releases"),
            state: p.join(".de-build"),
        }
    }
}

/// How a path is shown in messages: as the user would type it.
pub fn display(p: &Path) -> String {
    let s = p.display().to_string();
    s.strip_prefix("./").map(str::to_string).unwrap_or(s)
}

/// Read a text file, turning every failure into a problem that names it.
pub fn read_text(path: &Path, what: &str) -> Result<String, Problem> {
    let shown = display(path);
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Problem::new(
                &shown,
                "missing-file",
                format!("{what} not found"),
            ))
        }
        Err(e) => {
            return Err(Problem::new(
                &shown,
                "unreadable",
                format!("cannot read {what}: {e}"),
            ))
        }
        Ok(m) if m.is_dir() => {
            return Err(Problem::new(
                &shown,
                "is-directory",
                format!("{what} is a directory, a file was expected"),
            ))
        }
        Ok(_) => {}
    }
    let bytes = std::fs::read(path)
        .map_err(|e| Problem::new(&shown, "unreadable", format!("cannot read {what}: {e}")))?;
    String::from_utf8(bytes).map_err(|e| {
        let upto = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = upto.iter().filter(|b| **b == b'\n').count() + 1;
        Problem::new(&shown, "not-utf8", format!("{what} is not valid UTF-8"))
            .line(line)
            .hint("save it as UTF-8")
    })
}

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
        problems.push(
            Problem::new(shown, "no-apps-secret", "no RUN mounts the BuildKit secret apps_json")
                .hint("de-build hands apps.json to the build only as `RUN --mount=type=secret,id=apps_json,...`"),
        );
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

/// Everything read from the project, with every problem found on the way.
pub struct Inputs {
    pub paths: Paths,
    pub schema: Schema,
    pub env: EnvValues,
    pub apps: Vec<App>,
    pub problems: Vec<Problem>,
}

/// Load, and stop with every problem (exit 2) unless all is well.
pub fn load_checked(g: &Global) -> crate::error::Result<Inputs> {
    let inputs = load(g);
    if inputs.problems.is_empty() {
        Ok(inputs)
    } else {
        Err(crate::error::Error::Invalid(inputs.problems))
    }
}

pub fn load(g: &Global) -> Inputs {
    load_with(Paths::from_global(g), &|k| std::env::var(k).ok())
}

pub fn load_with(paths: Paths, lookup_env: &dyn Fn(&str) -> Option<String>) -> Inputs {
    let mut problems = Vec::new();

    let example_shown = display(&paths.example);
    let schema = match read_text(&paths.example, "the example env (the schema of .env)") {
        Ok(text) => {
            let (s, p) = Schema::from_example(&example_shown, &text);
            problems.extend(p);
            s
        }
        Err(p) => {
            problems.push(p.hint("de-example.env declares which keys .env must have; pass --example if it lives elsewhere"));
            Schema::default()
        }
    };

    let env_shown = display(&paths.env_file);
    let env_text = match read_text(&paths.env_file, "the env file") {
        Ok(t) => Some(t),
        Err(p) if p.code == "missing-file" && !paths.env_file_explicit => None,
        Err(p) => {
            problems.push(p);
            None
        }
    };
    let (env, env_problems) = envfile::validate(
        &schema,
        &envfile::EnvInput {
            file: env_text.as_deref().map(|t| (env_shown.as_str(), t)),
            lookup_env,
            project_dir: &paths.project_dir,
        },
    );
    if env_text.is_none()
        && !paths.env_file_explicit
        && env_problems.iter().any(|p| p.code == "missing-key")
    {
        problems.push(
            Problem::new(&env_shown, "missing-file", "no env file, and the environment lacks required keys")
                .hint(format!("cp {example_shown} {env_shown} and fill it in (or set the keys in the environment)")),
        );
    }
    problems.extend(env_problems);

    let apps_shown = display(&paths.apps);
    let apps = match read_text(&paths.apps, "apps.json") {
        Ok(text) => {
            let (a, p) = apps::parse(&apps_shown, &text);
            problems.extend(p);
            problems.extend(apps::check_placeholders(&apps_shown, &a, &env, &env_shown));
            a
        }
        Err(p) => {
            problems.push(p.hint("apps.json lists the apps to build into the image; pass --apps if it lives elsewhere"));
            Vec::new()
        }
    };

    if let Some(cf) = env.get("DE_CONTAINERFILE") {
        let path = paths.project_dir.join(cf);
        if let Ok(text) = std::fs::read_to_string(&path) {
            problems.extend(containerfile_problems(&display(&path), &text));
        }
    }

    Inputs {
        paths,
        schema,
        env,
        apps,
        problems,
    }
}

#[cfg(test)]
mod tests {
    use super::containerfile_problems;

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
