//! `mesh demo`: a registry and N nodes in network namespaces (the shared [`crate::netns`]
//! rig), joined by a random connected topology of veth links, drawn live by [`crate::ui`].

#[cfg(target_os = "linux")]
pub mod net;
#[cfg(target_os = "linux")]
pub mod run;
pub mod topology;
