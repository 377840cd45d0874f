"""The message catalog: complete, in step with the source, placeholders intact, and read by
Python's own gettext (monitoring.i18n compiles the .po in memory)."""

from __future__ import annotations

import ast
import importlib.util
import re
import string
from pathlib import Path

import pytest

from monitoring import i18n
from monitoring.i18n import _, ngettext, parse_po, po_path, speaking

ROOT = Path(__file__).resolve().parents[2]
HAN = re.compile(r"[\u4e00-\u9fff]")
#: Words a translation keeps as they are (names, units).
NAMES = {"GPUs", "NVML", "Python", "torch", "MiB"}


def _update_catalog():
    spec = importlib.util.spec_from_file_location("update_catalog",
                                                  ROOT / "scripts" / "update_catalog.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fields(text: str) -> set[str]:
    return {name for _lit, name, _spec, _conv in string.Formatter().parse(text) if name}


def test_the_po_file_lists_exactly_the_messages_of_the_source() -> None:
    catalog = _update_catalog()
    text = po_path("zh").read_text(encoding="utf-8")
    assert catalog.render(catalog.collect(), parse_po(text)) == text, (
        "run scripts/update_catalog.py and translate the new messages")


def test_every_message_has_a_chinese_translation_with_the_same_placeholders() -> None:
    messages = _update_catalog().collect()
    entries = parse_po(po_path("zh").read_text(encoding="utf-8"))
    assert len(messages) > 300  # pages, sidebar, cards, policy, engines' reasons
    for key, where in messages.items():
        forms = entries.get(key)
        assert forms and all(f.strip() for f in forms), f"untranslated {key!r} ({where})"
        sources = key if isinstance(key, tuple) else (key,)
        for form in forms:
            for source in sources:
                assert _fields(form) == _fields(source), (key, form)
            form.format(**{name: "x" for name in _fields(form)})  # no stray braces
            # words in English become Chinese (names and units may stay: "GPU（NVML）")
            words = re.findall(r"(?<![{\w])[A-Za-z]+(?![\w}])", re.sub(r"\{\w+\}", "", key
                               if isinstance(key, str) else key[0]))
            assert HAN.search(form) or set(words) <= NAMES, (key, form)


def test_gettext_reads_the_compiled_catalog() -> None:
    with speaking("zh-CN"):
        assert _("Synthesize") == "合成"
        assert _("Disabled: {reason}.").format(reason="x") == "已禁用：x。"
        assert ngettext("{count} earlier synthesis", "{count} earlier syntheses", 3).format(
            count=3) == "之前的 3 次合成"
        assert _("a message the catalog does not have") == "a message the catalog does not have"
    with speaking("en"):
        assert _("Synthesize") == "Synthesize"
        assert ngettext("{count} earlier synthesis", "{count} earlier syntheses", 1) == (
            "{count} earlier synthesis")
    # the .mo written in memory is what msgfmt writes: GNU gettext's magic, sorted keys
    mo = i18n.compile_mo({"b": ["乙"], "a": ["甲"], "untranslated": [""]})
    assert mo[:4] == b"\xde\x12\x04\x95" and int.from_bytes(mo[8:12], "little") == 2


@pytest.mark.parametrize(("tag", "lang"), [
    ("zh-CN", "zh"), ("zh_CN.UTF-8", "zh"), ("zh-Hans", "zh"), ("zh-TW", "zh"),
    ("en-US", "en"), ("fr-FR", "en"), ("", "en"), (None, "en"),
    ("fr-FR, zh;q=0.8, en;q=0.5", "zh"), ("en-GB,en;q=0.9,zh-CN;q=0.8", "en"),
    ("zh;q=0.3, en;q=0.9", "en"), ("de, *;q=0.1", "en"),
])
def test_language_tags(tag, lang) -> None:
    assert i18n.normalize(tag) == lang


def test_the_policy_speaks_the_language_of_its_context() -> None:
    from monitoring.policy.recommendation import Reason, Recommendation

    with speaking("zh"):
        reason = Reason("switch", "light", "advised",
                        _("{what}. A light cleanup returns what the old one cached.").format(
                            what="x"))
    rec = Recommendation("light", "advised", (reason,), "advise")
    with speaking("zh"):
        assert rec.summary == "建议轻度清理：x。轻度清理可归还旧配置缓存的内存。"
    assert rec.summary.startswith("light cleanup advised: ")


def _calls(name: str):
    """Every call of ``name`` in the catalog's sources, with where it is."""
    catalog = _update_catalog()
    for path in catalog.source_files():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == name:
                yield f"{path.relative_to(ROOT)}:{node.lineno}", node


def test_every_sentence_of_the_tts_side_is_in_the_catalog() -> None:
    """The TTS side's sentences with values (``Say``) are found by their literal template: a
    template built at run time would never be translated."""
    calls = [(where, node) for where, node in _calls("Say")
             if not where.startswith(("glmtts/say.py", "monitoring/i18n.py"))]  # unpickling
    assert len(calls) > 100  # errors, request notes, reference audio, batch, sweep
    for where, node in calls:
        first = node.args[0] if node.args else None
        assert isinstance(first, ast.Constant) and isinstance(first.value, str), where


def test_the_tts_side_speaks_english_and_the_ui_says_it_in_chinese(tmp_path) -> None:
    """Errors and notes stay English as ``str`` (CLI, service JSON, event store) and are said
    in the reader's language by ``say``: nested sentences, lists and exceptions included."""
    from glmtts.batch.tasks import parse_tasks
    from glmtts.errors import InvalidRequestError
    from glmtts.reference_audio import ReferenceAudioError, load_reference
    from glmtts.request import SynthesisRequest
    from monitoring.i18n import say

    with pytest.raises(InvalidRequestError) as info:
        SynthesisRequest(text="x" * 6000, seed=1)
    assert str(info.value) == ("the text has 6,000 characters; the limit is 5,000 per request: "
                               "split it or use batch synthesis")
    with speaking("zh"):
        assert say(info.value) == ("文本有 6,000 个字符，每个请求的上限是 5,000：请拆分文本或使用"
                                   "批量合成")
        assert say(SynthesisRequest(text="a\x01b").notes[0]) == "已删除 1 个控制字符"
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(ReferenceAudioError) as ref:
        load_reference(empty)
    assert str(ref.value) == "the reference recording empty.wav is empty (0 bytes)"
    with speaking("zh"):
        assert say(ref.value) == "参考录音 empty.wav 是空的（0 字节）"
    # a batch line with two problems: each said, joined the reader's way
    plan = parse_tasks(b'{"uttid": 5.5, "syn_text": ""}\n', folders=[tmp_path])
    (bad,) = plan.invalid
    assert bad.reason == ("uttid must be a string or a whole number, not a number; syn_text: "
                          "the text is empty: type something to speak")
    with speaking("zh"):
        assert say(bad.reason) == ("uttid 必须是字符串或整数，而不是数字；"
                                   "syn_text：文本为空：请输入要朗读的内容")
    assert say(bad.reason) == bad.reason  # in English, as it was built
    assert say(None) == "" and say("not in the catalog") == "not in the catalog"
