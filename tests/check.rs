//! `de-build check` end to end: the real binary on a copy of the bundled example.

use crate::support;
use support::{good_env, Project, CANARY};

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

/// A frappe_docker user brings their `.env` as it is: every key of
/// frappe_docker's example.env (its keys and sample values, as of v16) is
/// declared in the schema, and the de-build keys are appended.
#[test]
fn a_frappe_docker_env_file_is_accepted_with_de_build_keys_appended() {
    let p = Project::example();
    let frappe_docker_env = "ERPNEXT_VERSION=v16.32.3\nDB_PASSWORD=123\nDB_PASSWORD_SECRETS_FILE=\n\
        DB_HOST=\nDB_PORT=\nREDIS_CACHE=\nREDIS_QUEUE=\nGUNICORN_THREADS=4\nGUNICORN_WORKERS=2\n\
        GUNICORN_TIMEOUT=120\nLETSENCRYPT_EMAIL=mail@example.com\nFRAPPE_SITE_NAME_HEADER=\n\
        HTTP_PUBLISH_PORT=\nHTTPS_PUBLISH_PORT=\nUPSTREAM_REAL_IP_ADDRESS=\nUPSTREAM_REAL_IP_HEADER=\n\
        UPSTREAM_REAL_IP_RECURSIVE=\nPROXY_READ_TIMEOUT=\nCLIENT_MAX_BODY_SIZE=\n\
        SITES_RULE=Host(`erp.example.com`)\nNGINX_PROXY_HOSTS=erp.example.com\n";
    // The de-build part: the keys that have no default.
    let ours: String = good_env()
        .lines()
        .filter(|l| {
            [
                "DE_IMAGE=",
                "DE_SITE_VERSION=",
                "DE_CONTAINERFILE=",
                "DE_MACRS_PAT=",
                "COMPOSE_PROJECT_NAME=",
                "DE_COMPOSE_FILE=",
                "DE_BACKEND_SERVICE=",
                "DE_SITES=",
                "DE_HEALTH_URL=",
            ]
            .iter()
            .any(|k| l.starts_with(k))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    p.write(".env", &format!("{frappe_docker_env}{ours}"));
    let out = p.run().args(&["check"]).output();
    out.code(0).no_leak(CANARY).no_leak("DB_PASSWORD=123");
    assert!(!out.stderr.contains("not declared"), "{}", out.stderr);
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

/// frappe_docker's apps.json forms that bench accepts: an entry without a
/// branch (a warning, not a problem) and an empty list (Frappe alone).
#[test]
fn an_app_without_branch_warns_and_an_empty_list_passes() {
    let p = Project::example();
    p.write(
        "apps.json",
        r#"[{"url": "https://github.com/frappe/erpnext"}, {"url": "https://github.com/frappe/hrms", "branch": "v15.13.1"}]"#,
    );
    let out = p.run().args(&["check"]).output();
    out.code(0)
        .clean()
        .stderr_has("warning: ")
        .stderr_has("apps.json: entry #1 (erpnext): no \"branch\": bench clones the default branch of erpnext")
        .stderr_has("hint: pin a release tag")
        .stdout_has("check passed: version 1.2.0, 2 app(s)")
        .stdout_has("@ HEAD (default branch)");
    let out = p.run().args(&["--json", "check"]).output();
    out.code(0);
    let j = out.json();
    assert_eq!(j["ok"], true);
    assert_eq!(j["problems"].as_array().unwrap().len(), 0);
    let w = j["warnings"].as_array().unwrap();
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0]["code"], "no-branch");
    assert_eq!(w[0]["entry"], "#1 (erpnext)");
    assert_eq!(j["apps"][0]["ref"], "HEAD");
    assert_eq!(j["apps"][0]["default_branch"], true);
    assert_eq!(j["apps"][1]["ref"], "v15.13.1");
    assert!(j["apps"][1].get("default_branch").is_none());

    p.write("apps.json", "[]\n");
    let out = p.run().args(&["check"]).output();
    out.code(0).clean().stdout_has("0 app(s)");
    let out = p.run().args(&["--json", "check"]).output();
    out.code(0);
    assert_eq!(out.json()["apps"], serde_json::json!([]));
    assert_eq!(out.json()["warnings"], serde_json::json!([]));
}

/// A token written into apps.json itself is refused, and never printed: not
/// in text, `-v` or `--json` output, not in the log (whose problems it
/// would otherwise describe).
#[test]
fn a_literal_token_in_apps_json_is_refused_and_never_shown() {
    let p = Project::example();
    for url in [
        format!("https://{KEYLIKE}@github.com/desiredeffect/de_macrs.git"),
        format!("https://user:{KEYLIKE}@github.com/desiredeffect/de_macrs.git"),
    ] {
        p.write(
            "apps.json",
            &serde_json::json!([
                {"url": "https://github.com/frappe/erpnext", "branch": "v15.17.0"},
                {"url": url, "branch": "v0.0.4"},
            ])
            .to_string(),
        );
        for args in [&["check"][..], &["-v", "check"], &["--json", "check"]] {
            let out = p.run().args(args).output();
            out.code(2).clean();
            for (what, text) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
                assert_eq!(unclean(text), None, "{args:?} {what}:\n{text}");
            }
            if args[0] == "--json" {
                let j = out.json();
                assert_eq!(j["problems"][0]["code"], "literal-credential");
                assert_eq!(j["problems"][0]["entry"], "#2 (de_macrs)");
                assert!(j["problems"][0]["hint"]
                    .as_str()
                    .unwrap()
                    .contains("https://${KEY}@host/org/app.git"));
            } else {
                out.stderr_has("entry #2 (de_macrs): \"url\" holds a literal");
            }
        }
    }
    let log = p.read(".de-build/de-build.log");
    assert!(log.contains("holds a literal"), "{log}");
    assert_eq!(unclean(&log), None, "the log:\n{log}");
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

/// A second canary shaped like a key (letters, digits and `_`, as a pasted token is): a
/// pasted token the parser could mistake for a variable name.
const KEYLIKE: &str = "canary_Kc5150DoNotLeakKc5150DoNotLeak0000x";

/// Where a problem must point: the file, and the line, key or entry in it.
#[derive(Debug, Clone, Copy)]
enum At {
    Line(&'static str),
    Key(&'static str, &'static str),
    Entry(&'static str),
    File(&'static str),
    /// A command-line argument (refused, no file).
    Arg,
}

fn names_file(problem: &serde_json::Value, file: &str) -> bool {
    let f = problem["file"].as_str().unwrap_or("");
    f == file || f.ends_with(&format!("/{file}"))
}

fn located(problems: &[serde_json::Value], at: At) -> bool {
    match at {
        At::Line(f) => problems
            .iter()
            .any(|p| names_file(p, f) && p["line"].is_u64()),
        At::Key(f, k) => problems.iter().any(|p| names_file(p, f) && p["key"] == k),
        At::Entry(f) => problems
            .iter()
            .any(|p| names_file(p, f) && p["entry"].is_string()),
        At::File(f) => problems.iter().any(|p| names_file(p, f)),
        At::Arg => true,
    }
}

/// Everything a run must never show: a panic, a Debug dump, a raw control
/// character, either canary.
fn unclean(text: &str) -> Option<&'static str> {
    for bad in [
        "panicked",
        "RUST_BACKTRACE",
        "Os {",
        "Error {",
        "Some(",
        "kind: ",
        "\u{1b}",
        "\0",
        "\u{7}",
        CANARY,
        KEYLIKE,
    ] {
        if text.contains(bad) {
            return Some(bad);
        }
    }
    // No run of 8 characters of either canary (a cut or partial echo).
    for c in [CANARY, KEYLIKE] {
        for w in c.as_bytes().windows(8) {
            if text.contains(std::str::from_utf8(w).unwrap()) {
                return Some("a fragment of a canary");
            }
        }
    }
    None
}

/// Malformed inputs: each exits 2 with a message naming the file and the
/// line, key or entry (checked in the JSON problems), never a panic, a Debug
/// dump or a raw control character, and never a token, in any output or in
/// any file de-build writes.
#[test]
fn malformed_inputs_table() {
    type Setup = fn(&Project);
    type Args = fn(&Project) -> Vec<String>;
    let check: Args = |_| vec!["check".into()];
    let mut cases: Vec<(&str, Setup, &str, At)> = vec![
        (
            "missing key",
            |p| {
                let t = p
                    .read(".env")
                    .replace("DE_IMAGE=desiredeffect/erpnext-custom\n", "");
                p.write(".env", &t);
            },
            ".env: DE_IMAGE is missing",
            At::Key(".env", "DE_IMAGE"),
        ),
        (
            "unknown key near miss",
            |p| {
                p.set_env("DE_SITE_VERSON", "1.2.0");
            },
            "did you mean DE_SITE_VERSION?",
            At::Line(".env"),
        ),
        (
            "empty required",
            |p| {
                p.set_env("DE_IMAGE", "");
            },
            "DE_IMAGE is empty",
            At::Key(".env", "DE_IMAGE"),
        ),
        (
            "not semver",
            |p| {
                p.set_env("DE_SITE_VERSION", "1.2");
            },
            "DE_SITE_VERSION `1.2`: not a semantic version",
            At::Key(".env", "DE_SITE_VERSION"),
        ),
        (
            "duplicate key",
            |p| {
                let t = p.read(".env") + "DE_IMAGE=other/image\n";
                p.write(".env", &t);
            },
            "DE_IMAGE is set twice (first on line",
            At::Line(".env"),
        ),
        (
            "line that does not parse",
            |p| {
                let t = p.read(".env") + "just some words\n";
                p.write(".env", &t);
            },
            "expected KEY=value",
            At::Line(".env"),
        ),
        (
            "BOM",
            |p| {
                let t = format!("\u{feff}{}", p.read(".env"));
                p.write(".env", &t);
            },
            ".env:1: file starts with a UTF-8 byte-order mark",
            At::Line(".env"),
        ),
        (
            "CRLF",
            |p| {
                let t = p.read(".env").replace('\n', "\r\n");
                p.write(".env", &t);
            },
            "line ends with CRLF",
            At::Line(".env"),
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
            At::Key(".env", "DE_IMAGE"),
        ),
        (
            "quoted value with # never closed",
            |p| {
                p.set_env("DE_IMAGE", "\"image # note");
            },
            "DE_IMAGE: double quote is never closed",
            At::Line(".env"),
        ),
        (
            "unicode key",
            |p| {
                let t = p.read(".env") + "DÉ_IMAGE=x\n";
                p.write(".env", &t);
            },
            "the name before `=` is not a valid variable name",
            At::Line(".env"),
        ),
        (
            "placeholder kept",
            |p| {
                p.set_env("DE_MACRS_PAT", "<github-personal-access-token>");
            },
            "DE_MACRS_PAT still has the example's placeholder",
            At::Key(".env", "DE_MACRS_PAT"),
        ),
        (
            "token with @",
            |p| {
                p.set_env("DE_MACRS_PAT", &format!("{CANARY}@evil"));
            },
            "DE_MACRS_PAT contains '@', which would break the URL",
            At::Key(".env", "DE_MACRS_PAT"),
        ),
        (
            "token with #",
            |p| {
                p.set_env("DE_MACRS_PAT", &format!("'{CANARY}#x'"));
            },
            "DE_MACRS_PAT contains '#'",
            At::Key(".env", "DE_MACRS_PAT"),
        ),
        (
            "path that does not exist",
            |p| {
                p.set_env("DE_CONTAINERFILE", "images/nope/Containerfile");
            },
            "does not exist",
            At::Key(".env", "DE_CONTAINERFILE"),
        ),
        (
            "env file is a directory",
            |p| {
                std::fs::remove_file(p.path().join(".env")).unwrap();
                std::fs::create_dir(p.path().join(".env")).unwrap();
            },
            ".env: the env file is a directory",
            At::File(".env"),
        ),
        (
            "apps.json not UTF-8",
            |p| {
                p.write_bytes("apps.json", b"[\n{\"url\": \"\xff\xfe\"}]");
            },
            "apps.json:2: apps.json is not valid UTF-8",
            At::Line("apps.json"),
        ),
        (
            "apps.json dangling symlink",
            |p| {
                std::fs::remove_file(p.path().join("apps.json")).unwrap();
                std::os::unix::fs::symlink("/nonexistent/apps.json", p.path().join("apps.json"))
                    .unwrap();
            },
            "apps.json: apps.json not found",
            At::File("apps.json"),
        ),
        (
            "truncated JSON",
            |p| {
                let t = p.read("apps.json");
                p.write("apps.json", &t[..t.len() / 2]);
            },
            "the JSON ends too early",
            At::Line("apps.json"),
        ),
        (
            "empty apps.json",
            |p| {
                p.write("apps.json", "");
            },
            "apps.json: apps.json is empty",
            At::File("apps.json"),
        ),
        (
            "apps.json with BOM",
            |p| {
                let t = format!("\u{feff}{}", p.read("apps.json"));
                p.write("apps.json", &t);
            },
            "apps.json:1: file starts with a UTF-8 byte-order mark",
            At::Line("apps.json"),
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
            At::File("apps.json"),
        ),
        (
            "entry without url",
            |p| {
                p.write("apps.json", r#"[{"branch": "version-15"}]"#);
            },
            "apps.json: entry #1 (?): \"url\" is missing",
            At::Entry("apps.json"),
        ),
        (
            "token written into an app URL",
            |p| {
                p.write(
                    "apps.json",
                    &format!(r#"[{{"url": "https://{KEYLIKE}@github.com/o/de_macrs.git", "branch": "v1"}}]"#),
                );
            },
            "entry #1 (de_macrs): \"url\" holds a literal credential (not shown)",
            At::Entry("apps.json"),
        ),
        (
            "password written into an app URL",
            |p| {
                p.write(
                    "apps.json",
                    &format!(r#"[{{"url": "https://x-access-token:{CANARY}@github.com/o/de_macrs.git", "branch": "v1"}}]"#),
                );
            },
            "\"url\" holds a literal password (not shown)",
            At::Entry("apps.json"),
        ),
        (
            "an ARG named like a secret key",
            |p| {
                let t = p
                    .read("images/custom/Containerfile")
                    .replace("ARG CACHE_BUST=none", "ARG CACHE_BUST=none\nARG DE_MACRS_PAT");
                p.write("images/custom/Containerfile", &t);
            },
            "ARG DE_MACRS_PAT names a @secret key; secrets reach the build only as the BuildKit secret apps_json",
            At::Line("Containerfile"),
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
            At::Entry("apps.json"),
        ),
        (
            "duplicate app",
            |p| {
                p.write("apps.json", r#"[{"url": "https://github.com/frappe/hrms", "branch": "a"}, {"url": "https://github.com/frappe/hrms.git", "branch": "b"}]"#);
            },
            "entry #2 (hrms): app hrms is listed twice",
            At::Entry("apps.json"),
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
            At::Entry("apps.json"),
        ),
        (
            "placeholder with no key",
            |p| {
                p.write("apps.json", r#"[{"url": "https://${DE_MACRS_TOKEN}@github.com/o/de_macrs.git", "branch": "a"}]"#);
            },
            "${DE_MACRS_TOKEN} does not name a key",
            At::Entry("apps.json"),
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
            At::Entry("apps.json"),
        ),
        (
            "placeholder never closed",
            |p| {
                p.write("apps.json", r#"[{"url": "https://${DE_MACRS_PAT@github.com/o/de_macrs.git", "branch": "a"}]"#);
            },
            "placeholder is never closed",
            At::Entry("apps.json"),
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
            At::Entry("apps.json"),
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
            At::Line("de-example.env"),
        ),
        (
            "example missing",
            |p| {
                std::fs::remove_file(p.path().join("de-example.env")).unwrap();
            },
            "de-example.env: the example env (the schema of .env) not found",
            At::File("de-example.env"),
        ),
        (
            "example empty",
            |p| {
                p.write("de-example.env", "");
            },
            "the example file declares no keys",
            At::File("de-example.env"),
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
            At::Line("Containerfile"),
        ),
        (
            "version reused",
            |p| {
                p.write("releases/1.2.0.json", &manifest_json("1.2.0"));
            },
            "was already released",
            At::Key(".env", "DE_SITE_VERSION"),
        ),
        (
            "version older than newest",
            |p| {
                p.write("releases/2.0.0.json", &manifest_json("2.0.0"));
            },
            "is older than the newest release 2.0.0",
            At::Key(".env", "DE_SITE_VERSION"),
        ),
        (
            "malformed manifest",
            |p| {
                p.write("releases/1.0.0.json", "{\"version\": ");
            },
            "releases/1.0.0.json: not a release manifest",
            At::File("releases/1.0.0.json"),
        ),
        // --- Echoed input lines (issue #10): never quoted back.
        (
            "bare token line",
            |p| {
                let t = p.read(".env") + KEYLIKE + "\n";
                p.write(".env", &t);
            },
            "expected KEY=value; the line's text is not shown",
            At::Line(".env"),
        ),
        (
            "KEY: token",
            |p| {
                let t = p.read(".env").replace(
                    &format!("DE_MACRS_PAT={CANARY}"),
                    &format!("DE_MACRS_PAT: {KEYLIKE}"),
                );
                p.write(".env", &t);
            },
            "DE_MACRS_PAT: expected `=` after the key, found `:`",
            At::Key(".env", "DE_MACRS_PAT"),
        ),
        (
            "quoted token then text",
            |p| {
                let t = p.read(".env") + &format!("'{CANARY}'{KEYLIKE}\n");
                p.write(".env", &t);
            },
            "expected KEY=value; the line's text is not shown",
            At::Line(".env"),
        ),
        (
            "text after the closing quote",
            |p| {
                p.set_env("DE_MACRS_PAT", &format!("'{CANARY}'{KEYLIKE}"));
            },
            "DE_MACRS_PAT: unexpected text after the closing quote (not shown)",
            At::Key(".env", "DE_MACRS_PAT"),
        ),
        (
            "token quote never closed",
            |p| {
                p.set_env("DE_MACRS_PAT", &format!("\"{CANARY}"));
            },
            "DE_MACRS_PAT: double quote is never closed",
            At::Key(".env", "DE_MACRS_PAT"),
        ),
        (
            "token where a key belongs",
            |p| {
                let t = p.read(".env") + KEYLIKE + "=\n";
                p.write(".env", &t);
            },
            "its name is not shown",
            At::Line(".env"),
        ),
        (
            "token with a dash where a key belongs",
            |p| {
                let t = p.read(".env") + CANARY + "=x\n";
                p.write(".env", &t);
            },
            "the name before `=` is not a valid variable name",
            At::Line(".env"),
        ),
        (
            "export then a token",
            |p| {
                let t = p.read(".env") + "export " + KEYLIKE + "\n";
                p.write(".env", &t);
            },
            "expected KEY=value",
            At::Line(".env"),
        ),
        (
            ".env is a symlink to a file of tokens",
            |p| {
                p.write(
                    "vault/real.env",
                    &format!("{KEYLIKE}\nDE_MACRS_PAT: {CANARY}\n'{CANARY}'x\n"),
                );
                std::fs::remove_file(p.path().join(".env")).unwrap();
                std::os::unix::fs::symlink(p.path().join("vault/real.env"), p.path().join(".env"))
                    .unwrap();
            },
            ".env:2:13: DE_MACRS_PAT: expected `=`",
            At::Line(".env"),
        ),
        (
            "terminal escapes in a value",
            |p| {
                p.set_env("DE_BACKEND_SERVICE", "back\u{1b}[2J\u{1b}]0;pwned\u{7}end");
            },
            "DE_BACKEND_SERVICE `back\\u001b[2J\\u001b]0;pwned\\u0007end`",
            At::Key(".env", "DE_BACKEND_SERVICE"),
        ),
        (
            "NUL in a value",
            |p| {
                p.set_env("DE_SITES", "a\0b");
            },
            "contains control characters",
            At::Key(".env", "DE_SITES"),
        ),
        (
            "env file not UTF-8",
            |p| {
                p.write_bytes(".env", b"DE_IMAGE=x\nDE_MACRS_PAT=tok\xff\xfeen\n");
            },
            ".env:2: the env file is not valid UTF-8 (first bad byte at line 2, column 17)",
            At::Line(".env"),
        ),
        (
            "env file too large",
            |p| {
                let t = p.read(".env") + &"# padding\n".repeat(110_000);
                p.write(".env", &t);
            },
            ".env: the env file is larger than 1.0 MiB",
            At::File(".env"),
        ),
        (
            "env file is a dangling symlink",
            |p| {
                std::fs::remove_file(p.path().join(".env")).unwrap();
                std::os::unix::fs::symlink("/nonexistent/x.env", p.path().join(".env")).unwrap();
            },
            "DE_MACRS_PAT is missing",
            At::Key(".env", "DE_MACRS_PAT"),
        ),
        (
            "unknown lower-case key",
            |p| {
                let t = p.read(".env") + "de_image=x\n";
                p.write(".env", &t);
            },
            "did you mean DE_IMAGE?",
            At::Line(".env"),
        ),
        // --- Values that pass their type and would fail later.
        (
            "image upper-case",
            |p| {
                p.set_env("DE_IMAGE", "Acme/ERPNext");
            },
            "DE_IMAGE `Acme/ERPNext`: repository names must be lowercase",
            At::Key(".env", "DE_IMAGE"),
        ),
        (
            "image with a blank",
            |p| {
                p.set_env("DE_IMAGE", "acme/erp next");
            },
            "DE_IMAGE `acme/erp next`: contains a blank",
            At::Key(".env", "DE_IMAGE"),
        ),
        (
            "image with a tag",
            |p| {
                p.set_env("DE_IMAGE", "acme/erpnext:latest");
            },
            "carries a tag (`:latest`)",
            At::Key(".env", "DE_IMAGE"),
        ),
        (
            "image with a digest",
            |p| {
                p.set_env("DE_IMAGE", "acme/erpnext@sha256:0123");
            },
            "carries a digest",
            At::Key(".env", "DE_IMAGE"),
        ),
        (
            "image with a bad host",
            |p| {
                p.set_env("DE_IMAGE", "reg_istry.example.com:5000/acme/erp");
            },
            "is not a host name",
            At::Key(".env", "DE_IMAGE"),
        ),
        (
            "version with build metadata",
            |p| {
                p.set_env("DE_SITE_VERSION", "1.2.0+build.7");
            },
            "build metadata (`+…`) cannot be part of a Docker tag",
            At::Key(".env", "DE_SITE_VERSION"),
        ),
        (
            "project name with a blank",
            |p| {
                p.set_env("COMPOSE_PROJECT_NAME", "my erp");
            },
            "COMPOSE_PROJECT_NAME `my erp`: contains a blank",
            At::Key(".env", "COMPOSE_PROJECT_NAME"),
        ),
        (
            "project name with a slash",
            |p| {
                p.set_env("COMPOSE_PROJECT_NAME", "erp/prod");
            },
            "COMPOSE_PROJECT_NAME `erp/prod`: `/` is not allowed",
            At::Key(".env", "COMPOSE_PROJECT_NAME"),
        ),
        (
            "project name upper-case",
            |p| {
                p.set_env("COMPOSE_PROJECT_NAME", "ERP");
            },
            "COMPOSE_PROJECT_NAME `ERP`: must start with a lowercase letter",
            At::Key(".env", "COMPOSE_PROJECT_NAME"),
        ),
        (
            "sites with blanks",
            |p| {
                p.set_env("DE_SITES", "my site.example.com");
            },
            "DE_SITES: site `my site.example.com` (item 1) contains a blank",
            At::Key(".env", "DE_SITES"),
        ),
        (
            "sites escaping the sites directory",
            |p| {
                p.set_env("DE_SITES", "erp.example.com,../../etc");
            },
            "site `../../etc` (item 2) contains `/`",
            At::Key(".env", "DE_SITES"),
        ),
        (
            "sites with all and more",
            |p| {
                p.set_env("DE_SITES", "all,erp.example.com");
            },
            "`all`, which stands alone",
            At::Key(".env", "DE_SITES"),
        ),
        (
            "app URL file://",
            |p| {
                p.write(
                    "apps.json",
                    r#"[{"url": "file:///srv/git/erpnext.git", "branch": "v15"}]"#,
                );
            },
            "`file://` is not a scheme bench clones",
            At::Entry("apps.json"),
        ),
        (
            "app URL a local path",
            |p| {
                p.write(
                    "apps.json",
                    r#"[{"url": "/srv/git/erpnext.git", "branch": "v15"}]"#,
                );
            },
            "a local path is not cloned inside the build",
            At::Entry("apps.json"),
        ),
        (
            "app URL with a pasted token and no scheme",
            |p| {
                p.write(
                    "apps.json",
                    &format!(r#"[{{"url": "https//{KEYLIKE}@github.com/o/de_macrs.git", "branch": "v1"}}]"#),
                );
            },
            "is not a git URL bench can clone",
            At::Entry("apps.json"),
        ),
        (
            "placeholder naming a token",
            |p| {
                p.write(
                    "apps.json",
                    &format!(r#"[{{"url": "https://${{{KEYLIKE}}}@github.com/o/de_macrs.git", "branch": "v1"}}]"#),
                );
            },
            "a `${...}` placeholder does not name a key of the env",
            At::Entry("apps.json"),
        ),
        (
            "Containerfile is /dev/null",
            |p| {
                p.set_env("DE_CONTAINERFILE", "/dev/null");
            },
            "/dev/null is a character device, a regular file was expected",
            At::Key(".env", "DE_CONTAINERFILE"),
        ),
        (
            "Containerfile is a directory",
            |p| {
                p.set_env("DE_CONTAINERFILE", "images");
            },
            "is a directory, a regular file was expected",
            At::Key(".env", "DE_CONTAINERFILE"),
        ),
        (
            "registry with a scheme",
            |p| {
                p.set_env("DE_REGISTRY", "https://registry.example.com");
            },
            "no scheme (`https://`)",
            At::Key(".env", "DE_REGISTRY"),
        ),
        (
            "registry that is no host",
            |p| {
                p.set_env("DE_REGISTRY", "myregistry");
            },
            "Docker would read it as a namespace on Docker Hub",
            At::Key(".env", "DE_REGISTRY"),
        ),
        (
            "health URL https",
            |p| {
                p.set_env("DE_HEALTH_URL", "https://erp.example.com/api/method/ping");
            },
            "the health gate speaks plain http:// only",
            At::Key(".env", "DE_HEALTH_URL"),
        ),
        (
            "negative timeout",
            |p| {
                p.set_env("DE_DRAIN_TIMEOUT", "-5");
            },
            "DE_DRAIN_TIMEOUT `-5`: expected seconds from 0 to 86400",
            At::Key(".env", "DE_DRAIN_TIMEOUT"),
        ),
        (
            "timeout not a number",
            |p| {
                p.set_env("DE_HEALTH_TIMEOUT", "1m");
            },
            "DE_HEALTH_TIMEOUT `1m`: expected a whole number",
            At::Key(".env", "DE_HEALTH_TIMEOUT"),
        ),
        (
            "backend service with a blank",
            |p| {
                p.set_env("DE_BACKEND_SERVICE", "back end");
            },
            "DE_BACKEND_SERVICE `back end`",
            At::Key(".env", "DE_BACKEND_SERVICE"),
        ),
        (
            "Frappe from a local path",
            |p| {
                p.set_env("FRAPPE_PATH", "file:///srv/frappe");
            },
            "FRAPPE_PATH `file:///srv/frappe` is not a URL bench can clone",
            At::Key(".env", "FRAPPE_PATH"),
        ),
        (
            "smoke command with quotes",
            |p| {
                p.set_env("DE_SMOKE_COMMAND", "bench --site 'a b' version");
            },
            "quotes and backslashes are not understood",
            At::Key(".env", "DE_SMOKE_COMMAND"),
        ),
        (
            "a tunable that is not in the schema",
            |p| {
                p.set_env("DE_LOG_MAX_BYTES", "5");
            },
            "DE_LOG_MAX_BYTES is not declared in the example file",
            At::Line(".env"),
        ),
    ];
    // Cases whose input comes from the command line.
    let with_args: Vec<(&str, Args, &str, At)> = vec![
        (
            "--env-file /dev/zero",
            |_| vec!["--env-file".into(), "/dev/zero".into(), "check".into()],
            "/dev/zero: the env file is larger than 1.0 MiB, the limit for an input file (it is a character device)",
            At::File("/dev/zero"),
        ),
        (
            "--apps /dev/zero",
            |_| vec!["--apps".into(), "/dev/zero".into(), "check".into()],
            "apps.json is larger than 1.0 MiB",
            At::File("/dev/zero"),
        ),
        (
            "--example is a directory",
            |p| {
                vec![
                    "--example".into(),
                    p.path().join("images").display().to_string(),
                    "check".into(),
                ]
            },
            "is a directory, a file was expected",
            At::File("images"),
        ),
        (
            "releases show with a path",
            |_| vec!["releases".into(), "show".into(), "../../evil".into()],
            "`../../evil` is not a release version",
            At::Arg,
        ),
        (
            "releases diff with a path",
            |_| {
                vec![
                    "releases".into(),
                    "diff".into(),
                    "/etc/passwd".into(),
                    "1.0.0".into(),
                ]
            },
            "`/etc/passwd` is not a release version",
            At::Arg,
        ),
    ];
    let all: Vec<(&str, Setup, Args, &str, At)> = cases
        .drain(..)
        .map(|(n, s, e, a)| (n, s, check, e, a))
        .chain(
            with_args
                .into_iter()
                .map(|(n, a, e, at)| (n, (|_| {}) as Setup, a, e, at)),
        )
        .collect();
    assert!(all.len() >= 60, "{} cases", all.len());
    let mut failures = Vec::new();
    for (name, setup, args, expect, at) in &all {
        let p = Project::example();
        setup(&p);
        let args = args(&p);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = p.run().args(&args).output();
        if out.code != 2 || !out.stderr.contains(expect) {
            failures.push(format!(
                "[{name}] exit {} expected 2 with {expect:?}\n{}",
                out.code, out.stderr
            ));
        }
        for (what, text) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
            if let Some(bad) = unclean(text) {
                failures.push(format!("[{name}] {what} shows {bad:?}:\n{text}"));
            }
        }
        // The JSON form carries the finding, located.
        let json_args: Vec<&str> = std::iter::once("--json")
            .chain(args.iter().copied())
            .collect();
        let out = p.run().args(&json_args).output();
        let problems = serde_json::from_str::<serde_json::Value>(&out.stdout)
            .ok()
            .and_then(|j| j["problems"].as_array().cloned());
        match problems {
            Some(problems) if out.code == 2 && located(&problems, *at) => {}
            _ => failures.push(format!(
                "[{name}] --json: exit {}, expected a problem at {at:?}\n{}",
                out.code, out.stdout
            )),
        }
        if let Some(bad) = unclean(&out.stdout) {
            failures.push(format!("[{name}] --json shows {bad:?}:\n{}", out.stdout));
        }
        // And nothing de-build wrote holds a token.
        for f in p.all_files() {
            if f.starts_with(p.path().join(".de-build")) {
                let text = String::from_utf8_lossy(&std::fs::read(&f).unwrap()).into_owned();
                if let Some(bad) = unclean(&text) {
                    failures.push(format!("[{name}] {} holds {bad:?}", f.display()));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} case(s) failed:\n{}",
        failures.len(),
        all.len(),
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

/// Every tunable the README documents is a key of both bundled schemas, with
/// the same type and flags, and the code reads settings only through the
/// schema: the environment-only switches are the README's named exceptions.
#[test]
fn every_documented_tunable_is_declared_in_the_schema() {
    use de_build::config::envfile::schema::Schema;
    let root = support::repo_root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let schema = |rel: &str| {
        let text = std::fs::read_to_string(root.join(rel)).unwrap();
        let (s, problems) = Schema::from_example(rel, &text);
        assert!(problems.is_empty(), "{rel}: {problems:?}");
        s
    };
    let (main, demo) = (
        schema("de-example.env"),
        schema("examples/demo/de-example.env"),
    );
    // Set by de-build for compose, or read before .env exists.
    let not_tunables = ["CUSTOM_TAG", "CUSTOM_IMAGE"];
    // Read by the demo script, not by de-build.
    let script_only = ["DE_BUILD_BIN"];
    // Read by the tests only (tests/live/switch.rs: the door image to use;
    // tests/compose_check.rs: a local git copy of frappe_docker).
    let test_only = ["DE_TEST_DOOR_IMAGE", "DE_FRAPPE_DOCKER_GIT"];
    // Build-args of frappe_docker's Containerfiles the README names: passed
    // when a Containerfile declares them, not keys of de-build's schema.
    let containerfile_only = ["FRAPPE_IMAGE_PREFIX"];
    let env_only = ["DE_COMPOSE", "DE_PROJECT_DIR"];
    let mut documented: Vec<String> = readme
        .split(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
        .filter(|w| {
            (w.starts_with("DE_") || w.starts_with("FRAPPE_") || w.starts_with("COMPOSE_"))
                && w.len() > 4
                && !w.ends_with('_')
        })
        .map(str::to_string)
        .collect();
    documented.sort();
    documented.dedup();
    assert!(documented.len() >= 15, "{documented:?}");
    for key in &documented {
        if env_only.contains(&key.as_str())
            || script_only.contains(&key.as_str())
            || test_only.contains(&key.as_str())
            || containerfile_only.contains(&key.as_str())
        {
            continue;
        }
        for (name, s) in [("de-example.env", &main), ("demo", &demo)] {
            let spec = s
                .get(key)
                .unwrap_or_else(|| panic!("{key} is documented but not declared in {name}"));
            let m = main.get(key).unwrap();
            assert_eq!(
                (spec.ty, spec.optional, spec.secret),
                (m.ty, m.optional, m.secret),
                "{key}: the schemas disagree"
            );
            if spec.optional
                && !spec.secret
                && spec.ty == de_build::config::envfile::schema::ValueType::Int
            {
                assert!(spec.example.parse::<u64>().is_ok(), "{key} needs a default");
            }
        }
    }
    for key in env_only {
        assert!(
            readme.contains(&format!("`{key}`")) && readme.contains("environment-only"),
            "{key} must be documented as environment-only"
        );
    }
    for k in not_tunables {
        assert!(main.get(k).is_none());
    }
    // The code reads no DE_ setting from the environment except the
    // environment-only switches (and DE_PROJECT_DIR through clap).
    let mut stack = vec![root.join("src")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let text = std::fs::read_to_string(&p).unwrap();
            for (i, _) in text.match_indices("env::var(\"DE_") {
                let rest = &text[i + "env::var(\"".len()..];
                let key = &rest[..rest.find('"').unwrap()];
                assert!(
                    env_only.contains(&key),
                    "{} reads {key} from the environment, not through the schema",
                    p.display()
                );
            }
        }
    }
}

/// A `.env` that is not UTF-8 is exactly one problem, where its first bad
/// byte is: not a "missing" problem per key, never a false "no env file".
#[test]
fn a_non_utf8_env_file_is_one_problem() {
    let p = Project::example();
    let text = p.read(".env").replace(
        &format!("DE_MACRS_PAT={CANARY}"),
        &format!("DE_MACRS_PAT={CANARY}\u{1}"),
    );
    let bytes = text.replace('\u{1}', "\u{fffd}").into_bytes();
    // A Latin-1 "é" (0xE9) instead of the replacement character.
    let at = bytes
        .windows(3)
        .position(|w| w == "\u{fffd}".as_bytes())
        .unwrap();
    let mut bytes = bytes;
    bytes.splice(at..at + 3, [0xE9u8]);
    p.write_bytes(".env", &bytes);
    let out = p.run().args(&["--json", "check"]).output();
    out.code(2).no_leak(CANARY);
    let problems = out.json()["problems"].as_array().unwrap().clone();
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert_eq!(problems[0]["code"], "not-utf8");
    assert!(problems[0]["line"].is_u64());
    let out = p.run().args(&["check"]).output();
    out.code(2).no_leak(CANARY).stderr_has("is not valid UTF-8");
    assert!(!out.stderr.contains("no env file"), "{}", out.stderr);
}
