//! What the API does, as functions on the core: the HTTP handlers are
//! thin wrappers, and in-process callers (tests, the simulator) use the
//! same code paths.

pub mod claims;
pub mod jobs;
pub mod nodes;
pub mod plan;
pub mod scale;
pub mod volume_restore;
pub mod volumes;
#[cfg(test)]
mod volumes_tests;
