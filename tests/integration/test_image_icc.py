"""The scene's ICC profile is kept in the composite (issue 12): iCCP in PNG
output, APP2 in JPEG output, from a JPEG or PNG scene; none when the scene has
none. Checked with Pillow's reading of the output."""
import io
import os
import subprocess

import pytest
from PIL import Image, ImageCms

from conftest import BIN, ROOT, base_env, post_composite


def profile():
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


@pytest.mark.parametrize("scene_fmt", ["JPEG", "PNG"])
@pytest.mark.parametrize("out_ext", ["png", "jpg"])
def test_cli_keeps_the_scene_profile(tmp_path, scene_fmt, out_ext):
    icc = profile()
    scene = Image.new("RGB", (200, 120), (90, 120, 160))
    sp = tmp_path / ("scene." + scene_fmt.lower())
    scene.save(sp, scene_fmt, icc_profile=icc)
    out = tmp_path / ("out." + out_ext)
    r = subprocess.run([BIN, "composite", "--scene", str(sp), "--product",
                        os.path.join(ROOT, "examples", "product_transparent.png"), "-o", str(out)],
                       env=base_env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert Image.open(out).info.get("icc_profile") == icc
    # no profile in, none out
    scene.save(sp, scene_fmt)
    r = subprocess.run([BIN, "composite", "--scene", str(sp), "--product",
                        os.path.join(ROOT, "examples", "product_transparent.png"), "-o", str(out)],
                       env=base_env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert not Image.open(out).info.get("icc_profile")


def test_http_keeps_the_scene_profile(server):
    icc = profile()
    b = io.BytesIO()
    Image.new("RGB", (200, 120), (90, 120, 160)).save(b, "JPEG", icc_profile=icc)
    with open(os.path.join(ROOT, "examples", "product_transparent.png"), "rb") as f:
        prod = f.read()
    srv = server()
    for fmt in ("png", "jpeg"):
        r = post_composite(srv.url(""), b.getvalue(), prod, headers={"Accept": "image/" + fmt},
                           format=fmt)
        assert r.status_code == 200, r.text
        assert Image.open(io.BytesIO(r.content)).info.get("icc_profile") == icc
