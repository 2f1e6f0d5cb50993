//! The command line: clap definitions (`args`) and one entry function per
//! command. Entries are thin: load checked inputs, compute a plan, hand it to
//! the executor, report.

pub mod args;
pub mod build;
pub mod check;
pub mod completions;
pub mod deploy;
pub mod lock;
pub mod prune;
pub mod recover;
pub mod release;
pub mod releases;
pub mod run;
pub mod status;
pub mod swarm;
pub mod tags;

use crate::block_on;
use crate::config::Paths;
use crate::error::Result;
use crate::ui::output::Style;
use args::Global;

/// Every path, resolved once from the global options.
pub fn paths(g: &Global) -> Paths {
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

/// Run the parsed command; returns its exit code or the error to report.
pub fn dispatch(cli: &args::Cli, paths: &Paths, style: &Style) -> Result<i32> {
    use args::{Command, LockCommand, ReleasesCommand, TagsCommand};
    let g = &cli.global;
    match &cli.command {
        Command::Check(a) => check::run(g, a, style),
        Command::Build(a) => block_on(build::run(g, a, style)),
        Command::Releases(r) => match r {
            ReleasesCommand::List => block_on(releases::list(paths, style)),
            ReleasesCommand::Show { version } => releases::show(paths, version, style),
            ReleasesCommand::Diff { from, to } => releases::diff(paths, from, to, style),
        },
        Command::Tags(TagsCommand::Repair { dry_run }) => {
            block_on(tags::repair(paths, *dry_run, style))
        }
        Command::Deploy(a) => block_on(deploy::run_deploy(g, a, style)),
        Command::Rollback(a) => block_on(deploy::run_rollback(g, a, style)),
        Command::Recover(a) => block_on(recover::run_recover(g, a, style)),
        Command::Status => block_on(status::run(paths, style)),
        Command::Release(a) => block_on(release::run(g, a, style)),
        Command::Push(a) => block_on(release::push(g, a, style)),
        Command::Prune(a) => crate::config::load_checked(paths).and_then(|inputs| {
            block_on(prune::run(&inputs, a.keep, a.dry_run, a.build_cache, style))
        }),
        Command::Lock(LockCommand::Release) => {
            let inputs = crate::config::load(paths);
            if swarm::is_swarm(&inputs)? {
                block_on(swarm::lock_release(&inputs, style))
            } else {
                lock::release(paths, style)
            }
        }
        Command::Completions(a) => completions::completions(a),
        Command::Man(a) => completions::man(a, style),
    }
}
