"""Text normalization against evasive spelling, with a map back to the original text.

Steps, in order (tables in classifier/data/normalize.toml):
 1. per character: NFKC (and the styled digits and letters it leaves, ❶ ➀ ⓵ -> 1, 🅐 🅰 -> a),
    lowercase, OpenCC t2s, emoji used as words -> words, Greek and Cyrillic look-alikes of Latin
    letters -> the letters (ν -> v), Latin letters with diacritics -> the bare letters (ī -> i);
    format, control, surrogate and combining characters dropped; any whitespace -> " ". Iterated
    to a fixpoint per character and cached.
    t2s is applied one character at a time: the length is kept by construction and the result
    cannot depend on neighbours (at the price of phrase-level conversions such as 乾隆, which
    become 干隆).
 2. chat-app emoticon codes pasted as text ("/玫瑰", "[em]e400105[/em]", "[捂脸]") -> a space;
    separator runs between two Han characters removed ("冰 . 毒" -> "冰毒"); other whitespace
    runs -> one space.
 3. runs of >= 5 number-like characters with Chinese digits -> ASCII digits; a domain's dot
    spelled out ("68yl点com") -> ".".
 4. contact cues -> canonical tokens (微信, qq, 电报); ordinary-word cues only in context.
 5. pinyin spellings of lexicon terms -> the terms.
Steps 4-5 make new tokens, which changes their neighbours' context (a separator now between
two Han characters, a cue now next to an id), so 2-5 repeat until nothing changes; ends are
stripped last. That loop is what makes normalization idempotent.

Every step is a regex substitution whose callback is shared by the fast path (`normalize_text`,
plain `re.sub`) and the offset-keeping path (`normalize`), so the two cannot drift apart. When
every character maps to exactly one and no step changes anything (most messages), the offset
map is the identity and the offset-keeping path is skipped; otherwise it replays only the steps
the fast path saw match.
"""

from __future__ import annotations

import re
import threading
import tomllib
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

DATA_PATH = Path(__file__).parent / "data" / "normalize.toml"

# Han ideographs (CJK unified + extension A..H + compatibility, which NFKC folds) and 〇.
HAN = "\u3007\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
_HAN_RE = re.compile(f"[{HAN}]")
_DROP_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Mn", "Me"})
_ASCII_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
_ASCII_ID_AFTER = re.compile(r" ?[:@]| ?[a-z0-9][-_a-z0-9]{4}")
_HAN_ID_AFTER = re.compile(r" ?[:@]| ?[a-z0-9]")

Replacer = Callable[[re.Match[str]], str]
Step = tuple[re.Pattern[str], Replacer]
# Per round of steps 2-5, the steps (indices into tidy + make) that found a match.
Plan = tuple[tuple[int, ...], ...]
_MAX_ROUNDS = 6  # every round only removes or canonicalizes, so two or three suffice in practice


@dataclass(frozen=True)
class Normalized:
    """A normalized text and where each of its characters came from in the original."""

    original: str
    text: str
    offsets: tuple[int, ...]  # offsets[i]: index in `original` of the source of text[i]
    ends: tuple[int, ...]  # ends[i]: end (exclusive) in `original` of the source of text[i]

    def to_original(self, start: int, end: int) -> tuple[int, int]:
        """The span of `original` that text[start:end] came from (end exclusive)."""
        n = len(self.text)
        start = min(max(start, 0), n)
        end = min(max(end, start), n)
        if start == end:
            pos = self.offsets[start] if start < n else len(self.original)
            return pos, pos
        return self.offsets[start], self.ends[end - 1]


class LazyNormalized:
    """A normalized text whose offset map (a `Normalized`) is built on first use."""

    __slots__ = ("_changed", "_full", "_normalizer", "_plan", "original", "text")

    def __init__(self, normalizer: Normalizer, original: str, text: str, changed: bool, plan: Plan) -> None:
        self._normalizer = normalizer
        self.original = original
        self.text = text
        self._changed = changed
        self._plan = plan
        self._full: Normalized | None = None

    def full(self) -> Normalized:
        """The complete result, offsets included (what `Normalizer.normalize` returns)."""
        if self._full is None:
            self._full = self._normalizer._offsets(self.original, self.text, self._changed, self._plan)
        return self._full

    def to_original(self, start: int, end: int) -> tuple[int, int]:
        """The span of `original` that text[start:end] came from (end exclusive)."""
        return self.full().to_original(start, end)


@lru_cache(maxsize=1)
def load_tables(path: str = str(DATA_PATH)) -> dict[str, Any]:
    """The parsed data file (cached; the tables are read-only)."""
    with open(path, "rb") as f:
        return tomllib.load(f)


@lru_cache(maxsize=1)
def _t2s() -> Any:
    import opencc

    return opencc.OpenCC("t2s")


def _is_han(ch: str) -> bool:
    return _HAN_RE.match(ch) is not None


_UNSEEN = "\x00"  # never in a character's mapping: control characters are dropped


def _unseen() -> str:
    return _UNSEEN


class _Seen:
    """`text.translate(table)` for a translate table that fills itself in `__missing__`.

    str.translate looks up a Python subclass of dict (for its __missing__) through a method call
    per character; a defaultdict, a C subclass, is read like a dict. So the entries seen so far
    are copied into one whose default marks a code point not seen yet, and only a text with such
    a character asks `table` (then translates again)."""

    def __init__(self, table: dict[int, Any]) -> None:
        self._table = table
        self._seen: defaultdict[int, Any] = defaultdict(_unseen)

    def translate(self, text: str) -> str:
        out = text.translate(self._seen)
        if _UNSEEN in out:
            seen = self._seen
            for ch in set(text):
                code = ord(ch)
                if seen[code] == _UNSEEN:
                    seen[code] = self._table[code]
            out = text.translate(seen)
        return out


class _CharMap(dict[int, str]):
    """str.translate table filled on first sight of each code point (a dict hit afterwards)."""

    def __init__(self, words: dict[str, str]) -> None:
        super().__init__()
        self._words = words  # single characters read as words or letters (emoji, look-alikes)
        self._lock = threading.Lock()
        self.irregular = _Irregular(self)
        self._seen = _Seen(self)
        self._seen_irregular = _Seen(self.irregular)

    def translate(self, text: str) -> str:
        """`text.translate(self)`: every character mapped."""
        return self._seen.translate(text)

    def irregular_in(self, text: str) -> str:
        """`text.translate(self.irregular)`: the characters that do not map to exactly one."""
        return self._seen_irregular.translate(text)

    def _step(self, ch: str) -> str:
        if ch in self._words:
            return self._words[ch]
        if ch.isspace():
            return " "
        if unicodedata.category(ch) in _DROP_CATEGORIES:
            return ""
        out = unicodedata.normalize("NFKC", ch).lower()
        if out != ch:
            return out
        if unicodedata.category(ch) == "No":
            # Styled digits NFKC leaves alone (dingbat and negative circled ❶ ➀ ➊ ⓵ ❿ ⓫):
            # written for digits in phone numbers, prices and domains as ① is.
            value = unicodedata.numeric(ch, -1.0)
            if value.is_integer() and 0 <= value <= 20:
                return str(int(value))
        if "\U0001f150" <= ch <= "\U0001f189":
            # and the styled letters it leaves (negative circled and squared 🅐 🅰 🅾): "T🅾🅿" in a domain
            name = unicodedata.name(ch, "")
            if name.startswith(
                ("NEGATIVE CIRCLED LATIN CAPITAL LETTER ", "NEGATIVE SQUARED LATIN CAPITAL LETTER ")
            ):
                return name[-1].lower()
        if "\u00c0" <= ch <= "\u024f" or "\u1e00" <= ch <= "\u1eff":
            # Latin letters with diacritics (pinyin's tone marks, accents in a domain or an id:
            # "bīng dú", "miáòzań.com") read as the bare letter, as the marks typed apart are dropped.
            base = unicodedata.normalize("NFD", ch)
            if len(base) > 1 and base[0].isascii() and all(unicodedata.combining(c) for c in base[1:]):
                return base[0]
        if _is_han(ch):
            try:
                conv = _t2s().convert(ch)
            except Exception:  # a converter failure must not break normalization
                conv = ch
            if len(conv) == 1:
                return conv
        return ch

    def map_char(self, ch: str) -> str:
        s = ch
        for _ in range(6):
            nxt = "".join(self._step(c) for c in s)
            if nxt == s:
                return s
            s = nxt
        return ""  # no fixpoint: dropping the character keeps normalization idempotent

    def __missing__(self, code: int) -> str:
        out = self.map_char(chr(code))
        with self._lock:
            self[code] = out
        return out


class _Irregular(dict[int, Any]):
    """translate table that deletes the characters the char map turns into exactly one."""

    def __init__(self, cmap: _CharMap) -> None:
        super().__init__()
        self._cmap = cmap

    def __missing__(self, code: int) -> Any:
        out = None if len(self._cmap[code]) == 1 else code
        self[code] = out
        return out


def _class_from(chars: str, ranges: Iterable[Iterable[str]]) -> str:
    parts = [re.escape(c) for c in dict.fromkeys(chars)]
    for lo, hi in ranges:
        parts.append(f"{re.escape(chr(int(lo, 16)))}-{re.escape(chr(int(hi, 16)))}")
    return "".join(parts)


def _trie_pattern(seqs: Iterable[tuple[list[str], str]]) -> str:
    """One regex for many alternatives, factored on shared prefixes (atoms are regex pieces).

    Each alternative is (atoms, tail): tail is a lookaround checked when it ends. Longer
    alternatives are tried first. Factoring lets `re` skip fast to positions that can start a
    match, which a flat alternation of 600 spellings cannot.
    """
    trie: dict[str, Any] = {}
    for atoms, tail in seqs:
        node = trie
        for atom in atoms:
            node = node.setdefault(atom, {})
        node.setdefault("", set()).add(tail)

    def emit(node: dict[str, Any]) -> str:
        alts = [atom + emit(child) for atom, child in sorted(node.items()) if atom]
        tails = sorted(node.get("", ()))
        if tails:
            alts.append(tails[0] if len(tails) == 1 else "(?:" + "|".join(tails) + ")")
        return alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"

    return emit(trie)


def _first_atom(ch: str, not_before: str) -> str:
    """`ch`, then a check that the character before it is not in the class `not_before`."""
    return re.escape(ch) + (f"(?<![{not_before}](?s:.))" if not_before else "")


def _cue_atoms(word: str) -> tuple[list[str], str]:
    """A cue kept away from neighbouring ASCII letters/digits on its ASCII ends."""
    atoms = [_first_atom(word[0], "a-z0-9" if word[0] in _ASCII_ALNUM else "")]
    atoms += [re.escape(c) for c in word[1:]]
    return atoms, "(?![a-z])" if word[-1] in _ASCII_ALNUM else ""


class Normalizer:
    """Folds evasive spellings; `lexicon` terms also get their pinyin spellings folded back."""

    def __init__(self, lexicon: Iterable[str] = ()) -> None:
        tables = load_tables()
        char_words = {k.replace("\ufe0f", ""): v for k, v in tables["emoji"].items()}
        char_words.update(tables["lookalike_letters"])
        self._cmap = _CharMap(char_words)

        sep = tables["separators"]
        sep_class = _class_from(sep["chars"] + "\u3000", sep["ranges"])
        self._sep_chars = frozenset(sep["chars"]) | {" "}
        # Separators between two Han characters: removed. Whitespace runs elsewhere: one space.
        # Every match starts with a separator (the space is one), matched ahead of the two
        # branches: a pattern that opens with a character class lets `re` skip in C to where a
        # match can start (with a group opening each branch it tried a match at every position).
        # The lookbehind sits after the first separator for the same reason.
        self._collapse_re = re.compile(
            rf"[{sep_class}](?:(?<=[{HAN}](?s:.))[{sep_class}]*(?=[{HAN}])|(?<= )(?P<ws> +))"
        )

        num = tables["numerals"]
        self._digits = str.maketrans(num["digits"])
        num_class = re.escape("".join(num["digits"]))
        # The first character spelled out, so the pattern opens with a class (see above).
        run = f"[{num_class}0-9]"
        self._num_re = re.compile(rf"{run}{run}{{{int(num['min_run']) - 1},}}")
        self._num_chars = frozenset(num["digits"])

        cues = tables["cues"]
        self._verbs = tuple(sorted(cues["verbs"], key=len, reverse=True))
        self._cue: dict[str, tuple[str, bool]] = {}  # variant -> (canonical, contextual)
        for fam in cues.values():
            if not isinstance(fam, dict):
                continue
            for v in fam["always"]:
                self._cue[v] = (fam["canonical"], False)
            for v in fam["contextual"]:
                self._cue.setdefault(v, (fam["canonical"], True))
        variants = sorted(self._cue, key=lambda v: (-len(v), v))
        self._cue_re = re.compile(_trie_pattern(_cue_atoms(v) for v in variants))

        self._strip_re = re.compile(r"^ +| +$")

        dots = tables.get("domain_dots", {})
        words = sorted((self.normalize_chars(w) for w in dots.get("words", ())), key=lambda w: (-len(w), w))
        tlds = "|".join(sorted(map(re.escape, dots.get("tlds", ())), key=lambda t: (-len(t), t)))
        self._dot_re: re.Pattern[str] | None = None
        if words and tlds:
            # Opens with the class of the words' first characters and a space, so `re` skips in C
            # to the candidates; the letter or digit before is checked behind that character.
            firsts = re.escape("".join(sorted({w[0] for w in words} | {" "})))
            alts = "|".join(map(re.escape, words))
            self._dot_re = re.compile(
                rf"(?=[{firsts}])(?<=[a-z0-9])(?: ?(?:{alts}) ?)(?=(?:{tlds})(?![a-z0-9]))"
            )

        names = sorted(
            (self.normalize_chars(n) for n in tables.get("chat_faces", {}).get("names", ()) if len(n) >= 2),
            key=lambda n: (-len(n), n),
        )
        alts = "|".join(map(re.escape, names)) or "(?!)"
        # Each branch opens with a literal ("[" or "/"; the lookbehind checks the character before
        # the "/"), so `re` skips in C to those two characters.
        self._face_re = re.compile(rf"\[em\]e\d{{1,8}}\[/em\]|/(?<![a-z0-9./:_\-]/)(?:{alts})|\[(?:{alts})\]")

        pin = tables["pinyin"]
        self._pinyin_re: re.Pattern[str] | None = None
        self._pinyin_map: dict[str, str] = {}
        self._tidy, self._make = self._steps()  # without pinyin, to put lexicon terms in form
        self._pinyin_map, self._pinyin_re = self._build_pinyin(
            lexicon, int(pin["min_letters"]), int(pin["min_initials"]), frozenset(pin["english"])
        )
        self._tidy, self._make = self._steps()
        self._steps_all = (*self._tidy, *self._make)
        # every step, every round: what the offset-keeping path replays without a plan
        self._every_step: Plan = (tuple(range(len(self._steps_all))),) * _MAX_ROUNDS

    # --- building ----------------------------------------------------------------------------

    def _steps(self) -> tuple[list[Step], list[Step]]:
        """(steps that only tidy, steps that make new Han/ASCII tokens and so may need a rerun)."""
        # Faces go before separators are collapsed ("进/爱心耽" would become "进爱心耽"); and again
        # as a make step, because collapsing can join a new face ("/玫[em]e1[/em]瑰" -> "/玫瑰").
        face: Step = (self._face_re, _space)
        tidy: list[Step] = [face, (self._collapse_re, self._collapse_one), (self._num_re, self._num_one)]
        if self._dot_re is not None:
            tidy.append((self._dot_re, _dot))
        make: list[Step] = [face, (self._cue_re, self._cue_one)]
        if self._pinyin_re is not None:
            make.append((self._pinyin_re, self._pinyin_one))
        return tidy, make

    def _build_pinyin(
        self, lexicon: Iterable[str], min_letters: int, min_initials: int, english: frozenset[str]
    ) -> tuple[dict[str, str], re.Pattern[str] | None]:
        from pypinyin import Style, lazy_pinyin

        spellings: dict[str, str] = {}  # joined spelling -> term
        spaced: list[list[str]] = []
        clash: set[str] = set()

        def add(key: str, term: str) -> None:
            if key in spellings and spellings[key] != term:
                clash.add(key)
            spellings.setdefault(key, term)

        for raw in sorted(set(lexicon)):
            if not isinstance(raw, str):
                continue
            term = self.normalize_text(raw)
            if len(term) < 2 or not all(_is_han(c) for c in term):
                continue
            syllables = [s.lower() for s in lazy_pinyin(term, style=Style.NORMAL, errors="ignore")]
            if len(syllables) != len(term) or not all(s.isascii() and s.isalpha() for s in syllables):
                continue
            joined = "".join(syllables)
            if len(joined) < min_letters or joined in english:
                continue
            add(joined, term)
            spaced.append(syllables)
            initials = "".join(s[0] for s in syllables)
            if len(initials) >= min_initials and initials not in english:
                add(initials, term)
        for key in clash:  # one spelling, two terms: guessing would invent matches
            spellings.pop(key, None)
        if not spellings:
            return {}, None
        gap = r"[ .\-_*/|]{0,3}"
        not_before = r"a-z0-9@_./\-"
        tail = r"(?![a-z0-9_@]|\.[a-z0-9])"
        seqs = [([_first_atom(k[0], not_before), *map(re.escape, k[1:])], tail) for k in spellings]
        for syl in spaced:
            if "".join(syl) in spellings:
                atoms = []
                for i, part in enumerate(syl):
                    atoms += [re.escape(c) for c in part] + ([gap] if i < len(syl) - 1 else [])
                atoms[0] = _first_atom(syl[0][0], not_before)
                seqs.append((atoms, tail))
        pattern = re.compile(_trie_pattern(seqs))
        return spellings, pattern

    # --- step callbacks (shared by both paths) -----------------------------------------------

    @staticmethod
    def _collapse_one(m: re.Match[str]) -> str:
        return " " if m.lastgroup == "ws" else ""

    def _num_one(self, m: re.Match[str]) -> str:
        run = m.group()
        if self._num_chars.isdisjoint(run):
            return run
        return run.translate(self._digits)

    def _cue_one(self, m: re.Match[str]) -> str:
        word = m.group()
        canonical, contextual = self._cue[word]
        if not contextual:
            return canonical
        s, a, b = m.string, m.start(), m.end()
        ascii_cue = word[0] in _ASCII_ALNUM
        nxt = s[b : b + 1]
        # verb before, separators allowed in between
        i = a
        while i > 0 and s[i - 1] in self._sep_chars and s[i - 1] != "+":
            i -= 1
        before = s[max(0, i - 4) : i]
        if before.endswith(self._verbs) and (ascii_cue or not _is_han(nxt or "a")):
            return canonical
        # otherwise: a colon / @ / id right after, and no Han word right before
        if a > 0 and not ascii_cue and _is_han(s[a - 1]):
            return word
        # a lone ASCII letter needs a real id after it ("v2" is a version, "v 123456" a cue)
        ok = (_ASCII_ID_AFTER if ascii_cue else _HAN_ID_AFTER).match(s, b) is not None
        return canonical if ok else word

    def _pinyin_one(self, m: re.Match[str]) -> str:
        key = re.sub(r"[^a-z]", "", m.group())
        return self._pinyin_map.get(key, m.group())

    # --- public ------------------------------------------------------------------------------

    def normalize_chars(self, text: str) -> str:
        """Step 1 alone (per character), for putting table entries in the form steps 2-5 see."""
        return self._cmap.translate(text)

    def normalize_text(self, text: str) -> str:
        """The normalized text alone (same as `normalize(text).text`, without the offset map)."""
        if not isinstance(text, str):
            text = str(text)
        return self._plain(text)[0]

    def normalize(self, text: str) -> Normalized:
        """Normalized text with the offset map back to `text`; never raises on a str."""
        if not isinstance(text, str):
            text = str(text)
        s, changed, plan = self._plain(text)
        return self._offsets(text, s, changed, plan)

    def normalize_lazy(self, text: str) -> LazyNormalized:
        """`normalize(text)` with the offset map built on first use: for callers that seldom
        need positions (the classifier, when a message has no term or contact to point at)."""
        if not isinstance(text, str):
            text = str(text)
        s, changed, plan = self._plain(text)
        return LazyNormalized(self, text, s, changed, plan)

    def _plain(self, text: str) -> tuple[str, bool, Plan]:
        """(normalized text, whether any step after the per-character map changed it, and per
        round the steps that found a match: all the offset-keeping path has to replay)."""
        tidy, make = self._tidy, self._make
        n_tidy = len(tidy)
        # When tidying changed nothing, the face step leading `make` would look at the very
        # text the same step in `tidy` just found no face in.
        skip = 1 if make[:1] == tidy[:1] else 0
        s = self._cmap.translate(text)
        changed = False
        plan: list[tuple[int, ...]] = []
        for _ in range(_MAX_ROUNDS):
            hits: list[int] = []
            before = s
            for i, (pattern, fn) in enumerate(tidy):
                t, k = pattern.subn(fn, s)
                if k:
                    hits.append(i)
                    if t != s:
                        changed, s = True, t
            made = s
            for i in range(skip if s is before else 0, len(make)):
                pattern, fn = make[i]
                made, k = pattern.subn(fn, made)
                if k:
                    hits.append(n_tidy + i)
            plan.append(tuple(hits))
            if made == s:
                break
            # New tokens change their neighbours' context (separators now between Han, a cue
            # now next to an id): tidy again and repeat until nothing changes.
            changed, s = True, made
        out = s.strip(" ")  # the ends, as _strip_re does
        return out, changed or len(out) != len(s), tuple(plan)

    def _offsets(self, text: str, s: str, changed: bool, plan: Plan) -> Normalized:
        """The Normalized result for `text`, whose normalized text `_plain` found to be `s`
        following `plan`."""
        if not changed and not self._cmap.irregular_in(text):
            # every character mapped to exactly one and no step changed anything: the usual case
            n = len(s)
            return Normalized(original=text, text=s, offsets=tuple(range(n)), ends=tuple(range(1, n + 1)))
        return self._tracked(text, plan)

    def _tracked(self, text: str, plan: Plan | None = None) -> Normalized:
        """The offset-keeping path: every step carries the offset maps along. With `_plain`'s
        plan only the steps that found a match run (one that finds none changes nothing);
        without it, every step of every round, as `_plain` runs them."""
        steps, n_tidy = self._steps_all, len(self._tidy)
        cmap = self._cmap
        s = cmap.translate(text)
        if len(s) == len(text) and not cmap.irregular_in(text):
            offs = list(range(len(s)))  # every character mapped to exactly one: the usual case
            ends = list(range(1, len(s) + 1))
        else:
            offs, ends = [], []
            for i, ch in enumerate(text):
                out = cmap[ord(ch)]
                if out:
                    offs.extend([i] * len(out))
                    ends.extend([i + 1] * len(out))
                elif ends and ends[-1] == i and unicodedata.category(ch) in ("Mn", "Me"):
                    # a dropped combining mark (U+FE0F, a keycap) belongs to the character before
                    for j in range(len(ends) - 1, -1, -1):
                        if ends[j] != i:
                            break
                        ends[j] = i + 1
        for hits in self._every_step if plan is None else plan:
            for i in hits:
                if i < n_tidy:
                    pattern, fn = steps[i]
                    s, offs, ends = _sub_tracked(pattern, fn, s, offs, ends)
            made = (s, offs, ends)
            for i in hits:
                if i >= n_tidy:
                    pattern, fn = steps[i]
                    made = _sub_tracked(pattern, fn, *made)
            if made[0] == s:
                break
            s, offs, ends = made
        s, offs, ends = _sub_tracked(self._strip_re, _drop, s, offs, ends)
        return Normalized(original=text, text=s, offsets=tuple(offs), ends=tuple(ends))


def _drop(m: re.Match[str]) -> str:
    return ""


def _dot(m: re.Match[str]) -> str:
    return "."


def _space(m: re.Match[str]) -> str:
    return " "


def _sub_tracked(
    pattern: re.Pattern[str], fn: Replacer, s: str, offs: list[int], ends: list[int]
) -> tuple[str, list[int], list[int]]:
    """`pattern.sub(fn, s)` that also carries the offset maps along."""
    pieces: list[str] = []
    noffs: list[int] = []
    nends: list[int] = []
    last = 0
    for m in pattern.finditer(s):
        rep = fn(m)
        a, b = m.span()
        if rep == m.group() or a == b:
            continue
        pieces.append(s[last:a])
        noffs.extend(offs[last:a])
        nends.extend(ends[last:a])
        pieces.append(rep)
        k, span = len(rep), b - a
        for j in range(k):
            # spread the replacement over the matched characters, in order
            lo = a + (j * span) // k
            hi = a + -(-((j + 1) * span) // k)
            noffs.append(offs[lo])
            nends.append(ends[hi - 1])
        last = b
    if last == 0:
        return s, offs, ends
    pieces.append(s[last:])
    noffs.extend(offs[last:])
    nends.extend(ends[last:])
    return "".join(pieces), noffs, nends
