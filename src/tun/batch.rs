//! Batched TUN IO (issue "Speed"): on Linux the device is opened with offload (virtio-net
//! header, IFF_VNET_HDR), so one read returns a TSO super-segment of up to 64 KiB that tun-rs
//! splits into MTU-sized packets ([`Tun::recv_batch`]), and a batch of packets from the tunnels
//! is GRO-coalesced into as few writes as possible ([`Tun::send_batch`], each buffer with room
//! for a whole super-segment, or tun-rs coalesces nothing): one syscall and one
//! pass through the kernel's TCP stack per ~45 packets instead of one each. Elsewhere (macOS,
//! Windows, or a persistent device opened without offload) both fall back to one packet per
//! call.
//!
//! The buffers are the data path's: every packet handed out sits after `headroom` bytes (the
//! tunnel framing) in a slice of one large pool, so no allocation per packet.

use bytes::BytesMut;

use super::Tun;

/// Bytes of pool allocated at once (split into packets).
const POOL: usize = 1 << 20;
/// Largest packet a TUN read returns without offload.
const MAX_PACKET: usize = 65535;
/// Packets per TUN write batch, at most.
pub const WRITE_BATCH: usize = 128;

/// Reusable read buffers of the TUN reader.
#[derive(Default)]
pub struct RecvBatch {
    pool: BytesMut,
    #[cfg(target_os = "linux")]
    original: Vec<u8>,
    #[cfg(target_os = "linux")]
    slots: Vec<BytesMut>,
    #[cfg(target_os = "linux")]
    sizes: Vec<usize>,
}

impl RecvBatch {
    /// `want` bytes at the front of the pool, allocating a new pool when this one is used up
    /// (zero-fills only what the last packets took).
    fn refill(&mut self, want: usize) {
        if self.pool.len() < want {
            if self.pool.capacity() < want {
                self.pool = BytesMut::with_capacity(POOL.max(want));
            }
            self.pool.resize(want, 0);
        }
    }
}

/// Reusable write buffers of the TUN writer.
#[derive(Default)]
pub struct SendBatch {
    #[cfg(target_os = "linux")]
    gro: tun_rs::GROTable,
    #[cfg(target_os = "linux")]
    bufs: Vec<Vec<u8>>,
}

impl Tun {
    /// Whether the device does TSO/GRO (Linux, opened with offload).
    pub fn offload(&self) -> bool {
        self.offload
    }

    /// Reads one or more packets with one read, appending each to `out` after `headroom`
    /// bytes. A super-segment that cannot be split (malformed, or larger than the MTU the
    /// device was opened with) is dropped: nothing is appended and `Ok` returned.
    pub async fn recv_batch(
        &self,
        b: &mut RecvBatch,
        headroom: usize,
        out: &mut Vec<BytesMut>,
    ) -> std::io::Result<()> {
        #[cfg(target_os = "linux")]
        if self.offload {
            return self.recv_offload(b, headroom, out).await;
        }
        let want = headroom + MAX_PACKET;
        b.refill(want);
        let n = self.dev.recv(&mut b.pool[headroom..want]).await?;
        out.push(b.pool.split_to(headroom + n));
        Ok(())
    }

    #[cfg(target_os = "linux")]
    async fn recv_offload(
        &self,
        b: &mut RecvBatch,
        headroom: usize,
        out: &mut Vec<BytesMut>,
    ) -> std::io::Result<()> {
        let slot = headroom + usize::from(self.mtu.max(1280));
        if b.original.len() < tun_rs::VIRTIO_NET_HDR_LEN + MAX_PACKET {
            b.original = vec![0; tun_rs::VIRTIO_NET_HDR_LEN + MAX_PACKET];
            b.slots = Vec::with_capacity(tun_rs::IDEAL_BATCH_SIZE);
            b.sizes = vec![0; tun_rs::IDEAL_BATCH_SIZE];
        }
        while b.slots.len() < tun_rs::IDEAL_BATCH_SIZE {
            b.slots.push(BytesMut::new());
        }
        for i in 0..b.slots.len() {
            if b.slots[i].len() < slot {
                b.refill(slot);
                b.slots[i] = b.pool.split_to(slot);
            }
        }
        let n = match self
            .dev
            .recv_multiple(&mut b.original, &mut b.slots, &mut b.sizes, headroom)
            .await
        {
            Ok(n) => n,
            // the read itself failed: the device's error
            Err(e) if e.raw_os_error().is_some() => return Err(e),
            // the read worked but tun-rs could not split what it read: drop that
            Err(e) => {
                tracing::debug!(error = %e, "TUN super-segment dropped");
                return Ok(());
            }
        };
        for i in 0..n {
            let mut p = std::mem::take(&mut b.slots[i]);
            p.truncate(headroom + b.sizes[i]);
            out.push(p);
        }
        Ok(())
    }

    /// [`Tun::send_batch`] with write buffers from the device's pool. Each set of buffers has
    /// room for [`WRITE_BATCH`] super-packets (8 MiB reserved, touched as far as coalescing
    /// reaches): pooled, as many sets exist as writes ever ran at once (about one per runtime
    /// worker), not one per tunnel reader.
    pub async fn send_pooled(&self, pkts: &[BytesMut], headroom: usize) -> std::io::Result<()> {
        let take = || self.pool.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut b = take().unwrap_or_default();
        let r = self.send_batch(&mut b, pkts, headroom).await;
        self.pool.lock().unwrap_or_else(|p| p.into_inner()).push(b);
        r
    }

    /// Writes `pkts` (each after `headroom` bytes): on Linux with offload, TCP and UDP
    /// packets of one flow are coalesced (GRO) into as few writes as possible.
    pub async fn send_batch(
        &self,
        b: &mut SendBatch,
        pkts: &[BytesMut],
        headroom: usize,
    ) -> std::io::Result<()> {
        #[cfg(target_os = "linux")]
        if self.offload {
            let hdr = tun_rs::VIRTIO_NET_HDR_LEN;
            // tun-rs coalesces a flow's packets into the buffer of its first one, and only
            // when that buffer already has the room (it never reallocates): each buffer gets
            // room for a whole super-segment. With room for one packet only, nothing was ever
            // coalesced (one write per packet: 146,000 writes in 2 s at 1.2 Gbit/s against
            // 9,800 with the room; docs/PERFORMANCE.md). The memory is reserved once per
            // batch and touched only as far as a coalesced packet reaches.
            while b.bufs.len() < pkts.len() {
                b.bufs.push(Vec::with_capacity(hdr + MAX_PACKET));
            }
            for (buf, p) in b.bufs.iter_mut().zip(pkts) {
                buf.clear();
                buf.resize(hdr, 0);
                buf.extend_from_slice(p.get(headroom..).unwrap_or_default());
            }
            return self
                .dev
                .send_multiple(&mut b.gro, &mut b.bufs[..pkts.len()], hdr)
                .await
                .map(|_| ());
        }
        let _ = b;
        let mut result = Ok(());
        for p in pkts {
            if let Err(e) = self.send(p.get(headroom..).unwrap_or_default()).await {
                result = Err(e);
            }
        }
        result
    }
}
