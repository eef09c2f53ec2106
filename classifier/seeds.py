"""Seed files (classifier/seeds/*.toml): load, validate, list lexicon terms, hash.

One file per label (format in docs/interfaces.md) plus `common.toml`, whose slots every label
file may use. Templates and fillers refer to slots as `{name}`; the generator fills the built-in
slots (`BUILTIN_SLOTS`) in code unless a seed file defines a slot of the same name.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_SEEDS_DIR = Path(__file__).resolve().parent / "seeds"
COMMON_FILE = "common.toml"
BUILTIN_SLOTS = frozenset({"phone", "qq", "wxid", "tg", "url", "domain", "num", "money", "city"})
SLOT_RE = re.compile(r"\{(\w+)\}")


class SeedError(ValueError):
    """A seed file is malformed; the message names the file (and template) at fault."""


@dataclass(frozen=True)
class Template:
    """A solicitation (or benign) shape: its lines are filled from slots."""

    shape: str
    weight: float
    lines: tuple[str, ...]


@dataclass(frozen=True)
class LabelSeeds:
    """Everything one label file holds."""

    label: str
    lexicon: tuple[str, ...]
    slots: Mapping[str, tuple[str, ...]]
    templates: tuple[Template, ...]
    path: str


@dataclass(frozen=True)
class Seeds:
    """All seed files of one directory, validated."""

    labels: Mapping[str, LabelSeeds]
    common_slots: Mapping[str, tuple[str, ...]]
    digest: str  # sha256 over file names and bytes
    directory: str = field(default="", compare=False)

    @property
    def categories(self) -> tuple[str, ...]:
        """The prohibited labels, in a fixed order (everything but `ok`)."""
        return tuple(sorted(label for label in self.labels if label != "ok"))

    def slots_for(self, label: str) -> dict[str, tuple[str, ...]]:
        """The slots a label's templates can use: common ones, overridden by the label's own."""
        merged = dict(self.common_slots)
        merged.update(self.labels[label].slots)
        return merged

    def lexicon_terms(self) -> list[tuple[str, str]]:
        """(term, category) for every lexicon entry, sorted, without duplicates."""
        pairs = {(term, ls.label) for ls in self.labels.values() for term in ls.lexicon if term.strip()}
        return sorted(pairs, key=lambda p: (p[1], p[0]))


def _str_list(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise SeedError(f"{where}: expected a list of strings")
    return tuple(value)


def _parse_templates(doc: dict, name: str, *, with_label: bool) -> list[tuple[str, Template]]:
    templates = []
    for i, t in enumerate(doc.get("template", [])):
        shape = t.get("shape")
        where = f"{name} template #{i + 1} ({shape!r})"
        if not isinstance(shape, str) or not shape:
            raise SeedError(f"{where}: missing `shape`")
        weight = t.get("weight", 1)
        if not isinstance(weight, int | float) or weight <= 0:
            raise SeedError(f"{where}: `weight` must be a positive number")
        lines = _str_list(t.get("lines"), f"{where} lines")
        if not lines:
            raise SeedError(f"{where}: no lines")
        label = t.get("label", "")
        if with_label and (not isinstance(label, str) or not label):
            raise SeedError(f"{where}: templates in {COMMON_FILE} need a `label`")
        templates.append((label, Template(shape=shape, weight=float(weight), lines=lines)))
    return templates


def _parse_file(path: Path, data: bytes, *, common: bool) -> tuple[LabelSeeds | None, dict]:
    name = path.name
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SeedError(f"{name}: not valid TOML: {exc}") from exc
    raw_slots = doc.get("slots", {})
    if not isinstance(raw_slots, dict):
        raise SeedError(f"{name}: [slots] must be a table")
    slots = {k: _str_list(v, f"{name} slot {k!r}") for k, v in raw_slots.items()}
    for k, v in slots.items():
        if not v:
            raise SeedError(f"{name} slot {k!r}: empty list")
    if common:
        return None, slots
    label = doc.get("label")
    if not isinstance(label, str) or not re.fullmatch(r"[a-z_]+", label):
        raise SeedError(f"{name}: missing or invalid `label`")
    if path.stem != label:
        raise SeedError(f"{name}: label {label!r} does not match the file name")
    lexicon = _str_list(doc.get("lexicon", []), f"{name} lexicon")
    templates = [t for _, t in _parse_templates(doc, name, with_label=False)]
    if not templates:
        raise SeedError(f"{name}: no [[template]]")
    return LabelSeeds(label, lexicon, slots, tuple(templates), name), slots


def _check_references(ls: LabelSeeds, available: Mapping[str, tuple[str, ...]]) -> None:
    known = set(available) | BUILTIN_SLOTS
    for t in ls.templates:
        for line in t.lines:
            for ref in SLOT_RE.findall(line):
                if ref not in known:
                    raise SeedError(
                        f"{ls.path} template {t.shape!r}: unknown slot {{{ref}}} in line {line!r}"
                    )
    for slot, fillers in available.items():
        for filler in fillers:
            for ref in SLOT_RE.findall(filler):
                if ref not in known:
                    origin = ls.path if slot in ls.slots else COMMON_FILE
                    raise SeedError(f"{origin} slot {slot!r}: unknown slot {{{ref}}} in {filler!r}")
    # Slots that refer to each other in a loop would never finish filling.
    graph = {s: {r for f in fs for r in SLOT_RE.findall(f) if r in available} for s, fs in available.items()}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise SeedError(
                    f"{ls.path}: slots refer to each other in a loop: {' -> '.join([*trail, nxt])}"
                )
            if nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def load_seeds(directory: str | Path | None = None, *, labels: Iterable[str] | None = None) -> Seeds:
    """Load and validate every seed file in `directory` (default: the package's seeds)."""
    root = Path(directory) if directory is not None else DEFAULT_SEEDS_DIR
    files = sorted(root.glob("*.toml"))
    if labels is not None:
        wanted = set(labels)
        files = [p for p in files if p.stem in wanted or p.name == COMMON_FILE]
    if not files:
        raise SeedError(f"{root}: no seed files")
    h = hashlib.sha256()
    common: dict[str, tuple[str, ...]] = {}
    common_templates: list[tuple[str, Template]] = []
    parsed: dict[str, LabelSeeds] = {}
    for path in files:
        data = path.read_bytes()
        h.update(path.name.encode() + b"\0" + hashlib.sha256(data).digest())
        if path.name == COMMON_FILE:
            _, common = _parse_file(path, data, common=True)
            doc = tomllib.loads(data.decode("utf-8"))
            common_templates = _parse_templates(doc, path.name, with_label=True)
        elif not path.name.startswith("_"):
            ls, _ = _parse_file(path, data, common=False)
            assert ls is not None
            parsed[ls.label] = ls
    if "ok" not in parsed:
        raise SeedError(f"{root}: no ok.toml (benign examples are required)")
    if len(parsed) < 2:
        raise SeedError(f"{root}: need at least one category besides ok")
    # Shapes written in common.toml join their label's own (their shape names say where from).
    for label, tpl in common_templates:
        if label not in parsed:
            if labels is not None:
                continue
            raise SeedError(f"{COMMON_FILE} template {tpl.shape!r}: unknown label {label!r}")
        ls = parsed[label]
        parsed[label] = LabelSeeds(ls.label, ls.lexicon, ls.slots, (*ls.templates, tpl), ls.path)
    for ls in parsed.values():
        merged = dict(common)
        merged.update(ls.slots)
        _check_references(ls, merged)
    return Seeds(
        labels=dict(sorted(parsed.items())), common_slots=common, digest=h.hexdigest(), directory=str(root)
    )


def lexicon_terms(directory: str | Path | None = None) -> list[tuple[str, str]]:
    """(term, category) pairs of the seeds in `directory` (default: the package's seeds)."""
    return load_seeds(directory).lexicon_terms()


def seeds_hash(directory: str | Path | None = None) -> str:
    """sha256 of the seed files (names and bytes)."""
    return load_seeds(directory).digest
