//! Node DNS end to end (issue 15): a real server whose catalog the
//! agent's node DNS follows, a real container agent on a private
//! containerd with the node DNS on its pod bridge's gateway, and a
//! container that resolves `web.service.corral` (A and SRV) with busybox
//! `nslookup` through the resolv.conf the runtime wrote from the CRI DNS
//! config; an unrelated name resolves through forwarding when this machine
//! has a resolver that answers it (skipped with a message otherwise).
//!
//! Needs root, containerd, runc, ctr, the CNI plugins and busybox-static;
//! skipped with a message when missing, a failure with
//! `CORRAL_REQUIRE_ROOT_TESTS=1`.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use corral_agent::containerd::subnet_gateway;
use corral_agent::dns::DnsConfig;
use corral_agent::image::ImageFile;
use corral_client::Client;
use corral_testkit::containers::{ContainerNode, busybox_image, can_run};
use corral_testkit::jobs::{log_containing, stop_and_wait, wait_running};
use corral_testkit::{TestCluster, eventually};

const D: Duration = Duration::from_secs(60);

/// Names this machine's own resolver may answer (no internet here: a
/// package mirror often resolves when nothing else does).
const OUTSIDE_NAMES: &[&str] = &["deb.debian.org", "crates.io", "example.com"];

/// The first of [`OUTSIDE_NAMES`] the node itself resolves to an IPv4
/// address.
async fn outside_name() -> Option<String> {
    for n in OUTSIDE_NAMES {
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::lookup_host(format!("{n}:80")),
        )
        .await;
        if let Ok(Ok(mut addrs)) = r
            && addrs.any(|a: SocketAddr| a.is_ipv4())
        {
            return Some(n.to_string());
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_resolves_services_through_the_node_dns() {
    let test = "node-dns";
    if !can_run(test) {
        return;
    }
    let node = ContainerNode::start(test).await;
    let gateway = subnet_gateway(node.subnet()).unwrap();
    let mut cluster = TestCluster::start().await;
    let socket = node.socket().to_path_buf();
    let dns_addr = SocketAddr::new(gateway, 53);
    cluster
        .add_agent_with("node-0", move |c| {
            c.drivers = vec!["exec".into(), "container".into()];
            c.cri_socket = socket;
            c.dns = Some(DnsConfig {
                addr: dns_addr,
                resolv_conf: PathBuf::from("/etc/resolv.conf"),
                optional: false,
            });
        })
        .await;
    let c = cluster.client.clone();

    let mut image = busybox_image("corral.local/dnsprobe:1", &[]);
    image
        .files
        .push(ImageFile::symlink("bin/nslookup", "busybox"));
    image.files.push(ImageFile::symlink("bin/wget", "busybox"));
    let image = node.import(&image).await;

    // Two replicas of `web` (no check: healthy once running).
    c.submit(
        &format!(
            "name: shop
groups:
  - name: web
    count: 2
    service: {{name: web, port: http}}
    tasks:
      - name: httpd
        image: {image}
        command: [/bin/httpd, -f, -p, '8080']
        ports: {{http: 8080}}
        kill_timeout: 1s
"
        ),
        "shop.yaml",
    )
    .await
    .unwrap();
    wait_running(&c, "shop", 2, D).await;
    let ports = healthy_ports(&c, "web", 2).await;
    // One host: the endpoints carry 127.0.0.1, which inside a pod is the
    // pod itself; the node DNS answers its own address for them (host
    // ports are mapped on every address of the node).
    let address = {
        let cat = c.service("web", None).await.unwrap();
        let a = cat.services[0].endpoints[0].address.clone();
        if a == "127.0.0.1" {
            gateway.to_string()
        } else {
            a
        }
    };

    // The probe: what the runtime wrote, then the questions.
    let outside = outside_name().await;
    let outside_q = outside
        .as_deref()
        .map(|n| format!("echo '== outside'; nslookup {n};"))
        .unwrap_or_default();
    let script = format!(
        "cat /etc/resolv.conf; \
         echo '== a'; nslookup web.service.corral; \
         echo '== srv'; nslookup -type=srv _web._tcp.service.corral; \
         echo '== short'; nslookup -type=a web; \
         echo '== nope'; nslookup nope.service.corral; \
         echo '== connect'; wget -S -O /dev/null http://web.service.corral:{port}/ 2>&1; \
         {outside_q} echo '== done'; exec sleep 3600",
        port = ports[0]
    );
    c.submit(
        &format!(
            "name: probe
image: {image}
command: [/bin/sh, -c, {script:?}]
kill_timeout: 1s
"
        ),
        "probe.yaml",
    )
    .await
    .unwrap();
    let j = wait_running(&c, "probe", 1, D).await;
    let alloc = j.allocations[0].id.clone();
    let out = log_containing(&c, &alloc, "stdout", "== done", D).await;
    eprintln!("[{test}] probe output:\n{out}");
    let section = |name: &str| -> String {
        let start = out
            .find(&format!("== {name}"))
            .unwrap_or_else(|| panic!("no section {name} in {out}"));
        let rest = &out[start + 3 + name.len()..];
        rest[..rest.find("== ").unwrap_or(rest.len())].to_string()
    };
    let head = &out[..out.find("== a").unwrap()];
    assert!(head.contains(&format!("nameserver {gateway}")), "{head}");
    assert!(head.contains("search service.corral"), "{head}");
    let a = section("a");
    assert!(a.contains(&format!("Address: {address}")), "{a}");
    let srv = section("srv");
    for p in &ports {
        assert!(srv.contains(&format!(" {p} ")), "port {p} in {srv}");
    }
    let short = section("short");
    assert!(
        short.contains(&format!("Address: {address}")),
        "`web` through the search list: {short}"
    );
    // The name and port lead to the service: httpd answers (a 404: it
    // serves an empty directory), not "connection refused".
    let connect = section("connect");
    assert!(connect.contains("HTTP/1."), "{connect}");
    let nope = section("nope");
    assert!(nope.contains("NXDOMAIN"), "{nope}");
    match outside {
        Some(n) => {
            let o = section("outside");
            let addrs = o.lines().filter(|l| l.starts_with("Address:")).count();
            // The first `Address:` line is the server's.
            assert!(
                addrs >= 2 && !o.contains("NXDOMAIN") && !o.contains("SERVFAIL"),
                "{n} forwarded to the node's resolver: {o}"
            );
        }
        None => eprintln!(
            "[{test}] SKIPPED the forwarding part: this machine's resolver answers none of {OUTSIDE_NAMES:?}"
        ),
    }

    // The table follows the catalog: with the service stopped, the name
    // is still known (its job is) but has no address left.
    // Both replicas are on this node: one address.
    assert_eq!(ask_a(dns_addr, "web.service.corral.").await, (0, 1));
    stop_and_wait(&c, "shop", D).await;
    eventually("web has no address once stopped", D, || async {
        match ask_a(dns_addr, "web.service.corral.").await {
            (rcode, 0) => Ok(rcode),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    stop_and_wait(&c, "probe", D).await;
    node.wait_clean(D).await;
    cluster.shutdown().await;
    node.finish().await;
}

/// (rcode, answer count) of an A question to the node DNS, from the host.
async fn ask_a(server: SocketAddr, name: &str) -> (u16, usize) {
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RecordType};
    let mut q = Message::query();
    q.metadata.id = 77;
    q.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    let s = tokio::net::UdpSocket::bind("0.0.0.0:0").await.unwrap();
    s.send_to(&q.to_vec().unwrap(), server).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), s.recv_from(&mut buf))
        .await
        .expect("the node DNS answers within 5 s")
        .unwrap();
    let m = Message::from_vec(&buf[..n]).unwrap();
    (u16::from(m.metadata.response_code), m.answers.len())
}

/// The host ports of `n` healthy endpoints of `name`, once the catalog has
/// them.
async fn healthy_ports(c: &Client, name: &str, n: usize) -> Vec<u16> {
    eventually(&format!("{n} healthy endpoints of {name}"), D, || async {
        let cat = c.service(name, None).await.map_err(|e| e.to_string())?;
        let s = cat.services.into_iter().next().ok_or("no service")?;
        let ports: Vec<u16> = s.healthy().map(|e| e.port).collect();
        if ports.len() == n {
            Ok(ports)
        } else {
            Err(format!("{:?}", s.endpoints))
        }
    })
    .await
}
