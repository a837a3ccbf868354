//! Loopback ports with a known behaviour, for tests of what a client does when its peer is
//! not there.

use std::net::SocketAddr;

use tokio::net::TcpSocket;

/// A loopback address that refuses connections for as long as the returned socket lives:
/// bound (so nothing else can take the port) but never listening. Binding a listener and
/// dropping it would free the port for anyone, a race with every other test.
pub fn refusing_addr() -> (TcpSocket, SocketAddr) {
    let socket = TcpSocket::new_v4().expect("a TCP socket");
    socket
        .bind(([127, 0, 0, 1], 0).into())
        .expect("bind a loopback port");
    let addr = socket.local_addr().expect("its address");
    (socket, addr)
}
