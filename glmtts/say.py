"""English sentences that the UI can say in the reader's language.

The TTS side speaks English: its errors, request notes, reference-audio checks, batch reasons
and sweep notes are printed by the CLI, returned by the HTTP service and kept in the event store
as they are. A sentence with values is built as a :class:`Say`: a ``str`` (its English text, for
all of those) that also keeps its template and its values, so that the UI rebuilds it from the
catalog's translation of the template (:func:`monitoring.i18n.say`). A sentence without values
is marked with :func:`N_` and looked up as it is. ``scripts/update_catalog.py`` collects both.

Building a longer string from one (``+``, an f-string, ``join``) gives a plain ``str``, which
stays English: pass a :class:`Say` as a value of another :class:`Say` instead.

This module imports nothing (the engines use it, and they import no monitoring).
"""

from __future__ import annotations

from typing import Any


def N_(message: str) -> str:
    """Mark ``message`` for the catalog; it stays English here (the UI translates it)."""
    return message


class Say(str):
    """``template.format(**values)`` that remembers ``template`` and ``values``.

    ``Say("the seed must be between 0 and {top}, not {seed}", top=9, seed=12)`` is the str
    ``"the seed must be between 0 and 9, not 12"`` everywhere, and the UI says it in Chinese.
    A value that is a tuple is a list: its items are joined with ", " (a :class:`Listing`
    says with what), each said, and joined the reader's way, in the UI.
    """

    template: str
    values: dict[str, Any]

    def __new__(cls, template: str, /, **values: Any) -> Say:
        english = {name: getattr(v, "sep", ", ").join(map(str, v)) if isinstance(v, tuple)
                   else v for name, v in values.items()}  # a tuple: a list, each item said
        text = super().__new__(cls, template.format(**english) if values else template)
        text.template = template
        text.values = values
        return text

    def __reduce__(self) -> tuple[Any, ...]:  # pickled (a worker's error) as what it is
        return (_rebuild, (self.template, self.values))


class Listing(tuple):
    """Items of a sentence's list joined with ``sep`` (", " or "; "): as a :class:`Say`
    value, each item is said and the UI joins them the reader's way."""

    sep: str

    def __new__(cls, items: Any = (), sep: str = ", ") -> Listing:
        listing = super().__new__(cls, items)
        listing.sep = sep
        return listing

    def __reduce__(self) -> tuple[Any, ...]:
        return (Listing, (tuple(self), self.sep))


#: The separators a :class:`Listing` joins with, marked for the catalog.
SEPARATORS = (N_(", "), N_("; "))


def _rebuild(template: str, values: dict[str, Any]) -> Say:
    return Say(template, **values)


def message_of(exc: BaseException) -> str:
    """The message ``exc`` was raised with (a :class:`Say` stays one), else ``str(exc)``."""
    args = getattr(exc, "args", ())
    return args[0] if len(args) == 1 and isinstance(args[0], str) else str(exc)


__all__ = ["N_", "Listing", "Say", "message_of"]
