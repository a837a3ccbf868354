//! Who is logging in, as far as the throttle can tell: the TCP peer's network.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;

/// The unit one client is counted as. An IPv4 address is one client; an IPv6 client gets a
/// whole /64 from any ordinary provider (2^64 addresses to rotate through), so the /64 is
/// the unit there. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, from dual-stack sockets)
/// count as the IPv4 address they carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientNet {
    V4([u8; 4]),
    /// The first 64 bits.
    V6Prefix64(u64),
}

impl From<IpAddr> for ClientNet {
    fn from(address: IpAddr) -> Self {
        match address {
            IpAddr::V4(v4) => ClientNet::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientNet::V4(v4.octets()),
                None => ClientNet::V6Prefix64((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

impl std::fmt::Display for ClientNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientNet::V4(octets) => write!(f, "{}", std::net::Ipv4Addr::from(*octets)),
            ClientNet::V6Prefix64(prefix) => {
                write!(f, "{}/64", Ipv6Addr::from(u128::from(*prefix) << 64))
            }
        }
    }
}

/// The client's address as the TCP peer (see the module docs on proxies); `None` when the
/// server was not started with connection info (in-process router tests).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Infallible> {
        Ok(ClientAddr(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(addr)| addr.ip()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(address: &str) -> ClientNet {
        ClientNet::from(address.parse::<IpAddr>().unwrap())
    }

    #[test]
    fn ipv6_neighbours_in_one_64_are_one_client() {
        assert_eq!(
            net("2001:db8:1:2::1"),
            net("2001:db8:1:2:ffff:ffff:ffff:ffff")
        );
        assert_ne!(net("2001:db8:1:2::1"), net("2001:db8:1:3::1"));
        assert_eq!(net("2001:db8:1:2::1").to_string(), "2001:db8:1:2::/64");
    }

    #[test]
    fn ipv4_mapped_addresses_count_as_their_ipv4_address() {
        assert_eq!(net("::ffff:192.0.2.7"), net("192.0.2.7"));
        assert_ne!(net("::ffff:192.0.2.7"), net("192.0.2.8"));
        assert_eq!(net("::ffff:192.0.2.7").to_string(), "192.0.2.7");
    }

    #[test]
    fn ipv4_addresses_are_counted_one_by_one() {
        assert_ne!(net("192.0.2.7"), net("192.0.2.8"));
    }
}
