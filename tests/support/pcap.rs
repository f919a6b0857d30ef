//! Minimal classic-pcap reader for the Babel captures: Ethernet (linktype 1)
//! → IPv6 (extension headers skipped) → UDP. Anything else is skipped.

use std::net::{IpAddr, Ipv6Addr};
use std::path::{Path, PathBuf};

/// One UDP datagram of a capture.
#[derive(Debug, Clone)]
pub struct Datagram {
    /// Frame number in the file, 1-based as in Wireshark.
    pub frame: usize,
    pub src: IpAddr,
    pub src_port: u16,
    pub dst: IpAddr,
    pub dst_port: u16,
    pub payload: Vec<u8>,
}

/// Directory of the shared captures; panics with instructions if missing.
pub fn capture_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata/babel");
    assert!(
        dir.is_dir(),
        "Babel captures not found at {}: the repository must be checked out with `shared/` \
         beside it (as CI does); these tests do not skip",
        dir.display()
    );
    dir
}

/// Every `.pcap` of the capture directory, sorted by name.
pub fn capture_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(capture_dir())
        .expect("read capture dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "pcap"))
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no .pcap files in {}",
        capture_dir().display()
    );
    files
}

fn u16_at(b: &[u8], off: usize, le: bool) -> Option<u16> {
    let s: [u8; 2] = b.get(off..off + 2)?.try_into().ok()?;
    Some(if le {
        u16::from_le_bytes(s)
    } else {
        u16::from_be_bytes(s)
    })
}

fn u32_at(b: &[u8], off: usize, le: bool) -> Option<u32> {
    let s: [u8; 4] = b.get(off..off + 4)?.try_into().ok()?;
    Some(if le {
        u32::from_le_bytes(s)
    } else {
        u32::from_be_bytes(s)
    })
}

/// Reads every UDP-over-IPv6 datagram of a classic pcap file.
pub fn read_udp(path: &Path) -> Vec<Datagram> {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let le = match data.get(..4) {
        Some([0xd4, 0xc3, 0xb2, 0xa1]) | Some([0x4d, 0x3c, 0xb2, 0xa1]) => true,
        Some([0xa1, 0xb2, 0xc3, 0xd4]) | Some([0xa1, 0xb2, 0x3c, 0x4d]) => false,
        _ => panic!("{}: not a classic pcap file", path.display()),
    };
    let linktype = u32_at(&data, 20, le).expect("pcap header");
    assert_eq!(
        linktype,
        1,
        "{}: only Ethernet captures are supported",
        path.display()
    );
    let mut out = Vec::new();
    let mut off = 24;
    let mut frame = 0;
    while let Some(incl) = u32_at(&data, off + 8, le) {
        frame += 1;
        let start = off + 16;
        let end = start + incl as usize;
        let Some(pkt) = data.get(start..end) else {
            break;
        };
        off = end;
        if let Some(d) = udp_of_ethernet(pkt, frame) {
            out.push(d);
        }
    }
    out
}

fn udp_of_ethernet(pkt: &[u8], frame: usize) -> Option<Datagram> {
    let mut ethertype = u16_at(pkt, 12, false)?;
    let mut l3 = 14;
    if ethertype == 0x8100 {
        ethertype = u16_at(pkt, 16, false)?;
        l3 = 18;
    }
    if ethertype != 0x86dd {
        return None;
    }
    let ip = pkt.get(l3..)?;
    let src: [u8; 16] = ip.get(8..24)?.try_into().ok()?;
    let dst: [u8; 16] = ip.get(24..40)?.try_into().ok()?;
    let mut next = *ip.get(6)?;
    let mut off = 40;
    // Hop-by-hop, routing, destination options.
    while matches!(next, 0 | 43 | 60) {
        let hdr_len = (usize::from(*ip.get(off + 1)?) + 1) * 8;
        next = *ip.get(off)?;
        off += hdr_len;
    }
    if next != 17 {
        return None;
    }
    let src_port = u16_at(ip, off, false)?;
    let dst_port = u16_at(ip, off + 2, false)?;
    let udp_len = usize::from(u16_at(ip, off + 4, false)?);
    let payload = ip.get(off + 8..off + udp_len)?.to_vec();
    Some(Datagram {
        frame,
        src: IpAddr::V6(Ipv6Addr::from(src)),
        src_port,
        dst: IpAddr::V6(Ipv6Addr::from(dst)),
        dst_port,
        payload,
    })
}
