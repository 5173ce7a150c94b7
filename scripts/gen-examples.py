#!/usr/bin/python3
"""Generates the small sample images in examples/ (deterministic; run with
/usr/bin/python3, which has PIL):

  examples/scene.jpg                960x540 room: wall, floor, a table top
  examples/product_transparent.png  400x400 RGBA bottle on a transparent background
  examples/product_opaque.jpg       400x400 the same bottle on a uniform light background
"""
import os

from PIL import Image, ImageDraw, ImageFilter

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples")


def scene():
    w, h = 960, 540
    img = Image.new("RGB", (w, h))
    px = img.load()
    for y in range(h):
        for x in range(w):
            if y < 330:  # wall: warm vertical gradient with a soft light spot
                d = ((x - 620) ** 2 + (y - 120) ** 2) ** 0.5
                light = max(0.0, 1.0 - d / 700.0)
                px[x, y] = (int(196 + 40 * light), int(180 + 38 * light), int(160 + 30 * light))
            else:  # wooden floor: planks
                plank = (x // 120 + (y - 330) // 40) % 2
                base = 120 + 18 * plank
                px[x, y] = (base + 30, base - 10, base - 50)
    d = ImageDraw.Draw(img)
    d.rectangle([250, 300, 710, 322], fill=(92, 64, 44))      # table top
    d.rectangle([270, 322, 290, 470], fill=(80, 55, 38))      # legs
    d.rectangle([670, 322, 690, 470], fill=(80, 55, 38))
    d.rectangle([60, 60, 220, 220], outline=(120, 100, 80), width=8)  # a frame
    d.rectangle([68, 68, 212, 212], fill=(140, 170, 190))
    return img.filter(ImageFilter.SMOOTH)


def bottle(background):
    img = Image.new("RGBA", (400, 400), background)
    d = ImageDraw.Draw(img)
    d.rounded_rectangle([130, 150, 270, 370], radius=30, fill=(30, 110, 70, 255))   # body
    d.rectangle([175, 70, 225, 160], fill=(30, 110, 70, 255))                       # neck
    d.rectangle([168, 45, 232, 80], fill=(200, 160, 40, 255))                       # cap
    d.rectangle([140, 220, 260, 300], fill=(240, 235, 220, 255))                    # label
    d.text((160, 250), "SCENE", fill=(40, 40, 40, 255))
    d.ellipse([150, 170, 175, 290], fill=(90, 170, 130, 160))                       # highlight (semi-transparent)
    return img


def main():
    os.makedirs(OUT, exist_ok=True)
    scene().save(os.path.join(OUT, "scene.jpg"), "JPEG", quality=80, optimize=True)
    bottle((0, 0, 0, 0)).save(os.path.join(OUT, "product_transparent.png"), optimize=True)
    opaque = bottle((246, 246, 244, 255)).convert("RGB")
    opaque.save(os.path.join(OUT, "product_opaque.jpg"), "JPEG", quality=90, optimize=True)
    for name in sorted(os.listdir(OUT)):
        print("%-26s %7d bytes" % (name, os.path.getsize(os.path.join(OUT, name))))


if __name__ == "__main__":
    main()
