//! The node DNS's sockets: UDP and TCP on one address, bound with
//! `IP_FREEBIND`.
//!
//! The address is the pod bridge's gateway, which the CNI bridge plugin
//! only creates with the node's first pod sandbox (and `corral dev`
//! removes with its last). A socket bound with `IP_FREEBIND` needs no
//! local address at bind time and receives as soon as the address exists:
//! the agent listens from its start, whatever happens to the bridge later,
//! and needs no hook on sandbox creation.

use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// A bound UDP socket and TCP listener on the same address and port (the
/// port of `addr`, or one the system picks for port 0).
pub fn bind(addr: SocketAddr) -> std::io::Result<(tokio::net::UdpSocket, tokio::net::TcpListener)> {
    let udp = socket(addr, Type::DGRAM, Protocol::UDP)?;
    udp.bind(&addr.into())?;
    let bound = udp
        .local_addr()?
        .as_socket()
        .ok_or_else(|| std::io::Error::other("UDP socket has no IP address"))?;
    let tcp = socket(bound, Type::STREAM, Protocol::TCP)?;
    tcp.set_reuse_address(true)?;
    tcp.bind(&bound.into())?;
    tcp.listen(128)?;
    Ok((
        tokio::net::UdpSocket::from_std(udp.into())?,
        tokio::net::TcpListener::from_std(tcp.into())?,
    ))
}

fn socket(addr: SocketAddr, ty: Type, proto: Protocol) -> std::io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), ty, Some(proto))?;
    if addr.is_ipv4() {
        s.set_freebind_v4(true)?;
    } else {
        s.set_only_v6(true)?;
        s.set_freebind_v6(true)?;
    }
    s.set_nonblocking(true)?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn binds_an_address_the_node_does_not_have_yet() {
        // TEST-NET-2: on no interface of any machine.
        let (udp, tcp) = bind("198.51.100.77:0".parse().expect("addr")).expect("freebind");
        let u = udp.local_addr().expect("udp addr");
        assert_eq!(u.ip().to_string(), "198.51.100.77");
        assert_eq!(tcp.local_addr().expect("tcp addr"), u);
    }
}
