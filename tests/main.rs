//! Every integration test in one binary: one link instead of one per file,
//! and one pool of test threads across the files, so the tests that wait on
//! the engine wait side by side (`.cargo/config.toml` sets the thread count).
//! `cargo test --test integration build::` runs one file's tests; the
//! live-stack suite (`live::`, see `live/mod.rs`) runs apart.

mod support;

mod architecture;
mod build;
mod check;
mod ci_examples;
mod compose_check;
mod demo;
mod help;
mod live;
mod online;
mod parser_props;
mod release;
mod secrets;
mod state_faults;
mod swarm;
