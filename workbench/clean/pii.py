"""Personal data: e-mail addresses, phone numbers (incl. Chinese mobiles), IP addresses and ID-like numbers.

Detection runs in two steps. A loose vectorised pattern (`CANDIDATE_PATTERN`) finds the few records that may
hold personal data; only those go through the exact Python check here, which validates what a regex cannot:
Luhn checksums for card numbers, the ISO 7064 check digit of Chinese resident IDs, reserved example domains,
and loopback/private/documentation IP ranges that identify nobody.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import Literal

PiiKind = Literal["email", "phone", "ip", "id"]
ALL_KINDS: tuple[PiiKind, ...] = ("email", "phone", "ip", "id")

PLACEHOLDERS: dict[PiiKind, str] = {"email": "<EMAIL>", "phone": "<PHONE>", "ip": "<IP>", "id": "<ID>"}

# Loose, lookaround-free pattern for polars: a superset of what the exact patterns below accept.
CANDIDATE_PATTERN = (
    r"[\w.+-]+@[\w-]+\.[\w.-]+"  # e-mail
    r"|\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}"  # IPv4
    r"|1[3-9]\d{9}"  # Chinese mobile
    r"|\d{3}\)?[\s.-]\d{3}[\s.-]\d{4}"  # North American phone
    r"|\+\d{1,3}[\s-]?\(?\d"  # international prefix
    r"|\d{3}-\d{2}-\d{4}"  # US SSN
    r"|\d{17}[\dXx]"  # Chinese resident ID
    r"|(?:\d[ -]?){13,19}"  # card numbers
)

_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@([\w-]+(?:\.[\w-]+)+)")
_IPV4 = re.compile(r"(?<![\d.])(\d{1,3}(?:\.\d{1,3}){3})(?![\d.]*\d)")
_CN_MOBILE = re.compile(r"(?<!\d)(?:\+?86[\s-]?)?1[3-9]\d(?:[\s-]?\d{4}){2}(?!\d)")
_PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{3}\)\s?|\d{3}[\s.-])\d{3}[\s.-]\d{4}(?!\d)"
    r"|(?<![\w+])\+\d{1,3}[\s.-]?\d{1,4}(?:[\s.-]?\d{2,4}){2,4}(?!\d)"
)
_SSN = re.compile(r"(?<!\d)(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?!\d)")
_CN_ID = re.compile(r"(?<![\dA-Za-z])\d{17}[\dXx](?![\dA-Za-z])")
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")

# RFC 2606 / RFC 6761 names reserved for examples, and hosts that are not anybody's mailbox.
_EXAMPLE_DOMAINS = re.compile(r"(?:^|\.)(?:example\.(?:com|org|net)|example|test|invalid|localhost)$", re.I)


def _public_ip(text: str) -> bool:
    try:
        ip = ipaddress.IPv4Address(text)
    except ValueError:
        return False  # 999.1.1.1 or a version number like 1.02.3.4
    return ip.is_global


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


_CN_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def _cn_id_valid(text: str) -> bool:
    body, check = text[:17], text[17].upper()
    total = sum(int(d) * w for d, w in zip(body, _CN_ID_WEIGHTS, strict=True))
    if "10X98765432"[total % 11] != check:
        return False
    month, day = int(text[10:12]), int(text[12:14])
    return 1 <= month <= 12 and 1 <= day <= 31


def _card_valid(text: str) -> bool:
    digits = re.sub(r"[ -]", "", text)
    return 13 <= len(digits) <= 19 and len(set(digits)) > 1 and _luhn(digits)


Finder = Callable[[str], list[tuple[int, int]]]


def _spans(pattern: re.Pattern[str], keep: Callable[[re.Match[str]], bool]) -> Finder:
    def find(text: str) -> list[tuple[int, int]]:
        return [m.span() for m in pattern.finditer(text) if keep(m)]

    return find


# In priority order: where matches overlap, the earlier finder wins (an 18-digit ID holds an 11-digit run
# that looks like a mobile number; a phone number with a country code can pass the Luhn check by chance).
_FINDERS: list[tuple[PiiKind, Finder]] = [
    ("email", _spans(_EMAIL, lambda m: not _EXAMPLE_DOMAINS.search(m.group(1)))),
    ("ip", _spans(_IPV4, lambda m: _public_ip(m.group(1)))),
    ("id", _spans(_CN_ID, lambda m: _cn_id_valid(m.group(0)))),
    ("phone", _spans(_CN_MOBILE, lambda m: True)),
    ("phone", _spans(_PHONE, lambda m: True)),
    ("id", _spans(_SSN, lambda m: True)),
    ("id", _spans(_CARD, lambda m: _card_valid(m.group(0)))),
]


def find(text: str, kinds: tuple[PiiKind, ...] = ALL_KINDS) -> list[tuple[PiiKind, int, int]]:
    """All personal-data spans in `text`, earliest first; overlapping matches keep the higher-priority one."""
    found: list[tuple[PiiKind, int, int]] = []
    for kind, finder in _FINDERS:
        if kind not in kinds:
            continue
        for start, end in finder(text):
            if all(end <= s or start >= e for _, s, e in found):
                found.append((kind, start, end))
    return sorted(found, key=lambda f: f[1])


def redact(text: str, kinds: tuple[PiiKind, ...] = ALL_KINDS) -> tuple[str, list[PiiKind]]:
    """Replace each personal-data span by its placeholder (`<EMAIL>`, ...); return the text and the kinds."""
    spans = find(text, kinds)
    if not spans:
        return text, []
    parts: list[str] = []
    pos = 0
    for kind, start, end in spans:
        parts.append(text[pos:start])
        parts.append(PLACEHOLDERS[kind])
        pos = end
    parts.append(text[pos:])
    return "".join(parts), [k for k, _, _ in spans]
