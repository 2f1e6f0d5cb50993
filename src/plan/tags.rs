//! Which recorded images lost their version tag, and how to give it back: pure.

use crate::record::manifest::Loaded;
use crate::util::short_id;

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

