//! What people see: human or `--json` output, redaction, build progress,
//! the log file.

pub mod logfile;
pub mod output;
pub mod problems;
pub mod progress;
