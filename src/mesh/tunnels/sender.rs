//! The IO shell of a tunnel's send scheduler ([`super::sched`]): the data path and the Babel
//! shell push datagrams without waiting; one task per tunnel pops them (Babel first, data
//! under CoDel) and hands them to quinn with `send_datagram_wait`, so quinn's own datagram
//! buffer ([`super::DATAGRAM_QUEUE`]) stays small and a Babel packet never waits behind more
//! than that much data.
#![allow(clippy::disallowed_methods)] // IO shell: spawns the tunnel's sender task and stamps packets

use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::Notify;
use tracing::debug;

use super::sched::{Next, SchedConfig, SchedStats, SendQueue};
use super::traffic::LinkTraffic;

/// The queues of one tunnel, shared by its [`super::TunnelLink`] clones.
#[derive(Debug)]
pub(super) struct Sender {
    queue: Mutex<SendQueue>,
    wake: Arc<Notify>,
    conn: quinn::Connection,
    traffic: Arc<LinkTraffic>,
}

impl Drop for Sender {
    fn drop(&mut self) {
        // the task holds only a weak reference: wake it so it notices and ends
        self.wake.notify_one();
    }
}

impl Sender {
    /// A sender for `conn` and its task (needs a tokio runtime). The task ends when the
    /// connection is found closed or the last handle on the sender goes.
    pub(super) fn start(conn: quinn::Connection, traffic: Arc<LinkTraffic>) -> Arc<Sender> {
        let wake = Arc::new(Notify::new());
        let sender = Arc::new(Sender {
            queue: Mutex::new(SendQueue::new(SchedConfig::default())),
            wake: wake.clone(),
            conn,
            traffic,
        });
        tokio::spawn(run(Arc::downgrade(&sender), wake));
        sender
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SendQueue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands `bytes` straight to QUIC when nothing is queued or on its way and QUIC has room
    /// (the order stays; no task wake-up); gives it back otherwise. Called with the queue
    /// locked, so no other push overtakes it.
    fn bypass(&self, q: &SendQueue, bytes: Bytes) -> Result<(), Bytes> {
        if !q.may_bypass() || self.conn.datagram_send_buffer_space() < bytes.len() {
            return Err(bytes);
        }
        if let Err(e) = self.conn.send_datagram(bytes) {
            debug!(error = %e, "datagram not sent");
        }
        Ok(())
    }

    /// Queues a data datagram; how many older ones were dropped to make room.
    pub(super) fn push_data(&self, bytes: Bytes) -> usize {
        let evicted = {
            let mut q = self.lock();
            let Err(bytes) = self.bypass(&q, bytes) else {
                return 0;
            };
            let e = q.push_data(bytes, Instant::now());
            if e > 0 {
                self.traffic.set_sched(&q.stats());
            }
            e
        };
        self.wake.notify_one();
        evicted
    }

    /// Queues a Babel datagram; false when the Babel queue is full.
    pub(super) fn push_babel(&self, bytes: Bytes) -> bool {
        let now = Instant::now();
        let mut q = self.lock();
        let Err(bytes) = self.bypass(&q, bytes) else {
            q.babel_sent(now, now);
            self.traffic.set_sched(&q.stats());
            return true;
        };
        let ok = q.push_babel(bytes, now);
        drop(q);
        self.wake.notify_one();
        ok
    }
}

async fn run(sender: Weak<Sender>, wake: Arc<Notify>) {
    let mut published = SchedStats::default();
    loop {
        let Some(s) = sender.upgrade() else {
            return;
        };
        let next = {
            let mut q = s.lock();
            let next = q.pop(Instant::now());
            let stats = q.stats();
            if stats != published {
                s.traffic.set_sched(&stats);
                published = stats;
            }
            next
        };
        match next {
            Some(Next::Data(bytes)) => {
                let sent = s.conn.send_datagram_wait(bytes).await;
                s.lock().handed();
                if let Err(e) = sent {
                    debug!(error = %e, "data datagram not sent");
                    if s.conn.close_reason().is_some() {
                        return;
                    }
                }
            }
            Some(Next::Babel { bytes, queued_at }) => {
                let sent = s.conn.send_datagram_wait(bytes).await;
                let mut q = s.lock();
                q.handed();
                match sent {
                    Ok(()) => q.babel_sent(queued_at, Instant::now()),
                    Err(e) => {
                        debug!(error = %e, "Babel datagram not sent");
                        if s.conn.close_reason().is_some() {
                            return;
                        }
                    }
                }
            }
            None => {
                // hold no strong reference while idle: the connection closes when the node
                // drops its last handle, and the sender's drop wakes us to end
                drop(s);
                wake.notified().await;
            }
        }
    }
}
