//! Header rules: framing checks (request smuggling), hop-by-hop removal,
//! `X-Forwarded-*` and the request id.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request};

use crate::error::ProxyError;
use crate::guard::HeadFlags;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Hop-by-hop headers (RFC 9110 7.6.1 and the usual legacy ones): they
/// describe one connection and are never forwarded.
fn hop_by_hop() -> [&'static HeaderName; 9] {
    [
        &header::CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::TE,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
        &header::PROXY_AUTHENTICATE,
        &header::PROXY_AUTHORIZATION,
    ]
}

/// Refuses what could be read two ways by two HTTP/1 parsers. `flags` are
/// what the connection guard saw in the raw head (HTTP/1 only); hyper
/// itself refuses conflicting lengths, a non-chunked final transfer
/// coding, folded lines and malformed heads before the proxy sees them.
pub fn check_framing<B>(req: &Request<B>, flags: Option<HeadFlags>) -> Result<(), ProxyError> {
    if let Some(f) = flags {
        if f.transfer_encoding && f.content_lengths > 0 {
            return Err(ProxyError::BadRequest(
                "both Content-Length and Transfer-Encoding",
            ));
        }
        if f.content_lengths > 1 {
            return Err(ProxyError::BadRequest("more than one Content-Length"));
        }
        if f.obs_fold {
            return Err(ProxyError::BadRequest("obsolete line folding in a header"));
        }
    }
    let mut te = req.headers().get_all(header::TRANSFER_ENCODING).iter();
    if let Some(v) = te.next()
        && (te.next().is_some() || !v.as_bytes().eq_ignore_ascii_case(b"chunked"))
    {
        return Err(ProxyError::BadRequest(
            "Transfer-Encoding other than chunked",
        ));
    }
    if req.headers().get_all(header::HOST).iter().nth(1).is_some() {
        // RFC 9112 3.2: which one routes and which one the endpoint reads
        // could differ.
        return Err(ProxyError::BadRequest("more than one Host header"));
    }
    if req.method() == Method::CONNECT {
        return Err(ProxyError::Connect);
    }
    Ok(())
}

/// The path with its percent-encoded unreserved characters decoded (RFC
/// 3986 6.2.2.2: `/%61pi` is `/api`), so an encoding cannot dodge a
/// route; `None` when there is nothing to decode.
pub fn normalize_path(path: &str) -> Option<String> {
    let b = path.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out: Option<Vec<u8>> = None;
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            )
        {
            let c = h * 16 + l;
            if c.is_ascii_alphanumeric() || b"-._~".contains(&c) {
                out.get_or_insert_with(|| b[..i].to_vec()).push(c);
                i += 3;
                continue;
            }
        }
        if let Some(o) = out.as_mut() {
            o.push(b[i]);
        }
        i += 1;
    }
    out.map(|o| String::from_utf8_lossy(&o).into_owned())
}

/// Request line and headers, counted as on the wire.
pub fn head_size<B>(req: &Request<B>) -> usize {
    let line = req.method().as_str().len() + req.uri().to_string().len() + 12;
    req.headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + line
}

/// The request asks to switch protocols (WebSocket and others; never h2c,
/// which hyper does not offer as an upgrade).
pub fn upgrade_of(headers: &HeaderMap) -> Option<HeaderValue> {
    let up = headers.get(header::UPGRADE)?;
    let wants = headers
        .get_all(header::CONNECTION)
        .iter()
        .any(|v| tokens(v).any(|t| t.eq_ignore_ascii_case("upgrade")));
    (wants && !up.as_bytes().eq_ignore_ascii_case(b"h2c")).then(|| up.clone())
}

fn tokens(v: &HeaderValue) -> impl Iterator<Item = &str> {
    v.to_str()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Removes hop-by-hop headers, those the `Connection` header names
/// included; `upgrade` puts back the two an upgrade needs.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: Option<HeaderValue>) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(tokens)
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for n in named {
            headers.remove(n);
        }
    }
    for n in hop_by_hop() {
        headers.remove(n);
    }
    if let Some(up) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, up);
    }
}

/// `X-Forwarded-For` (the client's address appended to any the client
/// sent), `-Proto` and `-Host` (replaced).
pub fn set_forwarded(headers: &mut HeaderMap, client: IpAddr, host: &str) {
    let ip = client.to_canonical().to_string();
    let xff = match headers.get_all(&X_FORWARDED_FOR).iter().next() {
        None => HeaderValue::from_str(&ip).ok(),
        Some(_) => {
            let mut all: Vec<&str> = headers
                .get_all(&X_FORWARDED_FOR)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            all.push(&ip);
            HeaderValue::from_str(&all.join(", ")).ok()
        }
    };
    if let Some(v) = xff {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
    match HeaderValue::from_str(host) {
        Ok(v) => {
            headers.insert(X_FORWARDED_HOST.clone(), v);
        }
        Err(_) => {
            headers.remove(&X_FORWARDED_HOST);
        }
    }
}

/// Request ids: the client's when it looks like one, else this router's
/// random prefix and a counter (unique without a random draw per request).
#[derive(Debug)]
pub struct RequestIds {
    prefix: u64,
    next: AtomicU64,
}

impl RequestIds {
    pub fn new() -> Self {
        RequestIds {
            prefix: fastrand::u64(..),
            next: AtomicU64::new(1),
        }
    }

    /// The id to use for a request with these headers.
    pub fn for_request(&self, headers: &HeaderMap) -> HeaderValue {
        if let Some(v) = headers.get(&X_REQUEST_ID)
            && is_sane(v)
        {
            return v.clone();
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        HeaderValue::from_str(&format!("{:016x}{:08x}", self.prefix, n))
            .unwrap_or_else(|_| HeaderValue::from_static("0"))
    }
}

impl Default for RequestIds {
    fn default() -> Self {
        RequestIds::new()
    }
}

/// 1 to 128 characters that cannot break a log line or a header.
fn is_sane(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    (1..=128).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.:@/+=".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go_including_named_ones() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, None);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-keep"));
    }

    #[test]
    fn upgrades_keep_their_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        let up = upgrade_of(&h);
        assert_eq!(up.as_ref().map(|v| v.as_bytes()), Some(&b"websocket"[..]));
        strip_hop_by_hop(&mut h, up);
        assert_eq!(h[header::CONNECTION], "upgrade");
        assert_eq!(h[header::UPGRADE], "websocket");
        h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        assert!(upgrade_of(&h).is_none());
    }

    #[test]
    fn forwarded_for_is_appended() {
        let mut h = HeaderMap::new();
        h.insert(&X_FORWARDED_FOR, HeaderValue::from_static("1.2.3.4"));
        set_forwarded(&mut h, "10.0.0.9".parse().expect("ip"), "web.localhost");
        assert_eq!(h[&X_FORWARDED_FOR], "1.2.3.4, 10.0.0.9");
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
        assert_eq!(h[&X_FORWARDED_HOST], "web.localhost");
    }

    #[test]
    fn request_ids_are_kept_when_sane() {
        let ids = RequestIds::new();
        let mut h = HeaderMap::new();
        let a = ids.for_request(&h);
        let b = ids.for_request(&h);
        assert_ne!(a, b);
        h.insert(&X_REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(ids.for_request(&h), "abc-123");
        h.insert(&X_REQUEST_ID, HeaderValue::from_static("a b"));
        assert_ne!(ids.for_request(&h), "a b");
    }
}
