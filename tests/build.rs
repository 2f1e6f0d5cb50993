//! `de-build build` against the real engine, on copies of the bundled demo.

use crate::support;
use support::{docker, engine_available, ImageRepo, Project, CANARY};

fn no_canary_anywhere(
    repo: &ImageRepo,
    p: &Project,
    tmp: &std::path::Path,
    outs: &[&support::Done],
) {
    for o in outs {
        o.no_leak(CANARY);
    }
    for tag in repo.tags() {
        let r = format!("{}:{tag}", repo.0);
        let h = docker(&["history", "--no-trunc", &r]);
        assert!(!h.stdout.contains(CANARY), "token in docker history of {r}");
        let i = docker(&["image", "inspect", &r]);
        assert!(!i.stdout.contains(CANARY), "token in image inspect of {r}");
    }
    for f in p.all_files().into_iter().chain(walk(tmp)) {
        if f.ends_with(".env") {
            continue; // the user's own file
        }
        let data = std::fs::read(&f).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&data).contains(CANARY),
            "token in {}",
            f.display()
        );
    }
}

fn walk(d: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(d) {
        for e in rd.flatten() {
            if e.path().is_dir() {
                out.extend(walk(&e.path()));
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

#[test]
#[cfg_attr(
    no_engine,
    ignore = "no Docker engine answered when the tests were built"
)]
fn builds_the_demo_tags_labels_and_records_it() {
    if !engine_available("builds_the_demo") {
        return;
    }
    let repo = ImageRepo::new("build");
    let p = Project::demo(&repo);
    let tmp = tempfile::tempdir().unwrap();
    let out = p
        .run()
        .env("TMPDIR", tmp.path().to_str().unwrap())
        .args(&["build", "--offline"])
        .output();
    // Step lines are not asserted here: BuildKit reports a step shared with a
    // concurrent identical build (other tests) to one of the builds only.
    out.code(0)
        .clean()
        .stdout_has(&format!("built {}:1.0.0", repo.0))
        .stderr_has(&format!("built {}:1.0.0 (", repo.0))
        .stderr_has("==> smoke test");
    let id = repo.id_of("1.0.0").expect("image tagged");

    let labels = docker(&[
        "image",
        "inspect",
        "--format",
        "{{json .Config.Labels}}",
        &format!("{}:1.0.0", repo.0),
    ]);
    let labels: serde_json::Value = serde_json::from_str(labels.stdout.trim()).unwrap();
    assert_eq!(labels["org.opencontainers.image.version"], "1.0.0");
    assert!(labels["org.opencontainers.image.created"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    assert!(labels["org.opencontainers.image.source"]
        .as_str()
        .unwrap()
        .starts_with("file://"));
    assert!(labels["de-build.apps"]
        .as_str()
        .unwrap()
        .contains("de_macrs"));

    let m: serde_json::Value = serde_json::from_str(&p.read("releases/1.0.0.json")).unwrap();
    assert_eq!(m["schema_version"], 1);
    assert_eq!(m["image"]["id"], id.as_str());
    assert_eq!(m["image"]["reference"], format!("{}:1.0.0", repo.0));
    assert_eq!(m["cache_key"]["source"], "apps-json");
    assert_eq!(m["smoke_test"]["passed"], true);
    assert_eq!(
        m["apps"][3]["url"],
        "https://github.com/desiredeffect/de_macrs.git"
    );
    assert_eq!(
        m["apps"][0]["url"], "https://github.com/frappe/erpnext",
        "a URL with no token is not masked"
    );
    assert!(m["build_args"]["CACHE_BUST"].is_string());

    let list = p.run().args(&["--json", "releases", "list"]).output();
    list.code(0);
    assert_eq!(list.json()["releases"][0]["image_present"], true);
    p.run()
        .args(&["releases", "show", "1.0.0"])
        .output()
        .code(0)
        .stdout_has("de_macrs");
    no_canary_anywhere(&repo, &p, tmp.path(), &[&out, &list]);
}

#[test]
#[cfg_attr(
    no_engine,
    ignore = "no Docker engine answered when the tests were built"
)]
fn failing_step_shows_its_output_and_changes_nothing() {
    if !engine_available("failing_step") {
        return;
    }
    let repo = ImageRepo::new("fail");
    let p = Project::demo(&repo);
    p.run().args(&["build", "--offline"]).output().code(0);
    let v1 = repo.id_of("1.0.0").unwrap();

    let cf = p.read("Containerfile").replace("WORKDIR /home/frappe/frappe-bench", "RUN echo boom-output-4711 && cat /run/secrets/apps_json 2>&1; exit 3\nWORKDIR /home/frappe/frappe-bench");
    p.write("Containerfile", &cf);
    p.set_env("DE_SITE_VERSION", "1.1.0");
    let tmp = tempfile::tempdir().unwrap();
    let out = p
        .run()
        .env("TMPDIR", tmp.path().to_str().unwrap())
        .args(&["build", "--offline"])
        .output();
    out.code(1)
        .clean()
        .stderr_has("boom-output-4711")
        .stderr_has("the build of")
        .stderr_has("exit code: 3");
    assert!(
        !p.path().join("releases/1.1.0.json").exists(),
        "no manifest for a failed build"
    );
    assert_eq!(
        repo.id_of("1.0.0").as_deref(),
        Some(v1.as_str()),
        "previous tag intact"
    );
    assert_eq!(repo.id_of("1.1.0"), None);
    no_canary_anywhere(&repo, &p, tmp.path(), &[&out]);
}

#[test]
#[cfg_attr(
    no_engine,
    ignore = "no Docker engine answered when the tests were built"
)]
fn tag_collision_is_refused_then_replaced_then_repaired() {
    if !engine_available("tag_collision") {
        return;
    }
    let repo = ImageRepo::new("collide");
    let p = Project::demo(&repo);
    p.run().args(&["build", "--offline"]).output().code(0);
    let old = repo.id_of("1.0.0").unwrap();
    let manifest_before = p.read("releases/1.0.0.json");

    // The seed's trap: same version again.
    p.run()
        .args(&["build", "--offline"])
        .output()
        .code(2)
        .stderr_has("already released")
        .stderr_has("--replace");
    // A tag taken by an image de-build never recorded is refused too.
    std::fs::remove_file(p.path().join("releases/1.0.0.json")).unwrap();
    let out = p.run().args(&["build", "--offline"]).output();
    out.code(2)
        .stderr_has(&format!(
            "{}:1.0.0 already exists (image {}",
            repo.0,
            &old[7..19]
        ))
        .stderr_has("--replace");
    assert_eq!(repo.id_of("1.0.0").as_deref(), Some(old.as_str()));
    p.write("releases/1.0.0.json", &manifest_before);

    // --replace: the old image is kept under a recovery tag, both recorded.
    p.write("patches.txt", "demo.patches.v1_0.changed\n");
    let out = p.run().args(&["build", "--offline", "--replace"]).output();
    out.code(0).stdout_has("previous image kept as");
    let new = repo.id_of("1.0.0").unwrap();
    assert_ne!(new, old);
    let recovery = format!("1.0.0-superseded-{}", &old[7..19]);
    assert_eq!(repo.id_of(&recovery).as_deref(), Some(old.as_str()));
    let m: serde_json::Value = serde_json::from_str(&p.read("releases/1.0.0.json")).unwrap();
    assert_eq!(m["superseded"]["id"], old.as_str());
    assert_eq!(m["image"]["id"], new.as_str());
    let dangling = docker(&["images", "-f", "dangling=true", "-q", "--no-trunc"]);
    assert!(
        !dangling.stdout.contains(&old) && !dangling.stdout.contains(&new),
        "nothing left <none>"
    );

    // Someone runs `docker build -t repo:1.0.0` by hand: the tag moves away.
    docker(&["tag", &old, &format!("{}:1.0.0", repo.0)]).code(0);
    let dry = p.run().args(&["tags", "repair", "--dry-run"]).output();
    dry.code(0).stderr_has("would tag");
    assert_eq!(
        repo.id_of("1.0.0").as_deref(),
        Some(old.as_str()),
        "dry run changes nothing"
    );
    p.run()
        .args(&["tags", "repair"])
        .output()
        .code(0)
        .stdout_has("repaired 1 tag(s)");
    assert_eq!(repo.id_of("1.0.0").as_deref(), Some(new.as_str()));
}

#[test]
fn unreachable_engine_is_a_clear_error() {
    let p = Project::example();
    let out = p
        .run()
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .args(&["build", "--offline"])
        .output();
    out.code(1)
        .clean()
        .stderr_has("Docker engine: connect to unix:///nonexistent/docker.sock")
        .stderr_has("hint:");
}

#[test]
#[cfg_attr(
    no_engine,
    ignore = "no Docker engine answered when the tests were built"
)]
fn the_dry_run_plan_is_data() {
    if !engine_available("build_dry_run_json") {
        return;
    }
    let repo = ImageRepo::new("dryjson");
    let p = Project::demo(&repo);
    let out = p
        .run()
        .args(&["--json", "build", "--dry-run", "--offline"])
        .output();
    out.code(0).no_leak(CANARY);
    let j = out.json();
    assert_eq!(j["dry_run"], true);
    assert_eq!(j["plan"]["reference"], format!("{}:1.0.0", repo.0));
    assert_eq!(j["plan"]["cache_key"]["source"], "apps-json");
    let steps: Vec<&str> = j["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["build", "smoke_test", "write_manifest"]);
    assert!(j["steps"][0]["text"].as_str().unwrap().contains("BuildKit"));
    // Nothing was built or recorded.
    assert!(!p.path().join("releases/1.0.0.json").exists());
}

/// `--build-arg` is checked against the Containerfile's ARGs before the
/// engine is asked anything (no engine here), for `build` and `release`.
#[test]
fn build_args_are_checked_before_the_engine_is_asked() {
    let p = Project::example();
    for cmd in ["build", "release"] {
        let run = |args: &[&str]| {
            let mut all = vec!["--json", cmd];
            all.extend_from_slice(args);
            p.run()
                .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
                .args(&all)
                .output()
        };
        let out = run(&[
            "--build-arg",
            "DEBIAN_BAS=trixie",
            "--build-arg",
            "CACHE_BUST=x",
        ]);
        out.code(2).no_leak(CANARY);
        let problems = out.json()["problems"].as_array().unwrap().clone();
        assert_eq!(problems[0]["code"], "undeclared-build-arg", "{cmd}");
        assert!(problems[0]["message"]
            .as_str()
            .unwrap()
            .starts_with("DEBIAN_BAS is not an ARG of "));
        let hint = problems[0]["hint"].as_str().unwrap();
        assert!(
            hint.starts_with("did you mean DEBIAN_BASE?")
                && hint.contains("PYTHON_VERSION, DEBIAN_BASE, NODE_VERSION, WKHTMLTOPDF_VERSION"),
            "{hint}"
        );
        assert_eq!(problems[1]["code"], "reserved-build-arg");

        // A secret's value as a build-arg: refused, and not echoed.
        let out = run(&["--build-arg", &format!("FRAPPE_BRANCH=x-{CANARY}")]);
        out.code(2).no_leak(CANARY);
        assert_eq!(out.json()["problems"][0]["code"], "secret-in-build-arg");
        let human = p
            .run()
            .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
            .args(&[cmd, "--build-arg", &format!("FRAPPE_BRANCH={CANARY}")])
            .output();
        human.code(2).clean().no_leak(CANARY).stderr_has(
            "the value of build-arg FRAPPE_BRANCH holds the value of the secret DE_MACRS_PAT",
        );

        // Declared: past the checks, on to the (missing) engine.
        run(&["--build-arg", "DEBIAN_BASE=trixie"])
            .code(1)
            .stdout_has("nonexistent/docker.sock");
    }
}

/// What frappe_docker users bring: an app whose repository is named with
/// `-` (bench installs india-compliance as apps/india_compliance), an app
/// without a branch, build-args beyond the four of .env, then `[]`.
#[test]
#[cfg_attr(
    no_engine,
    ignore = "no Docker engine answered when the tests were built"
)]
fn frappe_docker_apps_json_forms_and_build_args_build() {
    if !engine_available("frappe_docker_forms") {
        return;
    }
    let repo = ImageRepo::new("dropin");
    let p = Project::demo(&repo);
    p.write(
        "apps.json",
        &serde_json::json!([
            {"url": "https://github.com/frappe/erpnext", "branch": "v15.17.0"},
            {"url": "https://github.com/resilient-tech/india-compliance.git"},
            {"url": "https://${DE_MACRS_PAT}@github.com/desiredeffect/de_macrs.git", "branch": "v0.0.4"},
        ])
        .to_string(),
    );
    let cf = p.read("Containerfile").replace(
        "ARG CACHE_BUST=none",
        "ARG CACHE_BUST=none\nARG INSTALL_CHROMIUM=false \\\n    DEBIAN_BASE",
    );
    p.write("Containerfile", &cf);
    let build_args = [
        "--build-arg",
        "INSTALL_CHROMIUM=true",
        "--build-arg",
        "FRAPPE_BRANCH=version-14",
    ];
    let dry = p
        .run()
        .args(&["--json", "build", "--offline", "--dry-run"])
        .args(&build_args)
        .output();
    dry.code(0).no_leak(CANARY);
    let plan = dry.json();
    assert_eq!(plan["plan"]["build_args"]["INSTALL_CHROMIUM"], "true");
    assert_eq!(plan["warnings"][0]["code"], "no-branch");
    assert_eq!(
        plan["steps"][1]["apps"],
        serde_json::json!(["erpnext", "india_compliance", "de_macrs"])
    );

    let tmp = tempfile::tempdir().unwrap();
    let out = p
        .run()
        .env("TMPDIR", tmp.path().to_str().unwrap())
        .args(&["build", "--offline"])
        .args(&build_args)
        .output();
    out.code(0)
        .clean()
        .stderr_has("entry #2 (india-compliance): no \"branch\"")
        .stderr_has("INSTALL_CHROMIUM=true")
        .stderr_has("apps/ holds erpnext, india_compliance, de_macrs");
    let m: serde_json::Value = serde_json::from_str(&p.read("releases/1.0.0.json")).unwrap();
    assert_eq!(m["smoke_test"]["passed"], true);
    assert_eq!(m["apps"][1]["name"], "india-compliance");
    assert_eq!(m["apps"][1]["ref"], "HEAD");
    assert_eq!(m["build_args"]["INSTALL_CHROMIUM"], "true");
    assert_eq!(
        m["build_args"]["FRAPPE_BRANCH"], "version-14",
        "wins over .env"
    );
    assert!(m["build_args"].get("DEBIAN_BASE").is_none(), "not passed");
    // The value reached the build: BuildKit keeps a RUN's build-args in history.
    let history = docker(&[
        "history",
        "--no-trunc",
        "--format",
        "{{.CreatedBy}}",
        &format!("{}:1.0.0", repo.0),
    ]);
    assert!(
        history.stdout.contains("FRAPPE_BRANCH=version-14"),
        "{}",
        history.stdout
    );

    // A frappe-only image.
    p.write("apps.json", "[]");
    p.set_env("DE_SITE_VERSION", "1.0.1");
    let out2 = p
        .run()
        .env("TMPDIR", tmp.path().to_str().unwrap())
        .args(&["build", "--offline"])
        .output();
    out2.code(0)
        .clean()
        .stderr_has("exits 0 (apps.json lists no apps)");
    let m: serde_json::Value = serde_json::from_str(&p.read("releases/1.0.1.json")).unwrap();
    assert_eq!(m["apps"], serde_json::json!([]));
    assert_eq!(m["smoke_test"]["passed"], true);
    no_canary_anywhere(&repo, &p, tmp.path(), &[&dry, &out, &out2]);
}
