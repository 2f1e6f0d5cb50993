//! The command-line surface: every command explains itself with an example,
//! global options stand apart, completions and man pages come from the same
//! clap definition.

use crate::support;
use clap::CommandFactory;
use support::{Project, Run};

/// Every command and subcommand, by its path of names.
fn all_commands() -> Vec<(String, clap::Command)> {
    fn walk(prefix: &str, cmd: &clap::Command, out: &mut Vec<(String, clap::Command)>) {
        for sub in cmd.get_subcommands() {
            let path = format!("{prefix} {}", sub.get_name()).trim().to_string();
            out.push((path.clone(), sub.clone()));
            walk(&path, sub, out);
        }
    }
    let mut out = Vec::new();
    walk("", &de_build::cli::args::Cli::command(), &mut out);
    out
}

#[test]
fn every_command_has_a_description_and_an_example() {
    let commands = all_commands();
    assert!(commands.len() > 15, "{}", commands.len());
    for (path, cmd) in commands {
        assert!(
            cmd.get_about().is_some_and(|a| !a.to_string().is_empty()),
            "`de-build {path}` has no description"
        );
        let after = cmd
            .get_after_help()
            .map(|h| h.to_string())
            .unwrap_or_default();
        assert!(
            after.contains("Examples:\n  de-build "),
            "`de-build {path}` shows no example"
        );
    }
}

#[test]
fn global_options_are_grouped_apart() {
    let p = Project::empty();
    let out = Run::new(p.path()).args(&["status", "--help"]).output();
    out.code(0);
    let (own, global) = out
        .stdout
        .split_once("Global options")
        .expect("a Global options heading");
    assert!(own.contains("-h, --help"), "{}", out.stdout);
    for opt in ["--project-dir", "--env-file", "--json", "--quiet"] {
        assert!(
            !own.contains(opt),
            "{opt} listed among the command's own options"
        );
        assert!(global.contains(opt), "{opt} missing from Global options");
    }
    assert!(out.stdout.contains("Examples:\n  de-build status"));
}

#[test]
fn completions_for_each_shell_know_every_command() {
    let p = Project::empty();
    for shell in ["bash", "zsh", "fish"] {
        let out = Run::new(p.path()).args(&["completions", shell]).output();
        out.code(0);
        for word in ["rollback", "releases", "restore-backup", "project-dir"] {
            assert!(out.stdout.contains(word), "{shell} completion lacks {word}");
        }
    }
    Run::new(p.path())
        .args(&["completions", "tcsh"])
        .output()
        .code(2);
    assert!(
        p.all_files().is_empty(),
        "printing completions wrote into the project: {:?}",
        p.all_files()
    );
}

#[test]
fn man_pages() {
    let p = Project::empty();
    let out = Run::new(p.path()).args(&["man"]).output();
    out.code(0);
    assert!(out.stdout.starts_with(".ie") || out.stdout.contains(".TH de-build 1"));
    assert!(out.stdout.contains("rollback"));
    let dir = tempfile::tempdir().unwrap();
    let out = Run::new(p.path())
        .args(&["man", "--dir", dir.path().to_str().unwrap()])
        .output();
    out.code(0).stdout_has("man pages written to");
    let page = std::fs::read_to_string(dir.path().join("de-build-rollback.1")).unwrap();
    assert!(page.contains("restore\\-backup"), "{page}");
    assert!(dir.path().join("de-build-releases-diff.1").exists());
}
