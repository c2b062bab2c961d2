"""Where a book is filed: the S3 key of its file, from its title (and id).

Object-key rule (``object_key``), also documented in the README:

1. Every ``/``, every ``\\``, every control or invisible format character and every
   noncharacter becomes ``_``: Unicode categories Cc (controls), Cf (format, e.g. bidi
   overrides, BOM, soft hyphen), Zl/Zp (line/paragraph separators) and Cs (lone surrogates), and
   the 66 noncharacters U+FDD0-U+FDEF and U+xFFFE/U+xFFFF in every plane (S3 lists keys in XML,
   which cannot carry U+FFFE or U+FFFF; Unicode reserves all 66 for a program's internal use).
   Exceptions, kept as they are because emoji and scripts need them: the joiners U+200C/U+200D
   and the emoji tag characters U+E0020-U+E007F.
2. Leading ``.`` characters each become ``_`` (so ``..`` -> ``__``, ``.hidden`` -> ``_hidden``).
3. Nothing else changes: no Unicode normalization, case, whitespace or emoji changes.
4. Key = ``<title part>.json``, the title part being the title after steps 1-2.  If that key is
   longer than 1024 UTF-8 bytes, the title part is cut so that, with ``-`` + the first 16 hex
   digits of sha256(original title, UTF-8) appended, the key is 1024 bytes at most.
5. Alternate key, for a different book whose title has the same key:
   ``<title part>~<id part>.json``, at most 1024 UTF-8 bytes.  Each part is the text itself when
   it is *plain*: steps 1-2 leave it unchanged, it does not end in ``-`` and 16 lowercase hex
   digits, it fits (the id in 200 bytes, the title in what the rest of the key leaves) and, for
   the id, it holds no ``~``.  Otherwise the part is the text after steps 1-2 (and, in the id,
   ``~`` -> ``_``), cut to leave room, with ``-`` + the first 16 hex digits of sha256(original
   text, UTF-8) appended.  So the id part never holds a ``~`` (the key's last ``~`` ends the
   title part), a hashed part never equals a plain one, and two different (title, id) pairs
   never share an alternate key, short of a 64-bit hash collision.
6. Cuts fall on UTF-8 character boundaries (never inside a multi-byte character); "original"
   means before step 1, so texts differing only in replaced characters still differ.
7. Deterministic: the same inputs always give the same key.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

MAX_KEY_BYTES = 1024
MAX_ID_PART_BYTES = 200
KEY_SUFFIX = ".json"
ID_SEPARATOR = "~"
_HASH_CHARS = 16

# Categories that are unsafe or invisible in a key: controls break S3's XML listings and
# terminals; format/separator characters make two different-looking keys look the same.
_REPLACED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
# Cf characters that are part of ordinary text: emoji ZWJ sequences (family, professions),
# ZWNJ in Persian/Indic words, and tag sequences of subdivision flags.
_KEPT_FORMAT = frozenset({"\u200c", "\u200d"} | {chr(c) for c in range(0xE0020, 0xE0080)})
# Replaced whatever their category: path separators, and the 66 noncharacters (category Cn,
# like any unassigned code point, so they need naming).
_REPLACED_CHARS = frozenset(
    {"/", "\\"}
    | {chr(c) for c in range(0xFDD0, 0xFDF0)}
    | {chr(plane << 16 | low) for plane in range(17) for low in (0xFFFE, 0xFFFF)}
)
# How a hashed part ends: a plain part must not, or it could equal one.
_HASH_ENDING = re.compile(rf"-[0-9a-f]{{{_HASH_CHARS}}}\Z")


def object_key(title: str, book_id: str | None = None, *, max_bytes: int = MAX_KEY_BYTES
               ) -> str:
    """Return the S3 key of a book file by the rule in the module docstring: the title key, or
    with ``book_id`` the alternate key. `max_bytes` replaces the rule's 1024 when the key follows
    a genre's key prefix (`workers.destinations`): the prefix and the key together stay within
    S3's 1024 bytes."""
    if not title:
        raise ValueError("a book title must not be empty")
    if book_id is None:
        budget = max_bytes - len(KEY_SUFFIX)
        return _fit(_sanitize(title), title, budget) + KEY_SUFFIX
    if not book_id:
        raise ValueError("a book id must not be empty")
    tail = ID_SEPARATOR + _unique_part(book_id, MAX_ID_PART_BYTES, ID_SEPARATOR) + KEY_SUFFIX
    budget = max_bytes - len(tail.encode("utf-8"))
    return _unique_part(title, budget) + tail


def _sanitize(text: str) -> str:
    chars = [
        "_"
        if ch in _REPLACED_CHARS
        or (unicodedata.category(ch) in _REPLACED_CATEGORIES and ch not in _KEPT_FORMAT)
        else ch
        for ch in text
    ]
    # Leading dots would make "." / ".." path segments or hidden files in synced copies.
    for index, ch in enumerate(chars):
        if ch != ".":
            break
        chars[index] = "_"
    return "".join(chars)


def _fit(part: str, original: str, limit: int) -> str:
    """Return ``part`` if it fits in ``limit`` UTF-8 bytes, else `_hashed` ``part``."""
    if len(part.encode("utf-8")) <= limit:
        return part
    return _hashed(part, original, limit)


def _unique_part(text: str, limit: int, reserved: str = "") -> str:
    """A part of an alternate key, one-to-one in ``text``: the text itself when it is plain (the
    rule leaves it alone, it fits, holds no ``reserved`` character and cannot be mistaken for a
    hashed part), else `_hashed`."""
    part = _sanitize(text)
    if (part == text and not any(ch in text for ch in reserved)
            and not _HASH_ENDING.search(text) and len(text.encode("utf-8")) <= limit):
        return text
    for ch in reserved:
        part = part.replace(ch, "_")
    return _hashed(part, text, limit)


def _hashed(part: str, original: str, limit: int) -> str:
    """``part``, cut to leave room, + ``-`` and a hash of ``original``: at most ``limit`` bytes.

    The hash is of the original (unsanitized) text so that two long texts that differ only
    after the cut, or only in replaced characters, still get different keys.
    """
    digest = hashlib.sha256(original.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_CHARS]
    suffix = "-" + digest
    # Dropping the bytes of a partial character keeps the cut on a character boundary.
    head = part.encode("utf-8")[: limit - len(suffix)].decode("utf-8", "ignore")
    return head + suffix
