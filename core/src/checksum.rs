//! The integrity check of eisodos' shared-data records: a 32-bit hash of a record's payload,
//! seeded with a hash of the key it lives under, so that garbage of the right length, a
//! corrupted record or another key's record (another configuration's, or another record kind)
//! all fail the check and are taken as absent.
//!
//! Not a defence against someone forging records on purpose (anything that can write shared
//! data can compute it): a check against accidents, cheap enough for the request path. A
//! payload of `n` bytes costs about `n / 4` multiply-xor steps: a dozen instructions for a
//! three-backend in-flight table.

/// A key's seed: FNV-1a over its bytes (computed once per configuration, not per request).
pub fn seed(key: &str) -> u32 {
    key.bytes().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    })
}

/// The check of `payload` under `seed`: its little-endian 32-bit words (the last one padded
/// with zeros) and its length folded in multiply-xor steps, then mixed so that every input bit
/// reaches every output bit.
pub fn check(seed: u32, payload: &[u8]) -> u32 {
    let words = payload.chunks_exact(4);
    let tail = words.remainder();
    let mut hash = seed ^ u32::try_from(payload.len()).unwrap_or(u32::MAX);
    for word in words {
        let word = <[u8; 4]>::try_from(word).map_or(0, u32::from_le_bytes);
        hash = (hash ^ word).wrapping_mul(0x9e37_79b1).rotate_left(13);
    }
    if !tail.is_empty() {
        let mut last = [0; 4];
        for (to, from) in last.iter_mut().zip(tail) {
            *to = *from;
        }
        hash = (hash ^ u32::from_le_bytes(last))
            .wrapping_mul(0x9e37_79b1)
            .rotate_left(13);
    }
    // The finaliser of MurmurHash3.
    hash ^= hash >> 16;
    hash = hash.wrapping_mul(0x85eb_ca6b);
    hash ^= hash >> 13;
    hash = hash.wrapping_mul(0xc2b2_ae35);
    hash ^ (hash >> 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_check_depends_on_the_seed_every_byte_and_the_length() {
        let payload = [1_u8, 2, 3, 4, 5, 6, 7];
        let base = check(seed("a"), &payload);
        assert_eq!(base, check(seed("a"), &payload), "deterministic");
        assert_ne!(base, check(seed("b"), &payload), "another key");
        for i in 0..payload.len() {
            for bit in 0..8 {
                let mut flipped = payload;
                flipped[i] ^= 1 << bit;
                assert_ne!(base, check(seed("a"), &flipped), "byte {i} bit {bit}");
            }
        }
        assert_ne!(
            check(seed("a"), &[0; 4]),
            check(seed("a"), &[0; 8]),
            "zeros of another length"
        );
        assert_ne!(check(seed("a"), &[]), check(seed("a"), &[0]));
    }

    #[test]
    fn seeds_differ_per_key() {
        assert_ne!(
            seed("eisodos.p.inflight.abc"),
            seed("eisodos.p.inflight.abd")
        );
        assert_ne!(seed(""), seed("x"));
    }
}
