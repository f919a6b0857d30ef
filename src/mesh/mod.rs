//! The mesh: the Babel routing engine, the FIB, the simulator, the forwarding decision and
//! the QUIC tunnels between nodes. `babel`, `fib`, `sim` and `forward` are sans-IO;
//! `tunnels` is the IO shell around quinn.

pub mod babel;
pub mod fib;
pub mod forward;
pub mod netstate;
pub mod node;
pub mod sim;
pub mod tunnels;
