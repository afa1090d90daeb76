"""A Dockerfile reader for the subset the repository's Dockerfile uses, and the build plan it
implies: which RUN step runs as which user, in which directory, with which environment.

No docker daemon runs where meshota is developed, so ``scripts/verify_container.py`` replays this
plan in a fresh Debian rootfs under chroot, and ``tests/test_container.py`` checks the file's
shape with it. Anything outside the subset (heredocs, ``ADD``, ``ONBUILD``, multi-stage builds,
``COPY --from``) is a :class:`DockerfileError`, so the verifier can never silently skip a step.
Standard library only: the verifier runs under the system python3.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

__all__ = [
    "DEFAULT_PATH",
    "BuildPlan",
    "CopyStep",
    "DockerfileError",
    "Instruction",
    "RunStep",
    "context_files",
    "parse_dockerfile",
    "plan_build",
]

# What docker puts in PATH when the image sets none (moby's oci defaults).
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SUPPORTED = {
    "FROM",
    "ARG",
    "ENV",
    "LABEL",
    "WORKDIR",
    "USER",
    "COPY",
    "RUN",
    "VOLUME",
    "EXPOSE",
    "HEALTHCHECK",
    "ENTRYPOINT",
    "CMD",
}


class DockerfileError(ValueError):
    """The Dockerfile uses something this reader does not replay, or is malformed."""


@dataclass(frozen=True, slots=True)
class Instruction:
    keyword: str  # upper case
    args: str  # the rest of the logical line, continuations joined
    line: int  # first physical line, 1-based


def parse_dockerfile(text: str) -> list[Instruction]:
    """Logical instructions: comments dropped, ``\\`` continuations joined."""
    out: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # a comment inside a continued instruction is dropped, as docker does
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        logical = " ".join(p for p in pending if p)
        pending = []
        keyword, _, args = logical.partition(" ")
        keyword = keyword.upper()
        if keyword not in SUPPORTED:
            raise DockerfileError(f"line {start}: {keyword} is not supported by the chroot verifier")
        if "<<" in args and keyword in ("RUN", "COPY"):
            raise DockerfileError(f"line {start}: heredocs are not supported by the chroot verifier")
        out.append(Instruction(keyword, args.strip(), start))
    if pending:
        raise DockerfileError("the file ends inside a continued instruction")
    return out


def _exec_form(instruction: Instruction) -> list[str]:
    """The JSON array of ENTRYPOINT/CMD/HEALTHCHECK CMD/RUN, or an error for the shell form."""
    where = f"line {instruction.line}: {instruction.keyword}"
    try:
        value = json.loads(instruction.args)
    except json.JSONDecodeError:
        raise DockerfileError(f"{where} must use the exec form") from None
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise DockerfileError(f"{where} must be a JSON list of strings")
    return value


_VAR = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


def _expand(value: str, env: Mapping[str, str]) -> str:
    """Docker's ``$VAR`` / ``${VAR}`` substitution (without the ``:-`` forms)."""
    return _VAR.sub(lambda m: env.get(m.group(1) or m.group(2), ""), value)


def _pairs(args: str, env: Mapping[str, str], line: int) -> dict[str, str]:
    """``K=V K2="v w"`` (or the legacy ``K V``) of ENV, ARG and LABEL."""
    words = shlex.split(args)
    if len(words) >= 2 and "=" not in words[0]:
        return {words[0]: _expand(" ".join(words[1:]), env)}
    out: dict[str, str] = {}
    for word in words:
        key, sep, value = word.partition("=")
        if not key:
            raise DockerfileError(f"line {line}: bad assignment {word!r}")
        if sep:
            out[key] = _expand(value, {**env, **out})
        else:
            out[key] = env.get(key, "")  # ARG without a default
    return out


@dataclass(frozen=True, slots=True)
class RunStep:
    command: str  # run as ``/bin/sh -c command``
    user: str  # "root" or a name/uid from the image's /etc/passwd
    workdir: str
    env: dict[str, str]
    line: int


@dataclass(frozen=True, slots=True)
class CopyStep:
    sources: list[str]  # relative to the build context
    dest: str  # absolute in the image
    chown: str | None
    line: int


@dataclass
class BuildPlan:
    base: str
    steps: list[RunStep | CopyStep] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)  # the image's final environment
    user: str = "root"
    workdir: str = "/"
    volumes: list[str] = field(default_factory=list)
    exposed: list[tuple[int, str]] = field(default_factory=list)  # (port, "tcp" | "udp")
    healthcheck: list[str] | None = None  # the exec form after CMD
    healthcheck_options: dict[str, str] = field(default_factory=dict)
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def start_command(self) -> list[str]:
        return [*self.entrypoint, *self.cmd]


def plan_build(instructions: list[Instruction]) -> BuildPlan:
    """Walk the instructions as a single-stage build would."""
    if not instructions or instructions[0].keyword not in ("FROM", "ARG"):
        raise DockerfileError("the first instruction must be FROM")
    froms = [i for i in instructions if i.keyword == "FROM"]
    if len(froms) != 1:
        raise DockerfileError("exactly one FROM (single-stage builds only)")
    plan = BuildPlan(base=froms[0].args)
    env: dict[str, str] = {"PATH": DEFAULT_PATH}
    for ins in instructions:
        k, args = ins.keyword, ins.args
        if k == "FROM":
            if " " in args.strip():
                raise DockerfileError(f"line {ins.line}: FROM with options or AS is not supported")
        elif k in ("ENV", "ARG"):
            env.update(_pairs(args, env, ins.line))
        elif k == "LABEL":
            plan.labels.update(_pairs(args, env, ins.line))
        elif k == "WORKDIR":
            path = _expand(args, env)
            plan.workdir = path if path.startswith("/") else str(PurePosixPath(plan.workdir) / path)
        elif k == "USER":
            plan.user = _expand(args, env)
        elif k == "RUN":
            if args.startswith("["):
                raise DockerfileError(f"line {ins.line}: RUN must use the shell form")
            if args.startswith("--"):
                raise DockerfileError(f"line {ins.line}: RUN options are not supported")
            plan.steps.append(RunStep(args, plan.user, plan.workdir, dict(env), ins.line))
        elif k == "COPY":
            plan.steps.append(_copy(args, env, plan.workdir, ins.line))
        elif k == "VOLUME":
            paths = json.loads(args) if args.startswith("[") else args.split()
            plan.volumes.extend(_expand(p, env) for p in paths)
        elif k == "EXPOSE":
            for spec in args.split():
                port, _, proto = _expand(spec, env).partition("/")
                plan.exposed.append((int(port), proto or "tcp"))
        elif k == "HEALTHCHECK":
            plan.healthcheck, plan.healthcheck_options = _healthcheck(ins)
        elif k == "ENTRYPOINT":
            plan.entrypoint = _exec_form(ins)
            plan.cmd = []  # docker resets CMD when ENTRYPOINT is set after it
        elif k == "CMD":
            plan.cmd = _exec_form(ins)
    plan.env = env
    return plan


def _copy(args: str, env: Mapping[str, str], workdir: str, line: int) -> CopyStep:
    words = shlex.split(args)
    chown = None
    while words and words[0].startswith("--"):
        option, _, value = words.pop(0).partition("=")
        if option != "--chown":
            raise DockerfileError(f"line {line}: COPY {option} is not supported")
        chown = _expand(value, env)
    if len(words) < 2:
        raise DockerfileError(f"line {line}: COPY needs a source and a destination")
    *sources, dest = (_expand(w, env) for w in words)
    for source in sources:
        if source.startswith("/") or ".." in PurePosixPath(source).parts or any(c in source for c in "*?["):
            raise DockerfileError(f"line {line}: COPY source {source!r} must be a plain path in the context")
    if not dest.startswith("/"):
        dest = str(PurePosixPath(workdir) / dest)
    return CopyStep(sources, dest, chown, line)


def _healthcheck(ins: Instruction) -> tuple[list[str] | None, dict[str, str]]:
    words = ins.args.split(" ")
    options: dict[str, str] = {}
    while words and words[0].startswith("--"):
        key, _, value = words.pop(0).partition("=")
        options[key[2:]] = value
        while words and words[0] == "":
            words.pop(0)
    rest = " ".join(words).strip()
    if rest.upper() == "NONE":
        return None, options
    keyword, _, cmd = rest.partition(" ")
    if keyword.upper() != "CMD":
        raise DockerfileError(f"line {ins.line}: HEALTHCHECK must be CMD [...] or NONE")
    return _exec_form(Instruction("HEALTHCHECK", cmd.strip(), ins.line)), options


def _ignore_patterns(context: Path) -> list[tuple[bool, str]]:
    """(negated, pattern) from .dockerignore, in order."""
    path = context / ".dockerignore"
    if not path.exists():
        return []
    out = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = str(PurePosixPath(line.lstrip("!").strip().lstrip("/")))
        out.append((negated, pattern))
    return out


def _matches(pattern: str, rel: str) -> bool:
    """Docker's rule: a pattern matches a path or any of its parent directories."""
    parts = rel.split("/")
    for n in range(1, len(parts) + 1):
        candidate = "/".join(parts[:n])
        if pattern.startswith("**/"):
            tail = pattern[3:]
            if any(fnmatch.fnmatchcase("/".join(parts[i:n]), tail) for i in range(n)):
                return True
        elif fnmatch.fnmatchcase(candidate, pattern) and candidate.count("/") == pattern.count("/"):
            return True
    return False


def _ignored(patterns: list[tuple[bool, str]], rel: str) -> bool:
    ignored = False
    for negated, pattern in patterns:
        if _matches(pattern, rel):
            ignored = not negated
    return ignored


def context_files(context: Path) -> Iterator[str]:
    """Every file of the build context ``.dockerignore`` lets through, relative, sorted. An
    ignored directory no ``!`` exception reaches into is not walked (.venv, .git)."""
    patterns = _ignore_patterns(context)
    exceptions = [pattern for negated, pattern in patterns if negated]
    found: list[str] = []
    for top, dirs, files in os.walk(context):
        base = Path(top).relative_to(context).as_posix()
        prefix = "" if base == "." else f"{base}/"
        dirs[:] = [
            d
            for d in dirs
            if not (
                _ignored(patterns, prefix + d)
                and not any(e.startswith(prefix + d + "/") or e.startswith("**") for e in exceptions)
            )
        ]
        found.extend(prefix + f for f in files if not _ignored(patterns, prefix + f))
    yield from sorted(found)
