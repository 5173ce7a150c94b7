"""issue 11, the Kontext request path at production sizes: no pixel is decoded
before routing (a Kontext answer decodes nothing when its output is served as
it came), a truncated or corrupt upload is still refused 400 invalid_image
before any prediction is created, the uploads go to Kontext as they came, the
output format is the client's, and an output of another size is resized."""
import base64
import io
import re

import pytest
import requests
from PIL import Image

from conftest import assert_error, decode, encode, gradient_scene, post_composite, sample_product
from test_kontext_fake import TOKEN, kontext_env  # noqa: F401 (TOKEN: the fake's token)


def metric(text, name):
    m = re.search(r"^%s(?:\{instance=\"[^\"]*\"\})? (\S+)$" % re.escape(name), text, re.M)
    return float(m.group(1)) if m else None


def decodes(srv):
    return metric(requests.get(srv.url("/metrics"), timeout=10).text,
                  "scenecomp_image_decodes_total")


def test_kontext_served_as_it_came(server, fake):
    fake.configure(mode="ok", delay_ms=200)
    srv = server(kontext_env(fake))
    scene = encode(gradient_scene(240, 160).convert("RGB"), "JPEG", quality=85)
    product = encode(sample_product(60, 40))
    r = post_composite(srv.base, scene, product, headers={"Accept": "image/jpeg"}, format="jpeg")
    assert r.status_code == 200, r.text
    assert r.headers["X-Composite-Method"] == "kontext"
    assert r.headers["Content-Type"] == "image/jpeg"
    img = decode(r.content)
    assert img.format == "JPEG" and img.size == (240, 160)
    # nothing decoded: not the uploads (routed from headers), not the output
    assert decodes(srv) == 0
    rec = requests.get(srv.url("/api/composites/" + r.headers["X-Composite-Id"]), timeout=10).json()
    assert rec["method"] == "kontext" and rec["keying"] is None
    # the body is the fake's output byte for byte (no re-encode)
    s = fake.stats()
    assert s["creates"] == 1
    out = requests.get(srv.url("/api/composites/%s.jpg" % r.headers["X-Composite-Id"]), timeout=10)
    assert out.content == r.content


def test_kontext_inputs_are_the_uploads(server, fake):
    fake.configure(mode="ok", delay_ms=100)
    srv = server(kontext_env(fake))
    scene = encode(gradient_scene(200, 100).convert("RGB"), "JPEG", quality=80)
    product = encode(sample_product(40, 20))
    r = post_composite(srv.base, scene, product, format="png")
    assert r.status_code == 200, r.text
    inp = fake.stats()["last_input"]
    assert inp["output_format"] == "png"
    s1 = inp["input_image_1"].split(",", 1)[1]
    s2 = inp["input_image_2"].split(",", 1)[1]
    assert base64.b64decode(s1) == scene
    assert base64.b64decode(s2) == product


@pytest.mark.parametrize("which", ["scene", "product"])
@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
def test_broken_upload_refused_before_a_prediction(server, fake, which, damage):
    fake.configure(mode="ok", delay_ms=100)
    srv = server(kontext_env(fake))
    scene = encode(gradient_scene(200, 100))
    product = encode(sample_product(40, 20))
    data = scene if which == "scene" else product
    if damage == "truncated":
        data = data[: len(data) * 2 // 3]
    else:
        b = bytearray(data)
        b[len(b) // 2] ^= 0x5A  # inside the IDAT data: its CRC no longer matches
        data = bytes(b)
    if which == "scene":
        scene = data
    else:
        product = data
    r = post_composite(srv.base, scene, product)
    assert_error(r, 400, "invalid_image")
    assert which in r.json()["error"]["message"]
    s = fake.stats()
    assert s["create_requests"] == 0 and s["creates"] == 0


def test_truncated_jpeg_scene_refused(server, fake):
    fake.configure(mode="ok", delay_ms=100)
    srv = server(kontext_env(fake))
    scene = encode(gradient_scene(200, 100).convert("RGB"), "JPEG", quality=90)
    r = post_composite(srv.base, scene[: len(scene) - 40], encode(sample_product(40, 20)))
    assert_error(r, 400, "invalid_image")
    assert fake.stats()["create_requests"] == 0


def test_kontext_output_other_size_is_resized(server, fake):
    fake.configure(mode="ok", delay_ms=100, output_width=100, output_height=50)
    srv = server(kontext_env(fake))
    scene = encode(gradient_scene(240, 160).convert("RGB"), "JPEG", quality=85)
    r = post_composite(srv.base, scene, encode(sample_product(60, 40)),
                       headers={"Accept": "image/jpeg"}, format="jpeg")
    assert r.status_code == 200, r.text
    assert r.headers["X-Composite-Method"] == "kontext"
    img = decode(r.content)
    assert img.format == "JPEG" and img.size == (240, 160)
    assert decodes(srv) == 1  # the output only


def test_kontext_png_client_gets_png(server, fake):
    fake.configure(mode="ok", delay_ms=100)
    srv = server(kontext_env(fake))
    scene = encode(gradient_scene(200, 100).convert("RGB"), "JPEG", quality=85)
    r = post_composite(srv.base, scene, encode(sample_product(40, 20)),
                       headers={"Accept": "image/png"}, format="png")
    assert r.status_code == 200, r.text
    assert decode(r.content).format == "PNG"
    assert decodes(srv) == 0


def test_fallback_decodes_from_the_kept_uploads(server, fake):
    fake.configure(mode="failed", delay_ms=100)
    srv = server(kontext_env(fake))
    scene = encode(gradient_scene(200, 100))
    r = post_composite(srv.base, scene, encode(sample_product(40, 20)))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["method"] == "pil" and body["fallback_reason"] == "api_error"
    assert decodes(srv) == 2
