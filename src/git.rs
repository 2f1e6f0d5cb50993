//! Placeholder replaced by the git2 implementation.
