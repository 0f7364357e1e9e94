//! What the services tests run behind the router: busybox images (httpd
//! serving files and CGI scripts, a WebSocket-style upgrade echo, a TCP
//! echo) pushed to a local registry, and a raw HTTP/1.1 client that sends
//! exactly the bytes a test writes.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use corral_agent::image::{BUSYBOX, ImageFile, ImageSpec};
use corral_testkit::containers::busybox_image;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The web image of version `v`: httpd on 8080 serving
/// - `/` → `<alloc name> v<v>`; `/users` → `users <alloc name>`;
///   `/api/users` → `api-users <alloc name>`;
/// - `/healthz` → `ok` until `/cgi-bin/sicken` is requested (then 404);
/// - `/cgi-bin/slow` → answers after 3 seconds: longer than the test
///   job's `kill_timeout` (httpd as PID 1 ignores SIGTERM and is killed
///   1s later), so a replica stopped at once cuts it.
pub fn web_image(v: u32) -> ImageSpec {
    web_image_slow(v, 3)
}

/// [`web_image`] whose `/cgi-bin/slow` takes `secs` seconds.
pub fn web_image_slow(v: u32, secs: u32) -> ImageSpec {
    let script = format!(
        r#"mkdir -p /www/api /www/cgi-bin
echo "$CORRAL_ALLOC_NAME v{v}" > /www/index.html
echo "users $CORRAL_ALLOC_NAME" > /www/users
echo "api-users $CORRAL_ALLOC_NAME" > /www/api/users
echo ok > /www/healthz
cp /cgi/* /www/cgi-bin/
exec httpd -f -p 8080 -h /www"#
    );
    let mut spec = busybox_image(&format!("corral/web:{v}"), &["/bin/sh", "-c", &script]);
    let cgi = |name: &str, body: &str| {
        ImageFile::bytes(
            &format!("cgi/{name}"),
            format!("#!/bin/sh\n{body}").into_bytes(),
            0o755,
        )
    };
    spec.files.push(ImageFile::dir("cgi"));
    spec.files.push(cgi(
        "sicken",
        "rm -f /www/healthz\nprintf 'Content-Type: text/plain\\r\\n\\r\\nsick %s\\n' \"$CORRAL_ALLOC_NAME\"\n",
    ));
    spec.files.push(cgi(
        "slow",
        &format!(
            "sleep {secs}\nprintf 'Content-Type: text/plain\\r\\n\\r\\nslow %s v{v}\\n' \"$CORRAL_ALLOC_NAME\"\n"
        ),
    ));
    spec
}

/// An upgrade echo on 9000: answers any request with `101 Switching
/// Protocols` (`Upgrade: websocket`), then echoes every byte.
pub fn upgrade_echo_image() -> ImageSpec {
    let mut spec = busybox_image(
        "corral/upgrade-echo:1",
        &[
            "/bin/sh",
            "-c",
            "while true; do nc -l -p 9000 -e /bin/upgrade; done",
        ],
    );
    spec.files.push(ImageFile::bytes(
        "bin/upgrade",
        b"#!/bin/sh\nwhile read -r line; do\n  line=$(printf '%s' \"$line\" | tr -d '\\r')\n  [ -z \"$line\" ] && break\ndone\nprintf 'HTTP/1.1 101 Switching Protocols\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\n\\r\\n'\nexec cat\n"
            .to_vec(),
        0o755,
    ));
    spec
}

/// A TCP echo on 7000 (several connections at once).
pub fn tcp_echo_image() -> ImageSpec {
    busybox_image(
        "corral/tcp-echo:1",
        &[
            "/bin/sh",
            "-c",
            "while true; do nc -l -p 7000 -e /bin/cat & wait; done",
        ],
    )
}

/// Accepts on 8080 and never answers (an upstream that times out).
pub fn silent_image() -> ImageSpec {
    busybox_image(
        "corral/silent:1",
        &[
            "/bin/sh",
            "-c",
            "while true; do nc -l -p 8080 -e /bin/sleep 3600; done",
        ],
    )
}

pub fn busybox_path() -> &'static Path {
    Path::new(BUSYBOX)
}

/// An HTTP answer as read off the wire.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub head: String,
    pub body: String,
}

/// Sends `raw` to `addr` on a new connection and reads the answer until
/// the server closes (send `Connection: close`) or `deadline` passes.
pub async fn raw(addr: SocketAddr, raw: &[u8], deadline: Duration) -> Result<Answer, String> {
    let run = async {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        s.write_all(raw).await.map_err(|e| format!("write: {e}"))?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf)
            .await
            .map_err(|e| format!("read: {e}"))?;
        parse(&buf)
    };
    tokio::time::timeout(deadline, run)
        .await
        .map_err(|_| format!("no answer from {addr} in {deadline:?}"))?
}

/// `GET path` with `Host: host` and `Connection: close`.
pub async fn get(addr: SocketAddr, host: &str, path: &str) -> Result<Answer, String> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    raw(addr, req.as_bytes(), Duration::from_secs(20)).await
}

pub fn parse(buf: &[u8]) -> Result<Answer, String> {
    let text = String::from_utf8_lossy(buf).to_string();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no complete head in {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status in {head:?}"))?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok(Answer {
        status,
        head: head.to_owned(),
        body,
    })
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}
