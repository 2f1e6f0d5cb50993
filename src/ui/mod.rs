//! What people see: human or `--json` output, redaction, build progress,
//! live lines with elapsed time, the log file.

pub mod live;
pub mod logfile;
pub mod output;
pub mod problems;
pub mod progress;
