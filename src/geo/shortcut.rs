//! A shortcut into a GeoIP database's IPv4 search tree: the node each 16-bit address prefix
//! leads to, worked out once when [`GeoDb`](super::GeoDb) opens the file. Looking up an address
//! seen for the first time then starts 16 levels down instead of reading those 16 nodes one
//! after another, each in a different part of a tree of tens of megabytes.

/// Address bits the table answers for: 65,536 entries of 4 bytes, 256 KiB per database.
const TABLE_BITS: u32 = 16;

/// Where a walk of the IPv4 subtree ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    /// The record at this offset of the data section.
    Data(usize),
    /// The database has nothing for the address.
    None,
}

/// The first [`TABLE_BITS`] levels of the IPv4 subtree as a table; see the module's text.
pub struct Ipv4Shortcut {
    /// Per 16-bit prefix: the node the walk goes on from (below `node_count`), or the record
    /// value it already ended on (a data pointer, or `node_count` for "no data").
    entries: Box<[u32]>,
    node_count: usize,
    /// Bytes per node: 6, 7 or 8 for 24-, 28- and 32-bit records.
    node_bytes: usize,
}

impl std::fmt::Debug for Ipv4Shortcut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ipv4Shortcut")
            .field("node_count", &self.node_count)
            .field("node_bytes", &self.node_bytes)
            .finish_non_exhaustive()
    }
}

impl Ipv4Shortcut {
    /// Build the table for the tree at the start of `file`. `None` when the layout is not one
    /// the format defines, or when the tree does not fit the file: lookups then take the
    /// crate's walk only.
    pub fn build(
        file: &[u8],
        node_count: usize,
        record_size: u16,
        ip_version: u16,
    ) -> Option<Self> {
        let node_bytes = match record_size {
            24 => 6,
            28 => 7,
            32 => 8,
            _ => return None,
        };
        if node_count > u32::MAX as usize || node_count.checked_mul(node_bytes)? > file.len() {
            return None;
        }
        let mut shortcut = Self {
            entries: Box::default(),
            node_count,
            node_bytes,
        };
        // An IPv6 tree holds IPv4 as ::a.b.c.d: 96 zero bits lead to its IPv4 subtree.
        let mut start = 0;
        if ip_version == 6 {
            for _ in 0..96 {
                if start >= node_count {
                    break;
                }
                start = shortcut.child(file, start, 0)?;
            }
        }
        // Level by level: the entries of one level are the children of the level above, in
        // address order (a walk that already ended stays where it ended).
        let mut entries = vec![u32::try_from(start).ok()?];
        for _ in 0..TABLE_BITS {
            let mut next = Vec::with_capacity(entries.len() * 2);
            for &node in &entries {
                let node = node as usize;
                for side in 0..2 {
                    let child = if node < node_count {
                        shortcut.child(file, node, side)?
                    } else {
                        node
                    };
                    next.push(u32::try_from(child).ok()?);
                }
            }
            entries = next;
        }
        shortcut.entries = entries.into_boxed_slice();
        Some(shortcut)
    }

    /// The record the tree holds for `ip`: the same answer as walking it from the root (a
    /// pointer into the 16-byte separator, which the reader refuses and verification rules
    /// out, is no data here). `None` only if a node read falls outside the file, which the
    /// size check in [`build`](Self::build) already rules out.
    #[inline]
    pub fn record(&self, file: &[u8], ip: u32) -> Option<Record> {
        let mut node = *self.entries.get((ip >> (32 - TABLE_BITS)) as usize)? as usize;
        for bit in (0..32 - TABLE_BITS).rev() {
            if node >= self.node_count {
                break;
            }
            node = self.child(file, node, ((ip >> bit) & 1) as usize)?;
        }
        // Past the tree's nodes and the 16-byte separator: an offset in the data section.
        // Still on a node (the tree is deeper than an address) is no data, as in the crate.
        Some(match node.checked_sub(self.node_count + 16) {
            Some(offset) => Record::Data(offset),
            None => Record::None,
        })
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

    /// A database of `count` random networks (nested ones overwrite), each record naming it.
    fn database(version: IpVersion, size: RecordSize, count: usize, seed: u64) -> Vec<u8> {
        let mut rng = fastrand::Rng::with_seed(seed);
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
            let _ = writer.insert(net.trunc(), &std::collections::BTreeMap::from([("n", i)]));
        }
        writer.to_bytes().unwrap()
    }

    fn crate_record(reader: &Reader<&[u8]>, ip: u32) -> Record {
        let result = reader.lookup(IpAddr::V4(Ipv4Addr::from(ip))).unwrap();
        result.offset().map_or(Record::None, Record::Data)
    }

    #[test]
    fn the_shortcut_finds_the_crates_record_for_every_layout() {
        let sizes = [RecordSize::Bits24, RecordSize::Bits28, RecordSize::Bits32];
        for (i, size) in sizes.into_iter().enumerate() {
            for version in [IpVersion::V4, IpVersion::V6] {
                let file = database(version, size, 3000, i as u64);
                let reader = Reader::from_source(file.as_slice()).unwrap();
                let m = reader.metadata();
                let shortcut =
                    Ipv4Shortcut::build(&file, m.node_count as usize, m.record_size, m.ip_version)
                        .unwrap_or_else(|| panic!("{size:?} {version:?}: no shortcut"));
                let mut rng = fastrand::Rng::with_seed(99);
                let (mut found, mut none) = (0, 0);
                // Random addresses, and both ends of every /16 and /24 around some of them.
                for _ in 0..20_000 {
                    let ip = rng.u32(..);
                    for ip in [ip, ip & !0xffff, ip | 0xffff, ip & !0xff, ip | 0xff] {
                        let ours = shortcut.record(&file, ip).unwrap();
                        assert_eq!(ours, crate_record(&reader, ip), "{size:?} {version:?} {ip}");
                        match ours {
                            Record::Data(_) => found += 1,
                            Record::None => none += 1,
                        }
                    }
                }
                // Both answers were exercised.
                assert!(
                    found > 1000 && none > 1000,
                    "{size:?} {version:?}: {found} {none}"
                );
            }
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
            let shortcut = Ipv4Shortcut {
                entries: Box::default(),
                node_count: 2,
                node_bytes,
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
        let file = database(IpVersion::V6, RecordSize::Bits28, 200, 5);
        let reader = Reader::from_source(file.as_slice()).unwrap();
        let m = reader.metadata();
        let (nodes, size, version) = (m.node_count as usize, m.record_size, m.ip_version);
        assert!(Ipv4Shortcut::build(&file, nodes, size, version).is_some());
        let cut = &file[..nodes * 7 - 1];
        assert!(Ipv4Shortcut::build(cut, nodes, size, version).is_none());
        assert!(Ipv4Shortcut::build(&file, nodes, 26, version).is_none());
        assert!(Ipv4Shortcut::build(&file, usize::MAX / 2, size, version).is_none());
        // A node count larger than the real one points walks at data bytes: whatever they
        // hold, a walk reads only inside the file and ends.
        if let Some(wrong) = Ipv4Shortcut::build(&file, nodes + 50, size, version) {
            for ip in [0u32, 1 << 31, u32::MAX, 0x0a00_0001] {
                let _ = wrong.record(&file, ip);
            }
        }
    }
}
