"""The sidebar's language switch: the whole app in Simplified Chinese, and back, in a real
AppTest run (real engine, store and policy)."""

from __future__ import annotations

import re

HAN = re.compile(r"[\u4e00-\u9fff]")


def _policy_box(at) -> str:
    boxes = [*at.sidebar.info, *at.sidebar.warning, *at.sidebar.error]
    assert len(boxes) == 1, [b.value for b in boxes]
    return boxes[0].value


def test_the_app_switches_to_chinese_and_back(app) -> None:
    # AppTest has no browser locale: English, as for any browser that is not Chinese
    assert app.selectbox(key="ui_language").value == "en"
    assert app.title[0].value == "🔊 Synthesize"
    english_advice = _policy_box(app)
    assert not HAN.search(english_advice)

    app.selectbox(key="ui_language").set_value("zh").run()
    assert not app.exception, app.exception
    assert app.title[0].value == "🔊 合成"
    assert app.button(key="synthesize").label == "合成"
    assert app.text_area(key="text").label == "要朗读的文本"
    assert app.sidebar.radio(key="cleanup_level").label == "清理"
    assert app.sidebar.radio(key="policy_mode").label == "清理策略"
    assert app.sidebar.button(key="cleanup_button").label == "🧹 清理内存"
    cleanup_lines = [c.value for c in app.sidebar.caption if "**light**" not in c.value]
    assert any("**轻度**：" in c for c in cleanup_lines), cleanup_lines
    advice = _policy_box(app)  # the policy's own sentence, not only its frame
    assert advice.startswith("无需清理：没有 piper 之前的合成记录"), advice

    app.text_area(key="text").set_value("Hello there.")
    app.button(key="synthesize").click().run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    metrics = {m.label: m.value for m in app.metric}
    assert "主机 RSS" in metrics and "实时率" in metrics
    app.sidebar.button(key="cleanup_button").click().run()
    (message,) = [s.value for s in app.sidebar.success]
    assert message.startswith("完全清理释放了 主机 RSS"), message
    assert HAN.search(_policy_box(app))

    app.selectbox(key="ui_language").set_value("en").run()
    assert app.title[0].value == "🔊 Synthesize"
    assert app.button(key="synthesize").label == "Synthesize"
    assert app.sidebar.button(key="cleanup_button").label == "🧹 Clear memory"
    assert not HAN.search(_policy_box(app))
    assert app.text_area(key="text").value == "Hello there."  # the form is kept


def test_the_choice_holds_on_every_page(app) -> None:
    app.selectbox(key="ui_language").set_value("zh").run()
    for page, title in [("pages/monitor.py", "📈 监控"), ("pages/history.py", "🗂️ 历史"),
                        ("pages/batch.py", "📦 批量"), ("pages/tune.py", "🎛️ 调优")]:
        app.switch_page(page).run()
        assert not app.exception, (page, app.exception)
        assert app.title[0].value == title
        assert app.selectbox(key="ui_language").value == "zh"


def test_errors_and_notes_of_the_tts_side_are_said_in_chinese(app) -> None:
    """The request's refusal and its clean-up note are built in English by glmtts (the CLI
    and the service return them as they are); the page says them in the chosen language."""
    app.selectbox(key="ui_language").set_value("zh").run()
    app.text_area(key="text").set_value("  !!! 🎉 ")
    app.button(key="synthesize").click().run()
    assert not app.exception
    assert [e.value for e in app.error] == [
        "没有可朗读的内容：文本中没有字母或数字（只有标点、符号或表情）"]
    app.text_area(key="text").set_value("Hello\x07 there.")
    app.button(key="synthesize").click().run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    assert "已删除 1 个控制字符" in [i.value for i in app.info]
