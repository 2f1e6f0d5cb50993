//! `de-build release` (CI): check --online, build, smoke test, push, record,
//! optionally deploy — non-interactive, one JSON document with `--json`.
//! And `de-build push`: push a recorded release and record its digest.

use crate::adapters::engine::Engine;
use crate::cli::args::{Global, PushArgs, ReleaseArgs};
use crate::config;
use crate::error::{Error, Result, EXIT_OK};
use crate::exec::build;
use crate::record::manifest::{Manifest, Store};
use crate::ui::output::{self, Style};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Instant;

fn registry_of(inputs: &config::Inputs) -> Option<String> {
    inputs.env.get("DE_REGISTRY").map(str::to_string)
}

async fn push_and_record(
    inputs: &config::Inputs,
    engine: &Engine,
    m: &mut Manifest,
    registry: &str,
    style: &Style,
) -> Result<()> {
    output::progress(
        style,
        &format!(
            "{} push {} to {registry}",
            style.bold("==>"),
            m.image.reference
        ),
    );
    let creds = crate::adapters::registry::credentials(&inputs.env, registry);
    let rec = crate::adapters::registry::push(engine, m, registry, creds).await?;
    output::progress(style, &format!("pushed {}", rec.digest_ref));
    m.registry = Some(rec);
    Ok(())
}

pub async fn run(global: &Global, args: &ReleaseArgs, style: &Style) -> Result<i32> {
    let started = Instant::now();
    let mut phases: BTreeMap<String, f64> = BTreeMap::new();
    let inputs = config::load_checked(&crate::cli::paths(global))?;
    let build_args = build::build_args(&inputs, &args.build_arg)?;
    if !style.json {
        crate::ui::problems::print_warnings(style, &inputs.warnings);
    }
    let engine = Engine::connect().await?;
    let options = build::BuildOptions {
        replace: false,
        offline: args.offline,
        no_cache: args.no_cache,
        context: None,
        timeout: args.timeout,
        build_args,
    };
    let t = Instant::now();
    let prepared = build::prepare(&inputs, &options, &engine, style).await?;
    phases.insert("check".into(), t.elapsed().as_secs_f64());
    let built = build::execute(&inputs, prepared, &engine, style).await?;
    phases.extend(built.durations.clone());
    let mut m = built.manifest.clone();
    let store = Store::new(&inputs.paths.releases);

    let registry = registry_of(&inputs);
    if let Some(reg) = &registry {
        let t = Instant::now();
        if let Err(e) = push_and_record(&inputs, &engine, &mut m, reg, style).await {
            // The build is good and already recorded: the push can be retried alone.
            return Err(Error::Failed {
                message: format!(
                    "{} was built and recorded, but the push failed: {e}",
                    m.image.reference
                ),
                hint: Some(format!("retry the push with `de-build push {}`", m.version)),
            });
        }
        phases.insert("push".into(), t.elapsed().as_secs_f64());
    } else {
        output::progress(style, "DE_REGISTRY is empty: not pushing");
    }
    let t = Instant::now();
    let path = store.write(&m)?;
    phases.insert("manifest".into(), t.elapsed().as_secs_f64());

    let mut deployment = None;
    if args.deploy {
        let t = Instant::now();
        let d = crate::cli::deploy::deploy_version(&inputs, style, &m.version, false, false, None)
            .await?;
        phases.insert("deploy".into(), t.elapsed().as_secs_f64());
        deployment = d.map(|d| d.id);
    }

    if style.json {
        output::json(&json!({
            "command": "release", "ok": true, "exit_code": 0,
            "result": if deployment.is_some() { "deployed" } else { "released" },
            "version": m.version,
            "image": {"reference": m.image.reference, "id": m.image.id},
            "pushed_digest": m.registry.as_ref().map(|r| r.digest_ref.clone()),
            "apps": m.apps.iter().map(|a| json!({"name": a.name, "ref": a.reference, "commit": a.commit})).collect::<Vec<_>>(),
            "build_args": m.build_args,
            "warnings": inputs.warnings,
            "manifest": config::display(&path),
            "deployment": deployment,
            "durations": phases,
            "seconds": started.elapsed().as_secs_f64(),
        }));
    } else {
        output::result(&format!(
            "{} {} ({})",
            style.green("released"),
            m.image.reference,
            crate::util::short_id(&m.image.id)
        ));
        if let Some(r) = &m.registry {
            output::result(&format!("pushed {}", r.digest_ref));
        }
        output::result(&format!("recorded {}", config::display(&path)));
        if let Some(d) = &deployment {
            output::result(&format!("deployed (deployment {d})"));
        }
    }
    Ok(EXIT_OK)
}

/// `de-build push [VERSION]`.
pub async fn push(global: &Global, args: &PushArgs, style: &Style) -> Result<i32> {
    let inputs = config::load_checked(&crate::cli::paths(global))?;
    let Some(reg) = registry_of(&inputs) else {
        return Err(Error::refused(
            "DE_REGISTRY is not set",
            "set DE_REGISTRY (e.g. registry.example.com:5000) in .env or the environment",
        ));
    };
    let version = match &args.version {
        Some(v) => v.clone(),
        None => inputs
            .env
            .get("DE_SITE_VERSION")
            .unwrap_or_default()
            .to_string(),
    };
    let store = Store::new(&inputs.paths.releases);
    let Some(mut l) = store.get(&version)? else {
        return Err(Error::refused(
            format!("release {version} is not recorded"),
            "`de-build releases list` shows the recorded releases",
        ));
    };
    let engine = Engine::connect().await?;
    if engine.image(&l.manifest.image.id).await?.is_none() {
        return Err(Error::refused(
            format!("the image of release {version} is not in this engine"),
            "rebuild it, or push from the machine that built it",
        ));
    }
    push_and_record(&inputs, &engine, &mut l.manifest, &reg, style).await?;
    store.write(&l.manifest)?;
    let r = l
        .manifest
        .registry
        .as_ref()
        .map(|r| r.digest_ref.clone())
        .unwrap_or_default();
    if style.json {
        output::json(
            &json!({"command": "push", "ok": true, "version": version, "pushed_digest": r}),
        );
    } else {
        output::result(&format!("pushed {r}"));
    }
    Ok(EXIT_OK)
}
