"""Unicode-aware text folding for case-insensitive search on every database."""

from __future__ import annotations

import unicodedata


def fold(text: str) -> str:
    """NFKC + casefold: `MÜLLER`, `Müller` and `müller` fold alike, as do `ИВАН` and `иван`."""
    return unicodedata.normalize("NFKC", text).casefold()


def fold_fields(*values: str | None) -> str:
    return fold("\n".join(value for value in values if value))
