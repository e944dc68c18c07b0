//! DHCPv4 (RFC 2131/2132): a checked zero-copy view, a borrowed options iterator that honours
//! option overload (52), and a `Repr` with `parse`/`emit` for every message type we meet,
//! FORCERENEW (RFC 3203, type 9) included.
//!
//! Contract: [`Packet::new_checked`] proves the fixed header (240 bytes with the magic cookie)
//! and `hlen ≤ 16` before any field is read. The options iterator proves each option's length
//! against its region before yielding it, and it is the only option walker: [`Repr::parse`]
//! reads through it, so what the fuzz target and the properties drive is the parser's own walk.
//! pnet_packet's DHCP view is never used: it panics on buffers shorter than its fixed header.

use super::auth::{self, AuthRepr};
use super::bytes::{be16, be32, byte, ipv4_at, put, BufferTooSmall, Mac};
use std::net::Ipv4Addr;

mod field {
    use crate::wire::bytes::Field;
    pub const OP: usize = 0;
    pub const HTYPE: usize = 1;
    pub const HLEN: usize = 2;
    pub const HOPS: usize = 3;
    pub const XID: Field = 4..8;
    pub const SECS: Field = 8..10;
    pub const FLAGS: Field = 10..12;
    pub const CIADDR: Field = 12..16;
    pub const YIADDR: Field = 16..20;
    pub const SIADDR: Field = 20..24;
    pub const GIADDR: Field = 24..28;
    pub const CHADDR: Field = 28..44;
    pub const SNAME: Field = 44..108;
    pub const FILE: Field = 108..236;
    pub const MAGIC: Field = 236..240;
    pub const OPTIONS: usize = 240;
}

pub const MAGIC_COOKIE: u32 = 0x6382_5363;
pub const SERVER_PORT: u16 = 67;
pub const CLIENT_PORT: u16 = 68;
/// RFC 951's minimum BOOTP message; many servers drop anything shorter.
pub const MIN_MESSAGE_LEN: usize = 300;
const FLAG_BROADCAST: u16 = 0x8000;

pub mod opt {
    pub const PAD: u8 = 0;
    pub const SUBNET_MASK: u8 = 1;
    pub const ROUTER: u8 = 3;
    pub const DNS: u8 = 6;
    pub const HOSTNAME: u8 = 12;
    pub const VENDOR: u8 = 43;
    pub const REQUESTED_IP: u8 = 50;
    pub const LEASE_TIME: u8 = 51;
    pub const OVERLOAD: u8 = 52;
    pub const MESSAGE_TYPE: u8 = 53;
    pub const SERVER_ID: u8 = 54;
    pub const PARAMETER_REQUEST_LIST: u8 = 55;
    pub const MESSAGE: u8 = 56;
    pub const MAX_SIZE: u8 = 57;
    pub const RENEWAL_TIME: u8 = 58;
    pub const REBINDING_TIME: u8 = 59;
    pub const CLIENT_ID: u8 = 61;
    pub const AUTH: u8 = super::auth::OPTION_AUTH;
    pub const FORCERENEW_NONCE_CAPABLE: u8 = 145;
    pub const END: u8 = 255;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    Truncated(usize),
    Hlen(u8),
    MagicCookie(u32),
    OptionOverrun {
        code: u8,
    },
    /// An option whose length is wrong for its code (e.g. a 3-byte lease time).
    OptionLength {
        code: u8,
        len: u8,
    },
    Overload(u8),
    MessageType,
    Op(u8),
}

impl Error {
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Truncated(_) => "dhcp_truncated",
            Error::Hlen(_) => "dhcp_hlen",
            Error::MagicCookie(_) => "dhcp_magic_cookie",
            Error::OptionOverrun { .. } => "dhcp_option_overrun",
            Error::OptionLength { .. } => "dhcp_option_length",
            Error::Overload(_) => "dhcp_overload",
            Error::MessageType => "dhcp_message_type",
            Error::Op(_) => "dhcp_op",
        }
    }
}

/// Why [`Repr::emit`] wrote nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EmitError {
    /// The message would not parse: the error [`Repr::parse`] would report for it.
    Invalid(Error),
    /// An option value longer than its one-byte length can say.
    OptionTooLong {
        code: u8,
        len: usize,
    },
    /// The cloud server's option code is one the option framing reserves (0, 52, 255).
    CloudServerCode(u8),
    Buffer(BufferTooSmall),
}

impl From<BufferTooSmall> for EmitError {
    fn from(e: BufferTooSmall) -> EmitError {
        EmitError::Buffer(e)
    }
}

impl core::fmt::Display for EmitError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            EmitError::Invalid(e) => write!(f, "message would not parse: {}", e.reason()),
            EmitError::OptionTooLong { code, len } => write!(f, "option {code}: {len} bytes (max 255)"),
            EmitError::CloudServerCode(c) => write!(f, "option code {c} cannot carry the cloud server"),
            EmitError::Buffer(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for EmitError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MessageType {
    Discover,
    Offer,
    Request,
    Decline,
    Ack,
    Nak,
    Release,
    Inform,
    ForceRenew,
    Unknown(u8),
}

impl From<u8> for MessageType {
    fn from(v: u8) -> Self {
        match v {
            1 => MessageType::Discover,
            2 => MessageType::Offer,
            3 => MessageType::Request,
            4 => MessageType::Decline,
            5 => MessageType::Ack,
            6 => MessageType::Nak,
            7 => MessageType::Release,
            8 => MessageType::Inform,
            9 => MessageType::ForceRenew,
            other => MessageType::Unknown(other),
        }
    }
}

impl From<MessageType> for u8 {
    fn from(v: MessageType) -> u8 {
        match v {
            MessageType::Discover => 1,
            MessageType::Offer => 2,
            MessageType::Request => 3,
            MessageType::Decline => 4,
            MessageType::Ack => 5,
            MessageType::Nak => 6,
            MessageType::Release => 7,
            MessageType::Inform => 8,
            MessageType::ForceRenew => 9,
            MessageType::Unknown(o) => o,
        }
    }
}

impl MessageType {
    /// The BOOTP op a well-formed message of this type carries.
    pub fn op(self) -> u8 {
        match self {
            MessageType::Offer | MessageType::Ack | MessageType::Nak | MessageType::ForceRenew => 2,
            _ => 1,
        }
    }
}

/// A checked view over a DHCPv4 message (the UDP payload).
#[derive(Debug, Clone, Copy)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<Packet<T>, Error> {
        let p = Packet::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    pub fn check_len(&self) -> Result<(), Error> {
        let b = self.buffer.as_ref();
        if b.len() < field::OPTIONS {
            return Err(Error::Truncated(b.len()));
        }
        let hlen = byte(b, field::HLEN);
        if hlen > 16 {
            return Err(Error::Hlen(hlen));
        }
        let magic = be32(b, field::MAGIC);
        if magic != MAGIC_COOKIE {
            return Err(Error::MagicCookie(magic));
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }
    pub fn op(&self) -> u8 {
        byte(self.buffer.as_ref(), field::OP)
    }
    pub fn htype(&self) -> u8 {
        byte(self.buffer.as_ref(), field::HTYPE)
    }
    pub fn hlen(&self) -> u8 {
        byte(self.buffer.as_ref(), field::HLEN)
    }
    pub fn hops(&self) -> u8 {
        byte(self.buffer.as_ref(), field::HOPS)
    }
    pub fn xid(&self) -> u32 {
        be32(self.buffer.as_ref(), field::XID)
    }
    pub fn secs(&self) -> u16 {
        be16(self.buffer.as_ref(), field::SECS)
    }
    pub fn flags(&self) -> u16 {
        be16(self.buffer.as_ref(), field::FLAGS)
    }
    pub fn ciaddr(&self) -> Ipv4Addr {
        ipv4_at(self.buffer.as_ref(), field::CIADDR)
    }
    pub fn yiaddr(&self) -> Ipv4Addr {
        ipv4_at(self.buffer.as_ref(), field::YIADDR)
    }
    pub fn siaddr(&self) -> Ipv4Addr {
        ipv4_at(self.buffer.as_ref(), field::SIADDR)
    }
    pub fn giaddr(&self) -> Ipv4Addr {
        ipv4_at(self.buffer.as_ref(), field::GIADDR)
    }
    /// The hardware address, `hlen` bytes of it (checked ≤ 16).
    pub fn chaddr(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        let n = usize::from(self.hlen()).min(16);
        b.get(field::CHADDR.start..field::CHADDR.start + n).unwrap_or(&[])
    }
    pub fn options(&self) -> Options<'_> {
        Options::new(self.buffer.as_ref())
    }
}

/// Iterates options across the main area and, when option 52 says so, the `file` and `sname`
/// fields (RFC 2132 §9.3: main first, then file, then sname). Borrowed, never allocating.
///
/// This is the only option walker: [`Repr::parse`] reads every option through it, so the fuzz
/// target and the properties that drive `options()` test the parser's own walk.
///
/// PAD is skipped and END closes a region. An option whose length byte or value runs past its
/// region is [`Error::OptionOverrun`]; option 52 in the main area must be one byte 1..=3, else
/// [`Error::Overload`]. After an error the iterator is finished.
#[derive(Debug, Clone)]
pub struct Options<'a> {
    buf: &'a [u8],
    /// What is left of the current region.
    rest: &'a [u8],
    /// Absolute offset of `rest[0]` in the message.
    offset: usize,
    region: Region,
    overload: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Region {
    Main,
    File,
    Sname,
    Done,
}

/// One option: its code, its value, and the value's absolute offset in the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DhcpOption<'a> {
    pub code: u8,
    pub data: &'a [u8],
    pub offset: usize,
}

impl<'a> Options<'a> {
    fn new(buf: &'a [u8]) -> Options<'a> {
        // Shorter than the fixed header (an unchecked view): no main area, and no option 52 to
        // open the others.
        let rest = buf.get(field::OPTIONS..).unwrap_or(&[]);
        Options { buf, rest, offset: field::OPTIONS, region: Region::Main, overload: 0 }
    }

    /// Moves to the next region option 52 asked for; false when there is none.
    fn next_region(&mut self) -> bool {
        let (region, range) = match self.region {
            Region::Main if self.overload & 1 != 0 => (Region::File, field::FILE),
            Region::Main | Region::File if self.overload & 2 != 0 => (Region::Sname, field::SNAME),
            _ => {
                self.finish();
                return false;
            }
        };
        self.region = region;
        self.offset = range.start;
        self.rest = self.buf.get(range).unwrap_or(&[]);
        true
    }

    fn finish(&mut self) {
        self.region = Region::Done;
        self.rest = &[];
    }

    fn fail(&mut self, e: Error) -> Option<Result<DhcpOption<'a>, Error>> {
        self.finish();
        Some(Err(e))
    }
}

impl<'a> Iterator for Options<'a> {
    type Item = Result<DhcpOption<'a>, Error>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match *self.rest {
                [] | [opt::END, ..] => {
                    if !self.next_region() {
                        return None;
                    }
                }
                [opt::PAD, ref tail @ ..] => {
                    self.rest = tail;
                    self.offset += 1;
                }
                [code] => return self.fail(Error::OptionOverrun { code }),
                [code, len, ref tail @ ..] => {
                    let Some((data, tail)) = tail.split_at_checked(usize::from(len)) else {
                        return self.fail(Error::OptionOverrun { code });
                    };
                    let offset = self.offset + 2;
                    self.rest = tail;
                    self.offset = offset + data.len();
                    if code == opt::OVERLOAD && self.region == Region::Main {
                        match *data {
                            [v @ 1..=3] => self.overload = v,
                            _ => return self.fail(Error::Overload(data.first().copied().unwrap_or(0))),
                        }
                    }
                    return Some(Ok(DhcpOption { code, data, offset }));
                }
            }
        }
    }
}

impl core::iter::FusedIterator for Options<'_> {}

/// Where the cloud server's address was found, so `emit` writes it back the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerForm {
    /// Four bytes in the configured option.
    Binary,
    /// A dotted-quad string in the configured option (IGEL style).
    Dotted,
    /// Option 43, sub-option with the configured code, four bytes.
    Vendor,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloudServer {
    pub code: u8,
    pub addr: Ipv4Addr,
    pub form: ServerForm,
}

/// The high-level form of a DHCP message. Slices borrow from the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr<'a> {
    pub message_type: MessageType,
    pub op: u8,
    pub htype: u8,
    pub hops: u8,
    pub xid: u32,
    pub secs: u16,
    pub broadcast: bool,
    pub ciaddr: Ipv4Addr,
    pub yiaddr: Ipv4Addr,
    pub siaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    /// The first `hlen` bytes of chaddr; a MAC when `htype = 1, hlen = 6`.
    pub chaddr: &'a [u8],
    pub client_identifier: Option<&'a [u8]>,
    pub server_identifier: Option<Ipv4Addr>,
    pub requested_ip: Option<Ipv4Addr>,
    pub lease_time: Option<u32>,
    pub renewal_time: Option<u32>,
    pub rebinding_time: Option<u32>,
    pub subnet_mask: Option<Ipv4Addr>,
    pub router: Option<Ipv4Addr>,
    /// Option 6, a multiple of four bytes.
    pub dns_servers: Option<&'a [u8]>,
    pub parameter_request_list: Option<&'a [u8]>,
    pub max_size: Option<u16>,
    pub forcerenew_nonce_capable: bool,
    pub cloud_server: Option<CloudServer>,
    pub auth: Option<AuthRepr>,
    /// Absolute offset of option 90's value in the message (for the MAC digest).
    pub auth_offset: Option<usize>,
    /// Option 90 was present but not a scheme we implement, or too short.
    pub auth_invalid: bool,
}

fn ip4(code: u8, d: &[u8]) -> Result<Ipv4Addr, Error> {
    match d {
        [a, b, c, e] => Ok(Ipv4Addr::new(*a, *b, *c, *e)),
        // Router and similar lists: the first address is the one we use.
        [a, b, c, e, ..] if d.len() % 4 == 0 && (code == opt::ROUTER) => Ok(Ipv4Addr::new(*a, *b, *c, *e)),
        _ => Err(Error::OptionLength { code, len: d.len() as u8 }),
    }
}

fn u32_opt(code: u8, d: &[u8]) -> Result<u32, Error> {
    match d {
        [a, b, c, e] => Ok(u32::from_be_bytes([*a, *b, *c, *e])),
        _ => Err(Error::OptionLength { code, len: d.len() as u8 }),
    }
}

/// Reads the cloud-server address from the configured option: four bytes, or a dotted string
/// such as IGEL's. Anything else means "not given".
fn cloud_server_from(code: u8, d: &[u8]) -> Option<CloudServer> {
    if let [a, b, c, e] = d {
        return Some(CloudServer { code, addr: Ipv4Addr::new(*a, *b, *c, *e), form: ServerForm::Binary });
    }
    if d.len() > 15 + 1 {
        return None;
    }
    let s = core::str::from_utf8(d).ok()?.trim_end_matches('\0').trim();
    let addr = s.parse::<Ipv4Addr>().ok()?;
    Some(CloudServer { code, addr, form: ServerForm::Dotted })
}

fn vendor_sub_option(code: u8, d: &[u8]) -> Option<CloudServer> {
    let mut rest = d;
    while let [sub, len, tail @ ..] = rest {
        let (v, tail) = tail.split_at_checked(usize::from(*len))?;
        if *sub == code {
            if let [a, b, c, e] = v {
                return Some(CloudServer { code, addr: Ipv4Addr::new(*a, *b, *c, *e), form: ServerForm::Vendor });
            }
            return None;
        }
        rest = tail;
    }
    None
}

/// What [`Repr::parse`] has gathered so far from the options.
struct Fields<'a> {
    r: Repr<'a>,
    have_type: bool,
    vendor: Option<&'a [u8]>,
    server_option: u8,
}

impl<'a> Fields<'a> {
    /// One option's rules: the first of each code counts (except 145, a flag), with the length
    /// its code requires. Kept out of line so that the walk loop in `parse` stays small: inlined,
    /// the decode bench measured the whole descent about 15 ns per frame slower.
    #[inline(never)]
    fn take(&mut self, o: DhcpOption<'a>) -> Result<(), Error> {
        let DhcpOption { code, data: d, offset } = o;
        let r = &mut self.r;
        match code {
            opt::MESSAGE_TYPE if !self.have_type => match d {
                [t] => {
                    r.message_type = MessageType::from(*t);
                    self.have_type = true;
                }
                _ => return Err(Error::OptionLength { code, len: d.len() as u8 }),
            },
            opt::CLIENT_ID if r.client_identifier.is_none() => r.client_identifier = Some(d),
            opt::SERVER_ID if r.server_identifier.is_none() => r.server_identifier = Some(ip4(code, d)?),
            opt::REQUESTED_IP if r.requested_ip.is_none() => r.requested_ip = Some(ip4(code, d)?),
            opt::LEASE_TIME if r.lease_time.is_none() => r.lease_time = Some(u32_opt(code, d)?),
            opt::RENEWAL_TIME if r.renewal_time.is_none() => r.renewal_time = Some(u32_opt(code, d)?),
            opt::REBINDING_TIME if r.rebinding_time.is_none() => r.rebinding_time = Some(u32_opt(code, d)?),
            opt::SUBNET_MASK if r.subnet_mask.is_none() => r.subnet_mask = Some(ip4(code, d)?),
            opt::ROUTER if r.router.is_none() => r.router = Some(ip4(code, d)?),
            opt::DNS if r.dns_servers.is_none() => {
                if d.is_empty() || d.len() % 4 != 0 {
                    return Err(Error::OptionLength { code, len: d.len() as u8 });
                }
                r.dns_servers = Some(d)
            }
            opt::PARAMETER_REQUEST_LIST if r.parameter_request_list.is_none() => r.parameter_request_list = Some(d),
            opt::MAX_SIZE if r.max_size.is_none() => match d {
                [a, c] => r.max_size = Some(u16::from_be_bytes([*a, *c])),
                _ => return Err(Error::OptionLength { code, len: d.len() as u8 }),
            },
            opt::FORCERENEW_NONCE_CAPABLE => r.forcerenew_nonce_capable = true,
            opt::AUTH if r.auth.is_none() && !r.auth_invalid => match AuthRepr::parse(d) {
                Ok(a) => {
                    r.auth = Some(a);
                    r.auth_offset = Some(offset);
                }
                // Kept apart from "malformed": an unusable option 90 is an authentication
                // failure, which the engine reports as `unauthenticated`.
                Err(_) => r.auth_invalid = true,
            },
            opt::VENDOR if self.vendor.is_none() => self.vendor = Some(d),
            c if c == self.server_option && self.server_option != 0 && r.cloud_server.is_none() => {
                r.cloud_server = cloud_server_from(c, d);
            }
            _ => {}
        }
        Ok(())
    }
}

impl<'a> Repr<'a> {
    /// A message of type `t` from or to `chaddr` (Ethernet), with every address zero and no
    /// option but 53. Callers set what they need with struct update syntax.
    pub fn new(t: MessageType, xid: u32, chaddr: &'a [u8]) -> Repr<'a> {
        Repr {
            message_type: t,
            op: t.op(),
            htype: 1,
            hops: 0,
            xid,
            secs: 0,
            broadcast: false,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            siaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            chaddr,
            client_identifier: None,
            server_identifier: None,
            requested_ip: None,
            lease_time: None,
            renewal_time: None,
            rebinding_time: None,
            subnet_mask: None,
            router: None,
            dns_servers: None,
            parameter_request_list: None,
            max_size: None,
            forcerenew_nonce_capable: false,
            cloud_server: None,
            auth: None,
            auth_offset: None,
            auth_invalid: false,
        }
    }

    /// `server_option` is `[server] dhcp_option` (0: the cloud server is option 54's address, and
    /// no option is scanned for it).
    pub fn parse(packet: &Packet<&'a [u8]>, server_option: u8) -> Result<Repr<'a>, Error> {
        let b: &'a [u8] = packet.buffer;
        let p = Packet::new_checked(b)?;
        let op = p.op();
        if op != 1 && op != 2 {
            return Err(Error::Op(op));
        }
        let r = Repr {
            op,
            htype: p.htype(),
            hops: p.hops(),
            secs: p.secs(),
            broadcast: p.flags() & FLAG_BROADCAST != 0,
            ciaddr: p.ciaddr(),
            yiaddr: p.yiaddr(),
            siaddr: p.siaddr(),
            giaddr: p.giaddr(),
            ..Repr::new(MessageType::Unknown(0), p.xid(), {
                let n = usize::from(p.hlen()).min(16);
                b.get(field::CHADDR.start..field::CHADDR.start + n).unwrap_or(&[])
            })
        };
        let mut f = Fields { r, have_type: false, vendor: None, server_option };
        // The one walker (main, then file and sname when option 52 says so) finds the options
        // and reports the structural errors; `Fields::take` applies the per-option rules.
        // `Options::new(b)` is `p.options()` with the message's own lifetime, so values borrow
        // from the message rather than from `p`.
        for o in Options::new(b) {
            f.take(o?)?;
        }
        let Fields { mut r, have_type, vendor, .. } = f;
        if !have_type {
            return Err(Error::MessageType);
        }
        if r.cloud_server.is_none() && server_option != 0 {
            r.cloud_server = vendor.and_then(|v| vendor_sub_option(server_option, v));
        }
        Ok(r)
    }

    /// chaddr as a MAC when the hardware type is Ethernet.
    pub fn client_mac(&self) -> Option<Mac> {
        if self.htype == 1 && self.chaddr.len() == 6 {
            Mac::from_slice(self.chaddr)
        } else {
            None
        }
    }

    fn options_len(&self) -> usize {
        let mut n = 3; // message type
        let ip = 6;
        n += self.client_identifier.map_or(0, |c| 2 + c.len());
        n += [self.requested_ip, self.server_identifier, self.subnet_mask, self.router].iter().flatten().count() * ip;
        n += [self.lease_time, self.renewal_time, self.rebinding_time].iter().flatten().count() * 6;
        n += self.dns_servers.map_or(0, |d| 2 + d.len());
        n += self.parameter_request_list.map_or(0, |d| 2 + d.len());
        n += self.max_size.map_or(0, |_| 4);
        n += if self.forcerenew_nonce_capable { 3 } else { 0 };
        n += self.cloud_server.map_or(0, |c| match c.form {
            ServerForm::Binary => 6,
            ServerForm::Dotted => 2 + dotted_len(c.addr),
            ServerForm::Vendor => 8,
        });
        n += self.auth.map_or(0, |a| 2 + a.buffer_len());
        n + 1 // end
    }

    pub fn buffer_len(&self) -> usize {
        (field::OPTIONS + self.options_len()).max(MIN_MESSAGE_LEN)
    }

    /// What would make [`Repr::emit`] write a message that [`Repr::parse`] rejects or reads
    /// differently: parse's own error where it has one.
    pub fn check_emit(&self) -> Result<(), EmitError> {
        if self.op != 1 && self.op != 2 {
            return Err(EmitError::Invalid(Error::Op(self.op)));
        }
        if self.chaddr.len() > 16 {
            return Err(EmitError::Invalid(Error::Hlen(u8::try_from(self.chaddr.len()).unwrap_or(u8::MAX))));
        }
        if let Some(d) = self.dns_servers {
            if d.is_empty() || d.len() % 4 != 0 {
                let len = u8::try_from(d.len()).unwrap_or(u8::MAX);
                return Err(EmitError::Invalid(Error::OptionLength { code: opt::DNS, len }));
            }
        }
        for (code, v) in [
            (opt::CLIENT_ID, self.client_identifier),
            (opt::DNS, self.dns_servers),
            (opt::PARAMETER_REQUEST_LIST, self.parameter_request_list),
        ] {
            if let Some(v) = v.filter(|v| v.len() > usize::from(u8::MAX)) {
                return Err(EmitError::OptionTooLong { code, len: v.len() });
            }
        }
        // As an option code of its own, PAD and END would break the framing and 52 would be
        // read as option overload. (As a vendor sub-option, any code is framed by option 43.)
        if let Some(c) = self.cloud_server.filter(|c| c.form != ServerForm::Vendor) {
            if matches!(c.code, opt::PAD | opt::OVERLOAD | opt::END) {
                return Err(EmitError::CloudServerCode(c.code));
            }
        }
        Ok(())
    }

    /// Writes the message in canonical option order, option 90 last so that its MAC offset is
    /// fixed, then pads with zeros to [`MIN_MESSAGE_LEN`]. Returns the bytes written; writes
    /// nothing for a Repr that [`Repr::check_emit`] refuses.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, EmitError> {
        self.check_emit()?;
        let len = self.buffer_len();
        let buf = buf.get_mut(..len).ok_or(BufferTooSmall)?;
        buf.fill(0);
        let hlen = self.chaddr.len() as u8; // ≤ 16, checked above
        put(buf, field::OP..field::HOPS + 1, &[self.op, self.htype, hlen, self.hops])?;
        put(buf, field::XID, &self.xid.to_be_bytes())?;
        put(buf, field::SECS, &self.secs.to_be_bytes())?;
        put(buf, field::FLAGS, &(if self.broadcast { FLAG_BROADCAST } else { 0 }).to_be_bytes())?;
        put(buf, field::CIADDR, &self.ciaddr.octets())?;
        put(buf, field::YIADDR, &self.yiaddr.octets())?;
        put(buf, field::SIADDR, &self.siaddr.octets())?;
        put(buf, field::GIADDR, &self.giaddr.octets())?;
        put(buf, field::CHADDR.start..field::CHADDR.start + self.chaddr.len(), self.chaddr)?;
        put(buf, field::MAGIC, &MAGIC_COOKIE.to_be_bytes())?;
        let mut w = Writer { buf, pos: field::OPTIONS };
        w.opt(opt::MESSAGE_TYPE, &[u8::from(self.message_type)])?;
        if let Some(c) = self.client_identifier {
            w.opt(opt::CLIENT_ID, c)?;
        }
        if let Some(a) = self.requested_ip {
            w.opt(opt::REQUESTED_IP, &a.octets())?;
        }
        if let Some(a) = self.server_identifier {
            w.opt(opt::SERVER_ID, &a.octets())?;
        }
        if let Some(v) = self.lease_time {
            w.opt(opt::LEASE_TIME, &v.to_be_bytes())?;
        }
        if let Some(v) = self.renewal_time {
            w.opt(opt::RENEWAL_TIME, &v.to_be_bytes())?;
        }
        if let Some(v) = self.rebinding_time {
            w.opt(opt::REBINDING_TIME, &v.to_be_bytes())?;
        }
        if let Some(a) = self.subnet_mask {
            w.opt(opt::SUBNET_MASK, &a.octets())?;
        }
        if let Some(a) = self.router {
            w.opt(opt::ROUTER, &a.octets())?;
        }
        if let Some(d) = self.dns_servers {
            w.opt(opt::DNS, d)?;
        }
        if let Some(d) = self.parameter_request_list {
            w.opt(opt::PARAMETER_REQUEST_LIST, d)?;
        }
        if let Some(v) = self.max_size {
            w.opt(opt::MAX_SIZE, &v.to_be_bytes())?;
        }
        if self.forcerenew_nonce_capable {
            // RFC 6704 §4: the algorithms we can check, here 1 (HMAC-MD5).
            w.opt(opt::FORCERENEW_NONCE_CAPABLE, &[1])?;
        }
        if let Some(c) = self.cloud_server {
            match c.form {
                ServerForm::Binary => w.opt(c.code, &c.addr.octets())?,
                ServerForm::Dotted => {
                    let mut s = [0u8; 15];
                    let n = write_dotted(c.addr, &mut s);
                    w.opt(c.code, &s[..n])?
                }
                ServerForm::Vendor => {
                    let o = c.addr.octets();
                    w.opt(opt::VENDOR, &[c.code, 4, o[0], o[1], o[2], o[3]])?
                }
            }
        }
        if let Some(a) = self.auth {
            let mut v = Vec::with_capacity(a.buffer_len());
            a.emit(&mut v);
            w.opt(opt::AUTH, &v)?;
        }
        let end = w.pos;
        w.buf.get_mut(end).map(|b| *b = opt::END).ok_or(BufferTooSmall)?;
        Ok(len)
    }

    /// The message, or an empty vector when [`Repr::emit`] refuses the Repr.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = vec![0; self.buffer_len()];
        // buffer_len sized the buffer, so emit cannot run short.
        let n = self.emit(&mut v).unwrap_or(0);
        v.truncate(n);
        v
    }

    /// The absolute range of the MAC bytes inside an emitted or received message.
    pub fn auth_mac_range(&self) -> Option<core::ops::Range<usize>> {
        let off = self.auth_offset? + self.auth?.mac_offset()?;
        Some(off..off + 16)
    }
}

fn dotted_len(a: Ipv4Addr) -> usize {
    let mut s = [0u8; 15];
    write_dotted(a, &mut s)
}

fn write_dotted(a: Ipv4Addr, out: &mut [u8; 15]) -> usize {
    use std::io::Write;
    let mut c = std::io::Cursor::new(&mut out[..]);
    let _ = write!(c, "{a}");
    c.position() as usize
}

struct Writer<'b> {
    buf: &'b mut [u8],
    pos: usize,
}

impl Writer<'_> {
    fn opt(&mut self, code: u8, data: &[u8]) -> Result<(), BufferTooSmall> {
        let len = u8::try_from(data.len()).map_err(|_| BufferTooSmall)?;
        put(self.buf, self.pos..self.pos + 2, &[code, len])?;
        put(self.buf, self.pos + 2..self.pos + 2 + data.len(), data)?;
        self.pos += 2 + data.len();
        Ok(())
    }
}

/// Finds option 90 in an emitted message and fills in its MAC: HMAC-MD5 over the message with
/// hops, giaddr and the MAC zeroed (RFC 3118 §4 for delayed auth, §5 for the reconfigure key).
pub fn sign(msg: &mut [u8], key: &[u8], server_option: u8) -> bool {
    let range = {
        let p = Packet::new_unchecked(&*msg);
        match Repr::parse(&p, server_option) {
            Ok(r) => r.auth_mac_range(),
            Err(_) => None,
        }
    };
    let Some(range) = range else { return false };
    let mac = auth::dhcp_hmac_md5(key, msg, range.clone());
    match msg.get_mut(range) {
        Some(d) => {
            d.copy_from_slice(&mac);
            true
        }
        None => false,
    }
}

/// Checks option 90's MAC of a received message in constant time.
pub fn verify(msg: &[u8], repr: &Repr<'_>, key: &[u8]) -> bool {
    repr.auth_mac_range().is_some_and(|range| auth::verify_dhcp_mac(key, msg, range))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::auth::Scheme;

    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x10];

    fn forcerenew() -> Repr<'static> {
        Repr {
            server_identifier: Some(Ipv4Addr::new(10, 77, 0, 1)),
            auth: Some(AuthRepr {
                protocol: 1,
                algorithm: 1,
                rdm: 0,
                replay: 5,
                scheme: Scheme::Delayed { secret_id: 1, mac: [0; 16] },
            }),
            ..Repr::new(MessageType::ForceRenew, 0x1234_5678, &MAC)
        }
    }

    // Byte fixture: a FORCERENEW as `forcerenew()` emits it, written out by hand from RFC 2131
    // §2 and RFC 3118 §4 so that emit is checked against an independent layout.
    fn forcerenew_bytes() -> Vec<u8> {
        let mut b = vec![0u8; 300];
        b[..4].copy_from_slice(&[2, 1, 6, 0]);
        b[4..8].copy_from_slice(&[0x12, 0x34, 0x56, 0x78]);
        b[28..34].copy_from_slice(&MAC);
        b[236..240].copy_from_slice(&[99, 130, 83, 99]);
        let opts: &[u8] = &[
            53, 1, 9, //
            54, 4, 10, 77, 0, 1, //
            90, 31, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            0, //
            255,
        ];
        b[240..240 + opts.len()].copy_from_slice(opts);
        b
    }

    #[test]
    fn emit_matches_hand_layout_and_parses_back() {
        let raw = forcerenew_bytes();
        assert_eq!(forcerenew().to_bytes(), raw);
        let p = Packet::new_checked(&raw[..]).unwrap();
        let mut parsed = Repr::parse(&p, 224).unwrap();
        assert_eq!(parsed.auth_offset, Some(251));
        parsed.auth_offset = None;
        assert_eq!(parsed, forcerenew());
    }

    #[test]
    fn sign_then_verify() {
        let mut raw = forcerenew().to_bytes();
        assert!(sign(&mut raw, b"secret", 224));
        let p = Packet::new_checked(&raw[..]).unwrap();
        let r = Repr::parse(&p, 224).unwrap();
        assert!(verify(&raw, &r, b"secret"));
        assert!(!verify(&raw, &r, b"other"));
        let mut relayed = raw.clone();
        relayed[3] = 1; // hops is outside the digest
        let p = Packet::new_checked(&relayed[..]).unwrap();
        assert!(verify(&relayed, &Repr::parse(&p, 224).unwrap(), b"secret"));
    }

    #[test]
    fn header_checks() {
        let raw = forcerenew_bytes();
        assert_eq!(Packet::new_checked(&raw[..239]).unwrap_err(), Error::Truncated(239));
        let mut h = raw.clone();
        h[2] = 17;
        assert_eq!(Packet::new_checked(&h[..]).unwrap_err(), Error::Hlen(17));
        let mut m = raw.clone();
        m[239] = 0;
        assert_eq!(Packet::new_checked(&m[..]).unwrap_err().reason(), "dhcp_magic_cookie");
    }

    #[test]
    fn overrunning_option_is_an_error() {
        let mut raw = forcerenew_bytes();
        raw.truncate(250); // cuts option 90 mid-value
        let p = Packet::new_checked(&raw[..]).unwrap();
        assert_eq!(Repr::parse(&p, 224).unwrap_err().reason(), "dhcp_option_overrun");
    }

    #[test]
    fn overload_reads_file_then_sname() {
        let mut raw = vec![0u8; 260];
        raw[..4].copy_from_slice(&[2, 1, 6, 0]);
        raw[236..240].copy_from_slice(&[99, 130, 83, 99]);
        raw[240..247].copy_from_slice(&[53, 1, 5, 52, 1, 3, 255]);
        raw[108..114].copy_from_slice(&[224, 4, 10, 77, 0, 20]);
        raw[44..50].copy_from_slice(&[51, 4, 0, 0, 0x0e, 0x10]);
        let p = Packet::new_checked(&raw[..]).unwrap();
        let r = Repr::parse(&p, 224).unwrap();
        assert_eq!(r.message_type, MessageType::Ack);
        assert_eq!(r.cloud_server.unwrap().addr, Ipv4Addr::new(10, 77, 0, 20));
        assert_eq!(r.lease_time, Some(3600));
        raw[245] = 7;
        let p = Packet::new_checked(&raw[..]).unwrap();
        assert_eq!(Repr::parse(&p, 224).unwrap_err(), Error::Overload(7));
    }

    /// A 300-byte BOOTREPLY whose main area holds `main`; `file` and `sname` go at the start of
    /// those fields. Offsets in the tests below are absolute, from RFC 2131 §2's layout.
    fn with_regions(main: &[u8], file: &[u8], sname: &[u8]) -> Vec<u8> {
        let mut raw = vec![0u8; 300];
        raw[..4].copy_from_slice(&[2, 1, 6, 0]);
        raw[236..240].copy_from_slice(&[99, 130, 83, 99]);
        raw[240..240 + main.len()].copy_from_slice(main);
        raw[108..108 + file.len()].copy_from_slice(file);
        raw[44..44 + sname.len()].copy_from_slice(sname);
        raw
    }

    /// One walked option as (code, value, value offset).
    type Walked = Result<(u8, Vec<u8>, usize), Error>;

    fn walk(raw: &[u8]) -> Vec<Walked> {
        Packet::new_checked(raw).unwrap().options().map(|o| o.map(|o| (o.code, o.data.to_vec(), o.offset))).collect()
    }

    #[test]
    fn options_walk_main_then_file_then_sname() {
        // PAD skipped, END closes a region, option 52 opens file (1), sname (2) or both (3).
        let raw = with_regions(&[0, 53, 1, 5, 52, 1, 3, 255, 51, 4, 1, 1, 1, 1], &[0, 0, 12, 1, b'f', 255], &[12, 0]);
        let want =
            vec![Ok((53, vec![5], 243)), Ok((52, vec![3], 246)), Ok((12, vec![b'f'], 112)), Ok((12, vec![], 46))];
        assert_eq!(walk(&raw), want);
        let only_sname = with_regions(&[52, 1, 2], &[12, 1, b'f'], &[61, 1, 7]);
        assert_eq!(walk(&only_sname), vec![Ok((52, vec![2], 242)), Ok((61, vec![7], 46))]);
        let only_file = with_regions(&[52, 1, 1], &[61, 1, 7], &[12, 1, b's']);
        assert_eq!(walk(&only_file), vec![Ok((52, vec![1], 242)), Ok((61, vec![7], 110))]);
        // 52 means nothing outside the main area.
        let nested = with_regions(&[52, 1, 1], &[52, 1, 2], &[12, 1, b's']);
        assert_eq!(walk(&nested), vec![Ok((52, vec![1], 242)), Ok((52, vec![2], 110))]);
    }

    #[test]
    fn options_walk_errors_end_the_walk() {
        // A value may not run out of its region, even though the message goes on: the last
        // option of `file` claims 3 bytes where 2 are left before the magic cookie.
        let mut cross = with_regions(&[52, 1, 3], &[], &[]);
        cross[232..236].copy_from_slice(&[12, 3, 1, 1]);
        assert_eq!(walk(&cross), vec![Ok((52, vec![3], 242)), Err(Error::OptionOverrun { code: 12 })]);
        // A code byte with no length byte left in its region.
        let mut lone = with_regions(&[52, 1, 2], &[], &[]);
        lone[107] = 61;
        assert_eq!(walk(&lone), vec![Ok((52, vec![2], 242)), Err(Error::OptionOverrun { code: 61 })]);
        // Option 52 must be one byte, 1..=3.
        for bad in [&[52u8, 1, 0][..], &[52, 1, 4], &[52, 2, 1, 1], &[52, 0]] {
            let raw = with_regions(bad, &[], &[]);
            let first = bad.get(2).copied().unwrap_or(0);
            assert_eq!(walk(&raw), vec![Err(Error::Overload(first))], "{bad:?}");
            let p = Packet::new_checked(&raw[..]).unwrap();
            assert_eq!(Repr::parse(&p, 224).unwrap_err().reason(), "dhcp_overload");
        }
        // The main area ends with the message: an option cut by the end is an overrun, and so is
        // parse's answer, with the reason the goldens use.
        let mut cut = with_regions(&[53, 1, 5], &[], &[]);
        cut.truncate(250);
        cut[243..250].copy_from_slice(&[0, 0, 0, 0, 0, 54, 4]);
        assert_eq!(walk(&cut), vec![Ok((53, vec![5], 242)), Err(Error::OptionOverrun { code: 54 })]);
        let p = Packet::new_checked(&cut[..]).unwrap();
        assert_eq!(Repr::parse(&p, 224).unwrap_err().reason(), "dhcp_option_overrun");
        // Short of a whole header (an unchecked view): nothing to walk.
        assert!(Packet::new_unchecked(&cut[..100]).options().next().is_none());
    }

    #[test]
    fn emit_refuses_what_parse_would_reject_or_misread() {
        // Each of these used to go out: parse then said dhcp_op, dhcp_option_length or
        // dhcp_overload, read a 16-byte chaddr for a 17-byte one, or lost the framing.
        let base = forcerenew();
        let long = [7u8; 17];
        let big = [1u8; 256];
        let server = |code| Some(CloudServer { code, addr: Ipv4Addr::new(10, 77, 0, 20), form: ServerForm::Binary });
        let cases: [(Repr<'_>, EmitError); 9] = [
            (Repr { op: 3, ..base }, EmitError::Invalid(Error::Op(3))),
            (Repr { chaddr: &long, ..base }, EmitError::Invalid(Error::Hlen(17))),
            (Repr { dns_servers: Some(&[]), ..base }, EmitError::Invalid(Error::OptionLength { code: 6, len: 0 })),
            (Repr { dns_servers: Some(&[1; 5]), ..base }, EmitError::Invalid(Error::OptionLength { code: 6, len: 5 })),
            (Repr { client_identifier: Some(&big), ..base }, EmitError::OptionTooLong { code: 61, len: 256 }),
            (Repr { parameter_request_list: Some(&big), ..base }, EmitError::OptionTooLong { code: 55, len: 256 }),
            (Repr { cloud_server: server(0), ..base }, EmitError::CloudServerCode(0)),
            (Repr { cloud_server: server(52), ..base }, EmitError::CloudServerCode(52)),
            (Repr { cloud_server: server(255), ..base }, EmitError::CloudServerCode(255)),
        ];
        for (r, want) in cases {
            let mut buf = [0xaa; 600];
            assert_eq!(r.emit(&mut buf), Err(want));
            assert!(buf.iter().all(|&b| b == 0xaa), "{want:?}: a refused emit writes nothing");
            assert!(r.to_bytes().is_empty());
        }
        // The limits themselves are fine: 16 bytes of chaddr, 255 of an option, 8 of DNS, and
        // any code as a vendor sub-option.
        let vendor = Some(CloudServer { code: 0, addr: Ipv4Addr::new(10, 77, 0, 20), form: ServerForm::Vendor });
        for r in [
            Repr { chaddr: &long[..16], htype: 6, ..base },
            Repr { client_identifier: Some(&big[..255]), ..base },
            Repr { dns_servers: Some(&[8; 8]), ..base },
            Repr { cloud_server: vendor, ..base },
        ] {
            let raw = r.to_bytes();
            // Parsed with server_option 0 (no cloud-server scan): all else comes back as it was.
            let back = Repr::parse(&Packet::new_checked(&raw[..]).unwrap(), 0).unwrap();
            assert_eq!(Repr { auth_offset: None, ..back }, Repr { cloud_server: None, ..r });
        }
    }

    #[test]
    fn cloud_server_forms() {
        assert_eq!(cloud_server_from(224, b"10.77.0.20\0").unwrap().addr, Ipv4Addr::new(10, 77, 0, 20));
        assert_eq!(cloud_server_from(224, &[10, 77, 0, 20]).unwrap().form, ServerForm::Binary);
        assert!(cloud_server_from(224, b"nonsense").is_none());
        let v = vendor_sub_option(224, &[1, 2, 9, 9, 224, 4, 10, 0, 0, 9]).unwrap();
        assert_eq!(v.addr, Ipv4Addr::new(10, 0, 0, 9));
        assert!(vendor_sub_option(224, &[1, 200]).is_none());
        let mut r = forcerenew();
        r.auth = None;
        for form in [ServerForm::Binary, ServerForm::Dotted, ServerForm::Vendor] {
            r.cloud_server = Some(CloudServer { code: 224, addr: Ipv4Addr::new(192, 168, 100, 200), form });
            let raw = r.to_bytes();
            let p = Packet::new_checked(&raw[..]).unwrap();
            assert_eq!(Repr::parse(&p, 224).unwrap().cloud_server, r.cloud_server);
        }
    }
}
