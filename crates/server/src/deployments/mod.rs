//! Deployments after the scheduler created them: the watcher that moves
//! them along (health counts, progress deadline, auto-promote, success,
//! failure and automatic revert), and the user's actions on them.

pub mod ops;
mod watch;
pub mod watcher;

pub use watch::{Verdict, judge};

#[cfg(test)]
mod prop_tests;
#[cfg(test)]
mod tests;
