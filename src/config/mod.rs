//! Raw options + files -> one checked set of inputs every command starts from.

pub mod apps;
pub mod compose;
pub mod containerfile;
pub mod envfile;
pub mod version;

use crate::config::apps::App;
use crate::config::containerfile::containerfile_problems;
use crate::config::envfile::{schema::Schema, EnvValues};
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

/// Everything read from the project, with every problem found on the way.
pub struct Inputs {
    pub paths: Paths,
    pub schema: Schema,
    pub env: EnvValues,
    pub apps: Vec<App>,
    /// `DE_COMPOSE_FILE` read and merged (`None` when it could not be).
    pub compose: Option<compose::ComposeSet>,
    pub problems: Vec<Problem>,
}

/// Load, and stop with every problem (exit 2) unless all is well.
pub fn load_checked(paths: &Paths) -> crate::error::Result<Inputs> {
    let inputs = load(paths);
    if inputs.problems.is_empty() {
        Ok(inputs)
    } else {
        Err(crate::error::Error::Invalid(inputs.problems))
    }
}

pub fn load(paths: &Paths) -> Inputs {
    load_with(paths.clone(), &|k| std::env::var(k).ok())
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

    // Everything a deploy relies on in the compose files, checked here so
    // that check, build and deploy refuse before the stack is touched.
    let (compose, compose_problems) =
        compose::load_and_check(&paths.project_dir, &env, &env_shown, lookup_env);
    problems.extend(compose_problems);

    Inputs {
        paths,
        schema,
        env,
        apps,
        compose,
        problems,
    }
}

/// Variables a child process may inherit (and compose files may read from
/// de-build's own environment): what finds and reaches the engine
/// and the compose plugin, nothing else. Every child de-build starts is made
/// here, so a token in de-build's own environment (the CI way) never reaches
/// one.
pub const CHILD_ENV_ALLOW: [&str; 12] = [
    "PATH",
    "HOME",
    "USER",
    "LANG",
    "LC_ALL",
    "TMPDIR",
    "DOCKER_HOST",
    "DOCKER_CONFIG",
    "DOCKER_CONTEXT",
    "DOCKER_CERT_PATH",
    "DOCKER_TLS_VERIFY",
    "XDG_RUNTIME_DIR",
];
