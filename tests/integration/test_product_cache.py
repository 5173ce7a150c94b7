"""The product cache (image/pcache.h): the same product in several scenes is
keyed and resized once; hits and misses are in /metrics; the answer is the same
pixel for pixel as with the cache off (PRODUCT_CACHE_BYTES=0)."""
import io
import re

import requests
from PIL import Image

from conftest import post_composite


def shot_and_scenes():
    prod = Image.new("RGB", (300, 240), (246, 245, 242))
    Image.Image.paste(prod, (40, 90, 60), (80, 60, 220, 200))
    b = io.BytesIO()
    prod.save(b, "JPEG", quality=90)
    scenes = []
    for i in range(3):
        s = Image.new("RGB", (400, 300), (20 + 60 * i, 80, 200 - 50 * i))
        sb = io.BytesIO()
        s.save(sb, "PNG")
        scenes.append(sb.getvalue())
    return b.getvalue(), scenes


def metric(text, name):
    # every series carries this instance's label (instance="<INSTANCE_ID>")
    m = re.search(r"^%s(?:\{instance=\"[^\"]*\"\})? (\S+)$" % re.escape(name), text, re.M)
    return float(m.group(1)) if m else None


def run(srv, prod, scenes):
    outs = []
    for s in scenes:
        r = post_composite(srv.url(""), s, prod, headers={"Accept": "image/png"}, format="png")
        assert r.status_code == 200, r.text
        assert r.headers["X-Composite-Keying"] == "keyed"
        outs.append(Image.open(io.BytesIO(r.content)).convert("RGB").tobytes())
    return outs


def test_cache_hits_and_same_pixels(server):
    prod, scenes = shot_and_scenes()
    on = server({"PRODUCT_CACHE_BYTES": str(64 << 20)})
    got_on = run(on, prod, scenes)
    m = requests.get(on.url("/metrics"), timeout=10).text
    assert metric(m, "scenecomp_product_cache_misses_total") == 1
    assert metric(m, "scenecomp_product_cache_hits_total") == 2
    assert metric(m, "scenecomp_product_cache_bytes") > 0
    # issue 12: a hit decodes no product, so 3 scenes + only the first product
    assert metric(m, "scenecomp_image_decodes_total") == 4
    off = server({"PRODUCT_CACHE_BYTES": "0"})
    got_off = run(off, prod, scenes)
    assert got_on == got_off
    m = requests.get(off.url("/metrics"), timeout=10).text
    assert metric(m, "scenecomp_product_cache_hits_total") == 0
    assert metric(m, "scenecomp_product_cache_misses_total") == 0
    assert metric(m, "scenecomp_image_decodes_total") == 6  # every product decoded
