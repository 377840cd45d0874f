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
