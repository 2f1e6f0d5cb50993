//! `de-build tags repair`: give recorded images their version tags back.

use crate::util::short_id;
use crate::config::Paths;
use crate::adapters::engine::Engine;
use crate::error::{Result, EXIT_OK};
use crate::record::manifest::{Loaded, Store};
use crate::ui::output::{self, Style};
use crate::plan::tags::{decide, TagState};
use serde_json::json;

pub async fn state_of(engine: &Engine, l: &Loaded) -> Result<TagState> {
    let m = &l.manifest;
    if engine.image(&m.image.id).await?.is_none() {
        return Ok(TagState::ImageGone);
    }
    Ok(match engine.image(&m.image.reference).await? {
        Some(holder) if holder.id == m.image.id => TagState::Ok,
        Some(holder) => TagState::Lost {
            holder: Some(holder.id),
        },
        None => TagState::Lost { holder: None },
    })
}

pub async fn repair(paths: &Paths, dry_run: bool, style: &Style) -> Result<i32> {
    let engine = Engine::connect().await?;
    let (all, problems) = Store::new(&paths.releases).load_all();
    crate::ui::problems::print_warnings(style, &problems);
    let mut repairs = Vec::new();
    let mut gone = Vec::new();
    for l in &all {
        let st = state_of(&engine, l).await?;
        if st == TagState::ImageGone {
            gone.push(l.manifest.version.clone());
        }
        if let Some(r) = decide(l, &st) {
            repairs.push(r);
        }
    }
    for r in &repairs {
        let (repo, tag) = crate::adapters::engine::split_reference(&r.reference);
        if let Some((holder, keep_as)) = &r.displaced {
            let (krepo, ktag) = crate::adapters::engine::split_reference(keep_as);
            let what = format!(
                "keep {} (holds {} now) as {keep_as}",
                short_id(holder),
                r.reference
            );
            if dry_run {
                output::progress(style, &format!("would {what}"));
            } else {
                engine.tag(holder, krepo, ktag.unwrap_or_default()).await?;
                output::progress(style, &what);
            }
        }
        let what = format!("tag {} as {}", short_id(&r.image_id), r.reference);
        if dry_run {
            output::progress(style, &format!("would {what}"));
        } else {
            engine
                .tag(&r.image_id, repo, tag.unwrap_or_default())
                .await?;
            output::progress(style, &what);
        }
    }
    if style.json {
        output::json(
            &json!({"command": "tags repair", "ok": true, "dry_run": dry_run, "repairs": repairs, "images_gone": gone}),
        );
    } else {
        let verb = if dry_run { "would repair" } else { "repaired" };
        output::result(&format!(
            "{verb} {} tag(s); {} release(s) checked",
            repairs.len(),
            all.len()
        ));
        if !gone.is_empty() {
            output::result(&format!(
                "images gone (rebuild from their manifests): {}",
                gone.join(", ")
            ));
        }
    }
    Ok(EXIT_OK)
}
