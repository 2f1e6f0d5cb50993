//! The layers of ARCHITECTURE.md, enforced: a module may use its own layer
//! and the layers below it, never one above. A new dependency that points up
//! fails here with the file and the line.

use std::path::Path;

/// Top to bottom. `secret` sits under `record`/`config` and over `ui` (it
/// registers values with the redactor); `error` and `util` are the base.
const LAYERS: &[&[&str]] = &[
    &["cli"],
    &["exec"],
    &["adapters"],
    &["plan"],
    &["config"],
    &["record"],
    &["secret"],
    &["ui"],
    &["error", "util"],
];

fn rank(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn rs_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn dependencies_only_point_down() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rs_files(&src, &mut files);
    let mut violations = Vec::new();
    let mut checked = 0;
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let own = first.trim_end_matches(".rs").to_string();
        if own == "lib" || own == "main" {
            continue;
        }
        let own_rank = rank(&own).unwrap_or_else(|| {
            panic!(
                "{} is in no layer: add `{own}` to LAYERS and ARCHITECTURE.md",
                rel.display()
            )
        });
        let text = std::fs::read_to_string(f).unwrap();
        for (n, line) in text.lines().enumerate() {
            let mut rest = line;
            while let Some(i) = rest.find("crate::") {
                rest = &rest[i + 7..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                checked += 1;
                match rank(&name) {
                    // `crate::block_on` and other items of lib.rs: the top.
                    None if own == "cli" => {}
                    None => violations.push(format!(
                        "{}:{}: uses crate::{name}, which is in no layer",
                        rel.display(),
                        n + 1
                    )),
                    Some(r) if r < own_rank => violations.push(format!(
                        "{}:{}: layer `{own}` uses `{name}`, a layer above it",
                        rel.display(),
                        n + 1
                    )),
                    Some(_) => {}
                }
            }
        }
    }
    assert!(checked > 100, "the scan found only {checked} paths");
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
fn the_layers_documented_are_the_layers_enforced() {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("ARCHITECTURE.md"))
            .unwrap();
    for layer in LAYERS.iter().flat_map(|l| l.iter()) {
        assert!(
            doc.contains(&format!("`{layer}`")) || doc.contains(&format!("`{layer}/`")),
            "ARCHITECTURE.md does not mention {layer}"
        );
    }
}
