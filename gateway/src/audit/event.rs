//! IHE BALP AuditEvents (Basic Audit Log Patterns 1.1) for one request.
//! Pure: the facts go in, the events' JSON comes out.
//!
//! | interaction | BALP profile | subtype | action |
//! |---|---|---|---|
//! | read, vread | Read | read, vread | R |
//! | history of an instance | Read (BALP has no history rule) | history-instance | R |
//! | search, history of a type or the system | Query | search-type, search-system, history-type, history-system | E |
//! | create | Create | create | C |
//! | update, patch (and conditional) | Update | update, patch | U |
//! | delete (and conditional) | Delete | delete | D |
//! | operations (`$proof`, `$verify`, …) | Query (BALP has no operation profile) | operation | E |
//! | batch, transaction | Query | batch | E |
//! | capabilities | Read | capabilities | R |
//!
//! With a patient the Patient* variant is used: one event per request and
//! patient, as BALP asks for searches whose results name several
//! patients, up to `max_patients`; beyond that one more event without a
//! patient says how many were left out. Refused requests (401, 403, any
//! error) get the same event with outcome 4 (client side) or 8 (server
//! side) and the refusal in `outcomeDesc`.

use base64::Engine;
use serde_json::{json, Value};

use crate::auth::Caller;
use crate::fhir::interaction::Interaction;

const BALP: &str = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.";
const DCM: &str = "http://dicom.nema.org/resources/ontology/DCM";
const PARTICIPATION: &str = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType";
const ENTITY_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-entity-type";
const OBJECT_ROLE: &str = "http://terminology.hl7.org/CodeSystem/object-role";
/// Marks an agent whose identity comes from token claims the gateway did
/// not validate (`[auth] mode = "passthrough"`).
pub const UNVERIFIED_EXTENSION: &str = "urn:inkan:audit:claims-unverified";

/// Everything an access record says about one request.
#[derive(Debug, Clone)]
pub struct Access<'a> {
    pub request_id: &'a str,
    /// FHIR instant, e.g. `2026-12-02T03:04:05.678Z`.
    pub recorded: &'a str,
    pub interaction: Interaction,
    pub method: &'a str,
    /// The path after the FHIR base, e.g. `/Patient/1`.
    pub fhir_path: &'a str,
    pub query: Option<&'a str>,
    pub status: u16,
    /// Why the gateway refused the request, when it did.
    pub refusal: Option<&'a str>,
    pub caller: &'a Caller,
    /// The client's network address.
    pub client_address: String,
    /// Resources touched: `Type/id` or `Type/id/_history/v`.
    pub data: &'a [String],
    /// Patient ids the request concerns, in order, without repeats.
    pub patients: &'a [String],
}

/// Who observes: this gateway.
#[derive(Debug, Clone)]
pub struct Observer {
    /// `source.observer` and the server agent's identifier.
    pub name: String,
    /// The gateway's listen address (the server agent's network).
    pub address: String,
}

/// The profile family, subtype and action of an interaction.
fn classify(interaction: Interaction) -> (&'static str, &'static str, &'static str) {
    use Interaction::*;
    match interaction {
        Read => ("Read", "read", "R"),
        Vread => ("Read", "vread", "R"),
        HistoryInstance => ("Read", "history-instance", "R"),
        Capabilities => ("Read", "capabilities", "R"),
        SearchType => ("Query", "search-type", "E"),
        SearchSystem => ("Query", "search-system", "E"),
        HistoryType => ("Query", "history-type", "E"),
        HistorySystem => ("Query", "history-system", "E"),
        Create => ("Create", "create", "C"),
        Update | ConditionalUpdate => ("Update", "update", "U"),
        Patch | ConditionalPatch => ("Update", "patch", "U"),
        Delete | ConditionalDelete => ("Delete", "delete", "D"),
        Operation | Other => ("Query", "operation", "E"),
        BatchOrTransaction => ("Query", "batch", "E"),
    }
}

/// The events for one request: `(id, JSON)`, one per patient (at most
/// `max_patients`, plus one for the rest), or one without a patient.
pub fn events(
    access: &Access<'_>,
    observer: &Observer,
    max_patients: usize,
) -> Vec<(String, Vec<u8>)> {
    let mut patients: Vec<Option<&str>> = access
        .patients
        .iter()
        .take(max_patients)
        .map(|p| Some(p.as_str()))
        .collect();
    let left_out = access.patients.len().saturating_sub(max_patients);
    if patients.is_empty() || left_out > 0 {
        patients.push(None);
    }
    patients
        .into_iter()
        .map(|patient| {
            // Time-ordered (UUIDv7): the ledger's index takes them in
            // order, at its end, instead of one random page per event.
            let id = uuid::Uuid::now_v7().to_string();
            let event = event(&id, access, observer, patient, left_out);
            let bytes = serde_json::to_vec(&event).unwrap_or_default();
            (id, bytes)
        })
        .collect()
}

fn coding(system: &str, code: &str, display: &str) -> Value {
    json!({"system": system, "code": code, "display": display})
}

fn event(
    id: &str,
    access: &Access<'_>,
    observer: &Observer,
    patient: Option<&str>,
    left_out: usize,
) -> Value {
    let (profile, subtype, action) = classify(access.interaction);
    let profile = match patient {
        Some(_) => format!("{BALP}Patient{profile}"),
        None => format!("{BALP}{profile}"),
    };
    let outcome = match access.status {
        0..=399 => "0",
        400..=499 => "4",
        _ => "8",
    };
    // BALP Read reverses the roles: the client receives the data.
    let reading = action == "R";
    let (client_role, server_role) = match (reading, action) {
        (true, _) => (
            ("110152", "Destination Role ID"),
            ("110153", "Source Role ID"),
        ),
        (false, "D") => (("110150", "Application"), ("110152", "Destination Role ID")),
        (false, _) => (
            ("110153", "Source Role ID"),
            ("110152", "Destination Role ID"),
        ),
    };
    let mut agents = vec![
        client_agent(access, client_role),
        server_agent(observer, server_role),
    ];
    if let Some(user) = user_agent(access.caller, reading || action == "E") {
        agents.push(user);
    }
    let mut entities = vec![json!({
        "type": coding("https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType", "XrequestId", "X-Request-Id"),
        "what": {"identifier": {"value": access.request_id}},
    })];
    for reference in access.data {
        // A refused or failed request may name what does not exist: text
        // then, not a literal reference a repository could refuse.
        let what = match outcome {
            "0" => json!({"reference": reference}),
            _ => json!({"display": reference}),
        };
        entities.push(json!({
            "type": coding(ENTITY_TYPE, "2", "System Object"),
            "role": coding(OBJECT_ROLE, "4", "Domain Resource"),
            "what": what,
        }));
    }
    if action == "E" {
        let request_line = match access.query {
            Some(query) => format!("{} {}?{}", access.method, access.fhir_path, query),
            None => format!("{} {}", access.method, access.fhir_path),
        };
        entities.push(json!({
            "type": coding(ENTITY_TYPE, "2", "System Object"),
            "role": coding(OBJECT_ROLE, "24", "Query"),
            "description": request_line,
            "query": base64::engine::general_purpose::STANDARD.encode(request_line.as_bytes()),
        }));
    }
    if let Some(patient) = patient {
        entities.push(json!({
            "type": coding(ENTITY_TYPE, "1", "Person"),
            "role": coding(OBJECT_ROLE, "1", "Patient"),
            "what": {"reference": format!("Patient/{patient}")},
        }));
    }
    let mut event = json!({
        "resourceType": "AuditEvent",
        "id": id,
        "meta": {"profile": [profile]},
        "type": coding("http://terminology.hl7.org/CodeSystem/audit-event-type", "rest", "Restful Operation"),
        "subtype": [coding("http://hl7.org/fhir/restful-interaction", subtype, subtype)],
        "action": action,
        "recorded": access.recorded,
        "outcome": outcome,
        "agent": agents,
        "source": {
            "observer": {"display": observer.name, "identifier": {"value": observer.name}},
            "type": [coding("http://terminology.hl7.org/CodeSystem/security-source-type", "4", "Application Server")],
        },
        "entity": entities,
    });
    let mut description = Vec::new();
    if let Some(refusal) = access.refusal {
        description.push(format!("HTTP {}: {refusal}", access.status));
    } else if outcome != "0" {
        description.push(format!("HTTP {}", access.status));
    }
    if patient.is_none() && left_out > 0 {
        description.push(
            "further patients in this answer are not named (audit.max_patients_per_request)"
                .to_owned(),
        );
    }
    if !description.is_empty() {
        event["outcomeDesc"] = Value::String(description.join("; "));
    }
    // The gateway writes no meta.versionId or lastUpdated: the repository
    // does, and the seal leaves `meta` out. The profile goes in `meta`
    // too, so it is not sealed either: it says how to read the event, not
    // what happened.
    event
}

fn client_agent(access: &Access<'_>, role: (&str, &str)) -> Value {
    let caller = access.caller;
    let mut who = serde_json::Map::new();
    // The TLS-verified certificate first: a token's client_id may be
    // unverified (passthrough), and then only accompanies it.
    let mut also_known_as = None;
    match (&caller.certificate_subject, caller.client_id()) {
        (Some(subject), client_id) => {
            who.insert(
                "identifier".into(),
                json!({"system": "urn:ietf:rfc:5280:subject", "value": subject}),
            );
            also_known_as = client_id;
        }
        (None, Some(client_id)) => {
            let issuer = caller.claims.as_ref().and_then(|c| c.iss.as_deref());
            who.insert("identifier".into(), identifier(issuer, client_id));
        }
        (None, None) => {
            who.insert("display".into(), json!("unidentified client"));
        }
    }
    let mut agent = json!({
        "type": {"coding": [coding(DCM, role.0, role.1)]},
        "who": who,
        "requestor": false,
        "network": {"address": access.client_address, "type": "2"},
    });
    if let Some(client_id) = also_known_as {
        agent["altId"] = json!(client_id);
    }
    if caller.certificate_subject.is_none() && caller.client_id().is_some() {
        mark_unverified(&mut agent, caller);
    }
    agent
}

fn server_agent(observer: &Observer, role: (&str, &str)) -> Value {
    json!({
        "type": {"coding": [coding(DCM, role.0, role.1)]},
        "who": {"display": observer.name, "identifier": {"value": observer.name}},
        "requestor": false,
        "network": {"address": observer.address, "type": "2"},
    })
}

/// The user from `fhirUser` / `sub`, `requestor = true`; recipient of
/// information for reads and queries, author for writes.
fn user_agent(caller: &Caller, receives: bool) -> Option<Value> {
    let claims = caller.claims.as_ref()?;
    let sub = claims.sub.as_deref();
    if sub.is_none() && claims.fhir_user.is_none() {
        return None;
    }
    let role = match receives {
        true => coding(PARTICIPATION, "IRCP", "information recipient"),
        false => coding(PARTICIPATION, "AUT", "author (originator)"),
    };
    let mut who = serde_json::Map::new();
    if let Some(fhir_user) = &claims.fhir_user {
        // Unverified, it is only text: a literal reference could name
        // anything, and repositories that check references would refuse
        // the event.
        let key = if caller.verified {
            "reference"
        } else {
            "display"
        };
        who.insert(key.into(), json!(fhir_user));
    }
    if let Some(sub) = sub {
        who.insert("identifier".into(), identifier(claims.iss.as_deref(), sub));
    }
    let mut agent = json!({
        "type": {"coding": [role]},
        "who": who,
        "requestor": true,
    });
    if let Some(jti) = &claims.jti {
        agent["policy"] = json!([format!("urn:ietf:params:oauth:jti:{jti}")]);
    }
    mark_unverified(&mut agent, caller);
    Some(agent)
}

fn identifier(system: Option<&str>, value: &str) -> Value {
    match system {
        Some(system) => json!({"system": system, "value": value}),
        None => json!({"value": value}),
    }
}

fn mark_unverified(agent: &mut Value, caller: &Caller) {
    if !caller.verified {
        agent["extension"] = json!([{"url": UNVERIFIED_EXTENSION, "valueBoolean": true}]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::jwt::Claims;

    fn observer() -> Observer {
        Observer {
            name: "test.example.jp/inkan".into(),
            address: "127.0.0.1:8090".into(),
        }
    }

    fn user(verified: bool) -> Caller {
        Caller {
            verified,
            claims: Some(Claims {
                iss: Some("https://id.example.jp".into()),
                sub: Some("dr-sato".into()),
                client_id: Some("ward-app".into()),
                fhir_user: Some("Practitioner/d1".into()),
                ..Claims::default()
            }),
            ..Caller::default()
        }
    }

    fn access<'a>(
        interaction: Interaction,
        caller: &'a Caller,
        data: &'a [String],
        patients: &'a [String],
    ) -> Access<'a> {
        Access {
            request_id: "req-1",
            recorded: "2026-12-02T03:04:05.678Z",
            interaction,
            method: "GET",
            fhir_path: "/Patient/p1",
            query: None,
            status: 200,
            refusal: None,
            caller,
            client_address: "127.0.0.1".into(),
            data,
            patients,
        }
    }

    fn one(access: &Access<'_>) -> Value {
        let events = events(access, &observer(), 100);
        assert_eq!(events.len(), 1);
        serde_json::from_slice(&events[0].1).unwrap()
    }

    #[test]
    fn each_interaction_gets_its_balp_profile_subtype_and_action() {
        use Interaction::*;
        let caller = user(true);
        let p1 = ["p1".to_owned()];
        // (interaction, with patient, profile suffix, subtype, action)
        let cases = [
            (Read, true, "PatientRead", "read", "R"),
            (Vread, false, "Read", "vread", "R"),
            (SearchType, true, "PatientQuery", "search-type", "E"),
            (SearchSystem, false, "Query", "search-system", "E"),
            (HistoryType, false, "Query", "history-type", "E"),
            (Create, true, "PatientCreate", "create", "C"),
            (Update, false, "Update", "update", "U"),
            (Patch, false, "Update", "patch", "U"),
            (Delete, true, "PatientDelete", "delete", "D"),
            (Operation, false, "Query", "operation", "E"),
        ];
        for (interaction, with_patient, profile, subtype, action) in cases {
            let patients: &[String] = if with_patient { &p1 } else { &[] };
            let event = one(&access(interaction, &caller, &[], patients));
            assert_eq!(
                event["meta"]["profile"][0],
                format!("{BALP}{profile}"),
                "{interaction:?}"
            );
            assert_eq!(event["subtype"][0]["code"], subtype, "{interaction:?}");
            assert_eq!(event["action"], action, "{interaction:?}");
            let has_query = event["entity"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["role"]["code"] == "24");
            assert_eq!(has_query, action == "E", "{interaction:?}");
        }
    }

    #[test]
    fn a_read_names_the_user_client_gateway_resource_patient_and_request_id() {
        let caller = user(true);
        let data = ["Patient/p1".to_owned()];
        let patients = ["p1".to_owned()];
        let event = one(&access(Interaction::Read, &caller, &data, &patients));
        let agents = event["agent"].as_array().unwrap();
        let requestors: Vec<&Value> = agents.iter().filter(|a| a["requestor"] == true).collect();
        assert_eq!(requestors.len(), 1);
        assert_eq!(requestors[0]["who"]["reference"], "Practitioner/d1");
        assert_eq!(requestors[0]["who"]["identifier"]["value"], "dr-sato");
        assert_eq!(requestors[0]["type"]["coding"][0]["code"], "IRCP");
        assert!(requestors[0].get("extension").is_none(), "verified");
        assert_eq!(agents[0]["who"]["identifier"]["value"], "ward-app");
        assert_eq!(
            agents[0]["type"]["coding"][0]["code"], "110152",
            "BALP Read: client is the destination"
        );
        assert_eq!(
            event["source"]["observer"]["display"],
            "test.example.jp/inkan"
        );
        let entities = event["entity"].as_array().unwrap();
        assert_eq!(entities[0]["what"]["identifier"]["value"], "req-1");
        assert_eq!(entities[1]["what"]["reference"], "Patient/p1");
        assert_eq!(entities[2]["role"]["code"], "1");
        assert_eq!(event["outcome"], "0");
        assert!(event.get("outcomeDesc").is_none());
    }

    #[test]
    fn unverified_claims_are_marked_and_refusals_described() {
        let caller = user(false);
        let mut refused = access(Interaction::Read, &caller, &[], &[]);
        refused.status = 403;
        refused.refusal = Some("not allowed: scope");
        let event = one(&refused);
        assert_eq!(event["outcome"], "4");
        assert_eq!(event["outcomeDesc"], "HTTP 403: not allowed: scope");
        let user = event["agent"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["requestor"] == true)
            .unwrap()
            .clone();
        assert_eq!(user["extension"][0]["url"], UNVERIFIED_EXTENSION);
    }

    #[test]
    fn a_search_over_many_patients_gives_one_event_per_patient_up_to_the_cap() {
        let caller = Caller::default();
        let patients: Vec<String> = (0..5).map(|i| format!("p{i}")).collect();
        let mut search = access(Interaction::SearchType, &caller, &[], &patients);
        search.query = Some("code=1234-5");
        let all = events(&search, &observer(), 10);
        assert_eq!(all.len(), 5);
        let capped = events(&search, &observer(), 3);
        assert_eq!(capped.len(), 4, "three patients and one for the rest");
        let rest: Value = serde_json::from_slice(&capped[3].1).unwrap();
        assert!(rest["outcomeDesc"]
            .as_str()
            .unwrap()
            .contains("further patients"));
        let first: Value = serde_json::from_slice(&all[0].1).unwrap();
        let query = first["entity"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["role"]["code"] == "24")
            .unwrap()
            .clone();
        assert_eq!(query["description"], "GET /Patient/p1?code=1234-5");
        let ids: std::collections::HashSet<&String> = all.iter().map(|(id, _)| id).collect();
        assert_eq!(ids.len(), 5, "each event has its own id");
    }
}
