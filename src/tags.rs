//! `de-build tags repair`: give recorded images their version tags back.

use crate::check::short_id;
use crate::config::Paths;
use crate::engine::Engine;
use crate::error::{Result, EXIT_OK};
use crate::manifest::{Loaded, Store};
use crate::output::{self, Style};
use serde_json::json;

/// One repair, decided before anything is changed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Repair {
    pub version: String,
    pub reference: String,
    pub image_id: String,
    /// The image that holds the tag now (a manual build), kept under this tag.
    pub displaced: Option<(String, String)>,
}

/// State of one recorded release in the engine.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum TagState {
    Ok,
    ImageGone,
    /// The image exists, the tag is missing or on another image (`holder`).
    Lost {
        holder: Option<String>,
    },
}

pub fn decide(l: &Loaded, state: &TagState) -> Option<Repair> {
    let m = &l.manifest;
    match state {
        TagState::Lost { holder } => Some(Repair {
            version: m.version.clone(),
            reference: m.image.reference.clone(),
            image_id: m.image.id.clone(),
            displaced: holder.as_ref().map(|h| {
                (
                    h.clone(),
                    format!(
                        "{}:{}-untracked-{}",
                        m.image.repository,
                        m.version,
                        short_id(h)
                    ),
                )
            }),
        }),
        _ => None,
    }
}

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
    crate::check::print_warnings(style, &problems);
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
        let (repo, tag) = crate::engine::split_reference(&r.reference);
        if let Some((holder, keep_as)) = &r.displaced {
            let (krepo, ktag) = crate::engine::split_reference(keep_as);
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
