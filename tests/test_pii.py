from __future__ import annotations

import re

import pytest

from workbench.clean import pii


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("mail alice.smith@gmail.com now", "mail <EMAIL> now"),
        ("电话13812345678联系", "电话<PHONE>联系"),
        ("call +86 138-1234-5678 today", "call <PHONE> today"),
        ("call (415) 555-0132 please", "call <PHONE> please"),
        ("server at 8.8.8.8 is down", "server at <IP> is down"),
        ("身份证号11010519491231002X", "身份证号<ID>"),
        ("SSN 123-45-6789.", "SSN <ID>."),
        ("card 4111 1111 1111 1111 ok", "card <ID> ok"),
    ],
)
def test_personal_data_is_replaced_by_a_placeholder(value: str, expected: str) -> None:
    assert pii.redact(value)[0] == expected


@pytest.mark.parametrize(
    "value",
    [
        "write to user@example.com in the docs",  # reserved example domain
        "bind to 127.0.0.1 or 192.168.1.10",  # loopback and private ranges identify nobody
        "version 1.02.3.4 released, netmask 255.255.255.0",  # not an address of anybody
        "91-33=58 and 78+48=126",  # arithmetic
        "the id 110105194912310021 has a wrong check digit",
        "order 4111 1111 1111 1112 fails Luhn",
        "timestamp 1699999999123",
    ],
)
def test_look_alikes_are_not_personal_data(value: str) -> None:
    assert pii.redact(value) == (value, [])


def test_every_exact_match_is_also_a_vectorised_candidate() -> None:
    candidate = re.compile(pii.CANDIDATE_PATTERN)
    for text in [
        "a.b@gmail.com",
        "13812345678",
        "(415) 555-0132",
        "+44 20 7946 0958",
        "8.8.8.8",
        "11010519491231002X",
        "123-45-6789",
        "4111111111111111",
    ]:
        assert pii.find(text), text
        assert candidate.search(text), text


def test_kinds_can_be_limited() -> None:
    text = "alice@gmail.com 13812345678"
    assert pii.redact(text, kinds=("email",)) == ("<EMAIL> 13812345678", ["email"])
