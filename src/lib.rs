// Problems are built once per finding on the validation path; their size does not matter.
#![allow(clippy::result_large_err)]

//! de-build: build, record, deploy and roll back custom ERPNext/Frappe images.
//!
//! `main.rs` only calls [`run`]; every command parses into a checked set of
//! inputs, computes what to do as plain values, then executes them.

pub mod apps;
pub mod check;
pub mod cli;
pub mod config;
pub mod envfile;
pub mod error;
pub mod git;
pub mod manifest;
pub mod online;
pub mod output;
pub mod secret;

use clap::Parser;
use error::{Error, EXIT_FAILURE, EXIT_INVALID};
use output::Style;
use std::ffi::OsString;

/// Run the tool with these arguments; returns the process exit code.
pub fn run(args: impl IntoIterator<Item = OsString>) -> i32 {
    let cli = match cli::Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_INVALID } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    let g = &cli.global;
    let style = Style::detect(g.json, g.verbose, g.quiet);
    let result = match &cli.command {
        cli::Command::Check(a) => check::run(g, a, &style),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            report_error(&style, &e);
            e.exit_code()
        }
    }
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
