"""Texts shared by the benchmarks: short, medium and about 600 characters."""

SHORT = "Hello there, how are you doing today?"
MEDIUM = ("The quick brown fox jumps over the lazy dog while the old man watches from his "
          "porch, smiling at the morning sun.")
LONG = (
    "In the early years of the twentieth century, the small town by the river became a busy "
    "center of trade. Merchants arrived every week with cloth, salt and iron tools, and the "
    "market square filled with voices from dawn until dusk. The old bridge, built of grey "
    "stone, carried carts and cattle across the water, and children gathered there in the "
    "evenings to watch the boats drift slowly toward the sea. When the railway finally "
    "reached the valley, everything changed: the merchants no longer needed the river, the "
    "boats grew fewer each season, and the bridge became a quiet place where people walked "
    "to remember how things used to be."
)
TEXTS = {"short": SHORT, "medium": MEDIUM, "long": LONG}


def soak_texts(count: int, shortest: int = 10, longest: int = 400, seed: int = 17,
               skew: float = 1.0) -> list[str]:
    """``count`` deterministic texts of ``shortest``-``longest`` characters, cut at word
    boundaries from the texts above, each ending with a full stop. Lengths are
    ``shortest * (longest / shortest) ** (u ** skew)`` for uniform ``u``: log-uniform for
    ``skew`` 1 (mean about 110 characters), more short texts for a larger ``skew``."""
    import random

    words = " ".join([LONG, MEDIUM, SHORT]).split()
    rng = random.Random(seed)
    texts = []
    for _ in range(count):
        target = round(shortest * (longest / shortest) ** (rng.random() ** skew))
        start = rng.randrange(len(words))
        picked: list[str] = []
        i = start
        while len(" ".join(picked)) + 1 < target:
            picked.append(words[i % len(words)])
            i += 1
        text = " ".join(picked)[: longest - 1].rstrip(" ,.:")
        texts.append(text[0].upper() + text[1:] + ".")
    return texts
