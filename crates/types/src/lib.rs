//! corral's domain model and job spec. No IO and no async here: every other
//! crate depends on this one, and it must stay cheap to test.
//!
//! - [`spec`]: what users write (seed and full form), parsing and validation.
//! - [`model`]: what the control plane stores (jobs, allocations, nodes,
//!   evaluations, plans), with desired and observed state kept apart.
//! - [`api`]: the HTTP API's request and response shapes.
//! - [`catalog`]: the service catalog routers and node DNS follow.
//! - [`units`]: durations, sizes and cpu quantities as written in specs.
//! - [`civil`]: calendar dates from and to days since the Unix epoch.

pub mod api;
pub mod catalog;
pub mod civil;
pub mod model;
pub mod spec;
pub mod units;

pub use model::*;
pub use spec::{
    BackupKeep, BackupPolicy, CheckKind, CheckRestart, CheckSpec, Constraint, ConstraintOp,
    DelayFunction, DriverKind, GroupSpec, HealthCheckMode, JobSpec, LogPolicy, NetworkMode,
    OnNodeLoss, PullPolicy, ReschedulePolicy, Resources, RestartMode, RestartPolicy, RouteSpec,
    SecuritySpec, ServiceKind, ServiceSpec, SnapshotHooks, SnapshotPolicy, Spread, TaskSpec,
    UpdatePolicy, VolumeSpec,
};
