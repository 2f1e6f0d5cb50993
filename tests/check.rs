//! `de-build check` end to end: the real binary on a copy of the bundled example.

mod support;
use support::{Project, CANARY};

fn manifest_json(version: &str) -> String {
    serde_json::json!({
        "schema_version": 1, "version": version, "created": "2026-01-01T00:00:00Z",
        "de_build_version": "0.1.0",
        "image": {"repository": "desiredeffect/erpnext-custom", "tag": version,
                  "reference": format!("desiredeffect/erpnext-custom:{version}"), "id": "sha256:abcdef0123456789"},
        "build_args": {}, "containerfile": {"path": "images/custom/Containerfile", "sha256": "00"},
        "apps": [], "apps_json_sha256": "00", "cache_key": {"value": "00", "source": "app-commits"},
        "project_revision": null, "superseded": null,
        "builder": {"engine_version": "20.10.24", "api_version": "1.41"},
        "smoke_test": {"command": ["bench", "version"], "passed": true}
    })
    .to_string()
}

#[test]
fn bundled_example_passes() {
    let p = Project::example();
    let out = p.run().args(&["check"]).output();
    out.code(0)
        .clean()
        .no_leak(CANARY)
        .stdout_has("check passed: version 1.2.0");
    out.stdout_has("de_macrs")
        .stdout_has("https://github.com/desiredeffect/de_macrs.git");
}

#[test]
fn json_report_is_stable_and_redacted() {
    let p = Project::example();
    let out = p.run().args(&["--json", "check"]).output();
    out.code(0).no_leak(CANARY);
    let j = out.json();
    assert_eq!(j["ok"], true);
    assert_eq!(j["command"], "check");
    assert_eq!(j["version"], "1.2.0");
    assert_eq!(j["apps"].as_array().unwrap().len(), 5);
    let pat = j["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key"] == "DE_MACRS_PAT")
        .unwrap();
    assert_eq!(pat["value"], "***");
    assert_eq!(pat["secret"], true);
    assert_eq!(pat["source"]["kind"], "file");
    assert_eq!(j["problems"].as_array().unwrap().len(), 0);
}

#[test]
fn environment_wins_over_env_file_and_ci_needs_no_file() {
    let p = Project::example();
    let out = p
        .run()
        .args(&["--json", "check"])
        .env("DE_SITE_VERSION", "3.0.0")
        .output();
    out.code(0);
    assert_eq!(out.json()["version"], "3.0.0");
    let out = p
        .run()
        .args(&["check"])
        .env("DE_SITE_VERSION", "3.0.0")
        .output();
    out.code(0)
        .stderr_has("DE_SITE_VERSION comes from the environment and overrides");

    // CI: no .env at all, every value from the environment.
    std::fs::remove_file(p.path().join(".env")).unwrap();
    let mut run = p.run().args(&["--json", "check"]);
    for line in support::good_env().lines() {
        if let Some((k, v)) = line.split_once('=') {
            if !k.starts_with('#') && !k.trim().is_empty() {
                run = run.env(k, v);
            }
        }
    }
    let out = run.output();
    out.code(0).no_leak(CANARY);
    assert_eq!(out.json()["keys"][0]["source"]["kind"], "environment");

    let out = p.run().args(&["check"]).output();
    out.code(2).stderr_has("no env file").stderr_has("cp ");
}

#[test]
fn all_problems_are_reported_at_once() {
    let p = Project::example();
    p.set_env("DE_SITE_VERSION", "1.2")
        .set_env("DE_IMAGE", "")
        .set_env("DE_SITE_VERSON", "1");
    let out = p.run().args(&["--json", "check"]).output();
    out.code(2);
    let codes: Vec<String> = out.json()["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["code"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(codes, vec!["unknown-key", "empty-value", "bad-type"]);
}

#[test]
fn check_writes_only_its_log_and_never_prints_the_token() {
    let p = Project::example();
    let before = p.all_files();
    for args in [&["check"][..], &["--json", "check"], &["-v", "check"]] {
        p.run().args(args).output().code(0).no_leak(CANARY);
    }
    // And on failure paths that talk about the token.
    p.set_env("DE_MACRS_PAT", &format!("{CANARY}@x"));
    p.run()
        .args(&["check"])
        .output()
        .code(2)
        .no_leak(CANARY)
        .stderr_has("DE_MACRS_PAT contains '@'");
    p.run()
        .args(&["--json", "check"])
        .output()
        .code(2)
        .no_leak(CANARY);
    let after = p.all_files();
    let new: Vec<_> = after.iter().filter(|f| !before.contains(f)).collect();
    assert_eq!(
        new,
        vec![&p.path().join(".de-build/de-build.log")],
        "check writes nothing but the tool's log"
    );
    let log = p.read(".de-build/de-build.log");
    assert_eq!(log.matches(" start pid=").count(), 5, "{log}");
    assert!(
        log.contains("ERR check") && log.contains("DE_MACRS_PAT contains '@'"),
        "problems are logged: {log}"
    );
    assert!(!log.contains(CANARY), "token in the log:\n{log}");
}

#[test]
fn version_must_go_up() {
    let p = Project::example();
    p.write("releases/1.1.0.json", &manifest_json("1.1.0"));
    p.run()
        .args(&["check"])
        .output()
        .code(0)
        .stdout_has("newest release: 1.1.0");
    p.write("releases/1.2.0.json", &manifest_json("1.2.0"));
    p.run()
        .args(&["check"])
        .output()
        .code(2)
        .stderr_has("DE_SITE_VERSION 1.2.0 was already released")
        .stderr_has("bump DE_SITE_VERSION (e.g. to 1.2.1)")
        .stderr_has("--replace");
}

/// Malformed inputs: each exits 2 with a message naming the file and the
/// line or entry, never a panic or a Debug dump, never the token.
#[test]
fn malformed_inputs_table() {
    type Setup = fn(&Project);
    let cases: Vec<(&str, Setup, &str)> = vec![
        (
            "missing key",
            |p| {
                let t = p
                    .read(".env")
                    .replace("DE_IMAGE=desiredeffect/erpnext-custom\n", "");
                p.write(".env", &t);
            },
            ".env: DE_IMAGE is missing",
        ),
        (
            "unknown key near miss",
            |p| {
                p.set_env("DE_SITE_VERSON", "1.2.0");
            },
            "did you mean DE_SITE_VERSION?",
        ),
        (
            "empty required",
            |p| {
                p.set_env("DE_IMAGE", "");
            },
            "DE_IMAGE is empty",
        ),
        (
            "not semver",
            |p| {
                p.set_env("DE_SITE_VERSION", "1.2");
            },
            "DE_SITE_VERSION `1.2`: not a semantic version",
        ),
        (
            "duplicate key",
            |p| {
                let t = p.read(".env") + "DE_IMAGE=other/image\n";
                p.write(".env", &t);
            },
            "DE_IMAGE is set twice (first on line",
        ),
        (
            "line that does not parse",
            |p| {
                let t = p.read(".env") + "just some words\n";
                p.write(".env", &t);
            },
            "expected KEY=value",
        ),
        (
            "BOM",
            |p| {
                let t = format!("\u{feff}{}", p.read(".env"));
                p.write(".env", &t);
            },
            ".env:1: file starts with a UTF-8 byte-order mark",
        ),
        (
            "CRLF",
            |p| {
                let t = p.read(".env").replace('\n', "\r\n");
                p.write(".env", &t);
            },
            "line ends with CRLF",
        ),
        (
            "export with empty value",
            |p| {
                let t = p
                    .read(".env")
                    .replace("DE_IMAGE=desiredeffect/erpnext-custom", "export DE_IMAGE=");
                p.write(".env", &t);
            },
            "DE_IMAGE is empty",
        ),
        (
            "quoted value with # never closed",
            |p| {
                p.set_env("DE_IMAGE", "\"image # note");
            },
            "DE_IMAGE: double quote is never closed",
        ),
        (
            "unicode key",
            |p| {
                let t = p.read(".env") + "DÉ_IMAGE=x\n";
                p.write(".env", &t);
            },
            "`DÉ_IMAGE` is not a valid variable name",
        ),
        (
            "placeholder kept",
            |p| {
                p.set_env("DE_MACRS_PAT", "<github-personal-access-token>");
            },
            "DE_MACRS_PAT still has the example's placeholder",
        ),
        (
            "token with @",
            |p| {
                p.set_env("DE_MACRS_PAT", &format!("{CANARY}@evil"));
            },
            "DE_MACRS_PAT contains '@', which would break the URL",
        ),
        (
            "token with #",
            |p| {
                p.set_env("DE_MACRS_PAT", &format!("'{CANARY}#x'"));
            },
            "DE_MACRS_PAT contains '#'",
        ),
        (
            "path that does not exist",
            |p| {
                p.set_env("DE_CONTAINERFILE", "images/nope/Containerfile");
            },
            "does not exist",
        ),
        (
            "env file is a directory",
            |p| {
                std::fs::remove_file(p.path().join(".env")).unwrap();
                std::fs::create_dir(p.path().join(".env")).unwrap();
            },
            ".env: the env file is a directory",
        ),
        (
            "apps.json not UTF-8",
            |p| {
                p.write_bytes("apps.json", b"[\n{\"url\": \"\xff\xfe\"}]");
            },
            "apps.json:2: apps.json is not valid UTF-8",
        ),
        (
            "apps.json dangling symlink",
            |p| {
                std::fs::remove_file(p.path().join("apps.json")).unwrap();
                std::os::unix::fs::symlink("/nonexistent/apps.json", p.path().join("apps.json"))
                    .unwrap();
            },
            "apps.json: apps.json not found",
        ),
        (
            "truncated JSON",
            |p| {
                let t = p.read("apps.json");
                p.write("apps.json", &t[..t.len() / 2]);
            },
            "the JSON ends too early",
        ),
        (
            "empty apps.json",
            |p| {
                p.write("apps.json", "");
            },
            "apps.json: apps.json is empty",
        ),
        (
            "apps.json with BOM",
            |p| {
                let t = format!("\u{feff}{}", p.read("apps.json"));
                p.write("apps.json", &t);
            },
            "apps.json:1: file starts with a UTF-8 byte-order mark",
        ),
        (
            "apps.json not a list",
            |p| {
                p.write(
                    "apps.json",
                    r#"{"url": "https://github.com/frappe/erpnext", "branch": "v15"}"#,
                );
            },
            "must be a JSON list",
        ),
        (
            "entry without branch",
            |p| {
                p.write(
                    "apps.json",
                    r#"[{"url": "https://github.com/frappe/erpnext"}]"#,
                );
            },
            "apps.json: entry #1 (erpnext): \"branch\" is missing",
        ),
        (
            "entry not an object",
            |p| {
                p.write(
                    "apps.json",
                    r#"[{"url": "https://github.com/frappe/erpnext", "branch": "v15"}, "hrms"]"#,
                );
            },
            "apps.json: entry #2: entry is not an object",
        ),
        (
            "duplicate app",
            |p| {
                p.write("apps.json", r#"[{"url": "https://github.com/frappe/hrms", "branch": "a"}, {"url": "https://github.com/frappe/hrms.git", "branch": "b"}]"#);
            },
            "entry #2 (hrms): app hrms is listed twice",
        ),
        (
            "unknown field",
            |p| {
                p.write(
                    "apps.json",
                    r#"[{"url": "https://github.com/frappe/hrms", "brnch": "a"}]"#,
                );
            },
            "did you mean \"branch\"?",
        ),
        (
            "placeholder with no key",
            |p| {
                p.write("apps.json", r#"[{"url": "https://${DE_MACRS_TOKEN}@github.com/o/de_macrs.git", "branch": "a"}]"#);
            },
            "${DE_MACRS_TOKEN} does not name a key",
        ),
        (
            "placeholder of a non-secret key",
            |p| {
                p.write(
                    "apps.json",
                    r#"[{"url": "https://${DE_IMAGE}@github.com/o/de_macrs.git", "branch": "a"}]"#,
                );
            },
            "which is not marked secret",
        ),
        (
            "placeholder never closed",
            |p| {
                p.write("apps.json", r#"[{"url": "https://${DE_MACRS_PAT@github.com/o/de_macrs.git", "branch": "a"}]"#);
            },
            "placeholder is never closed",
        ),
        (
            "not a git URL",
            |p| {
                p.write(
                    "apps.json",
                    r#"[{"url": "ftp://github.com/o/x.git", "branch": "a"}]"#,
                );
            },
            "is not a git URL",
        ),
        (
            "bad annotation in example",
            |p| {
                let t = p.read("de-example.env").replace(
                    "# @type semver\nDE_SITE_VERSION",
                    "# @type float\nDE_SITE_VERSION",
                );
                p.write("de-example.env", &t);
            },
            "unknown type `float` for DE_SITE_VERSION",
        ),
        (
            "example missing",
            |p| {
                std::fs::remove_file(p.path().join("de-example.env")).unwrap();
            },
            "de-example.env: the example env (the schema of .env) not found",
        ),
        (
            "example empty",
            |p| {
                p.write("de-example.env", "");
            },
            "the example file declares no keys",
        ),
        (
            "Containerfile without CACHE_BUST",
            |p| {
                let t = p
                    .read("images/custom/Containerfile")
                    .replace("ARG CACHE_BUST=none", "ARG OTHER=none");
                p.write("images/custom/Containerfile", &t);
            },
            "has no `ARG CACHE_BUST` in scope",
        ),
        (
            "version reused",
            |p| {
                p.write("releases/1.2.0.json", &manifest_json("1.2.0"));
            },
            "was already released",
        ),
        (
            "version older than newest",
            |p| {
                p.write("releases/2.0.0.json", &manifest_json("2.0.0"));
            },
            "is older than the newest release 2.0.0",
        ),
        (
            "malformed manifest",
            |p| {
                p.write("releases/1.0.0.json", "{\"version\": ");
            },
            "releases/1.0.0.json: not a release manifest",
        ),
    ];
    assert!(cases.len() >= 25);
    let mut failures = Vec::new();
    for (name, setup, expect) in &cases {
        let p = Project::example();
        setup(&p);
        let out = p.run().args(&["check"]).output();
        let ok = out.code == 2
            && out.stderr.contains(expect)
            && !out.stderr.contains("panicked")
            && !out.stderr.contains(CANARY)
            && !out.stdout.contains(CANARY);
        if !ok {
            failures.push(format!(
                "[{name}] exit {} expected 2 with {expect:?}\n{}",
                out.code, out.stderr
            ));
        }
        // The JSON form carries the same finding.
        let out = p.run().args(&["--json", "check"]).output();
        if out.code != 2 || !out.stdout.contains("\"problems\"") || out.stdout.contains(CANARY) {
            failures.push(format!(
                "[{name}] --json: exit {}\n{}",
                out.code, out.stdout
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn usage_errors_exit_2_and_help_teaches() {
    let p = Project::example();
    p.run()
        .args(&["check", "--bogus"])
        .output()
        .code(2)
        .stderr_has("--bogus");
    let out = p.run().args(&["--help"]).output();
    out.code(0).stdout_has("Exit codes:").stdout_has("check");
    p.run()
        .args(&["--env-file", "/nonexistent/.env", "check"])
        .output()
        .code(2)
        .stderr_has("/nonexistent/.env: the env file not found");
}

#[test]
fn containerfile_takes_apps_json_only_as_a_secret() {
    let text =
        std::fs::read_to_string(support::repo_root().join("images/custom/Containerfile")).unwrap();
    let first = text.lines().next().unwrap_or("");
    assert!(
        !first.to_ascii_lowercase().contains("syntax="),
        "a # syntax= line would pull an image"
    );
    assert!(!text
        .lines()
        .any(|l| l.trim_start().to_ascii_lowercase().starts_with("# syntax")));
    assert!(text.contains("--mount=type=secret,id=apps_json"));
    assert!(
        !text.contains("APPS_JSON_BASE64"),
        "apps.json must not be a build-arg"
    );
    let args: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("ARG "))
        .map(|a| a.split('=').next().unwrap())
        .collect();
    for want in [
        "FRAPPE_PATH",
        "FRAPPE_BRANCH",
        "PYTHON_VERSION",
        "NODE_VERSION",
        "CACHE_BUST",
    ] {
        assert!(args.contains(&want), "ARG {want} missing: {args:?}");
    }
    // The secret is mounted only in RUN instructions, never copied or set as ENV.
    for l in text.lines().filter(|l| l.contains("apps_json")) {
        assert!(
            l.trim_start().starts_with("RUN --mount=type=secret")
                || l.trim_start().starts_with('#'),
            "{l}"
        );
    }
}
