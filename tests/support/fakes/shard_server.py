"""A loopback HTTP server that serves parquet shards named like the real ones, with faults.

    server = ShardServer({"shard_00000.parquet": data, ...})
    server.fail("shard_00000.parquet", "500", "500")   # the next two requests for it answer 500
    with server:                                         # starts on 127.0.0.1:<free port>
        download(server.url, ...)
    server.requests                                      # every (name, fault or "ok") served

Faults, consumed one per request, in order:
    "500"       answer 500 Internal Server Error
    "404"       answer 404 Not Found
    "truncate"  announce the full Content-Length, send half the body, close the connection
    "corrupt"   answer 200 with the right length but the bytes scrambled (not valid parquet)
    "stall"     send the headers and a little of the body, then wait until the server stops
    "gzip"      answer 200 with the body gzip-compressed (Content-Encoding: gzip, Content-Length
                of the compressed bytes, as HTTP says), like a compressing proxy or CDN
Names not in the table answer 404 every time.
"""

from __future__ import annotations

import gzip
import random
import threading
from collections import defaultdict, deque
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO

import pyarrow as pa
import pyarrow.parquet as pq


def make_shard(
    index: int, docs: int = 200, words_per_doc: tuple[int, int] = (20, 120), seed: int = 0
) -> bytes:
    """A small parquet shard (a `text` column) of pseudo-random words, different for each index.

    Words are random letter strings, so a byte-level BPE finds many distinct merges in them
    (a full 8192-token vocabulary from a handful of shards).
    """
    rng = random.Random(seed * 100_003 + index)
    letters = "abcdefghijklmnopqrstuvwxyzéüß"
    vocab = ["".join(rng.choice(letters) for _ in range(rng.randint(2, 9))) for _ in range(1500)]
    texts = []
    for _ in range(docs):
        n = rng.randint(*words_per_doc)
        texts.append(" ".join(rng.choice(vocab) for _ in range(n)) + ".")
    buf = BytesIO()
    pq.write_table(pa.table({"text": texts}), buf, row_group_size=64)
    return buf.getvalue()


class ShardServer:
    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = dict(files)
        self.faults: dict[str, deque[str]] = defaultdict(deque)
        self.requests: list[tuple[str, str]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def fail(self, name: str, *faults: str) -> None:
        with self._lock:
            self.faults[name].extend(faults)

    def downloads(self, name: str | None = None) -> int:
        """How many full bodies were served (of `name`, or of any shard)."""
        return sum(1 for n, how in self.requests if how == "ok" and (name is None or n == name))

    @property
    def url(self) -> str:
        assert self._httpd is not None, "start the server first"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/data"

    def start(self) -> ShardServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # quiet test output
                pass

            def do_GET(self) -> None:
                name = self.path.rsplit("/", 1)[-1]
                with server._lock:
                    fault = server.faults[name].popleft() if server.faults[name] else "ok"
                    body = server.files.get(name)
                    server.requests.append((name, fault if body is not None else "404"))
                if body is None or fault == "404":
                    self._reply(404, b"not found")
                elif fault == "500":
                    self._reply(500, b"boom")
                elif fault == "corrupt":
                    self._reply(200, bytes(reversed(body)))
                elif fault == "gzip":
                    self._reply(200, gzip.compress(body), encoding="gzip")
                elif fault in ("truncate", "stall"):
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[: len(body) // 2] if fault == "truncate" else body[:100])
                    self.wfile.flush()
                    if fault == "stall":
                        server._stop.wait(30)
                    self.close_connection = True
                else:
                    self._reply(200, body)

            def _reply(self, code: int, body: bytes, encoding: str | None = None) -> None:
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Content-Type", "application/octet-stream")
                if encoding is not None:
                    self.send_header("Content-Encoding", encoding)
                self.end_headers()
                self.wfile.write(body)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    def __enter__(self) -> ShardServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def climbmix_files(indices: Iterable[int], docs: int = 200) -> dict[str, bytes]:
    return {f"shard_{i:05d}.parquet": make_shard(i, docs=docs) for i in indices}


def main() -> None:
    """Serve shards 0..3 and 06542 until Ctrl-C (handy for trying `autoresearch prepare` by hand)."""
    server = ShardServer(climbmix_files([0, 1, 2, 3, 6542])).start()
    print(
        f"serving on {server.url}  (autoresearch prepare --dataset climbmix --num-shards 4 --base-url {server.url})"
    )
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
