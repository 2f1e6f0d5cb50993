//! `de-build recover`: finish or undo an interrupted deployment from its
//! record.

use crate::cli::args::{Global, RecoverArgs};
use crate::cli::deploy::{required, secs, Session};
use crate::cli::run::Terminal;
use crate::config;
use crate::error::{Error, Result, EXIT_OK};
use crate::exec::deploy::{self as executor, Executor};
use crate::exec::ports::World;
use crate::plan::deploy as planner;
use crate::record::state::{self, LockStatus, Outcome, State};
use crate::ui::output::{self, Style};
use serde_json::json;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

/// `de-build recover`.
pub async fn run_recover(global: &Global, args: &RecoverArgs, style: &Style) -> Result<i32> {
    let inputs = config::load(&crate::cli::paths(global));
    if crate::cli::swarm::is_swarm(&inputs)? {
        return crate::cli::swarm::recover(&inputs, args, style).await;
    }
    let st = State::new(&inputs.paths.state);
    let (all, bad) = st.deployments();
    for b in &bad {
        output::diag(&format!(
            "warning: deployment record {} cannot be read ({}); it is not considered",
            b.path.display(),
            b.error
        ));
    }
    let lock = st.lock_status();
    if let LockStatus::Held { .. } = lock {
        return Err(Error::Locked {
            message: format!("the deploy lock is {}", lock.describe()),
            hint: "a deployment is running: it recovers by itself; wait for it".into(),
        });
    }
    let target = state::interrupted(&all, &lock)
        .or_else(|| all.last().filter(|d| d.result == Outcome::Fatal))
        .cloned();
    let Some(mut record) = target else {
        if let LockStatus::Stale { .. } = lock {
            st.break_lock()?;
            output::result("no interrupted deployment; removed the lock a dead process left");
        } else if style.json {
            output::json(&json!({"command": "recover", "ok": true, "recovered": null}));
        } else {
            output::result("nothing to recover: no deployment was interrupted");
        }
        return Ok(EXIT_OK);
    };
    let Some((plan, recovery)) = executor::recovery_of(&record) else {
        return Err(Error::refused(
            format!("deployment {} was recorded by an older de-build without its plan", record.id),
            format!("recover by hand: bring the release you want up with `de-build deploy <version>` after moving {} aside", st.deployments_dir().join(format!("{}.json", record.id)).display()),
        ));
    };
    let all_done = plan
        .steps
        .iter()
        .all(|s| record.progress.done.iter().any(|d| d == s.step.name()));
    if args.dry_run {
        let what = if all_done {
            format!("every step of {} finished: check the health gate and close the record as succeeded", record.id)
        } else {
            planner::describe(&recovery)
        };
        if style.json {
            output::json(
                &json!({"command": "recover", "ok": true, "dry_run": true, "deployment": record.id, "complete": all_done, "recovery": recovery}),
            );
        } else {
            output::result(&format!(
                "deployment {} ({} {} -> {}, {}): {what}",
                record.id,
                record.action,
                record.previous_version.as_deref().unwrap_or("nothing"),
                record.version,
                record.result.as_str()
            ));
            output::result("dry run: nothing was changed");
        }
        return Ok(EXIT_OK);
    }
    let s = Session::open(&inputs, style).await?;
    let (lock, _) = s.state.lock("recover", &record.version)?;
    // Never restore a database that serves users: if the site answers 2xx
    // now (a recovery that ran but could not record itself, or a kill after
    // maintenance went off), users may have written since.
    let (plan, recovery) = match required(&inputs, "DE_HEALTH_URL") {
        Ok(url)
            if !all_done
                && recovery
                    .steps
                    .iter()
                    .any(|r| matches!(r, crate::plan::deploy::RecoveryStep::Restore { .. })) =>
        {
            let open = s
                .world
                .wait_healthy(
                    url,
                    Duration::from_secs(1),
                    crate::record::deploy::Gate::Open,
                )
                .await
                .is_ok();
            if open {
                output::progress(style, "note: the site answers 2xx now, so users may have written to it: its database is not restored");
                record.progress.users_let_in = true;
                let mut progress = record.progress.clone();
                progress.maintenance_on |= plan.previous_running;
                let r = planner::recovery(&plan, &progress);
                (plan, r)
            } else {
                (plan, recovery)
            }
        }
        _ => (plan, recovery),
    };
    let logs = s.state.ensure_dir("logs")?;
    let mut term = Terminal::new(s.style, &logs.join(format!("{}.log", record.id)));
    let mut ex = Executor {
        world: &s.world,
        records: &s.state,
        sink: &mut term,
        interrupted: Arc::new(AtomicBool::new(false)),
        db_root_password: s.inputs.env.secret("DB_PASSWORD"),
        sites: None,
        listing: Default::default(),
    };
    let result = if all_done {
        // Only the final record write was missing: check, then close it.
        let url = required(&inputs, "DE_HEALTH_URL")?.to_string();
        match s
            .world
            .wait_healthy(
                &url,
                Duration::from_secs(secs(&inputs, "DE_HEALTH_TIMEOUT", 60)),
                crate::record::deploy::Gate::Open,
            )
            .await
        {
            Ok(_) => {
                record.result = Outcome::Succeeded;
                record.finished = Some(state::now());
                s.state.save(&record).map(|_| None)
            }
            Err(e) => {
                let r = planner::recovery(&plan, &record.progress);
                Ok(Some(ex.recover(&plan, &mut record, r, e).await))
            }
        }
    } else {
        let cause = Error::failed(format!(
            "deployment {} was interrupted ({})",
            record.id,
            record.result.as_str()
        ));
        Ok(Some(ex.recover(&plan, &mut record, recovery, cause).await))
    };
    if let Err(e) = lock.release() {
        output::diag(&format!("warning: {e}"));
    }
    let result = result?.map(|e| match (e, record.result) {
        // Back to a consistent project, with nothing to bring back: a
        // recovery all the same.
        (Error::Failed { message, hint }, Outcome::Aborted) => Error::Recovered {
            message: format!(
                "{message}; {}",
                hint.unwrap_or_else(|| "the project is consistent again".into())
            ),
        },
        (e, _) => e,
    });
    match result {
        None => {
            if style.json {
                output::json(
                    &json!({"command": "recover", "ok": true, "deployment": record.id, "result": record.result}),
                );
            } else {
                output::result(&format!(
                    "deployment {} completed: {} is deployed and healthy",
                    record.id, record.version
                ));
            }
            Ok(EXIT_OK)
        }
        Some(e) => Err(e),
    }
}
