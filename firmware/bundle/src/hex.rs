//! Lowercase hex for codes and digests.

use crate::error::{BundleError, Result};

/// `bytes` as lowercase hex, two digits per byte, first byte first (so a packed code's bit 0,
/// the least significant bit of byte 0, lies in the second digit).
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// The bytes of a hex string (either case, an even number of digits, nothing else).
pub fn from_hex(s: &str) -> Result<Vec<u8>> {
    let err = |message: String| BundleError::Hex {
        what: abbreviate(s),
        message,
    };
    let digits = s.as_bytes();
    if !digits.len().is_multiple_of(2) {
        return Err(err(format!("odd number of digits ({})", digits.len())));
    }
    digits
        .chunks_exact(2)
        .enumerate()
        .map(|(i, pair)| {
            let nib = |c: u8, at: usize| match c {
                b'0'..=b'9' => Ok(c - b'0'),
                b'a'..=b'f' => Ok(c - b'a' + 10),
                b'A'..=b'F' => Ok(c - b'A' + 10),
                _ => Err(err(format!(
                    "character {:?} at position {at} is not a hex digit",
                    s[at..].chars().next().unwrap_or('?')
                ))),
            };
            Ok((nib(pair[0], 2 * i)? << 4) | nib(pair[1], 2 * i + 1)?)
        })
        .collect()
}

/// Whether `s` is exactly 64 lowercase hex digits (the form of a sha256 in a manifest).
pub(crate) fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

fn abbreviate(s: &str) -> String {
    if s.chars().count() <= 40 {
        format!("{s:?}")
    } else {
        let head: String = s.chars().take(37).collect();
        format!("{head:?}... ({} characters)", s.chars().count())
    }
}
