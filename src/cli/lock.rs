//! `de-build lock release`: remove a lock left by a process that is gone.

use crate::config::Paths;
use crate::error::{Result, EXIT_OK};
use crate::record::state::{LockStatus, State};
use crate::ui::output::{self, Style};
use serde_json::json;

pub fn release(paths: &Paths, style: &Style) -> Result<i32> {
    let state = State::new(&paths.state);
    let was = state.break_lock()?;
    if style.json {
        output::json(&json!({"command": "lock release", "ok": true, "was": was}));
    } else {
        match &was {
            LockStatus::Stale { .. } => {
                output::result(&format!("released the lock {}", was.describe()));
                output::result("`de-build status` tells whether its deployment needs `de-build recover`");
            }
            _ => output::result("the lock was free"),
        }
    }
    Ok(EXIT_OK)
}
