//! Test only: certificates and time-stamp tokens built in memory, so each
//! check can be shown refusing a token that differs from a good one in one
//! respect. Keys are P-256 scalars from fixed seeds (throwaway, never used
//! outside these tests); everything is deterministic.

use std::str::FromStr;
use std::time::Duration;

use cms::cert::IssuerAndSerialNumber;
use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{
    CertificateSet, EncapsulatedContentInfo, SignedData, SignerIdentifier, SignerInfo, SignerInfos,
};
use der::asn1::{BitString, GeneralizedTime, Int, OctetString, SetOfVec, UtcTime};
use der::flagset::FlagSet;
use der::oid::{AssociatedOid, ObjectIdentifier};
use der::{Any, Encode};
use p256::ecdsa::signature::Signer;
use p256::ecdsa::SigningKey;
use sha2::{Digest, Sha256, Sha384};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::attr::Attribute;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages};
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity};
use x509_cert::{Certificate, TbsCertificate, Version};

use super::{
    EssCertId, EssCertIdV2, IssuerSerial, SigningCertificate, SigningCertificateV2, TrustAnchors,
    ECDSA_WITH_SHA256, EC_PUBLIC_KEY, ID_AA_SIGNING_CERTIFICATE, ID_AA_SIGNING_CERTIFICATE_V2,
    ID_CONTENT_TYPE, ID_CT_TST_INFO, ID_KP_TIME_STAMPING, ID_MESSAGE_DIGEST, ID_SHA256, ID_SHA384,
    ID_SIGNED_DATA,
};

const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
/// 2024-01-01, 2034-01-01: every test certificate's validity.
const NOT_BEFORE: u64 = 1_704_067_200;
const NOT_AFTER: u64 = 2_019_686_400;
/// 2025-01-01: every test token's genTime.
pub(super) const GEN_TIME: u64 = 1_735_689_600;

/// What goes into a test certificate.
#[derive(Clone, Debug)]
pub(super) struct CertSpec {
    pub common_name: &'static str,
    /// The key's seed: the same seed is the same key.
    pub key_seed: u8,
    pub serial: u8,
    /// basicConstraints (cA, pathLenConstraint); None: no extension.
    pub basic_constraints: Option<(bool, Option<u8>)>,
    /// keyUsage; None: no extension.
    pub key_usage: Option<FlagSet<KeyUsages>>,
    /// The critical extended key usage timeStamping.
    pub time_stamping: bool,
}

impl CertSpec {
    /// A CA as RFC 5280 wants it: CA:TRUE, keyCertSign and cRLSign.
    pub(super) fn ca(common_name: &'static str, key_seed: u8, serial: u8) -> CertSpec {
        CertSpec {
            common_name,
            key_seed,
            serial,
            basic_constraints: Some((true, None)),
            key_usage: Some(KeyUsages::KeyCertSign | KeyUsages::CRLSign),
            time_stamping: false,
        }
    }

    /// A TSA as RFC 3161 wants it: an end entity, critical timeStamping.
    pub(super) fn tsa(common_name: &'static str, key_seed: u8, serial: u8) -> CertSpec {
        CertSpec {
            common_name,
            key_seed,
            serial,
            basic_constraints: Some((false, None)),
            key_usage: Some(KeyUsages::DigitalSignature | KeyUsages::NonRepudiation),
            time_stamping: true,
        }
    }
}

/// A certificate, its DER and its key.
#[derive(Clone, Debug)]
pub(super) struct Issued {
    pub certificate: Certificate,
    pub der: Vec<u8>,
    pub key: SigningKey,
}

fn key(seed: u8) -> SigningKey {
    SigningKey::from_slice(&[seed; 32]).unwrap()
}

fn name(common_name: &str) -> Name {
    Name::from_str(&format!("CN={common_name}")).unwrap()
}

fn utc(unix: u64) -> Time {
    Time::UtcTime(UtcTime::from_unix_duration(Duration::from_secs(unix)).unwrap())
}

fn ecdsa_with_sha256() -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned {
        oid: ECDSA_WITH_SHA256,
        parameters: None,
    }
}

fn sign(key: &SigningKey, message: &[u8]) -> Vec<u8> {
    let signature: p256::ecdsa::Signature = key.sign(message);
    signature.to_der().as_bytes().to_vec()
}

fn extension<T: AssociatedOid + Encode>(value: &T, critical: bool) -> Extension {
    Extension {
        extn_id: T::OID,
        critical,
        extn_value: OctetString::new(value.to_der().unwrap()).unwrap(),
    }
}

/// Issues `spec`, signed by `issuer` (None: self-signed).
pub(super) fn issue(spec: &CertSpec, issuer: Option<&Issued>) -> Issued {
    let key = key(spec.key_seed);
    let point = key.verifying_key().to_encoded_point(false);
    let mut extensions = Vec::new();
    if let Some((ca, path_len_constraint)) = spec.basic_constraints {
        let value = BasicConstraints {
            ca,
            path_len_constraint,
        };
        extensions.push(extension(&value, true));
    }
    if let Some(usages) = spec.key_usage {
        extensions.push(extension(&KeyUsage(usages), true));
    }
    if spec.time_stamping {
        extensions.push(extension(
            &ExtendedKeyUsage(vec![ID_KP_TIME_STAMPING]),
            true,
        ));
    }
    let subject = name(spec.common_name);
    let tbs_certificate = TbsCertificate {
        version: Version::V3,
        serial_number: SerialNumber::new(&[spec.serial]).unwrap(),
        signature: ecdsa_with_sha256(),
        issuer: issuer.map_or_else(
            || subject.clone(),
            |i| i.certificate.tbs_certificate.subject.clone(),
        ),
        validity: Validity {
            not_before: utc(NOT_BEFORE),
            not_after: utc(NOT_AFTER),
        },
        subject,
        subject_public_key_info: SubjectPublicKeyInfoOwned {
            algorithm: AlgorithmIdentifierOwned {
                oid: EC_PUBLIC_KEY,
                parameters: Some(Any::from(&SECP256R1)),
            },
            subject_public_key: BitString::from_bytes(point.as_bytes()).unwrap(),
        },
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: (!extensions.is_empty()).then_some(extensions),
    };
    let signing_key = issuer.map_or(&key, |i| &i.key);
    let signature = sign(signing_key, &tbs_certificate.to_der().unwrap());
    let certificate = Certificate {
        tbs_certificate,
        signature_algorithm: ecdsa_with_sha256(),
        signature: BitString::from_bytes(&signature).unwrap(),
    };
    let der = certificate.to_der().unwrap();
    Issued {
        certificate,
        der,
        key,
    }
}

pub(super) fn trust(anchors: &[&Issued]) -> TrustAnchors {
    TrustAnchors {
        certificates: anchors.iter().map(|a| a.certificate.clone()).collect(),
    }
}

/// The ESS signing-certificate attribute a test token carries.
#[derive(Clone, Copy, Debug)]
pub(super) enum Ess<'a> {
    /// RFC 2634: SHA-1 of `hashed`'s DER; issuerSerial of `issuer_serial`.
    V1 {
        hashed: &'a Issued,
        issuer_serial: Option<&'a Issued>,
    },
    /// RFC 5035: `sha384` or the default SHA-256 of `hashed`'s DER.
    V2 {
        sha384: bool,
        hashed: &'a Issued,
        issuer_serial: Option<&'a Issued>,
    },
}

fn issuer_serial_of(certificate: &Issued) -> IssuerSerial {
    let tbs = &certificate.certificate.tbs_certificate;
    IssuerSerial {
        issuer: vec![GeneralName::DirectoryName(tbs.issuer.clone())],
        serial_number: tbs.serial_number.clone(),
    }
}

fn ess_attribute(ess: Ess<'_>) -> Attribute {
    let (oid, value) = match ess {
        Ess::V1 {
            hashed,
            issuer_serial,
        } => {
            let sha1 = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &hashed.der);
            let value = SigningCertificate {
                certs: vec![EssCertId {
                    cert_hash: OctetString::new(sha1.as_ref()).unwrap(),
                    issuer_serial: issuer_serial.map(issuer_serial_of),
                }],
                policies: None,
            };
            (ID_AA_SIGNING_CERTIFICATE, Any::encode_from(&value).unwrap())
        }
        Ess::V2 {
            sha384,
            hashed,
            issuer_serial,
        } => {
            let (hash_algorithm, cert_hash) = if sha384 {
                let algorithm = AlgorithmIdentifierOwned {
                    oid: ID_SHA384,
                    parameters: None,
                };
                (Some(algorithm), Sha384::digest(&hashed.der).to_vec())
            } else {
                (None, Sha256::digest(&hashed.der).to_vec())
            };
            let value = SigningCertificateV2 {
                certs: vec![EssCertIdV2 {
                    hash_algorithm,
                    cert_hash: OctetString::new(cert_hash).unwrap(),
                    issuer_serial: issuer_serial.map(issuer_serial_of),
                }],
                policies: None,
            };
            (
                ID_AA_SIGNING_CERTIFICATE_V2,
                Any::encode_from(&value).unwrap(),
            )
        }
    };
    attribute(oid, value)
}

fn attribute(oid: ObjectIdentifier, value: Any) -> Attribute {
    Attribute {
        oid,
        values: SetOfVec::try_from(vec![value]).unwrap(),
    }
}

/// A time-stamp token (CMS ContentInfo, DER) for `note` under `policy`,
/// signed by `signer`, carrying `signer` and `chain`, with `ess` (None: no
/// signing-certificate attribute).
pub(super) fn token(
    note: &str,
    policy: &str,
    signer: &Issued,
    chain: &[&Issued],
    ess: Option<Ess<'_>>,
) -> Vec<u8> {
    let tst_info = x509_tsp::TstInfo {
        version: x509_tsp::TspVersion::V1,
        policy: ObjectIdentifier::new(policy).unwrap(),
        message_imprint: super::sha256_imprint(&super::imprint(note)).unwrap(),
        serial_number: Int::new(&[7]).unwrap(),
        gen_time: GeneralizedTime::from_unix_duration(Duration::from_secs(GEN_TIME)).unwrap(),
        accuracy: None,
        ordering: false,
        nonce: Some(Int::new(&[42]).unwrap()),
        tsa: None,
        extensions: None,
    };
    let tst_der = tst_info.to_der().unwrap();
    let mut signed_attributes = vec![
        attribute(ID_CONTENT_TYPE, Any::from(&ID_CT_TST_INFO)),
        attribute(
            ID_MESSAGE_DIGEST,
            Any::encode_from(&OctetString::new(Sha256::digest(&tst_der).to_vec()).unwrap())
                .unwrap(),
        ),
    ];
    signed_attributes.extend(ess.map(ess_attribute));
    let signed_attrs = SetOfVec::try_from(signed_attributes).unwrap();
    let signature = sign(&signer.key, &signed_attrs.to_der().unwrap());
    let tbs = &signer.certificate.tbs_certificate;
    let signer_info = SignerInfo {
        version: CmsVersion::V1,
        sid: SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
            issuer: tbs.issuer.clone(),
            serial_number: tbs.serial_number.clone(),
        }),
        digest_alg: AlgorithmIdentifierOwned {
            oid: ID_SHA256,
            parameters: None,
        },
        signed_attrs: Some(signed_attrs),
        signature_algorithm: ecdsa_with_sha256(),
        signature: OctetString::new(signature).unwrap(),
        unsigned_attrs: None,
    };
    let certificates = std::iter::once(signer)
        .chain(chain.iter().copied())
        .map(|c| cms::cert::CertificateChoices::Certificate(c.certificate.clone()))
        .collect::<Vec<_>>();
    let signed_data = SignedData {
        version: CmsVersion::V3,
        digest_algorithms: SetOfVec::try_from(vec![AlgorithmIdentifierOwned {
            oid: ID_SHA256,
            parameters: None,
        }])
        .unwrap(),
        encap_content_info: EncapsulatedContentInfo {
            econtent_type: ID_CT_TST_INFO,
            econtent: Some(Any::encode_from(&OctetString::new(tst_der).unwrap()).unwrap()),
        },
        certificates: Some(CertificateSet(SetOfVec::try_from(certificates).unwrap())),
        crls: None,
        signer_infos: SignerInfos(SetOfVec::try_from(vec![signer_info]).unwrap()),
    };
    ContentInfo {
        content_type: ID_SIGNED_DATA,
        content: Any::encode_from(&signed_data).unwrap(),
    }
    .to_der()
    .unwrap()
}
