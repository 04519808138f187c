#!/usr/bin/env python3
"""Writes search-parameters-r4.json for Helios FHIR Server's data directory.

HFS loads the FHIR spec's SearchParameter bundle from its data directory and
otherwise supports only _id, _lastUpdated and a few others. The published
crate does not ship that file and the FHIR spec download is not reachable
here, so this script generates the subset the demo and the tests search by,
from the table below (code, base, type, FHIRPath expression — as in the FHIR
R4 search parameter registry).

    scripts/hfs-search-parameters.py OUT_DIR
"""
import json
import sys

TABLE = [
    ("family",       "Patient",      "string",    "Patient.name.family"),
    ("given",        "Patient",      "string",    "Patient.name.given"),
    ("name",         "Patient",      "string",    "Patient.name"),
    ("identifier",   "Patient",      "token",     "Patient.identifier"),
    ("birthdate",    "Patient",      "date",      "Patient.birthDate"),
    ("gender",       "Patient",      "token",     "Patient.gender"),
    ("active",       "Patient",      "token",     "Patient.active"),
    ("organization", "Patient",      "reference", "Patient.managingOrganization"),
    ("subject",      "Observation",  "reference", "Observation.subject"),
    ("patient",      "Observation",  "reference", "Observation.subject.where(resolve() is Patient)"),
    ("code",         "Observation",  "token",     "Observation.code"),
    ("status",       "Observation",  "token",     "Observation.status"),
    ("date",         "Observation",  "date",      "Observation.effective"),
    ("name",         "Organization", "string",    "Organization.name"),
    ("identifier",   "Organization", "token",     "Organization.identifier"),
    ("name",         "Practitioner", "string",    "Practitioner.name"),
    ("family",       "Practitioner", "string",    "Practitioner.name.family"),
    ("identifier",   "Practitioner", "token",     "Practitioner.identifier"),
    ("subject",      "Encounter",    "reference", "Encounter.subject"),
    ("subject",      "Condition",    "reference", "Condition.subject"),
    ("code",         "Condition",    "token",     "Condition.code"),
]

TARGETS = {"Patient.managingOrganization": ["Organization"]}


def search_parameter(code, base, kind, expression):
    resource = {
        "resourceType": "SearchParameter",
        "id": f"{base}-{code}",
        "url": f"http://hl7.org/fhir/SearchParameter/{base}-{code}",
        "version": "4.0.1",
        "name": code,
        "status": "active",
        "description": f"{base} {code}",
        "code": code,
        "base": [base],
        "type": kind,
        "expression": expression,
    }
    if kind == "reference":
        resource["target"] = TARGETS.get(expression, ["Patient", "Group", "Device", "Location"])
    return resource


def main():
    out_dir = sys.argv[1]
    bundle = {
        "resourceType": "Bundle",
        "id": "searchParams",
        "type": "collection",
        "entry": [
            {"fullUrl": f"http://hl7.org/fhir/SearchParameter/{b}-{c}", "resource": search_parameter(c, b, k, e)}
            for (c, b, k, e) in TABLE
        ],
    }
    with open(f"{out_dir}/search-parameters-r4.json", "w") as f:
        json.dump(bundle, f, indent=1)


if __name__ == "__main__":
    main()
