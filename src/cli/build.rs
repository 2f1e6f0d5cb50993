//! `de-build build`: check, resolve, plan, then build, smoke-test and record.

use crate::adapters::engine::Engine;
use crate::cli::args::{BuildArgs, Global};
use crate::config;
use crate::error::{Problem, Result, EXIT_OK};
use crate::exec::build as exec;
use crate::plan::build::BuildPlan;
use crate::ui::output::{self, Style};
use crate::ui::problems::print_warnings;
use crate::util::short_id;
use serde_json::json;
use std::time::{Duration, Instant};

pub async fn run(global: &Global, args: &BuildArgs, style: &Style) -> Result<i32> {
    let started = Instant::now();
    let inputs = config::load_checked(&crate::cli::paths(global))?;
    // Checked before the engine is asked anything: a wrong flag is exit 2.
    let build_args = exec::build_args(&inputs, &args.build_arg)?;
    if !style.json {
        print_warnings(style, &inputs.warnings);
    }
    let engine = Engine::connect().await?;
    let opts = exec::BuildOptions {
        replace: args.replace,
        offline: args.offline,
        no_cache: args.no_cache,
        context: args.context.clone(),
        timeout: args.timeout,
        build_args,
    };
    let prepared = exec::prepare(&inputs, &opts, &engine, style).await?;
    if args.dry_run {
        if style.json {
            let mut doc = plan_json(&prepared.plan);
            doc["warnings"] = json!(inputs.warnings);
            output::json(&doc);
        } else {
            output::result(&prepared.plan.to_string());
            output::result("dry run: nothing was changed");
        }
        return Ok(EXIT_OK);
    }
    if !style.json {
        output::progress(style, &prepared.plan.to_string());
    }
    let built = exec::execute(&inputs, prepared, &engine, style).await?;
    report(style, &built, &inputs.warnings, started.elapsed());
    Ok(EXIT_OK)
}

/// `--dry-run --json`: the plan itself, and its steps as data (each with the
/// line the human form prints).
pub fn plan_json(p: &BuildPlan) -> serde_json::Value {
    let steps: Vec<serde_json::Value> = p
        .steps()
        .iter()
        .map(|s| {
            let mut v = serde_json::to_value(s).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert("text".into(), s.to_string().into());
            }
            v
        })
        .collect();
    json!({
        "command": "build", "ok": true, "dry_run": true,
        // Kept at the top level for scripts written against earlier output.
        "reference": p.reference, "context": config::display(&p.context_dir),
        "existing_image": p.existing.as_ref().map(|e| e.id.clone()),
        "plan": p,
        "steps": steps,
    })
}

pub fn report(style: &Style, built: &exec::Built, warnings: &[Problem], elapsed: Duration) {
    let m = &built.manifest;
    if style.json {
        output::json(&json!({
            "command": "build", "ok": true, "version": m.version,
            "image": {"reference": m.image.reference, "id": m.image.id},
            "manifest": config::display(&built.manifest_path),
            "apps": m.apps, "cache_key": m.cache_key, "superseded": m.superseded,
            "build_args": m.build_args, "warnings": warnings,
            "durations": built.durations, "seconds": elapsed.as_secs_f64(),
        }));
    } else {
        output::result(&format!(
            "{} {} ({}) in {:.1}s",
            style.green("built"),
            m.image.reference,
            short_id(&m.image.id),
            elapsed.as_secs_f64()
        ));
        output::result(&format!(
            "recorded {}",
            config::display(&built.manifest_path)
        ));
        if let Some(s) = &m.superseded {
            output::result(&format!("previous image kept as {}", s.reference));
        }
    }
}
