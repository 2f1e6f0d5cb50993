//! Command-line surface (clap derive). Parsing only: no I/O here.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  failure (engine, git, I/O, a build step)
  2  invalid input or refused operation (every problem is listed)
  3  deploy/rollback failed and the previous release was recovered
  4  fatal: recovery failed; the message says what is left to do
  5  another deploy/rollback holds the lock";

#[derive(Debug, Parser)]
#[command(
    name = "de-build",
    version,
    about = "Build, record, deploy and roll back custom ERPNext/Frappe Docker images",
    long_about = "Build, record, deploy and roll back custom ERPNext/Frappe Docker images.\n\n\
        Typical flow: `de-build check --online`, `de-build build`, `de-build deploy`.\n\
        Configuration comes from .env (checked against de-example.env) and apps.json;\n\
        variables set in the process environment win over .env.",
    after_help = EXIT_CODES
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Global options (before or after the command)")]
pub struct Global {
    /// Project directory holding .env, de-example.env, apps.json and releases/.
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        default_value = ".",
        env = "DE_PROJECT_DIR"
    )]
    pub project_dir: PathBuf,
    /// The .env file [default: <project-dir>/.env]. Optional: without it values come from the environment.
    #[arg(long, global = true, value_name = "FILE")]
    pub env_file: Option<PathBuf>,
    /// The annotated example env that is the schema [default: <project-dir>/de-example.env].
    #[arg(long, global = true, value_name = "FILE")]
    pub example: Option<PathBuf>,
    /// The apps list in frappe_docker's format [default: <project-dir>/apps.json].
    #[arg(long, global = true, value_name = "FILE")]
    pub apps: Option<PathBuf>,
    /// Print one machine-readable JSON document on stdout instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Show more detail (e.g. every build log line).
    #[arg(short, long, global = true)]
    pub verbose: bool,
    /// Show only errors and the result.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate .env, apps.json and the version before a build.
    #[command(
        after_help = "Examples:\n  de-build check\n  de-build check --online\n  de-build --json check\n\n\
        Checks: every .env key against de-example.env (types, required, secrets, placeholders),\n\
        apps.json (format, duplicates, ${TOKEN} placeholders, no token written into a URL), the\n\
        Containerfile, and that DE_SITE_VERSION is newer than every release in releases/. An app\n\
        without a branch (bench clones the default branch) is a warning, not a problem. --online\n\
        also asks each app's git remote whether the credentials work and the branch or tag exists."
    )]
    Check(CheckArgs),
    /// Build the image with BuildKit, smoke-test it and record the release.
    #[command(
        after_help = "Examples:\n  de-build build\n  de-build build --dry-run\n  de-build build --replace     # rebuild an existing version on purpose\n  de-build build --offline     # no git access; cache key from apps.json\n  de-build build --build-arg DEBIAN_BASE=bookworm --build-arg INSTALL_CHROMIUM=true\n\n\
        Runs the checks of `de-build check`, resolves each app's branch/tag to a commit\n\
        (CACHE_BUST = hash of those commits; an app without a branch: its default branch),\n\
        builds ${DE_IMAGE}:${DE_SITE_VERSION} through the Docker Engine API with apps.json\n\
        (tokens filled in memory) as BuildKit secret apps_json, smoke-tests the image and writes\n\
        releases/<version>.json. A taken tag is refused unless --replace; nothing is ever left\n\
        <none>:<none>.\n\n\
        Build-args: every non-secret .env key named like an ARG of the Containerfile, then each\n\
        --build-arg KEY=VALUE (which wins). A KEY the Containerfile declares no ARG for, CACHE_BUST,\n\
        a value holding a secret's value, or an ARG named like a @secret key is refused (exit 2):\n\
        build-args stay in `docker history` and the manifest; secrets reach the build only as\n\
        the BuildKit secret apps_json."
    )]
    Build(BuildArgs),
    /// Recorded releases: list, show, diff.
    #[command(
        subcommand,
        after_help = "Examples:\n  de-build releases list\n  de-build releases show 1.2.0\n  de-build releases diff 1.1.0 1.2.0"
    )]
    Releases(ReleasesCommand),
    /// Image tags of recorded releases.
    #[command(
        subcommand,
        after_help = "Examples:\n  de-build tags repair --dry-run\n  de-build tags repair"
    )]
    Tags(TagsCommand),
    /// Deploy a recorded release: lock, maintenance, backup, replace the stack, migrate, health gate.
    #[command(
        after_help = "Examples:\n  de-build deploy            # DE_SITE_VERSION\n  de-build deploy 1.2.0 --dry-run\n  de-build deploy --full-down\n\n\
        With a release running and a schema change to migrate (DE_MIGRATE=auto compares the\n\
        releases' schema fingerprints): maintenance on, queued jobs drained (`bench --site <s>\n\
        ready-for-migration` until READY, at most DE_DRAIN_TIMEOUT seconds; then\n\
        DE_DRAIN_ON_TIMEOUT=abort stops with nothing changed, =proceed goes on), every site backed up;\n\
        then one compose pass recreates the services that run the release image (others, such as\n\
        the database, keep running; anonymous volumes such as logs carry over; an old app container\n\
        left behind is removed), or with --full-down a complete `down` with the compose file\n\
        recorded at the last up, then `up`. Without a migrate there is no maintenance or backup,\n\
        and with a door (DE_DOOR: a proxy service that publishes the port) the new web tier starts\n\
        beside the old one, is asked directly, the door is reloaded onto it and the old one retires\n\
        gracefully: no failed request (a rollback takes the same path).\n\
        Then every app container is checked to run the release's image, `bench --site <s> migrate`\n\
        runs in DE_BACKEND_SERVICE, and DE_HEALTH_URL must answer (2xx or the maintenance 503;\n\
        the request's Host is DE_HEALTH_HOST, else the first site of DE_SITES)\n\
        while still in maintenance; only then does maintenance go off and the URL must answer 2xx.\n\
        On a failure after the stack was touched the previous release comes back with its own\n\
        compose file (exit 3); the pre-deploy backup is restored only if a migrate ran and no user\n\
        could have written since. If recovery fails too, the message says what is left (exit 4).\n\
        Ctrl-C, SIGTERM or SIGHUP stop after the running step and recover; a second one stops at\n\
        once and leaves the deployment for `de-build recover`.\n\
        Exit codes: 0 deployed, 1 failed before changing the stack, 2 refused (bad input, an\n\
        interrupted deployment to recover first), 3 recovered, 4 recovery failed, 5 locked."
    )]
    Deploy(DeployArgs),
    /// Go back to an earlier deployed release (no migrate; optionally restore its backups).
    #[command(
        after_help = "Examples:\n  de-build rollback\n  de-build rollback 1.1.0\n  de-build rollback --restore-backup 20261123T101010.123Z-4242"
    )]
    Rollback(RollbackArgs),
    /// What runs, compared with what is recorded: exit 0 only when they agree.
    #[command(
        after_help = "Examples:\n  de-build status\n  de-build --json status | jq .consistent\n\n\
        Reads the deployment records and asks the engine which images the project's containers\n\
        run. Reports an interrupted deployment (its process is gone), a stale lock, a record that\n\
        cannot be read, a recorded stack that is not running, or containers running another image.\n\
        Exit codes: 0 records and engine agree and nothing is interrupted; 1 otherwise (the\n\
        output says what differs and what to run)."
    )]
    Status,
    /// Finish or undo an interrupted deployment, from its record.
    #[command(
        after_help = "Examples:\n  de-build recover --dry-run\n  de-build recover\n\n\
        After a deploy or rollback whose process died (kill -9, a lost SSH session, a second\n\
        Ctrl-C) or whose recovery failed: takes the lock, then from the record's progress brings\n\
        the previous release back (restoring the pre-deploy backup only if a migrate ran while no\n\
        user could write), turns maintenance off and closes the record as recovered. A deployment\n\
        that had finished every step is checked with the health gate and closed as succeeded.\n\
        Exit codes: 0 nothing to recover or completed, 3 recovered, 4 recovery failed, 5 locked."
    )]
    Recover(RecoverArgs),
    /// For CI: check --online, build, smoke test, push, record, optionally deploy.
    #[command(
        after_help = "Examples:\n  de-build --json release\n  de-build release --deploy\n\n\
        Never prompts. Configuration may come from the environment alone (CI secrets as env\n\
        vars; the environment wins over .env). With DE_REGISTRY set, the image is pushed as\n\
        DE_REGISTRY/DE_IMAGE:DE_SITE_VERSION through the engine (credentials DE_REGISTRY_USER /\n\
        DE_REGISTRY_PASSWORD) and its digest is recorded; a pushed tag is never overwritten.\n\
        --json prints one JSON document on stdout; progress goes to stderr."
    )]
    Release(ReleaseArgs),
    /// Push a recorded release to DE_REGISTRY and record its digest.
    #[command(
        after_help = "Examples:\n  de-build push            # DE_SITE_VERSION\n  de-build push 1.2.0\n\n\
        Retries the push of a release whose `de-build release` could not push. A version already\n\
        in the registry with another digest is refused: tags there are never overwritten."
    )]
    Push(PushArgs),
    /// Remove old de-build images and dangling build cache; never a rollback target.
    #[command(
        after_help = "Examples:\n  de-build prune --dry-run\n  de-build prune --keep 3\n\n\
        Always kept: the images of the current and previous deployments, of the newest --keep\n\
        releases and their recovery (-superseded-) images, and any image de-build did not build."
    )]
    Prune(PruneArgs),
    /// The deploy lock.
    #[command(
        subcommand,
        after_help = "Examples:\n  de-build status           # who holds the lock\n  de-build lock release"
    )]
    Lock(LockCommand),
    /// Print a shell completion script for de-build.
    #[command(
        after_help = "Examples:\n  de-build completions bash > ~/.local/share/bash-completion/completions/de-build\n  \
        de-build completions zsh > ~/.zfunc/_de-build      # with fpath+=(~/.zfunc) in ~/.zshrc\n  \
        de-build completions fish > ~/.config/fish/completions/de-build.fish"
    )]
    Completions(CompletionsArgs),
    /// Print the manual page (roff), or write one page per command into a directory.
    #[command(
        after_help = "Examples:\n  de-build man | man -l -\n  de-build man --dir /usr/local/share/man/man1"
    )]
    Man(ManArgs),
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write de-build.1 and a de-build-<command>.1 per command into DIR instead of printing de-build.1.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Also contact each app's git remote (credentials, branch/tag, commit).
    #[arg(long)]
    pub online: bool,
    /// Seconds to wait for each remote with --online.
    #[arg(long, default_value_t = 20, value_name = "SECS")]
    pub timeout: u64,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Rebuild a version whose tag exists: the current image is kept as
    /// <version>-superseded-<id> and both are recorded in the manifest.
    #[arg(long)]
    pub replace: bool,
    /// Do not resolve app commits with git; the cache key is then the apps.json hash.
    #[arg(long)]
    pub offline: bool,
    /// Build without BuildKit's cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Build context directory [default: the project directory].
    #[arg(long, value_name = "DIR")]
    pub context: Option<PathBuf>,
    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Seconds to wait for each git remote when resolving commits.
    #[arg(long, default_value_t = 20, value_name = "SECS")]
    pub timeout: u64,
    /// Pass a build-arg to an ARG the Containerfile declares (repeatable;
    /// wins over a .env key of the same name). Recorded in the manifest, so
    /// never a secret; CACHE_BUST is de-build's.
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    pub build_arg: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum ReleasesCommand {
    /// Every recorded release, newest first, and whether its image is present.
    #[command(
        after_help = "Examples:\n  de-build releases list\n  de-build --json releases list | jq '.releases[].version'"
    )]
    List,
    /// One release's manifest.
    #[command(
        after_help = "Examples:\n  de-build releases show 1.2.0\n  de-build --json releases show 1.2.0 | jq .manifest.apps"
    )]
    Show {
        /// The release version, e.g. 1.2.0.
        version: String,
    },
    /// What changed between two releases: image, content, apps, commits, build-args, Containerfile.
    #[command(
        after_help = "Examples:\n  de-build releases diff 1.1.0 1.2.0\n  de-build --json releases diff 1.1.0 1.2.0 | jq .same_content\n\n\
        The image ID differs for any two builds (labels hold the version and build time); the\n\
        content digest (layers + runtime config) tells whether what runs changed. Same apps,\n\
        build-args and Containerfile with other content: a file of the build context changed."
    )]
    Diff {
        /// The older release, e.g. 1.1.0.
        from: String,
        /// The newer release, e.g. 1.2.0.
        to: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TagsCommand {
    /// Put back version tags that recorded images lost (e.g. to a manual `docker build`).
    #[command(
        after_help = "Examples:\n  de-build tags repair --dry-run\n  de-build tags repair\n\n\
        An image that took a recorded version's tag is kept as <version>-untracked-<id>."
    )]
    Repair {
        /// Show what would be re-tagged and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// Release to deploy [default: DE_SITE_VERSION].
    pub version: Option<String>,
    /// Bring the running stack fully down (with its recorded compose file)
    /// before bringing the new one up, instead of recreating every container
    /// in one pass. Same guarantees, longer outage.
    #[arg(long)]
    pub full_down: bool,
    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Migrate even if the schema fingerprint is unchanged (overrides DE_MIGRATE).
    #[arg(long, conflicts_with = "no_migrate")]
    pub migrate: bool,
    /// Do not migrate (nor enter maintenance or back up), whatever changed
    /// (overrides DE_MIGRATE).
    #[arg(long)]
    pub no_migrate: bool,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// Release to go back to [default: the previous successfully deployed one].
    pub version: Option<String>,
    /// Also restore the backups taken by this deployment (its id from `de-build status`):
    /// the database as it was before that deployment migrated it.
    #[arg(long, value_name = "DEPLOYMENT")]
    pub restore_backup: Option<String>,
    /// Bring the running stack fully down before bringing the target up.
    #[arg(long)]
    pub full_down: bool,
    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Subcommand)]
pub enum LockCommand {
    /// Remove a lock left by a process that is gone. A lock whose process
    /// runs cannot be broken: the operating system holds it for that process.
    #[command(after_help = "Examples:\n  de-build lock release")]
    Release,
}

#[derive(Debug, Args)]
pub struct RecoverArgs {
    /// Print what would be done and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct ReleaseArgs {
    /// Deploy the release after it is recorded (see `de-build deploy`).
    #[arg(long)]
    pub deploy: bool,
    /// Do not resolve app commits with git (cache key from apps.json).
    #[arg(long)]
    pub offline: bool,
    /// Build without BuildKit's cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Seconds to wait for each git remote.
    #[arg(long, default_value_t = 20, value_name = "SECS")]
    pub timeout: u64,
    /// Pass a build-arg to an ARG the Containerfile declares (repeatable;
    /// see `de-build build --help`).
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    pub build_arg: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// Release to push [default: DE_SITE_VERSION].
    pub version: Option<String>,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// How many of the newest releases keep their images (plus current and previous deployments).
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub keep: usize,
    /// List what would be removed and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Also prune the engine's build cache. It is engine-wide: every
    /// project's cache on this engine goes, not only de-build's.
    #[arg(long)]
    pub build_cache: bool,
}
