//! C2SP signed notes (c2sp.org/signed-note) with Ed25519 keys, and the
//! C2SP tlog-checkpoint body (c2sp.org/tlog-checkpoint). Pure code.
//!
//! - key hash: the first 4 bytes of `SHA-256(name ‖ "\n" ‖ 0x01 ‖ public key)`
//!   (0x01 is the Ed25519 signature type), as in Go's `note` package;
//! - verifier key: `<name>+<hex key hash>+<base64(0x01 ‖ public key)>`;
//! - signed note: the body (ending in `\n`), a blank line, then one line per
//!   signature: `— <name> <base64(key hash ‖ signature)>`.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::merkle::Hash;
use crate::Error;

const ED25519_TYPE: u8 = 0x01;
const SIGNATURE_PREFIX: &str = "\u{2014} ";

fn key_hash(name: &str, public: &[u8; 32]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([ED25519_TYPE]);
    h.update(public);
    let digest = h.finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.contains('+')
        && name.chars().all(|c| !c.is_whitespace() && !c.is_control())
}

/// A note signer: a key name and an Ed25519 private key.
#[derive(Debug, Clone)]
pub struct NoteSigner {
    name: String,
    key: SigningKey,
}

impl NoteSigner {
    /// A signer with key name `name` (not empty, and without `+`, white
    /// space or control characters).
    pub fn new(name: &str, key: SigningKey) -> Result<NoteSigner, Error> {
        if !valid_name(name) {
            return Err(Error::Note(format!("invalid key name {name:?}")));
        }
        Ok(NoteSigner {
            name: name.to_owned(),
            key,
        })
    }

    /// A fresh random key.
    pub fn generate(name: &str) -> Result<NoteSigner, Error> {
        NoteSigner::new(name, SigningKey::generate(&mut rand::rngs::OsRng))
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The private key in Go's `note` format:
    /// `PRIVATE+KEY+<name>+<hex hash>+<base64(0x01 ‖ seed)>`.
    pub fn to_private_key_string(&self) -> String {
        let mut key = vec![ED25519_TYPE];
        key.extend_from_slice(&self.key.to_bytes());
        format!(
            "PRIVATE+KEY+{}+{}+{}",
            self.name,
            hex::encode(key_hash(&self.name, self.key.verifying_key().as_bytes())),
            B64.encode(key)
        )
    }

    /// Parses a key in the format [`NoteSigner::to_private_key_string`]
    /// writes; refuses one whose key hash does not match its key.
    pub fn from_private_key_string(text: &str) -> Result<NoteSigner, Error> {
        let bad = || Error::Note("malformed private key".into());
        let rest = text.trim().strip_prefix("PRIVATE+KEY+").ok_or_else(bad)?;
        let mut parts = rest.splitn(3, '+');
        let (name, hash, key) = (
            parts.next().ok_or_else(bad)?,
            parts.next().ok_or_else(bad)?,
            parts.next().ok_or_else(bad)?,
        );
        let key = B64.decode(key).map_err(|_| bad())?;
        if key.len() != 33 || key[0] != ED25519_TYPE {
            return Err(bad());
        }
        let seed: [u8; 32] = key[1..].try_into().map_err(|_| bad())?;
        let signer = NoteSigner::new(name, SigningKey::from_bytes(&seed))?;
        if hex::encode(key_hash(name, signer.key.verifying_key().as_bytes())) != hash {
            return Err(Error::Note(
                "private key hash does not match its key".into(),
            ));
        }
        Ok(signer)
    }

    /// The verifier for this key.
    pub fn verifier(&self) -> NoteVerifier {
        NoteVerifier {
            name: self.name.clone(),
            key: self.key.verifying_key(),
        }
    }

    /// Signs `body` (which must end in a newline) into a signed note.
    pub fn sign(&self, body: &str) -> Result<String, Error> {
        if !body.ends_with('\n') {
            return Err(Error::Note("a note body must end with a newline".into()));
        }
        let signature = self.key.sign(body.as_bytes());
        let mut blob = key_hash(&self.name, self.key.verifying_key().as_bytes()).to_vec();
        blob.extend_from_slice(&signature.to_bytes());
        Ok(format!(
            "{body}\n{SIGNATURE_PREFIX}{} {}\n",
            self.name,
            B64.encode(blob)
        ))
    }
}

/// A note verifier: a key name and an Ed25519 public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    key: VerifyingKey,
}

impl NoteVerifier {
    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Parses `<name>+<hex hash>+<base64(0x01 ‖ key)>`.
    pub fn parse(text: &str) -> Result<NoteVerifier, Error> {
        let bad = |why: &str| Error::Note(format!("malformed verifier key: {why}"));
        let mut parts = text.trim().splitn(3, '+');
        let name = parts.next().ok_or_else(|| bad("no name"))?;
        let hash = parts.next().ok_or_else(|| bad("no key hash"))?;
        let key = parts.next().ok_or_else(|| bad("no key"))?;
        let key = B64.decode(key).map_err(|_| bad("key is not base64"))?;
        if key.len() != 33 || key[0] != ED25519_TYPE {
            return Err(bad("not an Ed25519 key"));
        }
        let public: [u8; 32] = key[1..].try_into().map_err(|_| bad("key length"))?;
        let verifying =
            VerifyingKey::from_bytes(&public).map_err(|_| bad("invalid Ed25519 point"))?;
        if !valid_name(name) {
            return Err(bad("invalid name"));
        }
        if hex::encode(key_hash(name, &public)) != hash {
            return Err(bad("key hash does not match the key"));
        }
        Ok(NoteVerifier {
            name: name.to_owned(),
            key: verifying,
        })
    }

    /// The verifier key, `<name>+<hex key hash>+<base64(0x01 ‖ public key)>`
    /// (what `log.pub` holds).
    pub fn to_key_string(&self) -> String {
        let mut key = vec![ED25519_TYPE];
        key.extend_from_slice(self.key.as_bytes());
        format!(
            "{}+{}+{}",
            self.name,
            hex::encode(key_hash(&self.name, self.key.as_bytes())),
            B64.encode(key)
        )
    }

    /// Verifies `note` and returns its body. Signatures by other keys are
    /// ignored; at least one must be by this key and valid.
    pub fn verify<'a>(&self, note: &'a str) -> Result<&'a str, Error> {
        let split = note
            .rfind("\n\n")
            .ok_or_else(|| Error::Note("no blank line before the signatures".into()))?;
        let body = &note[..=split];
        let signatures = &note[split + 2..];
        if !signatures.ends_with('\n') {
            return Err(Error::Note(
                "signature block does not end with a newline".into(),
            ));
        }
        let my_hash = key_hash(&self.name, self.key.as_bytes());
        let mut saw_mine = false;
        for line in signatures.lines() {
            let rest = line
                .strip_prefix(SIGNATURE_PREFIX)
                .ok_or_else(|| Error::Note(format!("malformed signature line {line:?}")))?;
            let (name, blob) = rest
                .split_once(' ')
                .ok_or_else(|| Error::Note(format!("malformed signature line {line:?}")))?;
            let blob = B64
                .decode(blob)
                .map_err(|_| Error::Note("signature is not base64".into()))?;
            if name != self.name || blob.len() < 4 || blob[..4] != my_hash {
                continue;
            }
            saw_mine = true;
            let signature = ed25519_dalek::Signature::from_slice(&blob[4..])
                .map_err(|_| Error::Note("signature has the wrong length".into()))?;
            if self.key.verify_strict(body.as_bytes(), &signature).is_ok() {
                return Ok(body);
            }
        }
        Err(Error::Note(if saw_mine {
            format!("the signature by {} does not verify", self.name)
        } else {
            format!("no signature by {}", self.name)
        }))
    }
}

/// A C2SP tlog-checkpoint body: origin, tree size, root hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's origin line, e.g. `hospital.example.jp/inkan`.
    pub origin: String,
    /// Tree size: the number of leaves.
    pub size: u64,
    /// Root hash of the tree of `size` leaves.
    pub root: Hash,
}

impl Checkpoint {
    /// `<origin>\n<size>\n<base64 root>\n`.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        )
    }

    /// Parses a checkpoint body (extension lines after the root are allowed
    /// and ignored, as the spec says).
    pub fn parse(body: &str) -> Result<Checkpoint, Error> {
        let bad = |why: &str| Error::Note(format!("malformed checkpoint: {why}"));
        let mut lines = body.split('\n');
        let origin = lines
            .next()
            .filter(|o| !o.is_empty())
            .ok_or_else(|| bad("no origin"))?;
        let size_text = lines.next().ok_or_else(|| bad("no size"))?;
        if size_text.is_empty() || (size_text.len() > 1 && size_text.starts_with('0')) {
            return Err(bad("size is not a decimal number"));
        }
        let size = size_text
            .parse()
            .map_err(|_| bad("size is not a decimal number"))?;
        let root = B64
            .decode(lines.next().ok_or_else(|| bad("no root"))?)
            .map_err(|_| bad("root is not base64"))?
            .try_into()
            .map_err(|_| bad("root is not 32 bytes"))?;
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
        })
    }

    /// Verifies a signed checkpoint note and parses its body.
    pub fn verify(note: &str, verifier: &NoteVerifier) -> Result<Checkpoint, Error> {
        Checkpoint::parse(verifier.verify(note)?)
    }
}

/// SHA-256 of a checkpoint's signed note, hex: how the local anchor log
/// and bundle receipts name a checkpoint.
pub fn note_digest(note: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(note.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_key_strings_round_trip() {
        let signer = NoteSigner::generate("hospital.example.jp/inkan").unwrap();
        let verifier = NoteVerifier::parse(&signer.verifier().to_key_string()).unwrap();
        let checkpoint = Checkpoint {
            origin: "hospital.example.jp/inkan".into(),
            size: 42,
            root: [7u8; 32],
        };
        let note = signer.sign(&checkpoint.body()).unwrap();
        assert!(
            note.contains("\n\n\u{2014} hospital.example.jp/inkan "),
            "{note}"
        );
        assert_eq!(Checkpoint::verify(&note, &verifier).unwrap(), checkpoint);
        let reloaded =
            NoteSigner::from_private_key_string(&signer.to_private_key_string()).unwrap();
        assert_eq!(reloaded.verifier(), signer.verifier());
    }

    #[test]
    fn tampering_is_detected() {
        let signer = NoteSigner::generate("log").unwrap();
        let other = NoteSigner::generate("log").unwrap();
        let note = signer
            .sign("log\n3\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n")
            .unwrap();
        let verifier = signer.verifier();
        assert!(verifier.verify(&note.replace("\n3\n", "\n4\n")).is_err());
        assert!(other
            .verifier()
            .verify(&note)
            .unwrap_err()
            .to_string()
            .contains("no signature"));
        // Flip one bit of the signature.
        let sig_start = note.rfind(' ').unwrap() + 1;
        let mut blob = B64.decode(note[sig_start..].trim()).unwrap();
        blob[10] ^= 1;
        let forged = format!("{}{}\n", &note[..sig_start], B64.encode(blob));
        assert!(verifier
            .verify(&forged)
            .unwrap_err()
            .to_string()
            .contains("does not verify"));
    }

    /// A vector produced by Go's golang.org/x/mod/sumdb/note for the key
    /// `PeterNeumann` (the package's own documented example).
    #[test]
    fn go_note_vector() {
        let verifier = NoteVerifier::parse(
            "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        )
        .unwrap();
        let note = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n\n\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
        let body = verifier.verify(note).unwrap();
        assert!(body.starts_with("If you think"));
    }
}
