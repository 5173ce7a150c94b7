"""Shared fixtures for the integration suites: start the real scenecomp binary on
127.0.0.1 with a free port and private LOGS_DIR / OUTPUT_DIR, talk to it over
HTTP, generate test images with PIL.

Reusable by every tests/integration/test_*.py file:

    def test_x(server):
        srv = server({"USE_KONTEXT_COMPOSITE": "true"})   # env overrides
        r = post_composite(srv.base, scene_png, product_png, x="0.3")
        assert "Using PIL composite method" in srv.log_text()

SCENECOMP_BIN selects the binary (default build/scenecomp). Every server is
stopped with SIGTERM at the end of its test; a non-zero exit (for example an
ASan/UBSan report) fails the test.
"""
import io
import os
import signal
import struct
import subprocess
import time
import zlib

import pytest
import requests
from PIL import Image

from ports import free_port  # noqa: F401 (tests import it from here)

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.path.abspath(os.environ.get("SCENECOMP_BIN", os.path.join(ROOT, "build", "scenecomp")))
SANITIZED = os.environ.get("SC_SANITIZED") == "1"
# Generous bounds: the machine is shared and the ASan build is slow.
START_TIMEOUT = 60 if SANITIZED else 20
STOP_TIMEOUT = 60 if SANITIZED else 30

# Variables of the contract that must not leak in from the caller's environment.
_CONTRACT_VARS = [
    "HOST", "PORT", "USE_KONTEXT_COMPOSITE", "COMPOSITE_METHOD", "KONTEXT_MODEL_ID",
    "KONTEXT_TIMEOUT_SECONDS", "MAX_CONCURRENT_KONTEXT", "MAX_KONTEXT_PER_HOUR",
    "KONTEXT_DAILY_GENERATION_LIMIT", "SCENE_MODEL_ID", "SCENE_TIMEOUT_SECONDS",
    "REPLICATE_API_TOKEN", "REPLICATE_API_BASE", "LOGS_DIR", "OUTPUT_DIR", "POLICY_FILE",
    "ALERTS_FILE", "ADMIN_TOKEN", "MAX_UPLOAD_BYTES", "MAX_IMAGE_PIXELS", "ALERT_WEBHOOK_URL",
    "ALERT_EVAL_INTERVAL_SECONDS", "KONTEXT_PRICE_USD", "SCENE_PRICE_USD", "HTTP_THREADS",
    "LOG_LEVEL", "MAX_BUFFERED_UPLOAD_BYTES", "MAX_CONNECTIONS_PER_IP", "HEADER_TIMEOUT_SECONDS",
    "LIMITS_STORE", "REDIS_URL", "REDIS_KEY_PREFIX", "INSTANCE_ID", "POLICY_SOURCE",
    "BREAKER_ENABLED", "KONTEXT_BUDGET_PACING",  # issue 11
    "PRODUCT_CACHE_BYTES",  # issue 12
    "UPLOAD_SPOOL_BYTES",  # issue 11, memory
]


def base_env(overrides=None):
    """The process environment without the contract's variables, plus overrides."""
    env = {k: v for k, v in os.environ.items() if k not in _CONTRACT_VARS}
    # Never reach the real Replicate, whatever a test forgets to set.
    env["REPLICATE_API_BASE"] = "http://127.0.0.1:9/v1"
    env.update({k: str(v) for k, v in (overrides or {}).items()})
    return env


class Server:
    """One running `scenecomp serve`. Attributes: base (http://127.0.0.1:PORT),
    port, proc, workdir, logs_dir, output_dir, log_path (backend.log),
    stderr_path, env."""

    def __init__(self, workdir, env_overrides=None, check_exit=True, files=None):
        self.workdir = str(workdir)
        for rel, content in (files or {}).items():
            path = os.path.join(self.workdir, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(content.encode() if isinstance(content, str) else content)
        self.port = free_port()
        self.logs_dir = os.path.join(self.workdir, "logs")
        self.output_dir = os.path.join(self.workdir, "output")
        self.log_path = os.path.join(self.logs_dir, "backend.log")
        self.stderr_path = os.path.join(self.workdir, "stderr.log")
        self.check_exit = check_exit
        env = {
            "HOST": "127.0.0.1", "PORT": self.port,
            "LOGS_DIR": self.logs_dir, "OUTPUT_DIR": self.output_dir,
        }
        env.update(env_overrides or {})
        self.env = base_env(env)
        if "PORT" in (env_overrides or {}):
            self.port = int(env_overrides["PORT"])
        self.base = "http://127.0.0.1:%d" % self.port
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen([BIN, "serve"], cwd=self.workdir, env=self.env,
                                     stdout=self._stderr, stderr=subprocess.STDOUT)
        self._wait_ready()

    def url(self, path):
        return self.base + path

    def _wait_ready(self):
        deadline = time.time() + START_TIMEOUT
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("scenecomp exited with %s:\n%s" % (self.proc.returncode, self.stderr_text()))
            try:
                if requests.get(self.url("/health"), timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("scenecomp did not answer /health:\n" + self.stderr_text())

    def log_text(self):
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def stderr_text(self):
        if not self._stderr.closed:  # stop() closes it; the teardown still reads the file
            self._stderr.flush()
        with open(self.stderr_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def wait_log(self, phrase, timeout=10.0, count=1):
        """Waits until phrase appears count times in backend.log; returns the text."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            text = self.log_text()
            if text.count(phrase) >= count:
                return text
            time.sleep(0.05)
        raise AssertionError("%r not logged %d time(s); log:\n%s" % (phrase, count, self.log_text()))

    def stop(self):
        """SIGTERM, wait, and return the exit code (kills if it hangs)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self._stderr.close()
                raise AssertionError("scenecomp did not stop on SIGTERM:\n" + self.stderr_text())
        self._stderr.close()
        return self.proc.returncode


@pytest.fixture
def server(tmp_path):
    """Factory: server(env_overrides=None, check_exit=True, files=None) -> Server.
    Each call starts one server in its own working directory under tmp_path;
    files ({relative path: text or bytes}) are written there first (a .env,
    lua/policy.lua, ...)."""
    started = []

    def start(env_overrides=None, check_exit=True, files=None):
        workdir = tmp_path / ("srv%d" % len(started))
        workdir.mkdir()
        srv = Server(workdir, env_overrides, check_exit, files)
        started.append(srv)
        return srv

    yield start
    failures = []
    for srv in started:
        rc = srv.stop()
        if srv.check_exit and rc != 0:
            failures.append("server exited with %s:\n%s" % (rc, srv.stderr_text()[-4000:]))
    if failures:
        pytest.fail("\n".join(failures))


# ==== HTTP helpers ====

def post_composite(base, scene, product, headers=None, timeout=60, **fields):
    """POSTs multipart/form-data to /api/composite. scene/product are bytes (or
    None to leave the field out); fields are the text fields (x, y, scale,
    format, prompt, user_id). Returns the requests.Response."""
    parts = []
    if scene is not None:
        parts.append(("scene", ("scene.png", scene, "application/octet-stream")))
    if product is not None:
        parts.append(("product", ("product.png", product, "application/octet-stream")))
    # Text fields as form parts too, so the body is multipart even without files.
    parts += [(k, (None, str(v))) for k, v in fields.items()]
    return requests.post(base + "/api/composite", files=parts, headers=headers or {},
                         timeout=timeout)


def assert_error(resp, status, code):
    """Checks the contract's error shape {"error": {"code", "message"}}."""
    assert resp.status_code == status, (resp.status_code, resp.text)
    body = resp.json()
    assert set(body) == {"error"}, body
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"], body
    return body


# ==== Images ====

def encode(img, fmt="PNG", **kw):
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def decode(data):
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def gradient_scene(w=200, h=100):
    """An opaque RGB scene whose every pixel differs, so a misplaced product shows."""
    img = Image.new("RGB", (w, h))
    img.putdata([((x * 255) // max(1, w - 1), (y * 255) // max(1, h - 1), (x + 2 * y) % 256)
                 for y in range(h) for x in range(w)])
    return img


def sample_product(w=40, h=20):
    """An RGBA product: transparent border, an opaque red block, a 50%-alpha
    (a=128) blue block. Returns the image."""
    img = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    for y in range(h // 4, 3 * h // 4):
        for x in range(w // 8, w // 2):
            img.putpixel((x, y), (230, 30, 20, 255))
        for x in range(w // 2, 7 * w // 8):
            img.putpixel((x, y), (10, 40, 250, 128))
    return img




def png_header_only(width, height):
    """A PNG whose IHDR claims width x height (valid CRC) followed by a tiny
    IDAT and IEND: decodes to nothing sane, but its header is well-formed."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


def expected_composite(scene, product, x, y, scale):
    """The contract's placement and 'over' compositing, computed independently
    (no resize involved when scale * W equals the product width). Returns the
    expected RGB image and the geometry (left, top, width, height)."""
    W, H = scene.size
    pw, ph = product.size
    width = max(1, c_round(scale * W))
    height = max(1, c_round(width * ph / pw))
    assert (width, height) == (pw, ph), "choose scale so that no resize happens"
    left = c_round(x * W - width / 2.0)
    top = c_round(y * H - height / 2.0)
    out = scene.convert("RGB").copy()
    sp = out.load()
    pp = product.convert("RGBA").load()
    for j in range(height):
        for i in range(width):
            X, Y = left + i, top + j
            if 0 <= X < W and 0 <= Y < H:
                r, g, b, a = pp[i, j]
                d = sp[X, Y]
                sp[X, Y] = tuple(c_round((s * a + t * (255 - a)) / 255.0) for s, t in zip((r, g, b), d))
    return out, (left, top, width, height)


def c_round(v):
    """C's round(): halves away from zero (Python's round() is banker's)."""
    import math
    return int(math.floor(v + 0.5)) if v >= 0 else -int(math.floor(-v + 0.5))


# ==== the local fake Replicate (tests/fake) ====

@pytest.fixture(scope="module")
def fake_server(request):
    """One fake Replicate per test module, speaking the real protocol on
    127.0.0.1; the token is the module's TOKEN (or the fake's default)."""
    import sys
    sys.path.insert(0, ROOT)
    from tests.fake.harness import FakeReplicate
    token = getattr(request.module, "TOKEN", "r8_fake_test_token")
    with FakeReplicate(token=token) as f:
        yield f


@pytest.fixture
def fake(fake_server):
    """The module's fake, reset (mode ok, counters and requests cleared) per test."""
    fake_server.reset()
    yield fake_server



# ==== a private redis-server (fleet tests) ====

@pytest.fixture
def redis_server(tmp_path):
    """A running redis-server on a free loopback port in tmp_path/redis (AOF on);
    .url for REDIS_URL, .stop()/.start() to simulate an outage. Stopped by pid."""
    from redis_helper import RedisServer
    d = tmp_path / "redis"
    d.mkdir()
    r = RedisServer(str(d)).start()
    yield r
    r.cleanup()
