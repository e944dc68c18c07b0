//! rtnetlink, synchronously: the interface's index, MAC and addresses; permanent neighbour
//! entries (the pins); addresses; and a monitor for neighbour and link events.
//!
//! Contract: messages are built with netlink-packet-route (no hand-built netlink), every request
//! asks for an ACK, and every failure is a [`NetlinkError`] naming the operation, the object and
//! the errno. Neighbour pins are NUD_PERMANENT with CREATE|REPLACE, which spoofed ARP cannot
//! overwrite (LAB-NOTES).

use crate::engine::Cidr;
use crate::wire::Mac;
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{AfSpecInet, AfSpecUnspec, InetDevConf, LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

#[derive(Debug)]
pub struct NetlinkError {
    pub op: &'static str,
    pub object: String,
    pub errno: i32,
}

impl fmt::Display for NetlinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = std::io::Error::from_raw_os_error(self.errno);
        write!(f, "{} {}: errno {} ({e})", self.op, self.object, self.errno)
    }
}

impl std::error::Error for NetlinkError {}

pub struct Netlink {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct Link {
    pub index: u32,
    pub mac: Option<Mac>,
    pub up: bool,
}

fn io_errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

impl Netlink {
    pub fn open() -> std::io::Result<Netlink> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        Ok(Netlink { sock, seq: 1, buf: vec![0; 64 * 1024] })
    }

    /// A socket subscribed to neighbour and link events (RTMGRP_NEIGH | RTMGRP_LINK).
    pub fn monitor() -> std::io::Result<Socket> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        let groups = (libc::RTMGRP_NEIGH | libc::RTMGRP_LINK) as u32;
        sock.bind(&SocketAddr::new(0, groups))?;
        Ok(sock)
    }

    /// Sends one request and collects the replies until its ACK (or the end of a dump).
    fn request(
        &mut self,
        op: &'static str,
        object: &dyn Fn() -> String,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        let err = |errno| NetlinkError { op, object: object(), errno };
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        self.seq = self.seq.wrapping_add(1);
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let mut out = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut out);
        self.sock.send(&out, 0).map_err(|e| err(io_errno(&e)))?;
        let mut replies = Vec::new();
        loop {
            let n = self.sock.recv(&mut &mut self.buf[..], 0).map_err(|e| err(io_errno(&e)))?;
            let mut off = 0;
            while off < n {
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buf[off..n])
                    .map_err(|_| err(libc::EBADMSG))?;
                let len = msg.header.length as usize;
                if msg.header.sequence_number == self.seq {
                    match msg.payload {
                        NetlinkPayload::Error(e) => {
                            return match e.code {
                                None => Ok(replies),
                                Some(c) => Err(err(-c.get())),
                            };
                        }
                        NetlinkPayload::Done(_) => return Ok(replies),
                        NetlinkPayload::InnerMessage(m) => replies.push(m),
                        _ => {}
                    }
                }
                if len == 0 {
                    break;
                }
                off += (len + 3) & !3;
            }
        }
    }

    pub fn link(&mut self, name: &str) -> Result<Link, NetlinkError> {
        let all = self.request(
            "get link",
            &|| name.to_string(),
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            NLM_F_DUMP,
        )?;
        for m in all {
            if let RouteNetlinkMessage::NewLink(l) = m {
                let is_it = l.attributes.iter().any(|a| matches!(a, LinkAttribute::IfName(n) if n == name));
                if is_it {
                    let mac = l.attributes.iter().find_map(|a| match a {
                        LinkAttribute::Address(b) => Mac::from_slice(b),
                        _ => None,
                    });
                    return Ok(Link { index: l.header.index, mac, up: l.header.flags.contains(LinkFlags::Up) });
                }
            }
        }
        Err(NetlinkError { op: "get link", object: name.to_string(), errno: libc::ENODEV })
    }

    /// Sets `net.ipv4.conf.<if>.promote_secondaries=1` through rtnetlink (RTM_SETLINK with
    /// IFLA_AF_SPEC → AF_INET → IFLA_INET_CONF), not /proc/sys: the unit's
    /// ProtectKernelTunables makes /proc/sys read-only, and CAP_NET_ADMIN is all this needs.
    /// Only the one setting is sent: the request form nests just the non-zero entries, so every
    /// other devconf value of the interface is left as it is.
    pub fn set_promote_secondaries(&mut self, ifindex: u32) -> Result<(), NetlinkError> {
        let mut conf = InetDevConf::default();
        conf.promote_secondaries = 1;
        let mut m = LinkMessage::default();
        m.header.index = ifindex;
        m.attributes
            .push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet(vec![AfSpecInet::DevConfRequest(conf)])]));
        let msg = RouteNetlinkMessage::SetLink(m);
        self.request("set promote_secondaries", &|| format!("dev #{ifindex}"), msg, 0).map(|_| ())
    }

    /// The interface's promote_secondaries as the kernel reports it (IFLA_INET_CONF in a link
    /// dump); `None` when the kernel's answer has no AF_INET devconf.
    pub fn promote_secondaries(&mut self, ifindex: u32) -> Result<Option<bool>, NetlinkError> {
        let all = self.request(
            "get link",
            &|| format!("dev #{ifindex}"),
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            NLM_F_DUMP,
        )?;
        for m in all {
            let RouteNetlinkMessage::NewLink(l) = m else { continue };
            if l.header.index != ifindex {
                continue;
            }
            for a in &l.attributes {
                let LinkAttribute::AfSpecUnspec(specs) = a else { continue };
                for spec in specs {
                    let AfSpecUnspec::Inet(inet) = spec else { continue };
                    for i in inet {
                        if let AfSpecInet::DevConf(c) = i {
                            return Ok(Some(c.promote_secondaries != 0));
                        }
                    }
                }
            }
            return Ok(None);
        }
        Err(NetlinkError { op: "get link", object: format!("dev #{ifindex}"), errno: libc::ENODEV })
    }

    fn neigh_msg(ifindex: u32, ip: Ipv4Addr, mac: Option<Mac>) -> NeighbourMessage {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.ifindex = ifindex;
        m.header.state = NeighbourState::Permanent;
        m.header.kind = RouteType::Unicast;
        m.attributes.push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
        if let Some(mac) = mac {
            m.attributes.push(NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()));
        }
        m
    }

    /// Pins `ip` to `mac` as a permanent neighbour entry (replacing whatever is there).
    pub fn pin(&mut self, ifindex: u32, ip: Ipv4Addr, mac: Mac) -> Result<(), NetlinkError> {
        let msg = RouteNetlinkMessage::NewNeighbour(Self::neigh_msg(ifindex, ip, Some(mac)));
        self.request("pin", &|| format!("{ip} lladdr {mac} dev #{ifindex}"), msg, NLM_F_CREATE | NLM_F_REPLACE)
            .map(|_| ())
    }

    /// Removes the entry for `ip`; an entry that is already gone is success.
    pub fn unpin(&mut self, ifindex: u32, ip: Ipv4Addr) -> Result<(), NetlinkError> {
        let msg = RouteNetlinkMessage::DelNeighbour(Self::neigh_msg(ifindex, ip, None));
        match self.request("unpin", &|| format!("{ip} dev #{ifindex}"), msg, 0) {
            Err(e) if e.errno == libc::ENOENT => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// The kernel's entry for `ip` on `ifindex`: its MAC and state.
    pub fn neighbour(
        &mut self,
        ifindex: u32,
        ip: Ipv4Addr,
    ) -> Result<Option<(Option<Mac>, NeighbourState)>, NetlinkError> {
        let mut q = NeighbourMessage::default();
        q.header.family = AddressFamily::Inet;
        let all = self.request(
            "get neighbours",
            &|| format!("dev #{ifindex}"),
            RouteNetlinkMessage::GetNeighbour(q),
            NLM_F_DUMP,
        )?;
        for m in all {
            if let RouteNetlinkMessage::NewNeighbour(n) = m {
                if n.header.ifindex != ifindex || neighbour_ip(&n) != Some(ip) {
                    continue;
                }
                let mac = n.attributes.iter().find_map(|a| match a {
                    NeighbourAttribute::LinkLayerAddress(b) => Mac::from_slice(b),
                    _ => None,
                });
                return Ok(Some((mac, n.header.state)));
            }
        }
        Ok(None)
    }

    fn addr_msg(ifindex: u32, cidr: Cidr) -> AddressMessage {
        let mut m = AddressMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.prefix_len = cidr.prefix;
        m.header.index = ifindex;
        m.attributes.push(AddressAttribute::Local(IpAddr::V4(cidr.addr)));
        m.attributes.push(AddressAttribute::Address(IpAddr::V4(cidr.addr)));
        if cidr.prefix < 31 {
            m.attributes.push(AddressAttribute::Broadcast(cidr.broadcast()));
        }
        m
    }

    pub fn add_address(&mut self, ifindex: u32, cidr: Cidr) -> Result<(), NetlinkError> {
        let msg = RouteNetlinkMessage::NewAddress(Self::addr_msg(ifindex, cidr));
        match self.request("add address", &|| format!("{cidr} dev #{ifindex}"), msg, NLM_F_CREATE | NLM_F_EXCL) {
            Err(e) if e.errno == libc::EEXIST => Ok(()),
            other => other.map(|_| ()),
        }
    }

    pub fn del_address(&mut self, ifindex: u32, cidr: Cidr) -> Result<(), NetlinkError> {
        let msg = RouteNetlinkMessage::DelAddress(Self::addr_msg(ifindex, cidr));
        match self.request("del address", &|| format!("{cidr} dev #{ifindex}"), msg, 0) {
            Err(e) if e.errno == libc::EADDRNOTAVAIL => Ok(()),
            other => other.map(|_| ()),
        }
    }

    pub fn addresses(&mut self, ifindex: u32) -> Result<Vec<Cidr>, NetlinkError> {
        let mut q = AddressMessage::default();
        q.header.family = AddressFamily::Inet;
        let all = self.request(
            "get addresses",
            &|| format!("dev #{ifindex}"),
            RouteNetlinkMessage::GetAddress(q),
            NLM_F_DUMP,
        )?;
        let mut out = Vec::new();
        for m in all {
            if let RouteNetlinkMessage::NewAddress(a) = m {
                if a.header.index != ifindex {
                    continue;
                }
                for attr in &a.attributes {
                    if let AddressAttribute::Local(IpAddr::V4(ip)) = attr {
                        out.push(Cidr::new(*ip, a.header.prefix_len));
                    }
                }
            }
        }
        Ok(out)
    }
}

impl Netlink {
    fn default_route_msg(ifindex: u32, gateway: Ipv4Addr) -> RouteMessage {
        let mut m = RouteMessage::default();
        m.header.address_family = AddressFamily::Inet;
        m.header.destination_prefix_length = 0;
        m.header.table = RouteHeader::RT_TABLE_MAIN;
        m.header.protocol = RouteProtocol::Boot;
        m.header.scope = RouteScope::Universe;
        m.header.kind = RouteType::Unicast;
        m.attributes.push(RouteAttribute::Gateway(RouteAddress::Inet(gateway)));
        m.attributes.push(RouteAttribute::Oif(ifindex));
        m
    }

    /// Sets the default route via `gateway` on `ifindex` (replacing any other default).
    pub fn set_default_route(&mut self, ifindex: u32, gateway: Ipv4Addr) -> Result<(), NetlinkError> {
        let msg = RouteNetlinkMessage::NewRoute(Self::default_route_msg(ifindex, gateway));
        self.request(
            "set default route",
            &|| format!("via {gateway} dev #{ifindex}"),
            msg,
            NLM_F_CREATE | NLM_F_REPLACE,
        )
        .map(|_| ())
    }

    /// Removes that default route; one that is already gone is success.
    pub fn del_default_route(&mut self, ifindex: u32, gateway: Ipv4Addr) -> Result<(), NetlinkError> {
        let msg = RouteNetlinkMessage::DelRoute(Self::default_route_msg(ifindex, gateway));
        match self.request("del default route", &|| format!("via {gateway} dev #{ifindex}"), msg, 0) {
            Err(e) if e.errno == libc::ESRCH => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// The gateway of the main table's IPv4 default route, if any.
    pub fn default_gateway(&mut self) -> Result<Option<Ipv4Addr>, NetlinkError> {
        let mut q = RouteMessage::default();
        q.header.address_family = AddressFamily::Inet;
        let all = self.request("get routes", &|| "main".to_string(), RouteNetlinkMessage::GetRoute(q), NLM_F_DUMP)?;
        Ok(all.into_iter().find_map(|m| match m {
            RouteNetlinkMessage::NewRoute(r)
                if r.header.destination_prefix_length == 0 && r.header.table == RouteHeader::RT_TABLE_MAIN =>
            {
                r.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Gateway(RouteAddress::Inet(g)) => Some(*g),
                    _ => None,
                })
            }
            _ => None,
        }))
    }
}

pub fn neighbour_ip(n: &NeighbourMessage) -> Option<Ipv4Addr> {
    n.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
        _ => None,
    })
}

/// A socket subscribed to IPv4 address changes (RTMGRP_IPV4_IFADDR), for `announce --watch`.
pub fn address_monitor() -> std::io::Result<Socket> {
    let mut sock = Socket::new(NETLINK_ROUTE)?;
    sock.bind(&SocketAddr::new(0, libc::RTMGRP_IPV4_IFADDR as u32))?;
    Ok(sock)
}

/// Receives one datagram of multicast notifications and returns its route messages.
fn recv_notifications(sock: &Socket, buf: &mut Vec<u8>) -> std::io::Result<Vec<RouteNetlinkMessage>> {
    if buf.len() < 64 * 1024 {
        buf.resize(64 * 1024, 0);
    }
    let n = sock.recv(&mut &mut buf[..], 0)?;
    let mut out = Vec::new();
    let mut off = 0;
    while off < n {
        let Ok(msg) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[off..n]) else { break };
        let len = msg.header.length as usize;
        if let NetlinkPayload::InnerMessage(m) = msg.payload {
            out.push(m);
        }
        if len == 0 {
            break;
        }
        off += (len + 3) & !3;
    }
    Ok(out)
}

/// An IPv4 address appeared on (`true`) or left (`false`) the interface.
pub fn next_address_events(sock: &Socket, ifindex: u32, buf: &mut Vec<u8>) -> std::io::Result<Vec<(bool, Cidr)>> {
    let mut out = Vec::new();
    for m in recv_notifications(sock, buf)? {
        let (added, a) = match m {
            RouteNetlinkMessage::NewAddress(a) => (true, a),
            RouteNetlinkMessage::DelAddress(a) => (false, a),
            _ => continue,
        };
        if a.header.index != ifindex {
            continue;
        }
        for attr in &a.attributes {
            if let AddressAttribute::Local(IpAddr::V4(ip)) = attr {
                out.push((added, Cidr::new(*ip, a.header.prefix_len)));
            }
        }
    }
    Ok(out)
}

/// What the monitor reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A neighbour entry on our interface was deleted (or lost its permanence).
    NeighbourGone(Ipv4Addr),
    /// Our interface came (back) up.
    LinkUp,
    LinkDown,
}

/// Blocks for the next batch of events on `ifindex` from a [`Netlink::monitor`] socket.
pub fn next_events(sock: &Socket, ifindex: u32, buf: &mut Vec<u8>) -> std::io::Result<Vec<Event>> {
    let mut out = Vec::new();
    for m in recv_notifications(sock, buf)? {
        match m {
            RouteNetlinkMessage::DelNeighbour(nm) if nm.header.ifindex == ifindex => {
                if let Some(ip) = neighbour_ip(&nm) {
                    out.push(Event::NeighbourGone(ip));
                }
            }
            RouteNetlinkMessage::NewNeighbour(nm)
                if nm.header.ifindex == ifindex && nm.header.state != NeighbourState::Permanent =>
            {
                // Someone replaced our pin with a dynamic entry.
                if let Some(ip) = neighbour_ip(&nm) {
                    out.push(Event::NeighbourGone(ip));
                }
            }
            RouteNetlinkMessage::NewLink(l) if l.header.index == ifindex => {
                out.push(if l.header.flags.contains(LinkFlags::Up) { Event::LinkUp } else { Event::LinkDown });
            }
            _ => {}
        }
    }
    Ok(out)
}
