"""The Dockerfile, .dockerignore and docker-compose.yml, linted without a Docker engine.

What can be checked here is checked: every COPY source exists and survives .dockerignore, the image runs
as a non-root user with a health check and `qinglang run`, the package built from exactly the build
context carries its data files (the default model, locales, migrations) and starts, and the compose file
parses and wires PostgreSQL 15, a one-shot schema upgrade and the bot built from this Dockerfile.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"
DOCKERIGNORE = ROOT / ".dockerignore"


# --- a small Dockerfile reader ------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    stage: int  # index of the FROM this instruction belongs to

    def exec_form(self) -> list[str]:
        """The JSON array form of CMD/ENTRYPOINT (fails on the shell form)."""
        value = json.loads(self.args)
        assert isinstance(value, list) and all(isinstance(v, str) for v in value), self.args
        return value


def instructions(text: str) -> list[Instruction]:
    """Instructions in order, continuation lines joined, comments dropped."""
    out: list[Instruction] = []
    stage = -1
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # Docker also drops comment lines inside a continuation
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        out.append(Instruction(keyword, args.strip(), stage))
    assert not pending, "the Dockerfile ends inside a continuation line"
    return out


def final_stage(items: list[Instruction]) -> list[Instruction]:
    last = max(i.stage for i in items)
    return [i for i in items if i.stage == last]


def copy_sources(item: Instruction) -> tuple[list[str], dict[str, str]]:
    """(sources, --flags) of a COPY/ADD."""
    words = shlex.split(item.args)
    flags = {}
    while words and words[0].startswith("--"):
        key, _, value = words.pop(0)[2:].partition("=")
        flags[key] = value
    if words and words[0].startswith("["):
        words = json.loads(item.args[item.args.index("[") :])
    return words[:-1], flags


def env_values(items: list[Instruction]) -> dict[str, str]:
    values: dict[str, str] = {}
    for item in items:
        if item.keyword == "ENV":
            for word in shlex.split(item.args):
                key, _, value = word.partition("=")
                values[key] = value
    return values


# --- .dockerignore, as Docker reads it: last matching pattern wins, a directory covers its contents ----


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for raw in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keep = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        rules.append((keep, _pattern_regex(pattern)))
    return rules


def in_context(path: str, rules: list[tuple[bool, re.Pattern[str]]] | None = None) -> bool:
    """Whether `path` (relative to the repository) is sent to the Docker build."""
    rules = dockerignore_rules() if rules is None else rules
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    included = True
    for keep, regex in rules:
        if any(regex.match(p) for p in prefixes):
            included = keep
    return included


def context_files() -> list[str]:
    """Every file of the working tree that .dockerignore lets into the build context."""
    rules = dockerignore_rules()
    out = []
    for path in ROOT.rglob("*"):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith((".git/", ".venv/")) or not path.is_file():
            continue
        if in_context(rel, rules):
            out.append(rel)
    return sorted(out)


# --- the Dockerfile --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dockerfile() -> list[Instruction]:
    return instructions(DOCKERFILE.read_text(encoding="utf-8"))


def test_every_stage_is_python_311_slim(dockerfile: list[Instruction]) -> None:
    bases = [i.args.split()[0] for i in dockerfile if i.keyword == "FROM"]
    assert bases and all(b == "python:3.11-slim" for b in bases), bases


def test_every_copy_source_exists_and_is_in_the_build_context(dockerfile: list[Instruction]) -> None:
    stages = {i.args.split()[-1] for i in dockerfile if i.keyword == "FROM" and " AS " in i.args.upper()}
    copies = [i for i in dockerfile if i.keyword in ("COPY", "ADD")]
    assert copies
    for item in copies:
        assert item.keyword == "COPY", "ADD fetches and unpacks; COPY says what it does"
        sources, flags = copy_sources(item)
        if "from" in flags:
            assert flags["from"] in stages, f"COPY --from={flags['from']}: no such stage"
            continue
        for source in sources:
            path = ROOT / source
            assert path.exists(), f"COPY {source}: not in the repository"
            assert in_context(source.rstrip("/")), f"COPY {source}: excluded by .dockerignore"


def test_runs_as_a_non_root_user_before_its_command(dockerfile: list[Instruction]) -> None:
    final = final_stage(dockerfile)
    keywords = [i.keyword for i in final]
    users = [i for i in final if i.keyword == "USER"]
    assert users, "the image must not run as root"
    assert users[-1].args.split(":")[0] not in ("root", "0")
    last_user = max(n for n, k in enumerate(keywords) if k == "USER")
    assert last_user < keywords.index("ENTRYPOINT") and last_user < keywords.index("CMD")


def test_entrypoint_is_qinglang_run(dockerfile: list[Instruction]) -> None:
    final = final_stage(dockerfile)
    (entrypoint,) = [i for i in final if i.keyword == "ENTRYPOINT"]
    (cmd,) = [i for i in final if i.keyword == "CMD"]
    assert entrypoint.exec_form() == ["qinglang"], "exec form: qinglang is PID 1 and gets SIGTERM"
    assert cmd.exec_form() == ["run"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert "qinglang" in scripts


def test_healthcheck_asks_healthz_with_python(dockerfile: list[Instruction]) -> None:
    (check,) = [i for i in final_stage(dockerfile) if i.keyword == "HEALTHCHECK"]
    assert "/healthz" in check.args and "urllib.request" in check.args
    assert "curl" not in check.args and "wget" not in check.args, "python:3.11-slim has neither"
    command = json.loads(check.args[check.args.index("CMD") + 3 :].strip())
    assert command[:2] == ["python", "-c"]
    compile(command[2], "<healthcheck>", "exec")  # the one-liner is valid Python


def test_environment_volume_and_port(dockerfile: list[Instruction]) -> None:
    final = final_stage(dockerfile)
    env = env_values(final)
    assert env["QINGLANG_METRICS_HOST"] == "0.0.0.0", "reachable from outside the container"
    assert env["QINGLANG_DATABASE_URL"].startswith("sqlite+aiosqlite:////data/")
    assert env["QINGLANG_SPOOL_DIR"].startswith("/data/")
    (volume,) = [i for i in final if i.keyword == "VOLUME"]
    assert json.loads(volume.args) == ["/data"]
    assert any(i.keyword == "EXPOSE" and i.args.split()[0] == env["QINGLANG_METRICS_PORT"] for i in final)


def test_installs_the_package_with_the_postgres_extra(dockerfile: list[Instruction]) -> None:
    runs = " ".join(i.args for i in dockerfile if i.keyword == "RUN")
    assert re.search(r"pip install[^&]*'\.\[postgres\]'", runs)
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "optional-dependencies"
    ]
    assert any(dep.startswith("asyncpg") for dep in extras["postgres"])


# --- .dockerignore ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [".env", "bot/.env", ".git/config", ".venv/bin/python", "qinglang.db", "storage/x.db-wal",
     "tests/conftest.py", "bot/__pycache__/app.cpython-311.pyc", "qinglang.db.spool/incidents.jsonl"],
)  # fmt: skip
def test_secrets_databases_and_tests_stay_out_of_the_context(path: str) -> None:
    assert not in_context(path)


def test_every_package_file_is_in_the_context() -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "bot", "classifier", "storage", "pyproject.toml", "README.md"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    missing = [f for f in tracked if not in_context(f)]
    assert tracked and not missing, missing


# --- the package built from the build context ------------------------------------------------


def test_package_built_from_the_context_has_its_data_and_starts(tmp_path: Path) -> None:
    """What `pip install .` in the image installs: the default model, locales and migrations, importable."""
    context = tmp_path / "context"
    for rel in context_files():
        (context / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, context / rel)
    build = tmp_path / "lib"
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import setuptools; setuptools.setup()",
            "-q",
            "build_py",
            "--build-lib",
            build,
        ],
        cwd=context,
        check=True,
        capture_output=True,
    )
    data_files = subprocess.run(
        ["git", "ls-files", "bot", "classifier", "storage"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    data_files = [f for f in data_files if not f.endswith(".py") and (ROOT / f).exists()]
    missing = [f for f in data_files if not (build / f).exists()]
    assert not missing, f"package data not installed (pyproject [tool.setuptools.package-data]): {missing}"
    assert (build / "classifier" / "default_model" / "model.json").exists()

    # Import from the built tree only (not the repository): the bot's messages, the model, the CLI.
    probe = (
        "import bot.app, bot.i18n, classifier, storage;"
        f"assert bot.app.__file__.startswith({str(build)!r}), bot.app.__file__;"
        "m = classifier.load(); print(m.version)"
    )
    env = {**os.environ, "PYTHONPATH": str(build)}
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    shipped = json.loads((ROOT / "classifier" / "default_model" / "model.json").read_text(encoding="utf-8"))
    assert result.stdout.split()[-1] == shipped["version"]


# --- docker-compose.yml ----------------------------------------------------------------------


def parse_compose_yaml(text: str) -> Any:
    """A reader for the YAML subset the compose file keeps to: block mappings, block lists of scalars,
    plain or quoted scalars, comments (no anchors, flow style or multi-line strings)."""
    lines: list[tuple[int, str]] = []
    for raw in text.splitlines():
        stripped = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if stripped.strip():
            lines.append((len(stripped) - len(stripped.lstrip(" ")), stripped.strip()))

    def scalar(value: str) -> Any:
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            return value[1:-1]
        assert not value.startswith(("&", "*", "{", "[", "|", ">")), f"outside the subset: {value}"
        if re.fullmatch(r"-?[0-9]+", value):
            return int(value)
        return {"true": True, "false": False, "null": None, "~": None}.get(value, value)

    def block(start: int, indent: int) -> tuple[Any, int]:
        if lines[start][1].startswith("- "):
            items: list[Any] = []
            i = start
            while i < len(lines) and lines[i][0] == indent and lines[i][1].startswith("- "):
                items.append(scalar(lines[i][1][2:].strip()))
                i += 1
            return items, i
        mapping: dict[str, Any] = {}
        i = start
        while i < len(lines) and lines[i][0] == indent:
            key, sep, rest = lines[i][1].partition(":")
            assert sep, f"not a mapping entry: {lines[i][1]}"
            assert key not in mapping, f"duplicate key {key}"
            rest = rest.strip()
            if rest:
                mapping[key] = scalar(rest)
                i += 1
            elif i + 1 < len(lines) and lines[i + 1][0] > indent:
                mapping[key], i = block(i + 1, lines[i + 1][0])
            else:
                mapping[key] = None
                i += 1
        return mapping, i

    value, end = block(0, lines[0][0])
    assert end == len(lines), f"unparsed from line {lines[end][1]!r}"
    return value


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return parse_compose_yaml(COMPOSE.read_text(encoding="utf-8"))


def test_compose_parses_the_same_with_pyyaml(compose: dict[str, Any]) -> None:
    yaml = pytest.importorskip("yaml")  # not a test dependency: the subset reader above always runs
    assert yaml.safe_load(COMPOSE.read_text(encoding="utf-8")) == compose


def test_compose_runs_postgres_15_with_a_volume(compose: dict[str, Any]) -> None:
    pg = compose["services"]["postgres"]
    assert pg["image"] == "postgres:15"
    assert any(v.endswith(":/var/lib/postgresql/data") for v in pg["volumes"])
    volume = pg["volumes"][0].split(":")[0]
    assert volume in compose["volumes"], "a named volume, declared"
    assert "healthcheck" in pg


def test_compose_builds_the_bot_from_this_dockerfile(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("bot", "migrate"):
        build = services[name]["build"]
        assert (ROOT / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
    assert services["bot"]["image"] == services["migrate"]["image"], "one image for both"


def test_compose_upgrades_the_schema_once_before_the_bot(compose: dict[str, Any]) -> None:
    services = compose["services"]
    migrate, bot = services["migrate"], services["bot"]
    assert migrate["command"] == ["db", "upgrade"] and migrate["restart"] == "no"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert bot["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    for service in (migrate, bot):
        assert service["environment"]["QINGLANG_DATABASE_URL"].startswith("postgresql+asyncpg://")
        assert "@postgres:5432/" in service["environment"]["QINGLANG_DATABASE_URL"]


def test_compose_keeps_secrets_in_the_environment_and_metrics_on_loopback(compose: dict[str, Any]) -> None:
    bot = compose["services"]["bot"]
    assert bot["environment"]["QINGLANG_TELEGRAM_TOKEN"].startswith("${")
    assert compose["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith("${")
    assert bot["ports"] == ["127.0.0.1:9108:9108"], "metrics are not for the whole network"
    assert any(v.split(":")[1] == "/data" for v in bot["volumes"])
