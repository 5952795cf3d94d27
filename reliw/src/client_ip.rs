//! Who the client is: the socket peer, unless the peer is one of the
//! `trusted_proxies`; only then is the configured header believed. That
//! address is what rate limits count, what WAF verdicts ban and what the
//! access log shows, so a client cannot name someone else by sending a
//! header.
//!
//! `x-forwarded-for` is read from the right: each proxy appends the
//! address it saw, so the right-most entry that is not itself a trusted
//! proxy is the client. `x-real-ip` is one address.

use std::net::{IpAddr, SocketAddr};

use crate::http::RequestHead;
use crate::shield::addr::Cidr;

/// The client address of a request that came from `peer`.
pub fn client_address(peer: IpAddr, req: &RequestHead, trusted: &[Cidr], header: &str) -> IpAddr {
    let peer = peer.to_canonical();
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let mut values = req
        .headers()
        .filter(|(n, _)| *n == header)
        .filter_map(|(_, v)| std::str::from_utf8(v).ok());
    if header == "x-real-ip" {
        return values.next_back().and_then(parse).unwrap_or(peer);
    }
    // Several X-Forwarded-For lines are one list, in order.
    let hops: Vec<&str> = values.flat_map(|v| v.split(',')).collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        match parse(hop) {
            Some(ip) => {
                client = ip;
                if !is_trusted(ip) {
                    return ip;
                }
            }
            // Garbage from beyond the last trusted hop: stop there.
            None => return client,
        }
    }
    client
}

/// An address as proxies write it: `ip`, `ip:port` or `[v6]:port`.
fn parse(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    text.parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(headers: &str) -> RequestHead {
        crate::http::test_head(&format!("GET / HTTP/1.1\r\nHost: a\r\n{headers}\r\n"))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn untrusted_peers_are_the_client_whatever_they_send() {
        let trusted: Vec<Cidr> = vec![];
        let req = head("X-Forwarded-For: 198.18.0.9\r\nX-Real-IP: 198.18.0.8\r\n");
        assert_eq!(
            client_address(ip("198.18.0.1"), &req, &trusted, "x-forwarded-for"),
            ip("198.18.0.1")
        );
        assert_eq!(
            client_address(ip("198.18.0.1"), &req, &trusted, "x-real-ip"),
            ip("198.18.0.1")
        );
    }

    #[test]
    fn trusted_proxies_name_the_right_most_untrusted_hop() {
        let trusted: Vec<Cidr> = ["10.0.0.0/8", "::ffff:127.0.0.1/128"]
            .iter()
            .filter_map(|c| c.parse().ok())
            .collect();
        let proxy = ip("10.1.1.1");
        let req =
            head("X-Forwarded-For: 203.0.113.50, 198.18.0.7\r\nX-Forwarded-For: 10.2.2.2\r\n");
        assert_eq!(
            client_address(proxy, &req, &trusted, "x-forwarded-for"),
            ip("198.18.0.7")
        );
        let req = head("X-Forwarded-For: 10.3.3.3, 10.2.2.2\r\n");
        assert_eq!(
            client_address(proxy, &req, &trusted, "x-forwarded-for"),
            ip("10.3.3.3")
        );
        let req = head("X-Forwarded-For: 198.18.0.7, junk, 10.2.2.2\r\n");
        assert_eq!(
            client_address(proxy, &req, &trusted, "x-forwarded-for"),
            ip("10.2.2.2")
        );
        let req = head("X-Forwarded-For: [fd00:198:18::5]:4711\r\n");
        assert_eq!(
            client_address(proxy, &req, &trusted, "x-forwarded-for"),
            ip("fd00:198:18::5")
        );
        assert_eq!(
            client_address(proxy, &head(""), &trusted, "x-forwarded-for"),
            proxy
        );
        let req = head("X-Real-IP: 198.18.0.3\r\n");
        assert_eq!(
            client_address(proxy, &req, &trusted, "x-real-ip"),
            ip("198.18.0.3")
        );
        // A v4-mapped peer is the same peer.
        assert_eq!(
            client_address(ip("::ffff:10.1.1.1"), &req, &trusted, "x-real-ip"),
            ip("198.18.0.3")
        );
    }
}
