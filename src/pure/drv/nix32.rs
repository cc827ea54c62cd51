//! Nix's base-32: its own alphabet (no e, o, u, t) and its own bit order (last character first).

use thiserror::Error;

pub const ALPHABET: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// Length of the nix32 encoding of `bytes` bytes.
pub const fn encoded_len(bytes: usize) -> usize {
    if bytes == 0 {
        0
    } else {
        (bytes * 8 - 1) / 5 + 1
    }
}

pub fn encode(hash: &[u8]) -> String {
    let len = encoded_len(hash.len());
    let mut out = String::with_capacity(len);
    for n in (0..len).rev() {
        let b = n * 5;
        let i = b / 8;
        let j = b % 8;
        let lo = (hash[i] as u16) >> j;
        let hi = if i + 1 < hash.len() {
            (hash[i + 1] as u16) << (8 - j)
        } else {
            0
        };
        out.push(ALPHABET[((lo | hi) & 0x1f) as usize] as char);
    }
    out
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum Nix32Error {
    #[error("invalid character {0:?} in a nix32 string (allowed: 0-9 and a-z without e, o, u, t)")]
    BadChar(char),
    #[error("nix32 string of {got} characters, expected {expected}")]
    BadLength { got: usize, expected: usize },
    #[error("nix32 string encodes more bits than {0} bytes hold")]
    Overflow(usize),
}

/// Character → digit value, 0xff for characters outside the alphabet.
const DIGITS: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 32 {
        t[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    t
};

fn digit(c: u8) -> Option<u8> {
    match DIGITS[c as usize] {
        0xff => None,
        d => Some(d),
    }
}

/// Decode into exactly `size` bytes.
pub fn decode(s: &str, size: usize) -> Result<Vec<u8>, Nix32Error> {
    let bytes = s.as_bytes();
    let expected = encoded_len(size);
    if bytes.len() != expected {
        return Err(Nix32Error::BadLength {
            got: bytes.len(),
            expected,
        });
    }
    let mut hash = vec![0u8; size];
    for n in 0..bytes.len() {
        let c = bytes[bytes.len() - n - 1];
        let d = digit(c).ok_or(Nix32Error::BadChar(c as char))? as u16;
        let b = n * 5;
        let i = b / 8;
        let j = b % 8;
        hash[i] |= (d << j) as u8;
        let carry = d >> (8 - j);
        if i + 1 < size {
            hash[i + 1] |= carry as u8;
        } else if carry != 0 {
            return Err(Nix32Error::Overflow(size));
        }
    }
    Ok(hash)
}

/// Nix's `compressHash`: XOR-fold a digest down to `size` bytes (20 for store paths).
pub fn fold(hash: &[u8], size: usize) -> Vec<u8> {
    let mut out = vec![0u8; size];
    for (i, b) in hash.iter().enumerate() {
        out[i % size] ^= b;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_vector() {
        // sha256("") in nix32, as `nix-hash --type sha256 --to-base32` prints it.
        let h = hex_decode("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(
            encode(&h),
            "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73"
        );
    }

    fn hex_decode(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    proptest! {
        #[test]
        fn round_trip(bytes in proptest::collection::vec(any::<u8>(), 1..64)) {
            let s = encode(&bytes);
            prop_assert_eq!(s.len(), encoded_len(bytes.len()));
            prop_assert_eq!(decode(&s, bytes.len()).unwrap(), bytes);
        }
    }
}
