//! Where a DNS client is: the EDNS Client Subnet option (RFC 7871) when the resolver sent one
//! and is believed, else the resolver's own address; then its location through the same
//! overrides and GeoIP database as HTTP clients, the scope the answer holds for, and the
//! subnet key that fixes the steering draw.

use std::net::IpAddr;

use hickory_proto::rr::rdata::opt::ClientSubnet;

use crate::config::ClientSubnetTrust;
use crate::geo::Location;
use crate::table::RoutingTable;

/// The most address bits the steering draw depends on: a /24 or /56 shares one answer, as
/// resolvers cache it (RFC 7871 recommends sending no more).
pub const KEY_PREFIX_V4: u8 = 24;
pub const KEY_PREFIX_V6: u8 = 56;

/// The client as located for one query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DnsClient {
    /// The address located: the subnet's (masked) or the resolver's.
    pub addr: IpAddr,
    pub location: Location,
    /// The option to echo (with its scope set), when the query's subnet was used.
    pub subnet: Option<ClientSubnet>,
    /// Scope prefix for answers that depend on the client.
    pub scope: u8,
    /// Hash of the client's subnet: fixes the draw for weights and spill.
    pub key: u64,
}

/// Why a client-subnet option is refused (answered FORMERR, as RFC 7871 §7.1.2 asks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubnetError {
    /// SCOPE PREFIX-LENGTH must be 0 in a query.
    ScopeInQuery,
    /// SOURCE PREFIX-LENGTH longer than the address.
    PrefixTooLong,
    /// Address bits set past SOURCE PREFIX-LENGTH.
    BitsPastPrefix,
}

/// Locate the client of a query from `resolver`, carrying `subnet` if it sent one.
pub fn locate(
    table: &RoutingTable,
    trust: ClientSubnetTrust,
    resolver: IpAddr,
    subnet: Option<&ClientSubnet>,
) -> Result<DnsClient, SubnetError> {
    let resolver = resolver.to_canonical();
    let believed = match trust {
        ClientSubnetTrust::Any => true,
        ClientSubnetTrust::Trusted => table.geo.is_trusted(resolver),
        ClientSubnetTrust::Off => false,
    };
    let subnet = subnet.filter(|_| believed);
    let Some(subnet) = subnet else {
        return Ok(from_address(table, resolver));
    };
    check(subnet)?;
    let source = subnet.source_prefix();
    // SOURCE 0: the client asked that its address not be used; the resolver's stands in and
    // the answer holds for every client of it (scope 0).
    if source == 0 {
        let mut client = from_address(table, resolver);
        client.subnet = Some(ClientSubnet::new(subnet.addr(), 0, 0));
        client.scope = 0;
        return Ok(client);
    }
    let addr = mask(subnet.addr(), source);
    let (location, known) = table.geo.locate_with_prefix(addr);
    // The GeoIP network of an IPv4-mapped address (::ffff:a.b.c.d) is an IPv4 prefix: counted
    // in the query's family it is 96 bits longer.
    let known = known.map(|p| p.saturating_add(mapped_offset(addr)));
    // The answer depends on the network that located the client and on the draw (the first
    // /24 or /56): it holds for the longer of the two, and claims no more than was sent...
    let key_bits = source.min(key_prefix(addr));
    let held = known.map_or(source, |p| p.max(key_prefix(addr)).min(source));
    // ...nor any address of an override the client is not in (one nested in its network, or
    // inside the subnet sent). Past the subnet sent, that scope tells the resolver its subnet
    // was not specific enough (RFC 7871 §7.2.1).
    let clear = table
        .geo
        .prefix_clear_of_other_overrides(addr)
        .saturating_add(mapped_offset(addr));
    let scope = held.max(clear);
    Ok(DnsClient {
        addr,
        location,
        subnet: Some(ClientSubnet::new(addr, source, scope)),
        scope,
        key: subnet_key(addr, key_bits),
    })
}

fn from_address(table: &RoutingTable, addr: IpAddr) -> DnsClient {
    let location = table.geo.locate(addr);
    DnsClient {
        addr,
        location,
        subnet: None,
        scope: 0,
        key: subnet_key(addr, key_prefix(addr)),
    }
}

fn check(subnet: &ClientSubnet) -> Result<(), SubnetError> {
    if subnet.scope_prefix() != 0 {
        return Err(SubnetError::ScopeInQuery);
    }
    let bits = match subnet.addr() {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    };
    if subnet.source_prefix() > bits {
        return Err(SubnetError::PrefixTooLong);
    }
    if mask(subnet.addr(), subnet.source_prefix()) != subnet.addr() {
        return Err(SubnetError::BitsPastPrefix);
    }
    Ok(())
}

fn key_prefix(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => KEY_PREFIX_V4,
        IpAddr::V6(_) if mapped_offset(addr) > 0 => KEY_PREFIX_V4 + 96,
        IpAddr::V6(_) => KEY_PREFIX_V6,
    }
}

/// 96 for an IPv4-mapped IPv6 address, whose IPv4 part starts at bit 96; 0 otherwise.
fn mapped_offset(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => 96,
        _ => 0,
    }
}

/// `addr` with every bit past `prefix` cleared.
pub fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let keep = u32::MAX
                .checked_shl(32 - u32::from(prefix.min(32)))
                .unwrap_or(0);
            IpAddr::V4((bits & keep).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let keep = u128::MAX
                .checked_shl(128 - u32::from(prefix.min(128)))
                .unwrap_or(0);
            IpAddr::V6((bits & keep).into())
        }
    }
}

/// A stable hash of `addr`'s first `prefix` bits (and the prefix).
pub fn subnet_key(addr: IpAddr, prefix: u8) -> u64 {
    let mut bytes = [0u8; 18];
    let masked = mask(addr, prefix);
    let len = match masked {
        IpAddr::V4(v4) => {
            bytes[..4].copy_from_slice(&v4.octets());
            4
        }
        IpAddr::V6(v6) => {
            bytes[..16].copy_from_slice(&v6.octets());
            16
        }
    };
    bytes[len] = prefix;
    crate::steer::hash::xxh64(&bytes[..=len], 0x6765_6f64_6e73)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_cut_at_the_prefix() {
        let cases = [
            ("198.51.100.77", 24, "198.51.100.0"),
            ("198.51.100.77", 0, "0.0.0.0"),
            ("198.51.100.77", 32, "198.51.100.77"),
            ("198.51.100.77", 200, "198.51.100.77"),
            ("2001:db8:1:2::9", 48, "2001:db8:1::"),
            ("2001:db8:1:2::9", 128, "2001:db8:1:2::9"),
            ("2001:db8:1:2::9", 0, "::"),
        ];
        for (addr, prefix, want) in cases {
            let addr: IpAddr = addr.parse().unwrap();
            assert_eq!(
                mask(addr, prefix),
                want.parse::<IpAddr>().unwrap(),
                "{addr}/{prefix}"
            );
        }
    }

    #[test]
    fn subnet_keys_ignore_bits_past_the_prefix_only() {
        let a: IpAddr = "198.51.100.7".parse().unwrap();
        let b: IpAddr = "198.51.100.200".parse().unwrap();
        let c: IpAddr = "198.51.101.7".parse().unwrap();
        assert_eq!(subnet_key(a, 24), subnet_key(b, 24));
        assert_ne!(subnet_key(a, 24), subnet_key(c, 24));
        assert_ne!(subnet_key(a, 24), subnet_key(a, 16));
    }

    #[test]
    fn subnet_options_are_checked_as_rfc_7871_says() {
        let v4 = |a: &str, source, scope| ClientSubnet::new(a.parse().unwrap(), source, scope);
        let cases = [
            (v4("198.51.100.0", 24, 0), Ok(())),
            (v4("198.51.100.0", 24, 24), Err(SubnetError::ScopeInQuery)),
            (v4("198.51.100.0", 33, 0), Err(SubnetError::PrefixTooLong)),
            (v4("198.51.100.7", 24, 0), Err(SubnetError::BitsPastPrefix)),
            (v4("0.0.0.0", 0, 0), Ok(())),
            (v4("2001:db8:1::", 48, 0), Ok(())),
            (v4("2001:db8:1::", 129, 0), Err(SubnetError::PrefixTooLong)),
        ];
        for (subnet, want) in cases {
            assert_eq!(check(&subnet), want, "{subnet:?}");
        }
    }
}
