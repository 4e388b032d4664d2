//! Port selection: never assume a fixed port is free (a developer may already run a
//! stack, or another project may sit on Supabase's default ports).

use std::net::{Ipv4Addr, TcpListener};

/// `preferred` when it can be bound on 127.0.0.1, otherwise any free port.
pub fn preferred_or_free(preferred: u16) -> std::io::Result<u16> {
    if TcpListener::bind((Ipv4Addr::LOCALHOST, preferred)).is_ok() {
        return Ok(preferred);
    }
    free_port()
}

/// A port the kernel considers free right now on 127.0.0.1.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// A UDP port free right now on 127.0.0.1 (QUIC and media listeners).
pub fn free_udp_port() -> std::io::Result<u16> {
    Ok(std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}
