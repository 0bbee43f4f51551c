"""The limits on one data row, and the JSON decoding that holds a row to them without ending the file.

Python's own parser raises on an integer of more than 4300 digits (ValueError) and on nesting near 1000
levels (RecursionError), neither of which says where the row ends; here the first is caught as it is read
and the second bounded below, so the row is rejected with its reason and the rows after it still read.
"""

from __future__ import annotations

import json
from typing import Any

# A row may be this long (a 50 MB trajectory is read whole); a longer one is rejected, its rejects record
# holding its first ROW_SAMPLE bytes.
MAX_ROW_BYTES = 64 * 2**20
ROW_SAMPLE = 4096
# Objects and arrays inside one another: a ShareGPT row needs 3; Python's own parser fails near 1000.
MAX_DEPTH = 100
# Python refuses to convert longer integers (sys.get_int_max_str_digits' default).
MAX_INT_DIGITS = 4300
# How far the reader looks for the end of an over-long row (or the next row) before it gives up on the input.
MAX_SKIP_BYTES = 2**28
TOO_DEEP = f"nested more than {MAX_DEPTH} levels deep (objects and arrays inside one another); flatten it"


def decode(text: str, start: int) -> tuple[Any, int, str | None]:
    """(value, end, None) for the JSON value at `start`; (None, end, reason) when it breaks a limit.

    Raises JSONDecodeError for text that is not JSON, and RecursionError, whose position nobody knows,
    for nesting beyond what Python's parser can go.
    """
    long: list[int] = []

    def whole(digits: str) -> int:
        if len(digits.lstrip("-")) > MAX_INT_DIGITS:
            long.append(len(digits))
            return 0
        return int(digits)

    try:
        data, end = json.JSONDecoder(parse_int=whole).raw_decode(text, start)
    except RecursionError:
        raise RecursionError(TOO_DEEP) from None
    if long:
        return None, end, f"an integer of {long[0]:,} digits; the limit is {MAX_INT_DIGITS:,}"
    if depth_over(data, text.count("[", start, end) + text.count("{", start, end)):
        return None, end, TOO_DEEP
    return data, end, None


def depth_over(data: Any, brackets: int) -> bool:
    """Whether `data` nests deeper than MAX_DEPTH; `brackets` (how many the text opens) bounds the depth."""
    if brackets <= MAX_DEPTH:
        return False
    level = [data]
    for _ in range(MAX_DEPTH):
        level = [
            item
            for value in level
            if isinstance(value, (dict, list))
            for item in (value.values() if isinstance(value, dict) else value)
        ]
        if not level:
            return False
    return any(isinstance(value, (dict, list)) for value in level)
