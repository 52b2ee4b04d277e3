/**
 * What the R4 sample data lacks but the Patients app shows, derived deterministically at load time.
 *
 * The R4 Synthea bundles have no Coverage and no Location, and their references carry no display,
 * yet the app shows a Coverage view, an Encounter's `location[0].location.display` and a
 * prescriber's display name. So, before each bundle is posted, and always the same way (the same
 * rules as the STU3/DSTU2 sample EHR in devtools/sample_ehr/derive.py, so every dev provider tells
 * the same story):
 *
 * - Organization `sample-payer-1..3`: three fixed, fictitious insurers (type `ins`).
 * - Location: four fixed places of one sample hospital. Every Encounter without a location gets
 *   `location[0]` pointing at one, with its name as display: class EMER → Emergency Department;
 *   IMP/ACUTE → Ward 4 West; otherwise Pediatrics Clinic if the patient was under 18 at the start,
 *   else General Medicine Clinic.
 * - Coverage: one per Patient, posted inside the patient's own bundle so its references resolve.
 *   The insurer is picked by CRC32 of the source patient id; period from the later of birth and
 *   2010-01-01 to death; status `cancelled` once deceased; class `group` and `plan` with names.
 * - References to a Practitioner or Organization of the same bundle that lack a display get the
 *   target's name.
 */

import zlib from 'node:zlib';

const THO = 'http://terminology.hl7.org/CodeSystem';
const PLAN_START = '2010-01-01';
const NOTE = 'Derived by the R4 dev server at load time; not part of the synthetic source data.';

const PAYERS = [
  { id: 'sample-payer-1', name: 'Example Mutual Health', typeCode: 'PPO', typeDisplay: 'preferred provider organization policy',
    prefix: 'EXM', group: 'GRP-1001', plan: 'PPO-SILVER', planDisplay: 'Example Mutual PPO Silver' },
  { id: 'sample-payer-2', name: 'Synthetic Care HMO', typeCode: 'HMO', typeDisplay: 'health maintenance organization policy',
    prefix: 'SCH', group: 'GRP-2002', plan: 'HMO-STANDARD', planDisplay: 'Synthetic Care HMO Standard' },
  { id: 'sample-payer-3', name: 'Sample State Medicaid', typeCode: 'PUBLICPOL', typeDisplay: 'public healthcare',
    prefix: 'SSM', group: 'GRP-3003', plan: 'MEDICAID', planDisplay: 'Sample State Medicaid Plan' },
];

const PLACES = {
  general: { id: 'sample-location-gim', name: 'General Medicine Clinic', role: 'GIM', roleDisplay: 'General internal medicine clinic' },
  pediatric: { id: 'sample-location-pedc', name: 'Pediatrics Clinic', role: 'PEDC', roleDisplay: 'Pediatrics clinic' },
  emergency: { id: 'sample-location-er', name: 'Emergency Department', role: 'ER', roleDisplay: 'Emergency room' },
  ward: { id: 'sample-location-ward', name: 'Ward 4 West', role: 'HU', roleDisplay: 'Hospital unit' },
};
const EMERGENCY_CLASSES = new Set(['emer', 'emergency']);
const INPATIENT_CLASSES = new Set(['imp', 'acute', 'inpatient', 'daytime']);

/** A transaction that PUTs the fixed insurers and places, so patient bundles can reference them by id. */
export function sharedResourcesBundle() {
  const resources = [...PAYERS.map(payerOrganization), ...Object.values(PLACES).map(location)];
  return {
    resourceType: 'Bundle',
    type: 'transaction',
    entry: resources.map((r) => ({ resource: r, request: { method: 'PUT', url: `${r.resourceType}/${r.id}` } })),
  };
}

/** Adds Encounter locations, reference displays and one Coverage per Patient; returns what it derived. */
export function enrichBundle(bundle) {
  const entries = bundle.entry ?? [];
  const byUrl = new Map(entries.map((e) => [e.fullUrl, e.resource]));
  const births = new Map(entries.filter((e) => e.resource.resourceType === 'Patient')
    .map((e) => [e.fullUrl, e.resource.birthDate ?? '']));
  let locations = 0;
  for (const { resource } of entries) {
    if (resource.resourceType === 'Encounter' && !resource.location?.length) {
      addLocation(resource, births);
      locations += 1;
    }
  }
  const coverages = entries.filter((e) => e.resource.resourceType === 'Patient')
    .map((e) => ({ resource: coverage(e.resource, e.fullUrl), request: { method: 'POST', url: 'Coverage' } }));
  bundle.entry = [...entries, ...coverages];
  fillDisplays(bundle.entry, displayNames(byUrl));
  return { coverages: coverages.length, locations };
}

/** A HumanName as one line: prefix, given, family, suffix. */
export function humanName(name) {
  if (name.text) return name.text;
  return [...(name.prefix ?? []), ...(name.given ?? []), name.family ?? '', ...(name.suffix ?? [])]
    .filter(Boolean).join(' ');
}

function officialName(resource) {
  const names = resource.name ?? [];
  return humanName(names.find((n) => n.use === 'official') ?? names[0] ?? {});
}

function payerOrganization(payer) {
  return {
    resourceType: 'Organization',
    id: payer.id,
    active: true,
    type: [{ coding: [{ system: `${THO}/organization-type`, code: 'ins', display: 'Insurance Company' }] }],
    name: payer.name,
  };
}

function location(place) {
  return {
    resourceType: 'Location',
    id: place.id,
    status: 'active',
    name: place.name,
    description: NOTE,
    mode: 'instance',
    type: [{ coding: [{ system: `${THO}/v3-RoleCode`, code: place.role, display: place.roleDisplay }] }],
  };
}

function crc32(text) {
  return zlib.crc32(Buffer.from(text, 'utf8'));
}

function died(patient) {
  const when = patient.deceasedDateTime;
  return { deceased: Boolean(when || patient.deceasedBoolean), date: when ? when.slice(0, 10) : null };
}

function coveragePeriod(patient) {
  const birth = patient.birthDate ?? PLAN_START;
  let start = birth > PLAN_START ? birth : PLAN_START;
  const { date } = died(patient);
  if (date && date < start) start = birth;
  return date ? { start, end: date } : { start };
}

function coverageClass(code, value, name) {
  return { type: { coding: [{ system: `${THO}/coverage-class`, code }] }, value, name };
}

function coverage(patient, patientUrl) {
  const hash = crc32(patient.id);
  const payer = PAYERS[hash % PAYERS.length];
  const memberId = `${payer.prefix}${String(hash % 10 ** 8).padStart(8, '0')}`;
  const insured = { reference: patientUrl, display: officialName(patient) };
  return {
    resourceType: 'Coverage',
    identifier: [{ system: `https://sample-ehr.example/${payer.id}/member-id`, value: memberId }],
    status: died(patient).deceased ? 'cancelled' : 'active',
    type: { coding: [{ system: `${THO}/v3-ActCode`, code: payer.typeCode, display: payer.typeDisplay }], text: payer.typeDisplay },
    policyHolder: insured,
    subscriber: insured,
    subscriberId: memberId,
    beneficiary: insured,
    relationship: { coding: [{ system: `${THO}/subscriber-relationship`, code: 'self' }] },
    period: coveragePeriod(patient),
    payor: [{ reference: `Organization/${payer.id}`, display: payer.name }],
    class: [coverageClass('group', payer.group, `${payer.name} group ${payer.group}`),
      coverageClass('plan', payer.plan, payer.planDisplay)],
  };
}

function placeFor(encounter, births) {
  const code = (encounter.class?.code ?? '').toLowerCase();
  if (EMERGENCY_CLASSES.has(code)) return PLACES.emergency;
  if (INPATIENT_CLASSES.has(code)) return PLACES.ward;
  const birth = births.get(encounter.subject?.reference) ?? '';
  const start = (encounter.period?.start ?? '').slice(0, 10);
  const adultFrom = birth.length >= 4 ? `${Number(birth.slice(0, 4)) + 18}${birth.slice(4, 10)}` : '';
  return birth && start && start < adultFrom ? PLACES.pediatric : PLACES.general;
}

function addLocation(encounter, births) {
  const place = placeFor(encounter, births);
  const entry = {
    location: { reference: `Location/${place.id}`, display: place.name },
    status: encounter.status === 'finished' ? 'completed' : 'active',
  };
  if (encounter.period) entry.period = { ...encounter.period };
  encounter.location = [entry];
}

function displayNames(byUrl) {
  const names = new Map();
  for (const [url, resource] of byUrl) {
    if (resource.resourceType === 'Practitioner') names.set(url, officialName(resource));
    if (resource.resourceType === 'Organization' && resource.name) names.set(url, resource.name);
  }
  return names;
}

function fillDisplays(node, names) {
  if (Array.isArray(node)) {
    node.forEach((item) => fillDisplays(item, names));
  } else if (node && typeof node === 'object') {
    if (typeof node.reference === 'string' && !node.display && names.get(node.reference)) {
      node.display = names.get(node.reference);
    }
    Object.values(node).forEach((value) => fillDisplays(value, names));
  }
}
