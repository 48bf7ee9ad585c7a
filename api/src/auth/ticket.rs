//! WebSocket tickets: short-lived, stateless proofs of a session for browsers.
//!
//! Browsers cannot set an `Authorization` header on a WebSocket handshake, and putting the
//! long-lived session token in a URL would leak it into proxy and server logs. Instead the client
//! asks for a ticket over REST (with its bearer token) and opens the socket with
//! `?ticket=...`. A ticket is `user id | token hash | expiry` signed with HMAC-SHA256 under a
//! per-node secret, so issuing one writes nothing. It is valid for a few seconds and may be
//! replayed within that time; redeeming it also checks that the session still exists and the
//! user is enabled, so logout and disabling apply to tickets too.
//!
//! HMAC is built here from `sha2` (RFC 2104, a dozen lines) rather than adding a crate; it is
//! checked against RFC 4231's test vector below.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use roost_engine::ids::TokenHash;
use roost_engine::ids::UserId;
use roost_engine::model::UnixMillis;
use sha2::Digest;
use sha2::Sha256;

/// Domain separation: a MAC made for anything else with the same key never verifies as a ticket.
const DOMAIN: &[u8] = b"roost-ws-ticket-v1";
const PAYLOAD_LEN: usize = 8 + 32 + 8;
const MAC_LEN: usize = 32;
const TICKET_LEN: usize = PAYLOAD_LEN + MAC_LEN;
/// Length of an encoded ticket: unpadded base64 of `TICKET_LEN` bytes.
const ENCODED_LEN: usize = (TICKET_LEN * 4).div_ceil(3);

/// What a ticket asserts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TicketClaims {
    pub user: UserId,
    pub token_hash: TokenHash,
    pub expires_at: UnixMillis,
}

/// Why a ticket was refused. Clients only ever see `unauthorized`; the variants are for logs
/// and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    #[error("ticket is malformed")]
    Malformed,
    #[error("ticket signature does not verify")]
    BadSignature,
    #[error("ticket has expired")]
    Expired,
}

/// The node's ticket-signing secret.
pub struct TicketKey([u8; 32]);

impl fmt::Debug for TicketKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TicketKey(..)")
    }
}

impl TicketKey {
    pub fn new(secret: [u8; 32]) -> Self {
        Self(secret)
    }

    /// Sign `claims` into a URL-safe ticket string.
    pub fn issue(&self, claims: &TicketClaims) -> String {
        let payload = encode_payload(claims);
        let mac = hmac_sha256(&self.0, &[DOMAIN, &payload]);
        let mut bytes = [0u8; TICKET_LEN];
        bytes[..PAYLOAD_LEN].copy_from_slice(&payload);
        bytes[PAYLOAD_LEN..].copy_from_slice(&mac);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Check the signature (in constant time) and the expiry against `now`.
    pub fn verify(&self, ticket: &str, now: UnixMillis) -> Result<TicketClaims, TicketError> {
        if ticket.len() != ENCODED_LEN {
            return Err(TicketError::Malformed);
        }
        let bytes = URL_SAFE_NO_PAD.decode(ticket).map_err(|_| TicketError::Malformed)?;
        let (payload, mac) = bytes.split_at_checked(PAYLOAD_LEN).ok_or(TicketError::Malformed)?;
        let expected = hmac_sha256(&self.0, &[DOMAIN, payload]);
        if !constant_time_eq(&expected, mac) {
            return Err(TicketError::BadSignature);
        }
        let claims = decode_payload(payload).ok_or(TicketError::Malformed)?;
        if claims.expires_at <= now {
            return Err(TicketError::Expired);
        }
        Ok(claims)
    }
}

fn encode_payload(claims: &TicketClaims) -> [u8; PAYLOAD_LEN] {
    let mut out = [0u8; PAYLOAD_LEN];
    out[..8].copy_from_slice(&claims.user.0.to_be_bytes());
    out[8..40].copy_from_slice(&claims.token_hash.0);
    out[40..].copy_from_slice(&claims.expires_at.to_be_bytes());
    out
}

fn decode_payload(payload: &[u8]) -> Option<TicketClaims> {
    let user = u64::from_be_bytes(payload.get(..8)?.try_into().ok()?);
    let token_hash: [u8; 32] = payload.get(8..40)?.try_into().ok()?;
    let expires_at = i64::from_be_bytes(payload.get(40..PAYLOAD_LEN)?.try_into().ok()?);
    Some(TicketClaims {
        user: UserId(user),
        token_hash: TokenHash(token_hash),
        expires_at,
    })
}

/// HMAC-SHA256 (RFC 2104) of the concatenation of `parts`.
fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    for part in parts {
        inner.update(part);
    }
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// Compare without an early exit, so the time taken does not reveal how many bytes matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(expires_at: UnixMillis) -> TicketClaims {
        TicketClaims {
            user: UserId(42),
            token_hash: TokenHash([7; 32]),
            expires_at,
        }
    }

    #[test]
    fn hmac_matches_rfc_4231_test_case_2() {
        let mac = hmac_sha256(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn issued_ticket_round_trips_until_expiry() {
        let key = TicketKey::new([1; 32]);
        let ticket = key.issue(&claims(10_000));
        assert_eq!(ticket.len(), ENCODED_LEN);
        assert_eq!(key.verify(&ticket, 9_999), Ok(claims(10_000)));
        assert_eq!(key.verify(&ticket, 10_000), Err(TicketError::Expired));
    }

    #[test]
    fn tampered_or_foreign_tickets_are_refused() {
        let key = TicketKey::new([1; 32]);
        let ticket = key.issue(&claims(10_000));
        // Another node's secret.
        let other = TicketKey::new([2; 32]);
        assert_eq!(other.verify(&ticket, 0), Err(TicketError::BadSignature));
        // Raise the user id inside the payload.
        let mut bytes = URL_SAFE_NO_PAD.decode(&ticket).expect("base64");
        bytes[7] ^= 1;
        let forged = URL_SAFE_NO_PAD.encode(&bytes);
        assert_eq!(key.verify(&forged, 0), Err(TicketError::BadSignature));
        // Truncated, garbage, empty.
        assert_eq!(key.verify(&ticket[1..], 0), Err(TicketError::Malformed));
        assert_eq!(key.verify(&"!".repeat(ENCODED_LEN), 0), Err(TicketError::Malformed));
        assert_eq!(key.verify("", 0), Err(TicketError::Malformed));
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
