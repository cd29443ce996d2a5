//! JSON Web Tokens for the push providers, signed with ring: ES256 (APNs, from the `.p8`
//! PKCS#8 key) and RS256 (Google service accounts, from their PKCS#8 PEM key), plus the PEM
//! and base64url helpers they need. No claim checking here: the providers verify.

use base64ct::{Base64, Base64UrlUnpadded, Encoding};
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, RsaKeyPair};
use serde_json::Value;

/// base64url without padding.
pub fn b64url(data: &[u8]) -> String {
    Base64UrlUnpadded::encode_string(data)
}

/// The DER inside a PEM document (the first block; header and footer lines dropped).
pub fn pem_to_der(pem: &str) -> Result<Vec<u8>, String> {
    let body: String = pem
        .lines()
        .map(str::trim)
        .skip_while(|l| !l.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    if body.is_empty() {
        return Err("not a PEM document".into());
    }
    Base64::decode_vec(&body).map_err(|_| "PEM body is not base64".to_owned())
}

fn signing_input(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    )
}

/// A P-256 key for ES256 tokens.
pub struct Es256 {
    key: EcdsaKeyPair,
    rng: SystemRandom,
}

impl Es256 {
    /// From a PEM (`.p8`) or raw PKCS#8 DER key.
    pub fn from_pem_or_der(key: &[u8]) -> Result<Es256, String> {
        let der = match std::str::from_utf8(key) {
            Ok(s) if s.contains("-----BEGIN") => pem_to_der(s)?,
            _ => key.to_vec(),
        };
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &der, &rng)
            .map_err(|e| format!("not a PKCS#8 P-256 key: {e}"))?;
        Ok(Es256 { key, rng })
    }

    /// `header.claims.signature`.
    pub fn sign(&self, header: &Value, claims: &Value) -> Result<String, String> {
        let input = signing_input(header, claims);
        let sig = self
            .key
            .sign(&self.rng, input.as_bytes())
            .map_err(|_| "ES256 signing failed".to_owned())?;
        Ok(format!("{input}.{}", b64url(sig.as_ref())))
    }
}

/// An RSA key for RS256 tokens.
pub struct Rs256 {
    key: RsaKeyPair,
    rng: SystemRandom,
}

impl Rs256 {
    /// From a PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`, as in service-account JSON).
    pub fn from_pem(pem: &str) -> Result<Rs256, String> {
        let der = pem_to_der(pem)?;
        let key = RsaKeyPair::from_pkcs8(&der).map_err(|e| format!("not a PKCS#8 RSA key: {e}"))?;
        Ok(Rs256 {
            key,
            rng: SystemRandom::new(),
        })
    }

    /// `header.claims.signature`.
    pub fn sign(&self, header: &Value, claims: &Value) -> Result<String, String> {
        let input = signing_input(header, claims);
        let mut sig = vec![0u8; self.key.public().modulus_len()];
        self.key
            .sign(
                &signature::RSA_PKCS1_SHA256,
                &self.rng,
                input.as_bytes(),
                &mut sig,
            )
            .map_err(|_| "RS256 signing failed".to_owned())?;
        Ok(format!("{input}.{}", b64url(&sig)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::KeyPair as _;

    #[test]
    fn es256_verifies_with_the_public_key() {
        let rng = SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("generate");
        let k = Es256::from_pem_or_der(doc.as_ref()).expect("key");
        let jwt = k
            .sign(
                &serde_json::json!({"alg": "ES256"}),
                &serde_json::json!({"iss": "T"}),
            )
            .expect("sign");
        let (input, sig) = jwt.rsplit_once('.').expect("three parts");
        let sig = Base64UrlUnpadded::decode_vec(sig).expect("b64");
        let public = k.key.public_key().as_ref().to_vec();
        signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, public)
            .verify(input.as_bytes(), &sig)
            .expect("valid signature");
    }

    #[test]
    fn pem_round_trip_and_garbage() {
        let pem = "-----BEGIN X-----\nAAEC\n-----END X-----\n";
        assert_eq!(pem_to_der(pem).expect("pem"), vec![0, 1, 2]);
        assert!(pem_to_der("nothing").is_err());
        assert!(Es256::from_pem_or_der(b"junk").is_err());
        assert!(Rs256::from_pem(pem).is_err());
    }
}
