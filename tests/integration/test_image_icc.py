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


def linear_profile():
    """sRGB primaries with a linear curve, made with lcms2 through ctypes."""
    import ctypes
    import ctypes.util
    lib = ctypes.CDLL(ctypes.util.find_library("lcms2") or "liblcms2.so.2")
    xyY = ctypes.c_double * 3
    lib.cmsBuildGamma.restype = ctypes.c_void_p
    lib.cmsBuildGamma.argtypes = [ctypes.c_void_p, ctypes.c_double]
    lib.cmsCreateRGBProfile.restype = ctypes.c_void_p
    lib.cmsCreateRGBProfile.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    lib.cmsSaveProfileToMem.argtypes = [ctypes.c_void_p, ctypes.c_void_p,
                                        ctypes.POINTER(ctypes.c_uint32)]
    lib.cmsCloseProfile.argtypes = [ctypes.c_void_p]
    white = xyY(0.3127, 0.3290, 1.0)
    prim = (ctypes.c_double * 9)(0.64, 0.33, 1.0, 0.30, 0.60, 1.0, 0.15, 0.06, 1.0)
    g = lib.cmsBuildGamma(None, 1.0)
    curves = (ctypes.c_void_p * 3)(g, g, g)
    p = lib.cmsCreateRGBProfile(ctypes.byref(white), ctypes.byref(prim), curves)
    n = ctypes.c_uint32(0)
    lib.cmsSaveProfileToMem(p, None, ctypes.byref(n))
    buf = ctypes.create_string_buffer(n.value)
    lib.cmsSaveProfileToMem(p, buf, ctypes.byref(n))
    lib.cmsCloseProfile(p)
    return buf.raw[:n.value]


def test_product_converted_into_the_scene_space(tmp_path):
    """A product in a linear profile on an sRGB scene: linear grey 128 shows as
    sRGB ~188; the same product without a profile stays 128."""
    scene = Image.new("RGB", (200, 200), (10, 10, 10))
    scene.save(tmp_path / "scene.png", icc_profile=profile())
    prod = Image.new("RGBA", (100, 100), (128, 128, 128, 255))
    prod.putpixel((0, 0), (0, 0, 0, 0))  # transparency of its own: not keyed
    for icc, want in ((linear_profile(), (183, 193)), (None, (127, 129))):
        kw = {"icc_profile": icc} if icc else {}
        prod.save(tmp_path / "prod.png", **kw)
        out = tmp_path / "out.png"
        r = subprocess.run([BIN, "composite", "--scene", str(tmp_path / "scene.png"), "--product",
                            str(tmp_path / "prod.png"), "-o", str(out), "--x", "0.5", "--y", "0.5",
                            "--scale", "0.5"], env=base_env(), capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, r.stderr
        v = Image.open(out).convert("RGB").getpixel((100, 100))
        assert want[0] <= v[0] <= want[1], (icc is not None, v)


def test_http_product_converted(server):
    sb, pb = io.BytesIO(), io.BytesIO()
    Image.new("RGB", (200, 200), (10, 10, 10)).save(sb, "PNG", icc_profile=profile())
    prod = Image.new("RGBA", (100, 100), (128, 128, 128, 255))
    prod.putpixel((0, 0), (0, 0, 0, 0))
    prod.save(pb, "PNG", icc_profile=linear_profile())
    srv = server({"PRODUCT_CACHE_BYTES": str(16 << 20)})
    for _ in range(2):  # the second from the product cache: still converted
        r = post_composite(srv.url(""), sb.getvalue(), pb.getvalue(),
                           headers={"Accept": "image/png"}, format="png", x="0.5", y="0.5",
                           scale="0.5")
        assert r.status_code == 200, r.text
        v = Image.open(io.BytesIO(r.content)).convert("RGB").getpixel((100, 100))
        assert 183 <= v[0] <= 193, v
