//! TCP routes: a `type: tcp` service is proxied on the router port its
//! route names. Listeners open and close as such services come and go in
//! the catalog; each connection goes to a healthy endpoint picked like an
//! HTTP request's (a refused or timed-out connect ejects the endpoint and
//! is tried once on another), then bytes are copied both ways.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::balance;
use crate::metrics::ConnectionGauge;
use crate::state::Shared;
use crate::table::Table;

pub struct TcpRoutes {
    ip: IpAddr,
    shared: Arc<Shared>,
    conns: TaskTracker,
    open: HashMap<u16, CancellationToken>,
}

impl TcpRoutes {
    /// Listeners on `ip`; connections are tracked in `conns`.
    pub fn new(ip: IpAddr, shared: Arc<Shared>, conns: TaskTracker) -> Self {
        TcpRoutes {
            ip,
            shared,
            conns,
            open: HashMap::new(),
        }
    }

    /// Opens a listener for each TCP service in `table` that has none and
    /// closes those of services gone (their open connections go on). A
    /// port that cannot be bound is logged and tried again at the next
    /// catalog change.
    pub async fn sync(&mut self, table: &Table) {
        let want: HashSet<u16> = table.tcp_ports().collect();
        self.open.retain(|port, stop| {
            let keep = want.contains(port);
            if !keep {
                tracing::info!(port, "TCP route closed");
                stop.cancel();
            }
            keep
        });
        for port in want {
            if self.open.contains_key(&port) {
                continue;
            }
            let addr = SocketAddr::new(self.ip, port);
            match TcpListener::bind(addr).await {
                Ok(l) => {
                    tracing::info!(%addr, "TCP route listening");
                    let stop = CancellationToken::new();
                    self.open.insert(port, stop.clone());
                    let (shared, conns) = (self.shared.clone(), self.conns.clone());
                    tokio::spawn(accept(l, port, shared, conns, stop));
                }
                Err(e) => {
                    tracing::warn!(%addr, error = %e, "cannot listen for a TCP route; trying again at the next catalog change");
                }
            }
        }
    }

    /// Stops every listener (at shutdown).
    pub fn close(&mut self) {
        for (_, stop) in self.open.drain() {
            stop.cancel();
        }
    }
}

async fn accept(
    listener: TcpListener,
    port: u16,
    shared: Arc<Shared>,
    conns: TaskTracker,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, _)) => {
                conns.spawn(proxy(stream, port, shared.clone()));
            }
            Err(e) => {
                tracing::warn!(port, error = %e, "TCP route: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn proxy(mut client: TcpStream, port: u16, shared: Arc<Shared>) {
    let _open = ConnectionGauge::open(&shared.metrics.connections("tcp"));
    let table = shared.table.load_full();
    let Some(svc) = table.tcp(port) else {
        return;
    };
    let pick = |exclude: Option<&Arc<crate::health::EndpointState>>| {
        balance::pick(
            shared.config.balance,
            &svc.endpoints,
            &svc.next,
            exclude,
            shared.clock.now_ms(),
        )
    };
    let Some(mut ep) = pick(None) else {
        tracing::debug!(service = %svc.name, "TCP route: no healthy endpoint");
        return;
    };
    let limits = &shared.config.limits;
    for attempt in 0..2 {
        let _in_flight = ep.start_request();
        let connected =
            tokio::time::timeout(limits.connect, TcpStream::connect(ep.name.as_str())).await;
        match connected {
            Ok(Ok(mut up)) => {
                let _ = up.set_nodelay(true);
                let _ = client.set_nodelay(true);
                tokio::select! {
                    r = tokio::io::copy_bidirectional(&mut client, &mut up) => {
                        if let Err(e) = r {
                            tracing::debug!(service = %svc.name, error = %e, "TCP connection ended");
                        }
                    }
                    _ = shared.force.cancelled() => {}
                }
                return;
            }
            Ok(Err(e)) => {
                svc.metrics.upstream_error("connect");
                tracing::debug!(service = %svc.name, endpoint = %ep.name, error = %e, "TCP route: connect failed");
            }
            Err(_) => svc.metrics.upstream_error("connect_timeout"),
        }
        if ep.eject(shared.clock.now_ms(), limits.eject_cooldown) {
            svc.metrics.ejections.inc();
            tracing::warn!(service = %svc.name, endpoint = %ep.name, "endpoint ejected: TCP connect failed");
        }
        match pick(Some(&ep)) {
            Some(next) if attempt == 0 => {
                svc.metrics.retries.inc();
                ep = next;
            }
            _ => return,
        }
    }
}
