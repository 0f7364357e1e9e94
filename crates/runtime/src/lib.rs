//! What runs tasks on a node, below the agent: the task drivers and what
//! they stand on. Nothing here knows the agent's runners, its records or
//! its HTTP endpoint; a driver learns about an allocation only from the
//! [`driver::AllocContext`] and [`driver::TaskContext`] it is given.
//!
//! - [`driver`]: the `Driver` trait, `exec` (a command in its own cgroup),
//!   `cri` (containerd through the CRI API) and a recording `fake`.
//! - [`cgroup`]: cgroup v1/v2 behind a trait, with a fake.
//! - [`containerd`]: a private containerd (config, process, image import).
//! - [`image`]: OCI archives built from busybox-static (pause, demo).
//! - [`logs`]: task log files in the CRI format, the same for both
//!   drivers: paths, format, rotation, the exec capture, reading.
//! - [`killpoint`]: named points where a test has the process killed.

pub mod cgroup;
pub mod containerd;
pub mod driver;
pub mod image;
pub mod killpoint;
pub mod logs;
