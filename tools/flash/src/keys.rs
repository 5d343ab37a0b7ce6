//! Ed25519 keys as files: `private` holds the 32-byte seed, `public` the 32-byte verifying key,
//! each as 64 lowercase hex digits and a newline (readable, diffable, easy to copy to a device).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use crate::error::{FlashError, Result};

/// File name of the private key inside a key directory.
pub const PRIVATE_FILE: &str = "private";
/// File name of the public key inside a key directory.
pub const PUBLIC_FILE: &str = "public";

/// Creates `dir` (if needed) and writes a fresh key pair into `dir/private` (mode 0600) and
/// `dir/public`. Refuses if either file exists: a key overwritten by mistake cannot be recovered,
/// and every device trusting it would refuse the next archive.
pub fn keygen(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let private = dir.join(PRIVATE_FILE);
    let public = dir.join(PUBLIC_FILE);
    for path in [&private, &public] {
        if path.symlink_metadata().is_ok() {
            return Err(FlashError::KeyExists { path: path.clone() });
        }
    }
    fs::create_dir_all(dir).map_err(|e| FlashError::io(dir, e))?;
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| FlashError::Key {
        path: private.clone(),
        message: format!("no randomness from the operating system: {e}"),
    })?;
    let signing = SigningKey::from_bytes(&seed);
    write_new(&private, &key_text(&seed), 0o600)?;
    write_new(
        &public,
        &key_text(signing.verifying_key().as_bytes()),
        0o644,
    )?;
    Ok((private, public))
}

fn key_text(bytes: &[u8; 32]) -> String {
    format!("{}\n", bundle::to_hex(bytes))
}

/// Writes a file that must not exist yet (create_new closes the race with a concurrent keygen).
fn write_new(path: &Path, text: &str, mode: u32) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => FlashError::KeyExists {
                path: path.to_owned(),
            },
            _ => FlashError::io(path, e),
        })?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| FlashError::io(path, e))
}

/// Parses the 64 hex digits of a key file; `what` names the source in errors.
pub fn parse_key(text: &str, what: &Path) -> Result<[u8; 32]> {
    let bad = |message: String| FlashError::Key {
        path: what.to_owned(),
        message,
    };
    let bytes = bundle::from_hex(text.trim()).map_err(|e| bad(e.to_string()))?;
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| bad(format!("{} bytes, an ed25519 key has 32", b.len())))
}

fn read_key(path: &Path) -> Result<[u8; 32]> {
    let text = fs::read_to_string(path).map_err(|e| FlashError::io(path, e))?;
    parse_key(&text, path)
}

/// The signing key of a `private` file.
pub fn load_private(path: &Path) -> Result<SigningKey> {
    Ok(SigningKey::from_bytes(&read_key(path)?))
}

/// The verifying key of a `public` file.
pub fn load_public(path: &Path) -> Result<PublicKey> {
    PublicKey::from_bytes(read_key(path)?, path)
}

/// A verifying key and its file text (what is installed as a target's `trusted.pub`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: VerifyingKey,
}

impl PublicKey {
    /// The key of 32 raw bytes; `what` names the source in errors.
    pub fn from_bytes(bytes: [u8; 32], what: &Path) -> Result<Self> {
        let key = VerifyingKey::from_bytes(&bytes).map_err(|e| FlashError::Key {
            path: what.to_owned(),
            message: format!("not an ed25519 public key: {e}"),
        })?;
        Ok(PublicKey { key })
    }

    /// Parses a key file's text; `what` names the source in errors.
    pub fn from_text(text: &str, what: &Path) -> Result<Self> {
        Self::from_bytes(parse_key(text, what)?, what)
    }

    /// The key file's text (64 hex digits and a newline).
    pub fn to_text(&self) -> String {
        key_text(self.key.as_bytes())
    }

    /// The first 16 hex digits, enough to tell keys apart in messages.
    pub fn fingerprint(&self) -> String {
        bundle::to_hex(&self.key.as_bytes()[..8])
    }

    /// Checks `signature` (64 bytes) over `message`; strict verification refuses malleable
    /// and small-order forms.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), String> {
        let signature = Signature::from_slice(signature).map_err(|e| e.to_string())?;
        self.key
            .verify_strict(message, &signature)
            .map_err(|e| e.to_string())
    }
}

impl From<&SigningKey> for PublicKey {
    fn from(key: &SigningKey) -> Self {
        PublicKey {
            key: key.verifying_key(),
        }
    }
}

/// Signs `message`: the 64-byte signature.
pub fn sign(key: &SigningKey, message: &[u8]) -> [u8; 64] {
    key.sign(message).to_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_sign_verify_and_refuse_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("k");
        let (private, public) = keygen(&keys).unwrap();
        let sk = load_private(&private).unwrap();
        let pk = load_public(&public).unwrap();
        assert_eq!(PublicKey::from(&sk), pk);
        let sig = sign(&sk, b"hello");
        pk.verify(b"hello", &sig).unwrap();
        assert!(pk.verify(b"hellO", &sig).is_err());
        let err = keygen(&keys).unwrap_err();
        assert!(matches!(err, FlashError::KeyExists { .. }), "{err}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&private).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn bad_key_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("public");
        fs::write(&path, "abcd\n").unwrap();
        let err = load_public(&path).unwrap_err().to_string();
        assert!(err.contains("public") && err.contains("32"), "{err}");
        fs::write(&path, "zz\n").unwrap();
        assert!(load_public(&path).is_err());
    }
}
