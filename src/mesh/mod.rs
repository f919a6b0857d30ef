//! The mesh: tunnels between nodes (and, as they land, the Babel engine, the FIB and the
//! simulator).

pub mod forward;
pub mod tunnels;
