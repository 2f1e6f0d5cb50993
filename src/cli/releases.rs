//! `de-build releases list|show|diff`: read the manifests in `releases/`.

use crate::adapters::engine::Engine;
use crate::config::{self, Paths};
use crate::error::{Error, Result, EXIT_OK};
use crate::record::manifest::{Loaded, Manifest, Store};
use crate::ui::output::{self, Style};
use crate::util::short_id;
use serde_json::json;
use std::collections::BTreeMap;

fn store(paths: &Paths) -> Store {
    Store::new(&paths.releases)
}

fn must_get(paths: &Paths, version: &str) -> Result<Loaded> {
    let s = store(paths);
    s.get(version)?.ok_or_else(|| {
        let (all, _) = s.load_all();
        let known: Vec<String> = all.iter().map(|l| l.manifest.version.clone()).collect();
        Error::refused(
            format!(
                "no release {version} in {}",
                config::display(&paths.releases)
            ),
            if known.is_empty() {
                "no release has been recorded yet: run `de-build build`".to_string()
            } else {
                format!("recorded releases: {}", known.join(", "))
            },
        )
    })
}

/// Which manifests still have their image in the engine (None: engine unreachable).
async fn presence(all: &[Loaded]) -> Option<Vec<(bool, bool)>> {
    let engine = Engine::connect().await.ok()?;
    let mut out = Vec::new();
    for l in all {
        let by_id = engine.image(&l.manifest.image.id).await.ok().flatten();
        let tagged = by_id
            .as_ref()
            .is_some_and(|i| i.repo_tags.contains(&l.manifest.image.reference));
        out.push((by_id.is_some(), tagged));
    }
    Some(out)
}

pub async fn list(paths: &Paths, style: &Style) -> Result<i32> {
    let (all, problems) = store(paths).load_all();
    crate::ui::problems::print_warnings(style, &problems);
    let present = presence(&all).await;
    if style.json {
        let rows: Vec<_> = all
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let m = &l.manifest;
                let (image_present, tagged) = present.as_ref().map(|p| p[i]).map(|(a, b)| (json!(a), json!(b))).unwrap_or((json!(null), json!(null)));
                json!({"version": m.version, "created": m.created, "image": m.image.reference, "image_id": m.image.id,
                       "image_present": image_present, "tagged": tagged, "apps": m.apps.len(),
                       "pushed": m.registry.as_ref().map(|r| r.digest_ref.clone()), "manifest": config::display(&l.path)})
            })
            .collect();
        output::json(&json!({"command": "releases list", "ok": true, "releases": rows}));
        return Ok(EXIT_OK);
    }
    if all.is_empty() {
        output::result("no releases recorded yet (run `de-build build`)");
        return Ok(EXIT_OK);
    }
    output::result(&format!(
        "{:<12} {:<20} {:<14} {}",
        "VERSION", "CREATED", "IMAGE ID", "IMAGE"
    ));
    for (i, l) in all.iter().enumerate() {
        let m = &l.manifest;
        let state = match present.as_ref().map(|p| p[i]) {
            Some((true, true)) => "present",
            Some((true, false)) => "present, tag missing (de-build tags repair)",
            Some((false, _)) => "image gone",
            None => "engine unreachable",
        };
        output::result(&format!(
            "{:<12} {:<20} {:<14} {} ({state})",
            m.version,
            m.created.get(..19).unwrap_or(&m.created),
            short_id(&m.image.id),
            m.image.reference
        ));
    }
    Ok(EXIT_OK)
}

pub fn show(paths: &Paths, version: &str, style: &Style) -> Result<i32> {
    let l = must_get(paths, version)?;
    let m = &l.manifest;
    if style.json {
        output::json(
            &json!({"command": "releases show", "ok": true, "manifest_path": config::display(&l.path), "manifest": m}),
        );
        return Ok(EXIT_OK);
    }
    output::result(&format!(
        "release {}  ({})",
        m.version,
        config::display(&l.path)
    ));
    output::result(&format!(
        "  image      {}  {}",
        m.image.reference, m.image.id
    ));
    output::result(&format!(
        "  created    {} by de-build {} on engine {}",
        m.created, m.de_build_version, m.builder.engine_version
    ));
    if let Some(r) = &m.project_revision {
        output::result(&format!("  revision   {r}"));
    }
    output::result(&format!(
        "  cache key  {} (from {})",
        &m.cache_key.value[..m.cache_key.value.len().min(16)],
        m.cache_key.source
    ));
    if let Some(s) = &m.superseded {
        output::result(&format!(
            "  superseded {} ({})",
            s.reference,
            short_id(&s.id)
        ));
    }
    if let Some(r) = &m.registry {
        output::result(&format!("  pushed     {}", r.digest_ref));
    }
    output::result("  build-args");
    for (k, v) in &m.build_args {
        output::result(&format!("    {k}={v}"));
    }
    output::result("  apps");
    for a in &m.apps {
        output::result(&format!(
            "    {:<14} {:<16} {}  {}",
            a.name,
            a.reference,
            a.commit
                .as_deref()
                .map(|c| &c[..c.len().min(12)])
                .unwrap_or("(unresolved)"),
            a.url
        ));
    }
    Ok(EXIT_OK)
}

/// One value on each side of a diff (`None`: not recorded on that side).
pub type Change = (Option<String>, Option<String>);

/// The differences between two manifests, as plain data.
#[derive(Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Diff {
    pub apps_added: Vec<String>,
    pub apps_removed: Vec<String>,
    /// (app, from "ref@commit", to "ref@commit")
    pub apps_changed: Vec<(String, String, String)>,
    /// (arg, from, to); a missing side is `None`.
    pub build_args_changed: Vec<(String, Option<String>, Option<String>)>,
    pub containerfile_changed: bool,
    /// The Containerfile's sha256 on each side, when it changed.
    pub containerfile: Option<Change>,
    /// The image IDs, when they differ. Two builds differ here even with
    /// identical content, as the labels carry the version and build time.
    pub image_id: Option<Change>,
    /// The content digests (layers + runtime config, labels excluded), when
    /// they differ or one side has none: whether what runs changed.
    pub content: Option<Change>,
    /// The project's git revision at build time, when it differs.
    pub project_revision: Option<Change>,
}

impl Diff {
    /// The two images hold the same layers and runtime config.
    pub fn same_content(&self) -> bool {
        self.content.is_none()
    }

    /// Nothing recorded differs (same image, same inputs).
    pub fn is_empty(&self) -> bool {
        *self == Diff::default()
    }

    /// The content changed while apps, build-args and Containerfile did not:
    /// the difference is in the other files of the build context.
    pub fn context_only(&self) -> bool {
        !self.same_content()
            && self.apps_added.is_empty()
            && self.apps_removed.is_empty()
            && self.apps_changed.is_empty()
            && self.build_args_changed.is_empty()
            && !self.containerfile_changed
    }
}

fn change<T: PartialEq + ToString>(a: Option<&T>, b: Option<&T>) -> Option<Change> {
    (a != b).then(|| (a.map(T::to_string), b.map(T::to_string)))
}

pub fn diff_manifests(a: &Manifest, b: &Manifest) -> Diff {
    let mut d = Diff::default();
    let apps_a: BTreeMap<_, _> = a.apps.iter().map(|x| (x.name.clone(), x)).collect();
    let apps_b: BTreeMap<_, _> = b.apps.iter().map(|x| (x.name.clone(), x)).collect();
    let at = |x: &crate::record::manifest::AppRecord| {
        format!(
            "{}@{}",
            x.reference,
            x.commit
                .as_deref()
                .map(|c| &c[..c.len().min(12)])
                .unwrap_or("?")
        )
    };
    for (name, x) in &apps_a {
        match apps_b.get(name) {
            None => d.apps_removed.push(name.clone()),
            Some(y) if x.reference != y.reference || x.commit != y.commit => {
                d.apps_changed.push((name.clone(), at(x), at(y)))
            }
            _ => {}
        }
    }
    d.apps_added = apps_b
        .keys()
        .filter(|k| !apps_a.contains_key(*k))
        .cloned()
        .collect();
    let keys: std::collections::BTreeSet<_> =
        a.build_args.keys().chain(b.build_args.keys()).collect();
    for k in keys {
        let (x, y) = (a.build_args.get(k), b.build_args.get(k));
        if x != y {
            d.build_args_changed
                .push((k.clone(), x.cloned(), y.cloned()));
        }
    }
    d.containerfile = change(Some(&a.containerfile.sha256), Some(&b.containerfile.sha256));
    d.containerfile_changed = d.containerfile.is_some();
    d.image_id = change(Some(&a.image.id), Some(&b.image.id));
    d.content = match (&a.smoke_test.content_digest, &b.smoke_test.content_digest) {
        (Some(x), Some(y)) if x == y => None,
        // The same image ID is the same content, recorded or not.
        _ if d.image_id.is_none() => None,
        (x, y) => Some((x.clone(), y.clone())),
    };
    d.project_revision = change(a.project_revision.as_ref(), b.project_revision.as_ref());
    d
}

/// A digest shortened for reading: `sha256:` dropped, 12 hex digits.
fn short(v: &Option<String>) -> String {
    match v {
        None => "(not recorded)".into(),
        Some(s) => {
            let hex = s.strip_prefix("sha256:").unwrap_or(s);
            hex[..hex.len().min(12)].to_string()
        }
    }
}

/// The human lines of a diff (after the `A -> B` title).
pub fn diff_lines(d: &Diff) -> Vec<String> {
    let mut out = Vec::new();
    if let Some((x, y)) = &d.image_id {
        out.push(format!("  ~ image ID: {} -> {}", short(x), short(y)));
    }
    match &d.content {
        None if d.image_id.is_some() => out.push(
            "  = image content: identical layers and runtime config (only labels differ, e.g. version and build time)"
                .into(),
        ),
        None => {}
        Some((x, y)) => out.push(format!(
            "  ~ image content (layers + runtime config): {} -> {}",
            short(x),
            short(y)
        )),
    }
    for n in &d.apps_added {
        out.push(format!("  + app {n}"));
    }
    for n in &d.apps_removed {
        out.push(format!("  - app {n}"));
    }
    for (n, x, y) in &d.apps_changed {
        out.push(format!("  ~ app {n}: {x} -> {y}"));
    }
    for (k, x, y) in &d.build_args_changed {
        out.push(format!(
            "  ~ build-arg {k}: {} -> {}",
            x.as_deref().unwrap_or("(unset)"),
            y.as_deref().unwrap_or("(unset)")
        ));
    }
    if let Some((x, y)) = &d.containerfile {
        out.push(format!(
            "  ~ Containerfile: sha256 {} -> {}",
            short(x),
            short(y)
        ));
    }
    if let Some((x, y)) = &d.project_revision {
        out.push(format!(
            "  ~ project revision: {} -> {}",
            x.as_deref()
                .map(|r| &r[..r.len().min(12)])
                .unwrap_or("(none)"),
            y.as_deref()
                .map(|r| &r[..r.len().min(12)])
                .unwrap_or("(none)")
        ));
    }
    if d.context_only() {
        out.push(
            "  apps, build-args and Containerfile are the same: the change is in other files of the build context (e.g. a COPY source)"
                .into(),
        );
    }
    if d.is_empty() {
        out.push("  no differences: the same image, built from the same inputs".into());
    }
    out
}

pub fn diff(paths: &Paths, a: &str, b: &str, style: &Style) -> Result<i32> {
    let (la, lb) = (must_get(paths, a)?, must_get(paths, b)?);
    let d = diff_manifests(&la.manifest, &lb.manifest);
    if style.json {
        output::json(
            &json!({"command": "releases diff", "ok": true, "from": a, "to": b,
                             "same_content": d.same_content(), "diff": d}),
        );
        return Ok(EXIT_OK);
    }
    output::result(&format!("{a} -> {b}"));
    for l in diff_lines(&d) {
        output::result(&l);
    }
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::manifest::{tests::sample, AppRecord};

    #[test]
    fn diff_reports_apps_and_args() {
        let a = sample("1.0.0");
        let mut b = sample("1.1.0");
        b.apps[0].commit = Some("beef".into());
        b.apps.push(AppRecord {
            name: "hrms".into(),
            url: "u".into(),
            reference: "v1".into(),
            commit: None,
        });
        b.build_args.insert("NODE_VERSION".into(), "20.0.0".into());
        b.build_args
            .insert("FRAPPE_BRANCH".into(), "version-16".into());
        let d = diff_manifests(&a, &b);
        assert_eq!(d.apps_added, vec!["hrms"]);
        assert!(d.apps_removed.is_empty());
        assert_eq!(
            d.apps_changed,
            vec![(
                "erpnext".into(),
                "v15.17.0@c0ffee".into(),
                "v15.17.0@beef".into()
            )]
        );
        assert_eq!(
            d.build_args_changed,
            vec![
                (
                    "FRAPPE_BRANCH".into(),
                    Some("version-15".into()),
                    Some("version-16".into())
                ),
                ("NODE_VERSION".into(), None, Some("20.0.0".into()))
            ]
        );
        assert!(!d.containerfile_changed);
        assert_eq!(diff_manifests(&a, &a), Diff::default());
    }

    #[test]
    fn diff_compares_images_and_containerfile() {
        let mut a = sample("1.0.1");
        let mut b = sample("1.0.2");
        a.smoke_test.content_digest = Some("sha256:1111aaaa2222bbbb".into());
        b.smoke_test.content_digest = Some("sha256:3333cccc4444dddd".into());
        b.image.id = "sha256:99998888777766665555".into();
        // Same apps, args and Containerfile, another image: a context file changed.
        let d = diff_manifests(&a, &b);
        assert_eq!(
            d.image_id,
            Some((
                Some("sha256:0123".into()),
                Some("sha256:99998888777766665555".into())
            ))
        );
        assert!(!d.same_content() && d.context_only() && !d.is_empty());
        let lines = diff_lines(&d);
        assert!(
            lines.contains(&"  ~ image ID: 0123 -> 999988887777".to_string()),
            "{lines:?}"
        );
        assert!(
            lines.contains(
                &"  ~ image content (layers + runtime config): 1111aaaa2222 -> 3333cccc4444"
                    .to_string()
            ),
            "{lines:?}"
        );
        assert!(lines
            .iter()
            .any(|l| l.contains("other files of the build context")));
        assert!(!lines.iter().any(|l| l.contains("no differences")));

        // Rebuilt with identical content: only the ID (labels) differs.
        b.smoke_test.content_digest = a.smoke_test.content_digest.clone();
        let d = diff_manifests(&a, &b);
        assert!(d.same_content() && !d.context_only() && d.image_id.is_some());
        assert!(diff_lines(&d)[1].starts_with("  = image content: identical"));

        // Containerfile changed.
        b.containerfile.sha256 = "fe".into();
        let d = diff_manifests(&a, &b);
        assert!(d.containerfile_changed);
        assert_eq!(
            d.containerfile,
            Some((Some("ab".into()), Some("fe".into())))
        );
        assert!(diff_lines(&d).contains(&"  ~ Containerfile: sha256 ab -> fe".to_string()));

        // A manifest without a content digest: unknown, so reported as changed.
        a.smoke_test.content_digest = None;
        let d = diff_manifests(&a, &b);
        assert_eq!(
            d.content,
            Some((None, Some("sha256:1111aaaa2222bbbb".into())))
        );
    }
}
