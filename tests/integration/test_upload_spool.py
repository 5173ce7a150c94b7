"""issue 11, memory: uploaded files over UPLOAD_SPOOL_BYTES wait in anonymous
spool files (core/spool.h) instead of the heap. The PIL output is byte for
byte the same whether nothing, the large files or every file is spooled; a
Kontext request waiting on its prediction holds its two uploads as deleted
files (and nothing named in OUTPUT_DIR); the async path keeps its inputs from
the spool; a spool that cannot be written (RLIMIT_FSIZE) answers 503 and the
server goes on."""
import os
import random
import re
import resource
import subprocess
import threading
import time

import requests
from PIL import Image

from conftest import BIN, assert_error, base_env, encode
from test_kontext_fake import TOKEN, kontext_env  # noqa: F401 (TOKEN: the fake's token)


def metric(text, name):
    m = re.search(r"^%s(?:\{instance=\"[^\"]*\"\})? (\S+)$" % re.escape(name), text, re.M)
    return float(m.group(1)) if m else None


def spool_metrics(srv):
    text = requests.get(srv.url("/metrics"), timeout=10).text
    names = ["scenecomp_upload_spooled_total", "scenecomp_upload_spool_files",
             "scenecomp_upload_spool_bytes", "scenecomp_upload_spool_errors_total"]
    return {n.replace("scenecomp_upload_", ""): metric(text, n) for n in names}


def spool_metrics_settled(srv, timeout=5.0):
    """spool_metrics once the server has closed its spool files: a request's
    files close when libmicrohttpd ends the request, which can come just after
    the client has read the whole answer."""
    deadline = time.time() + timeout
    m = spool_metrics(srv)
    while (m["spool_files"] or deleted_fds(srv.proc.pid)) and time.time() < deadline:
        time.sleep(0.05)
        m = spool_metrics(srv)
    return m


def deleted_fds(pid):
    """Descriptors of pid that point at deleted files (spooled uploads)."""
    n = 0
    d = "/proc/%d/fd" % pid
    for fd in os.listdir(d):
        try:
            if os.readlink(os.path.join(d, fd)).endswith("(deleted)"):
                n += 1
        except OSError:
            pass  # closed meanwhile
    return n


def stray_files(srv):
    """Names in OUTPUT_DIR that an upload could have left."""
    if not os.path.isdir(srv.output_dir):
        return []
    return [n for n in os.listdir(srv.output_dir) if n.startswith("upload") or ".tmp." in n]


def noise(w, h, mode, seed):
    """An image that does not compress: its PNG is about w * h * channels bytes."""
    rnd = random.Random(seed)
    return Image.frombytes(mode, (w, h), bytes(rnd.getrandbits(8) for _ in range(w * h * len(mode))))


def big_inputs():
    """A ~230 KB scene and a ~77 KB product (noise with a transparent border),
    both over the 16 KiB default."""
    scene = encode(noise(320, 240, "RGB", 1))
    shot = Image.new("RGBA", (180, 140), (0, 0, 0, 0))
    shot.paste(noise(160, 120, "RGBA", 2), (10, 10))
    product = encode(shot)
    assert len(scene) > 200_000 and len(product) > 65_536, (len(scene), len(product))
    return scene, product


def post(base, scene, product, mask=None, headers=None, **fields):
    parts = [("scene", ("s.png", scene, "image/png")), ("product", ("p.png", product, "image/png"))]
    if mask is not None:
        parts.append(("mask", ("m.png", mask, "image/png")))
    parts += [(k, (None, str(v))) for k, v in fields.items()]
    return requests.post(base + "/api/composite", files=parts, headers=headers or {}, timeout=60)


def test_pil_output_identical_whatever_is_spooled(server):
    scene, product = big_inputs()
    shape = Image.new("L", (180, 140), 255)
    shape.paste(noise(90, 70, "L", 4), (45, 35))
    mask = encode(shape)  # ~7 KB: spooled only with the tiny threshold
    assert 1024 < len(mask) < 16_384, len(mask)
    outs = {}
    for spool, want_spooled in (("0", 0), (None, 2), ("1024", 3)):
        srv = server({"UPLOAD_SPOOL_BYTES": spool} if spool is not None else {})
        r = post(srv.base, scene, product, mask, headers={"Accept": "image/png"}, x="0.4",
                 scale="0.5")
        assert r.status_code == 200, r.text
        assert r.headers["X-Composite-Method"] == "pil"
        outs[spool] = r.content
        m = spool_metrics_settled(srv)
        assert m["spooled_total"] == want_spooled, (spool, m)
        assert m["spool_files"] == 0 and m["spool_bytes"] == 0 and m["spool_errors_total"] == 0, m
        assert deleted_fds(srv.proc.pid) == 0
        assert stray_files(srv) == []
    assert outs["0"] == outs[None] == outs["1024"]


def test_kontext_wait_holds_deleted_spool_files(server, fake):
    scene, product = big_inputs()
    fake.configure(mode="ok", delay_ms=2500)
    srv = server(kontext_env(fake))
    assert deleted_fds(srv.proc.pid) == 0
    out = {}
    t = threading.Thread(target=lambda: out.update(r=post(srv.base, scene, product)))
    t.start()
    # while the prediction runs: the two uploads are deleted files, not names
    seen, m = 0, None
    deadline = time.time() + 15
    while time.time() < deadline and t.is_alive():
        seen = deleted_fds(srv.proc.pid)
        if seen == 2 and fake.stats()["creates"] >= 1:
            m = spool_metrics(srv)
            break
        time.sleep(0.05)
    listing = stray_files(srv)
    t.join(60)
    r = out["r"]
    assert r.status_code == 200, r.text
    assert r.json()["method"] == "kontext", r.json()
    assert seen == 2, seen
    assert listing == []
    assert m["spool_files"] == 2 and m["spool_bytes"] == len(scene) + len(product), m
    assert m["spooled_total"] == 2 and m["spool_errors_total"] == 0, m
    # after the answer: nothing held, nothing left
    deadline = time.time() + 5
    while deleted_fds(srv.proc.pid) and time.time() < deadline:
        time.sleep(0.05)
    assert deleted_fds(srv.proc.pid) == 0
    assert stray_files(srv) == []
    m = spool_metrics(srv)
    assert m["spool_files"] == 0 and m["spool_bytes"] == 0 and m["spooled_total"] == 2, m
    # the model got the uploads as they came (the Files API carries the big ones)
    assert fake.stats()["creates"] == 1


def test_async_composite_from_spooled_inputs(server, fake):
    scene, product = big_inputs()
    fake.configure(mode="ok", delay_ms=1500)
    srv = server(kontext_env(fake))
    r = post(srv.base, scene, product, headers={"Prefer": "respond-async"})
    assert r.status_code == 202, r.text
    rid = r.json()["id"]
    # while it runs, the inputs kept for a restart are the uploads, byte for byte
    kept = os.path.join(srv.output_dir, rid + ".inputs")
    with open(os.path.join(kept, "scene"), "rb") as f:
        assert f.read() == scene
    with open(os.path.join(kept, "product"), "rb") as f:
        assert f.read() == product
    deadline = time.time() + 30
    while True:
        rec = requests.get(srv.url("/api/composites/" + rid), timeout=10).json()
        if rec["status"] != "processing" or time.time() > deadline:
            break
        time.sleep(0.1)
    assert rec["status"] == "succeeded" and rec["method"] == "kontext", rec
    img = requests.get(srv.url(rec["image_url"]), timeout=10)
    assert img.status_code == 200
    deadline = time.time() + 5
    while deleted_fds(srv.proc.pid) and time.time() < deadline:
        time.sleep(0.05)
    assert deleted_fds(srv.proc.pid) == 0
    assert not os.path.exists(kept)
    assert stray_files(srv) == []
    assert spool_metrics(srv)["spooled_total"] == 2


def test_spool_write_failure_is_a_503(server):
    scene, product = big_inputs()
    srv = server()
    # Files over 150 KB cannot be written from now on: the scene's spool fails
    # with EFBIG (SIGXFSZ is ignored by serve).
    hard = resource.prlimit(srv.proc.pid, resource.RLIMIT_FSIZE)[1]
    resource.prlimit(srv.proc.pid, resource.RLIMIT_FSIZE, (150_000, hard))
    r = post(srv.base, scene, product)
    body = assert_error(r, 503, "service_unavailable")
    assert "scene" in body["error"]["message"], body
    assert requests.get(srv.url("/health"), timeout=10).status_code == 200
    m = spool_metrics_settled(srv)
    assert m["spool_errors_total"] >= 1 and m["spool_files"] == 0 and m["spool_bytes"] == 0, m
    assert deleted_fds(srv.proc.pid) == 0
    assert stray_files(srv) == []
    assert "cannot spool field 'scene'" in srv.log_text()
    # smaller uploads still work (heap, and a spool under the limit)
    small_scene = encode(noise(200, 150, "RGB", 3))  # ~90 KB: spooled, under the limit
    small_product = encode(Image.new("RGBA", (40, 20), (200, 30, 30, 255)))
    r = post(srv.base, small_scene, small_product, scale="0.2")
    assert r.status_code == 200, r.text
    assert spool_metrics(srv)["spooled_total"] >= 2
    resource.prlimit(srv.proc.pid, resource.RLIMIT_FSIZE, (hard, hard))


def test_malformed_spool_threshold_stops_serve(tmp_path):
    env = base_env({"PORT": "0", "LOGS_DIR": str(tmp_path / "logs"),
                    "OUTPUT_DIR": str(tmp_path / "out"), "UPLOAD_SPOOL_BYTES": "64k"})
    r = subprocess.run([BIN, "serve"], cwd=str(tmp_path), env=env, capture_output=True, text=True,
                       timeout=30)
    assert r.returncode != 0
    assert "UPLOAD_SPOOL_BYTES" in r.stderr, r.stderr
