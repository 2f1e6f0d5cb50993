// Problems are built once per finding on the validation path; their size does not matter.
#![allow(clippy::result_large_err)]

//! de-build: build, record, deploy and roll back custom ERPNext/Frappe images.
//!
//! `main.rs` only calls [`run`]; every command parses into a checked set of
//! inputs, computes what to do as plain values, then executes them.

pub mod adapters;
pub mod cli;
pub mod config;
pub mod error;
pub mod exec;
pub mod plan;
pub mod record;
pub mod secret;
pub mod ui;
pub mod util;

use clap::Parser;
use error::{Error, EXIT_INVALID};
use std::ffi::OsString;
use ui::output::Style;

/// Run the tool with these arguments; returns the process exit code.
pub fn run(args: impl IntoIterator<Item = OsString>) -> i32 {
    let args: Vec<OsString> = args.into_iter().collect();
    let cli = match cli::args::Cli::try_parse_from(&args) {
        Ok(c) => c,
        Err(e) => {
            if !e.use_stderr() {
                // --help, --version: our own text.
                let _ = e.print();
                return 0;
            }
            // A usage error quotes the arguments: through the sink, which
            // escapes control characters and masks secrets.
            ui::output::diag(e.render().to_string().trim_end());
            return EXIT_INVALID;
        }
    };
    let g = &cli.global;
    let style = Style::detect(g.json, g.verbose, g.quiet);
    let paths = cli::paths(g);
    // The log lives in the project's state directory; a project directory
    // that does not exist gets no log (the command will say what is wrong).
    // Printing completions or the man page touches no project.
    let touches_project = !matches!(
        cli.command,
        cli::args::Command::Completions(_) | cli::args::Command::Man(_)
    );
    if touches_project && paths.project_dir.is_dir() {
        let argv: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        ui::logfile::open(&paths.state, &argv);
    }
    let result = cli::dispatch(&cli, &paths, &style);
    match result {
        Ok(code) => {
            ui::logfile::finish(code, None);
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
            ui::logfile::finish(e.exit_code(), Some(&detail));
            e.exit_code()
        }
    }
}

/// Engine work is async (bollard); everything else is plain code.
pub(crate) fn block_on<T>(
    fut: impl std::future::Future<Output = error::Result<T>>,
) -> error::Result<T> {
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
        ui::output::json(&serde_json::json!({
            "ok": false,
            "exit_code": e.exit_code(),
            "error": {"kind": e.kind(), "message": e.to_string(), "hint": e.hint()},
            "problems": problems,
        }));
        return;
    }
    if let Error::Invalid(problems) = e {
        crate::ui::problems::print_problems(style, problems);
    }
    ui::output::diag(&format!("{} {e}", style.red("error:")));
    if let Some(h) = e.hint() {
        ui::output::diag(&format!("  {} {h}", style.dim("hint:")));
    }
}
