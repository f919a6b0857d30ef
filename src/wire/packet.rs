//! The Babel packet: 4-byte header, body (bounded by the header's body
//! length) and trailer (everything after the body; holds RFC 8967 MAC TLVs).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |   Magic (42)  |  Version (2)  |          Body length          |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     Body (TLVs) ...                     |  Trailer (MAC TLVs) ...
//! ```

use super::Error;
use super::tlv::{TlvIter, TlvRepr};

/// Magic byte of every Babel packet.
pub const MAGIC: u8 = 42;
/// The only Babel version this module speaks.
pub const VERSION: u8 = 2;
/// Length of the packet header.
pub const HEADER_LEN: usize = field::BODY;

mod field {
    use core::ops::Range;
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 1;
    pub const BODY_LEN: Range<usize> = 2..4;
    pub const BODY: usize = 4;
}

/// A read/write view of a Babel packet buffer (UDP payload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking anything; accessors may then return
    /// empty slices (never panic) on a short buffer.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer after [`check_len`](Self::check_len) and a check of the
    /// magic and version bytes.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, Error> {
        let packet = Packet::new_unchecked(buffer);
        packet.check_len()?;
        if packet.magic() != MAGIC {
            return Err(Error::BadMagic);
        }
        if packet.version() != VERSION {
            return Err(Error::BadVersion);
        }
        Ok(packet)
    }

    /// Ensures the buffer holds the header and the whole body it announces.
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if len < HEADER_LEN + usize::from(self.body_len()) {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Gives the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Magic byte (42 for Babel).
    pub fn magic(&self) -> u8 {
        self.buffer.as_ref().get(field::MAGIC).copied().unwrap_or(0)
    }

    /// Version byte (2).
    pub fn version(&self) -> u8 {
        self.buffer
            .as_ref()
            .get(field::VERSION)
            .copied()
            .unwrap_or(0)
    }

    /// Declared body length.
    pub fn body_len(&self) -> u16 {
        match self.buffer.as_ref().get(field::BODY_LEN) {
            Some(&[a, b]) => u16::from_be_bytes([a, b]),
            _ => 0,
        }
    }

    /// The body: TLVs, exactly `body_len` bytes (shorter only on an unchecked view).
    pub fn body(&self) -> &[u8] {
        let data = self.buffer.as_ref();
        let end = (HEADER_LEN + usize::from(self.body_len())).min(data.len());
        data.get(HEADER_LEN..end).unwrap_or(&[])
    }

    /// Header plus body: the bytes an RFC 8967 MAC covers.
    pub fn header_and_body(&self) -> &[u8] {
        let data = self.buffer.as_ref();
        let end = (HEADER_LEN + usize::from(self.body_len())).min(data.len());
        data.get(..end).unwrap_or(&[])
    }

    /// The trailer: every byte after the body.
    pub fn trailer(&self) -> &[u8] {
        let data = self.buffer.as_ref();
        let start = HEADER_LEN + usize::from(self.body_len());
        data.get(start..).unwrap_or(&[])
    }

    /// TLVs of the body (strict: the iterator yields an error and stops at
    /// the first TLV that overruns the body).
    pub fn body_tlvs(&self) -> TlvIter<'_> {
        TlvIter::new(self.body())
    }

    /// TLVs of the trailer.
    pub fn trailer_tlvs(&self) -> TlvIter<'_> {
        TlvIter::new(self.trailer())
    }
}

impl<'a> Packet<&'a [u8]> {
    /// The body, borrowed for the buffer's whole lifetime.
    pub fn body_slice(&self) -> &'a [u8] {
        let data: &'a [u8] = self.buffer;
        let end = (HEADER_LEN + usize::from(self.body_len())).min(data.len());
        data.get(HEADER_LEN..end).unwrap_or(&[])
    }

    /// The trailer, borrowed for the buffer's whole lifetime.
    pub fn trailer_slice(&self) -> &'a [u8] {
        let data: &'a [u8] = self.buffer;
        let start = HEADER_LEN + usize::from(self.body_len());
        data.get(start..).unwrap_or(&[])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the magic byte.
    pub fn set_magic(&mut self, value: u8) {
        if let Some(b) = self.buffer.as_mut().get_mut(field::MAGIC) {
            *b = value;
        }
    }

    /// Sets the version byte.
    pub fn set_version(&mut self, value: u8) {
        if let Some(b) = self.buffer.as_mut().get_mut(field::VERSION) {
            *b = value;
        }
    }

    /// Sets the body length.
    pub fn set_body_len(&mut self, value: u16) {
        if let Some(b) = self.buffer.as_mut().get_mut(field::BODY_LEN) {
            b.copy_from_slice(&value.to_be_bytes());
        }
    }

    /// Mutable access to everything after the header.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        self.buffer
            .as_mut()
            .get_mut(HEADER_LEN..)
            .unwrap_or(&mut [])
    }
}

/// A whole packet as TLV lists, lossless: emitting a parsed `PacketRepr`
/// reproduces the input bytes exactly (Pad1/PadN and reserved fields included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketRepr<'a> {
    /// TLVs of the body, in order.
    pub body: Vec<TlvRepr<'a>>,
    /// TLVs of the trailer, in order (MAC, Pad1, PadN).
    pub trailer: Vec<TlvRepr<'a>>,
}

impl<'a> PacketRepr<'a> {
    /// Strict parse: any TLV that overruns its area, or is too short for its
    /// fixed fields, is an error.
    pub fn parse(packet: &Packet<&'a [u8]>) -> Result<PacketRepr<'a>, Error> {
        packet.check_len()?;
        if packet.magic() != MAGIC {
            return Err(Error::BadMagic);
        }
        if packet.version() != VERSION {
            return Err(Error::BadVersion);
        }
        let mut body = Vec::new();
        for tlv in TlvIter::new(packet.body_slice()) {
            body.push(TlvRepr::parse(&tlv?)?);
        }
        let mut trailer = Vec::new();
        for tlv in TlvIter::new(packet.trailer_slice()) {
            trailer.push(TlvRepr::parse(&tlv?)?);
        }
        Ok(PacketRepr { body, trailer })
    }

    /// Length of the body when emitted.
    pub fn body_len(&self) -> usize {
        self.body.iter().map(TlvRepr::buffer_len).sum()
    }

    /// Total emitted length: header, body and trailer.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.body_len() + self.trailer.iter().map(TlvRepr::buffer_len).sum::<usize>()
    }

    /// Writes the packet into `buf`; returns the number of bytes written.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, Error> {
        let body_len = u16::try_from(self.body_len()).map_err(|_| Error::TooLong)?;
        if buf.len() < self.buffer_len() {
            return Err(Error::BufferTooSmall);
        }
        let mut packet = Packet::new_unchecked(&mut *buf);
        packet.set_magic(MAGIC);
        packet.set_version(VERSION);
        packet.set_body_len(body_len);
        let mut off = HEADER_LEN;
        for tlv in self.body.iter().chain(self.trailer.iter()) {
            let rest = buf.get_mut(off..).ok_or(Error::BufferTooSmall)?;
            off += tlv.emit(rest)?;
        }
        Ok(off)
    }
}

/// Pads a whole packet (header, body and trailer, as [`crate::wire::mac::sign`] leaves it)
/// to `to` bytes with Pad1/PadN TLVs appended to the trailer (RFC 8967 §4.3: the trailer
/// holds MAC TLVs and padding; the MAC covers neither). A packet already `to` bytes long or
/// longer is left as it is. The node pads the Babel packets it sends over a tunnel to a
/// full-size datagram, so a path that stops carrying full-size packets loses Babel's hellos
/// (and so the neighbour) instead of black-holing the data.
pub fn pad_trailer(packet: &mut Vec<u8>, to: usize) {
    let mut rest = to.saturating_sub(packet.len());
    packet.reserve(rest);
    while rest >= 2 {
        let mut n = (rest - 2).min(255);
        // never leave a single byte that only a Pad1 could fill after a full PadN
        if rest - 2 - n == 1 {
            n -= 1;
        }
        packet.push(crate::wire::tlv::kind::PADN);
        packet.push(n as u8);
        packet.resize(packet.len() + n, 0);
        rest -= 2 + n;
    }
    if rest == 1 {
        packet.push(crate::wire::tlv::kind::PAD1);
    }
}

/// Writes a packet header with the given body length into `buf[..4]`.
pub fn emit_header(buf: &mut [u8], body_len: u16) -> Result<(), Error> {
    let hdr = buf.get_mut(..HEADER_LEN).ok_or(Error::BufferTooSmall)?;
    hdr[field::MAGIC] = MAGIC;
    hdr[field::VERSION] = VERSION;
    hdr[field::BODY_LEN].copy_from_slice(&body_len.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::tlv::TlvRepr;

    // Hello seqno 0xe80c interval 400 + wildcard Route Request, then a PadN in the trailer.
    static PACKET_BYTES: [u8; 18] = [
        0x2a, 0x02, 0x00, 0x0c, // header, body 12
        0x04, 0x06, 0x00, 0x00, 0xe8, 0x0c, 0x01, 0x90, // Hello
        0x09, 0x02, 0x00, 0x00, // Route Request AE 0
        0x01, 0x00, // trailer: PadN 0
    ];

    fn packet_repr() -> PacketRepr<'static> {
        PacketRepr {
            body: vec![
                TlvRepr::Hello {
                    flags: 0,
                    seqno: 0xe80c,
                    interval: 400,
                    sub_tlvs: Default::default(),
                },
                TlvRepr::RouteRequest {
                    ae: 0,
                    plen: 0,
                    prefix: &[],
                    sub_tlvs: Default::default(),
                },
            ],
            trailer: vec![TlvRepr::PadN { data: &[] }],
        }
    }

    #[test]
    fn deconstructs_header() {
        let packet = Packet::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(packet.magic(), 42);
        assert_eq!(packet.version(), 2);
        assert_eq!(packet.body_len(), 12);
        assert_eq!(packet.body(), &PACKET_BYTES[4..16]);
        assert_eq!(packet.trailer(), &[0x01, 0x00]);
    }

    #[test]
    fn constructs_header() {
        let mut bytes = [0u8; 18];
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        packet.set_magic(42);
        packet.set_version(2);
        packet.set_body_len(12);
        packet.payload_mut().copy_from_slice(&PACKET_BYTES[4..]);
        assert_eq!(&bytes[..], &PACKET_BYTES[..]);
    }

    #[test]
    fn parses_packet_repr() {
        let packet = Packet::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(PacketRepr::parse(&packet).unwrap(), packet_repr());
    }

    #[test]
    fn emits_packet_repr() {
        let repr = packet_repr();
        assert_eq!(repr.buffer_len(), PACKET_BYTES.len());
        let mut buf = vec![0u8; repr.buffer_len()];
        assert_eq!(repr.emit(&mut buf).unwrap(), PACKET_BYTES.len());
        assert_eq!(&buf[..], &PACKET_BYTES[..]);
    }

    #[test]
    fn rejects_impossible_body_length() {
        let mut bytes = PACKET_BYTES;
        bytes[3] = 0x20; // body claims 32 bytes, 14 present
        assert_eq!(Packet::new_checked(&bytes[..]), Err(Error::Truncated));
        assert_eq!(Packet::new_checked(&bytes[..3]), Err(Error::Truncated));
    }

    #[test]
    fn rejects_wrong_magic_and_version() {
        let mut bytes = PACKET_BYTES;
        bytes[0] = 43;
        assert_eq!(Packet::new_checked(&bytes[..]), Err(Error::BadMagic));
        bytes[0] = 42;
        bytes[1] = 1;
        assert_eq!(Packet::new_checked(&bytes[..]), Err(Error::BadVersion));
    }

    #[test]
    fn rejects_truncated_tlv_in_body() {
        // Hello whose length (8) runs past the 8-byte body.
        let bytes = [0x2a, 0x02, 0x00, 0x08, 0x04, 0x08, 0, 0, 0, 1, 0, 0x64];
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(PacketRepr::parse(&packet), Err(Error::Truncated));
    }

    #[test]
    fn padding_fills_the_trailer_to_the_exact_size_and_parses_back() {
        let repr = PacketRepr {
            body: vec![TlvRepr::PadN { data: &[0; 3] }],
            trailer: vec![],
        };
        let mut base = vec![0u8; repr.buffer_len()];
        repr.emit(&mut base).unwrap();
        for to in [
            0,
            base.len(),
            base.len() + 1,
            base.len() + 2,
            base.len() + 258,
            1321,
            1400,
        ] {
            let mut p = base.clone();
            pad_trailer(&mut p, to);
            assert_eq!(p.len(), to.max(base.len()), "to {to}");
            let parsed = PacketRepr::parse(&Packet::new_checked(&p[..]).unwrap()).unwrap();
            assert_eq!(parsed.body, repr.body, "to {to}");
            assert!(
                parsed
                    .trailer
                    .iter()
                    .all(|t| matches!(t, TlvRepr::Pad1 | TlvRepr::PadN { .. })),
                "to {to}: {:?}",
                parsed.trailer
            );
        }
    }
}
