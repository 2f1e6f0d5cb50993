//! `de-build prune`: remove old de-build images and dangling build cache,
//! never a rollback target. Kept, always: the current and previous
//! deployments' images, the images of the newest `--keep` releases, and the
//! recovery (`-superseded-`) images of those releases. Only images de-build
//! built (label `de-build.version`) in `DE_IMAGE` are considered.

use crate::adapters::engine::Engine;
use crate::config::{self, Inputs};
use crate::error::{Error, Result, EXIT_OK};
use crate::plan::prune::protected;
use crate::record::manifest::Store;
use crate::record::state::State;
use crate::ui::output::{self, Style};
use crate::util::short_id;
use serde_json::json;
use std::collections::BTreeMap;

pub async fn run(
    inputs: &Inputs,
    keep: usize,
    dry_run: bool,
    build_cache: bool,
    style: &Style,
) -> Result<i32> {
    let Some(repo) = inputs.env.get("DE_IMAGE") else {
        return Err(Error::refused(
            "DE_IMAGE is not set",
            "prune works on the images of DE_IMAGE; set it in .env",
        ));
    };
    let engine = Engine::connect().await?;
    let (releases, _) = Store::new(&inputs.paths.releases).load_all();
    let state = State::new(&inputs.paths.state);
    // Deciding what to delete from some of the records could delete a
    // rollback target: an unreadable record stops the prune.
    let all = state.deployments_checked()?;
    let current = crate::record::state::current(&all);
    let previous = crate::record::state::earlier(&all).first().copied();
    let keep_reasons = protected(
        &releases,
        keep,
        current.map(|d| d.image_id.as_str()),
        previous.map(|d| d.image_id.as_str()),
    );

    let mut repos = vec![repo.to_string()];
    if let Some(reg) = inputs.env.get("DE_REGISTRY") {
        repos.push(crate::adapters::registry::repository(reg, repo));
    }
    let mut images: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in &repos {
        for (id, tags) in engine.images_in_repo(r).await? {
            images.entry(id).or_default().extend(tags);
        }
    }
    let mut removed = Vec::new();
    let mut kept = Vec::new();
    for (id, tags) in &images {
        if let Some(why) = keep_reasons.get(id) {
            kept.push(json!({"id": id, "tags": tags, "reason": why}));
            continue;
        }
        let built_by_us = engine
            .image(id)
            .await?
            .is_some_and(|i| i.labels.contains_key("de-build.version"));
        if !built_by_us {
            kept.push(json!({"id": id, "tags": tags, "reason": "not built by de-build"}));
            continue;
        }
        if dry_run {
            output::progress(
                style,
                &format!("would remove {} ({})", short_id(id), tags.join(", ")),
            );
            removed.push(json!({"id": id, "tags": tags}));
            continue;
        }
        let mut ok = true;
        for t in tags {
            if let Err(e) = engine.untag(t).await {
                output::progress(style, &format!("kept {}: {e}", short_id(id)));
                kept.push(json!({"id": id, "tags": tags, "reason": e.to_string()}));
                ok = false;
                break;
            }
        }
        if ok {
            output::progress(
                style,
                &format!("removed {} ({})", short_id(id), tags.join(", ")),
            );
            removed.push(json!({"id": id, "tags": tags}));
        }
    }
    // The build cache is the engine's, shared by every project on it: pruned
    // only when asked.
    let cache = if dry_run || !build_cache {
        None
    } else {
        let r = engine
            .docker
            .prune_build(None::<bollard::query_parameters::PruneBuildOptions>)
            .await
            .map_err(|e| crate::adapters::engine::engine_error("prune the build cache", &e))?;
        Some(r.space_reclaimed.unwrap_or(0))
    };
    if style.json {
        output::json(
            &json!({"command": "prune", "ok": true, "dry_run": dry_run, "keep": keep, "removed": removed, "kept": kept, "build_cache_bytes_reclaimed": cache}),
        );
    } else {
        for k in &kept {
            output::result(&format!(
                "kept    {} ({})",
                short_id(k["id"].as_str().unwrap_or("")),
                k["reason"].as_str().unwrap_or("")
            ));
        }
        let verb = if dry_run { "would remove" } else { "removed" };
        output::result(&format!(
            "{verb} {} image(s) of {}",
            removed.len(),
            config::display(std::path::Path::new(repo))
        ));
        match cache {
            Some(b) => output::result(&format!(
                "build cache: {} reclaimed",
                crate::util::human_bytes(b as u64)
            )),
            None if build_cache => output::result(
                "build cache: the engine's whole build cache (every project's) would be pruned",
            ),
            None => output::result(
                "build cache: left alone (`--build-cache` prunes the engine's, every project's)",
            ),
        }
    }
    Ok(EXIT_OK)
}
