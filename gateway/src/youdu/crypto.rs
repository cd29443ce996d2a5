//! Youdu's message encryption (seed 002; the same scheme as Youdu's published SDKs):
//! key = base64 of the app's 43-character EncodingAESKey (32 bytes), AES-256-CBC with the
//! key's first 16 bytes as IV; plaintext = 16 random bytes + 4-byte big-endian length +
//! content + appId, PKCS#7-padded to a multiple of 32 bytes; the ciphertext is base64.

use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit, block_padding::NoPadding};
use base64ct::{Base64, Base64Unpadded, Encoding};

type Enc = cbc::Encryptor<aes::Aes256>;
type Dec = cbc::Decryptor<aes::Aes256>;

/// Padding block size of the scheme (not AES's 16).
const PAD_BLOCK: usize = 32;

/// Why a payload could not be decrypted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("the EncodingAESKey is not 43 characters of base64")]
    BadKey,
    #[error("encrypt is not valid base64 or not whole blocks")]
    BadCiphertext,
    #[error("bad padding or length")]
    BadPlaintext,
    #[error("the payload belongs to another app")]
    WrongApp,
}

/// An app's key.
#[derive(Clone)]
pub struct YouduKey([u8; 32]);

impl YouduKey {
    /// From the app's EncodingAESKey (43 characters, base64 without its `=`).
    pub fn new(encoding_aes_key: &str) -> Result<YouduKey, CryptoError> {
        let k = encoding_aes_key.trim_end_matches('=');
        let bytes = Base64Unpadded::decode_vec(k).map_err(|_| CryptoError::BadKey)?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| CryptoError::BadKey)?;
        Ok(YouduKey(key))
    }

    /// Input for keys derived from this one (the gateway's access-token MAC key).
    pub fn fingerprint_input(&self) -> &[u8] {
        &self.0
    }

    fn iv(&self) -> [u8; 16] {
        let mut iv = [0u8; 16];
        iv.copy_from_slice(&self.0[..16]);
        iv
    }

    /// Encrypts `content` for `app_id` with the 16-byte `random` prefix.
    pub fn encrypt(&self, content: &[u8], app_id: &str, random: [u8; 16]) -> String {
        let mut buf = Vec::with_capacity(content.len() + app_id.len() + 64);
        buf.extend_from_slice(&random);
        buf.extend_from_slice(&(content.len() as u32).to_be_bytes());
        buf.extend_from_slice(content);
        buf.extend_from_slice(app_id.as_bytes());
        let pad = PAD_BLOCK - buf.len() % PAD_BLOCK;
        buf.resize(buf.len() + pad, pad as u8);
        let len = buf.len();
        let out = Enc::new(&self.0.into(), &self.iv().into())
            .encrypt_padded_mut::<NoPadding>(&mut buf, len)
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        Base64::encode_string(&out)
    }

    /// Decrypts a payload and checks it was made for `app_id`; returns the content.
    pub fn decrypt(&self, encrypted: &str, app_id: &str) -> Result<Vec<u8>, CryptoError> {
        let mut buf =
            Base64::decode_vec(encrypted.trim()).map_err(|_| CryptoError::BadCiphertext)?;
        if buf.is_empty() || buf.len() % 16 != 0 {
            return Err(CryptoError::BadCiphertext);
        }
        let plain = Dec::new(&self.0.into(), &self.iv().into())
            .decrypt_padded_mut::<NoPadding>(&mut buf)
            .map_err(|_| CryptoError::BadCiphertext)?;
        let pad = *plain.last().ok_or(CryptoError::BadPlaintext)? as usize;
        if pad == 0 || pad > PAD_BLOCK || pad > plain.len() {
            return Err(CryptoError::BadPlaintext);
        }
        let body = &plain[..plain.len() - pad];
        if body.len() < 20 {
            return Err(CryptoError::BadPlaintext);
        }
        let n = u32::from_be_bytes([body[16], body[17], body[18], body[19]]) as usize;
        let rest = &body[20..];
        if n > rest.len() {
            return Err(CryptoError::BadPlaintext);
        }
        let (content, from_app) = rest.split_at(n);
        if from_app != app_id.as_bytes() {
            return Err(CryptoError::WrongApp);
        }
        Ok(content.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY"; // "0123456789abcdef" twice

    #[test]
    fn round_trips_and_pads_to_32_byte_blocks() {
        let k = YouduKey::new(KEY).expect("key");
        for content in [&b""[..], b"1700000000", &[b'x'; 100][..]] {
            let e = k.encrypt(content, "app1", [7; 16]);
            let raw = Base64::decode_vec(&e).expect("base64");
            assert_eq!(raw.len() % 32, 0);
            assert_eq!(k.decrypt(&e, "app1").expect("decrypts"), content);
            assert_eq!(k.decrypt(&e, "app2"), Err(CryptoError::WrongApp));
        }
        assert!(k.decrypt("not base64!", "app1").is_err());
        assert!(YouduKey::new("short").is_err());
    }
}
