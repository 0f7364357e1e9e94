//! The names the node DNS answers itself, made from the service catalog:
//! a pure table and a pure `answer` (a name and a type in, records out).
//!
//! Names, under the zone `corral.` (Consul's shapes, with `corral` for
//! `consul` and no datacenter label):
//!
//! - `<service>.service.corral` A / AAAA: the address of every healthy
//!   endpoint, once each.
//! - `<service>.service.corral` SRV and `_<service>._tcp.service.corral`
//!   SRV (RFC 2782): one record per healthy endpoint, priority 1, weight
//!   1, its port, and a target that resolves to its address (given in the
//!   additional section).
//! - `<hex address>.addr.corral` A / AAAA: the SRV targets (`0a000005` for
//!   10.0.0.5, 32 hex digits for IPv6), as Consul's `.addr.` names.
//!
//! A service the catalog does not know is NXDOMAIN; a known one without a
//! healthy endpoint is an empty answer (NOERROR): the name exists, and
//! comes back when an endpoint does. Negative answers carry the zone's SOA,
//! whose minimum is the same short TTL, so nobody caches them for long.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use corral_types::catalog::ServiceCatalog;
use hickory_proto::rr::rdata::{A, AAAA, SOA, SRV};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};

/// The zone the node DNS answers for.
pub const ZONE: &str = "corral.";
/// Where services live: `<service>.service.corral`.
pub const SERVICE_DOMAIN: &str = "service.corral";
/// Seconds every answer (and every negative answer) may be cached.
pub const TTL: u32 = 2;

/// One service's healthy endpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceRecords {
    /// IP addresses, each once, sorted.
    pub addrs: Vec<IpAddr>,
    /// (target, port), each once, sorted. The target is an address or a
    /// host name, as the node registered it.
    pub targets: Vec<(Target, u16)>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    Ip(IpAddr),
    Host(Name),
}

/// What the node DNS knows: the catalog's services by lower-case name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    /// `false` until the first catalog arrived: names under the zone are
    /// then SERVFAIL (unknown yet), not NXDOMAIN (known not to exist).
    pub ready: bool,
    /// The catalog index it was made from.
    pub index: u64,
    pub services: HashMap<String, ServiceRecords>,
}

impl Table {
    pub fn from_catalog(catalog: &ServiceCatalog) -> Table {
        let mut services = HashMap::new();
        for s in &catalog.services {
            let mut addrs = BTreeSet::new();
            let mut targets = BTreeSet::new();
            for e in s.healthy() {
                let host = e.address.trim();
                // `[::1]` as some write IPv6 hosts.
                let bare = host.trim_start_matches('[').trim_end_matches(']');
                if let Ok(ip) = bare.parse::<IpAddr>() {
                    addrs.insert(ip);
                    targets.insert((Target::Ip(ip), e.port));
                } else if let Ok(mut name) = Name::from_ascii(host) {
                    name.set_fqdn(true);
                    targets.insert((Target::Host(name.to_lowercase()), e.port));
                } else {
                    tracing::debug!(service = %s.name, address = %e.address,
                        "endpoint address is neither an IP nor a host name; left out of DNS");
                }
            }
            services.insert(
                s.name.to_ascii_lowercase(),
                ServiceRecords {
                    addrs: addrs.into_iter().collect(),
                    targets: targets.into_iter().collect(),
                },
            );
        }
        Table {
            ready: true,
            index: catalog.index,
            services,
        }
    }
}

impl Table {
    /// Endpoints registered with a loopback address (one-host set-ups
    /// such as `corral dev`) answered as `own`, the node DNS's address:
    /// inside a pod, 127.0.0.1 is the pod itself, while the host ports are
    /// mapped on every address of the node, this one included.
    pub fn loopback_as(mut self, own: IpAddr) -> Table {
        if own.is_loopback() || own.is_unspecified() {
            return self;
        }
        let swap = |ip: IpAddr| if ip.is_loopback() { own } else { ip };
        for recs in self.services.values_mut() {
            let addrs: BTreeSet<IpAddr> = recs.addrs.iter().map(|ip| swap(*ip)).collect();
            recs.addrs = addrs.into_iter().collect();
            let targets: BTreeSet<(Target, u16)> = recs
                .targets
                .iter()
                .map(|(t, port)| match t {
                    Target::Ip(ip) => (Target::Ip(swap(*ip)), *port),
                    other => (other.clone(), *port),
                })
                .collect();
            recs.targets = targets.into_iter().collect();
        }
        self
    }
}

/// The answer to one question about a name in the zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// NOERROR with these records (answers may be empty: the name exists
    /// without records of that type; the SOA then goes along).
    Records {
        answers: Vec<Record>,
        additionals: Vec<Record>,
    },
    /// NXDOMAIN.
    NoSuchName,
    /// SERVFAIL: the catalog has not been read yet.
    NotReady,
}

/// Whether `name` is ours to answer (`corral.` or below).
pub fn in_zone(name: &LowerName) -> bool {
    zone().zone_of(name)
}

fn zone() -> LowerName {
    LowerName::new(&zone_name())
}

fn zone_name() -> Name {
    // A constant, valid name.
    Name::from_ascii(ZONE).unwrap_or_else(|_| Name::root())
}

/// The zone's SOA, for negative answers (its minimum is the negative
/// caching TTL, RFC 2308).
pub fn soa() -> Record {
    let zone = zone_name();
    let ns = Name::from_ascii("ns.corral.").unwrap_or_else(|_| zone.clone());
    let mbox = Name::from_ascii("hostmaster.corral.").unwrap_or_else(|_| zone.clone());
    Record::from_rdata(
        zone,
        TTL,
        RData::SOA(SOA::new(ns, mbox, 1, 3600, 600, 86400, TTL)),
    )
}

/// Answers `qtype` for `name`, a name [`in_zone`].
pub fn answer(table: &Table, name: &LowerName, qtype: RecordType) -> Answer {
    let full: Name = name.into();
    // Labels below `corral.`, outermost last: `web.service` -> [web, service].
    let depth = full.num_labels().saturating_sub(1) as usize;
    let labels: Vec<String> = full
        .iter()
        .take(depth)
        .map(|l| String::from_utf8_lossy(l).to_ascii_lowercase())
        .collect();
    let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
    let empty = || Answer::Records {
        answers: vec![],
        additionals: vec![],
    };
    match labels.as_slice() {
        // The zone's apex and `service.corral` exist, with no records but
        // the SOA.
        [] if qtype == RecordType::SOA => Answer::Records {
            answers: vec![soa()],
            additionals: vec![],
        },
        [] | ["service"] => empty(),
        [hex, "addr"] => match parse_hex_addr(hex) {
            Some(ip) => match addr_record(&full, ip, qtype) {
                Some(r) => Answer::Records {
                    answers: vec![r],
                    additionals: vec![],
                },
                None => empty(),
            },
            None => Answer::NoSuchName,
        },
        _ if !table.ready => Answer::NotReady,
        [svc, "service"] => match table.services.get(*svc) {
            None => Answer::NoSuchName,
            Some(recs) => service_answer(&full, recs, qtype),
        },
        [svc, "_tcp", "service"] => match svc.strip_prefix('_').and_then(|s| table.services.get(s))
        {
            None => Answer::NoSuchName,
            Some(recs) if matches!(qtype, RecordType::SRV | RecordType::ANY) => {
                service_answer(&full, recs, RecordType::SRV)
            }
            Some(_) => empty(),
        },
        _ => Answer::NoSuchName,
    }
}

fn service_answer(owner: &Name, recs: &ServiceRecords, qtype: RecordType) -> Answer {
    let mut answers = vec![];
    let mut additionals = vec![];
    let want_addr = |ip: &IpAddr| match qtype {
        RecordType::A => ip.is_ipv4(),
        RecordType::AAAA => ip.is_ipv6(),
        RecordType::ANY => true,
        _ => false,
    };
    for ip in recs.addrs.iter().filter(|ip| want_addr(ip)) {
        answers.extend(addr_record(owner, *ip, RecordType::ANY));
    }
    if matches!(qtype, RecordType::SRV | RecordType::ANY) {
        let mut glued = BTreeSet::new();
        for (target, port) in &recs.targets {
            let name = match target {
                Target::Ip(ip) => {
                    let name = addr_name(*ip);
                    if glued.insert(*ip) {
                        additionals.extend(addr_record(&name, *ip, RecordType::ANY));
                    }
                    name
                }
                Target::Host(h) => h.clone(),
            };
            answers.push(Record::from_rdata(
                owner.clone(),
                TTL,
                RData::SRV(SRV::new(1, 1, *port, name)),
            ));
        }
    }
    Answer::Records {
        answers,
        additionals,
    }
}

/// An A or AAAA record for `ip` if `qtype` asks for its family (`ANY`
/// takes both).
fn addr_record(owner: &Name, ip: IpAddr, qtype: RecordType) -> Option<Record> {
    let rdata = match (ip, qtype) {
        (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => RData::A(A(v4)),
        (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => RData::AAAA(AAAA(v6)),
        _ => return None,
    };
    Some(Record::from_rdata(owner.clone(), TTL, rdata))
}

/// `<hex>.addr.corral.`: the SRV target of an endpoint at `ip`.
pub fn addr_name(ip: IpAddr) -> Name {
    let hex: String = match ip {
        IpAddr::V4(v4) => v4.octets().iter().map(|b| format!("{b:02x}")).collect(),
        IpAddr::V6(v6) => v6.octets().iter().map(|b| format!("{b:02x}")).collect(),
    };
    Name::from_ascii(format!("{hex}.addr.{ZONE}")).unwrap_or_else(|_| zone_name())
}

fn parse_hex_addr(hex: &str) -> Option<IpAddr> {
    let bytes = |n: usize| -> Option<Vec<u8>> {
        if hex.len() != 2 * n || !hex.is_ascii() {
            return None;
        }
        (0..n)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
            .collect()
    };
    if let Some(b) = bytes(4) {
        return Some(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3])));
    }
    let b: [u8; 16] = bytes(16)?.try_into().ok()?;
    Some(IpAddr::V6(Ipv6Addr::from(b)))
}
