//! Private keys at rest: AES-256-GCM under the operator's key
//! (`ssl.acme.key_file`), so a copy of the store (a dump, a replica, a
//! backup) does not hold usable TLS keys. Each sealed value is bound to
//! the store key it lives under (the AEAD's associated data): a sealed
//! key copied into another certificate's record does not open.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom as _, SystemRandom};

/// Seals and opens values with one key.
pub(super) struct Sealer {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

impl Sealer {
    /// From a key file's text: 64 hex digits (what `openssl rand -hex 32`
    /// prints), surrounding whitespace ignored.
    pub(super) fn from_key_text(text: &str) -> Result<Self, String> {
        let hex = text.trim();
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(String::from(
                "must hold 64 hex digits (32 bytes; `openssl rand -hex 32` makes one)",
            ));
        }
        let bytes: Vec<u8> = (0..32)
            .filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
            .collect();
        let key = UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| String::from("bad key"))?;
        Ok(Self {
            key: LessSafeKey::new(key),
            rng: SystemRandom::new(),
        })
    }

    /// `plain` sealed for `context`: base64 of nonce, ciphertext and tag.
    pub(super) fn seal(&self, plain: &[u8], context: &str) -> Result<String, String> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| String::from("no randomness for a nonce"))?;
        let mut sealed = plain.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut sealed,
            )
            .map_err(|_| String::from("sealing failed"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(BASE64.encode(out))
    }

    /// What [`Sealer::seal`] sealed for `context`; an error for another
    /// key, another context, or altered bytes.
    pub(super) fn open(&self, sealed: &str, context: &str) -> Result<Vec<u8>, String> {
        let bytes = BASE64
            .decode(sealed.trim())
            .map_err(|_| String::from("not base64"))?;
        if bytes.len() < NONCE_LEN {
            return Err(String::from("too short"));
        }
        let (nonce, rest) = bytes.split_at(NONCE_LEN);
        let nonce =
            Nonce::try_assume_unique_for_key(nonce).map_err(|_| String::from("bad nonce"))?;
        let mut buffer = rest.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut buffer)
            .map_err(|_| {
                String::from("does not open with ssl.acme.key_file (another key, or altered)")
            })?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n";

    #[test]
    fn sealed_values_open_only_with_their_key_and_context() {
        let sealer = Sealer::from_key_text(KEY).unwrap();
        let sealed = sealer
            .seal(b"-----BEGIN PRIVATE KEY-----", "RLW:ACME:CERT:a.test")
            .unwrap();
        assert!(!sealed.contains("PRIVATE"));
        assert_eq!(
            sealer.open(&sealed, "RLW:ACME:CERT:a.test").unwrap(),
            b"-----BEGIN PRIVATE KEY-----"
        );
        assert!(sealer.open(&sealed, "RLW:ACME:CERT:b.test").is_err());
        let other = Sealer::from_key_text(&KEY.replace("00", "ff")).unwrap();
        assert!(other.open(&sealed, "RLW:ACME:CERT:a.test").is_err());
        let mut altered = sealed.into_bytes();
        altered[20] = if altered[20] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(altered).unwrap();
        assert!(sealer.open(&altered, "RLW:ACME:CERT:a.test").is_err());
        // Two seals of one value differ (a fresh nonce each).
        assert_ne!(
            sealer.seal(b"x", "c").unwrap(),
            sealer.seal(b"x", "c").unwrap()
        );
    }

    #[test]
    fn key_files_must_hold_32_hex_bytes() {
        assert!(Sealer::from_key_text("abc").is_err());
        assert!(Sealer::from_key_text(&"zz".repeat(32)).is_err());
        assert!(Sealer::from_key_text(&"ab".repeat(32)).is_ok());
    }
}
