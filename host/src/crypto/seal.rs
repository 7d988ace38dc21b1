//! Credentials at rest (SPEC.md §5): AES-256-CBC with a random IV per value, then an
//! HMAC-SHA256 tag over version ‖ IV ‖ ciphertext (encrypt-then-MAC). The tag is checked, in
//! constant time, before anything is decrypted; a value that fails is an error, never
//! garbage and never a plaintext fallback.
//!
//! The master key comes from configuration, never from the data directory it protects. Two
//! keys are derived from it (HMAC-SHA256 of the master key over a fixed label each), so the
//! cipher and the MAC never share a key.

use std::fmt;

use aes::cipher::block_padding::Pkcs7;
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::signing::hmac_sha256_hex;

type Aes256CbcEnc = cbc::Encryptor<aes::Aes256>;
type Aes256CbcDec = cbc::Decryptor<aes::Aes256>;
type HmacSha256 = Hmac<Sha256>;

/// The format of sealed values; a later format gets a new number.
const VERSION: u8 = 1;
const IV_LEN: usize = 16;
const BLOCK_LEN: usize = 16;
const TAG_LEN: usize = 32;
/// Bytes of a master key (AES-256).
pub const MASTER_KEY_LEN: usize = 32;

/// The key that protects every stored secret. `Debug` never shows it.
#[derive(Clone)]
pub struct MasterKey {
    cipher: [u8; 32],
    mac: [u8; 32],
}

/// Why a master key cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the master key is not base64 (generate one with `canopy keygen`)")]
    NotBase64,
    #[error("the master key must be {MASTER_KEY_LEN} bytes (44 base64 characters), not {0} bytes")]
    WrongLength(usize),
}

/// Why a sealed value cannot be opened. Says nothing about the content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("the sealed value is truncated or malformed")]
    Malformed,
    #[error("the sealed value was written in an unknown format ({0})")]
    UnknownVersion(u8),
    #[error("the sealed value does not authenticate: wrong master key, or the data was altered")]
    BadTag,
}

impl MasterKey {
    /// A master key from its base64 text (standard alphabet, 32 bytes).
    pub fn from_base64(text: &str) -> Result<MasterKey, KeyError> {
        let bytes = BASE64
            .decode(text.trim())
            .map_err(|_| KeyError::NotBase64)?;
        let bytes: [u8; MASTER_KEY_LEN] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| KeyError::WrongLength(bytes.len()))?;
        Ok(MasterKey::from_bytes(&bytes))
    }

    pub fn from_bytes(master: &[u8; MASTER_KEY_LEN]) -> MasterKey {
        MasterKey {
            cipher: derive(master, b"canopy secrets v1: aes-256-cbc"),
            mac: derive(master, b"canopy secrets v1: hmac-sha256"),
        }
    }

    /// A new random master key and its base64 text.
    pub fn generate() -> (MasterKey, String) {
        let bytes: [u8; MASTER_KEY_LEN] = random_bytes();
        (MasterKey::from_bytes(&bytes), BASE64.encode(bytes))
    }

    /// A value that identifies this key without revealing it: stored beside the data so a
    /// server started with another key says so at once instead of failing on every secret.
    pub fn fingerprint(&self) -> String {
        let mut fingerprint = hmac_sha256_hex(&self.mac, b"canopy master key fingerprint");
        fingerprint.truncate(32);
        fingerprint
    }

    /// A key for another purpose (signing UI sessions, sign-in links), derived from this one
    /// and `label`: it changes when the master key is rotated, and reveals nothing of it.
    pub fn derive_key(&self, label: &[u8]) -> [u8; 32] {
        derive(&self.mac, label)
    }

    /// Encrypts and authenticates `plaintext` under a fresh random IV.
    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        let iv: [u8; IV_LEN] = random_bytes();
        let ciphertext = Aes256CbcEnc::new(&self.cipher.into(), &iv.into())
            .encrypt_padded_vec_mut::<Pkcs7>(plaintext);
        let mut sealed = Vec::with_capacity(1 + IV_LEN + ciphertext.len() + TAG_LEN);
        sealed.push(VERSION);
        sealed.extend_from_slice(&iv);
        sealed.extend_from_slice(&ciphertext);
        let tag = self.tag(&sealed);
        sealed.extend_from_slice(&tag);
        sealed
    }

    /// Checks the tag, then decrypts. Never panics, whatever the input.
    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        let (&version, _) = sealed.split_first().ok_or(OpenError::Malformed)?;
        if version != VERSION {
            return Err(OpenError::UnknownVersion(version));
        }
        let min = 1 + IV_LEN + BLOCK_LEN + TAG_LEN;
        if sealed.len() < min || !(sealed.len() - 1 - IV_LEN - TAG_LEN).is_multiple_of(BLOCK_LEN) {
            return Err(OpenError::Malformed);
        }
        let (authenticated, tag) = sealed.split_at(sealed.len() - TAG_LEN);
        let mut mac = HmacSha256::new_from_slice(&self.mac).expect("HMAC takes any key length");
        mac.update(authenticated);
        mac.verify_slice(tag).map_err(|_| OpenError::BadTag)?;
        let iv: [u8; IV_LEN] = authenticated[1..1 + IV_LEN]
            .try_into()
            .map_err(|_| OpenError::Malformed)?;
        Aes256CbcDec::new(&self.cipher.into(), &iv.into())
            .decrypt_padded_vec_mut::<Pkcs7>(&authenticated[1 + IV_LEN..])
            .map_err(|_| OpenError::Malformed)
    }

    fn tag(&self, data: &[u8]) -> [u8; TAG_LEN] {
        let mut mac = HmacSha256::new_from_slice(&self.mac).expect("HMAC takes any key length");
        mac.update(data);
        mac.finalize().into_bytes().into()
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

fn derive(master: &[u8], label: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(master).expect("HMAC takes any key length");
    mac.update(label);
    mac.finalize().into_bytes().into()
}

/// Random bytes from the operating system.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    // The OS generator failing is unrecoverable; there is no safe fallback for key material.
    getrandom::fill(&mut bytes).expect("the operating system's random generator works");
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> MasterKey {
        MasterKey::from_bytes(&[byte; MASTER_KEY_LEN])
    }

    #[test]
    fn round_trips_with_a_fresh_iv_each_time() {
        let key = key(7);
        let a = key.seal(b"pk_live_secret");
        let b = key.seal(b"pk_live_secret");
        assert_ne!(a, b, "a random IV per value");
        assert_eq!(key.open(&a).unwrap(), b"pk_live_secret");
        assert_eq!(key.open(&key.seal(b"")).unwrap(), b"");
        assert!(!a.windows(14).any(|w| w == b"pk_live_secret"));
    }

    #[test]
    fn refuses_a_wrong_key_and_any_alteration() {
        let sealed = key(1).seal(b"token");
        assert_eq!(key(2).open(&sealed), Err(OpenError::BadTag));
        for i in 0..sealed.len() {
            let mut altered = sealed.clone();
            altered[i] ^= 0x01;
            assert!(key(1).open(&altered).is_err(), "byte {i} altered");
        }
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let key = key(3);
        let sealed = key.seal(b"abc");
        for len in 0..sealed.len() {
            assert!(key.open(&sealed[..len]).is_err(), "truncated to {len}");
        }
        assert_eq!(key.open(&[9, 1, 2]), Err(OpenError::UnknownVersion(9)));
    }

    #[test]
    fn master_keys_are_32_bytes_of_base64() {
        let (generated, text) = MasterKey::generate();
        let parsed = MasterKey::from_base64(&text).unwrap();
        assert_eq!(parsed.fingerprint(), generated.fingerprint());
        assert_ne!(parsed.fingerprint(), key(0).fingerprint());
        assert_eq!(
            MasterKey::from_base64("c2hvcnQ=").err(),
            Some(KeyError::WrongLength(5))
        );
        assert_eq!(
            MasterKey::from_base64("not base64!").err(),
            Some(KeyError::NotBase64)
        );
        assert_eq!(format!("{generated:?}"), "MasterKey(<redacted>)");
    }
}
