//! `de-build status`: the records compared with the engine. Exit 0 only when
//! they agree and nothing is interrupted; 1 otherwise, saying what differs.

use crate::adapters::engine::{split_reference, ContainerInfo, Engine};
use crate::config::{self, Paths};
use crate::error::{Result, EXIT_FAILURE, EXIT_OK};
use crate::record::state::{self, Deployment, LockStatus, Outcome, State};
use crate::ui::output::{self, Style};
use crate::util::short_id;
use serde::Serialize;
use serde_json::json;

/// One disagreement, with what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub code: &'static str,
    pub message: String,
    pub fix: String,
}

/// What the engine shows of the project.
#[derive(Debug, Clone)]
pub enum EngineView {
    Unreachable(String),
    Containers(Vec<ContainerInfo>),
}

/// Compare records, lock and engine: pure.
pub fn findings(
    all: &[Deployment],
    unreadable: &[state::Unreadable],
    lock: &LockStatus,
    engine: &EngineView,
    image_repo: Option<&str>,
) -> Vec<Finding> {
    let mut out = Vec::new();
    for u in unreadable {
        out.push(Finding {
            code: "unreadable-record",
            message: format!("record {} cannot be read: {}", u.path.display(), u.error),
            fix: "inspect it; move it aside if it is damaged (it may be the record of what runs)"
                .into(),
        });
    }
    match lock {
        LockStatus::Held { .. } => out.push(Finding {
            code: "in-progress",
            message: format!("a deployment is running: the lock is {}", lock.describe()),
            fix: "wait for it to finish".into(),
        }),
        LockStatus::Stale { .. } => out.push(Finding {
            code: "stale-lock",
            message: format!("the lock was {}", lock.describe()),
            fix: "`de-build recover`".into(),
        }),
        LockStatus::Free => {}
    }
    if let Some(d) = state::interrupted(all, lock) {
        out.push(Finding {
            code: "interrupted",
            message: format!(
                "deployment {} ({} {} -> {}) did not finish: its record says {} and no process holds the lock",
                d.id,
                d.action,
                d.previous_version.as_deref().unwrap_or("nothing"),
                d.version,
                d.result.as_str()
            ),
            fix: "`de-build recover` (`--dry-run` first to see what it does)".into(),
        });
    } else if let Some(d) = all.last().filter(|d| d.result == Outcome::Fatal) {
        out.push(Finding {
            code: "recovery-failed",
            message: format!("deployment {} failed and its recovery did not finish", d.id),
            fix: format!(
                "`de-build recover`, or by hand: {}",
                d.left.as_deref().unwrap_or("see the deployment log")
            ),
        });
    }
    let current = state::current(all);
    let containers = match engine {
        EngineView::Unreachable(e) => {
            out.push(Finding {
                code: "engine-unreachable",
                message: format!("the Docker engine did not answer ({e}): what runs is unknown"),
                fix: "check the engine (`docker info`, DOCKER_HOST)".into(),
            });
            return out;
        }
        EngineView::Containers(c) => c,
    };
    let app: Vec<&ContainerInfo> = containers
        .iter()
        .filter(|c| {
            current.is_some_and(|d| c.image_id == d.image_id)
                || image_repo.is_some_and(|r| split_reference(&c.image).0 == r)
        })
        .collect();
    let running: Vec<&&ContainerInfo> = app.iter().filter(|c| c.state == "running").collect();
    match current {
        Some(d) => {
            if running.is_empty() {
                out.push(Finding {
                    code: "not-running",
                    message: format!(
                        "{} is recorded as deployed but none of its app containers runs",
                        d.version
                    ),
                    fix: format!("`de-build deploy {}` starts it again", d.version),
                });
            }
            let wrong: Vec<String> = running
                .iter()
                .filter(|c| c.image_id != d.image_id)
                .map(|c| format!("{} runs {} {}", c.name, c.image, short_id(&c.image_id)))
                .collect();
            if !wrong.is_empty() {
                out.push(Finding {
                    code: "wrong-image",
                    message: format!(
                        "{} is recorded as deployed (image {}) but {}",
                        d.version,
                        short_id(&d.image_id),
                        wrong.join("; ")
                    ),
                    fix: format!("`de-build deploy {}` puts the recorded release back (or deploy the one you want)", d.version),
                });
            }
        }
        None if !running.is_empty() => out.push(Finding {
            code: "unrecorded-stack",
            message: format!(
                "no release is recorded as deployed, but {} container(s) of the project run: {}",
                running.len(),
                running
                    .iter()
                    .map(|c| format!("{} ({})", c.name, c.image))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            fix: "deploy a recorded release (`de-build deploy <version>`)".into(),
        }),
        None => {}
    }
    out
}

pub async fn run(paths: &Paths, style: &Style) -> Result<i32> {
    let inputs = config::load(paths);
    if crate::cli::swarm::is_swarm(&inputs)? {
        return crate::cli::swarm::status(&inputs, style).await;
    }
    let st = State::new(&paths.state);
    let (all, unreadable) = st.deployments();
    let lock = st.lock_status();
    let current = state::current(&all).cloned();
    let project = current
        .as_ref()
        .map(|d| d.project.clone())
        .or_else(|| inputs.env.get("COMPOSE_PROJECT_NAME").map(str::to_string));
    let engine = match Engine::connect().await {
        Err(e) => EngineView::Unreachable(e.to_string()),
        Ok(engine) => match &project {
            None => EngineView::Containers(Vec::new()),
            Some(p) => match engine.project_containers(p).await {
                Ok(c) => EngineView::Containers(c),
                Err(e) => EngineView::Unreachable(e.to_string()),
            },
        },
    };
    let found = findings(
        &all,
        &unreadable,
        &lock,
        &engine,
        inputs.env.get("DE_IMAGE"),
    );
    let consistent = found.is_empty();
    let previous = state::earlier(&all).first().map(|d| d.version.clone());
    let interrupted = state::interrupted(&all, &lock).map(|d| d.id.clone());
    let containers = match &engine {
        EngineView::Containers(c) => c.clone(),
        EngineView::Unreachable(_) => Vec::new(),
    };
    if style.json {
        output::json(&json!({
            "command": "status", "ok": true, "consistent": consistent,
            "exit_code": if consistent { EXIT_OK } else { EXIT_FAILURE },
            "findings": found,
            "interrupted": interrupted,
            "current": current.as_ref().map(|d| json!({"version": d.version, "deployment": d.id, "image_id": d.image_id, "since": d.finished, "compose_file": d.compose_file})),
            "previous_version": previous,
            "lock": lock,
            "running": containers.iter().map(|c| json!({"name": c.name, "service": c.service, "image": c.image, "image_id": c.image_id, "state": c.state})).collect::<Vec<_>>(),
            "deployments": all.iter().rev().take(10).map(|d| json!({"id": d.id, "action": d.action, "version": d.version, "previous": d.previous_version, "result": d.result, "started": d.started, "backups": d.backups, "error": d.error, "left": d.left, "data_note": d.data_note})).collect::<Vec<_>>(),
        }));
    } else {
        match &current {
            Some(d) => output::result(&format!(
                "deployed: {} (image {}, deployment {}, compose file {})",
                d.version,
                short_id(&d.image_id),
                d.id,
                config::display(&d.compose_file)
            )),
            None => output::result("deployed: nothing recorded"),
        }
        output::result(&format!(
            "previous: {}",
            previous.as_deref().unwrap_or("none")
        ));
        output::result(&format!("lock:     {}", lock.describe()));
        let up: Vec<String> = containers
            .iter()
            .map(|c| {
                format!(
                    "{} {} {} ({})",
                    c.service,
                    c.image,
                    short_id(&c.image_id),
                    c.state
                )
            })
            .collect();
        match &engine {
            EngineView::Unreachable(_) => output::result("engine:   not reachable"),
            EngineView::Containers(_) if up.is_empty() => {
                output::result("engine:   no container of the project")
            }
            EngineView::Containers(_) => output::result(&format!("engine:   {}", up.join(" · "))),
        }
        if consistent {
            output::result(&format!(
                "{} records and engine agree",
                style.green("consistent:")
            ));
        } else {
            for f in &found {
                output::result(&format!("{} {}", style.red("NOT CONSISTENT:"), f.message));
                output::result(&format!("  fix: {}", f.fix));
            }
        }
        if !all.is_empty() {
            output::result("last deployments:");
            for d in all.iter().rev().take(10) {
                let backups = if d.backups.is_empty() {
                    String::new()
                } else {
                    format!(" · {} backup(s)", d.backups.len())
                };
                output::result(&format!(
                    "  {}  {:<8} {} -> {:<10} {}{backups}",
                    d.id,
                    d.action,
                    d.previous_version.as_deref().unwrap_or("-"),
                    d.version,
                    d.result.as_str()
                ));
                if let Some(l) = &d.left {
                    output::result(&format!("      left to do: {l}"));
                }
                if let Some(n) = &d.data_note {
                    output::result(&format!("      data: {n}"));
                }
            }
        }
    }
    Ok(if consistent { EXIT_OK } else { EXIT_FAILURE })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::state::Deployment;

    fn rec(id: &str, v: &str, result: Outcome) -> Deployment {
        serde_json::from_value(json!({
            "id": id, "action": "deploy", "version": v, "image_id": format!("sha256:{v}"),
            "previous_version": null, "project": "p", "compose_file": "/c", "compose_source": "/s",
            "env": {}, "backups": [], "started": "t", "finished": null, "result": result,
            "steps": [], "error": null, "left": null, "user": "u", "host": "h"
        }))
        .unwrap()
    }

    fn c(v: &str) -> ContainerInfo {
        ContainerInfo {
            id: "x".into(),
            name: "p-backend-1".into(),
            service: "backend".into(),
            image: format!("demo/erpnext:{v}"),
            image_id: format!("sha256:{v}"),
            state: "running".into(),
        }
    }

    fn codes(f: &[Finding]) -> Vec<&'static str> {
        f.iter().map(|f| f.code).collect()
    }

    #[test]
    fn agreement_is_consistent() {
        let all = vec![rec("1", "1.0.0", Outcome::Succeeded)];
        let e = EngineView::Containers(vec![c("1.0.0")]);
        assert!(findings(&all, &[], &LockStatus::Free, &e, Some("demo/erpnext")).is_empty());
    }

    #[test]
    fn the_engine_is_believed_over_the_records() {
        let all = vec![rec("1", "1.1.0", Outcome::Succeeded)];
        let e = EngineView::Containers(vec![c("1.0.0")]);
        let f = findings(&all, &[], &LockStatus::Free, &e, Some("demo/erpnext"));
        assert_eq!(codes(&f), vec!["wrong-image"]);
        assert!(f[0].message.contains("demo/erpnext:1.0.0"));
        let f = findings(
            &all,
            &[],
            &LockStatus::Free,
            &EngineView::Containers(vec![]),
            None,
        );
        assert_eq!(codes(&f), vec!["not-running"]);
    }

    #[test]
    fn an_interrupted_deployment_and_a_stale_lock_are_named() {
        let all = vec![
            rec("1", "1.0.0", Outcome::Succeeded),
            rec("2", "1.1.0", Outcome::Running),
        ];
        let e = EngineView::Containers(vec![c("1.0.0")]);
        let f = findings(
            &all,
            &[],
            &LockStatus::Stale { holder: None },
            &e,
            Some("demo/erpnext"),
        );
        assert_eq!(codes(&f), vec!["stale-lock", "interrupted"]);
        assert!(f[1].message.contains("deployment 2"));
        // while a live process holds the lock it is in progress, not interrupted
        let f = findings(
            &all,
            &[],
            &LockStatus::Held { holder: None },
            &e,
            Some("demo/erpnext"),
        );
        assert_eq!(codes(&f), vec!["in-progress"]);
    }

    #[test]
    fn an_unreachable_engine_is_never_consistent() {
        let all = vec![rec("1", "1.0.0", Outcome::Succeeded)];
        let f = findings(
            &all,
            &[],
            &LockStatus::Free,
            &EngineView::Unreachable("no socket".into()),
            None,
        );
        assert_eq!(codes(&f), vec!["engine-unreachable"]);
    }
}
