"""Counts in words: "1 byte", "2 bytes"; every message that counts something says it so."""


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """`n` and `noun` in the singular for 1 (and -1), in the plural (`plural`, by default noun + "s")
    for any other count: counted(1, "byte") == "1 byte", counted(0, "byte") == "0 bytes"."""
    return f"{n} {noun if abs(n) == 1 else plural or noun + 's'}"
