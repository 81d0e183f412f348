//! Manifest signatures: the daemon signs the exact bytes of `manifest.json` with Ed25519 (`manifest.json.sig`, the
//! 64 raw signature bytes), and readers accept a manifest only if one of their trusted public keys verifies it.

use crate::secret::{resolve, Secret, SecretError};
use base64::Engine;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, KeypairBytes};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use lifeboat_config::{EncryptionConfig, SecretRef, SigningPublicKey};
use std::fmt;

/// Length of a signature object: the raw Ed25519 signature.
pub const SIGNATURE_LEN: usize = ed25519_dalek::SIGNATURE_LENGTH;

/// Prefix of a signing public key's text form (`ed25519:<base64 of the 32 raw bytes>`).
pub const PUBLIC_KEY_PREFIX: &str = "ed25519:";

/// Why a signing key could not be loaded or made. Never contains key material.
#[derive(Debug, thiserror::Error)]
pub enum SigningKeyError {
    /// The secret reference could not be resolved.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// The text is not an Ed25519 PKCS#8 PEM private key.
    #[error("{what}: not an Ed25519 private key in PKCS#8 PEM form (-----BEGIN PRIVATE KEY-----; the contents are not shown): {reason}; make one with `lifeboat keygen --signing -o signing.pem` or `openssl genpkey -algorithm ed25519 -out signing.pem`")]
    NotAKey {
        /// Which key.
        what: String,
        /// Parser's reason (never the key).
        reason: String,
    },
    /// A configured public key is not a point on the curve.
    #[error("{key}: not a valid Ed25519 public key ({reason}); derive it with `openssl pkey -in signing.pem -pubout -outform DER | tail -c 32 | base64` and write \"ed25519:\" before it")]
    BadPublicKey {
        /// The key as configured.
        key: String,
        /// Why.
        reason: String,
    },
    /// The operating system's random source failed.
    #[error("cannot generate a key: {0}")]
    Random(String),
}

/// The daemon's signing key. Debug output never shows it.
pub struct ManifestSigner {
    key: SigningKey,
}

impl fmt::Debug for ManifestSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManifestSigner")
            .field("public_key", &self.public_key())
            .finish_non_exhaustive()
    }
}

impl ManifestSigner {
    /// Parses a PKCS#8 PEM private key (what `openssl genpkey -algorithm ed25519` writes).
    pub fn from_pem(what: &str, pem: &Secret) -> Result<Self, SigningKeyError> {
        let key = SigningKey::from_pkcs8_pem(pem.expose().trim()).map_err(|e| {
            SigningKeyError::NotAKey {
                what: what.to_owned(),
                reason: e.to_string(),
            }
        })?;
        Ok(ManifestSigner { key })
    }

    /// Resolves `[encryption] signing_key_*` and parses it.
    pub fn load(reference: &SecretRef) -> Result<Self, SigningKeyError> {
        let what = "encryption.signing_key";
        Self::from_pem(what, &resolve(what, reference)?)
    }

    /// The configured signing key, if any (`None`: manifests are written unsigned).
    pub fn from_config(config: &EncryptionConfig) -> Result<Option<Self>, SigningKeyError> {
        config.signing_key.as_ref().map(Self::load).transpose()
    }

    /// A new random key from the operating system's random source.
    pub fn generate() -> Result<Self, SigningKeyError> {
        use rand::TryRng;
        let mut secret = [0u8; 32];
        rand::rngs::SysRng
            .try_fill_bytes(&mut secret)
            .map_err(|e| SigningKeyError::Random(e.to_string()))?;
        let key = SigningKey::from_bytes(&secret);
        secret.fill(0);
        Ok(ManifestSigner { key })
    }

    /// The key as PKCS#8 PEM, byte-compatible with what `openssl genpkey -algorithm ed25519` writes (v1, no
    /// public key inside).
    pub fn to_pem(&self) -> Result<Secret, SigningKeyError> {
        let bytes = KeypairBytes {
            secret_key: self.key.to_bytes(),
            public_key: None,
        };
        let pem = bytes
            .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .map_err(|e| SigningKeyError::NotAKey {
                what: "new key".to_owned(),
                reason: e.to_string(),
            })?;
        Ok(Secret::new(pem.to_string()))
    }

    /// The public half in the configuration's text form, `ed25519:<base64>`.
    pub fn public_key(&self) -> String {
        public_key_text(&self.key.verifying_key())
    }

    /// Signs `bytes` (the exact bytes of `manifest.json`): the 64 raw signature bytes.
    pub fn sign(&self, bytes: &[u8]) -> [u8; SIGNATURE_LEN] {
        self.key.sign(bytes).to_bytes()
    }
}

fn public_key_text(key: &VerifyingKey) -> String {
    format!(
        "{PUBLIC_KEY_PREFIX}{}",
        base64::engine::general_purpose::STANDARD.encode(key.as_bytes())
    )
}

/// What a manifest's signature says.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum SignatureStatus {
    /// A trusted key verifies the signature over the exact manifest bytes.
    Verified {
        /// The key that verified it (`ed25519:…`).
        key: String,
    },
    /// There is no signature object (written without a signing key, or its `.sig` was removed).
    Unsigned,
    /// A signature exists but no trusted key verifies it (tampered, planted, another key, or no trusted keys).
    Invalid {
        /// Why.
        reason: String,
    },
}

impl SignatureStatus {
    /// Whether the manifest may be trusted.
    pub fn is_verified(&self) -> bool {
        matches!(self, SignatureStatus::Verified { .. })
    }

    /// A short word for tables: `verified`, `unsigned` or `INVALID`.
    pub fn label(&self) -> &'static str {
        match self {
            SignatureStatus::Verified { .. } => "verified",
            SignatureStatus::Unsigned => "unsigned",
            SignatureStatus::Invalid { .. } => "INVALID",
        }
    }
}

impl fmt::Display for SignatureStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignatureStatus::Verified { key } => write!(f, "signature verified with {key}"),
            SignatureStatus::Unsigned => f.write_str("not signed"),
            SignatureStatus::Invalid { reason } => write!(f, "signature does not verify: {reason}"),
        }
    }
}

/// The public keys a reader trusts to sign manifests.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    keys: Vec<(String, VerifyingKey)>,
}

impl TrustedKeys {
    /// No trusted keys: every signature is [`SignatureStatus::Invalid`].
    pub fn none() -> Self {
        TrustedKeys::default()
    }

    /// `[encryption] signing_public_keys`, plus the public half of `signing_key_*` when it is configured and
    /// loads (a restore host usually does not have the private key; that is not an error).
    pub fn from_config(config: &EncryptionConfig) -> Result<Self, SigningKeyError> {
        let mut trusted = TrustedKeys::none();
        for key in &config.signing_public_keys {
            trusted.add(key)?;
        }
        if let Some(reference) = &config.signing_key {
            match ManifestSigner::load(reference) {
                Ok(signer) => trusted.add_signer(&signer),
                Err(e) => {
                    tracing::debug!(error = %e, "The signing key is not readable here; trusting signing_public_keys only.")
                }
            }
        }
        Ok(trusted)
    }

    /// Trusts one configured public key.
    pub fn add(&mut self, key: &SigningPublicKey) -> Result<(), SigningKeyError> {
        let parsed =
            VerifyingKey::from_bytes(&key.bytes).map_err(|e| SigningKeyError::BadPublicKey {
                key: key.text.clone(),
                reason: e.to_string(),
            })?;
        self.push(parsed);
        Ok(())
    }

    /// Trusts the public half of a signing key.
    pub fn add_signer(&mut self, signer: &ManifestSigner) {
        self.push(signer.key.verifying_key());
    }

    fn push(&mut self, key: VerifyingKey) {
        if !self.keys.iter().any(|(_, k)| *k == key) {
            self.keys.push((public_key_text(&key), key));
        }
    }

    /// Whether no key is trusted (unsigned mode).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The trusted keys' text forms.
    pub fn texts(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|(t, _)| t.as_str())
    }

    /// Checks `signature` (the `.sig` object, `None` if absent) over the exact `manifest` bytes.
    pub fn verify(&self, manifest: &[u8], signature: Option<&[u8]>) -> SignatureStatus {
        let Some(signature) = signature else {
            return SignatureStatus::Unsigned;
        };
        let Ok(bytes) = <[u8; SIGNATURE_LEN]>::try_from(signature) else {
            return SignatureStatus::Invalid {
                reason: format!(
                    "the signature object is {} bytes, not {SIGNATURE_LEN}",
                    signature.len()
                ),
            };
        };
        if self.keys.is_empty() {
            return SignatureStatus::Invalid {
                reason: "no trusted key is configured ([encryption] signing_public_keys is empty)"
                    .to_owned(),
            };
        }
        let signature = ed25519_dalek::Signature::from_bytes(&bytes);
        for (text, key) in &self.keys {
            if key.verify_strict(manifest, &signature).is_ok() {
                return SignatureStatus::Verified { key: text.clone() };
            }
        }
        SignatureStatus::Invalid {
            reason: format!(
                "no trusted key verifies it (tried {})",
                self.texts().collect::<Vec<_>>().join(", ")
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8032 section 7.1, test 1.
    const RFC_PEM: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n-----END PRIVATE KEY-----\n";
    const RFC_PUBLIC: &str = "ed25519:11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";

    fn public(text: &str) -> SigningPublicKey {
        let b = base64::engine::general_purpose::STANDARD
            .decode(text.strip_prefix(PUBLIC_KEY_PREFIX).unwrap())
            .unwrap();
        SigningPublicKey {
            text: text.to_owned(),
            bytes: b.try_into().unwrap(),
        }
    }

    #[test]
    fn pem_keys_load_and_match_rfc_8032() {
        let signer = ManifestSigner::from_pem("test", &Secret::new(RFC_PEM.into())).unwrap();
        assert_eq!(signer.public_key(), RFC_PUBLIC);
        // RFC 8032 test 1: the empty message.
        assert_eq!(
            hex::encode(signer.sign(b"")),
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
        );
        // Debug never shows the key.
        let shown = format!("{signer:?}");
        assert!(
            shown.contains(RFC_PUBLIC) && !shown.contains("MC4CAQAw"),
            "{shown}"
        );
        // What we write is what openssl writes.
        assert_eq!(signer.to_pem().unwrap().expose(), RFC_PEM);
    }

    #[test]
    fn sign_and_verify_round_trip() {
        let signer = ManifestSigner::generate().unwrap();
        let again = ManifestSigner::from_pem("test", &signer.to_pem().unwrap()).unwrap();
        assert_eq!(again.public_key(), signer.public_key());
        let mut trusted = TrustedKeys::none();
        trusted.add(&public(&signer.public_key())).unwrap();
        let manifest = br#"{"format_version":1,"job":"app"}"#;
        let sig = signer.sign(manifest);
        assert_eq!(
            trusted.verify(manifest, Some(&sig)),
            SignatureStatus::Verified {
                key: signer.public_key()
            }
        );
        assert_eq!(trusted.verify(manifest, None), SignatureStatus::Unsigned);
    }

    #[test]
    fn tampered_bytes_wrong_keys_and_bad_signatures_are_invalid() {
        let signer = ManifestSigner::generate().unwrap();
        let mut trusted = TrustedKeys::none();
        trusted.add_signer(&signer);
        let manifest = br#"{"format_version":1,"job":"app"}"#.to_vec();
        let sig = signer.sign(&manifest);
        for i in [0, 5, manifest.len() - 1] {
            let mut tampered = manifest.clone();
            tampered[i] ^= 1;
            let status = trusted.verify(&tampered, Some(&sig));
            assert!(
                matches!(status, SignatureStatus::Invalid { .. }),
                "{status}"
            );
        }
        let mut bad_sig = sig;
        bad_sig[10] ^= 0x80;
        assert!(!trusted.verify(&manifest, Some(&bad_sig)).is_verified());
        let short = trusted.verify(&manifest, Some(&sig[..63]));
        assert!(
            matches!(&short, SignatureStatus::Invalid { reason } if reason.contains("63 bytes"))
        );

        // Another key.
        let other = ManifestSigner::generate().unwrap();
        let mut others = TrustedKeys::none();
        others.add_signer(&other);
        let status = others.verify(&manifest, Some(&sig));
        assert!(
            matches!(&status, SignatureStatus::Invalid { reason } if reason.contains(&other.public_key())),
            "{status}"
        );
        // Several trusted keys (a rotation): the one that signed is named.
        others.add_signer(&signer);
        assert_eq!(
            others.verify(&manifest, Some(&sig)),
            SignatureStatus::Verified {
                key: signer.public_key()
            }
        );
        // No trusted keys at all.
        let status = TrustedKeys::none().verify(&manifest, Some(&sig));
        assert!(
            matches!(&status, SignatureStatus::Invalid { reason } if reason.contains("signing_public_keys")),
            "{status}"
        );
    }

    #[test]
    fn bad_keys_are_refused_without_showing_them() {
        let e = ManifestSigner::from_pem(
            "encryption.signing_key",
            &Secret::new("hunter2 secret".into()),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("encryption.signing_key") && e.contains("PKCS#8"),
            "{e}"
        );
        assert!(!e.contains("hunter2"), "{e}");
        // An X25519 (age-style) key in PKCS#8 is not an Ed25519 key.
        let x25519 = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VuBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n-----END PRIVATE KEY-----\n";
        let e = ManifestSigner::from_pem("k", &Secret::new(x25519.into())).unwrap_err();
        assert!(!e.to_string().contains("MC4CAQAw"), "{e}");
        // 32 bytes that are not a curve point.
        let rejected = (0..=255u8).find_map(|b| {
            let mut bytes = [0u8; 32];
            bytes[0] = b;
            bytes[31] = 0x7f;
            TrustedKeys::none()
                .add(&SigningPublicKey {
                    text: "ed25519:test".into(),
                    bytes,
                })
                .err()
        });
        let e = rejected.expect("some y is not on the curve").to_string();
        assert!(
            e.contains("ed25519:test") && e.contains("openssl pkey"),
            "{e}"
        );
    }

    #[test]
    fn trusted_keys_come_from_the_config_and_the_loadable_signing_key() {
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("signing.pem");
        std::fs::write(&pem, RFC_PEM).unwrap();
        let other = ManifestSigner::generate().unwrap();
        let config = EncryptionConfig {
            recipients: Vec::new(),
            recipients_files: Vec::new(),
            signing_key: Some(SecretRef::File(pem)),
            signing_public_keys: vec![public(&other.public_key()), public(RFC_PUBLIC)],
        };
        let trusted = TrustedKeys::from_config(&config).unwrap();
        assert_eq!(
            trusted.texts().collect::<Vec<_>>(),
            [other.public_key().as_str(), RFC_PUBLIC]
        );
        // A signing key that is not readable here (a restore host) is not an error.
        let config = EncryptionConfig {
            signing_key: Some(SecretRef::File(dir.path().join("absent.pem"))),
            signing_public_keys: vec![public(RFC_PUBLIC)],
            ..config
        };
        assert_eq!(
            TrustedKeys::from_config(&config).unwrap().texts().count(),
            1
        );
        assert!(ManifestSigner::from_config(&config).is_err());
    }
}
