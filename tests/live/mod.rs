//! The live-stack suite: the engine tests that deploy a whole stack and then
//! break it — a failing patch, a health gate that fails, kill -9, SIGTERM and
//! Ctrl-C in each step, a full disk, two deploys at once — or switch it under
//! a probe counting failed requests. Each brings up and replaces several
//! stacks of eight containers, so together they take about five minutes on
//! two cores: they are `ignored` in `cargo test` (the set-up command, which
//! runs the demo's whole job on the engine instead) and run apart:
//! `cargo test --test integration -- --ignored live::` (`.ci/run` does, and
//! under `CI` they fail, never skip). A file elsewhere keeps its live tests
//! in a `live` module, so the same filter finds them.

mod deploy;
mod interrupt;
mod switch;
