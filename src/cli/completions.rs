//! `de-build completions SHELL` and `de-build man`: generated from the clap
//! definition in [`super::args`], so they never drift from the real options.

use super::args::{Cli, CompletionsArgs, ManArgs};
use crate::error::{Error, Result, EXIT_OK};
use crate::ui::output::{self, Style};
use clap::CommandFactory;

/// Write generated text to stdout; a reader that went away (`| head`) is not
/// an error worth a panic.
fn print(text: &[u8]) -> Result<i32> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text).and_then(|_| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Error::failed(format!("write to stdout: {e}")))
        }
        _ => Ok(EXIT_OK),
    }
}

pub fn completions(a: &CompletionsArgs) -> Result<i32> {
    let mut cmd = Cli::command();
    let mut text = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "de-build", &mut text);
    print(&text)
}

pub fn man(a: &ManArgs, style: &Style) -> Result<i32> {
    let cmd = Cli::command();
    match &a.dir {
        None => {
            let mut text = Vec::new();
            clap_mangen::Man::new(cmd)
                .render(&mut text)
                .map_err(|e| Error::failed(format!("render the man page: {e}")))?;
            return print(&text);
        }
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::failed(format!("create {}: {e}", dir.display())))?;
            clap_mangen::generate_to(cmd, dir).map_err(|e| {
                Error::failed(format!("write the man pages into {}: {e}", dir.display()))
            })?;
            if style.json {
                output::json(&serde_json::json!({"command": "man", "ok": true, "dir": dir}));
            } else {
                output::result(&format!(
                    "man pages written to {} (read one with `man -l {}/de-build.1`)",
                    dir.display(),
                    dir.display()
                ));
            }
        }
    }
    Ok(EXIT_OK)
}
