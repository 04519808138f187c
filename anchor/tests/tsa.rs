//! RFC 3161 against OpenSSL's own TSA (`openssl ts -reply`, certificates
//! made by scripts/tsa-shim.py): inkan's request is answered and accepted;
//! `openssl ts -verify` accepts the token inkan keeps, for the checkpoint
//! bytes inkan documents; forged, foreign and broken answers are refused.

// Tests report failures by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use ledger::tsa::{accept_response, request, verify_token, TrustAnchors};

const NOTE: &str = "test.example.jp/inkan\n4\nK8lfv3vC+lfQ4vvHHEPeOobvrxEk/p6twQxzdK8+9T8=\n\n\u{2014} test.example.jp/inkan AAAA\n";

fn shim() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/tsa-shim.py")
}

/// A TSA directory with the test and rogue CAs.
fn tsa_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new("python3")
        .arg(shim())
        .arg("init")
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success(), "tsa-shim.py init failed (needs openssl)");
    dir
}

/// OpenSSL's reply to `query` (DER), signed by the test TSA or the rogue one.
fn reply(dir: &Path, query: &[u8], rogue: bool) -> Vec<u8> {
    let q = dir.join("query.tsq");
    let r = dir.join("reply.tsr");
    std::fs::write(&q, query).unwrap();
    let mut command = Command::new("python3");
    command.arg(shim()).arg("reply").arg(dir).arg(&q).arg(&r);
    if rogue {
        command.arg("rogue");
    }
    assert!(command.status().unwrap().success());
    std::fs::read(r).unwrap()
}

fn trust(dir: &Path, file: &str) -> TrustAnchors {
    TrustAnchors::from_pem(&std::fs::read(dir.join(file)).unwrap()).unwrap()
}

#[test]
fn openssl_tsa_stamps_a_checkpoint_and_openssl_verifies_the_kept_token() {
    let dir = tsa_dir();
    let nonce = 0x1234_5678_9abc_def0;
    let query = request(NOTE, nonce, None).unwrap();
    let response = reply(dir.path(), &query, false);
    let stamp =
        accept_response(&response, NOTE, nonce, None, &trust(dir.path(), "ca.pem")).unwrap();
    assert!(stamp.gen_time.starts_with("20") && stamp.gen_time.ends_with('Z'));
    assert!(
        stamp.tsa.contains("inkan test TSA CA time stamping"),
        "{}",
        stamp.tsa
    );

    // Offline, later: the kept token still verifies, and only for this note.
    verify_token(&stamp.token, NOTE, None, &trust(dir.path(), "ca.pem")).unwrap();
    assert!(verify_token(
        &stamp.token,
        &NOTE.replace('4', "5"),
        None,
        &trust(dir.path(), "ca.pem")
    )
    .is_err());
    assert!(verify_token(&stamp.token, NOTE, None, &trust(dir.path(), "rogue-ca.pem")).is_err());

    // OpenSSL agrees: the token inkan keeps, over the documented bytes.
    std::fs::write(dir.path().join("checkpoint.txt"), NOTE).unwrap();
    std::fs::write(dir.path().join("token.der"), &stamp.token).unwrap();
    let verified = Command::new("openssl")
        .args(["ts", "-verify", "-token_in", "-in"])
        .arg(dir.path().join("token.der"))
        .arg("-data")
        .arg(dir.path().join("checkpoint.txt"))
        .arg("-CAfile")
        .arg(dir.path().join("ca.pem"))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&verified.stdout).contains("Verification: OK"),
        "{}{}",
        String::from_utf8_lossy(&verified.stdout),
        String::from_utf8_lossy(&verified.stderr)
    );
}

#[test]
fn forged_foreign_and_broken_answers_are_refused() {
    let dir = tsa_dir();
    let ca = trust(dir.path(), "ca.pem");
    let nonce = 42;
    let query = request(NOTE, nonce, None).unwrap();
    let good = reply(dir.path(), &query, false);

    let other_note = request("another checkpoint\n", nonce, None).unwrap();
    let mut flipped = good.clone();
    let last = flipped.len() - 10;
    flipped[last] ^= 0x01; // inside the signature
    #[rustfmt::skip]
    let cases: Vec<(&str, Vec<u8>, u64, &str)> = vec![
        ("another nonce (replay)",             good.clone(),                           nonce + 1, "nonce"),
        ("a token for another imprint",        reply(dir.path(), &other_note, false),  nonce, "another imprint"),
        ("a token from a TSA we do not trust", reply(dir.path(), &query, true),        nonce, "does not chain"),
        ("a rejection",                        vec![0x30, 0x05, 0x30, 0x03, 0x02, 0x01, 0x02], nonce, "refused"),
        ("garbage",                            b"<html>502 Bad Gateway</html>".to_vec(), nonce, "not a TimeStampResp"),
        ("a signature with one bit flipped",   flipped,                                nonce, "signature"),
    ];
    for (what, response, nonce, reason) in cases {
        match accept_response(&response, NOTE, nonce, None, &ca) {
            Ok(_) => panic!("{what} was accepted"),
            Err(error) => assert!(error.to_string().contains(reason), "{what}: {error}"),
        }
    }
    // The genuine answer is still fine.
    accept_response(&good, NOTE, nonce, None, &ca).unwrap();
}

/// Whether `der` holds `needle` (here: the DER of an OID).
fn contains(der: &[u8], needle: &[u8]) -> bool {
    der.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn openssl_tokens_name_their_signer_with_either_signing_certificate_attribute() {
    // id-aa-signingCertificate (v1, SHA-1) and id-aa-signingCertificateV2, DER.
    const ESS_V1: &[u8] = &[6, 11, 42, 134, 72, 134, 247, 13, 1, 9, 16, 2, 12];
    const ESS_V2: &[u8] = &[6, 11, 42, 134, 72, 134, 247, 13, 1, 9, 16, 2, 47];
    let dir = tsa_dir();
    let ca = trust(dir.path(), "ca.pem");
    let nonce = 7;
    let query = request(NOTE, nonce, None).unwrap();

    // The shim's TSA writes signingCertificateV2 (ess_cert_id_alg = sha256).
    let v2 = reply(dir.path(), &query, false);
    assert!(contains(&v2, ESS_V2) && !contains(&v2, ESS_V1));
    accept_response(&v2, NOTE, nonce, None, &ca).unwrap();

    // OpenSSL's default, SHA-1, writes signingCertificate (v1).
    let config = dir.path().join("tsa.cnf");
    let sha1 = std::fs::read_to_string(&config)
        .unwrap()
        .replace("ess_cert_id_alg = sha256", "ess_cert_id_alg = sha1");
    std::fs::write(&config, sha1).unwrap();
    let v1 = reply(dir.path(), &query, false);
    assert!(contains(&v1, ESS_V1) && !contains(&v1, ESS_V2));
    accept_response(&v1, NOTE, nonce, None, &ca).unwrap();
}

#[test]
fn openssl_tokens_carry_the_requested_policy() {
    let dir = tsa_dir();
    let ca = trust(dir.path(), "ca.pem");
    let nonce = 7;
    // A policy the TSA offers (other_policies), requested: the token is under it.
    let query = request(NOTE, nonce, Some("1.2.3.4.5")).unwrap();
    let response = reply(dir.path(), &query, false);
    accept_response(&response, NOTE, nonce, Some("1.2.3.4.5"), &ca).unwrap();
    // A token under the TSA's default policy is refused when another was asked for.
    let plain = reply(dir.path(), &request(NOTE, nonce, None).unwrap(), false);
    let error = accept_response(&plain, NOTE, nonce, Some("1.2.3.4.5"), &ca)
        .map(|stamp| stamp.serial)
        .unwrap_err();
    assert!(error.to_string().contains("policy"), "{error}");
}
