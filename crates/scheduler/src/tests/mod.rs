//! Scenario and property tests over the in-memory state in [`crate::testing`].

mod deployment_tests;
mod feasible_tests;
mod prop_tests;
mod rank_tests;
mod reconcile_tests;
mod reschedule_tests;
mod rollout_cases;
mod volume_tests;
