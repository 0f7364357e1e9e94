//! `type: tcp` checks: a connection that opens within the timeout passes.

use std::net::SocketAddr;
use std::time::Duration;

use super::tracker::Probe;

pub async fn probe(addr: SocketAddr, timeout: Duration) -> Probe {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => Probe::Pass(format!("TCP connect {addr}: success")),
        Ok(Err(e)) => Probe::Fail(format!("TCP connect {addr}: {e}")),
        Err(_) => Probe::Fail(format!(
            "TCP connect {addr}: no answer within {}",
            super::fmt_duration(timeout)
        )),
    }
}
