//! Who owns a TCP socket on this machine, from the kernel's socket tables
//! (`/proc/net/tcp{,6}`: Linux only; elsewhere [`tables`] is `None` and
//! callers decide without it). The controller checks that the local
//! agent's port belongs to the user before it sends the token; the agent
//! answers the GCE metadata protocol only to connections whose peer is the
//! node user. Reads numbers only.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// The text of `/proc/net/tcp` and `/proc/net/tcp6` joined, `None` where
/// neither exists (macOS).
pub fn tables() -> Option<String> {
    let tables: Vec<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .collect();
    (!tables.is_empty()).then(|| tables.join("\n"))
}

/// One socket of a table: local and remote address, state, uid.
struct Row {
    local: SocketAddr,
    remote: SocketAddr,
    state: u8,
    uid: u32,
}

/// `0100007F:7E5C` as the kernel prints it (each 32-bit word of the address
/// in host order, the port in hex).
fn parse_addr(text: &str) -> Option<SocketAddr> {
    let (ip_hex, port_hex) = text.split_once(':')?;
    let port = u16::from_str_radix(port_hex, 16).ok()?;
    let mut bytes = vec![];
    for i in (0..ip_hex.len()).step_by(8) {
        let word = ip_hex
            .get(i..i + 8)
            .and_then(|w| u32::from_str_radix(w, 16).ok())?;
        bytes.extend_from_slice(&word.to_ne_bytes());
    }
    let ip = match bytes.len() {
        4 => IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?),
        16 => {
            let v6 = Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?);
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

fn rows(tables: &str) -> impl Iterator<Item = Row> + '_ {
    tables.lines().filter_map(|line| {
        // sl local_address rem_address st tx:rx tr:when retrnsmt uid ...
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 8 {
            return None;
        }
        Some(Row {
            local: parse_addr(cols[1])?,
            remote: parse_addr(cols[2])?,
            state: u8::from_str_radix(cols[3], 16).ok()?,
            uid: cols[7].parse().ok()?,
        })
    })
}

/// TCP state LISTEN.
const LISTEN: u8 = 0x0A;

/// The uid of the socket listening on `addr` (or on the wildcard address at
/// its port) in `/proc/net/tcp`-format `tables`.
pub fn listener_uid(tables: &str, addr: SocketAddr) -> Option<u32> {
    let mut wildcard = None;
    for row in rows(tables).filter(|r| r.state == LISTEN && r.local.port() == addr.port()) {
        if row.local.ip() == addr.ip() {
            return Some(row.uid);
        }
        if row.local.ip().is_unspecified() {
            wildcard = Some(row.uid);
        }
    }
    wildcard
}

/// The uid of the process end of a connection that `server` accepted from
/// `peer`: the socket whose local address is `peer` and remote address is
/// `server` (a loopback peer is a socket on this machine).
pub fn peer_uid(tables: &str, peer: SocketAddr, server: SocketAddr) -> Option<u32> {
    let canon = |a: SocketAddr| match a.ip() {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(a, |v4| SocketAddr::new(IpAddr::V4(v4), a.port())),
        IpAddr::V4(_) => a,
    };
    let (peer, server) = (canon(peer), canon(server));
    rows(tables)
        .find(|r| r.state != LISTEN && r.local == peer && r.remote == server)
        .map(|r| r.uid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:7E5C 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 11 1 0 100 0 0 10 0
   1: 0100007F:7E5D 0100007F:83DF 01 00000000:00000000 00:00000000 00000000     0        0 0 3 0
   2: 00000000:7E5E 00000000:0000 0A 00000000:00000000 00:00000000 00000000    33        0 12 1 0 100 0 0 10 0
   3: 0100007F:83DF 0100007F:7E5D 01 00000000:00000000 00:00000000 00000000  1001        0 0 3 0";

    fn at(port: u16) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, port))
    }

    #[test]
    fn listener_owners_come_from_proc_net_tcp() {
        assert_eq!(listener_uid(TCP, at(32348)), Some(1000));
        // An established connection is no listener.
        assert_eq!(listener_uid(TCP, at(32349)), None);
        // A wildcard listener covers loopback.
        assert_eq!(listener_uid(TCP, at(32350)), Some(33));
        assert_eq!(listener_uid(TCP, at(1)), None);
    }

    #[test]
    fn a_peer_is_the_socket_whose_remote_end_is_the_server() {
        // Server 127.0.0.1:32349 accepted from 127.0.0.1:33759 (row 3, uid 1001);
        // row 1 is the server's own end (uid 0).
        assert_eq!(peer_uid(TCP, at(0x83DF), at(0x7E5D)), Some(1001));
        assert_eq!(peer_uid(TCP, at(0x7E5D), at(0x83DF)), Some(0));
        assert_eq!(peer_uid(TCP, at(1), at(0x7E5D)), None);
    }

    #[test]
    fn a_real_connection_is_found_with_our_uid() {
        let Some(_) = tables() else { return };
        let l = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let server = l.local_addr().unwrap();
        let c = std::net::TcpStream::connect(server).unwrap();
        let (_accepted, peer) = l.accept().unwrap();
        assert_eq!(peer, c.local_addr().unwrap());
        let me = nix::unistd::geteuid().as_raw();
        assert_eq!(peer_uid(&tables().unwrap(), peer, server), Some(me));
        assert_eq!(listener_uid(&tables().unwrap(), server), Some(me));
    }
}
