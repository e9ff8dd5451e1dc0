"""``raynas submit``: an experiment as a Ray Job on a cluster, through Ray's Job Submission API.

The driver runs on the cluster, not here. The experiment file's folder goes along as the job's
``working_dir`` (the file, its data tables and the user modules beside it), and the job's entry
point is ``raynas run FILE --address auto`` in that folder on the head node, with the same
``--set`` overrides. The job is named after the experiment in the dashboard's Jobs view
(``raynas-<name>-<YYYYmmdd-HHMMSS>``, metadata ``raynas_experiment``).

Only the spec is checked here (bad input stops before anything is sent); the data is loaded by
the job, on the cluster, where its paths and downloads belong.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from raynas import __version__
from raynas.errors import ConfigError
from raynas.experiment import META_FILE

#: Where results go on the head when neither --storage-path nor the file gives an absolute
#: place; ``raynas run`` expands the ``~`` on the head.
DEFAULT_STORAGE = "~/raynas_results"

#: Never uploaded with the working directory: version control, environments, caches, results.
ALWAYS_EXCLUDED = (
    ".git", ".hg", ".svn", "__pycache__", "*.pyc", ".venv", "venv", ".tox", ".nox",
    ".mypy_cache", ".pytest_cache", ".ruff_cache", ".ipynb_checkpoints", "raynas_results",
)

#: How Ray says an upload is too large: the dashboard's request limit (aiohttp's), or Ray's store's.
_TOO_LARGE = ("Entity Too Large", "Maximum request body size", "exceeds the maximum size")

#: The Job Submission API's states that end a job.
SUCCEEDED, FAILED, STOPPED = "SUCCEEDED", "FAILED", "STOPPED"


@dataclass
class Submission:
    """A submitted experiment: which job, where, and how it runs."""

    submission_id: str
    address: str
    name: str
    storage: str  # parent of the results folder on the head (``~`` expanded there)
    entrypoint: str
    working_dir: str
    excludes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def results(self) -> str:
        return f"{self.storage.rstrip('/')}/{self.name}"


def submit(
    file: str | os.PathLike,
    address: str,
    overrides: Sequence[str] = (),
    name: str | None = None,
    storage_path: str | None = None,
) -> Submission:
    """Validates ``file`` with ``overrides`` and submits it as a Ray Job to the dashboard at ``address``.

    Raises:
        ConfigError: The file breaks a rule, ``address`` is not a reachable Ray dashboard (or
            refuses the token), ``storage_path`` is relative, the folder is too large to
            upload, or the Job Submission client is not installed. Nothing was submitted.
    """
    from raynas.spec import load_spec

    spec = load_spec(file, overrides)  # the same checks as `raynas run` before it loads data
    address = dashboard_address(address)
    notes: list[str] = []
    storage = _storage(spec.storage_path, storage_path, notes)
    name = name or spec.name
    base_dir = spec.base_dir or os.path.dirname(os.path.abspath(file))
    relative = os.path.relpath(spec.source_file or os.path.abspath(file), base_dir)
    command = ["raynas", "run", relative, "--address", "auto", "--storage-path", storage]
    if name != spec.name:
        command += ["--name", name]
    for item in overrides:
        command += ["--set", item]
    excludes = working_dir_excludes(base_dir, spec.storage_path)
    client = connect(address)
    metadata = {
        "raynas_experiment": name,
        "raynas_file": relative,
        "raynas_results": f"{storage.rstrip('/')}/{name}",
        "raynas_overrides": json.dumps(list(overrides)),
        "raynas_version": __version__,
    }
    sub = Submission("", address, name, storage, shlex.join(command), base_dir, excludes, notes)
    sub.submission_id = _submit_job(client, sub, metadata)
    return sub


def dashboard_address(address: str) -> str:
    """The dashboard's URL from ``--address``: ``http(s)://HOST[:PORT][/PATH]``."""
    text = address.strip().rstrip("/")
    scheme, sep, rest = text.partition("://")
    if sep and scheme in ("http", "https") and rest.split("/")[0]:
        return text  # a path is kept: a dashboard behind a proxy
    if sep and scheme == "ray":
        hint = "ray:// is Ray Client's address; a job goes to the head's dashboard, e.g. http://HEAD:8265"
    elif not sep and text != "auto" and text:
        hint = ("add the scheme, e.g. http://HEAD:8265; a job goes to the head's dashboard (port 8265 by default), "
                "not to the GCS address (HEAD:6379) that `raynas run --address` joins")
    else:
        hint = "give the head's dashboard as http://HEAD:8265 (the address `ray start --head` prints)"
    raise ConfigError("--address", f"expected a Ray dashboard's address http(s)://HOST[:PORT], got {address!r}: {hint}")


def connect(address: str):
    """A ``JobSubmissionClient`` for the dashboard at ``address``, its connection checked."""
    try:
        import aiohttp  # noqa: F401 - needed to follow the logs
        from ray.job_submission import JobSubmissionClient
    except ImportError as err:
        raise ConfigError(
            "raynas submit",
            f"Ray's Job Submission client needs packages that are not installed ({err}); "
            "install them with: pip install 'raynas[dashboard]'",
        ) from None
    from ray.exceptions import AuthenticationError

    # The SDK logs each upload step at INFO; its warnings (a package near the size limit) stay.
    for logger in ("ray.dashboard.modules.dashboard_sdk", "ray.dashboard.modules.job.sdk", "ray._private.runtime_env.packaging"):
        logging.getLogger(logger).setLevel(logging.WARNING)
    try:
        return JobSubmissionClient(address)
    except AuthenticationError as err:
        raise ConfigError("--address", _auth_message(address, err)) from None
    except Exception as err:  # noqa: BLE001 - connection refused, not JSON, 404, SSL: all "no dashboard there"
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(
            "--address",
            f"no Ray dashboard answers at {address} ({type(err).__name__}: {reason}); "
            "give the head's dashboard address, http://HEAD:8265 (the one `ray start --head` prints), "
            "and check that the dashboard runs there (Ray started with ray[default])",
        ) from None


def _auth_message(address: str, err: Exception) -> str:
    """Says how to give the cluster's token: Ray's client sends one only when RAY_AUTH_MODE=token."""
    if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
        return (
            f"the cluster at {address} uses token authentication and no token was sent: "
            "set RAY_AUTH_MODE=token and the cluster's token in ~/.ray/auth_token, RAY_AUTH_TOKEN or "
            "RAY_AUTH_TOKEN_PATH (`ray get-auth-token` on the head prints it)"
        )
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return (
        f"the cluster at {address} refused the authentication token ({first}); "
        "put the head's token (`ray get-auth-token` on the head) in ~/.ray/auth_token, RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH"
    )


def _storage(spec_storage: str | None, flag: str | None, notes: list[str]) -> str:
    """The results parent on the head: a relative path would be inside the job's temporary working directory."""
    def absolute(path: str) -> bool:
        return os.path.isabs(path) or path.startswith("~")

    if flag is not None:
        if not absolute(flag):
            raise ConfigError(
                "--storage-path",
                f"must be an absolute path on the cluster (or start with ~, the home folder on the head), got {flag!r}: "
                "a relative path would be inside the job's temporary working directory",
            )
        return flag
    if spec_storage:
        if absolute(spec_storage):
            return spec_storage
        notes.append(
            f"storage_path {spec_storage!r} in the file is relative, which on the cluster is inside the job's temporary "
            f"working directory; results go to {DEFAULT_STORAGE} on the head instead (choose with --storage-path)"
        )
    return DEFAULT_STORAGE


def working_dir_excludes(base_dir: str, spec_storage: str | None = None) -> list[str]:
    """Patterns (gitignore syntax, as Ray's ``excludes``; anchored ones have no trailing slash,
    which Ray's matcher would not match to a folder) left out of the uploaded folder:
    :data:`ALWAYS_EXCLUDED`, every virtual environment and raynas results folder inside it,
    and the file's relative ``storage_path``."""
    excludes = list(ALWAYS_EXCLUDED)
    if spec_storage and not (os.path.isabs(spec_storage) or spec_storage.startswith("~")):
        inside = os.path.relpath(os.path.join(base_dir, spec_storage), base_dir)
        if inside != "." and not inside.startswith(".."):
            excludes.append(f"/{Path(inside).as_posix()}")
    skip = {p for p in ALWAYS_EXCLUDED if "*" not in p}
    for root, dirs, files in os.walk(base_dir):
        rel = os.path.relpath(root, base_dir)
        if rel != "." and ("pyvenv.cfg" in files or META_FILE in files):
            excludes.append(f"/{Path(rel).as_posix()}")
            dirs[:] = []
            continue
        dirs[:] = [d for d in dirs if d not in skip]
    return excludes


def _upload_size(base_dir: str, excludes: list[str]) -> tuple[int, list[tuple[int, str]]]:
    """Bytes under ``base_dir`` outside ``excludes`` (the patterns :func:`working_dir_excludes`
    writes; .gitignore files are not read), and the largest top-level entries."""
    from fnmatch import fnmatch

    anchored = {p.strip("/") for p in excludes if p.startswith("/")}
    names = [p for p in excludes if not p.startswith("/")]

    def excluded(rel: str) -> bool:
        return rel in anchored or any(fnmatch(os.path.basename(rel), n) for n in names)

    sizes: dict[str, int] = {}
    for root, dirs, files in os.walk(base_dir):
        rel_root = os.path.relpath(root, base_dir)
        dirs[:] = [d for d in dirs if not excluded(Path(os.path.normpath(os.path.join(rel_root, d))).as_posix())]
        for f in files:
            rel = Path(os.path.normpath(os.path.join(rel_root, f))).as_posix()
            if excluded(rel):
                continue
            try:
                size = os.path.getsize(os.path.join(root, f))
            except OSError:
                continue
            top = rel.split("/")[0]
            sizes[top] = sizes.get(top, 0) + size
    largest = sorted(((s, n) for n, s in sizes.items()), reverse=True)[:5]
    return sum(sizes.values()), largest


def _mib(size: int) -> str:
    return f"{size / 2**20:,.1f} MiB"


def _submission_id(name: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "experiment"
    return f"raynas-{safe}-{time.strftime('%Y%m%d-%H%M%S')}"


def _submit_job(client, sub: Submission, metadata: dict) -> str:
    """Submits; a second submission of the same experiment in the same second gets a suffix."""
    base = _submission_id(sub.name)
    runtime_env = {"working_dir": sub.working_dir, "excludes": sub.excludes}
    # No env_vars here: `raynas run` sets its workers' variables in its own runtime_env, and
    # Ray refuses to merge a key that both the job and the driver set.
    for attempt in range(1, 6):
        submission_id = base if attempt == 1 else f"{base}-{attempt}"
        try:
            return client.submit_job(
                entrypoint=sub.entrypoint, submission_id=submission_id, runtime_env=runtime_env, metadata=metadata
            )
        except Exception as err:  # noqa: BLE001 - the SDK raises RuntimeError for any refusal
            text = str(err)
            if "already exists" in text and attempt < 5:
                continue
            if any(sign in text for sign in _TOO_LARGE):
                raise ConfigError("working_dir", _too_large(sub, text)) from None
            first = text.strip().splitlines()[0] if text.strip() else type(err).__name__
            raise ConfigError("--address", f"the Ray dashboard at {sub.address} refused the job: {first}") from None
    raise AssertionError("unreachable")  # pragma: no cover


def _too_large(sub: Submission, text: str) -> str:
    total, largest = _upload_size(sub.working_dir, sub.excludes)
    biggest = ", ".join(f"{n} ({_mib(s)})" for s, n in largest)
    return (
        f"the experiment's folder {sub.working_dir} is too large to upload as the job's working directory "
        f"({_mib(total)} before compression; largest: {biggest}; Ray's dashboard takes up to 100 MiB zipped). Leave large files out with a .rayignore or .gitignore "
        "in that folder (data the job reads can live on the cluster under an absolute path), "
        f"or put the experiment file in a smaller folder. Ray said: {text.strip().splitlines()[0]}"
    )


def follow(sub: Submission, stream: IO[str] | None = None) -> str:
    """Streams the job's logs until it ends; returns its final status (``SUCCEEDED``, ``FAILED``, ``STOPPED``)."""
    import asyncio

    stream = stream or sys.stdout
    client = connect(sub.address)

    async def tail() -> None:
        async for chunk in client.tail_job_logs(sub.submission_id):
            stream.write(chunk)
            stream.flush()

    asyncio.run(tail())
    # The log stream closes as the driver exits; the job's status follows a moment later.
    deadline = time.monotonic() + 60
    while True:
        status = client.get_job_status(sub.submission_id)
        if status.is_terminal() or time.monotonic() > deadline:
            return str(status.value)
        time.sleep(0.5)


def job_message(sub: Submission) -> str:
    """Why the job ended as it did, in Ray's first line (the rest repeats its logs)."""
    message = (connect(sub.address).get_job_info(sub.submission_id).message or "").strip()
    first = message.splitlines()[0] if message else "no reason given"
    return first.split(", last available logs")[0]


def how_to_follow(sub: Submission) -> str:
    """The lines `raynas submit` prints: the job, its results, and how to follow it."""
    addr, sid = shlex.quote(sub.address), shlex.quote(sub.submission_id)
    auth = "RAY_AUTH_MODE=token " if os.environ.get("RAY_AUTH_MODE", "").lower() == "token" else ""
    return "\n".join([
        f"Submitted {sub.name} as Ray Job {sub.submission_id} to {sub.address}",
        f"  working dir: {sub.working_dir}",
        f"  runs:        {sub.entrypoint}",
        f"  results:     {sub.results} on the head node (rank them there: raynas analyze {sub.results})",
        f"Follow it:  {auth}ray job logs --follow --address {addr} {sid}",
        f"Status:     {auth}ray job status --address {addr} {sid}",
        f"Stop it:    {auth}ray job stop --address {addr} {sid}",
        f"Jobs view:  {sub.address}/#/jobs",
    ])
