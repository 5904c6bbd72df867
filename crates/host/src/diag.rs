//! Sockets from the kernel's sock_diag interface: local and remote address, state and inode
//! (the inode is what ties a socket to a process through /proc/PID/fd).

use std::net::{IpAddr, SocketAddr};

use netlink_packet_core::{NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage};
use netlink_packet_sock_diag::{
    SockDiagMessage,
    constants::{AF_INET, AF_INET6},
    inet::{ExtensionFlags, InetRequest, SocketId, StateFlags},
};
use netlink_sys::{Socket, protocols::NETLINK_SOCK_DIAG};

use crate::{HostError, netlink};

pub(crate) const TCP: u8 = 6;
pub(crate) const UDP: u8 = 17;
/// TCP_LISTEN in the kernel's state numbering.
pub(crate) const STATE_LISTEN: u8 = 10;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SockEntry {
    pub protocol: u8,
    pub state: u8,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub inode: u64,
}

#[derive(Debug)]
pub(crate) struct Diag {
    socket: Socket,
}

impl Diag {
    pub(crate) fn open() -> Result<Self, HostError> {
        Ok(Self {
            socket: netlink::open(NETLINK_SOCK_DIAG, "opening a sock_diag socket")?,
        })
    }

    /// Every socket of `protocol` (both families) in one of `states`.
    pub(crate) fn dump(
        &self,
        protocol: u8,
        states: StateFlags,
    ) -> Result<Vec<SockEntry>, HostError> {
        let mut out = Vec::new();
        for (family, id) in [
            (AF_INET, SocketId::new_v4()),
            (AF_INET6, SocketId::new_v6()),
        ] {
            let mut header = NetlinkHeader::default();
            header.flags = NLM_F_REQUEST | NLM_F_DUMP;
            let request = NetlinkMessage::new(
                header,
                SockDiagMessage::InetRequest(InetRequest {
                    family,
                    protocol,
                    extensions: ExtensionFlags::empty(),
                    states: states.clone(),
                    socket_id: id,
                })
                .into(),
            );
            let (answers, _) = netlink::request(&self.socket, request, "dumping sockets")?;
            out.extend(answers.into_iter().filter_map(|m| entry(protocol, m)));
        }
        Ok(out)
    }

    /// The one TCP socket with this local and remote end (an exact lookup, no dump), or
    /// `None` when the kernel has none.
    pub(crate) fn find_tcp(
        &self,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Result<Option<SockEntry>, HostError> {
        let (family, mut id) = match local.ip() {
            IpAddr::V4(_) => (AF_INET, SocketId::new_v4()),
            IpAddr::V6(_) => (AF_INET6, SocketId::new_v6()),
        };
        id.source_address = local.ip();
        id.source_port = local.port();
        id.destination_address = remote.ip();
        id.destination_port = remote.port();
        // INET_DIAG_NOCOOKIE: match by address and port, not by a cookie we do not have.
        id.cookie = [0xff; 8];
        let mut header = NetlinkHeader::default();
        // The ACK ends the exchange: an exact lookup has no DONE.
        header.flags = NLM_F_REQUEST | NLM_F_ACK;
        let request = NetlinkMessage::new(
            header,
            SockDiagMessage::InetRequest(InetRequest {
                family,
                protocol: TCP,
                extensions: ExtensionFlags::empty(),
                states: StateFlags::all(),
                socket_id: id,
            })
            .into(),
        );
        match netlink::request(&self.socket, request, "looking up a tcp socket") {
            Ok((answers, _)) => Ok(answers.into_iter().find_map(|m| entry(TCP, m))),
            // The kernel answers ENOENT when there is no such socket (it already closed).
            Err(HostError::Refused { source, .. })
                if source.raw_os_error() == Some(nix::libc::ENOENT) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

fn entry(protocol: u8, message: SockDiagMessage) -> Option<SockEntry> {
    let SockDiagMessage::InetResponse(r) = message else {
        return None;
    };
    let id = &r.header.socket_id;
    Some(SockEntry {
        protocol,
        state: r.header.state,
        local: SocketAddr::new(id.source_address, id.source_port),
        remote: SocketAddr::new(id.destination_address, id.destination_port),
        inode: u64::from(r.header.inode),
    })
}
