//! RFC 3161 time-stamp tokens for checkpoints: the request, and the
//! validation of a response or a stored token. Pure: bytes in, verdict out
//! (the HTTP exchange is the gateway's).
//!
//! **What is stamped**: the SHA-256 of the checkpoint's signed note,
//! exactly as served at `/-/log/checkpoint` and stored in proof bundles —
//! the UTF-8 text including the signature lines and the final newline. So
//! `openssl ts -verify -data checkpoint.txt -in token.tsr -CAfile tsa-ca.pem`
//! checks a stored token too.
//!
//! A response is accepted only when: the PKIStatus is granted (0 or 1);
//! the token is CMS SignedData over a TSTInfo; the TSTInfo's
//! messageImprint is SHA-256 of the note, its nonce is ours and its policy
//! the one we asked for (if we asked); the signed attributes carry the
//! TSTInfo content type, its SHA-256 digest and an ESS signing-certificate
//! attribute (RFC 2634 v1 or RFC 5035 v2) whose first certHash (and
//! issuerSerial, if given) is the signer certificate's; the signature
//! verifies with the signer certificate's key (RSA PKCS#1 v1.5 or ECDSA
//! P-256, SHA-256); the signer certificate has the critical extended key
//! usage timeStamping, is no CA, and chains (signature by signature, each
//! valid at genTime) to one of the configured TSA CA certificates, through
//! issuers that are each a CA (basicConstraints CA:TRUE, keyCertSign when
//! keyUsage is present, pathLenConstraint respected). Anything else is an
//! error, never a receipt.

use cms::content_info::ContentInfo;
use cms::signed_data::{SignerIdentifier, SignerInfo};
use der::asn1::{Int, OctetString};
use der::oid::{AssociatedOid, ObjectIdentifier};
use der::{Any, Decode, Encode, Sequence};
use sha2::{Digest, Sha256, Sha384, Sha512};
use spki::AlgorithmIdentifierOwned;
use x509_cert::ext::pkix::name::{GeneralName, GeneralNames};
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage};
use x509_cert::serial_number::SerialNumber;
use x509_cert::Certificate;
use x509_tsp::{MessageImprint, TimeStampReq, TimeStampResp, TspVersion, TstInfo};

use crate::Error;

const ID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const ID_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
const ID_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.3");
/// RFC 2634 §5.4: ESSCertID, SHA-1 certHash.
const ID_AA_SIGNING_CERTIFICATE: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.2.12");
/// RFC 5035 §3: ESSCertIDv2, certHash with its own algorithm (default SHA-256).
const ID_AA_SIGNING_CERTIFICATE_V2: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.2.47");
const ID_SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
const ID_CT_TST_INFO: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.1.4");
const ID_CONTENT_TYPE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.3");
const ID_MESSAGE_DIGEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
const ID_KP_TIME_STAMPING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.8");
const ID_CE_EXT_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37");
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const SHA256_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");

/// The TSA CA certificates a token must chain to.
#[derive(Debug, Clone)]
pub struct TrustAnchors {
    certificates: Vec<Certificate>,
}

impl TrustAnchors {
    /// From a PEM bundle (one or more `CERTIFICATE` blocks).
    pub fn from_pem(pem: &[u8]) -> Result<TrustAnchors, Error> {
        let certificates = Certificate::load_pem_chain(pem)
            .map_err(|e| tsa_error(format!("the TSA CA file is not PEM certificates: {e}")))?;
        if certificates.is_empty() {
            return Err(tsa_error("the TSA CA file holds no certificate".into()));
        }
        Ok(TrustAnchors { certificates })
    }
}

/// A validated time stamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    /// The TSA's time, RFC 3339 (UTC).
    pub gen_time: String,
    /// The token's serial number, hex.
    pub serial: String,
    /// The signer certificate's subject.
    pub tsa: String,
    /// The token (CMS ContentInfo), DER: self-contained, kept as the receipt.
    pub token: Vec<u8>,
}

impl Stamp {
    /// The receipt kept beside the checkpoint and copied into proof
    /// bundles (JSON): the TSA's URL, the time, serial and signer, and the
    /// token itself (base64 DER), which is all an offline check needs.
    pub fn receipt(&self, tsa_url: &str) -> String {
        use base64::Engine;
        serde_json::json!({
            "tsa": tsa_url,
            "genTime": self.gen_time,
            "serial": self.serial,
            "signer": self.tsa,
            "token": base64::engine::general_purpose::STANDARD.encode(&self.token),
        })
        .to_string()
    }
}

/// Checks a stored `rfc3161` receipt (from [`Stamp::receipt`]) for the
/// checkpoint `note`; with `policy`, the token must be under that TSA policy.
pub fn verify_receipt(
    receipt: &str,
    note: &str,
    policy: Option<&str>,
    trust: &TrustAnchors,
) -> Result<Stamp, Error> {
    use base64::Engine;
    let value: serde_json::Value =
        serde_json::from_str(receipt).map_err(|_| tsa_error("the receipt is not JSON".into()))?;
    let token = value["token"]
        .as_str()
        .and_then(|t| base64::engine::general_purpose::STANDARD.decode(t).ok())
        .ok_or_else(|| tsa_error("the receipt holds no token".into()))?;
    verify_token(&token, note, policy, trust)
}

fn tsa_error(reason: String) -> Error {
    Error::Anchor(format!("RFC 3161: {reason}"))
}

/// The SHA-256 that is stamped for a checkpoint (see the module docs).
pub fn imprint(note: &str) -> [u8; 32] {
    Sha256::digest(note.as_bytes()).into()
}

/// A DER `TimeStampReq` for `note`: SHA-256 imprint, `nonce`, certReq
/// true, and the TSA policy when one is required.
pub fn request(note: &str, nonce: u64, policy: Option<&str>) -> Result<Vec<u8>, Error> {
    let req_policy = policy_oid(policy)?;
    let request = TimeStampReq {
        version: TspVersion::V1,
        message_imprint: sha256_imprint(&imprint(note))?,
        req_policy,
        nonce: Some(positive_int(&nonce.to_be_bytes())?),
        cert_req: true,
        extensions: None,
    };
    request
        .to_der()
        .map_err(|e| tsa_error(format!("cannot encode the request: {e}")))
}

fn policy_oid(policy: Option<&str>) -> Result<Option<ObjectIdentifier>, Error> {
    policy
        .map(|p| ObjectIdentifier::new(p).map_err(|e| tsa_error(format!("policy OID {p:?}: {e}"))))
        .transpose()
}

fn sha256_imprint(digest: &[u8; 32]) -> Result<MessageImprint, Error> {
    Ok(MessageImprint {
        hash_algorithm: spki::AlgorithmIdentifier {
            oid: ID_SHA256,
            parameters: Some(Any::null()),
        },
        hashed_message: OctetString::new(digest.to_vec()).map_err(|e| tsa_error(e.to_string()))?,
    })
}

/// A non-negative DER INTEGER from big-endian bytes.
fn positive_int(bytes: &[u8]) -> Result<Int, Error> {
    let trimmed: Vec<u8> = {
        let start = bytes
            .iter()
            .position(|b| *b != 0)
            .unwrap_or(bytes.len() - 1);
        let mut v = bytes[start..].to_vec();
        if v.first().is_some_and(|b| b & 0x80 != 0) {
            v.insert(0, 0);
        }
        v
    };
    Int::new(&trimmed).map_err(|e| tsa_error(e.to_string()))
}

/// Validates a TSA's `TimeStampResp` to our request for `note` with
/// `nonce` and `policy` (the one requested, if any). Returns the stamp to
/// keep as the receipt.
pub fn accept_response(
    response: &[u8],
    note: &str,
    nonce: u64,
    policy: Option<&str>,
    trust: &TrustAnchors,
) -> Result<Stamp, Error> {
    let parsed = TimeStampResp::from_der(response)
        .map_err(|e| tsa_error(format!("the response is not a TimeStampResp: {e}")))?;
    let status = parsed.status.status as u8;
    if status > 1 {
        let text = parsed
            .status
            .status_string
            .as_ref()
            .and_then(|s| s.iter().next().map(|t| t.as_str().to_owned()))
            .unwrap_or_default();
        return Err(tsa_error(format!(
            "the TSA refused the request (PKIStatus {status}) {text}"
        )));
    }
    let token = parsed
        .time_stamp_token
        .ok_or_else(|| tsa_error("the response grants but carries no token".into()))?
        .to_der()
        .map_err(|e| tsa_error(e.to_string()))?;
    let (stamp, info) = check_token(&token, note, policy_oid(policy)?.as_ref(), trust)?;
    let expected = positive_int(&nonce.to_be_bytes())?;
    if info.nonce.as_ref() != Some(&expected) {
        return Err(tsa_error(
            "the token's nonce is not the one we sent (a replayed or foreign token)".into(),
        ));
    }
    Ok(stamp)
}

/// Validates a stored token for `note` (offline; no nonce to compare).
/// With `policy`, the token must be under that TSA policy; without, any.
pub fn verify_token(
    token: &[u8],
    note: &str,
    policy: Option<&str>,
    trust: &TrustAnchors,
) -> Result<Stamp, Error> {
    check_token(token, note, policy_oid(policy)?.as_ref(), trust).map(|(stamp, _)| stamp)
}

fn check_token(
    token: &[u8],
    note: &str,
    policy: Option<&ObjectIdentifier>,
    trust: &TrustAnchors,
) -> Result<(Stamp, TstInfo), Error> {
    let content = ContentInfo::from_der(token)
        .map_err(|e| tsa_error(format!("the token is not CMS: {e}")))?;
    if content.content_type != ID_SIGNED_DATA {
        return Err(tsa_error("the token is not CMS SignedData".into()));
    }
    let signed = LenientSignedData::parse(
        &content
            .content
            .to_der()
            .map_err(|e| tsa_error(e.to_string()))?,
    )?;
    if signed.encap_content_info.econtent_type != ID_CT_TST_INFO {
        return Err(tsa_error("the token does not carry a TSTInfo".into()));
    }
    let econtent = signed
        .encap_content_info
        .econtent
        .as_ref()
        .ok_or_else(|| tsa_error("the token's TSTInfo is detached".into()))?;
    let tst_der = econtent
        .decode_as::<OctetString>()
        .map_err(|e| tsa_error(format!("the TSTInfo is not an OCTET STRING: {e}")))?
        .into_bytes();
    let info = TstInfo::from_der(&tst_der)
        .map_err(|e| tsa_error(format!("the TSTInfo is malformed: {e}")))?;
    if info.message_imprint.hash_algorithm.oid != ID_SHA256
        || info.message_imprint.hashed_message.as_bytes() != imprint(note)
    {
        return Err(tsa_error(
            "the token stamps another imprint, not SHA-256 of this checkpoint".into(),
        ));
    }
    if let Some(policy) = policy {
        if info.policy != *policy {
            return Err(tsa_error(format!(
                "the token is under TSA policy {}, not the requested {policy}",
                info.policy
            )));
        }
    }
    let signer_info = {
        let mut signers = signed.signer_infos.iter();
        match (signers.next(), signers.next()) {
            (Some(one), None) => one,
            _ => return Err(tsa_error("the token must have exactly one signer".into())),
        }
    };
    let certificates = signed.certificates;
    let signer_with_der = find_signer(&signer_info.sid, &certificates)
        .ok_or_else(|| tsa_error("the signer certificate is not in the token".into()))?;
    let signer = &signer_with_der.certificate;
    check_signed_attributes(signer_info, &tst_der)?;
    check_signing_certificate_attribute(signer_info, signer_with_der)?;
    let signed_attrs = signer_info
        .signed_attrs
        .as_ref()
        .ok_or_else(|| tsa_error("the signer has no signed attributes".into()))?
        .to_der()
        .map_err(|e| tsa_error(e.to_string()))?;
    verify_signature(
        signer,
        &signer_info.signature_algorithm.oid,
        &signed_attrs,
        signer_info.signature.as_bytes(),
    )?;
    check_time_stamping_eku(signer)?;
    check_not_a_ca(signer)?;
    let gen_time = info.gen_time.to_unix_duration().as_secs();
    let pool: Vec<Certificate> = certificates.iter().map(|c| c.certificate.clone()).collect();
    check_chain(signer, &pool, trust, gen_time)?;
    let stamp = Stamp {
        gen_time: rfc3339(gen_time),
        serial: hex::encode(info.serial_number.as_bytes()),
        tsa: signer.tbs_certificate.subject.to_string(),
        token: token.to_vec(),
    };
    Ok((stamp, info))
}

/// The parts of a CMS SignedData a token check needs, read without the
/// strict SET OF rules of DER: real TSAs (OpenSSL among them) put the
/// signer certificate in `certificates` twice, which a strict decoder
/// refuses although nothing signed depends on that set.
struct LenientSignedData {
    encap_content_info: cms::signed_data::EncapsulatedContentInfo,
    certificates: Vec<TokenCertificate>,
    signer_infos: Vec<SignerInfo>,
}

/// A certificate from the token, with its DER exactly as carried: the ESS
/// certHash is over these bytes, not over a re-encoding.
struct TokenCertificate {
    certificate: Certificate,
    der: Vec<u8>,
}

impl LenientSignedData {
    fn parse(der: &[u8]) -> Result<LenientSignedData, Error> {
        let malformed =
            |what: &str| tsa_error(format!("the token's SignedData is malformed ({what})"));
        let (tag, body, _) = tlv(der).ok_or_else(|| malformed("outer"))?;
        if tag != 0x30 {
            return Err(malformed("not a SEQUENCE"));
        }
        let mut fields = Vec::new();
        let mut rest = body;
        while !rest.is_empty() {
            let (tag, content, next) = tlv(rest).ok_or_else(|| malformed("field"))?;
            fields.push((tag, content, &rest[..rest.len() - next.len()]));
            rest = next;
        }
        // version, digestAlgorithms, encapContentInfo, [0] certificates?,
        // [1] crls?, signerInfos
        let encap = fields.get(2).ok_or_else(|| malformed("no content"))?;
        let encap_content_info = cms::signed_data::EncapsulatedContentInfo::from_der(encap.2)
            .map_err(|e| tsa_error(format!("the token's content is malformed: {e}")))?;
        let mut certificates = Vec::new();
        if let Some((_, content, _)) = fields.iter().find(|(tag, _, _)| *tag == 0xA0) {
            let mut rest: &[u8] = content;
            while !rest.is_empty() {
                let (_, _, next) = tlv(rest).ok_or_else(|| malformed("certificate"))?;
                let whole = &rest[..rest.len() - next.len()];
                // Other certificate formats ([3]) are skipped.
                if let Ok(certificate) = Certificate::from_der(whole) {
                    certificates.push(TokenCertificate {
                        certificate,
                        der: whole.to_vec(),
                    });
                }
                rest = next;
            }
        }
        let (tag, content, _) = fields.last().ok_or_else(|| malformed("no signers"))?;
        if *tag != 0x31 {
            return Err(malformed("signerInfos is not a SET"));
        }
        let mut signer_infos = Vec::new();
        let mut rest: &[u8] = content;
        while !rest.is_empty() {
            let (_, _, next) = tlv(rest).ok_or_else(|| malformed("signer"))?;
            let whole = &rest[..rest.len() - next.len()];
            signer_infos.push(
                SignerInfo::from_der(whole)
                    .map_err(|e| tsa_error(format!("the token's signer is malformed: {e}")))?,
            );
            rest = next;
        }
        Ok(LenientSignedData {
            encap_content_info,
            certificates,
            signer_infos,
        })
    }
}

/// One DER TLV: (tag, content, the bytes after it).
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (length, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7F);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let length = rest[..count]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (length, &rest[count..])
    };
    (rest.len() >= length).then(|| (tag, &rest[..length], &rest[length..]))
}

fn find_signer<'a>(
    sid: &SignerIdentifier,
    certificates: &'a [TokenCertificate],
) -> Option<&'a TokenCertificate> {
    certificates.iter().find(|candidate| {
        let cert = &candidate.certificate;
        match sid {
            SignerIdentifier::IssuerAndSerialNumber(id) => {
                cert.tbs_certificate.issuer == id.issuer
                    && cert.tbs_certificate.serial_number == id.serial_number
            }
            SignerIdentifier::SubjectKeyIdentifier(ski) => {
                cert.tbs_certificate.extensions.iter().flatten().any(|ext| {
                    ext.extn_id == ObjectIdentifier::new_unwrap("2.5.29.14")
                        && OctetString::from_der(ext.extn_value.as_bytes())
                            .is_ok_and(|inner| inner.as_bytes() == ski.0.as_bytes())
                })
            }
        }
    })
}

/// The signed attributes name the TSTInfo content type and its digest.
fn check_signed_attributes(signer: &SignerInfo, tst_der: &[u8]) -> Result<(), Error> {
    if signer.digest_alg.oid != ID_SHA256 {
        return Err(tsa_error("the signer's digest is not SHA-256".into()));
    }
    let attributes = signer
        .signed_attrs
        .as_ref()
        .ok_or_else(|| tsa_error("the signer has no signed attributes".into()))?;
    let value_of = |oid: ObjectIdentifier| {
        attributes
            .iter()
            .find(|a| a.oid == oid)
            .and_then(|a| a.values.iter().next().cloned())
    };
    let content_type = value_of(ID_CONTENT_TYPE)
        .and_then(|v| v.decode_as::<ObjectIdentifier>().ok())
        .ok_or_else(|| tsa_error("the content-type attribute is missing".into()))?;
    if content_type != ID_CT_TST_INFO {
        return Err(tsa_error("the signed content type is not TSTInfo".into()));
    }
    let digest = value_of(ID_MESSAGE_DIGEST)
        .and_then(|v| v.decode_as::<OctetString>().ok())
        .ok_or_else(|| tsa_error("the message-digest attribute is missing".into()))?;
    if digest.as_bytes() != &Sha256::digest(tst_der)[..] {
        return Err(tsa_error(
            "the signed digest does not match the TSTInfo".into(),
        ));
    }
    Ok(())
}

/// RFC 2634 §5.4 `SigningCertificate` (v1: SHA-1 certHash).
#[derive(Sequence)]
struct SigningCertificate {
    certs: Vec<EssCertId>,
    policies: Option<Vec<Any>>,
}

#[derive(Sequence)]
struct EssCertId {
    cert_hash: OctetString,
    issuer_serial: Option<IssuerSerial>,
}

/// RFC 5035 §3 `SigningCertificateV2`.
#[derive(Sequence)]
struct SigningCertificateV2 {
    certs: Vec<EssCertIdV2>,
    policies: Option<Vec<Any>>,
}

#[derive(Sequence)]
struct EssCertIdV2 {
    /// Absent means SHA-256 (DER omits the DEFAULT).
    hash_algorithm: Option<AlgorithmIdentifierOwned>,
    cert_hash: OctetString,
    issuer_serial: Option<IssuerSerial>,
}

#[derive(Sequence)]
struct IssuerSerial {
    issuer: GeneralNames,
    serial_number: SerialNumber,
}

/// The signed ESS signing-certificate attribute binds the signature to the
/// signer certificate (RFC 3161 §2.4.1, RFC 5816): without it a
/// certificate with the same key, or a substituted one, could be presented
/// as the signer. Its first ESSCertID names the signer; every such
/// attribute present (v1, v2) must name this one.
fn check_signing_certificate_attribute(
    signer_info: &SignerInfo,
    signer: &TokenCertificate,
) -> Result<(), Error> {
    let mismatch = |what: &str| {
        tsa_error(format!(
            "the ESS signing-certificate attribute does not match the signer ({what})"
        ))
    };
    let malformed = |e: der::Error| {
        tsa_error(format!(
            "the ESS signing-certificate attribute is malformed: {e}"
        ))
    };
    let mut found = false;
    for attribute in signer_info.signed_attrs.iter().flat_map(|a| a.iter()) {
        let is_v1 = attribute.oid == ID_AA_SIGNING_CERTIFICATE;
        if !is_v1 && attribute.oid != ID_AA_SIGNING_CERTIFICATE_V2 {
            continue;
        }
        let value = match (attribute.values.len(), attribute.values.iter().next()) {
            (1, Some(value)) => value,
            _ => {
                return Err(tsa_error(
                    "the ESS signing-certificate attribute must have one value".into(),
                ))
            }
        };
        // (certHash, the same hash of the signer's DER, issuerSerial)
        let (cert_hash, computed, issuer_serial) = if is_v1 {
            let v1 = value.decode_as::<SigningCertificate>().map_err(malformed)?;
            let first = v1
                .certs
                .into_iter()
                .next()
                .ok_or_else(|| mismatch("no ESSCertID"))?;
            let sha1 = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &signer.der);
            (first.cert_hash, sha1.as_ref().to_vec(), first.issuer_serial)
        } else {
            let v2 = value
                .decode_as::<SigningCertificateV2>()
                .map_err(malformed)?;
            let first = v2
                .certs
                .into_iter()
                .next()
                .ok_or_else(|| mismatch("no ESSCertIDv2"))?;
            let computed = match first.hash_algorithm.map_or(ID_SHA256, |a| a.oid) {
                ID_SHA256 => Sha256::digest(&signer.der).to_vec(),
                ID_SHA384 => Sha384::digest(&signer.der).to_vec(),
                ID_SHA512 => Sha512::digest(&signer.der).to_vec(),
                other => {
                    return Err(tsa_error(format!(
                        "the ESS signing-certificate attribute hashes with {other}, which is not supported"
                    )))
                }
            };
            (first.cert_hash, computed, first.issuer_serial)
        };
        if cert_hash.as_bytes() != computed.as_slice() {
            return Err(mismatch("certHash"));
        }
        if let Some(issuer_serial) = issuer_serial {
            let tbs = &signer.certificate.tbs_certificate;
            let names_issuer = issuer_serial
                .issuer
                .iter()
                .any(|name| matches!(name, GeneralName::DirectoryName(n) if n == &tbs.issuer));
            if !names_issuer || issuer_serial.serial_number != tbs.serial_number {
                return Err(mismatch("issuerSerial"));
            }
        }
        found = true;
    }
    if found {
        Ok(())
    } else {
        Err(tsa_error(
            "the ESS signing-certificate attribute (RFC 2634/5035) is missing".into(),
        ))
    }
}

/// Verifies `signature` over `message` with `signer`'s public key.
fn verify_signature(
    signer: &Certificate,
    algorithm: &ObjectIdentifier,
    message: &[u8],
    signature: &[u8],
) -> Result<(), Error> {
    let spki = &signer.tbs_certificate.subject_public_key_info;
    let key_bytes = spki.subject_public_key.raw_bytes();
    match (spki.algorithm.oid, *algorithm) {
        (RSA_ENCRYPTION, RSA_ENCRYPTION | SHA256_WITH_RSA) => {
            use rsa::pkcs1::DecodeRsaPublicKey;
            use rsa::signature::Verifier;
            let key = rsa::RsaPublicKey::from_pkcs1_der(key_bytes)
                .map_err(|e| tsa_error(format!("bad RSA key: {e}")))?;
            let verifying = rsa::pkcs1v15::VerifyingKey::<Sha256>::new(key);
            let signature = rsa::pkcs1v15::Signature::try_from(signature)
                .map_err(|e| tsa_error(format!("bad RSA signature: {e}")))?;
            verifying
                .verify(message, &signature)
                .map_err(|_| tsa_error("the signature does not verify".into()))
        }
        (EC_PUBLIC_KEY, ECDSA_WITH_SHA256) => {
            use p256::ecdsa::signature::Verifier;
            let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(key_bytes)
                .map_err(|e| tsa_error(format!("bad P-256 key: {e}")))?;
            let signature = p256::ecdsa::Signature::from_der(signature)
                .map_err(|e| tsa_error(format!("bad ECDSA signature: {e}")))?;
            key.verify(message, &signature)
                .map_err(|_| tsa_error("the signature does not verify".into()))
        }
        (key, algorithm) => Err(tsa_error(format!(
            "unsupported signature: key {key}, algorithm {algorithm}"
        ))),
    }
}

/// RFC 3161 §2.3: the TSA certificate has exactly the timeStamping
/// extended key usage, marked critical.
fn check_time_stamping_eku(signer: &Certificate) -> Result<(), Error> {
    let extension = signer
        .tbs_certificate
        .extensions
        .iter()
        .flatten()
        .find(|e| e.extn_id == ID_CE_EXT_KEY_USAGE)
        .ok_or_else(|| tsa_error("the signer certificate has no extended key usage".into()))?;
    if !extension.critical {
        return Err(tsa_error(
            "the signer's extended key usage is not critical".into(),
        ));
    }
    let usages = x509_cert::ext::pkix::ExtendedKeyUsage::from_der(extension.extn_value.as_bytes())
        .map_err(|e| tsa_error(format!("malformed extended key usage: {e}")))?;
    if usages.0 != [ID_KP_TIME_STAMPING] {
        return Err(tsa_error(
            "the signer certificate is not (only) for time stamping".into(),
        ));
    }
    Ok(())
}

/// The time-stamping signer is an end entity: a CA certificate (even one
/// with the timeStamping usage) is not accepted as the TSA.
fn check_not_a_ca(signer: &Certificate) -> Result<(), Error> {
    if basic_constraints(signer)?.is_some_and(|b| b.ca) {
        return Err(tsa_error(
            "the signer certificate is a CA certificate (basicConstraints CA:TRUE), not a time-stamping end entity".into(),
        ));
    }
    Ok(())
}

fn basic_constraints(certificate: &Certificate) -> Result<Option<BasicConstraints>, Error> {
    extension::<BasicConstraints>(certificate, "basicConstraints")
}

/// The certificate's extension `T`, decoded, if present.
fn extension<T: AssociatedOid + for<'a> Decode<'a>>(
    certificate: &Certificate,
    name: &str,
) -> Result<Option<T>, Error> {
    certificate
        .tbs_certificate
        .extensions
        .iter()
        .flatten()
        .find(|e| e.extn_id == T::OID)
        .map(|e| {
            T::from_der(e.extn_value.as_bytes()).map_err(|err| {
                tsa_error(format!(
                    "{}: malformed {name}: {err}",
                    certificate.tbs_certificate.subject
                ))
            })
        })
        .transpose()
}

/// RFC 5280 §4.2.1.9 and §4.2.1.3: a certificate that issued another in the
/// path must be a CA (basicConstraints CA:TRUE) allowed to sign
/// certificates (keyCertSign, when it has a keyUsage), with no more
/// intermediate CA certificates below it than its pathLenConstraint.
fn check_issuer(issuer: &Certificate, role: &str, intermediates_below: usize) -> Result<(), Error> {
    let subject = &issuer.tbs_certificate.subject;
    let constraints = basic_constraints(issuer)?.filter(|b| b.ca).ok_or_else(|| {
        tsa_error(format!(
            "the {role} certificate ({subject}) is not a CA (basicConstraints)"
        ))
    })?;
    if extension::<KeyUsage>(issuer, "keyUsage")?.is_some_and(|usage| !usage.key_cert_sign()) {
        return Err(tsa_error(format!(
            "the {role} certificate ({subject}) may not sign certificates (keyUsage without keyCertSign)"
        )));
    }
    if let Some(limit) = constraints.path_len_constraint {
        if intermediates_below > usize::from(limit) {
            return Err(tsa_error(format!(
                "the {role} certificate ({subject}) allows {limit} intermediate CA certificates below it, the path has {intermediates_below} (pathLenConstraint)"
            )));
        }
    }
    Ok(())
}

/// Walks from `signer` to a trust anchor through `pool`, verifying each
/// certificate's signature with its issuer's key, its validity at `at`
/// (Unix seconds), and that each issuer is a CA that may issue it
/// ([`check_issuer`]): so the signer, no CA, never serves as an issuer.
fn check_chain(
    signer: &Certificate,
    pool: &[Certificate],
    trust: &TrustAnchors,
    at: u64,
) -> Result<(), Error> {
    let mut current = signer;
    // Intermediate CA certificates between the signer and the issuer
    // being looked for (for pathLenConstraint).
    let mut intermediates_below = 0;
    for _ in 0..6 {
        check_validity(current, at)?;
        let tbs = current
            .tbs_certificate
            .to_der()
            .map_err(|e| tsa_error(e.to_string()))?;
        let signature = current.signature.raw_bytes();
        let algorithm = current.signature_algorithm.oid;
        let issued_by = |issuer: &Certificate| {
            issuer.tbs_certificate.subject == current.tbs_certificate.issuer
                && verify_signature(issuer, &algorithm, &tbs, signature).is_ok()
        };
        if let Some(anchor) = trust.certificates.iter().find(|a| issued_by(a)) {
            check_validity(anchor, at)?;
            return check_issuer(anchor, "TSA CA", intermediates_below);
        }
        match pool.iter().find(|c| *c != current && issued_by(c)) {
            Some(intermediate) => {
                check_issuer(intermediate, "intermediate CA", intermediates_below)?;
                current = intermediate;
                intermediates_below += 1;
            }
            None => {
                return Err(tsa_error(format!(
                    "the TSA certificate ({}) does not chain to the configured TSA CA",
                    signer.tbs_certificate.subject
                )))
            }
        }
    }
    Err(tsa_error("the certificate chain is too long".into()))
}

fn check_validity(certificate: &Certificate, at: u64) -> Result<(), Error> {
    let validity = &certificate.tbs_certificate.validity;
    let not_before = validity.not_before.to_unix_duration().as_secs();
    let not_after = validity.not_after.to_unix_duration().as_secs();
    if at < not_before || at > not_after {
        return Err(tsa_error(format!(
            "{} is not valid at the stamp's time",
            certificate.tbs_certificate.subject
        )));
    }
    Ok(())
}

fn rfc3339(unix: u64) -> String {
    let days = unix / 86_400;
    let secs = unix % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod test_tokens;

#[cfg(test)]
mod tests {
    use super::test_tokens::{issue, token, trust, CertSpec, Ess, Issued};
    use super::*;

    const NOTE: &str = "test.example.jp/inkan\n4\nK8lfv3vC+lfQ4vvHHEPeOobvrxEk/p6twQxzdK8+9T8=\n\n\u{2014} test.example.jp/inkan AAAA\n";
    const POLICY: &str = "1.2.392.200081.1.1";

    /// The usual attribute: RFC 5035 v2, SHA-256, no issuerSerial.
    fn v2(hashed: &Issued) -> Option<Ess<'_>> {
        Some(Ess::V2 {
            sha384: false,
            hashed,
            issuer_serial: None,
        })
    }

    /// What a line shows, the token, the trust anchor, the policy asked
    /// for, and the outcome (an error naming the check).
    type Case<'a> = (
        &'a str,
        Vec<u8>,
        &'a Issued,
        Option<&'a str>,
        Result<(), &'a str>,
    );

    /// A CA spec changed by `change`.
    fn ca_with(
        common_name: &'static str,
        key_seed: u8,
        serial: u8,
        change: impl FnOnce(&mut CertSpec),
    ) -> CertSpec {
        let mut spec = CertSpec::ca(common_name, key_seed, serial);
        change(&mut spec);
        spec
    }

    /// Each line differs from a good token (or trust anchor) in one respect
    /// and names the check that refuses it; without that check the line
    /// is accepted.
    #[test]
    fn token_checks_table() {
        use x509_cert::ext::pkix::KeyUsages;
        // Variants of one root (same name and key, other extensions) and
        // of one intermediate: what they issued chains to each of them.
        let root = issue(&CertSpec::ca("Test Root CA", 1, 1), None);
        let root_variant =
            |change: fn(&mut CertSpec)| issue(&ca_with("Test Root CA", 1, 1, change), None);
        let root_without_basic_constraints = root_variant(|s| s.basic_constraints = None);
        let root_not_ca = root_variant(|s| s.basic_constraints = Some((false, None)));
        let root_without_key_cert_sign =
            root_variant(|s| s.key_usage = Some(KeyUsages::CRLSign.into()));
        let root_without_key_usage = root_variant(|s| s.key_usage = None);
        let root_path_len_0 = root_variant(|s| s.basic_constraints = Some((true, Some(0))));
        let root_path_len_1 = root_variant(|s| s.basic_constraints = Some((true, Some(1))));
        let inter = issue(&CertSpec::ca("Test Intermediate CA", 3, 4), Some(&root));
        let inter_variant = |change: fn(&mut CertSpec)| {
            issue(&ca_with("Test Intermediate CA", 3, 4, change), Some(&root))
        };
        let inter_without_basic_constraints = inter_variant(|s| s.basic_constraints = None);
        let inter_without_key_cert_sign =
            inter_variant(|s| s.key_usage = Some(KeyUsages::DigitalSignature.into()));
        let inter_path_len_0 = inter_variant(|s| s.basic_constraints = Some((true, Some(0))));
        let low = issue(&CertSpec::ca("Test Low CA", 5, 6), Some(&inter));

        let tsa = issue(&CertSpec::tsa("Test TSA", 2, 2), Some(&root));
        let tsa_below_inter = issue(&CertSpec::tsa("Test TSA below one CA", 4, 5), Some(&inter));
        let tsa_below_low = issue(&CertSpec::tsa("Test TSA below two CAs", 6, 7), Some(&low));
        let mut tsa_ca_spec = CertSpec::tsa("Test TSA that is a CA", 2, 3);
        tsa_ca_spec.basic_constraints = Some((true, None));
        let tsa_is_ca = issue(&tsa_ca_spec, Some(&root));
        // Serial 2 as the TSA's, from another issuer.
        let same_serial_other_issuer = issue(&CertSpec::tsa("Test other TSA", 7, 2), Some(&inter));

        let stamp =
            |signer: &Issued, chain: &[&Issued]| token(NOTE, POLICY, signer, chain, v2(signer));
        let with_ess = |ess: Option<Ess<'_>>| token(NOTE, POLICY, &tsa, &[], ess);
        let v1 = |hashed, issuer_serial| {
            Some(Ess::V1 {
                hashed,
                issuer_serial,
            })
        };
        let v2_full = |sha384, hashed, issuer_serial| {
            Some(Ess::V2 {
                sha384,
                hashed,
                issuer_serial,
            })
        };

        #[rustfmt::skip]
        let cases: Vec<Case<'_>> = vec![
            ("good: the root directly",                     stamp(&tsa, &[]),                           &root, None, Ok(())),
            ("good: root without keyUsage",                 stamp(&tsa, &[]),                           &root_without_key_usage, None, Ok(())),
            ("good: pathLen 0, no intermediate",            stamp(&tsa, &[]),                           &root_path_len_0, None, Ok(())),
            ("good: pathLen 1, one intermediate",           stamp(&tsa_below_inter, &[&inter]),         &root_path_len_1, None, Ok(())),
            ("good: two intermediates, no pathLen",         stamp(&tsa_below_low, &[&low, &inter]),     &root, None, Ok(())),
            ("root without basicConstraints",               stamp(&tsa, &[]),                           &root_without_basic_constraints, None, Err("TSA CA certificate (CN=Test Root CA) is not a CA (basicConstraints)")),
            ("root with CA:FALSE",                          stamp(&tsa, &[]),                           &root_not_ca, None, Err("TSA CA certificate (CN=Test Root CA) is not a CA (basicConstraints)")),
            ("root keyUsage without keyCertSign",           stamp(&tsa, &[]),                           &root_without_key_cert_sign, None, Err("TSA CA certificate (CN=Test Root CA) may not sign certificates (keyUsage without keyCertSign)")),
            ("intermediate without basicConstraints",       stamp(&tsa_below_inter, &[&inter_without_basic_constraints]), &root, None, Err("intermediate CA certificate (CN=Test Intermediate CA) is not a CA (basicConstraints)")),
            ("intermediate keyUsage without keyCertSign",   stamp(&tsa_below_inter, &[&inter_without_key_cert_sign]), &root, None, Err("intermediate CA certificate (CN=Test Intermediate CA) may not sign certificates")),
            ("root pathLen 0 above an intermediate",        stamp(&tsa_below_inter, &[&inter]),         &root_path_len_0, None, Err("TSA CA certificate (CN=Test Root CA) allows 0 intermediate CA certificates below it, the path has 1 (pathLenConstraint)")),
            ("intermediate pathLen 0 above another",        stamp(&tsa_below_low, &[&low, &inter_path_len_0]), &root, None, Err("intermediate CA certificate (CN=Test Intermediate CA) allows 0 intermediate CA certificates below it, the path has 1 (pathLenConstraint)")),
            ("signer is a CA",                              stamp(&tsa_is_ca, &[]),                     &root, None, Err("the signer certificate is a CA certificate")),
            ("good: v1 attribute with issuerSerial",        with_ess(v1(&tsa, Some(&tsa))),             &root, None, Ok(())),
            ("good: v2 attribute, SHA-384, issuerSerial",   with_ess(v2_full(true, &tsa, Some(&tsa))),  &root, None, Ok(())),
            ("no signing-certificate attribute",            with_ess(None),                             &root, None, Err("the ESS signing-certificate attribute (RFC 2634/5035) is missing")),
            ("v1 attribute naming another certificate",     with_ess(v1(&root, None)),                  &root, None, Err("the ESS signing-certificate attribute does not match the signer (certHash)")),
            ("v2 attribute naming another certificate",     with_ess(v2(&root)),                        &root, None, Err("the ESS signing-certificate attribute does not match the signer (certHash)")),
            ("v2 SHA-384 naming another certificate",       with_ess(v2_full(true, &root, None)),       &root, None, Err("the ESS signing-certificate attribute does not match the signer (certHash)")),
            ("v1 issuerSerial of another certificate",      with_ess(v1(&tsa, Some(&root))),            &root, None, Err("the ESS signing-certificate attribute does not match the signer (issuerSerial)")),
            ("v2 issuerSerial of another certificate",      with_ess(v2_full(false, &tsa, Some(&root))), &root, None, Err("the ESS signing-certificate attribute does not match the signer (issuerSerial)")),
            ("v2 issuerSerial naming another issuer",       with_ess(v2_full(false, &tsa, Some(&same_serial_other_issuer))), &root, None, Err("the ESS signing-certificate attribute does not match the signer (issuerSerial)")),
            ("good: the requested policy",                  stamp(&tsa, &[]),                           &root, Some(POLICY), Ok(())),
            ("another policy than requested",               stamp(&tsa, &[]),                           &root, Some("1.2.3.4.5"), Err("the token is under TSA policy 1.2.392.200081.1.1, not the requested 1.2.3.4.5")),
        ];
        let mut wrong = Vec::new();
        for (what, token, anchor, policy, expected) in cases {
            let got = verify_token(&token, NOTE, policy, &trust(&[anchor])).map(|_| ());
            match (&got, expected) {
                (Ok(()), Ok(())) => {}
                (Err(error), Err(reason)) if error.to_string().contains(reason) => {}
                _ => wrong.push(format!("{what}: got {got:?}, want {expected:?}")),
            }
        }
        assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
    }

    #[test]
    fn dates_table() {
        #[rustfmt::skip]
        let cases = [
            (0, "1970-01-01T00:00:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (1_795_000_000, "2026-11-18T11:06:40Z"),
        ];
        for (unix, want) in cases {
            assert_eq!(rfc3339(unix), want);
        }
    }

    #[test]
    fn request_carries_imprint_nonce_and_cert_req() {
        let der = request("note\n", 0x8000_0000_0000_0001, Some("1.2.3.4")).unwrap();
        let parsed = TimeStampReq::from_der(&der).unwrap();
        assert_eq!(
            parsed.message_imprint.hashed_message.as_bytes(),
            imprint("note\n")
        );
        assert!(parsed.cert_req);
        assert_eq!(
            parsed.nonce.unwrap().as_bytes(),
            &[0x00, 0x80, 0, 0, 0, 0, 0, 0, 0x01]
        );
        assert_eq!(parsed.req_policy.unwrap().to_string(), "1.2.3.4");
        assert!(request("n", 1, Some("not an oid")).is_err());
    }
}
