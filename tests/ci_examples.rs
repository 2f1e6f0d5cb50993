//! The shipped CI definitions parse as YAML and call de-build with commands
//! and flags that exist.

use crate::support;
use std::process::Command;

fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_de-build"))
        .args(args)
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every `de-build ...` command line in a YAML value.
fn de_build_lines(v: &serde_yaml::Value, out: &mut Vec<String>) {
    match v {
        serde_yaml::Value::String(s) => {
            for l in s.lines() {
                if let Some(i) = l.find("de-build ") {
                    out.push(l[i..].to_string());
                }
            }
        }
        serde_yaml::Value::Sequence(seq) => seq.iter().for_each(|x| de_build_lines(x, out)),
        serde_yaml::Value::Mapping(m) => m.values().for_each(|x| de_build_lines(x, out)),
        _ => {}
    }
}

#[test]
fn ci_definitions_parse_and_use_real_flags() {
    let root = support::repo_root();
    let global = help(&[]);
    for file in [
        "examples/ci/github-actions.yml",
        "examples/ci/gitlab-ci.yml",
    ] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let doc: serde_yaml::Value =
            serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        let mut lines = Vec::new();
        de_build_lines(&doc, &mut lines);
        assert!(
            lines.iter().any(|l| l.contains(" release")),
            "{file} runs de-build release: {lines:?}"
        );
        for line in &lines {
            let words: Vec<&str> = line
                .split_whitespace()
                .take_while(|w| !matches!(*w, ">" | "|"))
                .collect();
            let cmd = words
                .iter()
                .skip(1)
                .find(|w| !w.starts_with('-'))
                .copied()
                .unwrap_or("");
            let sub = help(&[cmd]);
            for flag in words.iter().filter(|w| w.starts_with("--")) {
                assert!(
                    sub.contains(flag) || global.contains(flag),
                    "{file}: `{line}` uses {flag}, which `de-build {cmd} --help` does not know"
                );
            }
        }
        // The token is a CI secret, never written in the file.
        assert!(
            text.contains("secrets.DE_MACRS_PAT") || text.contains("masked"),
            "{file}"
        );
        assert!(
            text.contains("releases/*.json"),
            "{file} keeps the manifest"
        );
    }
}
