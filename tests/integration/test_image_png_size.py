"""PNG output size against Pillow's level 6 (issue 12): the composite written by
`scenecomp composite` must be at most 1.05x the size Pillow gives the same
pixels at compress_level=6, on smooth photos (where LZ77 matching matters), a
grayscale scene (R = G = B), a JPEG-decoded photo and sensor noise. Sizes are
deterministic, so this is not a timed test; speed is in scripts/bench.sh."""
import io
import os
import random
import subprocess

import pytest
from PIL import Image, ImageDraw, ImageFilter

from conftest import BIN, ROOT, base_env

LIMIT = 1.05


def photo_like(w, h, seed):
    """Gradients, soft shapes and fine noise, like a shot interior."""
    rnd = random.Random(seed)
    img = Image.linear_gradient("L").resize((w, h)).convert("RGB")
    d = ImageDraw.Draw(img)
    for _ in range(25):
        x, y = rnd.randrange(w), rnd.randrange(h)
        r = rnd.randrange(20, max(21, w // 4))
        d.ellipse([x - r, y - r, x + r, y + r],
                  fill=(rnd.randrange(256), rnd.randrange(256), rnd.randrange(256)))
    img = img.filter(ImageFilter.GaussianBlur(6))
    noise = Image.effect_noise((w, h), 6).convert("RGB")
    return Image.blend(img, noise, 0.08)


def scenes():
    ex = Image.open(os.path.join(ROOT, "examples", "scene.jpg")).convert("RGB")
    rnd = random.Random(7)
    noise = Image.frombytes("RGB", (320, 240), bytes(rnd.randrange(256) for _ in range(320 * 240 * 3)))
    return {
        "examples_scene": (ex, "JPEG"),
        "examples_scene_gray": (ex.convert("L"), "JPEG"),
        "photo_jpeg": (photo_like(1280, 720, 3), "JPEG"),
        "photo_gray_png": (photo_like(800, 600, 5).convert("L"), "PNG"),
        "noise_png": (noise, "PNG"),
    }


@pytest.mark.parametrize("name", sorted(scenes()))
def test_png_size_within_5_percent_of_pillow_level6(tmp_path, name):
    img, fmt = scenes()[name]
    scene = tmp_path / ("scene." + ("jpg" if fmt == "JPEG" else "png"))
    img.save(scene, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    out = tmp_path / "out.png"
    r = subprocess.run([BIN, "composite", "--scene", str(scene), "--product",
                        os.path.join(ROOT, "examples", "product_transparent.png"), "-o", str(out),
                        "--scale", "0.4"], cwd=tmp_path, env=base_env(), capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    ours = out.read_bytes()
    decoded = Image.open(io.BytesIO(ours))
    decoded.load()
    buf = io.BytesIO()
    decoded.save(buf, "PNG", compress_level=6)
    ratio = len(ours) / len(buf.getvalue())
    print(f"{name}: scenecomp {len(ours)} B, Pillow-6 {len(buf.getvalue())} B, ratio {ratio:.3f}")
    assert ratio <= LIMIT, f"{name}: {len(ours)} B is {ratio:.3f}x Pillow's {len(buf.getvalue())} B"
