//! What `prune` must keep: pure, from manifests and records.

use crate::record::manifest::Loaded;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::manifest::{tests::sample, Superseded};

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
