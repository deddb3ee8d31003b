//! Byte-level mutations of an input (the classic AFL set, without coverage feedback).

/// Values that sit on boundaries: sign bits, all ones, zero, ASCII structure.
const INTERESTING: &[u8] = &[
    0, 1, 0x7f, 0x80, 0xff, b'"', b'\\', b'{', b'}', b'[', b']', b',', b':', b';', b'=', b'&',
    b'?', b'#', b'-', b'.', b'0', b'9', b'e', b' ', b'\t', b'\n',
];

/// Applies one random mutation to `input`; `pool` supplies splices.
pub fn bytes(rng: &mut fastrand::Rng, input: &mut Vec<u8>, pool: &[Vec<u8>]) {
    let len = input.len();
    match rng.u8(..9) {
        // Flip a bit.
        0 if len > 0 => {
            let at = rng.usize(..len);
            if let Some(byte) = input.get_mut(at) {
                *byte ^= 1 << rng.u8(..8);
            }
        }
        // Set a byte to a random or a boundary value.
        1 if len > 0 => {
            let at = rng.usize(..len);
            let value = if rng.bool() {
                rng.u8(..)
            } else {
                INTERESTING
                    .get(rng.usize(..INTERESTING.len()))
                    .copied()
                    .unwrap_or(0)
            };
            if let Some(byte) = input.get_mut(at) {
                *byte = value;
            }
        }
        // Delete a range.
        2 if len > 0 => {
            let at = rng.usize(..len);
            let end = at.saturating_add(rng.usize(1..=16)).min(len);
            input.drain(at..end);
        }
        // Insert random bytes.
        3 => {
            let at = rng.usize(..=len);
            let new: Vec<u8> = (0..rng.usize(1..=16)).map(|_| rng.u8(..)).collect();
            input.splice(at..at, new);
        }
        // Duplicate a range (repeats fields, nests brackets).
        4 if len > 0 => {
            let at = rng.usize(..len);
            let end = at.saturating_add(rng.usize(1..=64)).min(len);
            let copy: Vec<u8> = input.get(at..end).map(<[u8]>::to_vec).unwrap_or_default();
            let to = rng.usize(..=len);
            input.splice(to..to, copy);
        }
        // Overwrite 2, 4 or 8 bytes with a boundary integer.
        5 if len >= 8 => {
            let at = rng.usize(..=len - 8);
            let value: u64 = match rng.u8(..5) {
                0 => 0,
                1 => u64::MAX,
                2 => u64::from(u32::MAX),
                3 => 1 << 63,
                _ => rng.u64(..),
            };
            let width = [2, 4, 8].get(rng.usize(..3)).copied().unwrap_or(8);
            if let Some(slot) = input.get_mut(at..at + width) {
                slot.copy_from_slice(value.to_le_bytes().get(..width).unwrap_or_default());
            }
        }
        // Splice in part of another seed.
        6 if !pool.is_empty() => {
            if let Some(other) = pool.get(rng.usize(..pool.len())) {
                if !other.is_empty() {
                    let from = rng.usize(..other.len());
                    let end = from.saturating_add(rng.usize(1..=256)).min(other.len());
                    let to = rng.usize(..=len);
                    let piece = other.get(from..end).map(<[u8]>::to_vec).unwrap_or_default();
                    input.splice(to..to, piece);
                }
            }
        }
        // Truncate.
        7 if len > 0 => input.truncate(rng.usize(..len)),
        // Grow a lot (long keys, 64 KiB values).
        8 if rng.u8(..16) == 0 => {
            let byte = rng.u8(..);
            let at = rng.usize(..=len);
            input.splice(at..at, std::iter::repeat_n(byte, rng.usize(1..=70_000)));
        }
        _ => input.push(rng.u8(..)),
    }
}
