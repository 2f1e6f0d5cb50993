//! The only layer that changes the world: runs a plan step by step through
//! ports (traits), recovering when a step fails.

pub mod build;
pub mod deploy;
pub mod image;
pub mod ports;
pub mod swarm;
