// Problems are built once per finding on the validation path; their size does not matter.
#![allow(clippy::result_large_err)]

//! de-build: build, record, deploy and roll back custom ERPNext/Frappe images.
//!
//! `main.rs` only calls [`run`]; every command parses into a checked set of
//! inputs, computes what to do as plain values, then executes them.

pub mod apps;
pub mod build;
pub mod check;
pub mod cli;
pub mod compose;
pub mod config;
pub mod context;
pub mod deploy;
pub mod engine;
pub mod envfile;
pub mod error;
pub mod git;
pub mod health;
pub mod logfile;
pub mod manifest;
pub mod online;
pub mod output;
pub mod plan;
pub mod progress;
pub mod prune;
pub mod registry;
pub mod release;
pub mod releases;
pub mod secret;
pub mod state;
pub mod tags;

use clap::Parser;
use error::{Error, EXIT_FAILURE, EXIT_INVALID};
use output::Style;
use std::ffi::OsString;

/// Run the tool with these arguments; returns the process exit code.
pub fn run(args: impl IntoIterator<Item = OsString>) -> i32 {
    let args: Vec<OsString> = args.into_iter().collect();
    let cli = match cli::Cli::try_parse_from(&args) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_INVALID } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    let g = &cli.global;
    let style = Style::detect(g.json, g.verbose, g.quiet);
    let paths = config::Paths::from_global(g);
    // The log lives in the project's state directory; a project directory
    // that does not exist gets no log (the command will say what is wrong).
    if paths.project_dir.is_dir() {
        let argv: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        logfile::open(&paths.state, &argv);
    }
    let result = match &cli.command {
        cli::Command::Check(a) => check::run(g, a, &style),
        cli::Command::Build(a) => block_on(build::run(g, a, &style)),
        cli::Command::Releases(r) => match r {
            cli::ReleasesCommand::List => block_on(releases::list(&paths, &style)),
            cli::ReleasesCommand::Show { version } => releases::show(&paths, version, &style),
            cli::ReleasesCommand::Diff { from, to } => releases::diff(&paths, from, to, &style),
        },
        cli::Command::Tags(cli::TagsCommand::Repair { dry_run }) => {
            block_on(tags::repair(&paths, *dry_run, &style))
        }
        cli::Command::Deploy(a) => block_on(deploy::run_deploy(g, a, &style)),
        cli::Command::Rollback(a) => block_on(deploy::run_rollback(g, a, &style)),
        cli::Command::Status => deploy::run_status(&paths, &style),
        cli::Command::Release(a) => block_on(release::run(g, a, &style)),
        cli::Command::Push(a) => block_on(release::push(g, a, &style)),
        cli::Command::Prune(a) => config::load_checked(g)
            .and_then(|inputs| block_on(prune::run(&inputs, a.keep, a.dry_run, &style))),
        cli::Command::Lock(cli::LockCommand::Release { force }) => {
            deploy::run_lock_release(&paths, *force, &style)
        }
    };
    match result {
        Ok(code) => {
            logfile::finish(code, None);
            code
        }
        Err(e) => {
            report_error(&style, &e);
            let detail = match &e {
                Error::Invalid(p) => p
                    .iter()
                    .map(|p| format!("{}: {}", p.location(), p.message))
                    .collect::<Vec<_>>()
                    .join("; "),
                other => other.to_string(),
            };
            logfile::finish(e.exit_code(), Some(&detail));
            e.exit_code()
        }
    }
}

/// Engine work is async (bollard); everything else is plain code.
fn block_on<T>(fut: impl std::future::Future<Output = error::Result<T>>) -> error::Result<T> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::failed(format!("start the async runtime: {e}")))?;
    rt.block_on(fut)
}

fn report_error(style: &Style, e: &Error) {
    if style.json {
        let problems = match e {
            Error::Invalid(p) => serde_json::to_value(p).unwrap_or_default(),
            _ => serde_json::Value::Array(vec![]),
        };
        output::json(&serde_json::json!({
            "ok": false,
            "exit_code": e.exit_code(),
            "error": {"kind": e.kind(), "message": e.to_string(), "hint": e.hint()},
            "problems": problems,
        }));
        return;
    }
    if let Error::Invalid(problems) = e {
        check::print_problems(style, problems);
    }
    output::diag(&format!("{} {e}", style.red("error:")));
    if let Some(h) = e.hint() {
        output::diag(&format!("  {} {h}", style.dim("hint:")));
    }
    let _ = EXIT_FAILURE;
}
