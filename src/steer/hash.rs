//! XXH64, the stable 64-bit hash consistent hashing uses for request keys and endpoint names.
//!
//! Used by [`super::maglev`] (endpoint places in the table) and by the decision (the request's
//! hash key). It must give the same value in every process and every version, so that all
//! Meridian instances behind one address send a key to the same endpoint: the std and foldhash
//! hashers are seeded per process and cannot serve. XXH64 with seed 0 is also what Envoy hashes
//! request keys with.

const P1: u64 = 0x9E37_79B1_85EB_CA87;
const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
const P3: u64 = 0x1656_67B1_9E37_79F9;
const P4: u64 = 0x85EB_CA77_C2B2_AE63;
const P5: u64 = 0x27D4_EB2F_1656_67C5;

fn round(acc: u64, input: u64) -> u64 {
    acc.wrapping_add(input.wrapping_mul(P2))
        .rotate_left(31)
        .wrapping_mul(P1)
}

fn merge(acc: u64, val: u64) -> u64 {
    (acc ^ round(0, val)).wrapping_mul(P1).wrapping_add(P4)
}

fn read_u64(b: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&b[..8]);
    u64::from_le_bytes(word)
}

fn read_u32(b: &[u8]) -> u64 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&b[..4]);
    u64::from(u32::from_le_bytes(word))
}

/// XXH64 of `input` with `seed`.
pub fn xxh64(input: &[u8], seed: u64) -> u64 {
    let len = input.len() as u64;
    let mut rest = input;
    let mut h = if rest.len() >= 32 {
        let mut v = [
            seed.wrapping_add(P1).wrapping_add(P2),
            seed.wrapping_add(P2),
            seed,
            seed.wrapping_sub(P1),
        ];
        while rest.len() >= 32 {
            for (i, lane) in v.iter_mut().enumerate() {
                *lane = round(*lane, read_u64(&rest[i * 8..]));
            }
            rest = &rest[32..];
        }
        let mut h = v[0]
            .rotate_left(1)
            .wrapping_add(v[1].rotate_left(7))
            .wrapping_add(v[2].rotate_left(12))
            .wrapping_add(v[3].rotate_left(18));
        for lane in v {
            h = merge(h, lane);
        }
        h
    } else {
        seed.wrapping_add(P5)
    };
    h = h.wrapping_add(len);
    while rest.len() >= 8 {
        h ^= round(0, read_u64(rest));
        h = h.rotate_left(27).wrapping_mul(P1).wrapping_add(P4);
        rest = &rest[8..];
    }
    if rest.len() >= 4 {
        h ^= read_u32(rest).wrapping_mul(P1);
        h = h.rotate_left(23).wrapping_mul(P2).wrapping_add(P3);
        rest = &rest[4..];
    }
    for b in rest {
        h ^= u64::from(*b).wrapping_mul(P5);
        h = h.rotate_left(11).wrapping_mul(P1);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(P2);
    h ^= h >> 29;
    h = h.wrapping_mul(P3);
    h ^ (h >> 32)
}

/// The next value in a key's probe sequence (SplitMix64's step): deterministic, and spread
/// over the whole table whatever the key.
pub fn next_probe(h: u64) -> u64 {
    let mut z = h.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xxh64_matches_the_reference_vectors() {
        // Reference values of the XXH64 specification's implementation, seed 0 unless named.
        let cases: [(&[u8], u64, u64); 4] = [
            (b"", 0, 0xEF46_DB37_51D8_E999),
            (b"a", 0, 0xD24E_C4F1_A98C_6E5B),
            (b"abc", 0, 0x44BC_2CF5_AD77_0999),
            // 39 bytes: one 32-byte stripe, then a 4-byte and three 1-byte tails.
            (
                b"Nobody inspects the spammish repetition",
                0,
                0xFBCE_A83C_8A37_8BF1,
            ),
        ];
        for (input, seed, want) in cases {
            assert_eq!(
                xxh64(input, seed),
                want,
                "{:?} seed {seed}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn the_seed_changes_the_hash() {
        assert_ne!(xxh64(b"10.0.0.1:80", 0), xxh64(b"10.0.0.1:80", 1));
    }

    #[test]
    fn probes_do_not_cycle_quickly() {
        let mut seen = std::collections::HashSet::new();
        let mut h = 42;
        for _ in 0..10_000 {
            assert!(seen.insert(h));
            h = next_probe(h);
        }
    }
}
