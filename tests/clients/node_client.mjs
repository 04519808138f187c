// Drives a FHIR server (inkan, in the end-to-end tests) with a real Node.js
// FHIR client library, fhir-kit-client 2.0.3, with its own API and default
// settings, and prints ONE JSON object on stdout with what it saw, for the
// Rust test to assert.
//
//   node node_client.mjs BASE_URL [--node-modules DIR] [--patients N]
//
// DIR holds fhir-kit-client (default: $INKAN_CLIENT_NODE_MODULES, as printed by
// scripts/install-clients.sh). fhir-kit-client is ESM-only and ESM ignores
// NODE_PATH, so it is imported from DIR by path.
//
// fhir-kit-client sends requests with Node's own fetch (undici): its default
// headers are `accept: application/fhir+json` (the library's), and fetch's
// `accept-encoding: gzip, deflate` (plain http; `br, gzip, deflate` on
// https), `accept-language: *`, `sec-fetch-mode: cors`, `user-agent: node`,
// `connection: keep-alive`; bodies go as `content-type: application/fhir+json`.
// fetch undoes gzip transparently. The headers actually written to the socket
// are observed through undici's diagnostics channels.
//
// Steps, each with the library's own calls:
//  1. create a Patient (山田 太郎, birthDate)              client.create
//  2. read it                                             client.read
//  3. update it with `If-Match: W/"<version>"`             client.update({options: {headers}})
//     and again with the stale version (409 or 412 expected)
//  4. create N patients under a fresh identifier system, search them with
//     `_count=2` and follow `next` to the end               client.search, client.nextPage
//  5. a transaction Bundle with `urn:uuid` references      client.transaction, which
//     POSTs to `[base]/` (trailing slash)
//  6. read the Observation, its subject names that Patient
//  7. the Patient's history                               client.history
//  8. delete the Patient, read it again (404 or 410)        client.delete, client.read
//  9. read a Patient as XML with `accept: application/fhir+xml` and with
//     `_format=xml` (client.read, client.request): the library parses only JSON
//     and rejects the body, with the status and raw text in the error
//
// Output: the same JSON object as tests/clients/python_client.py (see there):
//   library, library_version, transport, base, request_accept_encoding,
//   request_accept, request_user_agent, created_id, create_status, location,
//   create_headers, read_*, update_*, stale_*, search_*, pages, total_seen,
//   ids_seen, next_links, transaction_*, observation_*, history_*,
//   delete_status, deleted_status, xml_read_*, xml_format_*,
//   exchanges: [{method, url, status, request_headers, response_headers}]
//     (request headers as written to the socket, response headers as received),
//   errors: [{step, error}] (also on stderr; exit 1).
// All header maps have lower-cased names.

import dc from 'node:diagnostics_channel';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { randomUUID } from 'node:crypto';

const FAMILY = '山田';
const GIVEN = '太郎';

const { values: flags, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    'node-modules': { type: 'string', default: process.env.INKAN_CLIENT_NODE_MODULES },
    patients: { type: 'string', default: '5' },
  },
});
if (positionals.length !== 1 || !flags['node-modules']) {
  console.error('usage: node node_client.mjs BASE_URL [--node-modules DIR] [--patients N]');
  console.error('  (DIR, or $INKAN_CLIENT_NODE_MODULES, holds fhir-kit-client: scripts/install-clients.sh)');
  process.exit(2);
}
const base = positionals[0];
const nPatients = Number(flags.patients);

const pkgDir = join(flags['node-modules'], 'fhir-kit-client');
const pkg = JSON.parse(readFileSync(join(pkgDir, 'package.json'), 'utf8'));
const entry = pkg.exports?.['.']?.import ?? pkg.main;
const { Client } = await import(pathToFileURL(join(pkgDir, entry)).href);

// ---------------------------------------------------------------- observing

const out = {};
const exchanges = [];
const errors = [];
const pending = new WeakMap();

function parseRawHeaders(raw) {
  // "GET /path HTTP/1.1\r\nname: value\r\n..." -> {name: value}
  const headers = {};
  for (const line of raw.split('\r\n').slice(1)) {
    const i = line.indexOf(':');
    if (i > 0) addHeader(headers, line.slice(0, i), line.slice(i + 1).trim());
  }
  return headers;
}
function addHeader(headers, name, value) {
  const key = name.toLowerCase();
  headers[key] = key in headers ? `${headers[key]}, ${value}` : value;
}
dc.subscribe('undici:client:sendHeaders', ({ request, headers }) => {
  pending.set(request, parseRawHeaders(headers));
});
dc.subscribe('undici:request:headers', ({ request, response }) => {
  const responseHeaders = {};
  for (let i = 0; i + 1 < response.headers.length; i += 2) {
    addHeader(responseHeaders, String(response.headers[i]), String(response.headers[i + 1]));
  }
  exchanges.push({
    method: request.method,
    url: `${request.origin}${request.path}`,
    status: response.statusCode,
    request_headers: pending.get(request) ?? {},
    response_headers: responseHeaders,
  });
});

function lastExchange(mark) {
  if (exchanges.length <= mark) throw new Error('the library made no HTTP request');
  return exchanges[exchanges.length - 1];
}
function headersOf(headers) {
  const obj = {};
  headers?.forEach((value, name) => {
    obj[name.toLowerCase()] = value;
  });
  return obj;
}
// The status of a request that fhir-kit-client rejected (>= 400, or not JSON).
function statusOf(error) {
  if (error?.response?.status === undefined) throw error;
  return error.response.status;
}

async function step(name, fn) {
  try {
    await fn();
  } catch (error) {
    const cause = error?.cause ? ` (${error.cause.code ?? ''} ${error.cause.message ?? error.cause})` : '';
    const message = `${error?.name ?? 'Error'}: ${error?.message ?? error}${cause}`;
    errors.push({ step: name, error: message });
    console.error(`${name}: ${message}`);
    if (error?.response?.data) console.error(`  body: ${JSON.stringify(error.response.data).slice(0, 500)}`);
    if (error?.stack) console.error(error.stack);
  }
}

// ------------------------------------------------------------------ helpers

function patientBody(system, value, given = GIVEN) {
  const body = {
    resourceType: 'Patient',
    name: [{ use: 'official', family: FAMILY, given: [given], text: `${FAMILY} ${given}` }],
    gender: 'male',
    birthDate: '1970-01-01',
  };
  if (system) body.identifier = [{ system, value }];
  return body;
}

function transactionBundle() {
  const patientRef = `urn:uuid:${randomUUID()}`;
  const observationRef = `urn:uuid:${randomUUID()}`;
  return {
    resourceType: 'Bundle',
    type: 'transaction',
    entry: [
      {
        fullUrl: patientRef,
        resource: { ...patientBody(undefined, undefined, '花子'), gender: 'female' },
        request: { method: 'POST', url: 'Patient' },
      },
      {
        fullUrl: observationRef,
        resource: {
          resourceType: 'Observation',
          status: 'final',
          code: {
            coding: [{ system: 'http://loinc.org', code: '8867-4', display: 'Heart rate' }],
            text: '心拍数',
          },
          subject: { reference: patientRef },
          valueQuantity: { value: 72, unit: 'beats/minute', system: 'http://unitsofmeasure.org', code: '/min' },
        },
        request: { method: 'POST', url: 'Observation' },
      },
    ],
  };
}

function idFromLocation(location, resourceType) {
  const m = new RegExp(`(?:^|/)${resourceType}/([A-Za-z0-9\\-.]{1,64})(?:/|$)`).exec(location ?? '');
  return m ? m[1] : null;
}

function rootElement(text) {
  const m = /^\s*(?:<\?xml[^>]*\?>\s*)?(?:<!--[\s\S]*?-->\s*)*(<[A-Za-z_][\w:.-]*)/.exec(text);
  return m ? m[1] : text.slice(0, 20);
}

// The library rejects a non-JSON body; its error carries status, raw text and
// response headers.
async function xmlRequest(prefix, call) {
  const mark = exchanges.length;
  let text;
  let status;
  let headers;
  try {
    await call();
    throw new Error(`${prefix}: the server answered JSON`);
  } catch (error) {
    if (error?.response?.status === undefined) throw error;
    status = error.response.status;
    text = typeof error.response.data === 'string' ? error.response.data : JSON.stringify(error.response.data);
    headers = headersOf(error.config?.headers);
  }
  const ex = lastExchange(mark);
  out[`${prefix}_status`] = status;
  out[`${prefix}_headers`] = { ...ex.response_headers, ...headers };
  out[`${prefix}_starts_with`] = rootElement(text);
  if (prefix === 'xml_read') out.xml_read_has_family = text.includes(FAMILY);
  if (status !== 200 || !rootElement(text).startsWith('<Patient')) {
    throw new Error(`${prefix}: ${status}, not a Patient in XML: ${text.slice(0, 200)}`);
  }
}

// -------------------------------------------------------------------- steps

const client = new Client({ baseUrl: base });
out.library = 'fhir-kit-client';
out.library_version = pkg.version;
out.transport = `node ${process.version} fetch (undici ${process.versions.undici})`;
out.base = base;
const state = {};

await step('create', async () => {
  const mark = exchanges.length;
  const created = await client.create({ resourceType: 'Patient', body: patientBody() });
  const { response } = Client.httpFor(created);
  const ex = lastExchange(mark);
  out.create_status = response.status;
  out.create_headers = ex.response_headers;
  out.location = response.headers.get('location');
  out.created_id = created.id ?? idFromLocation(out.location, 'Patient');
});

await step('read', async () => {
  const mark = exchanges.length;
  const patient = await client.read({ resourceType: 'Patient', id: out.created_id });
  const { response } = Client.httpFor(patient);
  const ex = lastExchange(mark);
  out.read_status = response.status;
  out.read_headers = ex.response_headers;
  out.request_accept_encoding = ex.request_headers['accept-encoding'] ?? null;
  out.request_accept = ex.request_headers.accept ?? null;
  out.request_user_agent = ex.request_headers['user-agent'] ?? null;
  out.read_family = patient.name?.[0]?.family;
  out.read_given = patient.name?.[0]?.given;
  out.read_birth_date = patient.birthDate;
  out.read_version_id = patient.meta?.versionId ?? null;
  state.patient = patient;
});

await step('update', async () => {
  out.update_if_match = `W/"${out.read_version_id}"`;
  const body = { ...state.patient, telecom: [{ system: 'phone', value: '03-1234-5678', use: 'home' }] };
  const mark = exchanges.length;
  const updated = await client.update({
    resourceType: 'Patient',
    id: out.created_id,
    body,
    options: { headers: { 'If-Match': out.update_if_match } },
  });
  const ex = lastExchange(mark);
  if (ex.request_headers['if-match'] !== out.update_if_match) {
    throw new Error(`If-Match not sent: ${JSON.stringify(ex.request_headers)}`);
  }
  out.update_status = Client.httpFor(updated).response.status;
  out.update_headers = ex.response_headers;
  out.update_version_id = updated.meta?.versionId ?? null;
});

await step('stale_update', async () => {
  out.stale_if_match = `W/"${out.read_version_id}"`;
  try {
    const r = await client.update({
      resourceType: 'Patient',
      id: out.created_id,
      body: state.patient,
      options: { headers: { 'If-Match': out.stale_if_match } },
    });
    out.stale_update_status = Client.httpFor(r).response.status;
  } catch (error) {
    out.stale_update_status = statusOf(error); // expected: 409 or 412
  }
});

await step('search', async () => {
  const system = `urn:uuid:${randomUUID()}`;
  out.search_system = system;
  for (let i = 0; i < nPatients; i++) {
    await client.create({ resourceType: 'Patient', body: patientBody(system, `p${i}`, `${GIVEN}${i}`) });
  }
  out.search_created = nPatients;
  const mark = exchanges.length;
  const found = [];
  const nextLinks = [];
  const searchHeaders = [];
  let pages = 0;
  try {
    let bundle = await client.search({ resourceType: 'Patient', searchParams: { identifier: `${system}|`, _count: 2 } });
    out.search_url = Client.httpFor(bundle).request.url;
    while (bundle) {
      pages += 1;
      searchHeaders.push(lastExchange(mark).response_headers);
      for (const e of bundle.entry ?? []) if (e.resource) found.push(e.resource);
      const next = bundle.link?.find((l) => l.relation === 'next');
      if (next) nextLinks.push(next.url);
      if (pages > 50) throw new Error('more than 50 pages: next links loop');
      bundle = await client.nextPage({ bundle }); // undefined without a next link
    }
  } finally {
    // Also when a page fails: what was seen until then.
    out.pages = pages;
    out.total_seen = found.length;
    out.ids_seen = new Set(found.map((r) => r.id)).size;
    out.next_links = nextLinks;
    out.search_headers = searchHeaders;
  }
});

await step('transaction', async () => {
  const mark = exchanges.length;
  const responseBundle = await client.transaction({ body: transactionBundle() });
  const { request, response } = Client.httpFor(responseBundle);
  out.transaction_url = request.url;
  out.transaction_status = response.status;
  out.transaction_headers = lastExchange(mark).response_headers;
  const locations = (responseBundle.entry ?? []).map((e) => e.response?.location ?? null);
  out.transaction_locations = locations;
  out.transaction_patient_id = idFromLocation(locations[0], 'Patient');
  out.observation_id = idFromLocation(locations[1], 'Observation');
  if (!out.transaction_patient_id || !out.observation_id) {
    throw new Error(`transaction response without the two locations: ${JSON.stringify(locations)}`);
  }
});

await step('observation', async () => {
  const observation = await client.read({ resourceType: 'Observation', id: out.observation_id });
  out.observation_read_status = Client.httpFor(observation).response.status;
  const reference = observation.subject?.reference ?? null;
  const expected = `Patient/${out.transaction_patient_id}`;
  out.observation_subject = reference;
  out.observation_subject_matches = reference === expected || (reference ?? '').endsWith(`/${expected}`);
  if (!out.observation_subject_matches) throw new Error(`Observation.subject is ${reference}, expected ${expected}`);
});

await step('history', async () => {
  const mark = exchanges.length;
  const bundle = await client.history({ resourceType: 'Patient', id: out.created_id });
  out.history_status = Client.httpFor(bundle).response.status;
  out.history_headers = lastExchange(mark).response_headers;
  out.history_count = (bundle.entry ?? []).length;
});

await step('delete', async () => {
  const mark = exchanges.length;
  await client.delete({ resourceType: 'Patient', id: out.created_id });
  out.delete_status = lastExchange(mark).status;
});

await step('read_deleted', async () => {
  try {
    const r = await client.read({ resourceType: 'Patient', id: out.created_id });
    out.deleted_status = Client.httpFor(r).response.status;
  } catch (error) {
    out.deleted_status = statusOf(error); // expected: 404 or 410
  }
});

await step('xml_read', () =>
  xmlRequest('xml_read', () =>
    client.read({
      resourceType: 'Patient',
      id: out.transaction_patient_id,
      options: { headers: { accept: 'application/fhir+xml' } },
    }),
  ),
);

await step('xml_format', () =>
  xmlRequest('xml_format', () => client.request(`Patient/${out.transaction_patient_id}?_format=xml`)),
);

out.exchanges = exchanges;
out.errors = errors;
process.stdout.write(`${JSON.stringify(out)}\n`);
process.exitCode = errors.length ? 1 : 0;
