"""A local stand-in for the Hugging Face Hub HTTP API, for tests (stdlib only).

It implements what ``huggingface_hub`` 0.36 uses to push and to load models back:

* ``POST /api/repos/create``, ``POST /api/validate-yaml``
* ``POST /api/models/{repo}/preupload/{rev}`` (every file is "regular": its content travels base64 in the commit)
* ``POST /api/models/{repo}/commit/{rev}`` (NDJSON: header, file, deletedFile, deletedFolder; ``?create_pr=1``)
* ``POST /api/models/{repo}/branch/{branch}``
* ``GET /api/models/{repo}[/revision/{rev}]`` (model info with ``sha``, ``siblings``, ``cardData``)
* ``GET /api/models/{repo}/tree/{rev}[/{path}]``, ``POST /api/models/{repo}/paths-info/{rev}``
* ``HEAD``/``GET /{repo}/resolve/{rev}/{file}`` (``X-Repo-Commit``, ``ETag``, ``Content-Length``)

Repos live in memory with git-like commits, branches and ``refs/pr/N``. Every request is recorded
(method, path, status, whether it was authorized — never the token itself), and faults can be
injected: an HTTP status N times (or forever), or a dropped connection. ``malform()`` makes
matching requests answer 200 with a malformed body instead (see :data:`MALFORMED`): not JSON,
the wrong JSON shape, missing keys, wrong types, or an empty body.

Use it as a context manager::

    with HubServer(token="hf_x") as hub:
        os.environ["HF_ENDPOINT"] = hub.url
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["HubServer", "Recorded", "Fault", "Malformed", "MALFORMED", "git_sha1"]

#: Kinds of malformed 200 answers ``HubServer.malform`` can give.
MALFORMED = ("not-json", "empty", "list", "null", "missing-keys", "wrong-types", "truncated")


def reset_hub_sessions() -> None:
    """Drop huggingface_hub's shared HTTP session (``reset_sessions`` in 0.x, ``close_session`` in 1.x/2.x),
    so the next request sees the patched endpoint and offline mode."""
    from huggingface_hub import utils

    reset = getattr(utils, "reset_sessions", None) or getattr(utils, "close_session", None)
    if reset is not None:
        reset()


def git_sha1(data: bytes) -> str:
    """The git blob id of ``data`` (what the Hub calls a regular file's oid)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass(frozen=True)
class Recorded:
    """One request the server answered."""

    method: str
    path: str
    query: dict[str, list[str]]
    status: int | None  # None: the connection was dropped
    authorized: bool
    faulted: bool


@dataclass
class Fault:
    """Answer matching requests with ``status`` (or drop the connection) ``times`` times (None: forever)."""

    status: int | None
    times: int | None = None
    method: str | None = None
    path_contains: str | None = None
    message: str = "injected failure"

    def matches(self, method: str, path: str) -> bool:
        if self.times is not None and self.times <= 0:
            return False
        if self.method is not None and self.method != method:
            return False
        return self.path_contains is None or self.path_contains in path


@dataclass
class Malformed:
    """Answer matching requests with HTTP 200 and a malformed body of ``kind`` (one of MALFORMED)."""

    kind: str
    method: str | None = None
    path_contains: str | None = None

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method != method:
            return False
        return self.path_contains is None or self.path_contains in path

    def body(self, good: bytes) -> bytes:
        """The malformed version of the good answer ``good``."""
        if self.kind == "not-json":
            return b"<html><body>502 Bad Gateway</body></html>"
        if self.kind == "empty":
            return b""
        if self.kind == "list":
            return b"[1, 2, 3]"
        if self.kind == "null":
            return b"null"
        if self.kind == "truncated":
            return good[: max(len(good) // 2, 1)]
        try:
            obj = json.loads(good)
        except ValueError:
            return good[: max(len(good) // 2, 1)]
        if self.kind == "missing-keys":
            return json.dumps({} if isinstance(obj, dict) else [{} for _ in obj] if isinstance(obj, list) else {}).encode()
        if self.kind == "wrong-types":
            def spoil(v: Any) -> Any:
                if isinstance(v, dict):
                    return {k: spoil(x) for k, x in v.items()}
                if isinstance(v, list):
                    return [spoil(x) for x in v]
                if isinstance(v, str):
                    return 12345
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    return "not a number"
                return v
            return json.dumps(spoil(obj)).encode()
        raise ValueError(f"unknown malformed kind {self.kind!r}")


@dataclass
class Commit:
    oid: str
    parent: str | None
    message: str
    files: dict[str, bytes]


@dataclass
class Repo:
    repo_id: str
    private: bool = False
    refs: dict[str, str] = field(default_factory=dict)  # branch or refs/pr/N -> commit oid
    commits: dict[str, Commit] = field(default_factory=dict)
    prs: int = 0

    def resolve(self, revision: str) -> Commit | None:
        oid = self.refs.get(revision, revision)
        return self.commits.get(oid)


class _HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


def _front_matter(text: str) -> dict[str, str]:
    """Top-level ``key: value`` scalars of a README's YAML block (enough for ``cardData``)."""
    if not text.startswith("---"):
        return {}
    block = text.split("---", 2)[1] if text.count("---") >= 2 else ""
    data = {}
    for line in block.splitlines():
        if line and not line.startswith((" ", "-", "#")) and ":" in line:
            key, _, value = line.partition(":")
            if value.strip():
                data[key.strip()] = value.strip().strip("'\"")
    return data


class HubServer:
    """The fake Hub. ``token``: when set, writes need ``Authorization: Bearer <token>`` and private repos
    are invisible without it; reads of public repos need no token."""

    def __init__(self, token: str | None = None, host: str = "127.0.0.1") -> None:
        self.token = token
        self.repos: dict[str, Repo] = {}
        self.requests: list[Recorded] = []
        self.faults: list[Fault] = []
        self.malformed: list[Malformed] = []
        self.lock = threading.RLock()
        self._counter = itertools.count(1)
        self._httpd = ThreadingHTTPServer((host, 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "HubServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="hubserver", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ------------------------------------------------------------------ test helpers
    def reset(self) -> None:
        """Forget every repo, request and fault."""
        with self.lock:
            self.repos.clear()
            self.requests.clear()
            self.faults.clear()
            self.malformed.clear()

    def malform(self, kind: str, *, method: str | None = None, path_contains: str | None = None) -> Malformed:
        """Answer matching requests (until :meth:`reset`) with 200 and a malformed body of ``kind``."""
        if kind not in MALFORMED:
            raise ValueError(f"kind must be one of {MALFORMED}")
        m = Malformed(kind, method, path_contains)
        with self.lock:
            self.malformed.append(m)
        return m

    def fail(self, status: int | None, times: int | None = None, *, method: str | None = None,
             path_contains: str | None = None, message: str = "injected failure") -> Fault:
        """Inject a fault: ``status`` (None = drop the connection) ``times`` times, or forever."""
        fault = Fault(status, times, method, path_contains, message)
        with self.lock:
            self.faults.append(fault)
        return fault

    def add_repo(self, repo_id: str, files: dict[str, bytes], *, private: bool = False) -> str:
        """Create a repo whose main branch holds ``files``; returns the commit oid."""
        with self.lock:
            repo = self._create(repo_id, private)
            return self._commit(repo, "main", "seed", files)

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        with self.lock:
            commit = self.repos[repo_id].resolve(revision)
            return dict(commit.files) if commit else {}

    def calls(self, method: str, path_contains: str, *, ok: bool | None = None) -> list[Recorded]:
        """Recorded requests of ``method`` whose path contains ``path_contains`` (``ok``: only 2xx / only not)."""
        with self.lock:
            found = [r for r in self.requests if r.method == method and path_contains in r.path]
        if ok is not None:
            found = [r for r in found if (r.status is not None and 200 <= r.status < 300) == ok]
        return found

    def commits(self, repo_id: str) -> int:
        """Successful commit requests on ``repo_id`` (the seed/initial commit not counted)."""
        return len(self.calls("POST", f"/api/models/{repo_id}/commit/", ok=True))

    # ------------------------------------------------------------------ state changes
    def _new_oid(self, *parts: str) -> str:
        return hashlib.sha1("|".join((*parts, str(next(self._counter)))).encode()).hexdigest()

    def _create(self, repo_id: str, private: bool) -> Repo:
        repo = Repo(repo_id, private)
        self.repos[repo_id] = repo
        initial = Commit(self._new_oid(repo_id, "initial"), None, "initial commit",
                         {".gitattributes": b"*.onnx filter=lfs diff=lfs merge=lfs -text\n"})
        repo.commits[initial.oid] = initial
        repo.refs["main"] = initial.oid
        return repo

    def _commit(self, repo: Repo, ref: str, message: str, files: dict[str, bytes],
                deleted: tuple[str, ...] = ()) -> str:
        parent = repo.resolve(ref)
        content = dict(parent.files) if parent else {}
        for path in deleted:
            for name in [p for p in content if p == path or p.startswith(path.rstrip("/") + "/")]:
                del content[name]
        content.update(files)
        commit = Commit(self._new_oid(repo.repo_id, ref, message), parent.oid if parent else None, message, content)
        repo.commits[commit.oid] = commit
        repo.refs[ref] = commit.oid
        return commit.oid

    # ------------------------------------------------------------------ HTTP
    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:
                server._handle(self, "GET")

            def do_HEAD(self) -> None:
                server._handle(self, "HEAD")

            def do_POST(self) -> None:
                server._handle(self, "POST")

            def do_PUT(self) -> None:
                server._handle(self, "PUT")

            def do_DELETE(self) -> None:
                server._handle(self, "DELETE")

        return Handler

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(h.path)
        path, query = parts.path, parse_qs(parts.query)
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        authorized = self.token is not None and h.headers.get("Authorization") == f"Bearer {self.token}"
        with self.lock:
            fault = next((f for f in self.faults if f.matches(method, path)), None)
            if fault is not None and fault.times is not None:
                fault.times -= 1
        if fault is not None:
            self._record(method, path, query, fault.status, authorized, True)
            if fault.status is None:  # drop the connection without answering
                h.close_connection = True
                return
            self._send_error(h, method, _HubError(fault.status, fault.message))
            return
        try:
            with self.lock:
                status, headers, payload = self._route(method, path, query, body, h.headers, authorized)
        except _HubError as err:
            self._record(method, path, query, err.status, authorized, False)
            self._send_error(h, method, err)
            return
        with self.lock:
            bad = next((m for m in self.malformed if m.matches(method, path)), None)
        if bad is not None and 200 <= status < 300:
            payload, status = bad.body(payload), 200
            headers = {k: v for k, v in headers.items() if k.lower() not in ("etag", "x-repo-commit")} \
                if bad.kind in ("missing-keys",) else headers
        self._record(method, path, query, status, authorized, bad is not None)
        self._send(h, method, status, headers, payload)

    def _record(self, method: str, path: str, query: dict[str, list[str]], status: int | None, authorized: bool,
                faulted: bool) -> None:
        with self.lock:
            self.requests.append(Recorded(method, path, query, status, authorized, faulted))

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, method: str, status: int, headers: dict[str, str], payload: bytes) -> None:
        h.send_response(status)
        for key, value in headers.items():
            h.send_header(key, value)
        h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        if method != "HEAD":
            h.wfile.write(payload)

    def _send_error(self, h: BaseHTTPRequestHandler, method: str, err: _HubError) -> None:
        headers = {"Content-Type": "application/json", "X-Error-Message": err.message}
        if err.code:
            headers["X-Error-Code"] = err.code
        self._send(h, method, err.status, headers, json.dumps({"error": err.message}).encode())

    # ------------------------------------------------------------------ routing
    def _repo(self, repo_id: str, authorized: bool) -> Repo:
        repo = self.repos.get(repo_id)
        if repo is None or (repo.private and not authorized):
            raise _HubError(404, "Repository not found", "RepoNotFound")
        return repo

    def _commit_at(self, repo: Repo, revision: str) -> Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise _HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    def _need_write(self, authorized: bool) -> None:
        if not authorized:
            raise _HubError(401, "Invalid username or password.")

    def _route(self, method: str, path: str, query: dict[str, list[str]], body: bytes, headers: Any,
               authorized: bool) -> tuple[int, dict[str, str], bytes]:
        seg = [unquote(s) for s in path.strip("/").split("/")]
        if method == "POST" and path == "/api/repos/create":
            return self._create_repo(json.loads(body or b"{}"), authorized)
        if method == "POST" and path == "/api/validate-yaml":
            return _json({"errors": [], "warnings": []})
        if method == "GET" and path == "/api/whoami-v2":
            self._need_write(authorized)
            return _json({"type": "user", "name": "tester", "auth": {"accessToken": {"role": "write"}}})
        if len(seg) >= 4 and seg[:2] == ["api", "models"]:
            repo_id = f"{seg[2]}/{seg[3]}"
            rest = seg[4:]
            if method == "GET" and not rest:
                return self._model_info(repo_id, "main", authorized)
            if method == "GET" and len(rest) == 2 and rest[0] == "revision":
                return self._model_info(repo_id, rest[1], authorized)
            if method == "GET" and len(rest) >= 2 and rest[0] == "tree":
                return self._tree(repo_id, rest[1], "/".join(rest[2:]), query, authorized)
            if method == "POST" and len(rest) == 2 and rest[0] == "paths-info":
                return self._paths_info(repo_id, rest[1], body, authorized)
            if method == "POST" and len(rest) == 2 and rest[0] == "preupload":
                return self._preupload(repo_id, rest[1], json.loads(body or b"{}"), query, authorized)
            if method == "POST" and len(rest) == 2 and rest[0] == "commit":
                return self._commit_endpoint(repo_id, rest[1], body, query, authorized)
            if method == "POST" and len(rest) == 2 and rest[0] == "branch":
                return self._branch(repo_id, rest[1], json.loads(body or b"{}"), authorized)
        if len(seg) >= 5 and seg[2] == "resolve" and method in ("GET", "HEAD"):
            return self._resolve(f"{seg[0]}/{seg[1]}", seg[3], "/".join(seg[4:]), authorized)
        raise _HubError(404, f"no route for {method} {path}")

    def _create_repo(self, payload: dict[str, Any], authorized: bool) -> tuple[int, dict[str, str], bytes]:
        self._need_write(authorized)
        if payload.get("type", "model") != "model":
            raise _HubError(400, "only model repos here")
        repo_id = f"{payload.get('organization') or 'tester'}/{payload['name']}"
        url = f"{self.url}/{repo_id}"
        if repo_id in self.repos:
            return _json({"error": "You already created this model repo", "url": url}, 409)
        # huggingface_hub < 2 sends private: true; 2.x sends visibility: "private"
        self._create(repo_id, bool(payload.get("private")) or payload.get("visibility") == "private")
        return _json({"url": url, "name": repo_id, "id": repo_id})

    def _model_info(self, repo_id: str, revision: str, authorized: bool) -> tuple[int, dict[str, str], bytes]:
        repo = self._repo(repo_id, authorized)
        commit = self._commit_at(repo, revision)
        info: dict[str, Any] = {
            "_id": hashlib.md5(repo_id.encode()).hexdigest()[:24],
            "id": repo_id,
            "modelId": repo_id,
            "sha": commit.oid,
            "private": repo.private,
            "tags": [],
            "siblings": [{"rfilename": p} for p in sorted(commit.files)],
        }
        readme = commit.files.get("README.md")
        if readme is not None:
            info["cardData"] = _front_matter(readme.decode("utf-8", "replace"))
        return _json(info)

    @staticmethod
    def _entries(commit: Commit, prefix: str, recursive: bool) -> list[dict[str, Any]]:
        base = prefix.strip("/")
        out: dict[str, dict[str, Any]] = {}
        for name, data in sorted(commit.files.items()):
            if base and not name.startswith(base + "/"):
                continue
            rel = name[len(base) + 1:] if base else name
            parts = rel.split("/")
            for depth in range(1, len(parts)):
                folder = "/".join(filter(None, [base, *parts[:depth]]))
                if not recursive and depth > 1:
                    break
                out.setdefault(folder, {"type": "directory", "oid": git_sha1(folder.encode()), "size": 0,
                                        "path": folder})
            if recursive or len(parts) == 1:
                out[name] = {"type": "file", "oid": git_sha1(data), "size": len(data), "path": name}
        return list(out.values())

    def _tree(self, repo_id: str, revision: str, prefix: str, query: dict[str, list[str]],
              authorized: bool) -> tuple[int, dict[str, str], bytes]:
        commit = self._commit_at(self._repo(repo_id, authorized), revision)
        recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
        entries = self._entries(commit, prefix, recursive)
        if prefix and not entries:
            raise _HubError(404, f"{prefix} does not exist", "EntryNotFound")
        return _json(entries)

    def _paths_info(self, repo_id: str, revision: str, body: bytes,
                    authorized: bool) -> tuple[int, dict[str, str], bytes]:
        commit = self._commit_at(self._repo(repo_id, authorized), revision)
        wanted = parse_qs(body.decode()).get("paths", [])
        entries = [e for e in self._entries(commit, "", True) if e["path"] in wanted]
        return _json(entries)

    def _preupload(self, repo_id: str, revision: str, payload: dict[str, Any], query: dict[str, list[str]],
                   authorized: bool) -> tuple[int, dict[str, str], bytes]:
        self._need_write(authorized)
        commit = self._commit_at(self._repo(repo_id, authorized), revision)
        files = []
        for f in payload.get("files", []):
            existing = commit.files.get(f["path"])
            files.append({"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                          "oid": git_sha1(existing) if existing is not None else None})
        return _json({"files": files, "commitOid": commit.oid})

    def _commit_endpoint(self, repo_id: str, revision: str, body: bytes, query: dict[str, list[str]],
                         authorized: bool) -> tuple[int, dict[str, str], bytes]:
        self._need_write(authorized)
        repo = self._repo(repo_id, authorized)
        base = self._commit_at(repo, revision)
        message, files, deleted = "", {}, []
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                message = value.get("summary", "")
            elif key == "file":
                if value.get("encoding") != "base64":
                    raise _HubError(400, "files must be base64-encoded")
                files[value["path"]] = base64.b64decode(value["content"])
            elif key in ("deletedFile", "deletedFolder"):
                deleted.append(value["path"])
            else:
                raise _HubError(400, f"unsupported commit operation {key!r} (this server stores regular files)")
        if not message:
            raise _HubError(400, "commit message is empty")
        create_pr = query.get("create_pr", ["0"])[0] in ("1", "true")
        pr_url = None
        if create_pr:
            repo.prs += 1
            ref = f"refs/pr/{repo.prs}"
            repo.refs[ref] = base.oid
            pr_url = f"{self.url}/{repo_id}/discussions/{repo.prs}"
        else:
            ref = revision if revision in repo.refs else None
            if ref is None:
                raise _HubError(400, "can only commit on top of a branch")
        oid = self._commit(repo, ref, message, files, tuple(deleted))
        return _json({"success": True, "commitOid": oid, "commitUrl": f"{self.url}/{repo_id}/commit/{oid}",
                      "pullRequestUrl": pr_url})

    def _branch(self, repo_id: str, branch: str, payload: dict[str, Any],
                authorized: bool) -> tuple[int, dict[str, str], bytes]:
        self._need_write(authorized)
        repo = self._repo(repo_id, authorized)
        if branch in repo.refs:
            raise _HubError(409, "Reference already exists")
        start = self._commit_at(repo, payload.get("startingPoint") or "main")
        repo.refs[branch] = start.oid
        return _json({})

    def _resolve(self, repo_id: str, revision: str, filename: str,
                 authorized: bool) -> tuple[int, dict[str, str], bytes]:
        commit = self._commit_at(self._repo(repo_id, authorized), revision)
        data = commit.files.get(filename)
        if data is None:
            raise _HubError(404, "Entry not found", "EntryNotFound")
        return 200, {"Content-Type": "application/octet-stream", "X-Repo-Commit": commit.oid,
                     "ETag": f'"{git_sha1(data)}"', "Accept-Ranges": "bytes"}, data


def _json(obj: Any, status: int = 200) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "application/json"}, json.dumps(obj).encode()
