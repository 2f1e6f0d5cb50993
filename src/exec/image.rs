//! Make the image of a recorded release present under its tag: re-tag it when
//! only the tag is gone, pull it by digest when it was pushed.

use crate::adapters::engine::Engine;
use crate::config::{self, Inputs};
use crate::error::{Error, Result};
use crate::record::manifest::{Loaded, Store};
use crate::ui::output::{self, Style};
use crate::util::short_id;

/// The manifest of `version`, with its image present under its tag.
pub async fn ensure_release_image(
    engine: &Engine,
    inputs: &Inputs,
    style: &Style,
    version: &str,
) -> Result<Loaded> {
    let store = Store::new(&inputs.paths.releases);
    let (all, _) = store.load_all();
    let candidates = || {
        let v: Vec<String> = all.iter().map(|l| l.manifest.version.clone()).collect();
        if v.is_empty() {
            "none recorded yet".to_string()
        } else {
            v.join(", ")
        }
    };
    let Some(l) = all.iter().find(|l| l.manifest.version == version).cloned() else {
        return Err(Error::refused(
            format!(
                "release {version} was never recorded in {}",
                config::display(&inputs.paths.releases)
            ),
            format!(
                "recorded releases: {}; build it first with `de-build build`",
                candidates()
            ),
        ));
    };
    let m = &l.manifest;
    if engine.image(&m.image.id).await?.is_none() {
        if let Some(r) = &m.registry {
            output::progress(
                style,
                &format!("the image of {version} is not here; pulling {}", r.digest_ref),
            );
            let registry = r.digest_ref.split('/').next().unwrap_or_default();
            crate::adapters::registry::pull_by_digest(
                engine,
                m,
                crate::adapters::registry::credentials(&inputs.env, registry),
            )
            .await?;
        }
    }
    if engine.image(&m.image.id).await?.is_none() {
        let rev = m
            .project_revision
            .as_deref()
            .map(|r| format!("`git checkout {r}`, "))
            .unwrap_or_default();
        return Err(Error::refused(
            format!("the image of release {version} ({}) is gone from this engine", short_id(&m.image.id)),
            format!("rebuild it from its manifest: {rev}set DE_SITE_VERSION={version} and the app refs of {} (`de-build releases show {version}`), then `de-build build --replace`; candidates with images: {}", config::display(&l.path), candidates()),
        ));
    }
    match engine.image(&m.image.reference).await? {
        Some(i) if i.id == m.image.id => {}
        _ => {
            output::progress(
                style,
                &format!(
                    "re-tagging {} as {} (the tag had gone)",
                    short_id(&m.image.id),
                    m.image.reference
                ),
            );
            engine
                .tag(&m.image.id, &m.image.repository, &m.image.tag)
                .await?;
        }
    }
    Ok(l)
}
