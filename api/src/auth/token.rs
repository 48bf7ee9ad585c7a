//! Opaque session tokens: what a client presents as `Authorization: Bearer <token>`.
//!
//! A token is 32 bytes from the operating system's CSPRNG (via `rand::rng()`), sent to the client
//! once as URL-safe base64 and never stored: the store keeps only its SHA-256 ([`TokenHash`]), so
//! a copy of the database cannot be replayed as logins. 256 random bits need no slow hash; a plain
//! SHA-256 is enough to make the stored value useless to an attacker.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore;
use roost_engine::ids::TokenHash;
use sha2::Digest;
use sha2::Sha256;

/// Random bytes in a token.
pub const TOKEN_BYTES: usize = 32;

/// Longest string accepted as a token before hashing it. Real tokens are 43 characters; anything
/// much longer is refused without work.
pub const MAX_TOKEN_LEN: usize = 128;

/// A fresh random token, URL-safe base64 without padding (43 characters).
pub fn new_token() -> String {
    let mut bytes = [0u8; TOKEN_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The value the store keys sessions by.
pub fn hash_token(token: &str) -> TokenHash {
    TokenHash(Sha256::digest(token.as_bytes()).into())
}

/// Whether `token` is worth looking up at all: non-empty, not oversized, URL-safe base64 only.
pub fn plausible_token(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= MAX_TOKEN_LEN
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_url_safe_and_43_chars() {
        let a = new_token();
        let b = new_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(plausible_token(&a));
        assert_eq!(URL_SAFE_NO_PAD.decode(&a).expect("base64").len(), TOKEN_BYTES);
    }

    #[test]
    fn hash_is_sha256_of_the_token_text() {
        // SHA-256("abc"), FIPS 180-2 test vector.
        let expected = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(hex::encode(hash_token("abc").0), expected);
        assert_eq!(hash_token("x"), hash_token("x"));
        assert_ne!(hash_token("x"), hash_token("y"));
    }

    #[test]
    fn implausible_tokens_are_refused() {
        assert!(!plausible_token(""));
        assert!(!plausible_token("has space"));
        assert!(!plausible_token("a+b/c="));
        assert!(!plausible_token(&"a".repeat(MAX_TOKEN_LEN + 1)));
    }
}
