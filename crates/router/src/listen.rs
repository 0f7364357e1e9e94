//! Client connections: accept, serve HTTP/1.1 (keep-alive) and h2c with
//! hyper's automatic builder, enforce the header-read and idle timeouts,
//! and drain on shutdown (hyper's graceful shutdown: an idle connection
//! closes, a busy one finishes its response first; HTTP/2 gets GOAWAY).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Limits;
use crate::guard::{ConnState, Guard, Phase};
use crate::metrics::ConnectionGauge;
use crate::proxy::Proxy;
use crate::state::Shared;

pub fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    // hyper's buffer is twice the proxy's header limit, so a head between
    // the two gets the proxy's 431 that says what happened.
    let buf = (limits.max_header_bytes * 2).max(16 * 1024);
    b.http1()
        .timer(TokioTimer::new())
        // The guard's phases time heads and idleness (hyper's one timer
        // would cut idle keep-alive connections at the header deadline).
        .header_read_timeout(None)
        .keep_alive(true)
        // hyper's default header count (100) parses on the stack; more
        // (256 before) made every request allocate two 8 KiB arrays that
        // idle keep-alive connections then held (scripts/bench router:
        // 284 -> 199 MiB at 10,000 connections). More headers than that
        // get hyper's own 431.
        .max_buf_size(buf);
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(buf).unwrap_or(u32::MAX));
    b
}

/// Accepts until `shutdown`, serving each connection in `conns`: on this
/// runtime, or handed to the worker threads in turn.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    conns: TaskTracker,
    shutdown: CancellationToken,
    workers: Vec<Worker>,
) {
    let here = Serving::new(&shared, shared.client.clone(), &conns, &shutdown);
    let mut next = 0usize;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                if workers.is_empty() {
                    here.spawn(stream, peer);
                    continue;
                }
                // Off this runtime's reactor, onto the worker's.
                let Ok(stream) = stream.into_std() else {
                    continue;
                };
                let w = &workers[next % workers.len()];
                next = next.wrapping_add(1);
                let _ = w.tx.send((stream, peer));
            }
            Err(e) => {
                // Out of file descriptors, most likely: wait, do not spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// What serving a connection on one runtime takes: the connection task
/// is spawned there, tracked for the drain.
struct Serving {
    shared: Arc<Shared>,
    client: crate::state::UpstreamClient,
    builder: Arc<auto::Builder<TokioExecutor>>,
    conns: TaskTracker,
    shutdown: CancellationToken,
}

impl Serving {
    fn new(
        shared: &Arc<Shared>,
        client: crate::state::UpstreamClient,
        conns: &TaskTracker,
        shutdown: &CancellationToken,
    ) -> Serving {
        Serving {
            builder: Arc::new(builder(&shared.config.limits)),
            shared: shared.clone(),
            client,
            conns: conns.clone(),
            shutdown: shutdown.clone(),
        }
    }

    fn spawn(&self, stream: TcpStream, peer: SocketAddr) {
        self.conns.spawn(connection(
            stream,
            peer,
            self.shared.clone(),
            self.client.clone(),
            self.builder.clone(),
            self.shutdown.clone(),
        ));
    }
}

/// A thread serving the connections it is handed on its own
/// single-threaded runtime, with its own upstream pool: a request, its
/// upstream connection and their wake-ups stay on one thread (tokio's
/// work-stealing runtime moved them between threads on every request).
pub struct Worker {
    tx: tokio::sync::mpsc::UnboundedSender<(std::net::TcpStream, SocketAddr)>,
    /// Not joined: a worker ends by itself once drained.
    _thread: std::thread::JoinHandle<()>,
}

impl Worker {
    /// Starts `n` workers. They end once the accept loop has ended (their
    /// channel closes) and every connection and tunnel is done.
    pub fn start(
        n: usize,
        shared: &Arc<Shared>,
        conns: &TaskTracker,
        shutdown: &CancellationToken,
    ) -> std::io::Result<Vec<Worker>> {
        (0..n)
            .map(|i| {
                let (tx, mut rx) =
                    tokio::sync::mpsc::unbounded_channel::<(std::net::TcpStream, SocketAddr)>();
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                let (shared, conns, shutdown) = (shared.clone(), conns.clone(), shutdown.clone());
                let thread = std::thread::Builder::new()
                    .name(format!("router-{i}"))
                    .spawn(move || {
                        rt.block_on(async move {
                            let client = crate::state::upstream_client(&shared.config);
                            let serving = Serving::new(&shared, client, &conns, &shutdown);
                            while let Some((stream, peer)) = rx.recv().await {
                                let Ok(stream) = TcpStream::from_std(stream) else {
                                    continue;
                                };
                                serving.spawn(stream, peer);
                            }
                            // Closed by the drain once the accept loop ended.
                            conns.wait().await;
                            shared.tunnels.wait().await;
                        });
                    })?;
                Ok(Worker {
                    tx,
                    _thread: thread,
                })
            })
            .collect()
    }
}

/// What a connection's timer found.
enum Check {
    /// A request head is late: close now.
    Close,
    /// Idle too long: close once nothing is in flight (gracefully).
    Idle,
    /// Look again at this `Clock::now_ms`.
    At(u64),
}

fn check(state: &ConnState, limits: &Limits) -> Check {
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let now = state.clock.now_ms();
    let (phase, since) = state.phase();
    match phase {
        Phase::InHead => {
            let due = since.saturating_add(ms(limits.header_read));
            if now >= due {
                Check::Close
            } else {
                Check::At(due)
            }
        }
        Phase::WaitHead | Phase::Passthrough if state.in_flight() == 0 => {
            let due = since
                .max(state.idle_since())
                .saturating_add(ms(limits.idle));
            if now >= due {
                Check::Idle
            } else {
                Check::At(due)
            }
        }
        _ => Check::At(now.saturating_add(ms(limits.idle))),
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    client: crate::state::UpstreamClient,
    builder: Arc<auto::Builder<TokioExecutor>>,
    shutdown: CancellationToken,
) {
    let _open = ConnectionGauge::open(&shared.metrics.connections("http"));
    let _ = stream.set_nodelay(true);
    let state = Arc::new(ConnState::new(shared.clock));
    let io = TokioIo::new(Guard::new(stream, state.clone()));
    let svc = Proxy {
        shared: shared.clone(),
        client,
        peer,
        conn: state.clone(),
    };
    let conn = builder.serve_connection_with_upgrades(io, svc);
    tokio::pin!(conn);
    let limits = &shared.config.limits;
    let mut draining = false;
    loop {
        let wait = match check(&state, limits) {
            Check::Close => {
                tracing::debug!(%peer, "request head not received in time; closing");
                return;
            }
            Check::Idle => {
                if !draining {
                    draining = true;
                    conn.as_mut().graceful_shutdown();
                }
                limits.idle
            }
            Check::At(t) => Duration::from_millis(t.saturating_sub(state.clock.now_ms()).max(1)),
        };
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = shutdown.cancelled(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = shared.force.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
