//! What de-build writes down and reads back: release manifests
//! (`releases/<version>.json`) and deployment state (`.de-build/`).

pub mod deploy;
pub mod manifest;
pub mod state;
pub mod swarm;
