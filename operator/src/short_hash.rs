//! Short content hashes: a hex prefix of SHA-256, used wherever a stable, compact fingerprint of
//! content is needed (config-hash annotations, xDS resource versions, shortened label values).

use sha2::{Digest, Sha256};

/// The first `bytes` bytes of SHA-256 of `data`, as lowercase hex.
pub fn short_sha256_hex(data: &[u8], bytes: usize) -> String {
    hex_prefix(&Sha256::digest(data), bytes)
}

/// The first `bytes` bytes of an already computed digest, as lowercase hex.
pub fn hex_prefix(digest: &[u8], bytes: usize) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(2 * bytes);
    for b in digest.iter().take(bytes) {
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_of_the_digest() {
        // SHA-256("abc") starts ba7816bf.
        assert_eq!(short_sha256_hex(b"abc", 4), "ba7816bf");
        assert_eq!(short_sha256_hex(b"abc", 8).len(), 16);
    }
}
