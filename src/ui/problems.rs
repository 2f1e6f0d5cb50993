//! Problems and warnings as people read them.

use crate::error::Problem;
use crate::ui::output::{self, Style};

/// Problems that do not stop the command (e.g. an unreadable manifest while listing).
pub fn print_warnings(style: &Style, problems: &[Problem]) {
    for p in problems {
        output::diag(&format!(
            "{} {}: {}",
            style.yellow("warning:"),
            p.location(),
            p.message
        ));
        if let Some(h) = &p.hint {
            output::diag(&format!("  {} {h}", style.dim("hint:")));
        }
    }
}

/// Human rendering of problems, one block each, in the order found.
pub fn print_problems(style: &Style, problems: &[Problem]) {
    for p in problems {
        output::diag(&format!(
            "{} {}: {}",
            style.red("error:"),
            p.location(),
            p.message
        ));
        if let Some(h) = &p.hint {
            output::diag(&format!("  {} {h}", style.dim("hint:")));
        }
    }
}
