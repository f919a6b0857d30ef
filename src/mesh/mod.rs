//! The mesh: the Babel routing engine, the FIB, the simulator, the forwarding decision and
//! the QUIC tunnels between nodes. `babel`, `fib`, `sim`, `forward`, `tunnels::policy` (the
//! tunnel manager) and `peers` (the peer cache, but for its load/save) are sans-IO;
//! `tunnels` is the IO shell around quinn. `sim` is test support: compiled for tests and with
//! the `sim` feature (tests/ and benches/ enable it), never into the `mesh` binary.

pub mod babel;
pub mod fib;
pub mod forward;
pub mod forward_v4;
pub mod lan_discovery;
pub mod netstate;
pub mod node;
pub mod peers;
pub mod portmap;
pub mod punch;
pub mod reach;
pub mod seal;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
pub mod tunnels;
pub mod upnp;
