from monitoring.units import fmt_bytes as one_formatter
from ui.format import fmt_bytes, fmt_seconds


def test_fmt_bytes() -> None:
    assert fmt_bytes is one_formatter  # the pages, the policy and the CLI write alike
    assert fmt_bytes(None) == "n/a"
    assert fmt_bytes(512) == "512 B"
    assert fmt_bytes(1536) == "1.5 KiB"
    assert fmt_bytes(150 * 2**20) == "150 MiB"
    assert fmt_bytes(62_601_836) == "59.7 MiB"
    assert fmt_bytes(-3 * 2**30, signed=True) == "-3.0 GiB"
    assert fmt_bytes(2**20, signed=True) == "+1.0 MiB"
    assert fmt_bytes(float("nan")) == "n/a"


def test_fmt_seconds() -> None:
    assert fmt_seconds(None) == "n/a"
    assert fmt_seconds(0.0123) == "12 ms"
    assert fmt_seconds(3.2) == "3.2 s"
    assert fmt_seconds(11.84) == "11.8 s"
    assert fmt_seconds(245) == "4 min 05 s"
