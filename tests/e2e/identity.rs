//! The identity provider the gateway's token validation is tested against
//! (issue 13): node-oidc-provider, a certified OpenID Connect
//! implementation, started on 127.0.0.1 by the harness. These tests pin
//! what the gateway will rely on — discovery, the JWKS, JWT access tokens
//! bound to the FHIR base with SMART scopes — so a change in the provider
//! or its configuration is caught here, not as a puzzling 401 later.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use inkan_e2e::OpenIdProvider;
use serde_json::Value;

const RESOURCE: &str = "https://fhir.example-hospital.test/fhir";

fn part(token: &str, index: usize) -> Value {
    let segment = token.split('.').nth(index).expect("a JWS in compact form");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segment).unwrap()).unwrap()
}

#[test]
fn the_openid_provider_issues_jwt_access_tokens_bound_to_the_fhir_base() {
    let op = OpenIdProvider::start(RESOURCE);
    let http = reqwest::blocking::Client::new();
    let discovery: Value = http
        .get(format!("{}/.well-known/openid-configuration", op.issuer))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(discovery["issuer"], op.issuer.as_str());
    let jwks: Value = http
        .get(discovery["jwks_uri"].as_str().unwrap())
        .send()
        .unwrap()
        .json()
        .unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    for alg in ["RS256", "ES256"] {
        assert!(keys.iter().any(|k| k["alg"] == alg), "{alg} in {jwks}");
    }
    assert!(
        keys.iter().all(|k| k.get("d").is_none()),
        "the JWKS publishes public keys only"
    );

    let (status, answer) = op.client_credentials("system/Patient.rs");
    assert_eq!(status, 200, "{answer}");
    let token = answer["access_token"].as_str().unwrap();
    let header = part(token, 0);
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["typ"], "at+jwt");
    assert!(
        keys.iter().any(|k| k["kid"] == header["kid"]),
        "the token's kid {} is in the JWKS",
        header["kid"]
    );
    let claims = part(token, 1);
    assert_eq!(claims["iss"], op.issuer.as_str());
    assert_eq!(claims["aud"], RESOURCE);
    assert_eq!(claims["scope"], "system/Patient.rs");
    assert_eq!(claims["client_id"], OpenIdProvider::CLIENT.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(claims["exp"].as_u64().unwrap() > now, "{claims}");

    // A scope the provider does not grant is dropped from the token, not
    // refused: the gateway must decide on the scopes a token carries,
    // never on what its client asked for.
    let (status, answer) = op.client_credentials("system/Patient.cruds");
    assert_eq!(status, 200, "{answer}");
    let claims = part(answer["access_token"].as_str().unwrap(), 1);
    assert!(claims.get("scope").is_none(), "{claims}");
}
