//! The age recipients (public keys) a job encrypts to: inline `recipients` plus `recipients_file` lines.
//! Identities (secret keys) found where a recipient belongs are refused without ever being printed.

use lifeboat_config::EncryptionConfig;
use std::str::FromStr;

/// Why the recipients could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RecipientsError(String);

/// Every configured recipient, parsed; fails if there are none.
pub fn load_recipients(
    cfg: &EncryptionConfig,
) -> Result<Vec<age::x25519::Recipient>, RecipientsError> {
    let mut out: Vec<age::x25519::Recipient> =
        cfg.recipients.iter().map(|r| r.key.clone()).collect();
    for path in &cfg.recipients_files {
        let text = std::fs::read_to_string(path).map_err(|e| {
            RecipientsError(format!(
                "encryption.recipients_file {}: cannot read it ({}); check the path",
                path.display(),
                e.kind()
            ))
        })?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if line.to_ascii_uppercase().starts_with("AGE-SECRET-KEY-") {
                return Err(RecipientsError(format!(
                    "encryption.recipients_file {} line {}: this is an age identity (a SECRET key), not a recipient; the daemon must only hold public keys: put the output of `age-keygen -y KEYFILE` there and keep the key itself offline",
                    path.display(),
                    n + 1
                )));
            }
            let r = age::x25519::Recipient::from_str(line).map_err(|_| {
                RecipientsError(format!(
                    "encryption.recipients_file {} line {}: not an age public key (expected age1…)",
                    path.display(),
                    n + 1
                ))
            })?;
            out.push(r);
        }
    }
    if out.is_empty() {
        return Err(RecipientsError(
            "no age recipients configured: add a public key to encryption.recipients or a file to encryption.recipients_file".to_owned(),
        ));
    }
    Ok(out)
}
