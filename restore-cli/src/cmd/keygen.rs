//! `lifeboat keygen`: writes a new age identity to a file only the caller can read and prints its recipient.
//! The identity never goes to stdout or logs; it belongs with the restore/drill operators, never the daemon.

use super::CliError;
use age::secrecy::ExposeSecret;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

/// Arguments of `lifeboat keygen`.
#[derive(clap::Args, Debug)]
pub struct KeygenArgs {
    /// Where to write the identity (created with mode 0600; never overwritten).
    #[arg(long, short = 'o')]
    output: PathBuf,
}

/// Runs the command.
pub fn run(args: KeygenArgs) -> Result<(), CliError> {
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&args.output)
        .map_err(|e| {
            CliError::Failed(format!(
                "cannot create {}: {e}; choose a path that does not exist yet",
                args.output.display()
            ))
        })?;
    let text = format!(
        "# created: {}\n# public key: {recipient}\n{}\n",
        chrono::Utc::now().to_rfc3339(),
        identity.to_string().expose_secret()
    );
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| CliError::Failed(format!("cannot write {}: {e}", args.output.display())))?;
    println!("{recipient}");
    Ok(())
}
