//! `check --online` and commit resolution against local git remotes served
//! over HTTP on loopback: a public one and one that demands the token (bench
//! clones inside the build, so apps.json takes no local paths).

use crate::support;
use support::git_http::{GitHttp, Redirect, Repo, Silent};
use support::{engine_available, ImageRepo, Project, CANARY};

struct Remotes {
    _dir: tempfile::TempDir,
    erpnext: Repo,
    private: Repo,
    http: GitHttp,
    public: GitHttp,
}

fn remotes() -> Remotes {
    let dir = tempfile::tempdir().unwrap();
    let erpnext = Repo::create(dir.path(), "erpnext", &["version-15"], &["v15.17.0"]);
    let private = Repo::create(dir.path(), "de_macrs", &["develop"], &["v0.0.4"]);
    let http = GitHttp::start(dir.path(), CANARY);
    let public = GitHttp::start(dir.path(), "");
    Remotes {
        _dir: dir,
        erpnext,
        private,
        http,
        public,
    }
}

fn apps_json(r: &Remotes, erpnext_ref: &str, private_ref: &str) -> String {
    let private = r
        .http
        .url("de_macrs")
        .replace("http://", "http://${DE_MACRS_PAT}@");
    serde_json::json!([
        {"url": r.public.url("erpnext"), "branch": erpnext_ref},
        {"url": private, "branch": private_ref},
    ])
    .to_string()
}

#[test]
fn resolves_branches_and_tags_with_the_token() {
    let r = remotes();
    let p = Project::example();
    p.write("apps.json", &apps_json(&r, "version-15", "v0.0.4"));
    let out = p.run().args(&["--json", "check", "--online"]).output();
    out.code(0).no_leak(CANARY);
    let j = out.json();
    assert_eq!(
        j["apps"][0]["commit"],
        r.erpnext.commit("version-15").as_str()
    );
    assert_eq!(j["apps"][0]["ref_kind"], "branch");
    assert_eq!(
        j["apps"][1]["commit"],
        r.private.commit("v0.0.4").as_str(),
        "annotated tag peeled to its commit"
    );
    assert_eq!(j["apps"][1]["ref_kind"], "tag");
    assert_eq!(
        j["apps"][1]["url"],
        r.http.url("de_macrs"),
        "credentials removed"
    );
    p.run()
        .args(&["check", "--online"])
        .output()
        .code(0)
        .no_leak(CANARY)
        .stdout_has(&r.erpnext.commit("version-15")[..12]);
}

/// frappe_docker accepts an entry without "branch" (bench clones the default
/// branch): `--online` resolves the remote's HEAD and names its branch.
#[test]
fn an_app_without_branch_resolves_the_default_branch() {
    let r = remotes();
    let p = Project::example();
    let private = r
        .http
        .url("de_macrs")
        .replace("http://", "http://${DE_MACRS_PAT}@");
    p.write(
        "apps.json",
        &serde_json::json!([
            {"url": r.public.url("erpnext")},
            {"url": private, "branch": "develop"},
        ])
        .to_string(),
    );
    let out = p.run().args(&["--json", "check", "--online"]).output();
    out.code(0).no_leak(CANARY);
    let j = out.json();
    assert_eq!(j["apps"][0]["commit"], r.erpnext.commit("main").as_str());
    assert_eq!(j["apps"][0]["ref"], "main", "the branch HEAD names");
    assert_eq!(j["apps"][0]["default_branch"], true);
    assert_eq!(j["apps"][1]["ref"], "develop");
    assert_eq!(j["warnings"][0]["code"], "no-branch");
    assert_eq!(j["warnings"].as_array().unwrap().len(), 1);
    p.run()
        .args(&["check", "--online"])
        .output()
        .code(0)
        .stderr_has("warning: ")
        .stderr_has("apps.json: entry #1 (erpnext): no \"branch\"")
        .stdout_has("@ main (default branch) -> ");
}

#[test]
fn wrong_token_is_authentication_failed_without_echo() {
    let r = remotes();
    let p = Project::example();
    p.write("apps.json", &apps_json(&r, "version-15", "v0.0.4"));
    let wrong = "wrong-canary-token-8812";
    p.set_env("DE_MACRS_PAT", wrong);
    let out = p.run().args(&["check", "--online"]).output();
    out.code(2)
        .clean()
        .no_leak(wrong)
        .stderr_has("authentication failed for de_macrs")
        .stderr_has("check that DE_MACRS_PAT is valid");
    let out = p.run().args(&["--json", "check", "--online"]).output();
    out.code(2).no_leak(wrong);
    assert_eq!(out.json()["problems"][0]["code"], "auth-failed");
}

#[test]
fn missing_refs_and_repositories_are_named() {
    let r = remotes();
    let p = Project::example();
    p.write("apps.json", &apps_json(&r, "version-51", "v0.0.4"));
    p.run()
        .args(&["check", "--online"])
        .output()
        .code(2)
        .stderr_has("erpnext has no branch or tag \"version-51\"")
        .stderr_has("did you mean \"version-15\"?");
    let gone = serde_json::json!([{"url": r.public.url("nope"), "branch": "main"}]);
    p.write("apps.json", &gone.to_string());
    p.run()
        .args(&["check", "--online"])
        .output()
        .code(2)
        .stderr_has("not found");
}

#[test]
fn a_silent_remote_times_out_as_a_failure() {
    let silent = Silent::start();
    let p = Project::example();
    p.write("apps.json", &serde_json::json!([{"url": format!("http://127.0.0.1:{}/x.git", silent.port), "branch": "main"}]).to_string());
    let started = std::time::Instant::now();
    let out = p
        .run()
        .args(&["check", "--online", "--timeout", "2"])
        .output();
    out.code(1).stderr_has("did not answer within 2s");
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
}

#[test]
#[cfg_attr(
    no_engine,
    ignore = "no Docker engine answered when the tests were built"
)]
fn build_records_commits_and_the_cache_follows_them() {
    if !engine_available("build_records_commits") {
        return;
    }
    let r = remotes();
    let repo = ImageRepo::new("commits");
    let p = Project::demo(&repo);
    p.write("apps.json", &apps_json(&r, "version-15", "develop"));
    let out = p.run().args(&["build"]).output();
    out.code(0).no_leak(CANARY);
    let m: serde_json::Value = serde_json::from_str(&p.read("releases/1.0.0.json")).unwrap();
    assert_eq!(
        m["apps"][0]["commit"],
        r.erpnext.commit("version-15").as_str()
    );
    assert_eq!(m["apps"][1]["commit"], r.private.commit("develop").as_str());
    assert_eq!(m["cache_key"]["source"], "app-commits");

    // Nothing moved: bench init comes from the cache.
    p.set_env("DE_SITE_VERSION", "1.0.1");
    let out = p.run().args(&["build"]).output();
    // The step that runs bench init with the apps_json secret.
    let init_cached = |err: &str| {
        err.lines()
            .any(|l| l.contains("CACHED [") && l.contains("RUN --mount=type=secret"))
    };
    out.code(0);
    assert!(init_cached(&out.stderr), "{}", out.stderr);
    // A branch moved: the same apps.json now rebuilds the app layer.
    r.private.advance("develop");
    p.set_env("DE_SITE_VERSION", "1.0.2");
    let out = p.run().args(&["build"]).output();
    out.code(0);
    assert!(
        !init_cached(&out.stderr),
        "moved branch must bust the cache:\n{}",
        out.stderr
    );
    let diff = p
        .run()
        .args(&["--json", "releases", "diff", "1.0.1", "1.0.2"])
        .output();
    diff.code(0);
    assert_eq!(diff.json()["diff"]["apps_changed"][0][0], "de_macrs");
}

/// The plan (and so the manifest) of an app without a branch: the commit of
/// the remote's HEAD, recorded under the branch HEAD names.
#[test]
#[cfg_attr(
    no_engine,
    ignore = "no Docker engine answered when the tests were built"
)]
fn a_build_records_the_default_branch_of_an_app_without_one() {
    if !engine_available("build_default_branch") {
        return;
    }
    let r = remotes();
    let repo = ImageRepo::new("headref");
    let p = Project::demo(&repo);
    p.write(
        "apps.json",
        &serde_json::json!([{"url": r.public.url("erpnext")}]).to_string(),
    );
    let out = p.run().args(&["--json", "build", "--dry-run"]).output();
    out.code(0).no_leak(CANARY);
    let app = &out.json()["plan"]["apps"][0];
    assert_eq!(app["ref"], "main");
    assert_eq!(app["commit"], r.erpnext.commit("main").as_str());
    assert_eq!(out.json()["plan"]["cache_key"]["source"], "app-commits");
}

#[test]
fn the_token_does_not_follow_a_redirect_to_another_host() {
    let r = remotes();
    let redirect = Redirect::start(format!("http://127.0.0.1:{}", r.http.port));
    let p = Project::example();
    let url = format!(
        "http://${{DE_MACRS_PAT}}@127.0.0.1:{}/de_macrs.git",
        redirect.port
    );
    p.write(
        "apps.json",
        &serde_json::json!([{"url": url, "branch": "develop"}]).to_string(),
    );
    let out = p.run().args(&["check", "--online"]).output();
    out.code(2)
        .no_leak(CANARY)
        .stderr_has("redirects to another host; the credentials were not sent there");
    assert_eq!(
        r.http.authorized_requests(),
        0,
        "the other host never saw the token"
    );
    // Asked directly, the same token works: the refusal is the redirect's doing.
    p.write("apps.json", &apps_json(&r, "version-15", "develop"));
    p.run().args(&["check", "--online"]).output().code(0);
    assert!(r.http.authorized_requests() > 0);
}
