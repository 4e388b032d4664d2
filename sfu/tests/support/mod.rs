//! Shared by the end-to-end tests of the `haven-sfu` binary and the loopback bench: a
//! stand-in signaling control peer, real str0m peers over UDP, and the binary as a child.
#![allow(dead_code)]

pub mod control_peer;
pub mod node_process;
pub mod udp_peer;
