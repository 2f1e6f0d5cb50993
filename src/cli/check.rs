//! `de-build check`: everything a build needs, validated before it starts.

use crate::cli::args::{CheckArgs, Global};
use crate::config;
use crate::config::envfile::{Source, Text};
use crate::config::version::check_version;
use crate::error::{Result, EXIT_INVALID, EXIT_OK};
use crate::ui::output::{self, Style};
use crate::ui::problems::{print_problems, print_warnings};
use serde_json::json;

pub fn run(global: &Global, args: &CheckArgs, style: &Style) -> Result<i32> {
    let inputs = config::load(&crate::cli::paths(global));
    let mut problems = inputs.problems.clone();
    let (newest, vp) = check_version(&inputs, false);
    problems.extend(vp);

    let online = if args.online && problems.is_empty() {
        Some(crate::adapters::online::resolve_apps(
            &inputs,
            std::time::Duration::from_secs(args.timeout),
            style,
        ))
    } else {
        None
    };
    let mut app_rows = Vec::new();
    for (i, app) in inputs.apps.iter().enumerate() {
        let mut row = json!({"name": app.name, "url": app.public_url(), "ref": app.git_ref()});
        if app.branch.is_none() {
            row["default_branch"] = json!(true);
        }
        if let Some(results) = &online {
            match &results[i] {
                Ok(r) => {
                    row["ref"] = json!(r.reference(app));
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
            "warnings": inputs.warnings,
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
        print_warnings(style, &inputs.warnings);
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
                let default = if row["default_branch"] == true {
                    " (default branch)"
                } else {
                    ""
                };
                output::result(&format!(
                    "  {:<14} {} @ {}{default}{commit}",
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
    crate::ui::logfile::action("check", ok, std::time::Duration::ZERO, &summary.join("; "));
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
