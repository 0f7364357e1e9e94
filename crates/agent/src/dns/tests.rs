use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use corral_types::catalog::{Endpoint, EndpointStatus, ServiceCatalog, ServiceEntry};
use corral_types::spec::ServiceKind;
use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::handler::Reply;
use super::table::{Answer, Table, addr_name, answer};
use super::*;

fn endpoint(address: &str, port: u16, healthy: bool) -> Endpoint {
    Endpoint {
        alloc_id: format!("a-{address}-{port}"),
        alloc_name: "shop.web[0]".into(),
        node_id: "n1".into(),
        node_name: "n1".into(),
        address: address.into(),
        port,
        healthy,
        status: if healthy {
            EndpointStatus::Passing
        } else {
            EndpointStatus::Failing
        },
        reason: String::new(),
    }
}

fn service(name: &str, endpoints: Vec<Endpoint>) -> ServiceEntry {
    ServiceEntry {
        name: name.into(),
        job: "shop".into(),
        group: "web".into(),
        kind: ServiceKind::Http,
        auto_host: None,
        routes: vec![],
        tcp_port: None,
        shutdown_delay_ms: 0,
        endpoints,
    }
}

/// web: two healthy endpoints on one node, one on another, one failing;
/// db: none healthy; v6: an IPv6 endpoint; named: a host name.
fn catalog() -> ServiceCatalog {
    ServiceCatalog {
        index: 7,
        services: vec![
            service(
                "web",
                vec![
                    endpoint("10.0.0.5", 20001, true),
                    endpoint("10.0.0.5", 20002, true),
                    endpoint("10.0.0.6", 20001, true),
                    endpoint("10.0.0.7", 20001, false),
                ],
            ),
            service("db", vec![endpoint("10.0.0.5", 20010, false)]),
            service("v6", vec![endpoint("fd00::1", 20020, true)]),
            service("named", vec![endpoint("node-a.example", 20030, true)]),
        ],
    }
}

fn lower(name: &str) -> LowerName {
    LowerName::new(&Name::from_ascii(name).expect("name"))
}

fn records(a: Answer) -> (Vec<Record>, Vec<Record>) {
    match a {
        Answer::Records {
            answers,
            additionals,
        } => (answers, additionals),
        other => panic!("expected records, got {other:?}"),
    }
}

fn ips(rs: &[Record]) -> Vec<IpAddr> {
    rs.iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

fn srvs(rs: &[Record]) -> Vec<(String, u16)> {
    rs.iter()
        .filter_map(|r| match &r.data {
            RData::SRV(s) => Some((s.target.to_string(), s.port)),
            _ => None,
        })
        .collect()
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

#[test]
fn a_records_are_the_healthy_addresses_once_each() {
    let t = Table::from_catalog(&catalog());
    let (ans, add) = records(answer(&t, &lower("web.service.corral."), RecordType::A));
    assert_eq!(ips(&ans), [ip("10.0.0.5"), ip("10.0.0.6")]);
    assert!(add.is_empty());
    assert!(ans.iter().all(|r| r.ttl == table::TTL));
    // Any case, as resolvers may ask.
    let (ans, _) = records(answer(&t, &lower("WEB.Service.CORRAL."), RecordType::A));
    assert_eq!(ans.len(), 2);
    // AAAA of an IPv4-only service: the name exists, no records.
    let (ans, _) = records(answer(&t, &lower("web.service.corral."), RecordType::AAAA));
    assert!(ans.is_empty());
    let (ans, _) = records(answer(&t, &lower("v6.service.corral."), RecordType::AAAA));
    assert_eq!(ips(&ans), [ip("fd00::1")]);
}

#[test]
fn srv_records_carry_each_endpoint_with_a_resolvable_target() {
    let t = Table::from_catalog(&catalog());
    for name in ["web.service.corral.", "_web._tcp.service.corral."] {
        let (ans, add) = records(answer(&t, &lower(name), RecordType::SRV));
        assert_eq!(
            srvs(&ans),
            [
                ("0a000005.addr.corral.".to_string(), 20001),
                ("0a000005.addr.corral.".to_string(), 20002),
                ("0a000006.addr.corral.".to_string(), 20001),
            ],
            "{name}"
        );
        // Glue: each target's address once.
        assert_eq!(ips(&add), [ip("10.0.0.5"), ip("10.0.0.6")]);
        assert_eq!(add[0].name.to_string(), "0a000005.addr.corral.");
    }
    // The target itself resolves.
    let (ans, _) = records(answer(&t, &lower("0a000006.addr.corral."), RecordType::A));
    assert_eq!(ips(&ans), [ip("10.0.0.6")]);
    let v6 = addr_name(ip("fd00::1"));
    let (ans, _) = records(answer(&t, &LowerName::new(&v6), RecordType::AAAA));
    assert_eq!(ips(&ans), [ip("fd00::1")]);
    // A host name is its own target, without glue.
    let (ans, add) = records(answer(&t, &lower("named.service.corral."), RecordType::SRV));
    assert_eq!(srvs(&ans), [("node-a.example.".to_string(), 20030)]);
    assert!(add.is_empty());
    let (ans, _) = records(answer(&t, &lower("named.service.corral."), RecordType::A));
    assert!(ans.is_empty(), "no address to give for a host name");
}

#[test]
fn unknown_names_are_nxdomain_and_unhealthy_services_empty() {
    let t = Table::from_catalog(&catalog());
    for name in [
        "nope.service.corral.",
        "_nope._tcp.service.corral.",
        "a.web.service.corral.",
        "x.corral.",
        "zz.addr.corral.",
    ] {
        assert_eq!(
            answer(&t, &lower(name), RecordType::A),
            Answer::NoSuchName,
            "{name}"
        );
    }
    let (ans, _) = records(answer(&t, &lower("db.service.corral."), RecordType::A));
    assert!(ans.is_empty(), "known, none healthy: NOERROR, no records");
    let (ans, _) = records(answer(&t, &lower("service.corral."), RecordType::A));
    assert!(ans.is_empty());
    let (ans, _) = records(answer(&t, &lower("corral."), RecordType::SOA));
    assert_eq!(ans.len(), 1);
}

#[test]
fn before_the_first_catalog_services_are_servfail() {
    let t = Table::default();
    assert_eq!(
        answer(&t, &lower("web.service.corral."), RecordType::A),
        Answer::NotReady
    );
    assert_eq!(
        Reply::from_answer(Answer::NotReady).code,
        ResponseCode::ServFail
    );
}

#[test]
fn negative_replies_carry_the_soa() {
    let r = Reply::from_answer(Answer::NoSuchName);
    assert_eq!(r.code, ResponseCode::NXDomain);
    assert_eq!(r.soa.len(), 1);
    let t = Table::from_catalog(&catalog());
    let r = Reply::from_answer(answer(&t, &lower("db.service.corral."), RecordType::A));
    assert_eq!(r.code, ResponseCode::NoError);
    assert_eq!(r.soa.len(), 1);
}

#[test]
fn a_reply_too_big_for_udp_is_cut_and_marked_truncated() {
    let many: Vec<Endpoint> = (1..=200u8)
        .map(|i| endpoint(&format!("10.1.0.{i}"), 20000, true))
        .collect();
    let t = Table::from_catalog(&ServiceCatalog {
        index: 1,
        services: vec![service("big", many)],
    });
    let mut q = Message::query();
    q.add_query(Query::query(
        Name::from_ascii("big.service.corral.").expect("name"),
        RecordType::A,
    ));
    let full = Reply::from_answer(answer(&t, &lower("big.service.corral."), RecordType::A));
    assert_eq!(full.answers.len(), 200);
    let cut =
        Reply::from_answer(answer(&t, &lower("big.service.corral."), RecordType::A)).fit(&q, 512);
    assert!(cut.truncated);
    assert!(!cut.answers.is_empty() && cut.answers.len() < 200);
    // SRV: the glue goes first, answers are kept while they fit.
    let srv =
        Reply::from_answer(answer(&t, &lower("big.service.corral."), RecordType::SRV)).fit(&q, 512);
    assert!(srv.additionals.is_empty());
    assert!(srv.truncated);
    // A small reply is left alone.
    let small = Reply::from_answer(answer(
        &Table::from_catalog(&catalog()),
        &lower("web.service.corral."),
        RecordType::A,
    ))
    .fit(&q, 512);
    assert!(!small.truncated);
    assert_eq!(small.answers.len(), 2);
}

#[test]
fn pods_get_the_node_dns_first_in_their_search_list() {
    let d = pod_dns(
        "10.88.0.1:53".parse().expect("addr"),
        &["corp.example".into()],
    )
    .expect("pod dns");
    assert_eq!(d.servers, ["10.88.0.1"]);
    assert_eq!(d.searches, ["service.corral", "corp.example"]);
    assert!(pod_dns("10.88.0.1:5353".parse().expect("addr"), &[]).is_none());
    assert!(pod_dns("0.0.0.0:53".parse().expect("addr"), &[]).is_none());
}

#[test]
fn dns_addr_takes_an_ip_or_ip_and_port() {
    assert_eq!(
        parse_addr("10.88.0.1"),
        Ok("10.88.0.1:53".parse().expect("addr"))
    );
    assert_eq!(
        parse_addr("10.88.0.1:5353"),
        Ok("10.88.0.1:5353".parse().expect("addr"))
    );
    assert_eq!(
        parse_addr("fd00::1"),
        Ok("[fd00::1]:53".parse().expect("addr"))
    );
    assert!(parse_addr("node.example").is_err());
}

/// One question over UDP (or TCP), the parsed answer back.
async fn ask(server: SocketAddr, name: &str, qtype: RecordType, tcp: bool) -> Message {
    let mut q = Message::query();
    q.metadata.id = 4242;
    q.metadata.recursion_desired = true;
    q.add_query(Query::query(Name::from_ascii(name).expect("name"), qtype));
    let bytes = q.to_vec().expect("encode");
    let got = if tcp {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(server)
            .await
            .expect("connect");
        let len = u16::try_from(bytes.len()).expect("len");
        s.write_all(&len.to_be_bytes()).await.expect("write");
        s.write_all(&bytes).await.expect("write");
        let mut l = [0u8; 2];
        s.read_exact(&mut l).await.expect("read len");
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(l))];
        s.read_exact(&mut buf).await.expect("read");
        buf
    } else {
        let s = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind");
        s.send_to(&bytes, server).await.expect("send");
        let mut buf = vec![0u8; 4096];
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), s.recv_from(&mut buf))
            .await
            .expect("an answer within 5 s")
            .expect("recv");
        buf.truncate(n);
        buf
    };
    let m = Message::from_vec(&got).expect("decode");
    assert_eq!(m.metadata.id, 4242);
    m
}

/// A node DNS on loopback with a fixed catalog and no resolvers.
async fn serve(
    catalog: ServiceCatalog,
) -> (NodeDns, TaskTracker, CancellationToken, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(&resolv, "search corp.example\n").expect("write");
    let config = DnsConfig {
        addr: "127.0.0.1:0".parse().expect("addr"),
        resolv_conf: resolv,
        optional: false,
    };
    let tasks = TaskTracker::new();
    let shutdown = CancellationToken::new();
    let dns = NodeDns::start(
        &config,
        Arc::new(FixedCatalog(catalog)),
        Duration::from_secs(30),
        &tasks,
        shutdown.clone(),
    )
    .expect("start");
    // The first catalog is in the table once a service answers.
    for _ in 0..100 {
        if dns.table.load().ready {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (dns, tasks, shutdown, dir)
}

#[tokio::test]
async fn answers_over_udp_and_tcp_and_refuses_other_names_without_resolvers() {
    let (dns, tasks, shutdown, _dir) = serve(catalog()).await;
    assert!(
        dns.pod_dns.is_none(),
        "not on port 53: pods keep their default"
    );
    for tcp in [false, true] {
        let m = ask(dns.addr, "web.service.corral.", RecordType::A, tcp).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.metadata.authoritative);
        assert_eq!(ips(&m.answers), [ip("10.0.0.5"), ip("10.0.0.6")]);
        let m = ask(dns.addr, "_web._tcp.service.corral.", RecordType::SRV, tcp).await;
        assert_eq!(srvs(&m.answers).len(), 3);
        assert_eq!(ips(&m.additionals).len(), 2);
        let m = ask(dns.addr, "nope.service.corral.", RecordType::A, tcp).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(m.authorities.len(), 1, "SOA for negative caching");
    }
    // No resolvers on this node: other names are refused at once.
    let started = std::time::Instant::now();
    let m = ask(dns.addr, "example.com.", RecordType::A, false).await;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    assert!(started.elapsed() < Duration::from_secs(1));
    shutdown.cancel();
    tasks.close();
    tokio::time::timeout(Duration::from_secs(5), tasks.wait())
        .await
        .expect("node DNS stops on shutdown");
}

#[tokio::test]
async fn a_big_udp_answer_is_truncated_and_complete_over_tcp() {
    let many: Vec<Endpoint> = (1..=100u8)
        .map(|i| endpoint(&format!("10.1.0.{i}"), 20000, true))
        .collect();
    let (dns, _tasks, shutdown, _dir) = serve(ServiceCatalog {
        index: 1,
        services: vec![service("big", many)],
    })
    .await;
    let m = ask(dns.addr, "big.service.corral.", RecordType::A, false).await;
    assert!(m.metadata.truncation);
    assert!(m.answers.len() < 100);
    let m = ask(dns.addr, "big.service.corral.", RecordType::A, true).await;
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 100);
    // With EDNS the client may take more over UDP.
    let mut q = Message::query();
    q.add_query(Query::query(
        Name::from_ascii("big.service.corral.").expect("name"),
        RecordType::A,
    ));
    let mut e = Edns::new();
    e.set_max_payload(4096);
    q.set_edns(e);
    let s = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    s.send_to(&q.to_vec().expect("encode"), dns.addr)
        .await
        .expect("send");
    let mut buf = vec![0u8; 8192];
    let (n, _) = s.recv_from(&mut buf).await.expect("recv");
    let m = Message::from_vec(&buf[..n]).expect("decode");
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 100);
    shutdown.cancel();
}

/// A catalog that changes on its second read: the table follows it.
struct Changing(std::sync::Mutex<Vec<ServiceCatalog>>);

#[async_trait::async_trait]
impl CatalogSource for Changing {
    async fn catalog(
        &self,
        after: Option<(corral_types::Index, Duration)>,
    ) -> Result<ServiceCatalog, String> {
        let next = self.0.lock().map_err(|e| e.to_string())?.pop();
        match next {
            Some(c) => Ok(c),
            None => {
                tokio::time::sleep(after.map_or(Duration::ZERO, |(_, w)| w)).await;
                Err("no more".into())
            }
        }
    }
}

#[tokio::test]
async fn the_table_follows_the_catalog_and_survives_errors() {
    let mut second = catalog();
    second.index = 8;
    second.services[0].endpoints[0].healthy = false;
    second.services[0].endpoints[1].healthy = false;
    // Popped from the end: `catalog()`, then `second`, then errors.
    let source = Arc::new(Changing(std::sync::Mutex::new(vec![second, catalog()])));
    let table = Arc::new(ArcSwap::from_pointee(Table::default()));
    let shutdown = CancellationToken::new();
    let h = tokio::spawn(follow::follow(
        source,
        table.clone(),
        "10.89.0.1".parse().expect("ip"),
        Duration::from_millis(50),
        shutdown.clone(),
    ));
    let web = |t: &Table| t.services.get("web").map(|s| s.addrs.clone());
    for _ in 0..200 {
        if table.load().index == 8 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(table.load().index, 8);
    assert_eq!(web(&table.load()), Some(vec![ip("10.0.0.6")]));
    // Errors from now on: the last table stays.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(table.load().index, 8);
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(2), h)
        .await
        .expect("stops on shutdown")
        .expect("join");
}

/// In a one-host set-up the endpoints carry 127.0.0.1, which inside a pod
/// is the pod itself: the node DNS answers its own address instead.
#[test]
fn loopback_endpoints_are_answered_with_the_node_dns_address() {
    let one_host = ServiceCatalog {
        index: 3,
        services: vec![service(
            "web",
            vec![
                endpoint("127.0.0.1", 31001, true),
                endpoint("127.0.0.1", 31002, true),
                endpoint("10.0.0.9", 31003, true),
            ],
        )],
    };
    let own: std::net::IpAddr = "10.89.0.1".parse().expect("ip");
    let t = Table::from_catalog(&one_host).loopback_as(own);
    let web = &t.services["web"];
    let want: Vec<std::net::IpAddr> = vec![own, "10.0.0.9".parse().expect("ip")];
    let mut got = web.addrs.clone();
    got.sort();
    let mut want = want;
    want.sort();
    assert_eq!(got, want);
    assert!(
        web.targets
            .iter()
            .all(|(t, _)| *t != table::Target::Ip("127.0.0.1".parse().expect("ip"))),
        "{:?}",
        web.targets
    );
    assert_eq!(web.targets.len(), 3, "each port kept: {:?}", web.targets);
    // Listening on loopback itself: nothing to swap.
    let t = Table::from_catalog(&one_host).loopback_as("127.0.0.1".parse().expect("ip"));
    assert!(
        t.services["web"]
            .addrs
            .contains(&"127.0.0.1".parse().expect("ip"))
    );
}
