//! `DE_SITE_VERSION` against the recorded releases: versions only go up.

use crate::config::envfile::Source;
use crate::config::{self, Inputs};
use crate::util::short_id;
use crate::error::Problem;
use crate::record::manifest::Store;

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


