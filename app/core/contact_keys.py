"""Match keys: what makes two contacts of one organization look like the same person.

Two contacts are duplicates when their email keys or their phone keys are equal (never across
organizations). The keys are stored on the contact (`email_key`, `phone_key`), written by every
contact write, so finding the duplicates of 100,000 contacts is an index scan, not a pass of
Python over every row.

- **Email**: trimmed, NFKC-normalised and case-folded (`fold`): ` Ann@X.com` and `ann@x.com`
  match.
- **Phone**: the E.164 form (`+14155550134`) when the `phonenumbers` library can read it as a
  possible number: with a `+` and country code always, and without one only in the
  `DEFAULT_PHONE_REGION` (e.g. `US`, none by default). Anything else falls back to its digits
  only (`(415) 555-0134` -> `4155550134` with no region). Extensions are ignored. A phone
  without a digit has no key.

Changing `DEFAULT_PHONE_REGION` changes the keys of numbers written afterwards only.
"""

from __future__ import annotations

import phonenumbers

from app.core.config import get_settings
from app.core.text import fold


def email_key(email: str | None) -> str | None:
    if email is None:
        return None
    return fold(email.strip()) or None


def phone_key(phone: str | None, region: str | None) -> str | None:
    if phone is None:
        return None
    try:
        number = phonenumbers.parse(phone, region)
    except phonenumbers.NumberParseException:
        number = None
    if number is not None and phonenumbers.is_possible_number(number):
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return (
        "".join(character for character in phone if character.isascii() and character.isdigit())
        or None
    )


def match_keys(email: str | None, phone: str | None) -> tuple[str | None, str | None]:
    """The (email, phone) keys of a contact, with the configured default phone region."""
    return email_key(email), phone_key(phone, get_settings().DEFAULT_PHONE_REGION)


def match_key_columns(email: str | None, phone: str | None) -> dict[str, str | None]:
    """`match_keys` as the contact's column values, for writes in bulk."""
    email_key_value, phone_key_value = match_keys(email, phone)
    return {"email_key": email_key_value, "phone_key": phone_key_value}
