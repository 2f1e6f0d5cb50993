//! `de-build check`: everything a build needs, validated before it starts.

use crate::cli::{CheckArgs, Global};
use crate::config::{self, Inputs};
use crate::envfile::{Source, Text};
use crate::error::{Problem, Result, EXIT_INVALID, EXIT_OK};
use crate::manifest::Store;
use crate::output::{self, Style};
use serde_json::json;

/// `DE_SITE_VERSION` must be newer than every recorded release. With
/// `allow_same` (a `build --replace`), an equal version passes.
pub fn check_version(inputs: &Inputs, allow_same: bool) -> (Option<String>, Vec<Problem>) {
    let mut problems = Vec::new();
    let store = Store::new(&inputs.paths.releases);
    let (releases, bad) = store.load_all();
    problems.extend(bad);
    let newest = releases.first().map(|l| l.manifest.version.clone());
    let Some(raw) = inputs.env.get("DE_SITE_VERSION") else {
        return (newest, problems);
    };
    let Ok(version) = semver::Version::parse(raw) else {
        return (newest, problems); // reported by the type check
    };
    let env_shown = config::display(&inputs.paths.env_file);
    let at = |p: Problem| {
        let p = p.key("DE_SITE_VERSION");
        match inputs
            .env
            .entries()
            .find(|(k, _)| *k == "DE_SITE_VERSION")
            .map(|(_, v)| &v.source)
        {
            Some(Source::File { line }) => p.line(*line),
            _ => p,
        }
    };
    if let Some(same) = releases.iter().find(|l| l.version == version) {
        if !allow_same {
            let next = semver::Version::new(version.major, version.minor, version.patch + 1);
            let newest_v = releases.first().map(|l| &l.version).unwrap_or(&version);
            let bump = if *newest_v > version {
                semver::Version::new(newest_v.major, newest_v.minor, newest_v.patch + 1)
            } else {
                next
            };
            problems.push(at(Problem::new(&env_shown, "version-reused", format!(
                "DE_SITE_VERSION {version} was already released ({}, image {}); building it again would take the tag from that image and leave it untagged",
                config::display(&same.path), short_id(&same.manifest.image.id)))
                .hint(format!("bump DE_SITE_VERSION (e.g. to {bump}), or rebuild this version on purpose with `de-build build --replace`"))));
        }
    } else if let Some(newer) = releases.iter().find(|l| l.version > version) {
        problems.push(at(Problem::new(
            &env_shown,
            "version-not-newer",
            format!(
                "DE_SITE_VERSION {version} is older than the newest release {}",
                newer.version
            ),
        )
        .hint(format!(
            "versions only go up: use a version above {}",
            newer.version
        ))));
    }
    (newest, problems)
}

pub fn short_id(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    &hex[..hex.len().min(12)]
}

pub fn run(global: &Global, args: &CheckArgs, style: &Style) -> Result<i32> {
    let inputs = config::load(global);
    let mut problems = inputs.problems.clone();
    let (newest, vp) = check_version(&inputs, false);
    problems.extend(vp);

    let online = if args.online && problems.is_empty() {
        Some(crate::online::resolve_apps(
            &inputs,
            std::time::Duration::from_secs(args.timeout),
            style,
        ))
    } else {
        None
    };
    let mut app_rows = Vec::new();
    for (i, app) in inputs.apps.iter().enumerate() {
        let mut row = json!({"name": app.name, "url": app.public_url(), "ref": app.branch});
        if let Some(results) = &online {
            match &results[i] {
                Ok(r) => {
                    row["commit"] = json!(r.commit);
                    row["ref_kind"] = json!(r.kind);
                }
                Err(p) => problems.push(p.clone()),
            }
        }
        app_rows.push(row);
    }

    let ok = problems.is_empty();
    if style.json {
        let keys: Vec<_> = inputs
            .env
            .entries()
            .map(|(k, v)| {
                let value = match &v.text {
                    Text::Plain(s) => json!(s),
                    Text::Secret(_) => json!("***"),
                };
                json!({"key": k, "value": value, "secret": matches!(v.text, Text::Secret(_)), "source": v.source})
            })
            .collect();
        output::json(&json!({
            "command": "check",
            "ok": ok,
            "online": args.online,
            "version": inputs.env.get("DE_SITE_VERSION"),
            "newest_release": newest,
            "keys": keys,
            "apps": app_rows,
            "problems": problems,
        }));
    } else {
        for (k, v) in inputs.env.entries() {
            if let (Source::Environment, Some(line)) = (&v.source, v.overrides_line) {
                output::progress(
                    style,
                    &format!(
                        "{} {k} comes from the environment and overrides {}:{line}",
                        style.dim("note:"),
                        config::display(&inputs.paths.env_file)
                    ),
                );
            }
        }
        print_problems(style, &problems);
        if ok {
            let version = inputs.env.get("DE_SITE_VERSION").unwrap_or("?");
            let after = newest
                .map(|n| format!(" (newest release: {n})"))
                .unwrap_or_default();
            output::result(&format!(
                "{} version {version}{after}, {} app(s)",
                style.green("check passed:"),
                inputs.apps.len()
            ));
            for row in &app_rows {
                let commit = row
                    .get("commit")
                    .and_then(|c| c.as_str())
                    .map(|c| format!(" -> {}", &c[..c.len().min(12)]))
                    .unwrap_or_default();
                output::result(&format!(
                    "  {:<14} {} @ {}{commit}",
                    row["name"].as_str().unwrap_or(""),
                    row["url"].as_str().unwrap_or(""),
                    row["ref"].as_str().unwrap_or("")
                ));
            }
        } else {
            output::diag(&format!(
                "{} {} problem(s); nothing was changed",
                style.red("check failed:"),
                problems.len()
            ));
        }
    }
    let summary: Vec<String> = problems
        .iter()
        .map(|p| format!("{}: {}", p.location(), p.message))
        .collect();
    crate::logfile::action("check", ok, std::time::Duration::ZERO, &summary.join("; "));
    // A remote that could not be asked is not the user's input: exit 1.
    let unreachable_only = problems
        .iter()
        .all(|p| p.code == "timeout" || p.code == "git-error");
    Ok(if ok {
        EXIT_OK
    } else if unreachable_only {
        crate::error::EXIT_FAILURE
    } else {
        EXIT_INVALID
    })
}

/// Problems that do not stop the command (e.g. an unreadable manifest while listing).
pub fn print_warnings(style: &Style, problems: &[Problem]) {
    for p in problems {
        output::diag(&format!(
            "{} {}: {}",
            style.yellow("warning:"),
            p.location(),
            p.message
        ));
    }
}

/// Human rendering of problems, one block each, in the order found.
pub fn print_problems(style: &Style, problems: &[Problem]) {
    for p in problems {
        output::diag(&format!(
            "{} {}: {}",
            style.red("error:"),
            p.location(),
            p.message
        ));
        if let Some(h) = &p.hint {
            output::diag(&format!("  {} {h}", style.dim("hint:")));
        }
    }
}
