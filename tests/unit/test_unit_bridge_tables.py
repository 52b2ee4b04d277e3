"""One element table, both directions: the `Datatypes` direction members that let the down bridge's
tables (R4 → STU3/DSTU2) be read backwards by the up bridge (STU3/DSTU2 → R4).

Each resource module writes the elements R4 and an older version share once, as a function of one
direction's datatypes; these prove that such a table says the same thing both ways (the same
element pairs, codes read backwards, one-of-many kept and listed) and that a resource that fits
both versions survives the trip down and back up unchanged.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import pytest

from shared.bridge import convert_response, encounter, observation
from shared.bridge import datatypes as down
from shared.bridge.base import EXTRA_ITEMS, NOT_REPRESENTABLE, UNKNOWN_CODE, Ctx, Table, To, same
from shared.bridge.resource import FacadeTables
from shared.bridge.terminology import THO
from shared.bridge.up import convert_response_up
from shared.bridge.up import datatypes as up
from shared.policy import Interaction

pytestmark = pytest.mark.unit

PROVIDER = "https://fhir.example.org"

# The resource modules' tables written once for both directions, as "module.function" of shared.bridge.
SHARED_TABLES = [f"{module}.{table}" for module, tables in {
    "observation": ("elements", "stu3_elements", "dstu2_elements", "component"),
    "condition": ("elements", "stu3_elements", "dstu2_elements"),
    "encounter": ("elements", "stu3_elements"),
    "allergy": ("elements", "stu3_elements", "dstu2_elements"),
    "medication": ("elements", "stu3_elements", "dstu2_elements"),
    "coverage": ("elements", "stu3_elements", "dstu2_elements"),
    "datatypes": ("person_elements",),
}.items() for table in tables]
WHOLE_TABLES = [f"{module}.tables" for module in ("patient", "practitioner", "location", "organization", "outcome")]


def _table(name: str) -> Callable[[Any], Any]:
    module, function = name.split(".")
    return getattr(importlib.import_module(f"shared.bridge.{module}"), function)


def _pairs(going_down: Table, going_up: Table) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """(R4 name, older name) as each direction's table states them."""
    return ({(r4, rule.name) for r4, rule in going_down.items()},
            {(rule.name, older) for older, rule in going_up.items()})


@pytest.mark.parametrize("name", SHARED_TABLES)
def test_a_shared_table_names_the_same_element_pairs_in_both_directions(name: str) -> None:
    going_down, going_up = _pairs(_table(name)(down), _table(name)(up))
    assert going_down == going_up


def test_an_onset_choice_names_the_same_element_pairs_in_both_directions() -> None:
    going_down, going_up = _pairs(down.onset_choice(down, "onset", "onsetQuantity"),
                                  down.onset_choice(up, "onset", "onsetQuantity"))
    assert going_down == going_up and ("onsetAge", "onsetQuantity") in going_down


@pytest.mark.parametrize("name", WHOLE_TABLES)
def test_a_resource_written_once_has_the_same_element_pairs_in_both_directions(name: str) -> None:
    downward: FacadeTables = _table(name)(down)
    upward: FacadeTables = _table(name)(up)
    stu3_down, stu3_up = _pairs(downward["stu3"], upward["stu3"])
    dstu2_down, dstu2_up = _pairs(downward["dstu2"], upward["dstu2"])
    assert stu3_down == stu3_up and dstu2_down == dstu2_up


def test_renamed_reads_the_r4_name_going_down_and_the_older_name_going_up() -> None:
    assert down.renamed("encounter", "context") == {"encounter": To("context", same)}
    assert up.renamed("encounter", "context") == {"context": To("encounter", same)}


def test_coded_reads_the_down_table_backwards_going_up_for_each_older_version() -> None:
    stu3, dstu2 = Ctx("stu3"), Ctx("dstu2")
    assert down.coded(observation.STATUS)("corrected", dstu2, "p") == "amended"
    assert up.coded(observation.STATUS)("amended", dstu2, "p") == "amended"  # the same spelling wins
    assert up.coded(encounter.STATUS)("triaged", stu3, "p") == "triaged"
    assert up.coded(encounter.STATUS)("triaged", dstu2, "p") is None
    assert dstu2.drops == {f"p:{UNKNOWN_CODE}": 1}


def test_single_keeps_the_first_item_going_down_and_lists_the_one_item_going_up() -> None:
    ctx = Ctx("dstu2")
    assert down.single(same)(["a", "b", "c"], ctx, "p") == "a"
    assert ctx.drops == {f"p:{EXTRA_ITEMS}": 2}
    assert up.single(same)("a", Ctx("dstu2"), "p") == ["a"]


def test_reference_to_restricts_the_target_only_going_down() -> None:
    role = {"reference": "PractitionerRole/r1"}
    ctx = Ctx("stu3")
    assert down.reference_to("Practitioner")(role, ctx, "p") is None
    assert ctx.drops == {f"p:{NOT_REPRESENTABLE}": 1}
    assert up.reference_to("Practitioner")(role, Ctx("stu3"), "p") == role


def test_note_text_joins_annotations_going_down_and_wraps_the_text_going_up() -> None:
    notes = [{"text": "one"}, {"text": "two"}]
    assert down.note_text(notes, Ctx("dstu2"), "p") == "one\n\ntwo"
    assert up.note_text("one\n\ntwo", Ctx("dstu2"), "p") == [{"text": "one\n\ntwo"}]


def _round_trip(facade: str, resource: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, int]]:
    older, dropped = convert_response(facade, Interaction("read", resource["resourceType"], resource["id"]),
                                      resource, PROVIDER)
    back, dropped_up = convert_response_up(facade, older, PROVIDER)
    return older, back, {**dropped, **dropped_up}


def test_an_r4_encounter_fit_for_stu3_survives_the_trip_down_and_back() -> None:
    r4 = {"resourceType": "Encounter", "id": "e1", "status": "triaged",
          "class": {"system": THO + "v3-ActCode", "code": "AMB"}, "subject": {"reference": "Patient/p1"},
          "basedOn": [{"reference": "ServiceRequest/s1"}], "reasonCode": [{"text": "check-up"}],
          "appointment": [{"reference": "Appointment/a1"}],
          "statusHistory": [{"status": "arrived", "period": {"start": "2024-01-01"}}],
          "diagnosis": [{"condition": {"reference": "Condition/c1"}, "use": {"text": "admission"}, "rank": 1}]}
    stu3, back, drops = _round_trip("stu3", r4)
    assert stu3["incomingReferral"] == r4["basedOn"] and stu3["reason"] == r4["reasonCode"]
    assert stu3["appointment"] == {"reference": "Appointment/a1"}
    assert stu3["diagnosis"][0]["role"] == {"text": "admission"}
    assert back == r4 and drops == {}


def test_an_r4_medication_request_fit_for_dstu2_survives_the_trip_down_and_back() -> None:
    r4 = {"resourceType": "MedicationRequest", "id": "m1", "status": "active", "intent": "order",
          "medicationCodeableConcept": {"text": "aspirin"}, "subject": {"reference": "Patient/p1"},
          "authoredOn": "2024-01-02", "requester": {"reference": "Practitioner/d1"},
          "reasonCode": [{"text": "pain"}], "note": [{"text": "with food"}],
          "dispenseRequest": {"numberOfRepeatsAllowed": 2}}
    dstu2, back, drops = _round_trip("dstu2", r4)
    assert dstu2["resourceType"] == "MedicationOrder" and dstu2["dateWritten"] == "2024-01-02"
    assert dstu2["prescriber"] == r4["requester"] and dstu2["patient"] == r4["subject"]
    assert dstu2["reasonCodeableConcept"] == {"text": "pain"} and dstu2["note"] == "with food"
    assert back == r4
    assert drops == {f"MedicationRequest.intent:{NOT_REPRESENTABLE}": 1}  # DSTU2 says it by being an order


def test_a_dstu2_condition_onset_age_is_a_quantity_there_and_an_age_again_in_r4() -> None:
    age = {"value": 40, "unit": "a"}
    r4 = {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"}, "onsetAge": age,
          "verificationStatus": {"coding": [{"system": THO + "condition-ver-status", "code": "confirmed"}]}}
    dstu2, back, drops = _round_trip("dstu2", r4)
    assert dstu2["onsetQuantity"] == age and "onsetAge" not in dstu2 and dstu2["verificationStatus"] == "confirmed"
    assert back == r4 and drops == {}
