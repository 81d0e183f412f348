//! `lifeboat keygen`: writes a new age identity (or, with `--signing`, an Ed25519 manifest-signing key) to a file
//! only the caller can read and prints its public half. Secret halves never go to stdout or logs.

use super::CliError;
use age::secrecy::ExposeSecret;
use lifeboat_core::snapshot::ManifestSigner;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Arguments of `lifeboat keygen`.
#[derive(clap::Args, Debug)]
pub struct KeygenArgs {
    /// Where to write the key (created with mode 0600; never overwritten).
    #[arg(long, short = 'o')]
    output: PathBuf,
    /// Make an Ed25519 manifest-signing key for the daemon (PKCS#8 PEM, as `openssl genpkey -algorithm
    /// ed25519` writes) instead of an age identity; prints the `ed25519:…` public key for
    /// [encryption] signing_public_keys.
    #[arg(long)]
    signing: bool,
}

fn create(path: &Path) -> Result<File, CliError> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            CliError::Failed(format!(
                "cannot create {}: {e}; choose a path that does not exist yet",
                path.display()
            ))
        })
}

fn write_all(mut file: File, path: &Path, text: &str) -> Result<(), CliError> {
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| CliError::Failed(format!("cannot write {}: {e}", path.display())))
}

/// Runs the command.
pub fn run(args: KeygenArgs) -> Result<(), CliError> {
    if args.signing {
        let signer = ManifestSigner::generate().map_err(|e| CliError::Failed(e.to_string()))?;
        let pem = signer
            .to_pem()
            .map_err(|e| CliError::Failed(e.to_string()))?;
        let file = create(&args.output)?;
        write_all(file, &args.output, pem.expose())?;
        println!("{}", signer.public_key());
        return Ok(());
    }
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public();
    let file = create(&args.output)?;
    let text = format!(
        "# created: {}\n# public key: {recipient}\n{}\n",
        chrono::Utc::now().to_rfc3339(),
        identity.to_string().expose_secret()
    );
    write_all(file, &args.output, &text)?;
    println!("{recipient}");
    Ok(())
}
