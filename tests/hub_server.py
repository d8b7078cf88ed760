"""A fake Hugging Face hub on 127.0.0.1 for the hub tests: the resolve URLs, the headers and errors the hub sends.

Two listeners, each on a random port in its own thread: the hub itself answers
``/{org}/{name}/resolve/{revision}/{filename}`` and redirects large (LFS) files to a "CDN" on another origin, as
huggingface.co does, so huggingface_hub takes that file's metadata from the redirect and downloads from ``Location``.
Every request both receive is recorded as ``(method, path)``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import threading
from dataclasses import dataclass, field
from urllib.parse import unquote

LFS_FILES = (".safetensors", ".bin")  # the kinds of file the hub stores in LFS and serves from its CDN


@dataclass
class FakeRepo:
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit sha -> {filename: content}
    refs: dict[str, str] = field(default_factory=dict)  # branch or tag -> commit sha


class FakeHub:
    """The repos served, the requests seen, and the endpoint to put in HF_ENDPOINT."""

    def __init__(self):
        self.repos: dict[str, FakeRepo] = {}
        self.requests: list[tuple[str, str]] = []
        self.blobs: dict[str, bytes] = {}  # sha256 -> content, what the CDN serves
        self.url = ""
        self.cdn_url = ""
        self._lock = threading.Lock()

    def add_commit(self, name: str, files: dict[str, bytes], refs=("main",)) -> str:
        """Add a commit of ``files`` to repo ``name``, point ``refs`` at it, and return its sha."""
        repo = self.repos.setdefault(name, FakeRepo())
        digest = hashlib.sha1(f"{name} {len(repo.commits)}".encode())
        for filename, content in sorted(files.items()):
            digest.update(filename.encode() + content)
            self.blobs[hashlib.sha256(content).hexdigest()] = content
        sha = digest.hexdigest()
        repo.commits[sha] = dict(files)
        repo.refs.update({ref: sha for ref in refs})
        return sha

    def record(self, method: str, path: str) -> None:
        with self._lock:
            self.requests.append((method, path))

    def take_requests(self) -> list[tuple[str, str]]:
        """The requests seen since the last call."""
        with self._lock:
            seen, self.requests = self.requests, []
        return seen


def _git_blob_sha(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    timeout = 10  # a client that stops talking cannot hold a server thread for longer
    hub: FakeHub
    role: str  # "hub" or "cdn"

    def log_message(self, *args):
        pass

    def do_HEAD(self):
        self._answer(body=False)

    def do_GET(self):
        self._answer(body=True)

    def _answer(self, body: bool):
        self.hub.record(self.command, self.path)
        if self.role == "cdn":
            return self._cdn(body)
        parts = self.path.split("/", 5)  # "", org, name, "resolve", revision, filename
        if len(parts) != 6 or parts[3] != "resolve":
            return self._send(404, {}, b"Not Found", body)
        name, revision, filename = f"{parts[1]}/{parts[2]}", unquote(parts[4]), unquote(parts[5])
        repo = self.hub.repos.get(name)
        if repo is None:
            return self._error("RepoNotFound", "Repository not found", body)
        sha = revision if revision in repo.commits else repo.refs.get(revision)
        if sha is None:
            return self._error("RevisionNotFound", f"Invalid rev id: {revision}", body)
        content = repo.commits[sha].get(filename)
        if content is None:
            return self._error("EntryNotFound", "Entry not found", body, {"X-Repo-Commit": sha})
        headers = {"X-Repo-Commit": sha, "ETag": f'"{_git_blob_sha(content)}"'}
        if filename.endswith(LFS_FILES):
            sha256 = hashlib.sha256(content).hexdigest()
            headers.update({"X-Linked-Etag": f'"{sha256}"', "X-Linked-Size": str(len(content)),
                            "Location": f"{self.hub.cdn_url}/lfs/{sha256}"})
            return self._send(302, headers, b"", body)
        return self._send(200, headers, content, body)

    def _cdn(self, body: bool):
        content = self.hub.blobs.get(self.path.rsplit("/", 1)[-1])
        if content is None:
            return self._send(404, {}, b"NoSuchKey", body)
        self._send(200, {"Content-Type": "application/octet-stream"}, content, body)

    def _error(self, code: str, message: str, body: bool, extra=None):
        self._send(404, {"X-Error-Code": code, "X-Error-Message": message, **(extra or {})},
                   f'{{"error": "{message}"}}'.encode(), body)

    def _send(self, status: int, headers: dict, content: bytes, body: bool):
        self.send_response(status)
        for key, value in {**headers, "Content-Length": str(len(content))}.items():
            self.send_header(key, value)
        self.end_headers()
        if body:
            self.wfile.write(content)


@contextlib.contextmanager
def _serving(handler):
    """A threaded HTTP server on a random loopback port for the ``with`` block; yields its URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True  # a stuck request thread never keeps the test process alive
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextlib.contextmanager
def serve_hub():
    """Run a FakeHub (and its CDN) on loopback for the ``with`` block; both stop when it ends."""
    hub = FakeHub()
    with contextlib.ExitStack() as stack:
        hub.url = stack.enter_context(_serving(_handler_for(hub, "hub")))
        hub.cdn_url = stack.enter_context(_serving(_handler_for(hub, "cdn")))
        yield hub


def _handler_for(hub: FakeHub, role: str) -> type:
    return type(f"{role.title()}Handler", (_Handler,), {"hub": hub, "role": role})


class _QuietFileHandler(http.server.SimpleHTTPRequestHandler):
    timeout = 10

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serve_folder(folder):
    """A plain web server (no hub headers) on loopback serving ``folder`` for the ``with`` block; yields its URL."""
    with _serving(functools.partial(_QuietFileHandler, directory=str(folder))) as url:
        yield url
