# Types of the compiled scorer (classifier/_native.c).
from collections.abc import Sequence
from typing import Any, final

@final
class Scored:
    @property
    def probs(self) -> list[float]: ...
    @property
    def cols(self) -> list[int]: ...
    @property
    def vals(self) -> list[float]: ...
    def top(self, class_index: int, k: int, /) -> list[tuple[int, float]]: ...

class Scorer:
    def __init__(
        self,
        rows: Any,
        intercept: Sequence[float],
        tf: Sequence[float],
        n_classes: int,
        word_map: dict[str, int],
        pair_map: dict[tuple[str, str], int],
        char_map: dict[str, int],
        contact_map: dict[str, int],
        word_hi: int,
        char_lo: int,
        char_hi: int,
        sound_map: dict[str, int] | None = None,
        sound_ids: Any = None,
        syllables: dict[str, int] | None = None,
        sound_lo: int = 0,
        sound_hi: int = 0,
    ) -> None: ...
    @property
    def n_cols(self) -> int: ...
    def score(self, words: list[str], text: str, contacts: list[str], /) -> Scored: ...
