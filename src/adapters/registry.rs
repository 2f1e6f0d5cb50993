//! Pushing releases to a registry and pulling them back by digest, through
//! the Engine API. Credentials (`DE_REGISTRY_USER`, secret
//! `DE_REGISTRY_PASSWORD`) go to the engine in the X-Registry-Auth header
//! only; they are never logged or stored.

use crate::adapters::engine::{engine_error, Engine};
use crate::config::envfile::EnvValues;
use crate::error::{Error, Result};
use crate::record::manifest::{Manifest, RegistryRecord};
use bollard::auth::DockerCredentials;
use bollard::query_parameters as q;
use futures_util::StreamExt;

/// `registry/image` for a release (e.g. `127.0.0.1:5000/acme/erpnext-custom`).
pub fn repository(registry: &str, image: &str) -> String {
    crate::util::registry_repository(registry, image)
}

pub fn credentials(env: &EnvValues, registry: &str) -> Option<DockerCredentials> {
    let user = env.get("DE_REGISTRY_USER")?;
    Some(DockerCredentials {
        username: Some(user.to_string()),
        password: env
            .secret("DE_REGISTRY_PASSWORD")
            .map(|s| s.expose().to_string()),
        serveraddress: Some(registry.to_string()),
        ..Default::default()
    })
}

/// The digest the registry holds for `reference`, if any.
pub async fn remote_digest(
    engine: &Engine,
    reference: &str,
    creds: Option<DockerCredentials>,
) -> Result<Option<String>> {
    match engine.docker.inspect_registry_image(reference, creds).await {
        Ok(d) => Ok(d.descriptor.digest),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code,
            message,
        }) if status_code == 404
            || message.contains("manifest unknown")
            || message.contains("not found") =>
        {
            Ok(None)
        }
        Err(e) => Err(engine_error(
            format!("ask the registry about {reference}"),
            &e,
        )),
    }
}

/// Push the release's image; refuse to overwrite a tag that holds another digest.
pub async fn push(
    engine: &Engine,
    m: &Manifest,
    registry: &str,
    creds: Option<DockerCredentials>,
) -> Result<RegistryRecord> {
    let repo = repository(registry, &m.image.repository);
    let reference = format!("{repo}:{}", m.image.tag);
    let local_digest = |info: &Option<bollard::models::ImageInspect>| -> Option<String> {
        info.as_ref()?
            .repo_digests
            .as_ref()?
            .iter()
            .find_map(|d| d.strip_prefix(&format!("{repo}@")).map(str::to_string))
    };
    let remote = remote_digest(engine, &reference, creds.clone()).await?;
    let before = engine.docker.inspect_image(&m.image.id).await.ok();
    if let Some(r) = &remote {
        if local_digest(&before).as_deref() == Some(r.as_str()) {
            return Ok(RegistryRecord {
                repository: repo.clone(),
                digest_ref: format!("{repo}@{r}"),
                pushed: crate::record::state::now(),
            });
        }
        return Err(Error::refused(
            format!("{reference} already exists in the registry with another image ({r}); tags are immutable"),
            "release a new DE_SITE_VERSION instead of overwriting a pushed one",
        ));
    }
    engine.tag(&m.image.id, &repo, &m.image.tag).await?;
    let started = std::time::Instant::now();
    let mut stream = engine.docker.push_image(
        &repo,
        Some(q::PushImageOptions {
            tag: Some(m.image.tag.clone()),
            ..Default::default()
        }),
        creds,
    );
    let mut digest = None;
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| engine_error(format!("push {reference}"), &e))?;
        if let Some(e) = info.error_detail.and_then(|d| d.message) {
            crate::ui::logfile::action(
                &format!("engine push {reference}"),
                false,
                started.elapsed(),
                &e,
            );
            return Err(Error::engine(format!("push {reference}"), e));
        }
        if let Some(s) = info.status {
            if let Some(i) = s.find("digest: sha256:") {
                digest = s[i + 8..].split_whitespace().next().map(str::to_string);
            }
        }
    }
    let digest =
        match digest {
            Some(d) => d,
            None => local_digest(&engine.docker.inspect_image(&m.image.id).await.ok()).ok_or_else(
                || Error::engine(format!("push {reference}"), "the engine reported no digest"),
            )?,
        };
    crate::ui::logfile::action(
        &format!("engine push {reference}"),
        true,
        started.elapsed(),
        &digest,
    );
    Ok(RegistryRecord {
        repository: repo.clone(),
        digest_ref: format!("{repo}@{digest}"),
        pushed: crate::record::state::now(),
    })
}

/// Pull `digest_ref` and check it is the recorded image; then tag it as the release.
pub async fn pull_by_digest(
    engine: &Engine,
    m: &Manifest,
    creds: Option<DockerCredentials>,
) -> Result<()> {
    let Some(r) = &m.registry else {
        return Err(Error::failed(format!(
            "release {} was never pushed",
            m.version
        )));
    };
    let started = std::time::Instant::now();
    let mut stream = engine.docker.create_image(
        Some(q::CreateImageOptions {
            from_image: Some(r.digest_ref.clone()),
            ..Default::default()
        }),
        None,
        creds,
    );
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| engine_error(format!("pull {}", r.digest_ref), &e))?;
        if let Some(e) = info.error_detail.and_then(|d| d.message) {
            return Err(Error::engine(format!("pull {}", r.digest_ref), e));
        }
    }
    crate::ui::logfile::action(
        &format!("engine pull {}", r.digest_ref),
        true,
        started.elapsed(),
        "",
    );
    let pulled = engine.image(&r.digest_ref).await?.ok_or_else(|| {
        Error::engine(
            format!("pull {}", r.digest_ref),
            "the image is missing after the pull",
        )
    })?;
    if pulled.id != m.image.id {
        return Err(Error::Failed {
            message: format!("{} is image {}, but release {} recorded {}", r.digest_ref, pulled.id, m.version, m.image.id),
            hint: Some("the registry does not hold the recorded image; rebuild the release from its manifest".into()),
        });
    }
    engine
        .tag(&m.image.id, &m.image.repository, &m.image.tag)
        .await
}

#[cfg(test)]
mod tests {
    #[test]
    fn repository_joins_registry_and_image() {
        assert_eq!(
            super::repository("127.0.0.1:5000/", "acme/erp"),
            "127.0.0.1:5000/acme/erp"
        );
    }
}
