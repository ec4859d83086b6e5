"""A small local Hub: the part of the Hugging Face Hub HTTP API that ``huggingface_hub`` 2.x uses to create a model
repo and commit files to it, served by the standard library on 127.0.0.1 (a random port) in a daemon thread.

What arrives is stored on disk (``<root>/<namespace>/<name>/<revision>/<path>``) so that tests compare the
files that arrived with the local ones. Endpoints:

* ``POST /api/repos/create``                          create a model repo (409 if it exists, as the Hub)
* ``POST /api/validate-yaml``                         README.md front matter check (always valid here)
* ``POST /api/models/<ns>/<name>/preupload/<rev>``    upload mode per file: ``regular`` (content inline in the
  commit), or ``lfs`` for names ending with one of ``lfs_suffixes``
* ``POST /<ns>/<name>.git/info/lfs/objects/batch``    git-LFS batch API, "basic" transfer: one PUT per object
* ``PUT  /lfs-objects/<oid>`` and ``POST /lfs-verify`` the LFS upload and its verification (sha256 and size checked)
* ``POST /api/models/<ns>/<name>/commit/<rev>``       the ndjson commit: header, file (base64), lfsFile, deletions
* ``GET  /api/models/<ns>/<name>[/revision/<rev>]``   repo info (asked when a commit would be empty)

``huggingface_hub`` sends a file as LFS only when the server says so in the preupload answer, and with ``hf_xet``
installed an ``lfs`` answer makes it use the Xet protocol, which this server does not speak: leave
``lfs_suffixes`` empty (the default) with Xet, or set ``HF_HUB_DISABLE_XET`` (the ``huggingface_hub.constants``
value) to exercise the LFS protocol.

``fail_status`` (e.g. 500) answers every request with that status; ``fail_paths`` limits it to URL paths that
contain one of the given strings (``{"/commit/"}``). ``commit_gate``: a ``threading.Event`` that commits wait for
(an upload that is still running). ``token``: when set, requests without
``Authorization: Bearer <token>`` get 401.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

_REPO = r"(?P<repo>[^/]+/[^/]+)"
_ROUTES = [
    ("POST", re.compile(r"^/api/repos/create$"), "create_repo"),
    ("POST", re.compile(r"^/api/validate-yaml$"), "validate_yaml"),
    ("POST", re.compile(rf"^/api/models/{_REPO}/preupload/(?P<rev>.+)$"), "preupload"),
    ("POST", re.compile(rf"^/api/models/{_REPO}/commit/(?P<rev>.+)$"), "commit"),
    ("POST", re.compile(rf"^/{_REPO}\.git/info/lfs/objects/batch$"), "lfs_batch"),
    ("PUT", re.compile(r"^/lfs-objects/(?P<oid>[0-9a-f]{64})$"), "lfs_put"),
    ("POST", re.compile(r"^/lfs-verify$"), "lfs_verify"),
    ("GET", re.compile(rf"^/api/models/{_REPO}(?:/revision/(?P<rev>[^/]+))?$"), "repo_info"),
]


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubServer:
    def __init__(self, root, namespace: str = "tester", lfs_suffixes: tuple = (), token: str | None = None):
        self.root = os.fspath(root)
        self.namespace = namespace
        self.lfs_suffixes = tuple(lfs_suffixes)
        self.token = token
        self.fail_status: int | None = None
        self.fail_paths: set[str] | None = None
        self.commit_gate: threading.Event | None = None  # when set, commits wait for it (a slow upload)
        self.repos: dict[str, dict] = {}         # repo_id -> {"private": ..., "heads": {rev: commit oid}}
        self.commits: list[dict] = []            # {"repo_id", "revision", "message", "added", "deleted", "oid"}
        self.requests: list[tuple[str, str, int]] = []
        self.lfs_objects: dict[str, int] = {}    # oid -> size (content in <root>/.lfs/<oid>)
        self._lock = threading.Lock()
        os.makedirs(os.path.join(self.root, ".lfs"), exist_ok=True)
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _dispatch(self, method):
                body = self._read_body()
                path = urlsplit(self.path).path
                status, payload = server.handle(method, path, dict(self.headers.items()), body)
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _read_body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = bytearray()
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            self.rfile.readline()
                            return bytes(out)
                        out += self.rfile.read(size)
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def do_GET(self):
                self._dispatch("GET")

            def do_POST(self):
                self._dispatch("POST")

            def do_PUT(self):
                self._dispatch("PUT")

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="hub-test-server", daemon=True)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> HubServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ------------------------------------------------------------------ what arrived
    def repo_dir(self, repo_id: str, revision: str = "main") -> str:
        return os.path.join(self.root, *repo_id.split("/"), revision.replace("/", "%2F"))

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """Every file of the repo at ``revision``: path in the repo -> bytes."""
        base = self.repo_dir(repo_id, revision)
        out = {}
        for dirpath, _, names in os.walk(base):
            for name in names:
                full = os.path.join(dirpath, name)
                with open(full, "rb") as f:
                    out[os.path.relpath(full, base).replace(os.sep, "/")] = f.read()
        return out

    def commit_messages(self, repo_id: str | None = None) -> list[str]:
        return [c["message"] for c in self.commits if repo_id is None or c["repo_id"] == repo_id]

    # ------------------------------------------------------------------ request handling
    def handle(self, method: str, path: str, headers: dict, body: bytes):
        gate = self.commit_gate
        if gate is not None and "/commit/" in path:
            gate.wait(timeout=60)
        with self._lock:
            status, payload = self._handle(method, path, {k.lower(): v for k, v in headers.items()}, body)
            self.requests.append((method, path, status))
            return status, payload

    def _handle(self, method, path, headers, body):
        if self.fail_status and (not self.fail_paths or any(p in path for p in self.fail_paths)):
            return self.fail_status, {"error": f"test server: failing with {self.fail_status} on purpose"}
        if self.token is not None and headers.get("authorization") != f"Bearer {self.token}":
            return 401, {"error": "Invalid credentials in Authorization header"}
        for route_method, pattern, name in _ROUTES:
            m = pattern.match(path)
            if m and route_method == method:
                kwargs = {k: unquote(v) for k, v in m.groupdict().items() if v is not None}
                return getattr(self, f"_{name}")(body=body, **kwargs)
        return 404, {"error": f"test server: no route for {method} {path}"}

    def _create_repo(self, body):
        req = json.loads(body)
        if req.get("type") not in (None, "model"):
            return 400, {"error": "test server: model repos only"}
        repo_id = f"{req.get('organization') or self.namespace}/{req['name']}"
        if repo_id in self.repos:
            return 409, {"error": "You already created this model repo", "url": f"{self.url}/{repo_id}"}
        self.repos[repo_id] = {"private": req.get("visibility") == "private", "visibility": req.get("visibility"),
                               "heads": {}}
        return 200, {"url": f"{self.url}/{repo_id}", "name": repo_id}

    def _validate_yaml(self, body):
        return 200, {"errors": [], "warnings": []}

    def _mode(self, path):
        return "lfs" if self.lfs_suffixes and path.endswith(self.lfs_suffixes) else "regular"

    def _preupload(self, body, repo, rev):
        if repo not in self.repos:
            return 404, {"error": "Repository not found"}
        files = []
        for f in json.loads(body)["files"]:
            mode = self._mode(f["path"])
            files.append({"path": f["path"], "uploadMode": mode, "shouldIgnore": False,
                          "oid": self._remote_oid(repo, rev, f["path"], mode)})
        return 200, {"files": files}

    def _remote_oid(self, repo, rev, path, mode):
        full = os.path.join(self.repo_dir(repo, rev), *path.split("/"))
        if not os.path.isfile(full):
            return None
        with open(full, "rb") as f:
            data = f.read()
        return hashlib.sha256(data).hexdigest() if mode == "lfs" else git_blob_sha1(data)

    def _lfs_batch(self, body, repo):
        if repo not in self.repos:
            return 404, {"message": "Repository not found"}
        objects = []
        for obj in json.loads(body)["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"]}
            if self.lfs_objects.get(obj["oid"]) != obj["size"]:
                entry["actions"] = {"upload": {"href": f"{self.url}/lfs-objects/{obj['oid']}"},
                                    "verify": {"href": f"{self.url}/lfs-verify"}}
            objects.append(entry)
        return 200, {"transfer": "basic", "objects": objects}

    def _lfs_put(self, body, oid):
        if hashlib.sha256(body).hexdigest() != oid:
            return 400, {"error": "test server: content does not match its sha256"}
        with open(os.path.join(self.root, ".lfs", oid), "wb") as f:
            f.write(body)
        self.lfs_objects[oid] = len(body)
        return 200, b""

    def _lfs_verify(self, body):
        req = json.loads(body)
        if self.lfs_objects.get(req["oid"]) != req["size"]:
            return 404, {"error": "test server: LFS object not uploaded"}
        return 200, {}

    def _commit(self, body, repo, rev):
        if repo not in self.repos:
            return 404, {"error": "Repository not found"}
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        if not lines or lines[0]["key"] != "header":
            return 400, {"error": "test server: the commit must start with a header line"}
        header = lines[0]["value"]
        writes, deletes = {}, []
        for item in lines[1:]:
            key, value = item["key"], item["value"]
            path = value["path"]
            if path.startswith("/") or ".." in path.split("/"):
                return 400, {"error": f"test server: bad path {path!r}"}
            if key == "file":
                writes[path] = base64.b64decode(value["content"])
            elif key == "lfsFile":
                oid = value["oid"]
                if oid not in self.lfs_objects:
                    return 400, {"error": f"test server: LFS object {oid} of {path} was never uploaded"}
                with open(os.path.join(self.root, ".lfs", oid), "rb") as f:
                    writes[path] = f.read()
            elif key in ("deletedFile", "deletedFolder"):
                deletes.append(path)
            else:
                return 400, {"error": f"test server: unknown commit item {key!r}"}
        base = self.repo_dir(repo, rev)
        for path in deletes:
            full = os.path.join(base, *path.rstrip("/").split("/"))
            if os.path.isdir(full):
                shutil.rmtree(full)
            elif os.path.exists(full):
                os.remove(full)
        for path, data in writes.items():
            full = os.path.join(base, *path.split("/"))
            os.makedirs(os.path.dirname(full), exist_ok=True)
            with open(full, "wb") as f:
                f.write(data)
        oid = hashlib.sha1(f"{repo}@{rev}#{len(self.commits)}".encode()).hexdigest()
        self.repos[repo]["heads"][rev] = oid
        self.commits.append({"repo_id": repo, "revision": rev, "message": header["summary"],
                             "added": sorted(writes), "deleted": deletes, "oid": oid})
        return 200, {"commitUrl": f"{self.url}/{repo}/commit/{oid}", "commitOid": oid, "pullRequestUrl": None}

    def _repo_info(self, body, repo, rev="main"):
        if repo not in self.repos:
            return 404, {"error": "Repository not found"}
        info = self.repos[repo]
        return 200, {"id": repo, "sha": info["heads"].get(rev, "0" * 40), "private": info["private"]}
