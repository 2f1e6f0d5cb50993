//! Raw options + files -> one checked set of inputs every command starts from.

pub mod apps;
pub mod compose;
pub mod containerfile;
pub mod envfile;
pub mod rules;
pub mod stack;
pub mod version;

// Input files are read capped and zeroed; the reader lives with `Secret`.
pub use crate::secret::{read_capped, MAX_INPUT_BYTES};

use crate::config::apps::App;
use crate::config::containerfile::{containerfile_problems, Declared};
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

/// What a path is, when it is not the regular file that was expected.
pub fn kind_of(m: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = m.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_fifo() {
        "a named pipe"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_file() {
        "a regular file"
    } else {
        "not a regular file"
    }
}

/// Read a text file, turning every failure into a problem that names it.
/// The text is zeroed when dropped.
pub fn read_text(path: &Path, what: &str) -> Result<zeroize::Zeroizing<String>, Problem> {
    let shown = display(path);
    let meta = match std::fs::metadata(path) {
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
                format!("cannot read {what}: {}", crate::error::io_reason(&e)),
            ))
        }
        Ok(m) if m.is_dir() => {
            return Err(Problem::new(
                &shown,
                "is-directory",
                format!("{what} is a directory, a file was expected"),
            ))
        }
        Ok(m) => m,
    };
    let bytes = match read_capped(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            let kind = if meta.is_file() {
                String::new()
            } else {
                format!(" (it is {})", kind_of(&meta))
            };
            return Err(Problem::new(
                &shown,
                "too-large",
                format!("{what} is {}{kind}", crate::error::io_reason(&e)),
            )
            .hint("point at the intended file: inputs are small text files"));
        }
        Err(e) => {
            return Err(Problem::new(
                &shown,
                "unreadable",
                format!("cannot read {what}: {}", crate::error::io_reason(&e)),
            ))
        }
    };
    match std::str::from_utf8(&bytes) {
        Ok(text) => Ok(zeroize::Zeroizing::new(text.to_string())),
        Err(e) => {
            // Where, never what: the bytes may be part of a token.
            let upto = &bytes[..e.valid_up_to()];
            let line = upto.iter().filter(|b| **b == b'\n').count() + 1;
            let line_start = upto.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            let column = String::from_utf8_lossy(&upto[line_start..]).chars().count() + 1;
            Err(Problem::new(
                &shown,
                "not-utf8",
                format!(
                    "{what} is not valid UTF-8 (first bad byte at line {line}, column {column})"
                ),
            )
            .line(line)
            .hint("save it as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)"))
        }
    }
}

/// Everything read from the project, with every problem found on the way.
pub struct Inputs {
    pub paths: Paths,
    pub schema: Schema,
    pub env: EnvValues,
    pub apps: Vec<App>,
    /// The `ARG`s of `DE_CONTAINERFILE` (none when it could not be read).
    pub containerfile: Declared,
    /// `DE_COMPOSE_FILE` read and merged (`None` when it could not be).
    pub compose: Option<compose::ComposeSet>,
    pub problems: Vec<Problem>,
    /// Findings that do not stop a command but are said before it runs
    /// (e.g. an app without a branch).
    pub warnings: Vec<Problem>,
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
    // A file that exists but cannot be used is one problem: the keys it
    // would have set are not "missing" on top of it.
    let mut env_unusable = schema.keys.is_empty();
    let env_text = match read_text(&paths.env_file, "the env file") {
        Ok(t) => Some(t),
        Err(p) if p.code == "missing-file" && !paths.env_file_explicit => None,
        Err(p) => {
            problems.push(p);
            env_unusable = true;
            None
        }
    };
    let (env, env_problems) = envfile::validate(
        &schema,
        &envfile::EnvInput {
            file: env_text
                .as_deref()
                .map(|t| (env_shown.as_str(), t.as_str())),
            lookup_env,
            project_dir: &paths.project_dir,
        },
    );
    drop(env_text);
    if env_unusable {
        // Without a schema every key would be "unknown" too.
        let noise: &[&str] = if schema.keys.is_empty() {
            &["missing-key", "unknown-key"]
        } else {
            &["missing-key"]
        };
        problems.extend(
            env_problems
                .into_iter()
                .filter(|p| !noise.contains(&p.code)),
        );
    } else {
        if !paths.env_file_explicit
            && env_problems.iter().any(|p| p.code == "missing-key")
            && !paths.env_file.exists()
        {
            problems.push(
                Problem::new(&env_shown, "missing-file", "no env file, and the environment lacks required keys")
                    .hint(format!("cp {example_shown} {env_shown} and fill it in (or set the keys in the environment)")),
            );
        }
        problems.extend(env_problems);
        problems.extend(rules::check(&env, &env_shown, &example_shown));
    }

    let mut warnings = Vec::new();
    let apps_shown = display(&paths.apps);
    let apps = match read_text(&paths.apps, "apps.json") {
        Ok(text) => {
            let (a, p) = apps::parse(&apps_shown, &text);
            problems.extend(p);
            warnings.extend(apps::warnings(&apps_shown, &a));
            if !env_unusable {
                problems.extend(apps::check_placeholders(&apps_shown, &a, &env, &env_shown));
            }
            a
        }
        Err(p) => {
            problems.push(p.hint("apps.json lists the apps to build into the image; pass --apps if it lives elsewhere"));
            Vec::new()
        }
    };

    let mut containerfile = Declared::default();
    if let Some(cf) = env.get("DE_CONTAINERFILE") {
        let path = paths.project_dir.join(cf);
        // Only a regular file: the type check names anything else.
        if path.is_file() {
            if let Ok(text) = read_text(&path, "the Containerfile") {
                problems.extend(containerfile_problems(&display(&path), &text));
                containerfile = Declared {
                    shown: display(&path),
                    args: containerfile::declared_args(&text),
                };
                problems.extend(containerfile::secret_arg_problems(&containerfile, &env));
            }
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
        containerfile,
        compose,
        problems,
        warnings,
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
