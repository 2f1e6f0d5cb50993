//! Pure planning: what a command will do, computed as values before anything
//! changes. Plans serialize (`--dry-run --json`) and carry what undoing each
//! step means; nothing here touches the engine, compose or the disk.

pub mod build;
pub mod deploy;
pub mod prune;
pub mod swarm;
pub mod tags;
