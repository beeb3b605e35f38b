"""app.fhir: HL7 v2 messages to FHIR R4 resources, each validated with the fhir.resources R4B models."""

from __future__ import annotations

import base64
import importlib
from typing import Any
from zoneinfo import ZoneInfo

import hl7
import pytest

from app.fhir import MappingError, MappingResult, UnsupportedMessageError, transform
from app.fhir.codes import GENDER
from app.fhir.er7 import parse
from app.fhir.timestamps import Converted, convert
from tests.support.hl7_samples import expected_acks, sample

MSH = "MSH|^~\\&|APP|FAC|TRIAGE|HOSP|20240315101500+0100||{type}|CTRL1|P|2.5"


def accepted_samples() -> list[str]:
    """Sample files expected.tsv answers AA."""
    return sorted(name for name, code in expected_acks().items() if code == "AA")


def load(name: str) -> str:
    """A sample as the intake hands it over: UTF-8, BOM stripped, segments ended by CR."""
    text = sample(name).decode("utf-8").lstrip("\ufeff")
    return text.replace("\r\n", "\r").replace("\n", "\r")


def segment(name: str, fields: dict[int, str]) -> str:
    """One segment from {field number: value}."""
    values = [""] * max(fields)
    for n, value in fields.items():
        values[n - 1] = value
    return "|".join([name, *values])


def message(kind: str, *segments: str) -> str:
    """A v2.5 message of type `kind` made of an MSH and `segments`."""
    return "\r".join([MSH.format(type=kind), *segments])


def validate(resource: dict[str, Any]) -> None:
    """Validate one resource with its R4B model (raises on an invalid one)."""
    name = resource["resourceType"]
    model = getattr(importlib.import_module(f"fhir.resources.R4B.{name.lower()}"), name)
    model.model_validate(resource)


def of_type(result: MappingResult, name: str) -> list[dict[str, Any]]:
    """The resources of one type, in order."""
    return [r for r in result.resources if r["resourceType"] == name]


def walk(value: Any) -> list[Any]:
    """Every dict and list inside a JSON value."""
    found: list[Any] = []
    if isinstance(value, dict | list):
        found.append(value)
        for item in value.values() if isinstance(value, dict) else value:
            found += walk(item)
    return found


PID = segment("PID", {1: "1", 3: "77001^^^HOSP&2.16.840.1.113883.19.5&ISO^MR", 5: "ÅSTRÖM^MÄRTA^E",
                      7: "19560412", 8: "F"})
PV1 = segment("PV1", {1: "1", 2: "I", 3: "W3^312^B^HOSP", 7: "4455^Berg^Ingrid^^^Dr",
                      19: "V7788^^^HOSP&2.16.840.1.113883.19.5&ISO^VN", 44: "20240314080000+0100"})
#: A v2.5 RAS^O17 (MSH, PID, PV1, ORC, RXA, RXR): morphine given by a nurse on ward 3.
RAS = message(
    "RAS^O17^RAS_O17", PID, PV1,
    segment("ORC", {1: "RE", 2: "PO-5521^PHARM", 3: "FO-9912^PYXIS", 5: "CM", 9: "20240315101000+0100",
                    12: "4455^Berg^Ingrid^^^Dr"}),
    segment("RXA", {1: "0", 2: "1", 3: "20240315100500+0100", 4: "20240315100500+0100",
                    5: "00409-1890-01^Morphine sulfate 2 mg/mL injection^NDC", 6: "2", 7: "mg^milligram^UCUM",
                    10: "5566^Lind^Sara", 11: "^^^W3", 15: "LOT4481", 16: "20250101", 17: "HOS^Hospira^MVX",
                    20: "CP", 21: "A"}),
    segment("RXR", {1: "IV^Intravenous^HL70162", 2: "LA^Left arm^HL70163"}),
)


@pytest.mark.parametrize("name", accepted_samples())
def test_every_accepted_sample_maps_to_valid_fhir_r4(name: str) -> None:
    result = transform(load(name))
    assert result.resources
    for resource in result.resources:
        validate(resource)
    ids = [(r["resourceType"], r["id"]) for r in result.resources]
    assert len(ids) == len(set(ids))
    local = {f"{kind}/{rid}" for kind, rid in ids}
    refs = [v["reference"] for v in walk(result.resources) if isinstance(v, dict) and "reference" in v]
    assert set(refs) <= local  # every reference points inside the result
    containers = walk(result.resources)
    assert len({id(c) for c in containers}) == len(containers)  # nothing shared between resources
    assert result.patient_id in {rid for kind, rid in ids if kind == "Patient"}


def test_adt_a01_06_escapes_are_unescaped_after_splitting() -> None:
    result = transform(load("adt_a01_06.hl7"))
    [patient] = of_type(result, "Patient")
    assert patient["name"][0]["family"] == "DOE&SMITH"
    assert patient["name"][0]["given"] == ["JOHN^JANE"]
    [obs] = of_type(result, "Observation")
    assert "pipe | and ampersand & and caret ^ and tilde ~ and backslash \\ chars" in obs["valueString"]


def test_adt_a01_05_keeps_diacritics() -> None:
    [patient] = of_type(transform(load("adt_a01_05.hl7")), "Patient")
    assert patient["name"][0] == {"family": "MÜLLER", "given": ["JOSÉ", "Ñ"]}
    assert patient["address"][0]["line"] == ["Straße der Einheit 42"]
    assert patient["address"][0]["city"] == "München"


def test_adt_a01_10_inpatient_encounter_at_its_location() -> None:
    result = transform(load("adt_a01_10.hl7"))
    [encounter] = of_type(result, "Encounter")
    assert encounter["class"]["code"] == "IMP"
    assert encounter["status"] == "in-progress"
    assert encounter["location"][0]["location"]["display"] == "ICU, 101, A"
    assert encounter["subject"] == {"reference": f"Patient/{result.patient_id}"}


def test_adt_a03_finishes_the_encounter_and_keeps_three_identifiers() -> None:
    result = transform(load("adt_a03_01.hl7"))
    [encounter] = of_type(result, "Encounter")
    assert encounter["status"] == "finished"
    assert encounter["identifier"][0]["value"] == "2008003369"
    [patient] = of_type(result, "Patient")
    assert [(i["system"], i["value"], i["type"]["coding"][0]["code"]) for i in patient["identifier"]] == [
        ("urn:triage:assigner:PK", "5520255", "PK"), ("urn:triage:assigner:CF", "ZZZZZZ83M64Z148R", "CF"),
        ("urn:triage:assigner:SSN", "ZZZZZZ83M64Z148R", "SSN")]
    assert patient["identifier"][2]["period"] == {"start": "2007-01-03"}  # 9999… means open-ended


def test_identifier_systems_from_the_assigning_authority() -> None:
    [patient] = of_type(transform(load("oru_r01_03.hl7")), "Patient")
    mr = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}
    assert patient["identifier"] == [{"value": "9817566735", "system": "urn:oid:2.16.840.1.113883.19.3.2.1",
                                      "type": mr}]
    [patient] = of_type(transform(load("mdm_t02_01.hl7")), "Patient")  # an HD with a GUID type
    assert patient["identifier"][0]["system"] == "urn:triage:assigner:REDDING%20HOSPITAL"


def test_oru_r01_report_with_quantity_range_and_flag() -> None:
    result = transform(load("oru_r01_03.hl7"))
    [report] = of_type(result, "DiagnosticReport")
    [obs] = of_type(result, "Observation")
    assert report["status"] == "final"
    assert report["result"] == [{"reference": f"Observation/{obs['id']}"}]
    assert report["issued"] == "2008-08-18T18:00:00-07:00"
    assert obs["valueQuantity"] == {"value": 50, "unit": "micro-gram per deci-liter",
                                    "system": "http://unitsofmeasure.org", "code": "ug/dL"}
    assert obs["referenceRange"][0]["text"].startswith("<9 mcg/dL")
    assert obs["interpretation"][0]["coding"][0]["code"] == "H"
    assert obs["status"] == "final"
    assert obs["code"]["coding"][0] == {"code": "10368-9", "system": "http://loinc.org",
                                        "display": "Lead BldC-mCnc"}


def test_vxu_v04_administered_and_historical_doses() -> None:
    result = transform(load("vxu_v04_02.hl7"))
    given, *historical = of_type(result, "Immunization")
    assert len(historical) == 2
    assert given["primarySource"] is True
    assert given["doseQuantity"] == {"value": 0.5, "unit": "mL", "system": "http://unitsofmeasure.org",
                                     "code": "mL"}
    assert given["lotNumber"] == "315841"
    assert given["occurrenceDateTime"] == "2015-06-24"
    assert given["vaccineCode"]["coding"][0]["system"] == "http://hl7.org/fhir/sid/ndc"
    assert given["route"]["coding"][0]["code"] == "C28161"
    assert given["programEligibility"][0]["coding"][0]["code"] == "V01"
    for dose in historical:
        assert dose["primarySource"] is False
        assert "doseQuantity" not in dose
        assert dose["status"] == "completed"
        assert dose["vaccineCode"]["coding"][0] == {"code": "88", "system": "http://hl7.org/fhir/sid/cvx",
                                                    "display": "influenza, unspecified formulation"}
    parts = {o["partOf"][0]["reference"] for o in of_type(result, "Observation")}
    assert parts == {f"Immunization/{given['id']}"}


def test_mdm_t02_document_text_with_line_breaks() -> None:
    [doc] = of_type(transform(load("mdm_t02_01.hl7")), "DocumentReference")
    assert doc["status"] == "current"
    assert doc["docStatus"] == "final"
    assert doc["type"]["coding"][0]["code"] == "PN"
    assert doc["date"] == "2023-08-20T17:49:13Z"
    attachment = doc["content"][0]["attachment"]
    assert attachment["contentType"].startswith("text/plain")
    text = base64.b64decode(attachment["data"]).decode("utf-8")
    assert "Critical Values Entered On:  08/22/2023 2:11 EDT \n Performed On:" in text
    assert "\\.br\\" not in text and "\r" not in text
    assert text.endswith("Table formatting from the original result was not included.")


def test_orm_o01_service_request_code_text_rejoins_ampersand() -> None:
    result = transform(load("orm_o01_02.hl7"))
    [request] = of_type(result, "ServiceRequest")
    assert "Jane MRI W/&W/O CONTRAST" in request["code"]["text"]
    assert (request["status"], request["intent"], request["priority"]) == ("active", "order", "routine")
    assert len(request["supportingInfo"]) == len(of_type(result, "Observation")) == 17
    [patient] = of_type(result, "Patient")
    assert "birthDate" not in patient
    assert "PID-7: unparseable date omitted" in result.warnings
    assert not any("1942" in w or "Aug" in w for w in result.warnings)  # warnings name fields, not values


def test_rde_o11_medication_request_with_route_and_dose() -> None:
    [request] = of_type(transform(load("rde_o11_01.hl7")), "MedicationRequest")
    assert (request["status"], request["intent"], request["priority"]) == ("active", "order", "stat")
    assert request["medicationCodeableConcept"]["coding"][0]["code"] == "0143963401"
    [dosage] = request["dosageInstruction"]
    assert dosage["route"]["coding"][0] == {"system": "http://terminology.hl7.org/CodeSystem/v2-0162",
                                            "code": "IV", "display": "Intravenous"}
    assert dosage["doseAndRate"][0]["doseQuantity"]["value"] == 5
    assert dosage["timing"]["repeat"]["boundsPeriod"]["start"] == "2019-11-04T10:30:00+02:15"
    assert request["dispenseRequest"]["numberOfRepeatsAllowed"] == 12


def test_siu_s12_booked_appointment_with_participants() -> None:
    result = transform(load("siu_s12_01.hl7"))
    [appointment] = of_type(result, "Appointment")
    assert appointment["status"] == "booked"
    assert appointment["start"] == "2021-09-24T09:30:00+02:15"
    assert appointment["end"] == "2021-09-24T10:20:00+02:15"
    assert appointment["minutesDuration"] == 50
    actors = [p["actor"] for p in appointment["participant"]]
    assert {"reference": f"Patient/{result.patient_id}"} in actors
    assert any(a.get("type") == "Practitioner" and a["display"] == "Robert C GE" for a in actors)
    assert any(a.get("type") == "Location" and "Room01" in a["display"] for a in actors)


def test_ras_o17_medication_administration() -> None:
    result = transform(RAS)
    assert result.message_type == "RAS^O17"
    for resource in result.resources:
        validate(resource)
    [given] = of_type(result, "MedicationAdministration")
    assert given["status"] == "completed"
    assert given["medicationCodeableConcept"]["coding"][0] == {
        "code": "00409-1890-01", "system": "http://hl7.org/fhir/sid/ndc",
        "display": "Morphine sulfate 2 mg/mL injection"}
    assert given["effectiveDateTime"] == "2024-03-15T10:05:00+01:00"
    assert given["dosage"]["dose"] == {"value": 2, "unit": "milligram", "system": "http://unitsofmeasure.org",
                                       "code": "mg"}
    assert given["dosage"]["route"]["coding"][0]["code"] == "IV"
    assert given["subject"] == {"reference": f"Patient/{result.patient_id}"}
    assert given["context"]["reference"].startswith("Encounter/")
    assert given["request"]["identifier"]["value"] == "PO-5521"
    [patient] = of_type(result, "Patient")
    assert patient["name"][0]["family"] == "ÅSTRÖM"


def test_ras_o17_refused_dose_is_not_done() -> None:
    refused = RAS.replace("|CP|A", "|RE|A")
    [given] = of_type(transform(refused), "MedicationAdministration")
    assert given["status"] == "not-done"


def test_mapping_twice_gives_the_same_ids() -> None:
    for text in (RAS, load("vxu_v04_02.hl7"), load("orm_o01_02.hl7")):
        first, second = transform(text), transform(text)
        assert first == second
    other, original = transform(RAS.replace("PO-5521", "PO-5522")), transform(RAS)
    kind = "MedicationAdministration"
    assert of_type(other, kind)[0]["id"] != of_type(original, kind)[0]["id"]
    assert other.patient_id == original.patient_id  # same PID-3: same provisional Patient


@pytest.mark.parametrize("kind", ["ACK^A01", "ADT^A02", "ORU^R30", "QRY^A19"])
def test_unsupported_message_types(kind: str) -> None:
    with pytest.raises(UnsupportedMessageError):
        transform(message(kind, PID))


def test_permanent_failures_name_the_field_never_the_value() -> None:
    with pytest.raises(MappingError, match="no PID segment"):
        transform(message("RDE^O11", segment("ORC", {1: "NW"})))
    bad_date = RAS.replace("20240315100500+0100|20240315100500+0100", "15/03/2024 10:05|")
    with pytest.raises(MappingError) as caught:
        transform(bad_date)
    assert "RXA-3" in str(caught.value) and "15/03" not in str(caught.value)
    with pytest.raises(MappingError):
        transform("PID|1||12345^^^MRN||DOE^JOHN")


def test_explicit_null_and_empty_fields_are_omitted() -> None:
    pid = segment("PID", {3: "123^^^HOSP&1.2.3&ISO^MR", 5: '""^JOHN', 7: '""', 8: '""', 11: '""', 13: '""'})
    pv1 = segment("PV1", {2: "O", 3: '""', 19: "V1"})
    result = transform(message("ADT^A08", pid, pv1))
    for resource in result.resources:
        validate(resource)
    [patient] = of_type(result, "Patient")
    assert patient["name"] == [{"given": ["JOHN"]}]
    assert not {"birthDate", "gender", "address", "telecom"} & patient.keys()
    [encounter] = of_type(result, "Encounter")
    assert "location" not in encounter


def test_hex_and_formatting_escapes() -> None:
    pid = segment("PID", {3: "1^^^H&1.2&ISO", 5: "O\\X27\\BRIEN^REN\\XC3A9\\\\H\\E\\N\\"})
    obx = segment("OBX", {1: "1", 2: "FT", 3: "N^Note", 5: "line one\\.br\\line two\\.sp2\\end", 11: "F"})
    result = transform(message("ADT^A01", pid, obx))
    [patient] = of_type(result, "Patient")
    assert patient["name"][0] == {"family": "O'BRIEN", "given": ["RENéE"]}
    assert of_type(result, "Observation")[0]["valueString"] == "line one\nline two\n\nend"


def test_unescape_agrees_with_python_hl7_on_delimiter_escapes() -> None:
    raw = "a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f"
    ours = parse(message("ADT^A01", PID)).unescape(raw)
    assert ours == hl7.parse(message("ADT^A01", PID)).unescape(raw) == "a|b^c&d~e\\f"


def test_custom_delimiters() -> None:
    text = "MSH#!@%*#APP#FAC#TRIAGE#HOSP#20240101##ADT!A01#C2#P#2.5\rPID#1##9!!!H*1.2*ISO##DOE%T%X!J%F%O@ROE"
    [patient] = of_type(transform(text), "Patient")
    assert patient["identifier"] == [{"value": "9", "system": "urn:oid:1.2"}]
    assert patient["name"] == [{"family": "DOE*X", "given": ["J#O"]}, {"family": "ROE"}]


def test_timestamps_keep_precision_and_assume_utc() -> None:
    assert convert("1983", "dateTime").value == "1983"
    assert convert("198306", "date").value == "1983-06"
    assert convert("19830615", "dateTime").value == "1983-06-15"
    assert convert("198808181126+0215", "date").value == "1988-08-18"
    assert convert("20150624084727.655-0500", "dateTime").value == "2015-06-24T08:47:27.655-05:00"
    assert convert("200612131519", "dateTime").value == "2006-12-13T15:19:00Z"
    assert convert("200612131519", "dateTime").problem == "no time zone, UTC assumed"
    assert convert("19830615", "instant").value is None
    for bad in ("Aug 15, 1942", "20231301", "20230230", "2023-01-01", ""):
        assert convert(bad, "dateTime").value is None


def test_timestamps_without_an_offset_take_the_senders_zone_on_their_date() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    assert convert("202601151030", "dateTime", berlin) == Converted("2026-01-15T10:30:00+01:00")
    assert convert("20260715103000.5", "instant", berlin) == Converted("2026-07-15T10:30:00.5+02:00")
    assert convert("202603290230", "dateTime", berlin).value == "2026-03-29T02:30:00+01:00"  # skipped: offset before
    assert convert("202610250230", "dateTime", berlin).value == "2026-10-25T02:30:00+02:00"  # twice: the first
    assert convert("202601151030-0500", "dateTime", berlin).value == "2026-01-15T10:30:00-05:00"  # given wins
    assert convert("202601151030", "dateTime", ZoneInfo("UTC")) == Converted("2026-01-15T10:30:00Z")
    assert convert("202601151030", "dateTime", ZoneInfo("Asia/Kolkata")).value == "2026-01-15T10:30:00+05:30"
    assert convert("20260115", "dateTime", berlin) == Converted("2026-01-15")  # a date has no zone


def test_a_message_is_read_in_the_zone_it_is_given() -> None:
    vxu = "MSH|^~\\&|A|B|C|D|20260115103000||VXU^V04|1|P|2.5\rPID|1||7^^^H^MR||DOE^J\rORC|RE\r" \
          "RXA|0|1|20260715093000|20260715093000|08^HepB^CVX|0.5|mL"
    [immunization] = [r for r in transform(vxu, ZoneInfo("America/New_York")).resources
                      if r["resourceType"] == "Immunization"]
    assert immunization["occurrenceDateTime"] == "2026-07-15T09:30:00-04:00"
    assert "UTC assumed" in "; ".join(transform(vxu).warnings)


def test_administrative_gender_codes() -> None:
    assert GENDER == {"M": "male", "F": "female", "O": "other", "U": "unknown", "A": "other", "N": "other"}
    for code, fhir in GENDER.items():
        pid = segment("PID", {3: "1^^^H&1.2&ISO", 8: code.lower()})
        assert of_type(transform(message("ADT^A04", pid)), "Patient")[0]["gender"] == fhir
    result = transform(message("ADT^A04", segment("PID", {3: "1^^^H&1.2&ISO", 8: "X"})))
    assert "gender" not in of_type(result, "Patient")[0]
    assert "PID-8: unknown administrative sex omitted" in result.warnings


def test_adt_a40_merge_links_both_patients() -> None:
    pid = segment("PID", {3: "NEW1^^^HOSP&1.2.3&ISO^MR", 5: "DOE^JANE"})
    mrg = segment("MRG", {1: "OLD9^^^HOSP&1.2.3&ISO^MR"})
    result = transform(message("ADT^A40^ADT_A39", segment("EVN", {1: "A40"}), pid, mrg))
    survivor, replaced = of_type(result, "Patient")
    assert result.patient_id == survivor["id"]
    assert survivor["link"] == [{"other": {"reference": f"Patient/{replaced['id']}"}, "type": "replaces"}]
    assert replaced["active"] is False
    assert replaced["identifier"][0]["value"] == "OLD9"
    assert replaced["link"][0] == {"other": {"reference": f"Patient/{survivor['id']}"}, "type": "replaced-by"}
    for resource in result.resources:
        validate(resource)
