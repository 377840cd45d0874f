from ui.format import fmt_bytes, fmt_seconds


def test_fmt_bytes() -> None:
    assert fmt_bytes(None) == "n/a"
    assert fmt_bytes(512) == "512 B"
    assert fmt_bytes(1536) == "1.50 KiB"
    assert fmt_bytes(150 * 2**20) == "150.0 MiB"
    assert fmt_bytes(-3 * 2**30, signed=True) == "-3.00 GiB"
    assert fmt_bytes(2**20, signed=True) == "+1.00 MiB"
    assert fmt_bytes(float("nan")) == "n/a"


def test_fmt_seconds() -> None:
    assert fmt_seconds(None) == "n/a"
    assert fmt_seconds(0.0123) == "12 ms"
    assert fmt_seconds(3.2) == "3.20 s"
