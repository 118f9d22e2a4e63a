//! Fixed-width base62 (0-9, A-Z, a-z) for secrets: URL-, shell- and YAML-safe, double-click selectable.

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Encodes `bytes` as a big-endian number in exactly `width` base62 digits (left-padded with '0').
/// `width` must be large enough for the input length; callers use fixed sizes.
pub(crate) fn encode(bytes: &[u8], width: usize) -> String {
    let mut num = bytes.to_vec();
    let mut digits = Vec::with_capacity(width);
    while digits.len() < width {
        let mut rem: u32 = 0;
        for b in num.iter_mut() {
            let acc = (rem << 8) | u32::from(*b);
            *b = (acc / 62) as u8;
            rem = acc % 62;
        }
        digits.push(ALPHABET[rem as usize]);
    }
    debug_assert!(num.iter().all(|b| *b == 0), "width too small for input");
    digits.reverse();
    digits.into_iter().map(char::from).collect()
}

pub(crate) fn is_base62(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_fixed_width() {
        assert_eq!(encode(&[0], 3), "000");
        assert_eq!(encode(&[61], 2), "0z");
        assert_eq!(encode(&[62], 2), "10");
        assert_eq!(encode(&[0xff; 32], 43).len(), 43);
        assert!(!encode(&[0xff; 32], 43).starts_with('0'));
    }
}
