"""The one message catalog of the app: English source strings, Simplified Chinese translations.

Every user-facing sentence (the pages, the sidebar, the policy's reasons, error messages) is
written in English and wrapped in :func:`_` (or :func:`ngettext` where a count decides the
form); numbers go in as named placeholders (``_("{size} free").format(size=...)``) so that the
translator sees them. The translations live in ``locale/zh_CN/LC_MESSAGES/glmtts.po``, the
source file translators edit; it is compiled here, in memory, to the GNU ``.mo`` format and
read by Python's standard :class:`gettext.GNUTranslations` (no ``msgfmt`` needed, nothing
binary in the repository).

The language is per context (a :class:`contextvars.ContextVar`): the Streamlit frame sets it for
each script run from the sidebar's choice, the HTTP service for each request from its
``Accept-Language``; anything else (the CLI) follows ``$LANGUAGE``/``$LC_ALL``/``$LANG`` at
import, English by default. In English :func:`_` returns its argument unchanged.

This module imports nothing outside the standard library (monitoring stays light and knows
nothing of Streamlit or of the application that uses it).
"""

from __future__ import annotations

import ast
import gettext
import io
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cache
from pathlib import Path

#: Language codes the app speaks, with their names as their speakers write them.
LANGUAGES: dict[str, str] = {"en": "English", "zh": "简体中文"}
DEFAULT = "en"
DOMAIN = "glmtts"
#: Where the ``.po`` sources live (``<root>/locale/<ll_CC>/LC_MESSAGES/glmtts.po``).
LOCALE_DIR = Path(__file__).resolve().parents[1] / "locale"
_FOLDERS = {"zh": "zh_CN"}


def normalize(tag: str | None) -> str:
    """The supported language of a locale tag or ``Accept-Language`` header (``zh-CN``,
    ``zh_CN.UTF-8``, ``zh-Hans;q=0.9, en``), English for anything else.

    The first supported language in the header's order of preference wins.
    """
    if not tag:
        return DEFAULT
    ranked = []
    for position, part in enumerate(tag.split(",")):
        code, _sep, params = part.strip().partition(";")
        weight = 1.0
        if params.strip().startswith("q="):
            try:
                weight = float(params.strip()[2:])
            except ValueError:
                weight = 0.0
        ranked.append((-weight, position, code.strip().lower().replace("_", "-")))
    for _weight, _position, code in sorted(ranked):
        base = code.split("-")[0].split(".")[0]
        if base in LANGUAGES:
            return base
    return DEFAULT


def _environment_language() -> str:
    for name in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"):
        value = os.environ.get(name)
        if value:
            return normalize(value.split(":")[0])
    return DEFAULT


_ENVIRONMENT = _environment_language()
_current: ContextVar[str] = ContextVar("glmtts_language", default=_ENVIRONMENT)


def language() -> str:
    """The language of the current context (``en`` or ``zh``)."""
    return _current.get()


def set_language(tag: str | None) -> str:
    """Speak ``tag`` (normalized, see :func:`normalize`) in this context from now on; return
    the language chosen."""
    lang = normalize(tag)
    _current.set(lang)
    return lang


@contextmanager
def speaking(tag: str | None) -> Iterator[str]:
    """Speak ``tag`` inside the ``with`` block only."""
    token = _current.set(normalize(tag))
    try:
        yield _current.get()
    finally:
        _current.reset(token)


# ----------------------------------------------------------------------------- the catalog


def po_path(lang: str) -> Path:
    return LOCALE_DIR / _FOLDERS[lang] / "LC_MESSAGES" / f"{DOMAIN}.po"


def parse_po(text: str) -> dict[str | tuple[str, str], list[str]]:
    """The entries of a ``.po`` file: msgid (or (msgid, msgid_plural)) -> its msgstr forms.

    Handles what this project's file uses: comments, multi-line strings, plural forms, C
    escapes; fuzzy entries are left out, as ``msgfmt`` does.
    """
    entries: dict[str | tuple[str, str], list[str]] = {}
    fields: dict[str, str] = {}
    last: str | None = None
    fuzzy = False

    def finish() -> None:
        nonlocal fields, fuzzy
        if "msgid" in fields and not fuzzy:
            forms = [fields[k] for k in sorted(fields, key=_form_order)
                     if k.startswith("msgstr")]
            key = ((fields["msgid"], fields["msgid_plural"]) if "msgid_plural" in fields
                   else fields["msgid"])
            entries[key] = forms
        fields, fuzzy = {}, False

    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            finish()
            last = None
        elif line.startswith("#"):
            if line.startswith("#,") and "fuzzy" in line:
                if "msgid" in fields:
                    finish()
                fuzzy = True
        elif line.startswith('"'):
            if last is None:
                raise ValueError(f"a string outside an entry: {raw!r}")
            fields[last] += _unquote(line)
        else:
            keyword, _sep, rest = line.partition(" ")
            if keyword == "msgid" and "msgid" in fields:
                finish()
            fields[keyword] = _unquote(rest.strip())
            last = keyword
    finish()
    return entries


def _form_order(key: str) -> int:
    return int(key[7:-1]) if key.startswith("msgstr[") else 0


def _unquote(quoted: str) -> str:
    if not (quoted.startswith('"') and quoted.endswith('"')):
        raise ValueError(f"not a quoted string: {quoted!r}")
    return ast.literal_eval(quoted)


def compile_mo(entries: dict[str | tuple[str, str], list[str]]) -> bytes:
    """The GNU ``.mo`` bytes of ``entries`` (untranslated ones left out), as ``msgfmt`` writes
    them without a hash table."""
    pairs = []
    for key, forms in entries.items():
        if not any(forms):
            continue
        original = "\0".join(key) if isinstance(key, tuple) else key
        pairs.append((original.encode(), "\0".join(forms).encode()))
    pairs.sort()
    count = len(pairs)
    originals_at = 7 * 4
    translations_at = originals_at + 8 * count
    data_at = translations_at + 8 * count
    tables, blob = [[], []], b""
    for column in (0, 1):
        for pair in pairs:
            tables[column].append((len(pair[column]), data_at + len(blob)))
            blob += pair[column] + b"\0"
    header = struct.pack("<7I", 0x950412DE, 0, count, originals_at, translations_at, 0, 0)
    table = b"".join(struct.pack("<2I", *entry) for column in tables for entry in column)
    return header + table + blob


@cache
def translations(lang: str) -> gettext.NullTranslations:
    """The catalog of ``lang`` (English: no translation)."""
    if lang not in _FOLDERS:
        return gettext.NullTranslations()
    mo = compile_mo(parse_po(po_path(lang).read_text(encoding="utf-8")))
    return gettext.GNUTranslations(io.BytesIO(mo))


def _(message: str) -> str:
    """``message`` in the current language."""
    lang = _current.get()
    return message if lang == DEFAULT else translations(lang).gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    """The form of ``singular``/``plural`` for ``n``, in the current language."""
    lang = _current.get()
    if lang == DEFAULT:
        return singular if n == 1 else plural
    return translations(lang).ngettext(singular, plural, n)


def N_(message: str) -> str:
    """Mark ``message`` for the catalog without translating it now (constants translated
    where they are shown, with :func:`_`)."""
    return message


class Say(str):
    """An English sentence that keeps its template and values, for the monitoring side (the
    same as ``glmtts.say.Say``, which the engines use without importing monitoring): ``str``
    everywhere, said in the reader's language by :func:`say`."""

    template: str
    values: dict[str, object]

    def __new__(cls, template: str, /, **values: object) -> Say:
        text = super().__new__(cls, template.format(**values) if values else template)
        text.template, text.values = template, values
        return text

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (self.template, self.values))


def _rebuild(template: str, values: dict[str, object]) -> Say:
    return Say(template, **values)


def say(text: object) -> str:
    """``text`` in the current language, whatever layer built it.

    - a sentence that keeps its English template and values (:class:`Say`, or the same kind
      from the application: its errors and notes) is rebuilt from the template's translation,
      each value said the same way (a reason inside a reason is translated too; a tuple is a
      list, its items joined the reader's way);
    - an exception is said by the message it was raised with;
    - a message marked with ``N_`` is looked up; any other text comes back as it is.
    """
    if isinstance(text, BaseException):
        args = text.args
        text = args[0] if len(args) == 1 and isinstance(args[0], str) else str(text)
    if text is None:
        return ""
    template, values = getattr(text, "template", None), getattr(text, "values", None)
    if not isinstance(template, str) or not isinstance(values, dict):
        return _(text) if isinstance(text, str) else str(text)
    if not values:
        return _(template)
    said = {name: _(getattr(value, "sep", ", ")).join(say(v) for v in value)
            if isinstance(value, tuple)
            else say(value) if isinstance(value, (str, BaseException)) else value
            for name, value in values.items()}
    return _(template).format(**said)
