"""The HL7 envelope: decoding, normalising, acceptance and ACKs, on the shared public samples."""

from __future__ import annotations

import pytest

from app.services import hl7_envelope as env
from tests.support.hl7_samples import expected_acks, sample

ACKS = expected_acks()


def judge(raw: bytes) -> str:
    """The ACK a receiver builds for the raw message, as the intake does before storing."""
    try:
        envelope = env.open_envelope(raw)
    except env.EnvelopeError as error:
        try:
            header = env.read_header(env.normalise(env.decode(raw)[0]))
        except env.EnvelopeError:
            header = None
        return env.build_ack(header, "AR", error=error)
    return env.build_ack(envelope.header, "AA")


@pytest.mark.parametrize("name", sorted(ACKS))
def test_every_sample_gets_its_expected_ack_code(name: str) -> None:
    ack = judge(sample(name))
    assert env.ack_code(ack) == ACKS[name]
    if ACKS[name] != "AA":
        assert "\rERR|" in ack


def test_the_ack_swaps_sender_and_receiver_and_echoes_the_control_id() -> None:
    ack = judge(sample("adt_a01_02.hl7")).split("\r")
    msh = ack[0].split("|")
    assert msh[2:6] == ["RECV_SYS", "HOSP_B", "ADT_APP", "HOSP_A"]
    assert msh[8] == "ACK^A01^ACK" and msh[11] == "2.5.1"
    assert ack[1] == "MSA|AA|CTRL0042"


def test_an_unsupported_version_is_rejected_with_error_203() -> None:
    ack = judge(sample("adt_a01_11.hl7")).split("\r")
    assert ack[1].startswith("MSA|AR|MSG001|")
    assert ack[2].split("|")[3].startswith("203^")


def test_no_msh_gets_an_ar_with_an_empty_msa_2_from_a_default_header() -> None:
    ack = judge(sample("adt_a01_14_nomsh.hl7")).split("\r")
    assert ack[0].startswith("MSH|^~\\&|TRIAGE|")
    assert ack[1].split("|")[:3] == ["MSA", "AR", ""]


def test_custom_delimiters_are_used_in_the_ack() -> None:
    raw = b"MSH#!@%*#APP#FAC#RAPP#RFAC#20260101##ADT!A01#C1#P#2.5\rPID#1##123!!!MRN"
    envelope = env.open_envelope(raw)
    assert envelope.header.type_code == "ADT^A01" and envelope.header.control_id == "C1"
    ack = env.build_ack(envelope.header, "AA").split("\r")
    assert ack[0].startswith("MSH#!@%*#RAPP#RFAC#APP#FAC#") and "#ACK!A01!ACK#" in ack[0]
    assert ack[1] == "MSA#AA#C1"


@pytest.mark.parametrize(("msh", "code"), [
    (b"MSH|^~\\&|A|F|R|RF|20260101||ADT^A01||P|2.5", "101"),
    (b"MSH|^~\\&|A|F|R|RF|20260101||ADT^A01|C1|X|2.5", "202"),
    (b"MSH|^~\\&|A|F|R|RF|20260101||ADT^A01|C1|P|3.0", "203"),
    (b"MSH|^~|A|F|R|RF|20260101||ADT^A01|C1|P|2.5", "100"),
    (b"MSH|^^\\&|A|F|R|RF|20260101||ADT^A01|C1|P|2.5", "100"),
])
def test_acceptance_failures_carry_their_hl7_error_code(msh: bytes, code: str) -> None:
    with pytest.raises(env.EnvelopeError) as failure:
        env.open_envelope(msh + b"\rPID|1")
    assert failure.value.code == code


def test_line_endings_and_a_bom_are_normalised() -> None:
    text = env.normalise("\ufeffMSH|^~\\&|A\r\nPID|1\nPV1|1\r\n\r\n")
    assert text == "MSH|^~\\&|A\rPID|1\rPV1|1"


def test_character_sets_utf8_by_default_latin1_as_fallback_and_msh18_when_given() -> None:
    utf8 = "MSH|^~\\&|A|F|R|RF|1||ADT^A01|C|P|2.5\rPID|1||1||MÜLLER".encode()
    assert "MÜLLER" in env.decode(utf8)[0]
    latin = "MSH|^~\\&|A|F|R|RF|1||ADT^A01|C|P|2.5\rPID|1||1||MÜLLER".encode("latin-1")
    assert env.decode(latin) == (latin.decode("latin-1"), "latin-1")
    declared = "MSH|^~\\&|A|F|R|RF|1||ADT^A01|C|P|2.5||||||8859/1\rPID|1||1||Ñ".encode("latin-1")
    assert env.decode(declared)[1] == "latin-1"


def test_error_text_is_escaped_in_the_ack() -> None:
    header = env.read_header("MSH|^~\\&|A|F|R|RF|1||ADT^A01|C1|P|2.5")
    ack = env.build_ack(header, "AE", error=env.EnvelopeError("207", "down | retry ^ later"))
    assert "down \\F\\ retry \\S\\ later" in ack


def test_receivers_before_v25_get_the_error_in_err_1() -> None:
    header = env.read_header("MSH|^~\\&|A|F|R|RF|1||ADT^A01|C1|P|2.4")
    err = env.build_ack(header, "AR", error=env.EnvelopeError("203", "bad", "MSH^1^12")).split("\r")[2].split("|")
    assert err[1] == "MSH^1^12^203&bad&HL70357" and err[3].startswith("203^")
