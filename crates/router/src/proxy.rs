//! One request: check it, route it, pick an endpoint, forward it with its
//! body streaming, and stream the answer back (or tunnel an upgrade).
//!
//! Retry rule (docs/ROUTER.md): a request is retried once, on another
//! endpoint, only when the first endpoint could not be connected to
//! (refused, unreachable, connect timeout). Nothing was sent then, so the
//! retry is safe for every method; it needs the body unread, which it
//! always is before a connection exists (a bodyless request needs
//! nothing). A failure after the connection was made (reset, timeout
//! waiting for the response) is never retried: the endpoint may have
//! acted on the request.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::uri::{PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::balance;
use crate::body::{RequestBody, ResponseBody};
use crate::error::ProxyError;
use crate::guard::{ConnRequest, ConnState, HeadFlags};
use crate::headers::{self, X_REQUEST_ID};
use crate::health::{EndpointState, InFlight};
use crate::state::Shared;
use crate::table::{Rule, Table};

/// The hyper service of one client connection.
#[derive(Clone)]
pub struct Proxy {
    pub shared: Arc<Shared>,
    /// The upstream client of the thread serving this connection.
    pub client: crate::state::UpstreamClient,
    pub peer: SocketAddr,
    pub conn: Arc<ConnState>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl hyper::service::Service<Request<Incoming>> for Proxy {
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let p = self.clone();
        Box::pin(async move { Ok(p.handle(req).await) })
    }
}

/// What is known about a request once it is routed.
struct Routed<'t> {
    rule: &'t Rule,
    host: String,
    /// The path as routed, when it differs from the request's (decoded
    /// unreserved characters): sent upstream so the endpoint sees what
    /// was routed.
    path: Option<String>,
}

impl Proxy {
    async fn handle(self, req: Request<Incoming>) -> Response<ResponseBody> {
        let started = Instant::now();
        let conn = self.conn.start_request();
        let h1 = req.version() <= Version::HTTP_11;
        let flags = if h1 { self.conn.take_head() } else { None };
        let id = self.shared.ids.for_request(req.headers());
        // After a chunked body or an upgrade the guard stops looking, so
        // the connection must not carry another request.
        let close = h1 && flags.is_none_or(|f| f.transfer_encoding || f.upgrade);
        let table = self.shared.table.load_full();
        let (mut resp, metrics) = match route(
            &table,
            &req,
            flags,
            self.shared.config.limits.max_header_bytes,
        ) {
            Err(e) => {
                tracing::debug!(error = %e, peer = %self.peer, "refused");
                (error_response(&e, &id, conn), &self.shared.unrouted)
            }
            Ok(r) => {
                let rule = r.rule;
                (self.forward(r, req, &id, conn).await, &rule.metrics)
            }
        };
        metrics.observe(resp.status().as_u16(), started.elapsed().as_secs_f64());
        if close && resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }

    async fn forward(
        &self,
        routed: Routed<'_>,
        mut req: Request<Incoming>,
        id: &HeaderValue,
        conn: ConnRequest,
    ) -> Response<ResponseBody> {
        let shared = &self.shared;
        let limits = &shared.config.limits;
        let rule = routed.rule;
        let svc = &rule.service;
        let Some(mut ep) = balance::pick(
            shared.config.balance,
            &svc.endpoints,
            &svc.next,
            None,
            shared.clock.now_ms(),
        ) else {
            let e = ProxyError::NoEndpoint {
                service: svc.name.clone(),
            };
            return error_response(&e, id, conn);
        };
        let upgrade = (req.version() == Version::HTTP_11)
            .then(|| headers::upgrade_of(req.headers()))
            .flatten();
        let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        let pq = upstream_path(rule, &parts.uri, routed.path.as_deref());
        headers::strip_hop_by_hop(&mut parts.headers, upgrade);
        headers::set_forwarded(&mut parts.headers, self.peer.ip(), &routed.host);
        parts.headers.insert(X_REQUEST_ID.clone(), id.clone());
        if let Ok(h) = HeaderValue::from_str(&routed.host) {
            parts.headers.insert(header::HOST, h);
        }
        let may_retry = svc.endpoints.len() > 1;
        let empty = body.is_end_stream();
        let give_back = (may_retry && !empty).then(|| Arc::new(Mutex::new(None)));
        let mut body = if empty {
            RequestBody::new(None, None)
        } else {
            RequestBody::new(Some(body), give_back.clone())
        };
        let mut retry_headers = may_retry.then(|| parts.headers.clone());
        let mut headers = parts.headers;
        let mut retried = false;
        loop {
            let mut up = Request::new(body);
            *up.method_mut() = parts.method.clone();
            *up.uri_mut() = upstream_uri(&ep, &pq);
            *up.headers_mut() = headers;
            let in_flight = ep.start_request();
            let sent =
                tokio::time::timeout(limits.upstream_response, self.client.request(up)).await;
            let err = match sent {
                Ok(Ok(resp)) => {
                    return self.respond(
                        resp,
                        in_flight,
                        client_upgrade,
                        (&svc.name, &ep.name),
                        id,
                        conn,
                    );
                }
                Ok(Err(e)) if e.is_connect() => {
                    let timed_out = is_timeout(&e);
                    self.eject(
                        svc,
                        &ep,
                        if timed_out {
                            "connect timeout"
                        } else {
                            "connection refused"
                        },
                    );
                    if timed_out {
                        ProxyError::UpstreamConnectTimeout {
                            service: svc.name.clone(),
                            endpoint: ep.name.clone(),
                            secs: limits.connect.as_secs_f64(),
                        }
                    } else {
                        ProxyError::UpstreamConnect {
                            service: svc.name.clone(),
                            endpoint: ep.name.clone(),
                            reason: error_chain(&e),
                        }
                    }
                }
                Ok(Err(e)) => ProxyError::Upstream {
                    service: svc.name.clone(),
                    endpoint: ep.name.clone(),
                    reason: error_chain(&e),
                },
                Err(_) => {
                    self.eject(svc, &ep, "response timeout");
                    ProxyError::UpstreamTimeout {
                        service: svc.name.clone(),
                        endpoint: ep.name.clone(),
                        secs: limits.upstream_response.as_secs_f64(),
                    }
                }
            };
            drop(in_flight);
            if let Some(kind) = err.upstream_kind() {
                svc.metrics.upstream_error(kind);
            }
            let connect_failed = matches!(
                err,
                ProxyError::UpstreamConnect { .. } | ProxyError::UpstreamConnectTimeout { .. }
            );
            if connect_failed && !retried {
                let again = if empty {
                    Some(RequestBody::new(None, None))
                } else {
                    give_back
                        .as_ref()
                        .and_then(|slot| slot.lock().unwrap_or_else(|e| e.into_inner()).take())
                        .map(|b| RequestBody::new(Some(b), None))
                };
                let next = balance::pick(
                    shared.config.balance,
                    &svc.endpoints,
                    &svc.next,
                    Some(&ep),
                    shared.clock.now_ms(),
                );
                if let (Some(b), Some(h), Some(next)) = (again, retry_headers.take(), next) {
                    tracing::debug!(service = %svc.name, failed = %ep.name, to = %next.name, "retrying on another endpoint");
                    svc.metrics.retries.inc();
                    body = b;
                    headers = h;
                    ep = next;
                    retried = true;
                    continue;
                }
            }
            tracing::debug!(error = %err, "upstream failed");
            return error_response(&err, id, conn);
        }
    }

    fn eject(&self, svc: &crate::table::Service, ep: &EndpointState, why: &str) {
        let cooldown = self.shared.config.limits.eject_cooldown;
        if ep.eject(self.shared.clock.now_ms(), cooldown) {
            svc.metrics.ejections.inc();
            tracing::warn!(service = %svc.name, endpoint = %ep.name, cooldown = ?cooldown, "endpoint ejected: {why}");
        }
    }

    fn respond(
        &self,
        mut resp: Response<Incoming>,
        in_flight: InFlight,
        client_upgrade: Option<OnUpgrade>,
        (service, endpoint): (&str, &str),
        id: &HeaderValue,
        conn: ConnRequest,
    ) -> Response<ResponseBody> {
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            let Some(client_upgrade) = client_upgrade else {
                let e = ProxyError::Upstream {
                    service: service.to_string(),
                    endpoint: endpoint.to_string(),
                    reason: "switched protocols without being asked".into(),
                };
                return error_response(&e, id, conn);
            };
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            let force = self.shared.force.clone();
            self.shared
                .tunnels
                .spawn(tunnel(client_upgrade, upstream_upgrade, force, in_flight));
            let (mut parts, _) = resp.into_parts();
            parts.version = Version::HTTP_11;
            parts.headers.insert(X_REQUEST_ID.clone(), id.clone());
            return Response::from_parts(parts, ResponseBody::full("", Some(conn)));
        }
        let (mut parts, body) = resp.into_parts();
        parts.version = Version::HTTP_11;
        headers::strip_hop_by_hop(&mut parts.headers, None);
        parts.headers.insert(X_REQUEST_ID.clone(), id.clone());
        Response::from_parts(
            parts,
            ResponseBody::upstream(body, Some(conn), Some(in_flight)),
        )
    }
}

/// Checks a request and finds its rule.
fn route<'t>(
    table: &'t Table,
    req: &Request<Incoming>,
    flags: Option<HeadFlags>,
    max_header_bytes: usize,
) -> Result<Routed<'t>, ProxyError> {
    headers::check_framing(req, flags)?;
    let size = headers::head_size(req);
    if size > max_header_bytes {
        return Err(ProxyError::HeadersTooLarge {
            size,
            limit: max_header_bytes,
        });
    }
    let host = match req.uri().authority() {
        Some(a) => a.as_str().to_string(),
        None => match req.headers().get(header::HOST).map(|h| h.to_str()) {
            Some(Ok(h)) if !h.is_empty() => h.to_string(),
            Some(_) => return Err(ProxyError::BadRequest("invalid Host header")),
            None => return Err(ProxyError::BadRequest("no Host header")),
        },
    };
    if !table.loaded {
        return Err(ProxyError::NotLoaded);
    }
    let normalized = headers::normalize_path(req.uri().path());
    let path = normalized.as_deref().unwrap_or(req.uri().path());
    match table.route(&host, path) {
        Some(rule) => Ok(Routed {
            rule,
            host,
            path: normalized,
        }),
        None => Err(ProxyError::NoRoute {
            host,
            path: path.to_string(),
        }),
    }
}

/// The path and query to send upstream; `routed`: the path as routed when
/// it differs from the request's.
fn upstream_path(rule: &Rule, uri: &Uri, routed: Option<&str>) -> PathAndQuery {
    let path = routed.unwrap_or(uri.path());
    let up = rule.upstream_path(path);
    if routed.is_none()
        && up.len() == path.len()
        && let Some(pq) = uri.path_and_query()
    {
        return pq.clone();
    }
    let s = match uri.query() {
        Some(q) => format!("{up}?{q}"),
        None => up.to_string(),
    };
    s.parse().unwrap_or_else(|_| PathAndQuery::from_static("/"))
}

fn upstream_uri(ep: &EndpointState, pq: &PathAndQuery) -> Uri {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(ep.authority.clone());
    parts.path_and_query = Some(pq.clone());
    Uri::from_parts(parts).unwrap_or_default()
}

fn is_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        cur = c.source();
    }
    false
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cur = c.source();
    }
    out
}

/// A short plain-text answer that says what happened.
pub fn error_response(
    e: &ProxyError,
    id: &HeaderValue,
    conn: ConnRequest,
) -> Response<ResponseBody> {
    let mut r = Response::new(ResponseBody::full(format!("{e}\n"), Some(conn)));
    *r.status_mut() = e.status();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(X_REQUEST_ID.clone(), id.clone());
    if e.closes_connection() {
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

/// Copies bytes both ways between an upgraded client and endpoint until
/// either side closes, or the drain deadline passes.
async fn tunnel(
    client: OnUpgrade,
    upstream: OnUpgrade,
    force: tokio_util::sync::CancellationToken,
    _in_flight: InFlight,
) {
    let (c, u) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade did not complete");
            return;
        }
    };
    let (mut c, mut u) = (TokioIo::new(c), TokioIo::new(u));
    tokio::select! {
        r = tokio::io::copy_bidirectional(&mut c, &mut u) => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "tunnel ended");
            }
        }
        _ = force.cancelled() => {}
    }
}
