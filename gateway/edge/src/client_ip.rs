//! The client's address. `X-Forwarded-For` is believed only when the peer is a trusted
//! proxy (`--trusted-proxy`); then the client is the rightmost address that is not
//! itself a trusted proxy. From anyone else the header is ignored, so rotating it does
//! not give a client a fresh rate limit or login budget.

use std::net::IpAddr;

/// An address or a CIDR block (`10.0.0.0/8`, `::1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpBlock {
    network: IpAddr,
    prefix_bits: u8,
}

impl std::str::FromStr for IpBlock {
    type Err = String;

    fn from_str(text: &str) -> Result<IpBlock, String> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address.trim().parse().map_err(|_| format!("{text:?} is not an IP address or block"))?;
        let width = if network.is_ipv4() { 32 } else { 128 };
        let prefix_bits = match prefix {
            Some(prefix) => {
                prefix.parse::<u8>().ok().filter(|bits| *bits <= width).ok_or(format!("{text:?}: bad prefix"))?
            }
            None => width,
        };
        Ok(IpBlock { network, prefix_bits })
    }
}

impl IpBlock {
    pub fn contains(&self, address: IpAddr) -> bool {
        fn masked(bits: u128, width: u32, prefix: u32) -> u128 {
            if prefix == 0 { 0 } else { bits >> (width - prefix) }
        }
        let prefix = u32::from(self.prefix_bits);
        match (self.network, address.to_canonical()) {
            (IpAddr::V4(network), IpAddr::V4(address)) => {
                masked(u32::from(network).into(), 32, prefix) == masked(u32::from(address).into(), 32, prefix)
            }
            (IpAddr::V6(network), IpAddr::V6(address)) => {
                masked(u128::from(network), 128, prefix) == masked(u128::from(address), 128, prefix)
            }
            _ => false,
        }
    }
}

/// The client address of a request from `peer` carrying `forwarded_for` (the
/// comma-joined `X-Forwarded-For` values, if any).
pub fn client_address(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[IpBlock]) -> IpAddr {
    let is_trusted = |address: IpAddr| trusted.iter().any(|block| block.contains(address));
    let peer = peer.to_canonical();
    if !is_trusted(peer) {
        return peer;
    }
    let Some(forwarded_for) = forwarded_for else { return peer };
    let mut client = peer;
    for hop in forwarded_for.rsplit(',') {
        let Ok(address) = hop.trim().parse::<IpAddr>() else {
            // A malformed hop: stop at the last address we could trust.
            return client;
        };
        client = address.to_canonical();
        if !is_trusted(client) {
            return client;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<IpBlock> = vec!["10.0.0.0/8".parse().unwrap(), "::1".parse().unwrap()];
        assert_eq!(client_address(ip("203.0.113.9"), Some("1.2.3.4"), &trusted), ip("203.0.113.9"));
        assert_eq!(client_address(ip("10.1.2.3"), Some("1.2.3.4"), &trusted), ip("1.2.3.4"));
        assert_eq!(client_address(ip("10.1.2.3"), Some("6.6.6.6, 1.2.3.4, 10.9.9.9"), &trusted), ip("1.2.3.4"));
        assert_eq!(client_address(ip("10.1.2.3"), None, &trusted), ip("10.1.2.3"));
        assert_eq!(client_address(ip("10.1.2.3"), Some("junk, 10.2.2.2"), &trusted), ip("10.2.2.2"));
        assert_eq!(client_address(ip("::1"), Some("1.2.3.4"), &trusted), ip("1.2.3.4"));
        assert_eq!(client_address(ip("::ffff:10.0.0.1"), Some("1.2.3.4"), &trusted), ip("1.2.3.4"));
        assert!("10.0.0.0/33".parse::<IpBlock>().is_err());
        assert!("nope".parse::<IpBlock>().is_err());
        assert!("0.0.0.0/0".parse::<IpBlock>().unwrap().contains(ip("8.8.8.8")));
    }
}
