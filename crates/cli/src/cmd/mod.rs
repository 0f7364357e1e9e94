pub mod agent;
pub mod alloc;
pub mod dev;
pub mod logs;
pub mod node;
pub mod run;
pub mod server;
pub mod status;
