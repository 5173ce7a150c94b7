"""POST /api/scenes end to end against the fake Replicate: the generated image
is decoded, saved as OUTPUT_DIR/scenes/<id>.png and served; failures are 502
with the upstream reason; metrics count both."""
import os
import sys

import pytest
import requests

from conftest import assert_error, decode

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
from tests.fake.harness import FakeReplicate  # noqa: E402

TOKEN = "r8_scenes_test"


@pytest.fixture
def fake():
    with FakeReplicate(token=TOKEN, mode="ok", delay_ms=200) as f:
        yield f


def env(fake, **extra):
    e = {"REPLICATE_API_TOKEN": TOKEN, "REPLICATE_API_BASE": fake.base_url,
         "SCENE_TIMEOUT_SECONDS": "20"}
    e.update(extra)
    return e


def test_scene_generated_saved_and_served(server, fake):
    srv = server(env(fake))
    r = requests.post(srv.url("/api/scenes"), json={"prompt": "a sunny kitchen", "aspect_ratio": "16:9",
                                                   "seed": 7, "user_id": "u1"}, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"id", "image_url", "width", "height", "duration_seconds"}
    assert body["image_url"] == "/api/scenes/%s.png" % body["id"]
    g = requests.get(srv.url(body["image_url"]), timeout=10)
    assert g.status_code == 200 and g.headers["Content-Type"] == "image/png"
    img = decode(g.content)
    assert img.format == "PNG" and img.size == (body["width"], body["height"])
    with open(os.path.join(srv.output_dir, "scenes", body["id"] + ".png"), "rb") as f:
        assert f.read() == g.content
    creates = [q for q in fake.stats()["requests"] if q["method"] == "POST" and q["path"].endswith("/predictions")]
    assert any("black-forest-labs/flux-schnell" in q["path"] for q in creates)
    m = requests.get(srv.url("/api/admin/metrics/composite"), timeout=10).json()
    assert m["scenes"]["successes"] == 1


@pytest.mark.parametrize("mode", ["failed", "non_image_output"])
def test_scene_failure_is_502(server, fake, mode):
    fake.configure(mode=mode)
    srv = server(env(fake))
    r = requests.post(srv.url("/api/scenes"), json={"prompt": "a sunny kitchen"}, timeout=60)
    body = assert_error(r, 502, "upstream_error")
    if mode == "failed":
        assert "E005" in body["error"]["message"]
    m = requests.get(srv.url("/api/admin/metrics/composite"), timeout=10).json()
    assert m["scenes"]["failures"] == 1
    assert requests.get(srv.url("/health"), timeout=10).status_code == 200
