//! Shortcuts into a GeoIP database's search tree: the node each 16-bit address prefix leads
//! to, one table for the IPv4 subtree and one for IPv6, worked out once when
//! [`GeoDb`](super::GeoDb) opens the file. Looking up an address seen for the first time then
//! starts 16 levels down instead of reading those 16 nodes one after another, each in a
//! different part of a tree of tens of megabytes.

/// Address bits a table answers for: 65,536 entries of 4 bytes, 256 KiB per table.
const TABLE_BITS: u32 = 16;

/// Where a walk of the tree ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    /// The record at this offset of the data section.
    Data(usize),
    /// The database has nothing for the address.
    None,
}

/// The first [`TABLE_BITS`] levels below a start node as a table; see the module's text.
pub struct TreeShortcut {
    /// Per 16-bit prefix: the node the walk goes on from (below `node_count`), or the record
    /// value it already ended on (a data pointer, or `node_count` for "no data").
    entries: Box<[u32]>,
    /// Per 16-bit prefix: how many address bits the walk had read when it ended within the
    /// table (16 where it goes on): the network's prefix for [`network`](Self::network).
    depths: Box<[u8]>,
    /// The walk to the IPv4 subtree of an IPv6 tree ended above it: IPv4 addresses then sit
    /// in a network that is not an IPv4 one, and have no IPv4 prefix.
    above_subtree: bool,
    node_count: usize,
    /// Bytes per node: 6, 7 or 8 for 24-, 28- and 32-bit records.
    node_bytes: usize,
    /// Address width in bits: 32 for the IPv4 table, 128 for the IPv6 one.
    width: u32,
}

impl std::fmt::Debug for TreeShortcut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TreeShortcut")
            .field("width", &self.width)
            .field("node_count", &self.node_count)
            .field("node_bytes", &self.node_bytes)
            .finish_non_exhaustive()
    }
}

impl TreeShortcut {
    /// The IPv4 table of the tree at the start of `file`. `None` when the record size is not
    /// one the format defines, or when the tree does not fit the file: lookups then take the
    /// crate's walk only.
    pub fn ipv4(file: &[u8], node_count: usize, record_size: u16, ip_version: u16) -> Option<Self> {
        let mut shortcut = Self::empty(file, node_count, record_size, 32)?;
        // An IPv6 tree holds IPv4 as ::a.b.c.d: 96 zero bits lead to its IPv4 subtree.
        let mut start = 0;
        if ip_version == 6 {
            for _ in 0..96 {
                if start >= node_count {
                    break;
                }
                start = shortcut.child(file, start, 0)?;
            }
            // Ended on a record, within the 96 bits or at the last of them: no IPv4 subtree.
            shortcut.above_subtree = start >= node_count;
        }
        shortcut.fill(file, start)?;
        Some(shortcut)
    }

    /// The IPv6 table (from the root); `None` for an IPv4-only database too.
    pub fn ipv6(file: &[u8], node_count: usize, record_size: u16, ip_version: u16) -> Option<Self> {
        if ip_version != 6 {
            return None;
        }
        let mut shortcut = Self::empty(file, node_count, record_size, 128)?;
        shortcut.fill(file, 0)?;
        Some(shortcut)
    }

    fn empty(file: &[u8], node_count: usize, record_size: u16, width: u32) -> Option<Self> {
        let node_bytes = match record_size {
            24 => 6,
            28 => 7,
            32 => 8,
            _ => return None,
        };
        if node_count > u32::MAX as usize || node_count.checked_mul(node_bytes)? > file.len() {
            return None;
        }
        Some(Self {
            entries: Box::default(),
            depths: Box::default(),
            above_subtree: false,
            node_count,
            node_bytes,
            width,
        })
    }

    /// Fill the table from `start`, level by level: the entries of one level are the children
    /// of the level above, in address order (a walk that already ended stays where it ended).
    fn fill(&mut self, file: &[u8], start: usize) -> Option<()> {
        // (node or record, bits read when the walk reached it)
        let mut entries = vec![(u32::try_from(start).ok()?, 0u8)];
        for level in 1..=TABLE_BITS as u8 {
            let mut next = Vec::with_capacity(entries.len() * 2);
            for &(node, depth) in &entries {
                for side in 0..2 {
                    next.push(if (node as usize) < self.node_count {
                        let child = self.child(file, node as usize, side)?;
                        (u32::try_from(child).ok()?, level)
                    } else {
                        (node, depth)
                    });
                }
            }
            entries = next;
        }
        self.entries = entries.iter().map(|&(node, _)| node).collect();
        self.depths = entries.iter().map(|&(_, depth)| depth).collect();
        Some(())
    }

    /// The record the tree holds for `address` (an IPv4 address in the low 32 bits for the
    /// IPv4 table): the same answer as walking the tree from the top (a pointer into the
    /// 16-byte separator, which the reader refuses and verification rules out, is no data
    /// here). `None` only if a node read falls outside the file, which the size check when the
    /// table was made already rules out.
    #[inline]
    pub fn record(&self, file: &[u8], address: u128) -> Option<Record> {
        let rest = self.width - TABLE_BITS;
        let top = (address >> rest) as usize & ((1 << TABLE_BITS) - 1);
        let node = *self.entries.get(top)? as usize;
        // The IPv4 table's addresses fit 32 bits, where shifts are one instruction.
        let node = if self.width == 32 {
            let ip = address as u32;
            self.walk(
                file,
                node,
                (0..rest).rev().map(|bit| ((ip >> bit) & 1) as usize),
            )?
        } else {
            self.walk(
                file,
                node,
                (0..rest).rev().map(|bit| ((address >> bit) & 1) as usize),
            )?
        };
        Some(self.ended(node))
    }

    /// What a walk that stopped on `node` found. Past the tree's nodes and the 16-byte
    /// separator: an offset in the data section. Still on a node (the tree is deeper than an
    /// address) is no data, as in the crate.
    #[inline]
    fn ended(&self, node: usize) -> Record {
        match node.checked_sub(self.node_count + 16) {
            Some(offset) => Record::Data(offset),
            None => Record::None,
        }
    }

    /// [`record`](Self::record) with the prefix length of the network it holds `address` in
    /// (the bits the walk read; for the IPv4 table, IPv4 bits). The prefix is `None` for the
    /// IPv4 table of an IPv6 tree whose walk ended above the IPv4 subtree.
    pub fn network(&self, file: &[u8], address: u128) -> Option<(Record, Option<u8>)> {
        let rest = self.width - TABLE_BITS;
        let top = (address >> rest) as usize & ((1 << TABLE_BITS) - 1);
        let mut node = *self.entries.get(top)? as usize;
        let mut depth = u32::from(*self.depths.get(top)?);
        for bit in (0..rest).rev() {
            if node >= self.node_count {
                break;
            }
            node = self.child(file, node, ((address >> bit) & 1) as usize)?;
            depth += 1;
        }
        let prefix = (!self.above_subtree)
            .then(|| u8::try_from(depth).ok())
            .flatten();
        Some((self.ended(node), prefix))
    }

    /// From `node`, one step per side taken (0 left, 1 right) until a record ends the walk.
    #[inline]
    fn walk(
        &self,
        file: &[u8],
        mut node: usize,
        sides: impl Iterator<Item = usize>,
    ) -> Option<usize> {
        for side in sides {
            if node >= self.node_count {
                break;
            }
            node = self.child(file, node, side)?;
        }
        Some(node)
    }

    /// Record `side` (0 left, 1 right) of `node`.
    #[inline]
    fn child(&self, file: &[u8], node: usize, side: usize) -> Option<usize> {
        let at = node * self.node_bytes;
        let be = |b: &[u8]| b.iter().fold(0usize, |v, &x| v << 8 | usize::from(x));
        match self.node_bytes {
            6 => {
                let n: &[u8; 6] = file.get(at..at + 6)?.try_into().ok()?;
                Some(if side == 0 { be(&n[..3]) } else { be(&n[3..]) })
            }
            7 => {
                let n: &[u8; 7] = file.get(at..at + 7)?.try_into().ok()?;
                Some(if side == 0 {
                    usize::from(n[3] >> 4) << 24 | be(&n[..3])
                } else {
                    usize::from(n[3] & 0x0f) << 24 | be(&n[4..])
                })
            }
            _ => {
                let n: &[u8; 8] = file.get(at..at + 8)?.try_into().ok()?;
                Some(if side == 0 { be(&n[..4]) } else { be(&n[4..]) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use ipnet::{IpNet, Ipv4Net, Ipv6Net};
    use maxminddb::Reader;
    use mmdb_writer::{IpVersion, RecordSize, Writer};

    use super::*;

    /// A database of `count` random networks (nested ones overwrite), each record naming it;
    /// with the networks inserted.
    fn database(
        version: IpVersion,
        size: RecordSize,
        count: usize,
        seed: u64,
    ) -> (Vec<u8>, Vec<IpNet>) {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut networks = Vec::new();
        let mut writer = Writer::builder("Shortcut-Test")
            .ip_version(version)
            .record_size(size)
            .description(&[("en", "shortcut test")])
            .build();
        for i in 0..count {
            let v4 = Ipv4Net::new(Ipv4Addr::from(rng.u32(..)), rng.u8(8..=32)).unwrap();
            let net = match version {
                IpVersion::V6 if i % 4 == 0 => {
                    IpNet::V6(Ipv6Net::new(Ipv6Addr::from(rng.u128(..)), rng.u8(16..=64)).unwrap())
                }
                _ => IpNet::V4(v4),
            };
            // Inserts into reserved or aliased space are refused; those networks are skipped.
            if writer
                .insert(net.trunc(), &std::collections::BTreeMap::from([("n", i)]))
                .is_ok()
            {
                networks.push(net.trunc());
            }
        }
        (writer.to_bytes().unwrap(), networks)
    }

    fn crate_record(reader: &Reader<&[u8]>, ip: IpAddr) -> Record {
        let result = reader.lookup(ip).unwrap();
        result.offset().map_or(Record::None, Record::Data)
    }

    /// Our walk against the crate's; counts (found, none).
    fn compare(
        shortcut: &TreeShortcut,
        file: &[u8],
        reader: &Reader<&[u8]>,
        addresses: impl Iterator<Item = IpAddr>,
    ) -> (usize, usize) {
        let (mut found, mut none) = (0, 0);
        for ip in addresses {
            let bits = match ip {
                IpAddr::V4(v4) => u128::from(u32::from(v4)),
                IpAddr::V6(v6) => u128::from(v6),
            };
            let ours = shortcut.record(file, bits).unwrap();
            assert_eq!(ours, crate_record(reader, ip), "{ip}");
            let network = reader.lookup(ip).unwrap().network().unwrap();
            let theirs = (network.is_ipv4() == ip.is_ipv4()).then(|| network.prefix());
            assert_eq!(
                shortcut.network(file, bits).unwrap(),
                (ours, theirs),
                "{ip} in {network}"
            );
            match ours {
                Record::Data(_) => found += 1,
                Record::None => none += 1,
            }
        }
        (found, none)
    }

    #[test]
    fn the_shortcuts_find_the_crates_record_for_every_layout() {
        let sizes = [RecordSize::Bits24, RecordSize::Bits28, RecordSize::Bits32];
        for (i, size) in sizes.into_iter().enumerate() {
            for version in [IpVersion::V4, IpVersion::V6] {
                let (file, networks) = database(version, size, 3000, i as u64);
                let reader = Reader::from_source(file.as_slice()).unwrap();
                let m = reader.metadata();
                let (nodes, bits, ip_version) =
                    (m.node_count as usize, m.record_size, m.ip_version);
                let what = format!("{size:?} {version:?}");
                let v4 = TreeShortcut::ipv4(&file, nodes, bits, ip_version)
                    .unwrap_or_else(|| panic!("{what}: no IPv4 shortcut"));
                let mut rng = fastrand::Rng::with_seed(99);
                // Random addresses, and both ends of the /16 and the /24 around each.
                let addresses = (0..20_000).flat_map(|_| {
                    let ip = rng.u32(..);
                    [ip, ip & !0xffff, ip | 0xffff, ip & !0xff, ip | 0xff]
                        .map(|ip| IpAddr::V4(Ipv4Addr::from(ip)))
                });
                let (found, none) = compare(&v4, &file, &reader, addresses);
                // Both answers were exercised.
                assert!(found > 1000 && none > 1000, "{what}: {found} {none}");

                let v6 = TreeShortcut::ipv6(&file, nodes, bits, ip_version);
                if version == IpVersion::V4 {
                    assert!(v6.is_none(), "{what}: an IPv6 table for an IPv4 tree");
                    continue;
                }
                let v6 = v6.unwrap_or_else(|| panic!("{what}: no IPv6 shortcut"));
                // Inside and at the ends of each inserted IPv6 network, IPv4 addresses in
                // their ::a.b.c.d form, and random addresses (mostly in no network).
                let mut addresses = Vec::new();
                for net in networks.iter().filter_map(|n| match n {
                    IpNet::V6(n) => Some(*n),
                    IpNet::V4(_) => None,
                }) {
                    let (low, high) = (u128::from(net.network()), u128::from(net.broadcast()));
                    let inside = low + rng.u128(..=(high - low));
                    addresses.extend([
                        low,
                        high,
                        inside,
                        low.wrapping_sub(1),
                        high.wrapping_add(1),
                    ]);
                }
                addresses.extend((0..5_000).map(|_| u128::from(rng.u32(..))));
                addresses.extend((0..5_000).map(|_| rng.u128(..)));
                let addresses = addresses.into_iter().map(|a| IpAddr::V6(Ipv6Addr::from(a)));
                let (found, none) = compare(&v6, &file, &reader, addresses);
                assert!(found > 1000 && none > 1000, "{what} IPv6: {found} {none}");
            }
        }
    }

    /// An IPv6 tree with a record for `::/16`, or for `::/96` itself, ends every IPv4 walk
    /// on a record before the IPv4 subtree: the same record as the crate, and no IPv4 prefix
    /// (the crate's network is the IPv6 one).
    #[test]
    fn ipv4_addresses_answered_above_their_subtree_have_no_ipv4_prefix() {
        for net in ["::/16", "::/95", "::/96"] {
            ipv4_above_subtree(net.parse().unwrap());
        }
    }

    fn ipv4_above_subtree(net: IpNet) {
        let mut writer = Writer::builder("Shortcut-Test")
            .ip_version(IpVersion::V6)
            .record_size(RecordSize::Bits28)
            .description(&[("en", "shortcut test")])
            .build();
        writer
            .insert(net, &std::collections::BTreeMap::from([("n", 1)]))
            .unwrap();
        let file = writer.to_bytes().unwrap();
        let reader = Reader::from_source(file.as_slice()).unwrap();
        let m = reader.metadata();
        let v4 =
            TreeShortcut::ipv4(&file, m.node_count as usize, m.record_size, m.ip_version).unwrap();
        assert!(v4.above_subtree, "{net}");
        for ip in ["192.0.2.1", "0.0.0.0", "255.255.255.255"] {
            let ip: IpAddr = ip.parse().unwrap();
            let IpAddr::V4(v4_ip) = ip else {
                unreachable!()
            };
            let theirs = reader.lookup(ip).unwrap().network().unwrap();
            assert_eq!(theirs.to_string(), net.to_string(), "{ip} under {net}");
            let ours = v4.network(&file, u128::from(u32::from(v4_ip))).unwrap();
            assert_eq!(ours, (crate_record(&reader, ip), None), "{ip} under {net}");
            assert!(matches!(ours.0, Record::Data(_)), "{ip} under {net}");
        }
    }

    /// The format's three node layouts, with every bit of both records set apart: 28-bit
    /// records share a middle byte, the left record taking its high nibble.
    #[test]
    fn nodes_are_read_in_each_record_size() {
        let cases: [(usize, &[u8], usize, usize); 3] = [
            (
                6,
                &[0x12, 0x34, 0x56, 0xab, 0xcd, 0xef],
                0x12_3456,
                0xab_cdef,
            ),
            (
                7,
                &[0x12, 0x34, 0x56, 0xab, 0x78, 0x9a, 0xbc],
                0xa12_3456,
                0xb78_9abc,
            ),
            (
                8,
                &[0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0],
                0x1234_5678,
                0x9abc_def0,
            ),
        ];
        for (node_bytes, node, left, right) in cases {
            let shortcut = TreeShortcut {
                entries: Box::default(),
                depths: Box::default(),
                above_subtree: false,
                node_count: 2,
                node_bytes,
                width: 32,
            };
            // Node 1 of a two-node tree.
            let file = [vec![0; node_bytes], node.to_vec()].concat();
            assert_eq!(shortcut.child(&file, 1, 0), Some(left), "{node_bytes}");
            assert_eq!(shortcut.child(&file, 1, 1), Some(right), "{node_bytes}");
            assert_eq!(shortcut.child(&file, 2, 0), None, "{node_bytes}");
        }
    }

    #[test]
    fn a_tree_that_does_not_fit_its_file_gets_no_shortcut() {
        let (file, _) = database(IpVersion::V6, RecordSize::Bits28, 200, 5);
        let reader = Reader::from_source(file.as_slice()).unwrap();
        let m = reader.metadata();
        let (nodes, size, version) = (m.node_count as usize, m.record_size, m.ip_version);
        for make in [TreeShortcut::ipv4, TreeShortcut::ipv6] {
            assert!(make(&file, nodes, size, version).is_some());
            let cut = &file[..nodes * 7 - 1];
            assert!(make(cut, nodes, size, version).is_none());
            assert!(make(&file, nodes, 26, version).is_none());
            assert!(make(&file, usize::MAX / 2, size, version).is_none());
            // A node count larger than the real one points walks at data bytes: whatever they
            // hold, a walk reads only inside the file and ends.
            if let Some(wrong) = make(&file, nodes + 50, size, version) {
                for address in [0, 1 << 31, u128::from(u32::MAX), u128::MAX, 0x0a00_0001] {
                    let _ = wrong.record(&file, address);
                }
            }
        }
    }
}
