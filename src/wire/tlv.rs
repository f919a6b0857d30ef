//! TLVs and sub-TLVs (RFC 8966 section 4.3, 4.4 and 4.6; RFC 8967 section 4).
//!
//! [`Tlv`] is a zero-copy view of one TLV; [`TlvRepr`] is its lossless
//! high-level form (reserved fields, raw prefix bytes and sub-TLV bytes are
//! kept, so `emit(parse(x)) == x` for every TLV that parses). Meaning — prefix
//! compression, router-id and next-hop state — is applied one level up, in
//! [`super::message`].
//!
//! ```text
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     Type      |    Length     |     Payload...         (Pad1: type 0 only)
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use super::Error;
use super::prefix::RouterId;

/// TLV type numbers.
pub mod kind {
    /// Pad1: a single zero byte, no length.
    pub const PAD1: u8 = 0x00;
    /// PadN.
    pub const PADN: u8 = 0x01;
    /// Acknowledgment Request.
    pub const ACK_REQ: u8 = 0x02;
    /// Acknowledgment.
    pub const ACK: u8 = 0x03;
    /// Hello.
    pub const HELLO: u8 = 0x04;
    /// IHU ("I Heard You").
    pub const IHU: u8 = 0x05;
    /// Router-Id.
    pub const ROUTER_ID: u8 = 0x06;
    /// Next Hop.
    pub const NEXT_HOP: u8 = 0x07;
    /// Update.
    pub const UPDATE: u8 = 0x08;
    /// Route Request.
    pub const ROUTE_REQUEST: u8 = 0x09;
    /// Seqno Request.
    pub const SEQNO_REQUEST: u8 = 0x0a;
    /// MAC (RFC 8967), trailer only.
    pub const MAC: u8 = 0x10;
    /// PC, packet counter (RFC 8967).
    pub const PC: u8 = 0x11;
    /// Challenge Request (RFC 8967).
    pub const CHALLENGE_REQUEST: u8 = 0x12;
    /// Challenge Reply (RFC 8967).
    pub const CHALLENGE_REPLY: u8 = 0x13;
}

/// Sub-TLV type numbers.
pub mod sub_kind {
    /// Pad1.
    pub const PAD1: u8 = 0x00;
    /// PadN.
    pub const PADN: u8 = 0x01;
    /// Diversity (draft-chroboczek-babel-diversity-routing); skipped.
    pub const DIVERSITY: u8 = 0x02;
    /// Timestamp (RFC 9616): 4 bytes in Hello, 8 bytes in IHU.
    pub const TIMESTAMP: u8 = 0x03;
    /// Source Prefix (RFC 9079), mandatory.
    pub const SOURCE_PREFIX: u8 = 0x80;
    /// re6mesh route origin signature (Update): 64 bytes, ECDSA P-256 r‖s by the
    /// originator's certificate key over (prefix, plen, router-id, seqno). Type 112 is in
    /// IANA's range reserved for experimental use and below 128, so not mandatory:
    /// standard Babel routers skip it.
    pub const ROUTE_SIGNATURE: u8 = 112;
    /// Bit that marks a sub-TLV as mandatory (RFC 8966 section 4.4).
    pub const MANDATORY: u8 = 0x80;
}

mod field {
    pub const TYPE: usize = 0;
    pub const LENGTH: usize = 1;
    pub const VALUE: usize = 2;
}

/// Largest TLV payload (the length field is one byte).
pub const MAX_VALUE_LEN: usize = 255;

/// A zero-copy view of one TLV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tlv<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Tlv<T> {
    /// Wraps a buffer without checks (accessors never panic; they return
    /// zero or empty values on a short buffer).
    pub const fn new_unchecked(buffer: T) -> Tlv<T> {
        Tlv { buffer }
    }

    /// Wraps a buffer after [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<Tlv<T>, Error> {
        let tlv = Tlv::new_unchecked(buffer);
        tlv.check_len()?;
        Ok(tlv)
    }

    /// Ensures the buffer holds the whole TLV its length field announces.
    pub fn check_len(&self) -> Result<(), Error> {
        let data = self.buffer.as_ref();
        let Some(&ty) = data.first() else {
            return Err(Error::Truncated);
        };
        if ty == kind::PAD1 {
            return Ok(());
        }
        let Some(&len) = data.get(field::LENGTH) else {
            return Err(Error::Truncated);
        };
        if data.len() < field::VALUE + usize::from(len) {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// The type byte.
    pub fn tlv_type(&self) -> u8 {
        self.buffer.as_ref().get(field::TYPE).copied().unwrap_or(0)
    }

    /// The length byte (payload length); 0 for Pad1.
    pub fn length(&self) -> u8 {
        if self.tlv_type() == kind::PAD1 {
            return 0;
        }
        self.buffer
            .as_ref()
            .get(field::LENGTH)
            .copied()
            .unwrap_or(0)
    }

    /// Bytes the TLV occupies, header included (1 for Pad1).
    pub fn total_len(&self) -> usize {
        if self.tlv_type() == kind::PAD1 {
            1
        } else {
            field::VALUE + usize::from(self.length())
        }
    }

    /// The payload.
    pub fn value(&self) -> &[u8] {
        let end = self.total_len();
        if self.tlv_type() == kind::PAD1 {
            return &[];
        }
        self.buffer.as_ref().get(field::VALUE..end).unwrap_or(&[])
    }
}

impl<'a> Tlv<&'a [u8]> {
    /// The payload, borrowed for the buffer's lifetime.
    pub fn value_slice(&self) -> &'a [u8] {
        let data: &'a [u8] = self.buffer;
        if self.tlv_type() == kind::PAD1 {
            return &[];
        }
        data.get(field::VALUE..self.total_len()).unwrap_or(&[])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Tlv<T> {
    /// Sets the type byte.
    pub fn set_tlv_type(&mut self, value: u8) {
        if let Some(b) = self.buffer.as_mut().get_mut(field::TYPE) {
            *b = value;
        }
    }

    /// Sets the length byte.
    pub fn set_length(&mut self, value: u8) {
        if let Some(b) = self.buffer.as_mut().get_mut(field::LENGTH) {
            *b = value;
        }
    }

    /// Mutable payload (as long as the length byte says).
    pub fn value_mut(&mut self) -> &mut [u8] {
        let end = field::VALUE + usize::from(self.length());
        self.buffer
            .as_mut()
            .get_mut(field::VALUE..end)
            .unwrap_or(&mut [])
    }
}

/// Iterates over the TLVs of a body or trailer. Strict: when a TLV overruns
/// the area it yields `Err(Error::Truncated)` once and then stops — RFC 8966
/// gives no way to find the next TLV after a bad length.
#[derive(Debug, Clone)]
pub struct TlvIter<'a> {
    data: &'a [u8],
    offset: usize,
    done: bool,
}

impl<'a> TlvIter<'a> {
    /// Iterator over the TLVs packed in `data`.
    pub fn new(data: &'a [u8]) -> TlvIter<'a> {
        TlvIter {
            data,
            offset: 0,
            done: false,
        }
    }

    /// Offset of the next TLV within the area.
    pub fn offset(&self) -> usize {
        self.offset
    }
}

impl<'a> Iterator for TlvIter<'a> {
    type Item = Result<Tlv<&'a [u8]>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let rest = self.data.get(self.offset..).unwrap_or(&[]);
        if rest.is_empty() {
            self.done = true;
            return None;
        }
        let tlv = Tlv::new_unchecked(rest);
        if let Err(e) = tlv.check_len() {
            self.done = true;
            return Some(Err(e));
        }
        let len = tlv.total_len();
        self.offset += len;
        Some(Ok(Tlv::new_unchecked(rest.get(..len).unwrap_or(&[]))))
    }
}

/// One sub-TLV. Pad1 appears as `ty == 0` with an empty value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubTlv<'a> {
    /// Sub-TLV type; bit 0x80 set means mandatory.
    pub ty: u8,
    /// Payload.
    pub value: &'a [u8],
}

impl SubTlv<'_> {
    /// True when a receiver that does not understand this sub-TLV must
    /// ignore the enclosing TLV (RFC 8966 section 4.4).
    pub fn is_mandatory(&self) -> bool {
        self.ty & sub_kind::MANDATORY != 0
    }
}

/// The sub-TLV area of a TLV: raw bytes whose framing has been checked
/// (every sub-TLV fits). Keeping the bytes makes re-emission exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubTlvs<'a>(&'a [u8]);

impl<'a> SubTlvs<'a> {
    /// Checks framing of `bytes`: every sub-TLV must end inside the area.
    pub fn new(bytes: &'a [u8]) -> Result<SubTlvs<'a>, Error> {
        let mut off = 0usize;
        while let Some(&ty) = bytes.get(off) {
            if ty == sub_kind::PAD1 {
                off += 1;
                continue;
            }
            let Some(&len) = bytes.get(off + 1) else {
                return Err(Error::Malformed);
            };
            off += 2 + usize::from(len);
            if off > bytes.len() {
                return Err(Error::Malformed);
            }
        }
        Ok(SubTlvs(bytes))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.0
    }

    /// True if there are no sub-TLV bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Iterates over the sub-TLVs.
    pub fn iter(&self) -> SubTlvIter<'a> {
        SubTlvIter {
            data: self.0,
            off: 0,
        }
    }
}

/// Iterator over [`SubTlvs`].
#[derive(Debug, Clone)]
pub struct SubTlvIter<'a> {
    data: &'a [u8],
    off: usize,
}

impl<'a> Iterator for SubTlvIter<'a> {
    type Item = SubTlv<'a>;

    fn next(&mut self) -> Option<SubTlv<'a>> {
        let &ty = self.data.get(self.off)?;
        if ty == sub_kind::PAD1 {
            self.off += 1;
            return Some(SubTlv { ty, value: &[] });
        }
        let len = usize::from(*self.data.get(self.off + 1)?);
        let value = self.data.get(self.off + 2..self.off + 2 + len)?;
        self.off += 2 + len;
        Some(SubTlv { ty, value })
    }
}

/// Address bytes carried by an address field (IHU, Next Hop) for `ae`;
/// `None` for an AE with no defined address field here.
pub fn address_len(ae: u8) -> Option<usize> {
    match ae {
        0 => Some(0),
        1 => Some(4),
        2 => Some(16),
        3 => Some(8),
        _ => None,
    }
}

/// Prefix bytes present in an Update for (`ae`, `plen`, `omitted`); `None`
/// for an unknown AE. Mirrors RFC 8966 section 4.1.4/4.6.9 and RFC 9229:
/// AE 1, 2, 4 carry ceil(plen/8) - omitted bytes; AE 3 implies fe80::/64 and
/// carries ceil(plen/8) - 8.
pub fn update_prefix_len(ae: u8, plen: u8, omitted: u8) -> Option<usize> {
    let bytes = usize::from(plen).div_ceil(8);
    match ae {
        0 => Some(0),
        1 | 2 | 4 => Some(bytes.saturating_sub(usize::from(omitted))),
        3 => Some(bytes.saturating_sub(8)),
        _ => None,
    }
}

/// Prefix bytes present in a Route or Seqno Request (no compression).
pub fn request_prefix_len(ae: u8, plen: u8) -> Option<usize> {
    let bytes = usize::from(plen).div_ceil(8);
    match ae {
        0 => Some(0),
        1 | 2 | 4 => Some(bytes),
        3 => Some(bytes.saturating_sub(8)),
        _ => None,
    }
}

/// One TLV, decoded field by field but not interpreted.
///
/// Reserved fields are kept so re-emission is byte-exact; senders set them to
/// zero. For an unknown AE the address/prefix field holds the rest of the
/// payload and `sub_tlvs` is empty (its boundary cannot be known).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlvRepr<'a> {
    /// Pad1 (type 0, one byte).
    Pad1,
    /// PadN; `data` should be zeros.
    PadN {
        /// Padding bytes.
        data: &'a [u8],
    },
    /// Acknowledgment Request.
    AckReq {
        /// Reserved (zero).
        reserved: u16,
        /// Opaque value echoed in the Ack.
        opaque: u16,
        /// Time to reply within, centiseconds.
        interval: u16,
        /// Sub-TLVs.
        sub_tlvs: SubTlvs<'a>,
    },
    /// Acknowledgment.
    Ack {
        /// Opaque value of the request.
        opaque: u16,
        /// Sub-TLVs.
        sub_tlvs: SubTlvs<'a>,
    },
    /// Hello.
    Hello {
        /// Flags; 0x8000 = unicast.
        flags: u16,
        /// Hello seqno.
        seqno: u16,
        /// Hello interval, centiseconds (0 = no more scheduled Hellos).
        interval: u16,
        /// Sub-TLVs (Timestamp).
        sub_tlvs: SubTlvs<'a>,
    },
    /// IHU.
    Ihu {
        /// Address encoding of `addr`.
        ae: u8,
        /// Reserved (zero).
        reserved: u8,
        /// Receive cost.
        rxcost: u16,
        /// IHU interval, centiseconds.
        interval: u16,
        /// Address bytes (not compressed).
        addr: &'a [u8],
        /// Sub-TLVs (Timestamp).
        sub_tlvs: SubTlvs<'a>,
    },
    /// Router-Id.
    RouterId {
        /// Reserved (zero).
        reserved: u16,
        /// The router-id.
        router_id: RouterId,
        /// Sub-TLVs.
        sub_tlvs: SubTlvs<'a>,
    },
    /// Next Hop.
    NextHop {
        /// Address encoding (1, 2 or 3 are valid).
        ae: u8,
        /// Reserved (zero).
        reserved: u8,
        /// Address bytes.
        addr: &'a [u8],
        /// Sub-TLVs.
        sub_tlvs: SubTlvs<'a>,
    },
    /// Update.
    Update {
        /// Address encoding (0-4).
        ae: u8,
        /// Flags: 0x80 set default prefix, 0x40 router-id from prefix.
        flags: u8,
        /// Prefix length in bits.
        plen: u8,
        /// Bytes taken from the default prefix.
        omitted: u8,
        /// Update interval, centiseconds.
        interval: u16,
        /// Route seqno.
        seqno: u16,
        /// Metric; 0xFFFF = retraction.
        metric: u16,
        /// Prefix bytes actually present.
        prefix: &'a [u8],
        /// Sub-TLVs (Source Prefix...).
        sub_tlvs: SubTlvs<'a>,
    },
    /// Route Request; AE 0 = wildcard.
    RouteRequest {
        /// Address encoding.
        ae: u8,
        /// Prefix length.
        plen: u8,
        /// Prefix bytes.
        prefix: &'a [u8],
        /// Sub-TLVs.
        sub_tlvs: SubTlvs<'a>,
    },
    /// Seqno Request.
    SeqnoRequest {
        /// Address encoding.
        ae: u8,
        /// Prefix length.
        plen: u8,
        /// Requested seqno.
        seqno: u16,
        /// Hop count.
        hop_count: u8,
        /// Reserved (zero).
        reserved: u8,
        /// Router-id of the source.
        router_id: RouterId,
        /// Prefix bytes.
        prefix: &'a [u8],
        /// Sub-TLVs.
        sub_tlvs: SubTlvs<'a>,
    },
    /// MAC (RFC 8967); belongs in the trailer.
    Mac {
        /// MAC bytes (32 for HMAC-SHA256).
        mac: &'a [u8],
    },
    /// PC: packet counter and index (RFC 8967).
    Pc {
        /// Packet counter.
        counter: u32,
        /// Sender's index (babeld: 8 bytes, BIRD: 32).
        index: &'a [u8],
    },
    /// Challenge Request.
    ChallengeRequest {
        /// Nonce.
        nonce: &'a [u8],
    },
    /// Challenge Reply.
    ChallengeReply {
        /// Nonce copied from the request.
        nonce: &'a [u8],
    },
    /// A TLV of a type this module does not know; skipped by receivers.
    Unknown {
        /// Type byte.
        ty: u8,
        /// Payload.
        value: &'a [u8],
    },
}

/// Strict cursor over a TLV payload.
struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if n > self.data.len() {
            return Err(Error::Malformed);
        }
        let (head, tail) = self.data.split_at(n);
        self.data = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, Error> {
        match self.take(1)? {
            [a] => Ok(*a),
            _ => Err(Error::Malformed),
        }
    }
    fn u16(&mut self) -> Result<u16, Error> {
        match self.take(2)? {
            [a, b] => Ok(u16::from_be_bytes([*a, *b])),
            _ => Err(Error::Malformed),
        }
    }
    fn u32(&mut self) -> Result<u32, Error> {
        match self.take(4)? {
            [a, b, c, d] => Ok(u32::from_be_bytes([*a, *b, *c, *d])),
            _ => Err(Error::Malformed),
        }
    }
    fn id(&mut self) -> Result<RouterId, Error> {
        let b = self.take(8)?;
        let mut id = [0u8; 8];
        id.copy_from_slice(b);
        Ok(RouterId(id))
    }
    /// `n` bytes if the AE is known, otherwise everything left.
    fn field(&mut self, n: Option<usize>) -> Result<&'a [u8], Error> {
        match n {
            Some(n) => self.take(n),
            None => Ok(self.rest()),
        }
    }
    fn rest(&mut self) -> &'a [u8] {
        core::mem::take(&mut self.data)
    }
    fn sub_tlvs(&mut self) -> Result<SubTlvs<'a>, Error> {
        SubTlvs::new(self.rest())
    }
}

impl<'a> TlvRepr<'a> {
    /// Parses one TLV. Errors: [`Error::Malformed`] when the payload is too
    /// short for the fixed fields or the sub-TLV framing is broken.
    pub fn parse(tlv: &Tlv<&'a [u8]>) -> Result<TlvRepr<'a>, Error> {
        tlv.check_len()?;
        let ty = tlv.tlv_type();
        let mut r = Reader {
            data: tlv.value_slice(),
        };
        let repr = match ty {
            kind::PAD1 => TlvRepr::Pad1,
            kind::PADN => TlvRepr::PadN { data: r.rest() },
            kind::ACK_REQ => TlvRepr::AckReq {
                reserved: r.u16()?,
                opaque: r.u16()?,
                interval: r.u16()?,
                sub_tlvs: r.sub_tlvs()?,
            },
            kind::ACK => TlvRepr::Ack {
                opaque: r.u16()?,
                sub_tlvs: r.sub_tlvs()?,
            },
            kind::HELLO => TlvRepr::Hello {
                flags: r.u16()?,
                seqno: r.u16()?,
                interval: r.u16()?,
                sub_tlvs: r.sub_tlvs()?,
            },
            kind::IHU => {
                let ae = r.u8()?;
                let reserved = r.u8()?;
                let rxcost = r.u16()?;
                let interval = r.u16()?;
                let addr = r.field(address_len(ae))?;
                TlvRepr::Ihu {
                    ae,
                    reserved,
                    rxcost,
                    interval,
                    addr,
                    sub_tlvs: r.sub_tlvs()?,
                }
            }
            kind::ROUTER_ID => TlvRepr::RouterId {
                reserved: r.u16()?,
                router_id: r.id()?,
                sub_tlvs: r.sub_tlvs()?,
            },
            kind::NEXT_HOP => {
                let ae = r.u8()?;
                let reserved = r.u8()?;
                let addr = r.field(address_len(ae))?;
                TlvRepr::NextHop {
                    ae,
                    reserved,
                    addr,
                    sub_tlvs: r.sub_tlvs()?,
                }
            }
            kind::UPDATE => {
                let ae = r.u8()?;
                let flags = r.u8()?;
                let plen = r.u8()?;
                let omitted = r.u8()?;
                let interval = r.u16()?;
                let seqno = r.u16()?;
                let metric = r.u16()?;
                let prefix = r.field(update_prefix_len(ae, plen, omitted))?;
                TlvRepr::Update {
                    ae,
                    flags,
                    plen,
                    omitted,
                    interval,
                    seqno,
                    metric,
                    prefix,
                    sub_tlvs: r.sub_tlvs()?,
                }
            }
            kind::ROUTE_REQUEST => {
                let ae = r.u8()?;
                let plen = r.u8()?;
                let prefix = r.field(request_prefix_len(ae, plen))?;
                TlvRepr::RouteRequest {
                    ae,
                    plen,
                    prefix,
                    sub_tlvs: r.sub_tlvs()?,
                }
            }
            kind::SEQNO_REQUEST => {
                let ae = r.u8()?;
                let plen = r.u8()?;
                let seqno = r.u16()?;
                let hop_count = r.u8()?;
                let reserved = r.u8()?;
                let router_id = r.id()?;
                let prefix = r.field(request_prefix_len(ae, plen))?;
                TlvRepr::SeqnoRequest {
                    ae,
                    plen,
                    seqno,
                    hop_count,
                    reserved,
                    router_id,
                    prefix,
                    sub_tlvs: r.sub_tlvs()?,
                }
            }
            kind::MAC => TlvRepr::Mac { mac: r.rest() },
            kind::PC => TlvRepr::Pc {
                counter: r.u32()?,
                index: r.rest(),
            },
            kind::CHALLENGE_REQUEST => TlvRepr::ChallengeRequest { nonce: r.rest() },
            kind::CHALLENGE_REPLY => TlvRepr::ChallengeReply { nonce: r.rest() },
            ty => TlvRepr::Unknown {
                ty,
                value: r.rest(),
            },
        };
        Ok(repr)
    }

    /// The TLV type byte.
    pub fn tlv_type(&self) -> u8 {
        match self {
            TlvRepr::Pad1 => kind::PAD1,
            TlvRepr::PadN { .. } => kind::PADN,
            TlvRepr::AckReq { .. } => kind::ACK_REQ,
            TlvRepr::Ack { .. } => kind::ACK,
            TlvRepr::Hello { .. } => kind::HELLO,
            TlvRepr::Ihu { .. } => kind::IHU,
            TlvRepr::RouterId { .. } => kind::ROUTER_ID,
            TlvRepr::NextHop { .. } => kind::NEXT_HOP,
            TlvRepr::Update { .. } => kind::UPDATE,
            TlvRepr::RouteRequest { .. } => kind::ROUTE_REQUEST,
            TlvRepr::SeqnoRequest { .. } => kind::SEQNO_REQUEST,
            TlvRepr::Mac { .. } => kind::MAC,
            TlvRepr::Pc { .. } => kind::PC,
            TlvRepr::ChallengeRequest { .. } => kind::CHALLENGE_REQUEST,
            TlvRepr::ChallengeReply { .. } => kind::CHALLENGE_REPLY,
            TlvRepr::Unknown { ty, .. } => *ty,
        }
    }

    /// Payload length (without type and length bytes).
    pub fn value_len(&self) -> usize {
        match self {
            TlvRepr::Pad1 => 0,
            TlvRepr::PadN { data } => data.len(),
            TlvRepr::AckReq { sub_tlvs, .. } => 6 + sub_tlvs.0.len(),
            TlvRepr::Ack { sub_tlvs, .. } => 2 + sub_tlvs.0.len(),
            TlvRepr::Hello { sub_tlvs, .. } => 6 + sub_tlvs.0.len(),
            TlvRepr::Ihu { addr, sub_tlvs, .. } => 6 + addr.len() + sub_tlvs.0.len(),
            TlvRepr::RouterId { sub_tlvs, .. } => 10 + sub_tlvs.0.len(),
            TlvRepr::NextHop { addr, sub_tlvs, .. } => 2 + addr.len() + sub_tlvs.0.len(),
            TlvRepr::Update {
                prefix, sub_tlvs, ..
            } => 10 + prefix.len() + sub_tlvs.0.len(),
            TlvRepr::RouteRequest {
                prefix, sub_tlvs, ..
            } => 2 + prefix.len() + sub_tlvs.0.len(),
            TlvRepr::SeqnoRequest {
                prefix, sub_tlvs, ..
            } => 14 + prefix.len() + sub_tlvs.0.len(),
            TlvRepr::Mac { mac } => mac.len(),
            TlvRepr::Pc { index, .. } => 4 + index.len(),
            TlvRepr::ChallengeRequest { nonce } | TlvRepr::ChallengeReply { nonce } => nonce.len(),
            TlvRepr::Unknown { value, .. } => value.len(),
        }
    }

    /// Bytes needed to emit this TLV.
    pub fn buffer_len(&self) -> usize {
        match self {
            TlvRepr::Pad1 => 1,
            _ => 2 + self.value_len(),
        }
    }

    /// Checks that the fields are consistent, so that what is emitted parses
    /// back to `self`.
    fn check_emittable(&self) -> Result<(), Error> {
        if self.value_len() > MAX_VALUE_LEN {
            return Err(Error::TooLong);
        }
        let consistent = match self {
            TlvRepr::Ihu {
                ae, addr, sub_tlvs, ..
            }
            | TlvRepr::NextHop {
                ae, addr, sub_tlvs, ..
            } => match address_len(*ae) {
                Some(n) => addr.len() == n,
                None => sub_tlvs.is_empty(),
            },
            TlvRepr::Update {
                ae,
                plen,
                omitted,
                prefix,
                sub_tlvs,
                ..
            } => match update_prefix_len(*ae, *plen, *omitted) {
                Some(n) => prefix.len() == n,
                None => sub_tlvs.is_empty(),
            },
            TlvRepr::RouteRequest {
                ae,
                plen,
                prefix,
                sub_tlvs,
            }
            | TlvRepr::SeqnoRequest {
                ae,
                plen,
                prefix,
                sub_tlvs,
                ..
            } => match request_prefix_len(*ae, *plen) {
                Some(n) => prefix.len() == n,
                None => sub_tlvs.is_empty(),
            },
            TlvRepr::Unknown { ty, .. } => !matches!(
                *ty,
                kind::PAD1..=kind::SEQNO_REQUEST | kind::MAC..=kind::CHALLENGE_REPLY
            ),
            _ => true,
        };
        if consistent {
            Ok(())
        } else {
            Err(Error::Malformed)
        }
    }

    /// Writes the TLV at the start of `buf`; returns the bytes written.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, Error> {
        self.check_emittable()?;
        let total = self.buffer_len();
        let out = buf.get_mut(..total).ok_or(Error::BufferTooSmall)?;
        let mut w = Writer { buf: out, off: 0 };
        w.u8(self.tlv_type());
        if let TlvRepr::Pad1 = self {
            return Ok(1);
        }
        // value_len() <= 255 was checked above.
        w.u8(self.value_len() as u8);
        match *self {
            TlvRepr::Pad1 => {}
            TlvRepr::PadN { data } => w.bytes(data),
            TlvRepr::AckReq {
                reserved,
                opaque,
                interval,
                sub_tlvs,
            } => {
                w.u16(reserved);
                w.u16(opaque);
                w.u16(interval);
                w.bytes(sub_tlvs.0);
            }
            TlvRepr::Ack { opaque, sub_tlvs } => {
                w.u16(opaque);
                w.bytes(sub_tlvs.0);
            }
            TlvRepr::Hello {
                flags,
                seqno,
                interval,
                sub_tlvs,
            } => {
                w.u16(flags);
                w.u16(seqno);
                w.u16(interval);
                w.bytes(sub_tlvs.0);
            }
            TlvRepr::Ihu {
                ae,
                reserved,
                rxcost,
                interval,
                addr,
                sub_tlvs,
            } => {
                w.u8(ae);
                w.u8(reserved);
                w.u16(rxcost);
                w.u16(interval);
                w.bytes(addr);
                w.bytes(sub_tlvs.0);
            }
            TlvRepr::RouterId {
                reserved,
                router_id,
                sub_tlvs,
            } => {
                w.u16(reserved);
                w.bytes(&router_id.0);
                w.bytes(sub_tlvs.0);
            }
            TlvRepr::NextHop {
                ae,
                reserved,
                addr,
                sub_tlvs,
            } => {
                w.u8(ae);
                w.u8(reserved);
                w.bytes(addr);
                w.bytes(sub_tlvs.0);
            }
            TlvRepr::Update {
                ae,
                flags,
                plen,
                omitted,
                interval,
                seqno,
                metric,
                prefix,
                sub_tlvs,
            } => {
                w.u8(ae);
                w.u8(flags);
                w.u8(plen);
                w.u8(omitted);
                w.u16(interval);
                w.u16(seqno);
                w.u16(metric);
                w.bytes(prefix);
                w.bytes(sub_tlvs.0);
            }
            TlvRepr::RouteRequest {
                ae,
                plen,
                prefix,
                sub_tlvs,
            } => {
                w.u8(ae);
                w.u8(plen);
                w.bytes(prefix);
                w.bytes(sub_tlvs.0);
            }
            TlvRepr::SeqnoRequest {
                ae,
                plen,
                seqno,
                hop_count,
                reserved,
                router_id,
                prefix,
                sub_tlvs,
            } => {
                w.u8(ae);
                w.u8(plen);
                w.u16(seqno);
                w.u8(hop_count);
                w.u8(reserved);
                w.bytes(&router_id.0);
                w.bytes(prefix);
                w.bytes(sub_tlvs.0);
            }
            TlvRepr::Mac { mac } => w.bytes(mac),
            TlvRepr::Pc { counter, index } => {
                w.u32(counter);
                w.bytes(index);
            }
            TlvRepr::ChallengeRequest { nonce } | TlvRepr::ChallengeReply { nonce } => {
                w.bytes(nonce)
            }
            TlvRepr::Unknown { value, .. } => w.bytes(value),
        }
        Ok(total)
    }
}

/// Writer over a buffer whose size was checked beforehand; writes past the
/// end are dropped rather than panicking (cannot happen after the check).
pub(crate) struct Writer<'b> {
    pub(crate) buf: &'b mut [u8],
    pub(crate) off: usize,
}

impl Writer<'_> {
    pub(crate) fn bytes(&mut self, b: &[u8]) {
        if let Some(dst) = self.buf.get_mut(self.off..self.off + b.len()) {
            dst.copy_from_slice(b);
        }
        self.off += b.len();
    }
    pub(crate) fn u8(&mut self, v: u8) {
        self.bytes(&[v]);
    }
    pub(crate) fn u16(&mut self, v: u16) {
        self.bytes(&v.to_be_bytes());
    }
    pub(crate) fn u32(&mut self, v: u32) {
        self.bytes(&v.to_be_bytes());
    }
}

#[cfg(test)]
mod tests;
