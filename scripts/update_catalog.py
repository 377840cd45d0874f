"""Collect the app's messages and rewrite the Chinese catalog around them.

    .venv/bin/python scripts/update_catalog.py          # rewrite locale/zh_CN/.../glmtts.po
    .venv/bin/python scripts/update_catalog.py --check  # exit 1 when it is not up to date

Every literal passed to ``_()``, ``N_()``, ``ngettext()`` or ``Say()`` (the TTS side's English
sentences with values, see :mod:`glmtts.say`) in pages/, ui/, monitoring/, glmtts/, service/ and
streamlit_app.py is a message (found with :mod:`ast`, so only literals count: ``_(variable)``
translates a message marked elsewhere with ``N_``). The file keeps the
translations it has, gains new messages with an empty ``msgstr`` for the translator, and loses
messages no longer in the source. The app reads the ``.po`` itself (see
:mod:`monitoring.i18n`): there is nothing to compile.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from monitoring.i18n import parse_po, po_path  # noqa: E402

SOURCES = ("streamlit_app.py", "pages", "ui", "monitoring", "glmtts", "service")
MARKERS = {"_": 1, "N_": 1, "ngettext": 2, "Say": 1}
HEADER = (
    'msgid ""\nmsgstr ""\n'
    '"Project-Id-Version: glmtts\\n"\n'
    '"Language: zh_CN\\n"\n'
    '"MIME-Version: 1.0\\n"\n'
    '"Content-Type: text/plain; charset=UTF-8\\n"\n'
    '"Content-Transfer-Encoding: 8bit\\n"\n'
    '"Plural-Forms: nplurals=1; plural=0;\\n"\n'
)

Message = str | tuple[str, str]


def source_files(root: Path = ROOT) -> list[Path]:
    files: list[Path] = []
    for name in SOURCES:
        path = root / name
        files.extend(sorted(path.rglob("*.py")) if path.is_dir() else [path])
    return files


def collect(root: Path = ROOT) -> dict[Message, list[str]]:
    """Every message in the source, in order of first appearance, with where it appears."""
    found: dict[Message, list[str]] = {}
    for path in source_files(root):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in sorted(ast.walk(tree), key=lambda n: (getattr(n, "lineno", 0),
                                                         getattr(n, "col_offset", 0))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id in MARKERS):
                continue
            literals = node.args[:MARKERS[node.func.id]]
            if not literals or not all(isinstance(a, ast.Constant) and isinstance(a.value, str)
                                       for a in literals):
                continue
            key: Message = (literals[0].value if len(literals) == 1
                            else (literals[0].value, literals[1].value))
            where = found.setdefault(key, [])
            name = str(path.relative_to(root))
            if name not in where:
                where.append(name)
    return found


def _quote(text: str) -> str:
    body = (text.replace("\\", "\\\\").replace('"', '\\"').replace("\t", "\\t")
            .replace("\n", "\\n"))
    return f'"{body}"'


def render(messages: dict[Message, list[str]], known: dict[Message, list[str]]) -> str:
    out = [HEADER]
    for key, where in messages.items():
        forms = known.get(key) or [""]
        out.append("")
        out.append("#: " + " ".join(where))
        if isinstance(key, tuple):
            out.append(f"msgid {_quote(key[0])}")
            out.append(f"msgid_plural {_quote(key[1])}")
            out.append(f"msgstr[0] {_quote(forms[0])}")
        else:
            out.append(f"msgid {_quote(key)}")
            out.append(f"msgstr {_quote(forms[0])}")
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    path = po_path("zh")
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    new = render(collect(), parse_po(old) if old else {})
    if "--check" in argv:
        if new != old:
            print(f"{path} is not up to date: run scripts/update_catalog.py", file=sys.stderr)
            return 1
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new, encoding="utf-8")
    print(f"{path}: {len(collect())} messages")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
