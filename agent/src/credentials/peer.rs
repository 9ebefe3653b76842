//! Who is on the other end of a connection: the accept loop records each
//! connection's peer and local address ([`PeerInfo`], a request
//! extension), and [`is_node_user`] looks the peer's socket up in the
//! kernel's socket table (`common::sockets`) to compare its uid with the
//! agent's own. No table (not Linux), no peer info (a request that did not
//! come through the accept loop) or no matching socket: not the node user.

use std::net::SocketAddr;

/// The two ends of the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerInfo {
    pub(crate) peer: SocketAddr,
    pub(crate) local: SocketAddr,
}

/// The uid of the peer of `info`'s connection, if it can be found.
pub(crate) fn peer_uid(info: &PeerInfo) -> Option<u32> {
    if !info.peer.ip().is_loopback() {
        return None;
    }
    let tables = common::sockets::tables()?;
    common::sockets::peer_uid(&tables, info.peer, info.local)
}

/// Whether the connection's peer runs as the user the agent runs as.
pub(crate) fn is_node_user(info: Option<&PeerInfo>) -> bool {
    let me = nix::unistd::geteuid().as_raw();
    info.and_then(peer_uid) == Some(me)
}
