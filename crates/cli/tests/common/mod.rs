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
