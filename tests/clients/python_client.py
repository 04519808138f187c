"""Drives a FHIR server (inkan, in the end-to-end tests) with a real Python FHIR
client library, with that library's own API and default settings, and prints
ONE JSON object on stdout with what it saw, for the Rust test to assert.

    python_client.py BASE_URL [--lib fhirpy|fhirclient] [--patients N]

Run it with the venv of scripts/install-clients.sh (INKAN_CLIENT_PYTHON).

  --lib fhirpy      fhirpy 2.3.1, its synchronous client (SyncFHIRClient, on
                    requests; the default)
  --lib fhirclient  fhirclient 4.4.0 (SMART on FHIR's client, on a requests
                    Session)

Both libraries send requests' defaults: `Accept-Encoding: gzip, deflate`,
`Connection: keep-alive`, `User-Agent: python-requests/<v>`, and
`Accept: application/fhir+json`. fhirpy sends JSON bodies as
`Content-Type: application/json` (requests' json=), fhirclient as
`application/fhir+json` and adds `Accept-Charset: UTF-8` to every request.

Steps, each with the library's own calls where it has one:
 1. create a Patient (山田 太郎, birthDate) — POST [base]/Patient
 2. read it
 3. update it with `If-Match: W/"<version>"` (neither library has a versioned
    update: fhirpy via a client with that extra header, fhirclient via a header
    on its requests Session), then once more with the stale version (the server
    should refuse: 409 or 412)
 4. create N patients under a fresh identifier system and search them with
    `_count=2`, following `next` to the end with the library's paging
    (fhirpy: iterating the search set / fetch_all; fhirclient: perform_iter)
 5. a transaction Bundle with `urn:uuid` references (a Patient and an
    Observation whose subject is that Patient), POSTed to `[base]/` with a
    trailing slash (fhirpy: execute("/"); fhirclient: Bundle.create, whose
    path for a transaction is the base itself, which fhirclient always ends
    with "/")
 6. read the Observation; its subject must name the Patient created in 5
 7. the Patient's history
 8. delete the Patient of step 1, read it again (404 or 410)
 9. read a Patient as XML: `Accept: application/fhir+xml`, and `_format=xml`
    (the libraries parse only JSON: the raw body is taken from the response)

Output (one JSON object; missing steps give null):
  library, library_version, transport, base,
  request_accept_encoding, request_accept, request_user_agent  (as sent on the read)
  created_id, create_status, location, create_headers
  read_status, read_headers, read_family, read_given, read_birth_date, read_version_id
  update_if_match, update_status, update_headers, update_version_id
  stale_if_match, stale_update_status
  search_system, search_created, search_url, pages, total_seen, ids_seen,
  next_links, search_headers (per page)
  transaction_url, transaction_status, transaction_headers, transaction_locations,
  transaction_patient_id
  observation_id, observation_read_status, observation_subject, observation_subject_matches
  history_status, history_count, history_headers
  delete_status, deleted_status
  xml_read_status, xml_read_headers, xml_read_starts_with, xml_read_has_family,
  xml_format_status, xml_format_headers, xml_format_starts_with
  exchanges: every HTTP exchange: {method, url, status, request_headers, response_headers}
  errors: [{step, error}] — anything unexpected (also on stderr; exit 1)
All header maps have lower-cased names.
"""

import argparse
import json
import re
import sys
import traceback
import uuid
from importlib import metadata

import requests

FAMILY = "山田"
GIVEN = "太郎"

out = {}
exchanges = []
bodies = []  # the decoded body of each exchange (not printed)
errors = []


def hook(response, *args, **kwargs):
    """requests response hook: records every exchange the library makes."""
    exchanges.append(
        {
            "method": response.request.method,
            "url": response.request.url,
            "status": response.status_code,
            "request_headers": {k.lower(): v for k, v in response.request.headers.items()},
            "response_headers": {k.lower(): v for k, v in response.headers.items()},
        }
    )
    bodies.append(response.content)  # as requests decoded it (gzip undone)
    return response


def since(mark):
    return exchanges[mark:]


def last_exchange(mark):
    made = since(mark)
    if not made:
        raise RuntimeError("the library made no HTTP request")
    return made[-1]


def root_element(text):
    m = re.match(r"\s*(?:<\?xml[^>]*\?>\s*)?(?:<!--.*?-->\s*)*(<[A-Za-z_][\w:.-]*)", text, re.S)
    return m.group(1) if m else text[:20]


def step(name):
    """Runs a step; an exception is recorded and the next step still runs."""

    def wrap(fn):
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - every failure is reported
            msg = f"{type(exc).__name__}: {exc}"
            errors.append({"step": name, "error": msg})
            print(f"{name}: {msg}", file=sys.stderr)
            traceback.print_exc(file=sys.stderr)
        return fn

    return wrap


def patient_body(identifier_system=None, value=None, given=GIVEN):
    body = {
        "resourceType": "Patient",
        "name": [{"use": "official", "family": FAMILY, "given": [given], "text": f"{FAMILY} {given}"}],
        "gender": "male",
        "birthDate": "1970-01-01",
    }
    if identifier_system:
        body["identifier"] = [{"system": identifier_system, "value": value}]
    return body


def transaction_bundle():
    patient_ref = f"urn:uuid:{uuid.uuid4()}"
    observation_ref = f"urn:uuid:{uuid.uuid4()}"
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": patient_ref,
                "resource": patient_body(given="花子") | {"gender": "female"},
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "fullUrl": observation_ref,
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {
                        "coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}],
                        "text": "心拍数",
                    },
                    "subject": {"reference": patient_ref},
                    "valueQuantity": {
                        "value": 72,
                        "unit": "beats/minute",
                        "system": "http://unitsofmeasure.org",
                        "code": "/min",
                    },
                },
                "request": {"method": "POST", "url": "Observation"},
            },
        ],
    }


def id_from_location(location, resource_type):
    """Patient/123/_history/1 or http://host/fhir/Patient/123/_history/1 -> 123"""
    m = re.search(rf"(?:^|/){resource_type}/([A-Za-z0-9\-.]{{1,64}})(?:/|$)", location or "")
    return m.group(1) if m else None


def summarize_transaction(response_bundle):
    locations = [
        (entry.get("response") or {}).get("location") for entry in response_bundle.get("entry") or []
    ]
    out["transaction_locations"] = locations
    out["transaction_patient_id"] = id_from_location(locations[0] if locations else None, "Patient")
    out["observation_id"] = id_from_location(locations[1] if len(locations) > 1 else None, "Observation")
    if not out["transaction_patient_id"] or not out["observation_id"]:
        raise RuntimeError(f"transaction response without the two locations: {locations}")


def check_subject(reference):
    out["observation_subject"] = reference
    expected = f"Patient/{out['transaction_patient_id']}"
    out["observation_subject_matches"] = reference == expected or (reference or "").endswith("/" + expected)
    if not out["observation_subject_matches"]:
        raise RuntimeError(f"Observation.subject is {reference!r}, expected {expected!r}")


def record_pages(mark, found):
    """The search's pages, from the exchanges since mark (all GETs of it)."""
    pages = [i for i in range(mark, len(exchanges)) if exchanges[i]["method"] == "GET"]
    out["search_url"] = exchanges[pages[0]]["url"] if pages else None
    out["pages"] = len(pages)
    out["total_seen"] = len(found)
    out["ids_seen"] = len({p.id for p in found})
    out["search_headers"] = [exchanges[i]["response_headers"] for i in pages]
    next_links = []
    for i in pages:
        try:
            bundle = json.loads(bodies[i])
        except ValueError:
            continue
        next_links += [link.get("url") for link in bundle.get("link") or [] if link.get("relation") == "next"]
    out["next_links"] = next_links


def record_xml(prefix, mark):
    """The XML read made since mark: the libraries parse only JSON, so the
    body is taken from the response (as requests decoded it)."""
    exchange = last_exchange(mark)
    text = bodies[-1].decode("utf-8", errors="replace")
    out[f"{prefix}_status"] = exchange["status"]
    out[f"{prefix}_headers"] = exchange["response_headers"]
    out[f"{prefix}_starts_with"] = root_element(text)
    if prefix == "xml_read":
        out["xml_read_has_family"] = FAMILY in text
    if exchange["status"] != 200 or not root_element(text).startswith("<Patient"):
        raise RuntimeError(f"{prefix}: {exchange['status']}, not a Patient in XML: {text[:300]!r}")


# --------------------------------------------------------------------------- fhirpy


def run_fhirpy(base, n_patients):
    from fhirpy import SyncFHIRClient
    from fhirpy.base.exceptions import BaseFHIRError, ResourceNotFound

    requests_config = {"hooks": {"response": [hook]}}
    client = SyncFHIRClient(base, requests_config=requests_config)
    state = {}

    @step("create")
    def _():
        mark = len(exchanges)
        patient = client.resource("Patient", **patient_body())
        patient.save()
        ex = last_exchange(mark)
        out["created_id"] = patient.id
        out["create_status"] = ex["status"]
        out["create_headers"] = ex["response_headers"]
        out["location"] = ex["response_headers"].get("location")
        state["patient"] = patient

    @step("read")
    def _():
        mark = len(exchanges)
        patient = client.reference("Patient", out["created_id"]).to_resource()
        ex = last_exchange(mark)
        out["read_status"] = ex["status"]
        out["read_headers"] = ex["response_headers"]
        out["request_accept_encoding"] = ex["request_headers"].get("accept-encoding")
        out["request_accept"] = ex["request_headers"].get("accept")
        out["request_user_agent"] = ex["request_headers"].get("user-agent")
        out["read_family"] = patient["name"][0]["family"]
        out["read_given"] = patient["name"][0]["given"]
        out["read_birth_date"] = patient.get("birthDate")
        out["read_version_id"] = (patient.get("meta") or {}).get("versionId")
        state["patient"] = patient

    @step("update")
    def _():
        version = out["read_version_id"]
        out["update_if_match"] = f'W/"{version}"'
        # fhirpy has no versioned update: a client whose every request
        # carries If-Match, saving the resource read above.
        versioned = SyncFHIRClient(
            base, extra_headers={"If-Match": out["update_if_match"]}, requests_config=requests_config
        )
        patient = versioned.resource("Patient", **dict(state["patient"]))
        patient["telecom"] = [{"system": "phone", "value": "03-1234-5678", "use": "home"}]
        mark = len(exchanges)
        patient.save()
        ex = last_exchange(mark)
        if ex["request_headers"].get("if-match") != out["update_if_match"]:
            raise RuntimeError(f"If-Match not sent: {ex['request_headers']}")
        out["update_status"] = ex["status"]
        out["update_headers"] = ex["response_headers"]
        out["update_version_id"] = (patient.get("meta") or {}).get("versionId")

    @step("stale_update")
    def _():
        out["stale_if_match"] = f'W/"{out["read_version_id"]}"'
        stale = SyncFHIRClient(base, extra_headers={"If-Match": out["stale_if_match"]}, requests_config=requests_config)
        patient = stale.resource("Patient", **dict(state["patient"]))
        mark = len(exchanges)
        try:
            patient.save()
        except BaseFHIRError:
            pass  # expected: 409 or 412 (fhirpy calls a 412 MultipleResourcesFound)
        out["stale_update_status"] = last_exchange(mark)["status"]

    @step("search")
    def _():
        system = f"urn:uuid:{uuid.uuid4()}"
        out["search_system"] = system
        for i in range(n_patients):
            client.resource("Patient", **patient_body(system, f"p{i}", given=f"太郎{i}")).save()
        out["search_created"] = n_patients
        mark = len(exchanges)
        search = client.resources("Patient").search(identifier=f"{system}|").limit(2)
        found = []
        try:
            # What fetch_all() does (list(search)), one resource at a time so
            # that a failure on a later page still reports the earlier ones:
            # the search set fetches page after page, following `next`.
            for patient in search:
                found.append(patient)
        finally:
            record_pages(mark, found)

    @step("transaction")
    def _():
        mark = len(exchanges)
        response_bundle = client.execute("/", method="post", data=transaction_bundle())
        ex = last_exchange(mark)
        out["transaction_url"] = ex["url"]
        out["transaction_status"] = ex["status"]
        out["transaction_headers"] = ex["response_headers"]
        summarize_transaction(response_bundle)

    @step("observation")
    def _():
        mark = len(exchanges)
        observation = client.reference("Observation", out["observation_id"]).to_resource()
        out["observation_read_status"] = last_exchange(mark)["status"]
        check_subject(observation["subject"]["reference"])

    @step("history")
    def _():
        mark = len(exchanges)
        bundle = state["patient"].execute("_history", method="get")
        ex = last_exchange(mark)
        out["history_status"] = ex["status"]
        out["history_headers"] = ex["response_headers"]
        out["history_count"] = len(bundle.get("entry") or [])

    @step("delete")
    def _():
        mark = len(exchanges)
        state["patient"].delete()
        out["delete_status"] = last_exchange(mark)["status"]

    @step("read_deleted")
    def _():
        mark = len(exchanges)
        try:
            client.reference("Patient", out["created_id"]).to_resource()
        except ResourceNotFound:
            pass  # fhirpy raises this for 404 and 410
        out["deleted_status"] = last_exchange(mark)["status"]

    # fhirpy parses every response as JSON: an XML body raises JSONDecodeError
    # after the request was made; the body is taken from the response.
    xml_id = out.get("transaction_patient_id")

    @step("xml_read")
    def _():
        xml_client = SyncFHIRClient(
            base, extra_headers={"Accept": "application/fhir+xml"}, requests_config=requests_config
        )
        mark = len(exchanges)
        try:
            xml_client.execute(f"Patient/{xml_id}", method="get")
        except (json.JSONDecodeError, BaseFHIRError):
            pass
        record_xml("xml_read", mark)

    @step("xml_format")
    def _():
        mark = len(exchanges)
        try:
            client.execute(f"Patient/{xml_id}", method="get", params={"_format": "xml"})
        except (json.JSONDecodeError, BaseFHIRError):
            pass
        record_xml("xml_format", mark)


# ----------------------------------------------------------------------- fhirclient


def run_fhirclient(base, n_patients):
    from fhirclient import client as fc_client
    from fhirclient.models.bundle import Bundle
    from fhirclient.models.observation import Observation
    from fhirclient.models.patient import Patient
    from fhirclient.server import FHIRNotFoundException

    smart = fc_client.FHIRClient(settings={"app_id": "inkan-e2e", "api_base": base})
    server = smart.server
    server.session.hooks["response"].append(hook)
    state = {}

    @step("create")
    def _():
        mark = len(exchanges)
        created = Patient(patient_body()).create(server)
        ex = last_exchange(mark)
        out["create_status"] = ex["status"]
        out["create_headers"] = ex["response_headers"]
        out["location"] = ex["response_headers"].get("location")
        out["created_id"] = (created or {}).get("id") or id_from_location(out["location"], "Patient")

    @step("read")
    def _():
        mark = len(exchanges)
        patient = Patient.read(out["created_id"], server)
        ex = last_exchange(mark)
        out["read_status"] = ex["status"]
        out["read_headers"] = ex["response_headers"]
        out["request_accept_encoding"] = ex["request_headers"].get("accept-encoding")
        out["request_accept"] = ex["request_headers"].get("accept")
        out["request_user_agent"] = ex["request_headers"].get("user-agent")
        out["read_family"] = patient.name[0].family
        out["read_given"] = patient.name[0].given
        out["read_birth_date"] = patient.birthDate.isostring if patient.birthDate else None
        out["read_version_id"] = patient.meta.versionId if patient.meta else None
        state["patient"] = patient

    def put_with_if_match(patient, if_match):
        # fhirclient's update() takes no headers: the header goes on its
        # requests Session for this one call.
        server.session.headers["If-Match"] = if_match
        try:
            return patient.update(server)
        finally:
            del server.session.headers["If-Match"]

    @step("update")
    def _():
        out["update_if_match"] = f'W/"{out["read_version_id"]}"'
        patient = state["patient"]
        from fhirclient.models.contactpoint import ContactPoint

        patient.telecom = [ContactPoint({"system": "phone", "value": "03-1234-5678", "use": "home"})]
        mark = len(exchanges)
        updated = put_with_if_match(patient, out["update_if_match"])
        ex = last_exchange(mark)
        out["update_status"] = ex["status"]
        out["update_headers"] = ex["response_headers"]
        out["update_version_id"] = ((updated or {}).get("meta") or {}).get("versionId")

    @step("stale_update")
    def _():
        out["stale_if_match"] = f'W/"{out["read_version_id"]}"'
        mark = len(exchanges)
        try:
            put_with_if_match(state["patient"], out["stale_if_match"])
        except requests.HTTPError:
            pass  # expected: 409 or 412
        out["stale_update_status"] = last_exchange(mark)["status"]

    @step("search")
    def _():
        system = f"urn:uuid:{uuid.uuid4()}"
        out["search_system"] = system
        for i in range(n_patients):
            Patient(patient_body(system, f"p{i}", given=f"太郎{i}")).create(server)
        out["search_created"] = n_patients
        mark = len(exchanges)
        search = Patient.where(struct={"identifier": f"{system}|", "_count": "2"})
        found = []
        try:
            for bundle in search.perform_iter(server):  # follows `next`
                found.extend(e.resource for e in bundle.entry or [] if e.resource)
        finally:
            record_pages(mark, found)

    @step("transaction")
    def _():
        mark = len(exchanges)
        # Bundle.create posts a transaction to the base itself: "[base]/".
        response_bundle = Bundle(transaction_bundle()).create(server)
        ex = last_exchange(mark)
        out["transaction_url"] = ex["url"]
        out["transaction_status"] = ex["status"]
        out["transaction_headers"] = ex["response_headers"]
        summarize_transaction(response_bundle or {})

    @step("observation")
    def _():
        mark = len(exchanges)
        observation = Observation.read(out["observation_id"], server)
        out["observation_read_status"] = last_exchange(mark)["status"]
        check_subject(observation.subject.reference)

    @step("history")
    def _():
        mark = len(exchanges)
        bundle = server.request_json(f"Patient/{out['created_id']}/_history")
        ex = last_exchange(mark)
        out["history_status"] = ex["status"]
        out["history_headers"] = ex["response_headers"]
        out["history_count"] = len(bundle.get("entry") or [])

    @step("delete")
    def _():
        mark = len(exchanges)
        state["patient"].delete(server)
        out["delete_status"] = last_exchange(mark)["status"]

    @step("read_deleted")
    def _():
        mark = len(exchanges)
        try:
            Patient.read(out["created_id"], server)
        except (FHIRNotFoundException, requests.HTTPError):
            pass  # 404 raises the former, 410 the latter
        out["deleted_status"] = last_exchange(mark)["status"]

    xml_id = out.get("transaction_patient_id")

    @step("xml_read")
    def _():
        mark = len(exchanges)
        try:
            server.request_data(f"Patient/{xml_id}", headers={"Accept": "application/fhir+xml"})
        except (FHIRNotFoundException, requests.HTTPError):
            pass
        record_xml("xml_read", mark)

    @step("xml_format")
    def _():
        mark = len(exchanges)
        try:
            server.request_data(f"Patient/{xml_id}?_format=xml")
        except (FHIRNotFoundException, requests.HTTPError):
            pass
        record_xml("xml_format", mark)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base", help="the FHIR base URL, e.g. http://127.0.0.1:8090/fhir")
    parser.add_argument("--lib", choices=["fhirpy", "fhirclient"], default="fhirpy")
    parser.add_argument("--patients", type=int, default=5, help="patients created for the paged search")
    args = parser.parse_args()

    out["library"] = args.lib
    out["library_version"] = metadata.version(args.lib)
    out["transport"] = f"requests {requests.__version__}"
    out["base"] = args.base
    if args.lib == "fhirpy":
        run_fhirpy(args.base, args.patients)
    else:
        run_fhirclient(args.base, args.patients)
    out["exchanges"] = exchanges
    out["errors"] = errors
    json.dump(out, sys.stdout, ensure_ascii=False)
    sys.stdout.write("\n")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
