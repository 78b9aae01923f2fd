"""What a ticker symbol may be: one rule, as the server checks it and as the OpenAPI document states it."""

import re
import unicodedata

MAX_SYMBOL_LENGTH = 32
# A symbol has no whitespace, comma, control (Cc) or formatting (Cf) character, nor any other character
# Unicode says to ignore in display (Default_Ignorable_Code_Point): a symbol that looks like another is
# another's. One pattern for the server and the OpenAPI document, which states it as it is; of the Basic
# Multilingual Plane, as a JSON Schema pattern without Unicode mode reads characters. Lone surrogates (only a
# command line can hold them: JSON and URLs cannot) are refused apart, as no regex engine has them.
_IGNORABLE = (0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x2065, 0x3164, 0xFFA0, *range(0x180B, 0x1810))
_IGNORABLE += (*range(0xFE00, 0xFE10), *range(0xFFF0, 0xFFF9))


def _unseen_ranges():
    """The characters of the Basic Multilingual Plane no symbol holds (bar surrogates), as regex class ranges."""
    unseen = [
        code
        for code in range(0x10000)
        if not 0xD800 <= code <= 0xDFFF
        and (unicodedata.category(chr(code)) in ("Cc", "Cf", "Zs", "Zl", "Zp") or code in _IGNORABLE)
    ]
    ranges, start = [], unseen[0]
    for previous, code in zip(unseen, [*unseen[1:], None], strict=True):
        if code != previous + 1:
            ranges.append(f"\\u{start:04x}" if start == previous else f"\\u{start:04x}-\\u{previous:04x}")
            start = code
    return "".join(ranges)


SYMBOL_REGEX = f"[^\\s,{_unseen_ranges()}]{{1,{MAX_SYMBOL_LENGTH}}}"
SYMBOL_PATTERN = re.compile(SYMBOL_REGEX)
SYMBOL_RULE = f"1 to {MAX_SYMBOL_LENGTH} characters, without whitespace, commas, control or invisible characters"
# Lone surrogates, which Python holds for bytes that are not UTF-8 (a command line's); no database takes them.
SURROGATE = re.compile("[\ud800-\udfff]")


def is_valid_symbol(symbol):
    """Whether a ticker symbol is 1..32 characters with no space, comma, control or invisible character."""
    return SYMBOL_PATTERN.fullmatch(symbol) is not None and SURROGATE.search(symbol) is None
