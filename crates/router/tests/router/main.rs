//! The router against real hyper backends on loopback, fed a static
//! catalog through the same channel the follower fills.

mod harness;

mod answers;
mod balancing;
mod proxying;
mod routing;
mod shutdown;
mod smuggling;
mod tcp;
