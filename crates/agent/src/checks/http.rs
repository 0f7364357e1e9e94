//! `type: http` checks: one request, a fresh connection each time (no
//! keep-alive, no proxy, redirects not followed: a 3xx is a status like any
//! other), with the check's timeout over the whole exchange.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::tracker::Probe;

/// How much of the response body goes into the check's output.
const BODY_LIMIT: usize = 1024;

/// The client every http check of the agent shares.
pub fn client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(0)
        .user_agent(concat!("corral-health-check/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// What to request and what to accept.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub status: (u16, u16),
    pub headers: &'a BTreeMap<String, String>,
}

pub async fn probe(
    client: &reqwest::Client,
    addr: SocketAddr,
    req: Request<'_>,
    timeout: Duration,
) -> Probe {
    let url = format!("http://{addr}{}", req.path);
    let what = format!("{} {url}", req.method);
    let method = match reqwest::Method::from_bytes(req.method.as_bytes()) {
        Ok(m) => m,
        Err(_) => return Probe::Fail(format!("{what}: `{}` is not an HTTP method", req.method)),
    };
    let mut builder = client.request(method, &url).timeout(timeout);
    for (k, v) in req.headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    let exchange = async {
        let mut resp = builder.send().await?;
        let status = resp.status();
        let mut body = Vec::new();
        while body.len() < BODY_LIMIT {
            match resp.chunk().await? {
                Some(c) => body.extend_from_slice(&c),
                None => break,
            }
        }
        body.truncate(BODY_LIMIT);
        Ok::<_, reqwest::Error>((status, body))
    };
    // reqwest's timeout covers the body too; this one is a backstop.
    match tokio::time::timeout(timeout + Duration::from_millis(500), exchange).await {
        Ok(Ok((status, body))) => {
            let code = status.as_u16();
            let body = String::from_utf8_lossy(&body);
            let body = body.trim();
            let mut out = format!("{what}: HTTP {status}");
            if !body.is_empty() {
                out.push_str(": ");
                out.push_str(body);
            }
            if (req.status.0..=req.status.1).contains(&code) {
                Probe::Pass(out)
            } else {
                let want = if req.status.0 == req.status.1 {
                    req.status.0.to_string()
                } else {
                    format!("{}-{}", req.status.0, req.status.1)
                };
                Probe::Fail(format!("{out} (expected {want})"))
            }
        }
        Ok(Err(e)) if e.is_timeout() => Probe::Fail(format!(
            "{what}: no answer within {}",
            super::fmt_duration(timeout)
        )),
        Ok(Err(e)) => Probe::Fail(format!("{what}: {}", root_cause(&e))),
        Err(_) => Probe::Fail(format!(
            "{what}: no answer within {}",
            super::fmt_duration(timeout)
        )),
    }
}

/// The innermost reason of an error ("Connection refused (os error
/// 111)" rather than "error sending request").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
