//! What the CLI's integration tests share: running the `corral` binary.

#![allow(dead_code)]

use std::process::{Command, Output};

/// The `corral` binary against the API at `addr`.
pub fn corral(addr: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_corral"))
        .args(args)
        .env("CORRAL_ADDR", addr)
        .output()
        .expect("corral runs")
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}
