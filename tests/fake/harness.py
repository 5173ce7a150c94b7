"""FakeReplicate: starts tests/fake/fake_replicate.py on a free 127.0.0.1 port for a
test and stops it afterwards.

    with FakeReplicate(token="r8_test") as fake:
        fake.configure(mode="slow")
        ... point REPLICATE_API_BASE at fake.base_url ...
        assert fake.stats()["cancels"] == 1
"""

import json
import os
import subprocess
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "fake_replicate.py")
PYTHON = "/usr/bin/python3"


class FakeReplicate:
    def __init__(self, token="r8_fake_test_token", mode="ok", delay_ms=200, start_timeout=10.0):
        self.token = token
        self.mode = mode
        self.delay_ms = delay_ms
        self.start_timeout = start_timeout
        self.proc = None
        self.port = None

    # ---- lifecycle ----

    def start(self):
        py = PYTHON if os.path.exists(PYTHON) else "python3"
        # stderr to a file: a pipe nobody reads would block the fake once full
        self._err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [py, SCRIPT, "--port", "0", "--token", self.token, "--mode", self.mode,
             "--delay-ms", str(self.delay_ms), "--quiet"],
            stdout=subprocess.PIPE, stderr=self._err, text=True)
        deadline = time.time() + self.start_timeout
        line = ""
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if line.startswith("READY port="):
                self.port = int(line.strip().split("=", 1)[1])
                return self
            if not line and self.proc.poll() is not None:
                break
        err = self.stderr_text()
        self.stop()
        raise RuntimeError("fake Replicate did not start: %r %s" % (line, err))

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        self._err.close()
        self.proc = None

    def stderr_text(self):
        """What the fake wrote on stderr (tracebacks, if any)."""
        self._err.flush()
        self._err.seek(0)
        return self._err.read().decode("utf-8", "replace")

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ---- addresses ----

    @property
    def root_url(self):
        return "http://127.0.0.1:%d" % self.port

    @property
    def base_url(self):
        """The REPLICATE_API_BASE to give the client (ends in /v1)."""
        return self.root_url + "/v1"

    # ---- control API ----

    def _call(self, method, path, obj=None):
        data = json.dumps(obj).encode() if obj is not None else (b"" if method == "POST" else None)
        req = urllib.request.Request(self.root_url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read().decode())

    def configure(self, **kw):
        """Merges kw into the fake's config (keys of fake_replicate.DEFAULTS)."""
        return self._call("POST", "/_control/config", kw)

    def stats(self):
        return self._call("GET", "/_control/stats")

    def reset(self):
        return self._call("POST", "/_control/reset")

    def api(self, method, path, body=None, headers=None, raw=None):
        """Raw call to the fake's API (path under /v1). Returns (status, headers, json|bytes)."""
        h = {"Authorization": "Bearer " + self.token, "Content-Type": "application/json"}
        h.update(headers or {})
        h = {k: v for k, v in h.items() if v is not None}
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else
                                            (b"" if method == "POST" else None))
        url = path if path.startswith("http") else self.base_url + path
        req = urllib.request.Request(url, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                status, hdrs, payload = r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            status, hdrs, payload = e.code, dict(e.headers), e.read()
        try:
            return status, hdrs, json.loads(payload.decode())
        except Exception:
            return status, hdrs, payload
