"""POST /api/composite on the PIL path: pixels checked against an independent
computation, placement, clipping, answers (JSON / image) and the log line."""
import os
import re

import pytest
import requests

from conftest import (decode, encode, expected_composite, gradient_scene, post_composite,
                      sample_product)


def assert_close(actual, expected, tol):
    """Every pixel within tol per channel; returns the max difference."""
    assert actual.size == expected.size
    a, e = actual.convert("RGB").load(), expected.load()
    worst = 0
    for y in range(expected.size[1]):
        for x in range(expected.size[0]):
            d = max(abs(p - q) for p, q in zip(a[x, y], e[x, y]))
            assert d <= tol, ((x, y), a[x, y], e[x, y])
            worst = max(worst, d)
    return worst


@pytest.mark.parametrize("x,y", [(0.3, 0.4), (0.5, 0.6), (0.13, 0.87)])
def test_pil_pixels_match_independent_computation(server, x, y):
    srv = server()
    scene, product = gradient_scene(200, 100), sample_product(40, 20)
    r = post_composite(srv.base, encode(scene), encode(product), x=x, y=y, scale=0.2)
    assert r.status_code == 200, r.text
    body = r.json()
    got = decode(requests.get(srv.url(body["image_url"]), timeout=10).content)
    assert got.size == (200, 100)
    want, (left, top, w, h) = expected_composite(scene, product, x, y, 0.2)

    g, s, p = got.convert("RGB").load(), scene.load(), product.load()
    # A fully opaque product pixel replaces the scene pixel.
    px, py = 10, 8
    assert p[px, py][3] == 255
    assert g[left + px, top + py] == p[px, py][:3]
    # A 50% alpha pixel gives the rounded mean (a=128: within one level).
    qx, qy = 25, 8
    assert p[qx, qy][3] == 128
    for c in range(3):
        mean = (p[qx, qy][c] + s[left + qx, top + qy][c]) / 2.0
        assert abs(g[left + qx, top + qy][c] - mean) <= 1.0, (c, g[left + qx, top + qy], mean)
    # Outside the product's rectangle the scene is untouched, exactly.
    for (X, Y) in [(0, 0), (199, 99), (left - 1, top), (left + w, top + h - 1), (left, top - 1), (left, top + h)]:
        if 0 <= X < 200 and 0 <= Y < 100:
            assert g[X, Y] == s[X, Y], (X, Y)
    # Transparent product pixels leave the scene as it was.
    assert g[left, top] == s[left, top]
    # And the whole image within one level (resampling rounding) of the reference.
    assert_close(got, want, 1)


def test_clipped_at_the_scene_edge(server):
    srv = server()
    scene, product = gradient_scene(200, 100), sample_product(40, 20)
    r = post_composite(srv.base, encode(scene), encode(product), x=1.0, y=1.0, scale=0.2)
    assert r.status_code == 200, r.text
    got = decode(requests.get(srv.url(r.json()["image_url"]), timeout=10).content)
    want, (left, top, _, _) = expected_composite(scene, product, 1.0, 1.0, 0.2)
    assert (left, top) == (180, 90)
    assert_close(got, want, 1)


def test_defaults_and_json_answer(server):
    srv = server()
    scene, product = gradient_scene(200, 100), sample_product(80, 40)  # 0.4 * 200 = 80: no resize
    r = post_composite(srv.base, encode(scene), encode(product))
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"id", "method", "requested_method", "fallback", "fallback_reason",
                         "duration_seconds", "width", "height", "format", "image_url"}
    assert re.fullmatch(r"[0-9a-f]{32}", body["id"])
    assert body["method"] == "pil" and body["requested_method"] == "pil"
    assert body["fallback"] is False and body["fallback_reason"] is None
    assert body["width"] == 200 and body["height"] == 100 and body["format"] == "png"
    assert body["image_url"] == "/api/composites/%s.png" % body["id"]
    assert 0 <= body["duration_seconds"] < 60
    got = decode(requests.get(srv.url(body["image_url"]), timeout=10).content)
    want, _ = expected_composite(scene, product, 0.5, 0.6, 0.4)  # the contract's defaults
    assert_close(got, want, 1)
    # Saved atomically under OUTPUT_DIR with the id as the name, no temp left over.
    # the image and its record (API.md: records are saved beside the image)
    assert sorted(os.listdir(srv.output_dir)) == ["%s.json" % body["id"], "%s.png" % body["id"]]
    srv.wait_log("Using PIL composite method")


def test_accept_image_answers_with_headers(server):
    srv = server()
    scene, product = encode(gradient_scene()), encode(sample_product())
    r = post_composite(srv.base, scene, product, headers={"Accept": "image/png"}, scale=0.2)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "image/png"
    assert re.fullmatch(r"[0-9a-f]{32}", r.headers["X-Composite-Id"])
    assert r.headers["X-Composite-Method"] == "pil"
    assert r.headers["X-Composite-Fallback"] == "false"
    assert decode(r.content).format == "PNG"

    r = post_composite(srv.base, scene, product, headers={"Accept": "image/jpeg"}, scale=0.2)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "image/jpeg"
    img = decode(r.content)
    assert img.format == "JPEG" and img.size == (200, 100)
    assert os.path.exists(os.path.join(srv.output_dir, r.headers["X-Composite-Id"] + ".jpg"))

    # Accept listing JSON first, or */*, keeps the JSON answer.
    for acc in ("application/json", "*/*", "application/json, image/png"):
        r = post_composite(srv.base, scene, product, headers={"Accept": acc})
        assert r.headers["Content-Type"].startswith("application/json"), acc
        assert r.json()["method"] == "pil"


def test_jpeg_format_field(server):
    srv = server()
    scene, product = gradient_scene(200, 100), sample_product(40, 20)
    r = post_composite(srv.base, encode(scene), encode(product), format="jpeg", scale=0.2, x=0.3, y=0.4)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["format"] == "jpeg" and body["image_url"].endswith(".jpg")
    got = decode(requests.get(srv.url(body["image_url"]), timeout=10).content)
    assert got.format == "JPEG" and got.size == (200, 100)
    want, (left, top, _, _) = expected_composite(scene, product, 0.3, 0.4, 0.2)
    # JPEG is lossy: the opaque red block's centre is still clearly red.
    r_, g_, b_ = got.convert("RGB").getpixel((left + 12, top + 10))
    assert r_ > 180 and g_ < 90 and b_ < 90


def test_jpeg_inputs_and_opaque_product(server):
    """A JPEG scene and an opaque JPEG product on a uniform background: the
    answer has the scene's size and the product's colour shows at its centre."""
    from PIL import Image
    srv = server()
    scene = gradient_scene(320, 180)
    prod = Image.new("RGB", (64, 64), (245, 245, 245))
    for y in range(16, 48):
        for x in range(16, 48):
            prod.putpixel((x, y), (20, 160, 40))
    r = post_composite(srv.base, encode(scene, "JPEG", quality=95), encode(prod, "JPEG", quality=95),
                       x=0.5, y=0.5, scale=0.2)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["width"], body["height"]) == (320, 180)
    got = decode(requests.get(srv.url(body["image_url"]), timeout=10).content).convert("RGB")
    r_, g_, b_ = got.getpixel((160, 90))
    assert g_ > 120 and r_ < 80 and b_ < 90


def test_repeated_field_last_wins(server):
    srv = server()
    scene, product = gradient_scene(200, 100), sample_product(40, 20)
    files = [("scene", ("s.png", encode(scene))), ("product", ("p.png", encode(product))),
             ("x", (None, "0.9")), ("x", (None, "0.3")), ("y", (None, "0.4")), ("scale", (None, "0.2"))]
    r = requests.post(srv.url("/api/composite"), files=files, timeout=30)
    assert r.status_code == 200, r.text
    got = decode(requests.get(srv.url(r.json()["image_url"]), timeout=10).content)
    want, _ = expected_composite(scene, product, 0.3, 0.4, 0.2)
    assert_close(got, want, 1)


def test_unknown_fields_are_ignored(server):
    srv = server()
    r = post_composite(srv.base, encode(gradient_scene()), encode(sample_product()),
                       color="blue", prompt="a bottle on a table", user_id="u-1")
    assert r.status_code == 200, r.text
    assert r.json()["method"] == "pil"


def test_parallel_requests_all_correct(server):
    """Many composites at once over the worker pool: every answer is complete,
    ids are distinct, and each saved image is the expected one."""
    from concurrent.futures import ThreadPoolExecutor
    srv = server()
    scene, product = gradient_scene(200, 100), sample_product(40, 20)
    s_bytes, p_bytes = encode(scene), encode(product)
    positions = [(0.1 + 0.05 * i, 0.2 + 0.03 * i) for i in range(16)]

    def one(pos):
        r = post_composite(srv.base, s_bytes, p_bytes, x=pos[0], y=pos[1], scale=0.2,
                           headers={"Accept": "image/png"})
        assert r.status_code == 200, r.text
        return pos, r.headers["X-Composite-Id"], r.content

    with ThreadPoolExecutor(8) as ex:
        results = list(ex.map(one, positions))
    assert len({cid for _, cid, _ in results}) == len(positions)
    for (x, y), cid, content in results:
        want, _ = expected_composite(scene, product, x, y, 0.2)
        assert_close(decode(content), want, 1)
        with open(os.path.join(srv.output_dir, cid + ".png"), "rb") as f:
            assert f.read() == content
    text = srv.wait_log("Using PIL composite method", count=len(positions))
    assert text.count("Using PIL composite method") == len(positions)
