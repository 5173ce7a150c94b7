#!/usr/bin/env python3
"""The keying test set (issue 12): opaque product shots on a near-white backdrop,
JPEG q90, like ../shared/bench/gen_inputs.py's product_opaque.jpg, one per failure
mode, plus the ground truth the pixel tests need:

  mug          a dark mug whose handle encloses a backdrop hole
  white        white on white: a white box with a thin grey outline
  glossy       a red ball with a white specular highlight and a near-backdrop one
  shadow       a dark box with a soft contact shadow on the backdrop
  touching     a product cut by the bottom edge of the frame
  noise        no plain backdrop at all (keying must be skipped and said so)

Usage:
  scripts/gen-keying-set.py OUT_DIR                 writes <case>.jpg and scene.png
  scripts/gen-keying-set.py --sheet OUT.png --before BIN --after BIN
      a before/after montage (shot | before | after, on a dark scene) of every
      case, from two scenecomp binaries (docs/keying-sheet.png is made this way)
Deterministic (fixed seeds). Needs Pillow."""
import argparse
import os
import random
import subprocess
import sys
import tempfile

from PIL import Image, ImageChops, ImageDraw, ImageFilter

SIZE = 320
BACKDROP = (246, 245, 242)
MUG = (28, 52, 110)
BOX = (45, 40, 38)
RED = (170, 30, 35)
SCENE = (34, 40, 46)


def _noise(img, seed, amp=3):
    """Sensor-like noise of +-amp levels per channel (seeded)."""
    rnd = random.Random(seed)
    n = img.width * img.height * 3
    noise = Image.frombytes("RGB", img.size, bytes(128 + rnd.randint(-amp, amp) for _ in range(n)))
    return ImageChops.add(ImageChops.subtract(img, Image.new("RGB", img.size, (amp,) * 3)),
                          ImageChops.subtract(noise, Image.new("RGB", img.size, (128 - amp,) * 3)))


def _shot(draw_fn, seed):
    """Draws on the backdrop at 4x, downsamples (anti-aliased edges), adds noise."""
    big = Image.new("RGB", (SIZE * 4, SIZE * 4), BACKDROP)
    mask = Image.new("L", big.size, 0)
    truth = draw_fn(big, mask)
    img = big.resize((SIZE, SIZE), Image.LANCZOS)
    mask = mask.resize((SIZE, SIZE), Image.BOX)
    return _noise(img, seed), mask, truth


def mug(big, mask):
    d, m = ImageDraw.Draw(big), ImageDraw.Draw(mask)
    body = [360, 320, 880, 1040]
    d.rounded_rectangle(body, 40, fill=MUG)
    m.rounded_rectangle(body, 40, fill=255)
    ring = [760, 480, 1120, 900]
    d.ellipse(ring, fill=MUG)
    m.ellipse(ring, fill=255)
    hole = [840, 530, 1040, 810]
    d.ellipse(hole, fill=BACKDROP)
    m.ellipse(hole, fill=0)
    d.rounded_rectangle(body, 40, fill=MUG)
    m.rounded_rectangle(body, 40, fill=255)
    return {"colour": MUG, "hole_centre": (940 // 4, 670 // 4)}


def white(big, mask):
    d, m = ImageDraw.Draw(big), ImageDraw.Draw(mask)
    box = [300, 300, 980, 980]
    d.rectangle(box, fill=(200, 200, 198))
    d.rectangle([box[0] + 10, box[1] + 10, box[2] - 10, box[3] - 10], fill=(255, 255, 255))
    m.rectangle(box, fill=255)
    return {"colour": (255, 255, 255), "inside": (160, 160)}


def glossy(big, mask):
    d, m = ImageDraw.Draw(big), ImageDraw.Draw(mask)
    ball = [260, 260, 1020, 1020]
    d.ellipse(ball, fill=RED)
    m.ellipse(ball, fill=255)
    d.ellipse([420, 400, 560, 520], fill=(255, 255, 255))  # specular
    d.ellipse([700, 700, 780, 760], fill=(248, 247, 244))  # near-backdrop highlight
    return {"colour": RED, "specular": (490 // 4, 460 // 4), "pale": (740 // 4, 730 // 4)}


def shadow(big, mask):
    sh = Image.new("L", big.size, 0)
    ImageDraw.Draw(sh).ellipse([240, 860, 1040, 1060], fill=130)
    sh = sh.filter(ImageFilter.GaussianBlur(40))
    dark = Image.new("RGB", big.size, (0, 0, 0))
    big.paste(Image.composite(dark, big, sh))
    d, m = ImageDraw.Draw(big), ImageDraw.Draw(mask)
    box = [400, 360, 880, 960]
    d.rectangle(box, fill=BOX)
    m.rectangle(box, fill=255)
    return {"colour": BOX, "shadow_box": (70, 220, 250, 265)}


def touching(big, mask):
    d, m = ImageDraw.Draw(big), ImageDraw.Draw(mask)
    body = [420, 500, 860, SIZE * 4]
    d.rectangle(body, fill=MUG)
    m.rectangle(body, fill=255)
    return {"colour": MUG}


def noise(big, mask):
    rnd = random.Random(11)
    d = ImageDraw.Draw(big)
    for _ in range(3000):
        x, y = rnd.randrange(big.width), rnd.randrange(big.height)
        d.rectangle([x, y, x + 90, y + 90],
                    fill=(rnd.randrange(256), rnd.randrange(256), rnd.randrange(256)))
    ImageDraw.Draw(mask).rectangle([0, 0, big.width, big.height], fill=255)
    return {}


CASES = {"mug": (mug, 1), "white": (white, 2), "glossy": (glossy, 3), "shadow": (shadow, 4),
         "touching": (touching, 5), "noise": (noise, 6)}


def make(name):
    """Returns (shot RGB image, true alpha mask L, truth dict)."""
    fn, seed = CASES[name]
    return _shot(fn, seed)


def scene():
    """A dark, slightly textured scene of the product's size."""
    img = Image.new("RGB", (SIZE, SIZE), SCENE)
    d = ImageDraw.Draw(img)
    for i in range(0, SIZE, 16):
        d.line([(i, 0), (i, SIZE)], fill=(SCENE[0] + 6, SCENE[1] + 6, SCENE[2] + 6))
    return img


def write_set(out):
    os.makedirs(out, exist_ok=True)
    for name in CASES:
        shot, _, _ = make(name)
        shot.save(os.path.join(out, name + ".jpg"), quality=90)
    scene().save(os.path.join(out, "scene.png"))


def composite(binary, scene_path, shot_path, out_path):
    subprocess.run([binary, "composite", "--scene", scene_path, "--product", shot_path,
                    "-o", out_path, "--x", "0.5", "--y", "0.5", "--scale", "1"],
                   check=True, capture_output=True)
    return Image.open(out_path).convert("RGB")


def sheet(out, before, after, thumb=160):
    with tempfile.TemporaryDirectory() as tmp:
        write_set(tmp)
        sp = os.path.join(tmp, "scene.png")
        rows = []
        for name in CASES:
            shot = os.path.join(tmp, name + ".jpg")
            row = [Image.open(shot).convert("RGB"),
                   composite(before, sp, shot, os.path.join(tmp, name + "_b.png")),
                   composite(after, sp, shot, os.path.join(tmp, name + "_a.png"))]
            rows.append([im.resize((thumb, thumb), Image.LANCZOS) for im in row])
        pad = 4
        W, H = 3 * thumb + 4 * pad, len(rows) * (thumb + pad) + pad
        m = Image.new("RGB", (W, H), (255, 255, 255))
        for r, row in enumerate(rows):
            for c, im in enumerate(row):
                m.paste(im, (pad + c * (thumb + pad), pad + r * (thumb + pad)))
        m.quantize(128).save(out, optimize=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", nargs="?")
    ap.add_argument("--sheet")
    ap.add_argument("--before")
    ap.add_argument("--after")
    a = ap.parse_args()
    if a.sheet:
        if not (a.before and a.after):
            ap.error("--sheet needs --before and --after")
        sheet(a.sheet, a.before, a.after)
    elif a.out:
        write_set(a.out)
    else:
        ap.error("give OUT_DIR or --sheet")
    return 0


if __name__ == "__main__":
    sys.exit(main())
