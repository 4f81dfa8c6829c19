"""A local Hugging Face Hub-protocol server for offline tests (standard library only).

The real `huggingface_hub` client (and everything built on it: `push_to_hub`, `from_pretrained`,
`snapshot_download`, `HfApi`) can push to and pull from this server. It listens on 127.0.0.1 on a
free port and keeps everything in memory.

The client reads `HF_ENDPOINT`, `HF_TOKEN` and `HF_HUB_DISABLE_XET` when `huggingface_hub` is
imported, so the client side of a test runs in a fresh subprocess with `server.env()`:

    from hub_server import hub_server  # the pytest fixture

    def test_round_trip(hub_server, tmp_path):
        out = hub_server.run_python_json('''
            import json
            from huggingface_hub import HfApi
            api = HfApi()
            api.create_repo("test-org/demo", exist_ok=True)
            info = api.upload_folder(repo_id="test-org/demo", folder_path="folder")
            print(json.dumps({"sha": info.oid}))
        ''', cwd=tmp_path)
        assert hub_server.repo("test-org/demo").head() == out["sha"]

Semantics:
- repos (model, dataset, space) keyed by (repo_type, repo_id); each has branches (`main` plus any
  created with `create_branch` or by `create_pr`), commits that hold a full file map, and an LFS
  object store. A revision is a branch name, a full commit sha or a unique sha prefix (>= 7).
- A new repo gets an initial commit with the Hub's default `.gitattributes`, like the real Hub.
- Writes need `Authorization: Bearer <token>` (401 otherwise). Reads are public. A request that
  carries a wrong token is refused (401) even for reads, like the real Hub. `token=None` makes the
  server accept any non-empty token.
- Preupload answers `uploadMode: lfs` for files matching the repo's `.gitattributes` LFS patterns
  (`*.safetensors`, `*.bin`, ...), files >= `lfs_threshold` bytes (10 MiB) and binary samples
  (a NUL byte), like the real Hub; everything else is `regular` (sent base64 inside the commit).
- `private` is stored and reported, not enforced.

Fault injection: `server.fail_next("commit", 1)` makes the next commit answer HTTP 500 without
applying it. Kinds: see `KINDS`. Beware that the client retries some calls by itself
(`http_backoff`: preupload, lfs_batch, lfs_upload, lfs_verify, and resolve after a failed HEAD)
on 408/429/500/502/503/504, up to 5 retries with 1, 2, 4, 8, 8 s sleeps: one injected 500 there
is absorbed after a 1 s sleep. To make such a step fail for good, inject a status the client does
not retry, e.g. `fail_next("lfs_upload", 1, status=507)`. `commit` and `create_repo` are not
retried by the client.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import itertools
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterable, Mapping
from urllib.parse import parse_qs, quote, unquote, urlsplit

try:  # pytest is only needed for the fixture
    import pytest
except ImportError:  # pragma: no cover
    pytest = None  # type: ignore[assignment]

__all__ = ["HubServer", "Repo", "Commit", "FileEntry", "hub_server", "KINDS", "DEFAULT_TOKEN"]

DEFAULT_TOKEN = "hf_test_token_for_local_hub"
DEFAULT_USER = "test-user"
LFS_THRESHOLD = 10 * 1024 * 1024

# Endpoint kinds, as recorded in `server.requests` and accepted by `server.fail_next`.
KINDS = (
    "whoami",
    "create_repo",
    "delete_repo",
    "validate_yaml",
    "repo_info",
    "tree",
    "paths_info",
    "refs",
    "commits",
    "branch",
    "tag",
    "settings",
    "list_repos",
    "preupload",
    "lfs_batch",
    "lfs_upload",  # the PUT of an LFS object, each multipart part PUT and the completion POST
    "lfs_verify",
    "commit",
    "resolve",  # HEAD and GET /{repo}/resolve/{rev}/{path}
)
_KIND_ALIASES = {"lfs": "lfs_upload", "upload": "lfs_upload", "download": "resolve", "info": "repo_info"}

_TYPES_PLURAL = {"models": "model", "datasets": "dataset", "spaces": "space"}
_URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}

# The Hub's default .gitattributes for new repos (LFS patterns).
_LFS_PATTERNS_COMMON = [
    "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gz", "*.h5", "*.joblib", "*.lfs.*",
    "*.mlmodel", "*.model", "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.ot", "*.parquet", "*.pb",
    "*.pickle", "*.pkl", "*.pt", "*.pth", "*.rar", "*.safetensors", "saved_model/**/*", "*.tar.*",
    "*.tar", "*.tflite", "*.tgz", "*.wasm", "*.xz", "*.zip", "*.zst", "*tfevents*",
]
_LFS_PATTERNS_DATASET_EXTRA = [
    "*.lz4", "*.mds", "*.mp3", "*.ogg", "*.wav", "*.jpg", "*.jpeg", "*.png", "*.webp", "*.gif",
    "*.mp4", "*.webm",
]


def default_gitattributes(repo_type: str = "model") -> bytes:
    patterns = list(_LFS_PATTERNS_COMMON)
    if repo_type == "dataset":
        patterns += _LFS_PATTERNS_DATASET_EXTRA
    return "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in patterns).encode()


# --------------------------------------------------------------------------------------------
# Hashing helpers (keep in line with tests/hub_cache.py: blob ids must agree with the cache)
# --------------------------------------------------------------------------------------------


def git_blob_sha1(content: bytes) -> str:
    """Git blob id of `content` (what the Hub uses as ETag for regular files)."""
    h = hashlib.sha1()
    h.update(b"blob %d\0" % len(content))
    h.update(content)
    return h.hexdigest()


def lfs_pointer(sha256_hex: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256_hex}\nsize {size}\n".encode()


def _now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _gitattributes_lfs_patterns(content: bytes | None) -> list[str]:
    if not content:
        return []
    patterns = []
    for line in content.decode("utf-8", "replace").splitlines():
        parts = line.strip().split()
        if len(parts) >= 2 and not parts[0].startswith("#") and "filter=lfs" in parts[1:]:
            patterns.append(parts[0])
    return patterns


def _matches_any(path: str, patterns: Iterable[str]) -> bool:
    base = path.rsplit("/", 1)[-1]
    for pat in patterns:
        if "/" in pat.strip("/"):
            if fnmatch.fnmatchcase(path, pat.lstrip("/")):
                return True
        elif fnmatch.fnmatchcase(base, pat):
            return True
    return False


# --------------------------------------------------------------------------------------------
# Data model
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileEntry:
    """One file in a commit: its bytes and whether it is stored through LFS."""

    content: bytes
    lfs: bool = False

    @property
    def size(self) -> int:
        return len(self.content)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    @property
    def pointer(self) -> bytes:
        return lfs_pointer(self.sha256, self.size)

    @property
    def blob_id(self) -> str:
        """Git blob id: of the content for regular files, of the LFS pointer for LFS files."""
        return git_blob_sha1(self.pointer if self.lfs else self.content)

    @property
    def etag(self) -> str:
        """What /resolve answers as ETag (unquoted): sha256 for LFS files, git blob id otherwise."""
        return self.sha256 if self.lfs else git_blob_sha1(self.content)


@dataclass
class Commit:
    sha: str
    parent: str | None
    files: dict[str, FileEntry]
    title: str
    message: str = ""
    author: str = DEFAULT_USER
    date: str = field(default_factory=_now_iso)


@dataclass
class Repo:
    repo_id: str
    repo_type: str = "model"
    private: bool = False
    created_at: str = field(default_factory=_now_iso)
    branches: dict[str, str] = field(default_factory=dict)  # name (main, refs/pr/1, ...) -> sha
    tags: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)
    lfs_objects: dict[str, bytes] = field(default_factory=dict)  # sha256 -> bytes
    next_pr: int = 1

    # -- inspection helpers (for tests) ---------------------------------------------------
    def head(self, branch: str = "main") -> str:
        """Commit sha at the tip of `branch`."""
        return self.branches[branch]

    def resolve(self, revision: str | None = "main") -> Commit:
        """The commit for a branch/tag name, a full sha or a unique sha prefix (>= 7 chars)."""
        revision = revision or "main"
        if revision in self.branches:
            return self.commits[self.branches[revision]]
        if revision in self.tags:
            return self.commits[self.tags[revision]]
        if revision in self.commits:
            return self.commits[revision]
        if 7 <= len(revision) < 40 and all(c in "0123456789abcdef" for c in revision.lower()):
            found = [sha for sha in self.commits if sha.startswith(revision.lower())]
            if len(found) == 1:
                return self.commits[found[0]]
        raise KeyError(revision)

    def entries(self, revision: str | None = "main") -> dict[str, FileEntry]:
        return dict(self.resolve(revision).files)

    def files(self, revision: str | None = "main") -> dict[str, bytes]:
        """path -> bytes at `revision`."""
        return {p: e.content for p, e in self.resolve(revision).files.items()}

    def history(self, revision: str | None = "main") -> list[Commit]:
        """Commits reachable from `revision`, newest first."""
        out, commit = [], self.resolve(revision)
        while commit is not None:
            out.append(commit)
            commit = self.commits.get(commit.parent) if commit.parent else None
        return out

    @property
    def url_path(self) -> str:
        return _URL_PREFIX[self.repo_type] + self.repo_id


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None,
                 body: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = dict(headers or {})
        self.body = body


@dataclass
class _Request:
    method: str
    path: str
    segs: list[str]
    query: dict[str, list[str]]
    headers: Any
    body: bytes
    token: str | None

    def json(self) -> Any:
        if not self.body:
            return {}
        try:
            return json.loads(self.body)
        except ValueError as e:
            raise HubError(400, f"Request body is not valid JSON: {e}") from None

    def flag(self, name: str) -> bool:
        values = self.query.get(name)
        return bool(values) and values[-1].lower() in ("1", "true", "yes")


@dataclass
class _Response:
    status: int = 200
    body: bytes | None = b""
    headers: dict[str, str] = field(default_factory=dict)


def _json_response(data: Any, status: int = 200, headers: dict | None = None,
                   content_type: str = "application/json") -> _Response:
    h = {"Content-Type": content_type}
    h.update(headers or {})
    return _Response(status, json.dumps(data).encode(), h)


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------


class HubServer:
    """In-memory Hub-protocol server on 127.0.0.1.

    Args:
        token: the accepted write token (also what `env()` puts in `HF_TOKEN`). `None`: accept
            any non-empty bearer token (then `env()` uses `DEFAULT_TOKEN`).
        user: user name answered by whoami and used as namespace for `create_repo("name")`.
        orgs: organisation names listed by whoami (any namespace is writable anyway).
        lfs_threshold: files of at least this many bytes are uploaded through LFS.
        lfs_multipart_chunk_size: if set, LFS objects larger than this are uploaded with the
            Hub's multipart protocol (parts of this size, then a completion call).
        initial_gitattributes: give new repos an initial commit with the default .gitattributes.
        hf_home: default HF_HOME for `env()` (the fixture sets a per-test temp dir).
    """

    def __init__(
        self,
        token: str | None = DEFAULT_TOKEN,
        *,
        user: str = DEFAULT_USER,
        orgs: Iterable[str] = ("test-org",),
        lfs_threshold: int = LFS_THRESHOLD,
        lfs_multipart_chunk_size: int | None = None,
        initial_gitattributes: bool = True,
        hf_home: str | os.PathLike | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ):
        self.token = token if token is not None else DEFAULT_TOKEN
        self.accept_any_token = token is None
        self.extra_tokens: set[str] = set()
        self.user = user
        self.orgs = list(orgs)
        self.lfs_threshold = lfs_threshold
        self.lfs_multipart_chunk_size = lfs_multipart_chunk_size
        self.initial_gitattributes = initial_gitattributes
        self.hf_home = str(hf_home) if hf_home is not None else None
        self.host = host
        self._port = port

        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[dict] = []  # {"method", "path", "kind", "status", "seconds"} per request
        self.log: list[str] = []  # access log and notes (never printed)
        self.errors: list[str] = []  # tracebacks of unexpected server-side exceptions
        self.unhandled: list[str] = []  # "METHOD path" of requests no route matched
        self.check_errors_on_teardown = True

        self._lock = threading.RLock()
        self._failures: dict[str, list[tuple[int, str | None]]] = {}
        self._multipart: dict[tuple[str, str, str], dict[int, bytes]] = {}
        self._counter = itertools.count(1)
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> "HubServer":
        if self._httpd is not None:
            return self
        httpd = _HTTPServer((self.host, self._port), _Handler)
        httpd.daemon_threads = True
        httpd.hub = self  # type: ignore[attr-defined]
        self._httpd = httpd
        self._port = httpd.server_address[1]
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="hub-test-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        httpd.close_open_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is not None:
            self._port = self._httpd.server_address[1]
        elif not self._port:
            raise RuntimeError("server not started")
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- client environment -----------------------------------------------------------------
    _ENV_DROP = (
        "HF_ENDPOINT", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_HOME", "HF_HUB_CACHE",
        "HUGGINGFACE_HUB_CACHE", "HF_ASSETS_CACHE", "HUGGINGFACE_ASSETS_CACHE", "HF_XET_CACHE",
        "HF_DATASETS_CACHE", "TRANSFORMERS_CACHE", "HF_MODULES_CACHE", "HF_HUB_OFFLINE",
        "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HUGGINGFACE_CO_STAGING", "HF_HUB_DISABLE_IMPLICIT_TOKEN",
        "HF_HUB_ENABLE_HF_TRANSFER", "HF_STORED_TOKENS_PATH",
    )

    def env(self, *, token: str | None | bool = True, offline: bool = False,
            hf_home: str | os.PathLike | None = None, **extra: str) -> dict[str, str]:
        """Environment for a client subprocess talking to this server.

        token: True (default) -> this server's token; None/False -> no HF_TOKEN at all; a string ->
        that token. offline: set HF_HUB_OFFLINE=1. hf_home: overrides `self.hf_home`. extra: more
        variables (values converted to str).
        """
        env = {k: v for k, v in os.environ.items() if k not in self._ENV_DROP}
        for k in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
            env.pop(k, None)
        no_proxy = "127.0.0.1,localhost"
        env["NO_PROXY"] = env["no_proxy"] = no_proxy
        home = str(hf_home) if hf_home is not None else self.hf_home
        if home is None:
            raise ValueError("no HF_HOME: pass hf_home=... or set server.hf_home (the fixture does)")
        env.update(
            HF_ENDPOINT=self.url,
            HF_HOME=home,
            HF_HUB_DISABLE_XET="1",
            HF_HUB_DISABLE_TELEMETRY="1",
            HF_HUB_DISABLE_PROGRESS_BARS="1",
            HF_HUB_DISABLE_UPDATE_CHECK="1",
            HF_HUB_DISABLE_EXPERIMENTAL_WARNING="1",
            HF_HUB_DISABLE_SYMLINKS_WARNING="1",
            TOKENIZERS_PARALLELISM="false",
            PYTHONUNBUFFERED="1",
        )
        if token is True:
            env["HF_TOKEN"] = self.token
        elif isinstance(token, str) and token:
            env["HF_TOKEN"] = token
        if offline:
            env["HF_HUB_OFFLINE"] = "1"
        env.setdefault("OMP_NUM_THREADS", "1")  # keep client subprocesses light on CPU
        # Make `import hf_unlearn` work in subprocesses even without an installed package.
        repo_root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (repo_root, env.get("PYTHONPATH", "")) if p)
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def run_python(self, code: str, *, env: Mapping[str, str] | None = None, cwd: str | os.PathLike | None = None,
                   timeout: float = 180, check: bool = True, args: Iterable[str] = ()) -> subprocess.CompletedProcess:
        """Run `code` (dedented) in a fresh `python` with `env` (default: `self.env()`)."""
        proc = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code), *args],
            env=dict(env) if env is not None else self.env(),
            cwd=str(cwd) if cwd is not None else None,
            capture_output=True, text=True, timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"client subprocess failed (rc={proc.returncode})\n--- stdout ---\n{proc.stdout[-4000:]}"
                f"\n--- stderr ---\n{proc.stderr[-8000:]}\n--- server log (tail) ---\n" + "\n".join(self.log[-40:])
            )
        return proc

    def run_python_json(self, code: str, **kwargs) -> Any:
        """`run_python`, then parse the last non-empty stdout line as JSON."""
        proc = self.run_python(code, **kwargs)
        lines = [line for line in proc.stdout.splitlines() if line.strip()]
        if not lines:
            raise AssertionError(f"client printed nothing\n--- stderr ---\n{proc.stderr[-4000:]}")
        return json.loads(lines[-1])

    # -- fault injection and inspection -----------------------------------------------------
    def fail_next(self, kind: str, n: int = 1, *, status: int = 500, message: str | None = None) -> None:
        """Make the next `n` requests of `kind` (see KINDS) answer `status` without any effect."""
        kind = _KIND_ALIASES.get(kind, kind)
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
        with self._lock:
            self._failures.setdefault(kind, []).extend([(status, message)] * n)

    def clear_failures(self) -> None:
        with self._lock:
            self._failures.clear()

    def pending_failures(self) -> dict[str, int]:
        with self._lock:
            return {k: len(v) for k, v in self._failures.items() if v}

    def calls(self, kind: str | None = None, method: str | None = None) -> list[dict]:
        """Recorded requests, optionally filtered by kind and method."""
        kind = _KIND_ALIASES.get(kind, kind) if kind else None
        with self._lock:
            return [r for r in self.requests if (kind is None or r["kind"] == kind)
                    and (method is None or r["method"] == method)]

    def endpoints_called(self) -> list[str]:
        """Sorted distinct 'METHOD kind' pairs seen so far."""
        with self._lock:
            return sorted({f"{r['method']} {r['kind']}" for r in self.requests})

    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        return self.repos[(repo_type, repo_id)]

    # -- server-side seeding (no client needed) ---------------------------------------------
    def create_repo(self, repo_id: str, repo_type: str = "model", *, exist_ok: bool = False,
                    private: bool = False) -> Repo:
        with self._lock:
            key = (repo_type, repo_id)
            if key in self.repos:
                if exist_ok:
                    return self.repos[key]
                raise ValueError(f"{repo_type} repo {repo_id} exists")
            repo = Repo(repo_id=repo_id, repo_type=repo_type, private=private)
            files = {}
            if self.initial_gitattributes:
                files[".gitattributes"] = FileEntry(default_gitattributes(repo_type))
            self._add_commit(repo, "main", None, files, "initial commit", "", author="system")
            self.repos[key] = repo
            return repo

    def commit(self, repo_id: str, files: Mapping[str, bytes | str | os.PathLike] | None = None, *,
               folder: str | os.PathLike | None = None, delete: Iterable[str] = (), repo_type: str = "model",
               branch: str = "main", message: str = "Server-side commit", lfs: bool | None = None,
               create: bool = True) -> str:
        """Commit files straight into the store (creates the repo if `create`). Returns the sha.

        files: path -> bytes, str (text) or a local Path; folder: a local folder added recursively;
        lfs: force LFS on/off for the added files (default: the preupload rule).
        """
        with self._lock:
            repo = self.create_repo(repo_id, repo_type, exist_ok=True) if create else self.repo(repo_id, repo_type)
            new = dict(repo.resolve(branch).files)
            adds: dict[str, bytes] = {}
            if folder is not None:
                root = Path(folder)
                for p in sorted(root.rglob("*")):
                    if p.is_file() and ".git" not in p.relative_to(root).parts:
                        adds[p.relative_to(root).as_posix()] = p.read_bytes()
            for path, value in (files or {}).items():
                if isinstance(value, bytes):
                    adds[path] = value
                elif isinstance(value, str):
                    adds[path] = value.encode()
                else:
                    adds[path] = Path(value).read_bytes()
            for path in delete:
                new.pop(path, None)
            for path, content in adds.items():
                is_lfs = lfs if lfs is not None else self._wants_lfs(repo, branch, path, len(content), content[:512])
                if is_lfs:
                    repo.lfs_objects[hashlib.sha256(content).hexdigest()] = content
                new[path] = FileEntry(content, bool(is_lfs) and len(content) > 0)
            return self._add_commit(repo, branch, repo.branches[branch], new, message, "").sha

    # -- internals --------------------------------------------------------------------------
    def _note(self, msg: str) -> None:
        with self._lock:
            self.log.append(msg)

    def _add_commit(self, repo: Repo, branch: str, parent: str | None, files: dict[str, FileEntry],
                    title: str, message: str, author: str | None = None) -> Commit:
        tree = hashlib.sha1()
        for path in sorted(files):
            tree.update(f"{path}\0{files[path].blob_id}\n".encode())
        seed = f"{parent}\n{tree.hexdigest()}\n{title}\n{message}\n{next(self._counter)}\n{time.time_ns()}"
        sha = hashlib.sha1(seed.encode()).hexdigest()
        commit = Commit(sha=sha, parent=parent, files=dict(files), title=title, message=message,
                        author=author or self.user)
        repo.commits[sha] = commit
        repo.branches[branch] = sha
        return commit

    def _wants_lfs(self, repo: Repo, revision: str, path: str, size: int, sample: bytes) -> bool:
        if size == 0:
            return False
        if size >= self.lfs_threshold or b"\0" in sample:
            return True
        try:
            attrs = repo.resolve(revision).files.get(".gitattributes")
        except KeyError:
            attrs = None
        return _matches_any(path, _gitattributes_lfs_patterns(attrs.content if attrs else None))

    def _valid_token(self, token: str | None) -> bool:
        if not token:
            return False
        return self.accept_any_token or token == self.token or token in self.extra_tokens

    def _check_auth(self, req: _Request, write: bool) -> None:
        if req.token is not None and not self._valid_token(req.token):
            raise HubError(401, "Invalid credentials in Authorization header")
        if write and req.token is None:
            raise HubError(
                401,
                "Unauthorized: this write needs a token (test Hub server). Pass token=... or set "
                "HF_TOKEN; no Authorization header was sent.",
            )

    def _take_failure(self, kind: str) -> tuple[int, str | None] | None:
        with self._lock:
            queue = self._failures.get(kind)
            if queue:
                return queue.pop(0)
        return None

    def _get_repo(self, repo_type: str, repo_id: str) -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(404, "Repository not found", "RepoNotFound")
        return repo

    def _resolve(self, repo: Repo, revision: str) -> Commit:
        try:
            return repo.resolve(revision)
        except KeyError:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound") from None

    def _repo_url(self, repo: Repo) -> str:
        return f"{self.url}/{repo.url_path}"

    # -- routing ----------------------------------------------------------------------------
    def _route(self, req: _Request):
        """Return (kind, handler) or (None, None)."""
        s, m = req.segs, req.method
        if s and s[0] == "api":
            rest = s[1:]
            if rest == ["whoami-v2"] and m == "GET":
                return "whoami", self._h_whoami
            if rest == ["repos", "create"] and m == "POST":
                return "create_repo", self._h_create_repo
            if rest == ["repos", "delete"] and m == "DELETE":
                return "delete_repo", self._h_delete_repo
            if rest == ["validate-yaml"] and m == "POST":
                return "validate_yaml", self._h_validate_yaml
            if len(rest) == 1 and rest[0] in _TYPES_PLURAL and m == "GET":
                req.repo_type = _TYPES_PLURAL[rest[0]]  # type: ignore[attr-defined]
                return "list_repos", self._h_list_repos
            if len(rest) >= 3 and rest[0] in _TYPES_PLURAL:
                req.repo_type = _TYPES_PLURAL[rest[0]]  # type: ignore[attr-defined]
                req.repo_id = f"{rest[1]}/{rest[2]}"  # type: ignore[attr-defined]
                tail = rest[3:]
                action = tail[0] if tail else None
                req.tail = tail[1:]  # type: ignore[attr-defined]
                table = {
                    (None, "GET"): ("repo_info", self._h_repo_info),
                    ("revision", "GET"): ("repo_info", self._h_repo_info),
                    ("tree", "GET"): ("tree", self._h_tree),
                    ("paths-info", "POST"): ("paths_info", self._h_paths_info),
                    ("refs", "GET"): ("refs", self._h_refs),
                    ("commits", "GET"): ("commits", self._h_commits),
                    ("branch", "POST"): ("branch", self._h_branch_create),
                    ("branch", "DELETE"): ("branch", self._h_branch_delete),
                    ("tag", "POST"): ("tag", self._h_tag_create),
                    ("tag", "DELETE"): ("tag", self._h_tag_delete),
                    ("settings", "PUT"): ("settings", self._h_settings),
                    ("preupload", "POST"): ("preupload", self._h_preupload),
                    ("commit", "POST"): ("commit", self._h_commit),
                }
                if action is None and tail:
                    return None, None
                return table.get((action, m), (None, None))
            return None, None
        if s and s[0] == "__lfs__" and len(s) >= 6:
            # /__lfs__/{upload|verify}/{type}/{ns}/{name}/{oid}[/part/{n}]
            req.repo_type, req.repo_id = s[2], f"{s[3]}/{s[4]}"  # type: ignore[attr-defined]
            req.oid = s[5]  # type: ignore[attr-defined]
            req.tail = s[6:]  # type: ignore[attr-defined]
            if s[1] == "upload" and m in ("PUT", "POST"):
                return "lfs_upload", self._h_lfs_upload
            if s[1] == "verify" and m == "POST":
                return "lfs_verify", self._h_lfs_verify
            return None, None
        # Repo URLs: [datasets/|spaces/]{ns}/{name}(.git/info/lfs/objects/batch | /resolve/{rev}/{path})
        repo_type = "model"
        if s and s[0] in ("datasets", "spaces"):
            repo_type, s = _TYPES_PLURAL[s[0]], s[1:]
        if len(s) == 6 and s[1].endswith(".git") and s[2:] == ["info", "lfs", "objects", "batch"] and m == "POST":
            req.repo_type, req.repo_id = repo_type, f"{s[0]}/{s[1][:-4]}"  # type: ignore[attr-defined]
            return "lfs_batch", self._h_lfs_batch
        if len(s) >= 5 and s[2] == "resolve" and m in ("GET", "HEAD"):
            req.repo_type, req.repo_id = repo_type, f"{s[0]}/{s[1]}"  # type: ignore[attr-defined]
            req.revision, req.file_path = s[3], "/".join(s[4:])  # type: ignore[attr-defined]
            return "resolve", self._h_resolve
        return None, None

    def _handle(self, req: _Request) -> tuple[str, _Response]:
        kind, handler = self._route(req)
        if handler is None:
            self._note(f"UNHANDLED {req.method} {req.path}")
            with self._lock:
                self.unhandled.append(f"{req.method} {req.path}")
            return "unhandled", _json_response({"error": f"Not handled by the test Hub server: {req.method} "
                                                         f"{req.path}"}, 404)
        failure = self._take_failure(kind)
        if failure is not None:
            status, message = failure
            message = message or f"Injected failure ({kind}) by the test Hub server"
            self._note(f"INJECTED {status} for {kind}: {req.method} {req.path}")
            return kind, _json_response({"error": message}, status, {"X-Error-Message": message})
        try:
            return kind, handler(req)
        except HubError as e:
            headers = {"X-Error-Message": e.message.replace("\n", " ")}
            if e.code:
                headers["X-Error-Code"] = e.code
            headers.update(e.headers)
            body = {"error": e.message}
            body.update(e.body or {})
            return kind, _json_response(body, e.status, headers)

    # -- handlers ---------------------------------------------------------------------------
    def _h_whoami(self, req: _Request) -> _Response:
        if req.token is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        self._check_auth(req, write=True)
        return _json_response({
            "type": "user",
            "id": "0" * 24,
            "name": self.user,
            "fullname": "Test User",
            "email": f"{self.user}@example.invalid",
            "emailVerified": True,
            "canPay": False,
            "isPro": False,
            "periodEnd": None,
            "avatarUrl": "",
            "orgs": [{"type": "org", "name": o, "fullname": o, "id": "1" * 24, "roleInOrg": "admin"}
                     for o in self.orgs],
            "auth": {"type": "access_token",
                     "accessToken": {"displayName": "test-token", "role": "write", "createdAt": _now_iso()}},
        })

    def _h_create_repo(self, req: _Request) -> _Response:
        self._check_auth(req, write=True)
        payload = req.json()
        name = payload.get("name")
        if not name or "/" in name:
            raise HubError(400, f"Invalid repo name: {name!r}")
        namespace = payload.get("organization") or self.user
        repo_type = payload.get("type") or "model"
        if repo_type not in _URL_PREFIX:
            raise HubError(400, f"Invalid repo type: {repo_type}")
        repo_id = f"{namespace}/{name}"
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        with self._lock:
            existing = self.repos.get((repo_type, repo_id))
            if existing is not None:
                url = self._repo_url(existing)
                raise HubError(409, f"You already created this {repo_type} repo", body={"url": url})
            repo = self.create_repo(repo_id, repo_type, private=private)
        return _json_response({"url": self._repo_url(repo), "name": repo_id, "id": repo_id})

    def _h_delete_repo(self, req: _Request) -> _Response:
        self._check_auth(req, write=True)
        payload = req.json()
        repo_id = f"{payload.get('organization') or self.user}/{payload.get('name')}"
        repo_type = payload.get("type") or "model"
        with self._lock:
            self._get_repo(repo_type, repo_id)
            del self.repos[(repo_type, repo_id)]
        return _Response(200, b"", {})

    def _h_validate_yaml(self, req: _Request) -> _Response:
        return _json_response({"errors": [], "warnings": []})

    def _repo_info_json(self, repo: Repo, commit: Commit, blobs: bool) -> dict:
        siblings = []
        for path in sorted(commit.files):
            entry = commit.files[path]
            sib: dict[str, Any] = {"rfilename": path}
            if blobs:
                sib["size"] = entry.size
                sib["blobId"] = entry.blob_id
                if entry.lfs:
                    sib["lfs"] = {"size": entry.size, "sha256": entry.sha256, "pointerSize": len(entry.pointer)}
            siblings.append(sib)
        ns = repo.repo_id.split("/")[0]
        data: dict[str, Any] = {
            "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "author": ns,
            "sha": commit.sha,
            "lastModified": commit.date,
            "createdAt": repo.created_at,
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
            "usedStorage": sum(e.size for e in commit.files.values()),
        }
        card = _card_data(commit.files.get("README.md"))
        if card is not None:
            data["cardData"] = card
            tags = card.get("tags")
            if isinstance(tags, list):
                data["tags"] = [str(t) for t in tags]
            for key in ("library_name", "pipeline_tag"):
                if isinstance(card.get(key), str):
                    data[key] = card[key]
        if repo.repo_type == "model":
            data["modelId"] = repo.repo_id
            cfg = commit.files.get("config.json")
            if cfg is not None:
                try:
                    cfg_json = json.loads(cfg.content)
                    data["config"] = {k: cfg_json[k] for k in ("architectures", "model_type") if k in cfg_json}
                except (ValueError, TypeError):
                    pass
        return data

    def _h_repo_info(self, req: _Request) -> _Response:
        self._check_auth(req, write=False)
        with self._lock:
            repo = self._get_repo(req.repo_type, req.repo_id)  # type: ignore[attr-defined]
            revision = "/".join(req.tail) if req.tail else "main"  # type: ignore[attr-defined]
            commit = self._resolve(repo, revision)
            return _json_response(self._repo_info_json(repo, commit, blobs=req.flag("blobs")))

    def _tree_entry(self, repo: Repo, commit: Commit, path: str, is_dir: bool, expand: bool) -> dict:
        if is_dir:
            h = hashlib.sha1()
            prefix = path + "/"
            for p in sorted(commit.files):
                if p.startswith(prefix):
                    h.update(f"{p}\0{commit.files[p].blob_id}\n".encode())
            item: dict[str, Any] = {"type": "directory", "oid": h.hexdigest(), "size": 0, "path": path}
        else:
            entry = commit.files[path]
            item = {"type": "file", "oid": entry.blob_id, "size": entry.size, "path": path}
            if entry.lfs:
                item["lfs"] = {"oid": entry.sha256, "size": entry.size, "pointerSize": len(entry.pointer)}
        if expand:
            last = self._last_commit_touching(repo, commit, path, is_dir)
            item["lastCommit"] = {"id": last.sha, "title": last.title, "date": last.date}
        return item

    def _last_commit_touching(self, repo: Repo, commit: Commit, path: str, is_dir: bool) -> Commit:
        def snapshot(c: Commit):
            if is_dir:
                return {p: e.blob_id for p, e in c.files.items() if p.startswith(path + "/")}
            e = c.files.get(path)
            return e.blob_id if e else None

        current, state = commit, snapshot(commit)
        while current.parent:
            parent = repo.commits[current.parent]
            if snapshot(parent) != state:
                return current
            current = parent
        return current

    @staticmethod
    def _dirs(files: Iterable[str]) -> set[str]:
        dirs = set()
        for p in files:
            parts = p.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                dirs.add("/".join(parts[:i]))
        return dirs

    def _h_tree(self, req: _Request) -> _Response:
        self._check_auth(req, write=False)
        tail = req.tail  # type: ignore[attr-defined]
        if not tail:
            raise HubError(400, "Missing revision")
        with self._lock:
            repo = self._get_repo(req.repo_type, req.repo_id)  # type: ignore[attr-defined]
            commit = self._resolve(repo, tail[0])
            base = "/".join(tail[1:]).strip("/")
            recursive, expand = req.flag("recursive"), req.flag("expand")
            dirs = self._dirs(commit.files)
            if base and base not in dirs:
                if base in commit.files:
                    return _json_response([self._tree_entry(repo, commit, base, False, expand)])
                raise HubError(404, f"Entry not found: {base}", "EntryNotFound", {"X-Repo-Commit": commit.sha})
            prefix = base + "/" if base else ""
            out = []
            for d in sorted(dirs):
                if d.startswith(prefix) and d != base and (recursive or "/" not in d[len(prefix):]):
                    out.append(self._tree_entry(repo, commit, d, True, expand))
            for p in sorted(commit.files):
                if p.startswith(prefix) and (recursive or "/" not in p[len(prefix):]):
                    out.append(self._tree_entry(repo, commit, p, False, expand))
            return _json_response(out)

    def _h_paths_info(self, req: _Request) -> _Response:
        self._check_auth(req, write=False)
        tail = req.tail  # type: ignore[attr-defined]
        revision = "/".join(tail) if tail else "main"
        ctype = req.headers.get("Content-Type", "")
        if "json" in ctype:
            payload = req.json()
            paths, expand = payload.get("paths", []), bool(payload.get("expand"))
        else:
            form = parse_qs(req.body.decode(), keep_blank_values=True)
            paths = form.get("paths", [])
            expand = (form.get("expand") or ["false"])[-1].lower() in ("1", "true")
        with self._lock:
            repo = self._get_repo(req.repo_type, req.repo_id)  # type: ignore[attr-defined]
            commit = self._resolve(repo, revision)
            dirs = self._dirs(commit.files)
            out = []
            for p in paths:
                p = p.strip("/")
                if p in commit.files:
                    out.append(self._tree_entry(repo, commit, p, False, expand))
                elif p in dirs:
                    out.append(self._tree_entry(repo, commit, p, True, expand))
            return _json_response(out)

    def _h_refs(self, req: _Request) -> _Response:
        self._check_auth(req, write=False)
        with self._lock:
            repo = self._get_repo(req.repo_type, req.repo_id)  # type: ignore[attr-defined]
            branches = [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": sha}
                        for b, sha in sorted(repo.branches.items()) if not b.startswith("refs/")]
            prs = [{"name": b, "ref": b, "targetCommit": sha}
                   for b, sha in sorted(repo.branches.items()) if b.startswith("refs/pr/")]
            tags = [{"name": t, "ref": f"refs/tags/{t}", "targetCommit": sha} for t, sha in sorted(repo.tags.items())]
            data = {"branches": branches, "converts": [], "tags": tags}
            if req.flag("include_prs"):
                data["pullRequests"] = prs
            return _json_response(data)

    def _h_commits(self, req: _Request) -> _Response:
        self._check_auth(req, write=False)
        tail = req.tail  # type: ignore[attr-defined]
        with self._lock:
            repo = self._get_repo(req.repo_type, req.repo_id)  # type: ignore[attr-defined]
            self._resolve(repo, "/".join(tail) if tail else "main")
            items = []
            for c in repo.history("/".join(tail) if tail else "main"):
                item = {"id": c.sha, "title": c.title, "message": c.message,
                        "authors": [{"user": c.author, "avatar": ""}], "date": c.date}
                if any(v.endswith("formatted") for v in req.query.get("expand[]", [])):
                    item["formatted"] = {"title": c.title, "message": c.message}
                items.append(item)
            return _json_response(items)

    def _h_branch_create(self, req: _Request) -> _Response:
        self._check_auth(req, write=True)
        branch = "/".join(req.tail)  # type: ignore[attr-defined]
        payload = req.json()
        with self._lock:
            repo = self._get_repo(req.repo_type, req.repo_id)  # type: ignore[attr-defined]
            if not branch:
                raise HubError(400, "Missing branch name")
            if branch in repo.branches:
                raise HubError(409, "Reference already exists")
            start = self._resolve(repo, payload.get("startingPoint") or "main")
            repo.branches[branch] = start.sha
        return _json_response({})

    def _h_branch_delete(self, req: _Request) -> _Response:
        self._check_auth(req, write=True)
        branch = "/".join(req.tail)  # type: ignore[attr-defined]
        with self._lock:
            repo = self._get_repo(req.repo_type, req.repo_id)  # type: ignore[attr-defined]
            if branch == "main":
                raise HubError(403, "Cannot delete the main branch")
            if branch not in repo.branches:
                raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            del repo.branches[branch]
        return _json_response({})

    def _h_tag_create(self, req: _Request) -> _Response:
        self._check_auth(req, write=True)
        revision = "/".join(req.tail) or "main"  # type: ignore[attr-defined]
        tag = req.json().get("tag")
        with self._lock:
            repo = self._get_repo(req.repo_type, req.repo_id)  # type: ignore[attr-defined]
            if not tag:
                raise HubError(400, "Missing tag name")
            if tag in repo.tags:
                raise HubError(409, "Tag already exists")
            repo.tags[tag] = self._resolve(repo, revision).sha
        return _json_response({})

    def _h_tag_delete(self, req: _Request) -> _Response:
        self._check_auth(req, write=True)
        tag = "/".join(req.tail)  # type: ignore[attr-defined]
        with self._lock:
            repo = self._get_repo(req.repo_type, req.repo_id)  # type: ignore[attr-defined]
            if tag not in repo.tags:
                raise HubError(404, f"Invalid rev id: {tag}", "RevisionNotFound")
            del repo.tags[tag]
        return _json_response({})

    def _h_settings(self, req: _Request) -> _Response:
        self._check_auth(req, write=True)
        payload = req.json()
        with self._lock:
            repo = self._get_repo(req.repo_type, req.repo_id)  # type: ignore[attr-defined]
            if "visibility" in payload:
                repo.private = payload["visibility"] == "private"
            elif "private" in payload:
                repo.private = bool(payload["private"])
        return _json_response({})

    def _h_list_repos(self, req: _Request) -> _Response:
        """GET /api/models|datasets|spaces with optional author= and search= (no pagination)."""
        self._check_auth(req, write=False)
        author = (req.query.get("author") or [None])[-1]
        search = (req.query.get("search") or [None])[-1]
        with self._lock:
            out = []
            for (rtype, repo_id), repo in sorted(self.repos.items()):
                if rtype != req.repo_type:  # type: ignore[attr-defined]
                    continue
                if author and repo_id.split("/")[0] != author:
                    continue
                if search and search.lower() not in repo_id.lower():
                    continue
                info = self._repo_info_json(repo, repo.resolve("main"), blobs=False)
                info.pop("siblings", None)
                out.append(info)
        return _json_response(out)

    def _h_preupload(self, req: _Request) -> _Response:
        self._check_auth(req, write=True)
        revision = "/".join(req.tail) or "main"  # type: ignore[attr-defined]
        payload = req.json()
        with self._lock:
            repo = self._get_repo(req.repo_type, req.repo_id)  # type: ignore[attr-defined]
            commit = self._resolve(repo, revision)
            out = []
            for f in payload.get("files", []):
                path = f["path"]
                size = int(f.get("size", 0))
                sample = base64.b64decode(f.get("sample", "") or "")
                mode = "lfs" if self._wants_lfs(repo, revision, path, size, sample) else "regular"
                existing = commit.files.get(path)
                oid = None
                if existing is not None:
                    oid = existing.sha256 if existing.lfs else git_blob_sha1(existing.content)
                out.append({"path": path, "uploadMode": mode, "shouldIgnore": False, "oid": oid})
            return _json_response({"files": out, "commitOid": commit.sha})

    def _h_lfs_batch(self, req: _Request) -> _Response:
        self._check_auth(req, write=True)
        payload = req.json()
        if payload.get("operation") != "upload":
            raise HubError(400, "Only the 'upload' LFS operation is supported by the test Hub server")
        with self._lock:
            repo = self._get_repo(req.repo_type, req.repo_id)  # type: ignore[attr-defined]
            ref = (payload.get("ref") or {}).get("name")
            if ref:
                self._resolve(repo, ref)
            base = f"{self.url}/__lfs__"
            loc = f"{repo.repo_type}/{repo.repo_id}"
            objects = []
            for obj in payload.get("objects", []):
                oid, size = str(obj["oid"]), int(obj["size"])
                item: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
                if oid not in repo.lfs_objects:
                    upload_href = f"{base}/upload/{loc}/{oid}"
                    header: dict[str, str] = {}
                    chunk = self.lfs_multipart_chunk_size
                    if chunk and size > chunk:
                        nparts = -(-size // chunk)
                        header = {"chunk_size": str(chunk)}
                        header.update({str(i): f"{upload_href}/part/{i}" for i in range(1, nparts + 1)})
                    item["actions"] = {
                        "upload": {"href": upload_href, "header": header, "expires_in": 86400},
                        "verify": {"href": f"{base}/verify/{loc}/{oid}", "header": {}},
                    }
                objects.append(item)
            transfer = "multipart" if self.lfs_multipart_chunk_size else "basic"
            return _json_response({"transfer": transfer, "objects": objects, "hash_algo": "sha256"},
                                  content_type="application/vnd.git-lfs+json")

    def _h_lfs_upload(self, req: _Request) -> _Response:
        with self._lock:
            repo = self._get_repo(req.repo_type, req.repo_id)  # type: ignore[attr-defined]
        oid, tail = req.oid, req.tail  # type: ignore[attr-defined]
        key = (repo.repo_type, repo.repo_id, oid)
        if req.method == "PUT" and len(tail) == 2 and tail[0] == "part":
            part = int(tail[1])
            with self._lock:
                self._multipart.setdefault(key, {})[part] = req.body
            return _Response(200, b"", {"ETag": f'"{hashlib.md5(req.body).hexdigest()}"'})
        if req.method == "PUT" and not tail:
            data = req.body
        elif req.method == "POST" and not tail:  # multipart completion
            payload = req.json()
            with self._lock:
                parts = self._multipart.pop(key, {})
            try:
                ordered = [parts[int(p["partNumber"])] for p in sorted(payload.get("parts", []),
                                                                      key=lambda p: int(p["partNumber"]))]
            except KeyError as e:
                raise HubError(400, f"Missing multipart part {e}") from None
            for p in payload.get("parts", []):
                expected = f'"{hashlib.md5(parts[int(p["partNumber"])]).hexdigest()}"'
                if p.get("etag") not in (expected, expected.strip('"')):
                    raise HubError(400, f"ETag mismatch for part {p['partNumber']}")
            data = b"".join(ordered)
        else:
            raise HubError(400, "Bad LFS upload request")
        if hashlib.sha256(data).hexdigest() != oid:
            raise HubError(400, f"LFS upload: content sha256 does not match oid {oid}")
        with self._lock:
            repo.lfs_objects[oid] = data
        return _Response(200, b"", {"ETag": f'"{oid}"'})

    def _h_lfs_verify(self, req: _Request) -> _Response:
        self._check_auth(req, write=True)
        payload = req.json()
        oid = req.oid  # type: ignore[attr-defined]
        with self._lock:
            repo = self._get_repo(req.repo_type, req.repo_id)  # type: ignore[attr-defined]
            data = repo.lfs_objects.get(oid)
        if data is None:
            raise HubError(404, f"LFS object {oid} was not uploaded")
        if int(payload.get("size", len(data))) != len(data):
            raise HubError(422, f"LFS object {oid} has size {len(data)}, not {payload.get('size')}")
        return _json_response({"success": True})

    def _h_commit(self, req: _Request) -> _Response:
        self._check_auth(req, write=True)
        revision = "/".join(req.tail) or "main"  # type: ignore[attr-defined]
        try:
            lines = [json.loads(line) for line in req.body.decode().splitlines() if line.strip()]
        except ValueError as e:
            raise HubError(400, f"Commit payload is not valid NDJSON: {e}") from None
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "Commit payload must be NDJSON starting with a 'header' line")
        header = lines[0]["value"]
        with self._lock:
            repo = self._get_repo(req.repo_type, req.repo_id)  # type: ignore[attr-defined]
            head = self._resolve(repo, revision)
            if revision not in repo.branches:
                raise HubError(400, f"Can only commit to a branch, not to {revision!r}")
            parent_commit = header.get("parentCommit")
            if parent_commit and not head.sha.startswith(parent_commit.lower()):
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            files = dict(head.files)
            for op in lines[1:]:
                key, value = op.get("key"), op.get("value") or {}
                path = str(value.get("path", "")).strip("/")
                if key == "file":
                    if value.get("encoding", "base64") != "base64":
                        raise HubError(400, f"Unsupported encoding {value.get('encoding')!r}")
                    files[path] = FileEntry(base64.b64decode(value.get("content", "")), False)
                elif key == "lfsFile":
                    oid = value.get("oid")
                    data = repo.lfs_objects.get(oid)
                    if data is None:
                        raise HubError(422, f"LFS object {oid} for '{path}' was never uploaded")
                    if value.get("size") is not None and int(value["size"]) != len(data):
                        raise HubError(422, f"Size mismatch for '{path}'")
                    files[path] = FileEntry(data, True)
                elif key == "deletedFile":
                    if path not in files:
                        raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                    del files[path]
                elif key == "deletedFolder":
                    doomed = [p for p in files if p.startswith(path + "/")]
                    if not doomed:
                        raise HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                    for p in doomed:
                        del files[p]
                else:
                    raise HubError(400, f"Unknown commit operation {key!r}")
            pr_url = None
            branch = revision
            if req.flag("create_pr"):
                num = repo.next_pr
                repo.next_pr += 1
                branch = f"refs/pr/{num}"
                pr_url = f"{self._repo_url(repo)}/discussions/{num}"
            commit = self._add_commit(repo, branch, head.sha, files, header.get("summary") or "Commit",
                                      header.get("description") or "")
            self._note(f"COMMIT {repo.repo_type}:{repo.repo_id}@{branch} -> {commit.sha} ({len(files)} files)")
            return _json_response({
                "success": True,
                "commitOid": commit.sha,
                "commitUrl": f"{self._repo_url(repo)}/commit/{commit.sha}",
                "hookOutput": "",
                "pullRequestUrl": pr_url,
            })

    def _h_resolve(self, req: _Request) -> _Response:
        self._check_auth(req, write=False)
        with self._lock:
            repo = self._get_repo(req.repo_type, req.repo_id)  # type: ignore[attr-defined]
            commit = self._resolve(repo, req.revision)  # type: ignore[attr-defined]
            path = req.file_path  # type: ignore[attr-defined]
            entry = commit.files.get(path)
        if entry is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": commit.sha})
        name = path.rsplit("/", 1)[-1]
        headers = {
            "Content-Type": "application/octet-stream",
            "X-Repo-Commit": commit.sha,
            "ETag": f'"{entry.etag}"',
            "Accept-Ranges": "bytes",
            "Content-Disposition": f"inline; filename*=UTF-8''{quote(name)}; filename=\"{name}\";",
        }
        if entry.lfs:
            headers["X-Linked-Etag"] = f'"{entry.sha256}"'
            headers["X-Linked-Size"] = str(entry.size)
        data, status = entry.content, 200
        rng = req.headers.get("Range")
        if rng and rng.startswith("bytes="):
            try:
                start_s, end_s = rng[len("bytes="):].split(",")[0].split("-")
                if start_s == "":
                    start, end = max(0, len(data) - int(end_s)), len(data) - 1
                else:
                    start, end = int(start_s), (int(end_s) if end_s else len(data) - 1)
                end = min(end, len(data) - 1)
                if start >= len(data) or start > end:
                    raise ValueError
            except ValueError:
                raise HubError(416, "Requested range not satisfiable",
                               headers={"Content-Range": f"bytes */{len(data)}"}) from None
            data, status = data[start:end + 1], 206
            headers["Content-Range"] = f"bytes {start}-{end}/{entry.size}"
        return _Response(status, data, headers)


def _card_data(entry: FileEntry | None) -> dict | None:
    """YAML front matter of README.md, if PyYAML is importable (optional)."""
    if entry is None:
        return None
    text = entry.content.decode("utf-8", "replace")
    if not text.startswith("---"):
        return None
    end = text.find("\n---", 3)
    if end < 0:
        return None
    try:
        import yaml  # optional
    except ImportError:
        return None
    try:
        data = yaml.safe_load(text[3:end])
    except Exception:
        return None
    return json.loads(json.dumps(data, default=str)) if isinstance(data, dict) else None


# --------------------------------------------------------------------------------------------
# HTTP plumbing
# --------------------------------------------------------------------------------------------


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, *args, **kwargs):
        self._open_sockets: set = set()
        self._sockets_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def process_request(self, request, client_address) -> None:
        with self._sockets_lock:
            self._open_sockets.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request) -> None:
        with self._sockets_lock:
            self._open_sockets.discard(request)
        super().shutdown_request(request)

    def close_open_connections(self) -> None:
        """Close keep-alive connections still open, so no handler thread outlives the server."""
        with self._sockets_lock:
            sockets, self._open_sockets = list(self._open_sockets), set()
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                sock.close()
            except OSError:
                pass

    def handle_error(self, request, client_address) -> None:  # no stderr noise; record instead
        exc = sys.exc_info()[1]
        if isinstance(exc, (BrokenPipeError, ConnectionResetError, TimeoutError)):
            return
        hub = getattr(self, "hub", None)
        if hub is not None:
            with hub._lock:
                hub.errors.append(f"connection {client_address}:\n{traceback.format_exc()}")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "hf-unlearn-test-hub/1.0"
    timeout = 60  # idle keep-alive connections are dropped after this

    @property
    def hub(self) -> HubServer:
        return self.server.hub  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        self.hub._note("%s %s" % (self.address_string(), format % args))

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size_line = self.rfile.readline()
                if not size_line:
                    break
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _dispatch(self) -> None:
        hub = self.hub
        kind, status = "?", 500
        started = time.perf_counter()
        try:
            body = self._read_body()
            split = urlsplit(self.path)
            segs = [unquote(s) for s in split.path.split("/")[1:]]
            while segs and segs[-1] == "" and len(segs) > 1:
                segs.pop()
            auth = self.headers.get("Authorization") or ""
            token = auth[7:].strip() if auth.lower().startswith("bearer ") else (auth.strip() or None)
            req = _Request(self.command, split.path, segs, parse_qs(split.query, keep_blank_values=True),
                           self.headers, body, token or None)
            try:
                kind, resp = hub._handle(req)
            except Exception:  # a bug in the server: record it, answer 500
                tb = traceback.format_exc()
                with hub._lock:
                    hub.errors.append(f"{self.command} {self.path}\n{tb}")
                hub._note(f"ERROR {self.command} {self.path}: {tb.splitlines()[-1]}")
                resp = _json_response({"error": "Internal error in the test Hub server"}, 500,
                                      {"X-Error-Message": "Internal error in the test Hub server"})
            status = resp.status
            with hub._lock:
                hub.requests.append({"method": self.command, "path": split.path, "kind": kind, "status": status,
                                     "seconds": round(time.perf_counter() - started, 4)})
            self._send(resp)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True

    def _send(self, resp: _Response) -> None:
        body = resp.body or b""
        self.send_response(resp.status)
        for k, v in resp.headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)
        self.wfile.flush()

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = _dispatch

    def handle(self) -> None:
        try:
            super().handle()
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass


# --------------------------------------------------------------------------------------------
# pytest fixture
# --------------------------------------------------------------------------------------------

if pytest is not None:

    @pytest.fixture
    def hub_server(tmp_path):
        """A started `HubServer` with `hf_home` set to a per-test temp dir; stopped afterwards.

        Teardown fails the test if the server hit an internal error (a bug in the server or a
        request shape it did not expect); set `hub_server.check_errors_on_teardown = False` to
        allow that.
        """
        server = HubServer(hf_home=tmp_path / "hf_home")
        server.start()
        try:
            yield server
        finally:
            server.stop()
        if server.check_errors_on_teardown and server.errors:
            raise AssertionError("test Hub server internal errors:\n" + "\n".join(server.errors))
