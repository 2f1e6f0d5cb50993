//! Everything outside the process: the Docker engine and BuildKit session,
//! compose, bench inside the backend container, git remotes, the registry,
//! the HTTP health probe, the build context on disk.

pub mod bench;
pub mod compose;
pub mod context;
pub mod engine;
pub mod git;
pub mod health;
pub mod nginx;
pub mod online;
pub mod registry;
pub mod swarm;
