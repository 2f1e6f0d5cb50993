//! `de-build prune`: remove old de-build images and dangling build cache,
//! never a rollback target. Kept, always: the current and previous
//! deployments' images, the images of the newest `--keep` releases, and the
//! recovery (`-superseded-`) images of those releases. Only images de-build
//! built (label `de-build.version`) in `DE_IMAGE` are considered.

use crate::check::short_id;
use crate::config::{self, Inputs};
use crate::engine::Engine;
use crate::error::{Error, Result, EXIT_OK};
use crate::manifest::{Loaded, Store};
use crate::output::{self, Style};
use crate::state::{Outcome, State};
use serde_json::json;
use std::collections::BTreeMap;

/// Why an image is kept, by image ID. Pure: computed from manifests and records.
pub fn protected(
    releases: &[Loaded],
    keep: usize,
    current: Option<&str>,
    previous: Option<&str>,
) -> BTreeMap<String, String> {
    let mut p = BTreeMap::new();
    if let Some(id) = current {
        p.insert(id.to_string(), "current deployment".to_string());
    }
    if let Some(id) = previous {
        p.entry(id.to_string())
            .or_insert_with(|| "previous deployment".to_string());
    }
    for l in releases.iter().take(keep) {
        let m = &l.manifest;
        p.entry(m.image.id.clone())
            .or_insert_with(|| format!("release {} (within --keep {keep})", m.version));
        if let Some(s) = &m.superseded {
            p.entry(s.id.clone())
                .or_insert_with(|| format!("recovery image of release {}", m.version));
        }
    }
    p
}

pub async fn run(inputs: &Inputs, keep: usize, dry_run: bool, style: &Style) -> Result<i32> {
    let Some(repo) = inputs.env.get("DE_IMAGE") else {
        return Err(Error::refused(
            "DE_IMAGE is not set",
            "prune works on the images of DE_IMAGE; set it in .env",
        ));
    };
    let engine = Engine::connect().await?;
    let (releases, _) = Store::new(&inputs.paths.releases).load_all();
    let state = State::new(&inputs.paths.state);
    let done: Vec<_> = state
        .deployments()
        .into_iter()
        .filter(|d| d.result == Outcome::Succeeded)
        .collect();
    let current = state.current();
    let previous = done
        .iter()
        .rev()
        .find(|d| Some(&d.version) != current.as_ref().map(|c| &c.version));
    let keep_reasons = protected(
        &releases,
        keep,
        current.as_ref().map(|d| d.image_id.as_str()),
        previous.map(|d| d.image_id.as_str()),
    );

    let mut repos = vec![repo.to_string()];
    if let Some(reg) = inputs.env.get("DE_REGISTRY") {
        repos.push(crate::registry::repository(reg, repo));
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
    let cache = if dry_run {
        None
    } else {
        let r = engine
            .docker
            .prune_build(None::<bollard::query_parameters::PruneBuildOptions>)
            .await
            .map_err(|e| Error::engine("prune the build cache", crate::engine::describe(&e)))?;
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
                crate::plan::human_bytes(b as u64)
            )),
            None => output::result("build cache: dangling entries would be pruned"),
        }
    }
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{tests::sample, Superseded};

    fn loaded(v: &str, id: &str, superseded: Option<&str>) -> Loaded {
        let mut m = sample(v);
        m.image.id = id.into();
        m.superseded = superseded.map(|s| Superseded {
            reference: format!("x:{v}-superseded-{s}"),
            id: s.into(),
        });
        Loaded {
            path: format!("releases/{v}.json").into(),
            version: semver::Version::parse(v).unwrap(),
            manifest: m,
        }
    }

    #[test]
    fn rollback_targets_are_never_pruned() {
        let releases = vec![
            loaded("1.3.0", "d", Some("s")),
            loaded("1.2.0", "c", None),
            loaded("1.1.0", "b", None),
            loaded("1.0.0", "a", None),
        ];
        let p = protected(&releases, 1, Some("b"), Some("a"));
        assert_eq!(
            p.keys().cloned().collect::<Vec<_>>(),
            vec!["a", "b", "d", "s"]
        );
        assert_eq!(p["s"], "recovery image of release 1.3.0");
        assert!(
            !p.contains_key("c"),
            "an old release outside the window goes"
        );
        let p = protected(&releases, 0, None, None);
        assert!(p.is_empty());
    }
}
