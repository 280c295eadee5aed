"""Names and skill lists on the edges of the text rules, each with what the document and the
service must both say of it (accepted or refused). Pinned here so that they run on every
build: in memory against the domain's parser and the document's schema
(tests/unit/test_openapi_rules.py) and over HTTP against the real service and the document it
serves (tests/test_fuzz_api.py). A case the fuzzer finds (`make fuzz`) joins this table in
the change that fixes it.
"""

from typing import NamedTuple


class TextCase(NamedTuple):
    why: str
    name: str
    skills: list[str]
    accepted: bool


_PERSIAN = "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"  # "I want", with its ZWNJ

TEXT_CASES = [
    # Found by FUZZ_SEED=54583605510112734629726528714013372317 (issue 23): 101 characters as
    # sent with a leading space, three of them astral; the service counted after trimming.
    TextCase(
        "101 as sent, 100 trimmed",
        " \u00cc\U00104ecb\u011b\u023a\U000f8572\U000137ef\u0107\u0121-\u00ed\u0124" + "*" * 89,
        [],
        False,
    ),
    TextCase(
        "100 as sent",
        "\u00cc\U00104ecb\u011b\u023a\U000f8572\U000137ef\u0107\u0121-\u00ed\u0124" + "*" * 89,
        [],
        True,
    ),
    TextCase("100 astral characters", "\U00013000" * 100, [], True),
    TextCase("101 astral characters", "\U00013000" * 101, [], False),
    TextCase("100 spaces around a letter", " " * 50 + "x" + " " * 49, [], True),
    TextCase("200 as sent, 100 after NFC", "e\u0301" * 100, [], False),
    TextCase("100 as sent, 50 after NFC", "e\u0301" * 50, [], True),
    TextCase("a precomposed letter NFC spells as two", "\u0958", [], False),
    TextCase("its canonical spelling", "\u0915\u093c", [], True),
    TextCase("a newline at the end", "Musashi\n", [], False),  # Python's `$` matched before it
    TextCase("ZWNJ inside a Persian word", _PERSIAN, [], True),
    TextCase("ZWNJ at the end of a Persian word", "\u0645\u06cc\u200c", [], False),
    TextCase("ZWNJ in Latin", "Mu\u200csashi", [], False),
    TextCase("ZWJ between emoji", "\U0001f469\u200d\U0001f4bb", [], True),
    TextCase("ZWJ after an emoji and its skin tone", "\U0001f469\U0001f3fd\u200d\U0001f4bb", [], True),
    TextCase("ZWJ between braille blanks", "\u2800\u200d\u2800", [], False),
    TextCase("ZWNJ between emoji", "\U0001f469\u200c\U0001f4bb", [], False),
    # NFC reorders the two marks (ccc 31 before 230): the joiner's neighbour as sent is the
    # Arabic fatha, after NFC the Latin acute. The rule looks at what is sent.
    TextCase("joiner after marks NFC reorders", "\u0628\u0301\u064e\u200c\u0628", [], True),
    TextCase(
        "skills equal but for case", "Musashi", ["Katana", "kATANA", "Kata\u0301na", "kat\u00e1na"], True
    ),
    TextCase("a skill of 51 as sent", "Musashi", [" " + "k" * 50], False),
    TextCase("a skill of 50 astral characters", "Musashi", ["\U0001f5e1" * 50], True),
]
