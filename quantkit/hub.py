"""The Hugging Face Hub: push an artifact folder with a generated model card, and get one back.

Everything goes through the real ``huggingface_hub`` client (:class:`~huggingface_hub.HfApi`), with the
endpoint read from ``HF_ENDPOINT`` at call time and the token from the ``token`` argument, ``HF_TOKEN``
or the stored login (``hf auth login``). The token is never logged, printed or written: error
messages are built by quantkit and scrubbed of it.

Pushing is:

* **read-only on the folder**: files are uploaded from it as they are; the model card (``README.md``)
  is generated in memory and uploaded as bytes, replacing any local ``README.md`` in the push only;
* **idempotent**: local files are compared with the remote ones (git blob sha1, or LFS sha256) and
  only changed files are committed; when nothing changed no commit is made ("already up to date");
* **retried**: connection errors, timeouts, 429 and 5xx answers are retried with exponential backoff
  (:class:`RetryPolicy`); 4xx answers are not, and 401/403/404 become :class:`~quantkit.errors.HubAuthError`
  / :class:`~quantkit.errors.HubNotFoundError` naming the repo and what to check.

Getting a model back: :func:`resolve_artifact` takes a local folder or a Hub repo id and returns a
local folder (downloading with :func:`download_artifact`).
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .artifacts import MODEL_FILE, REPORT_FILE, SPEC_FILE
from .errors import (
    ArtifactNotFoundError,
    HubAuthError,
    HubError,
    HubNotFoundError,
    HubRepoIdError,
)
from .spec import looks_like_repo_id, validate_repo_id

logger = logging.getLogger(__name__)

__all__ = [
    "PUSH_EXCLUDE",
    "CARD_FILE",
    "RetryPolicy",
    "PushResult",
    "push_artifact",
    "plan_push",
    "download_artifact",
    "resolve_artifact",
    "looks_like_repo_id",
    "hub_endpoint",
    "base_model_license",
]

T = TypeVar("T")

#: The model card's name in the pushed repo.
CARD_FILE = "README.md"
#: Files of an artifact folder that are not pushed: the tuning resume store (SQLite, local state),
#: hidden files and lock files. ``README.md`` is replaced by the generated card.
PUSH_EXCLUDE = ("trials.db", ".*", "*.lock", "__pycache__")
#: The FP32 baseline folder (``output.keep_fp32``): pushed only when asked (``include_fp32``); serving never reads it.
FP32_FOLDER = "fp32"
#: Files whose local paths (model, data, output folders of the machine that quantized) are reduced to base names
#: in what is pushed; the folder itself keeps them.
SCRUBBED_FILES = (REPORT_FILE, SPEC_FILE)

_READ_CHUNK = 1 << 20


# --------------------------------------------------------------------------- retries
@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with exponential backoff for transient Hub failures.

    ``attempts`` is the total number of tries; the waits are ``initial_delay * 2**i`` seconds,
    capped at ``max_delay``. ``sleep`` is injectable so tests do not wait.
    """

    attempts: int = 5
    initial_delay: float = 1.0
    max_delay: float = 16.0
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False, repr=False)

    def delays(self) -> Iterator[float]:
        for i in range(max(self.attempts, 1) - 1):
            yield min(self.initial_delay * (2**i), self.max_delay)


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None) if response is not None else None


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


def _is_transient(exc: BaseException) -> bool:
    """Connection errors, timeouts, 429 and 5xx answers (also when wrapped, e.g. an LFS upload error)."""
    import requests

    for e in _causes(exc):
        status = _status(e)
        if status is not None:
            return status >= 500 or status == 429
        if isinstance(e, (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError)):
            return True
        if isinstance(e, _transport_errors()):
            return True
    return False


def _transport_errors() -> tuple[type[BaseException], ...]:
    """The HTTP client's transport failures: httpx (huggingface_hub 1.x) and httpx2 (2.x), where installed."""
    import importlib

    found: list[type[BaseException]] = []
    for name in ("httpx", "httpx2"):
        try:
            found.append(importlib.import_module(name).TransportError)
        except (ImportError, AttributeError):
            continue
    return tuple(found)


def _is_hub_failure(exc: BaseException) -> bool:
    """An HTTP error answer or a transport failure (as opposed to a bug or a local problem)."""
    import requests

    return _status(exc) is not None or _is_transient(exc) or isinstance(exc, requests.RequestException)


def _retrying(what: str, fn: Callable[[], T], policy: RetryPolicy) -> T:
    """Call ``fn``; retry transient failures per ``policy``; re-raise the last error."""
    delays = list(policy.delays())
    for attempt in range(len(delays) + 1):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - filtered below
            if attempt >= len(delays) or not _is_transient(exc):
                if attempt and _is_transient(exc):
                    exc.quantkit_attempts = attempt + 1  # type: ignore[attr-defined]
                raise
            status = _status(exc)
            logger.warning(
                "%s failed (%s); retrying in %.1fs (attempt %d of %d)", what,
                f"HTTP {status}" if status else type(exc).__name__, delays[attempt], attempt + 2, len(delays) + 1,
            )
            policy.sleep(delays[attempt])
    raise AssertionError("unreachable")  # pragma: no cover


# --------------------------------------------------------------------------- client and errors
def hub_endpoint() -> str:
    """The Hub endpoint: ``HF_ENDPOINT`` read now (not at import time), else huggingface_hub's default."""
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def _api(token: str | None) -> Any:
    from huggingface_hub import HfApi

    return HfApi(endpoint=hub_endpoint(), token=token)


def base_model_license(repo_id: str, revision: str | None = None, token: str | None = None) -> str | None:
    """The license on the Hub card of the model ``repo_id`` (best effort: skipped offline, failures ignored)."""
    from huggingface_hub import HfApi, constants

    if constants.HF_HUB_OFFLINE:
        return None
    try:
        info = HfApi(endpoint=hub_endpoint(), token=token).model_info(repo_id, revision=revision, timeout=10)
    except Exception as exc:  # noqa: BLE001 - the license is optional
        logger.debug("no license from %s: %s", repo_id, type(exc).__name__)
        return None
    data = getattr(info, "card_data", None)
    value = getattr(data, "license", None) if data is not None else None
    return str(value) if value else None


def _effective_token(token: str | None) -> str | None:
    if token:
        return token
    try:
        from huggingface_hub import get_token

        return get_token()
    except Exception:  # noqa: BLE001 - only used to scrub messages
        return None


def _scrub(text: str, token: str | None) -> str:
    if token:
        text = text.replace(token, "***")
    return text


#: Loggers of the HTTP clients under huggingface_hub; at DEBUG some print raw headers (a server may echo the token).
_HTTP_LOGGERS = ("urllib3.connectionpool", "httpx", "httpx2", *(f"{lib}.{part}" for lib in ("httpcore", "httpcore2")
                 for part in ("connection", "http11", "http2", "proxy", "socks")))


class _TokenScrubber(logging.Filter):
    """Replaces the token in every record of the HTTP client loggers (the records still go out)."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001 - a record that cannot format is left alone
            return True
        if self.token in text:
            record.msg, record.args = text.replace(self.token, "***"), ()
        return True


@contextlib.contextmanager
def _scrubbed_http_logs(token: str | None) -> Iterator[None]:
    """While talking to the Hub, keep ``token`` out of the HTTP clients' debug logs."""
    if not token:
        yield
        return
    scrubber = _TokenScrubber(token)
    loggers = [logging.getLogger(name) for name in _HTTP_LOGGERS]
    for log in loggers:
        log.addFilter(scrubber)
    try:
        yield
    finally:
        for log in loggers:
            log.removeFilter(scrubber)


def _server_message(exc: BaseException) -> str:
    """The Hub's own short explanation of an HTTP error, when it gave one."""
    response = getattr(exc, "response", None)
    if response is None:
        return ""
    msg = ""
    try:
        msg = response.headers.get("X-Error-Message") or ""
        if not msg:
            data = response.json()
            msg = data.get("error", "") if isinstance(data, dict) else ""
    except Exception:  # noqa: BLE001 - best effort
        msg = ""
    return str(msg)[:300]


_AUTH_HINT = (
    "check the token: run `hf auth login` (or set HF_TOKEN) with a token that has write access; "
    "check the repo id `owner/name` and that you may write to its owner (your user or an organization you "
    "belong to)"
)


def _hub_error(exc: BaseException, *, repo_id: str, revision: str | None, action: str, token: str | None,
               write: bool) -> HubError:
    """Turn a huggingface_hub / requests exception into a quantkit error naming the repo."""
    from huggingface_hub.errors import RevisionNotFoundError

    endpoint = hub_endpoint()
    status = _status(exc)
    where = f"{repo_id}" + (f" (revision {revision})" if revision else "")
    detail = _scrub(_server_message(exc), token)
    detail = f": {detail}" if detail else ""
    if status == 401:
        return HubAuthError(
            f"the Hub at {endpoint} rejected the credentials while {action} {where} (HTTP 401){detail}",
            repo_id=repo_id, status=status, hint=_AUTH_HINT,
        )
    if status == 403:
        return HubAuthError(
            f"no permission while {action} {where} on {endpoint} (HTTP 403){detail}",
            repo_id=repo_id, status=status,
            hint=f"use a token with the write role (or a fine-grained token allowed to write to "
            f"'{repo_id.split('/')[0]}'); {_AUTH_HINT}" if write else _AUTH_HINT,
        )
    if status == 404 or isinstance(exc, RevisionNotFoundError):
        what = f"revision {revision!r} of {repo_id}" if isinstance(exc, RevisionNotFoundError) and revision else repo_id
        return HubNotFoundError(
            f"{what} was not found on {endpoint} while {action} (HTTP 404){detail}",
            repo_id=repo_id, status=404,
            hint="check the repo id and --revision; a private repo needs a token that can read it "
            "(`hf auth login` or HF_TOKEN)",
        )
    attempts = getattr(exc, "quantkit_attempts", None)
    tried = f" after {attempts} attempts" if attempts else ""
    if status is not None:
        return HubError(
            f"the Hub at {endpoint} answered HTTP {status} while {action} {where}{tried}{detail}",
            repo_id=repo_id, status=status,
            hint="5xx answers are temporary: retry later" if status >= 500 else None,
        )
    reason = _scrub(str(exc), token).splitlines()[0][:300] if str(exc) else type(exc).__name__
    return HubError(
        f"could not reach the Hub at {endpoint} while {action} {where}{tried}: {reason}",
        repo_id=repo_id,
        hint="check the network, proxy settings and HF_ENDPOINT; rerunning is safe (only changed files are "
        "uploaded)",
    )


#: The Hub API routes behind each action (named in errors about malformed answers).
_ROUTES = {
    "creating": "POST /api/repos/create",
    "creating the branch of": "POST /api/models/{repo}/branch/{{branch}}",
    "listing the files of": "GET /api/models/{repo}/tree/{{revision}}",
    "uploading to": "POST /api/models/{repo}/preupload|commit/{{revision}}",
    "downloading": "GET /api/models/{repo}/revision/{{revision}} and /{repo}/resolve/...",
}

#: What huggingface_hub raises when an answer has an unexpected shape (bad JSON, missing keys, wrong types).
_MALFORMED_ANSWER = (ValueError, KeyError, TypeError, AttributeError, IndexError, LookupError)


def _unexpected_answer(exc: BaseException | str, *, repo_id: str, action: str, token: str | None) -> HubError:
    """A HubError for an answer quantkit cannot read, naming the endpoint; the local files are untouched."""
    what = exc if isinstance(exc, str) else f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
    route = _ROUTES.get(action, "").format(repo=repo_id)
    return HubError(
        f"the Hub at {hub_endpoint()} gave an unexpected answer while {action} {repo_id}"
        f"{f' ({route})' if route else ''}: {_scrub(str(what), token)}; nothing local was changed",
        repo_id=repo_id,
        hint="check HF_ENDPOINT points at a Hugging Face Hub (not a proxy or login page) and retry",
    )


def _expect(ok: bool, what: str, *, repo_id: str, action: str, token: str | None) -> None:
    if not ok:
        raise _unexpected_answer(what, repo_id=repo_id, action=action, token=token)


def _check_repo_id(repo_id: str) -> str:
    try:
        return validate_repo_id(repo_id)
    except ValueError as exc:
        raise HubRepoIdError(str(exc), repo_id=repo_id) from None


# --------------------------------------------------------------------------- local files
@dataclass(frozen=True)
class LocalFile:
    """One file to push: where it is (or its bytes), its size and its two content hashes."""

    path_in_repo: str
    source: Path | bytes
    size: int
    sha256: str
    git_sha1: str

    @classmethod
    def from_bytes(cls, path_in_repo: str, data: bytes) -> "LocalFile":
        sha1 = hashlib.sha1(f"blob {len(data)}\0".encode())
        sha1.update(data)
        return cls(path_in_repo, data, len(data), hashlib.sha256(data).hexdigest(), sha1.hexdigest())

    @classmethod
    def from_path(cls, path_in_repo: str, path: Path) -> "LocalFile":
        size = path.stat().st_size
        sha256 = hashlib.sha256()
        sha1 = hashlib.sha1(f"blob {size}\0".encode())
        with open(path, "rb") as f:
            while chunk := f.read(_READ_CHUNK):
                sha256.update(chunk)
                sha1.update(chunk)
        return cls(path_in_repo, path, size, sha256.hexdigest(), sha1.hexdigest())

    def same_as(self, remote: Any) -> bool:
        """True when ``remote`` (a :class:`huggingface_hub.hf_api.RepoFile`) has this content."""
        if remote is None or getattr(remote, "size", None) != self.size:
            return False
        lfs = getattr(remote, "lfs", None)
        if lfs is not None:
            return getattr(lfs, "sha256", None) == self.sha256
        return getattr(remote, "blob_id", None) == self.git_sha1


def _excluded(rel: str) -> bool:
    return any(fnmatch.fnmatch(part, pattern) for part in rel.split("/") for pattern in PUSH_EXCLUDE)


def _artifact_folder(folder: str | Path) -> Path:
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise ArtifactNotFoundError(f"{path} is not a folder", hint="pass the artifact folder written by quantize/tune")
    if not (path / MODEL_FILE).is_file() or not (path / REPORT_FILE).is_file():
        raise ArtifactNotFoundError(
            f"{path} is not a quantkit artifact folder (it needs {MODEL_FILE} and {REPORT_FILE})",
            hint="pass the folder written by `quantkit quantize` / `quantkit tune`",
        )
    return path.resolve()


def _local_files(folder: Path, include_fp32: bool = False) -> list[tuple[str, Path]]:
    files = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if not include_fp32 and rel.split("/")[0] == FP32_FOLDER:
            continue
        if path.is_file() and not _excluded(rel) and rel != CARD_FILE:
            files.append((rel, path))
    return files


def _scrub_paths(value: Any) -> Any:
    """``value`` with every absolute local path (a string starting with ``/``, ``~`` or a drive) replaced by its
    base name: user names and folder layouts of the machine that quantized stay on it."""
    if isinstance(value, dict):
        return {k: _scrub_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub_paths(v) for v in value]
    if isinstance(value, str) and (value.startswith(("/", "~")) or (len(value) > 2 and value[1:3] in (":\\", ":/"))):
        return Path(value.replace("\\", "/")).name or value
    return value


def _scrubbed(rel: str, path: Path) -> bytes:
    """The bytes pushed for ``rel``: the report and the spec with local paths reduced to base names."""
    import json

    from .specio import read_yaml

    if rel == REPORT_FILE:
        report = json.loads(path.read_text(encoding="utf-8"))
        return (json.dumps(_scrub_paths(report), indent=2, sort_keys=False) + "\n").encode("utf-8")
    import yaml

    return yaml.safe_dump(_scrub_paths(read_yaml(path)), sort_keys=False).encode("utf-8")


@dataclass
class PushPlan:
    """What a push of ``folder`` would upload: every file with its hashes, and the model card text."""

    folder: Path
    repo_id: str
    files: list[LocalFile]
    card: str
    commit_message: str


def _default_commit_message(report: dict[str, Any]) -> str:
    q = report.get("quantization", {})
    cfg = q.get("config", {})
    metric = report.get("quantized", {}).get("metric")
    value = report.get("quantized", {}).get("value")
    score = f", {metric} {value:.4f}" if isinstance(value, (int, float)) and metric else ""
    return f"quantkit: {cfg.get('approach', 'int8')} {cfg.get('weight_type', 'int8')} ONNX model " \
           f"via {q.get('backend', '?')}{score}"


def plan_push(folder: str | Path, repo_id: str, *, base_model: str | None = None, license: str | None = None,
              commit_message: str | None = None, token: str | None = None, include_fp32: bool = False) -> PushPlan:
    """Read ``folder`` (without changing it) and prepare the files and the model card to push: what serving needs
    (the FP32 baseline ``fp32/`` only with ``include_fp32``), the report and spec with local paths reduced to
    base names."""
    import json

    from .card import find_base_model, find_license, model_card_for_folder

    repo_id = _check_repo_id(repo_id)
    path = _artifact_folder(folder)
    report = json.loads((path / REPORT_FILE).read_text(encoding="utf-8"))
    entries = _local_files(path, include_fp32)
    if (path / CARD_FILE).is_file():
        logger.info("%s in %s is not pushed: the Hub gets the generated model card instead", CARD_FILE, path)
    base = find_base_model(report, base_model)
    if base is None:
        logger.warning("the model card names no base_model (%s is a local folder without one in its README): pass "
                       "--base-model ORG/NAME so the Hub links this model to the one it quantizes",
                       Path(str(report.get("model", {}).get("name_or_path") or "the model")).name)
    found = find_license(report, path, explicit=license)
    if found is None and base:
        found = base_model_license(base, report.get("model", {}).get("revision"), token)
    card = model_card_for_folder(
        path, repo_id, report=report, files=[rel for rel, _ in entries], base_model=base, license=found,
    )
    files = [LocalFile.from_bytes(rel, _scrubbed(rel, p)) if rel in SCRUBBED_FILES else LocalFile.from_path(rel, p)
             for rel, p in entries]
    files.append(LocalFile.from_bytes(CARD_FILE, card.encode("utf-8")))
    return PushPlan(path, repo_id, files, card, commit_message or _default_commit_message(report))


# --------------------------------------------------------------------------- push
@dataclass(frozen=True)
class PushResult:
    """What :func:`push_artifact` did."""

    repo_id: str
    revision: str
    repo_url: str
    up_to_date: bool
    uploaded: tuple[str, ...] = ()
    commit_url: str | None = None
    commit_oid: str | None = None
    pr_url: str | None = None

    @property
    def url(self) -> str:
        """The most specific link: the pull request, the commit, or the repo."""
        return self.pr_url or self.commit_url or self.repo_url


def _remote_files(api: Any, repo_id: str, revision: str) -> dict[str, Any]:
    from huggingface_hub.errors import EntryNotFoundError, RevisionNotFoundError
    from huggingface_hub.hf_api import RepoFile

    try:
        entries = list(api.list_repo_tree(repo_id, revision=revision, recursive=True))
    except (RevisionNotFoundError, EntryNotFoundError):
        return {}
    return {e.path: e for e in entries if isinstance(e, RepoFile)}


def push_artifact(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    create_pr: bool = False,
    base_model: str | None = None,
    license: str | None = None,
    token: str | None = None,
    retry: RetryPolicy | None = None,
    include_fp32: bool = False,
) -> PushResult:
    """Push an artifact folder to the Hub repo ``repo_id`` with a generated model card.

    Creates the repo if needed (``private`` only applies then) and the branch ``revision`` from main
    if it does not exist; commits only the files whose content differs from the remote (no commit at
    all when nothing changed), or opens a pull request with ``create_pr``. ``token`` defaults to
    ``HF_TOKEN`` / the stored login. The folder is only read; what is pushed is what serving needs (the FP32
    baseline ``fp32/`` only with ``include_fp32``), with local paths in the report and spec reduced to base names.

    Raises :class:`~quantkit.errors.HubAuthError` (401/403), :class:`~quantkit.errors.HubNotFoundError`
    (404), :class:`~quantkit.errors.HubError` (network, 5xx after retries) and
    :class:`~quantkit.errors.ArtifactNotFoundError` (not an artifact folder).
    """
    from huggingface_hub import CommitOperationAdd

    policy = retry or RetryPolicy()
    repo_id = _check_repo_id(repo_id)
    _artifact_folder(folder)
    secret = _effective_token(token)
    if not secret:
        raise HubAuthError(
            f"no Hugging Face token found to push to {repo_id}",
            repo_id=repo_id, hint="run `hf auth login` or set HF_TOKEN to a token with write access",
        )
    plan = plan_push(folder, repo_id, base_model=base_model, license=license, commit_message=commit_message,
                     token=token, include_fp32=include_fp32)
    branch = revision or "main"
    api = _api(token)
    endpoint = hub_endpoint()

    def call(action: str, fn: Callable[[], T]) -> T:
        try:
            with _scrubbed_http_logs(secret):
                return _retrying(f"{action} {repo_id}", fn, policy)
        except HubError:
            raise
        except Exception as exc:  # noqa: BLE001 - mapped to quantkit errors
            if _status(exc) is None and isinstance(exc, _MALFORMED_ANSWER):
                raise _unexpected_answer(exc, repo_id=repo_id, action=action, token=secret) from exc
            if _is_hub_failure(exc):
                raise _hub_error(exc, repo_id=repo_id, revision=revision, action=action, token=secret,
                                 write=True) from None
            raise

    repo_url = call("creating", lambda: api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model"))
    _expect(isinstance(repo_url, str) and bool(repo_url), f"repo url {repo_url!r}", repo_id=repo_id,
            action="creating", token=secret)
    repo_url = str(repo_url)
    if branch != "main":
        call("creating the branch of", lambda: api.create_branch(repo_id, branch=branch, exist_ok=True))
    remote = call("listing the files of", lambda: _remote_files(api, repo_id, branch))
    for path_in_repo, entry in remote.items():
        _expect(isinstance(path_in_repo, str) and isinstance(getattr(entry, "size", None), int)
                and isinstance(getattr(entry, "blob_id", None), (str, type(None))),
                f"file entry {path_in_repo!r} without a path, size or blob id", repo_id=repo_id,
                action="listing the files of", token=secret)
    changed = [f for f in plan.files if not f.same_as(remote.get(f.path_in_repo))]
    if not changed:
        logger.info("%s@%s is already up to date with %s", repo_id, branch, plan.folder)
        return PushResult(repo_id, branch, repo_url, up_to_date=True)

    def commit() -> Any:
        operations = [CommitOperationAdd(path_in_repo=f.path_in_repo,
                                         path_or_fileobj=f.source if isinstance(f.source, bytes) else str(f.source))
                      for f in changed]
        return api.create_commit(repo_id, operations=operations, commit_message=plan.commit_message,
                                 revision=branch, create_pr=create_pr, repo_type="model")

    info = call("uploading to", commit)
    pr_url = getattr(info, "pr_url", None)
    _expect(isinstance(getattr(info, "commit_url", None), str) and isinstance(getattr(info, "oid", None), str)
            and isinstance(pr_url, (str, type(None))), "a commit without commit_url/oid", repo_id=repo_id,
            action="uploading to", token=secret)
    logger.info("pushed %d file(s) to %s@%s: %s", len(changed), repo_id, branch, pr_url or info.commit_url)
    return PushResult(
        repo_id, branch, repo_url or f"{endpoint}/{repo_id}", up_to_date=False,
        uploaded=tuple(f.path_in_repo for f in changed), commit_url=info.commit_url, commit_oid=info.oid,
        pr_url=pr_url,
    )


# --------------------------------------------------------------------------- download
def download_artifact(
    repo_id: str,
    revision: str | None = None,
    *,
    token: str | None = None,
    cache_dir: str | Path | None = None,
    retry: RetryPolicy | None = None,
) -> Path:
    """Download a quantized artifact repo (``snapshot_download``) and return its local folder.

    Uses the Hugging Face cache (a second call with an unchanged repo downloads nothing). Raises
    :class:`~quantkit.errors.HubNotFoundError` / :class:`~quantkit.errors.HubAuthError` naming the
    repo, and :class:`~quantkit.errors.ArtifactNotFoundError` if it holds no ``model.onnx``.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    repo_id = _check_repo_id(repo_id)
    policy = retry or RetryPolicy()
    secret = _effective_token(token)

    def fetch() -> str:
        return snapshot_download(repo_id, revision=revision, repo_type="model", token=token,
                                 cache_dir=str(cache_dir) if cache_dir is not None else None,
                                 endpoint=hub_endpoint())

    try:
        with _scrubbed_http_logs(secret):
            folder = Path(_retrying(f"downloading {repo_id}", fetch, policy))
    except LocalEntryNotFoundError as exc:
        raise HubError(
            f"{repo_id} is not in the local Hugging Face cache and the Hub cannot be reached "
            f"({_scrub(str(exc), secret).splitlines()[0][:200]})",
            repo_id=repo_id, hint="unset HF_HUB_OFFLINE, or check the network and HF_ENDPOINT",
        ) from None
    except Exception as exc:  # noqa: BLE001 - mapped to quantkit errors
        if _status(exc) is None and isinstance(exc, _MALFORMED_ANSWER):
            raise _unexpected_answer(exc, repo_id=repo_id, action="downloading", token=secret) from exc
        if _is_hub_failure(exc):
            raise _hub_error(exc, repo_id=repo_id, revision=revision, action="downloading", token=secret,
                             write=False) from None
        raise
    if not isinstance(folder, Path) or not folder.is_dir():
        raise _unexpected_answer(f"no local folder: {folder}", repo_id=repo_id, action="downloading", token=secret)
    if not (folder / MODEL_FILE).is_file():
        raise ArtifactNotFoundError(
            f"{repo_id}" + (f"@{revision}" if revision else "") + f" has no {MODEL_FILE}: not a quantized model "
            "pushed by quantkit (or by Optimum)",
            hint="pass the repo of a quantized model, or quantize this one with `quantkit quantize --model`",
        )
    logger.info("%s downloaded to %s", repo_id, folder)
    return folder


def resolve_artifact(path_or_repo_id: str | Path, revision: str | None = None, *, token: str | None = None,
                     cache_dir: str | Path | None = None, retry: RetryPolicy | None = None) -> Path:
    """A local artifact folder for ``path_or_repo_id``: the folder itself if it exists, otherwise the
    download of the Hub repo of that id (see :func:`download_artifact`).

    Raises :class:`~quantkit.errors.ArtifactNotFoundError` when it is neither an existing folder nor a
    repo id, or when the folder/repo has no ``model.onnx``.
    """
    text = str(path_or_repo_id)
    local = Path(text).expanduser()
    if local.exists():
        if not local.is_dir():
            raise ArtifactNotFoundError(f"{local} is a file; expected an artifact folder or a Hub repo id")
        if not (local / MODEL_FILE).is_file():
            raise ArtifactNotFoundError(
                f"{local} has no {MODEL_FILE}: not a quantkit artifact folder",
                hint="pass the folder written by `quantkit quantize` / `quantkit tune`, or a Hub repo id",
            )
        return local.resolve()
    if isinstance(path_or_repo_id, str) and looks_like_repo_id(text):
        return download_artifact(text, revision, token=token, cache_dir=cache_dir, retry=retry)
    raise ArtifactNotFoundError(
        f"{text} is neither an existing folder nor a Hub repo id (owner/name)",
        hint="pass the artifact folder written by quantize/tune, or the repo id it was pushed to",
    )
