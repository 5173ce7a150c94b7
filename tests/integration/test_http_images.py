"""Images that are valid but hostile or unusual on POST /api/composite:
placements whose work would not fit are a 4xx (never a 500), short palettes
decode deterministically, and EXIF orientation is honoured."""
import struct
import zlib

import requests

from conftest import assert_error, decode, encode, gradient_scene, post_composite, sample_product

SCENE = encode(gradient_scene(1000, 500))
PRODUCT = encode(sample_product(40, 20))


def png_rgb_solid(width, height, rgb=(200, 30, 30)):
    """An 8-bit RGB PNG of one colour, built row by row (Pillow would need
    the whole image in memory as Python objects)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    row = b"\x00" + bytes(rgb) * width
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def healthy(srv):
    return requests.get(srv.url("/health"), timeout=10).status_code == 200


def test_extreme_aspect_product_is_a_4xx(server):
    """Issue 8: a 12,000,000 x 1 product answered 500 "out of memory resizing
    the product"; its resize would need ~2 GB of filter taps."""
    srv = server({"MAX_UPLOAD_BYTES": str(64 << 20)})
    strip = png_rgb_solid(12_000_000, 1)
    r = post_composite(srv.base, SCENE, strip, timeout=120)
    body = assert_error(r, 413, "image_too_large")
    assert "product" in body["error"]["message"]
    # the same strip as the scene, with a product scaled to its width
    r = post_composite(srv.base, strip, PRODUCT, scale="1", timeout=120)
    assert r.status_code in (400, 413), r.text
    assert r.json()["error"]["code"] in ("image_too_large", "invalid_image")
    # an ordinary request still works afterwards
    assert post_composite(srv.base, SCENE, PRODUCT).status_code == 200
    assert healthy(srv)


def test_wide_product_that_fits_is_composited(server):
    srv = server()
    r = post_composite(srv.base, SCENE, png_rgb_solid(20_000, 4), scale="0.5", x="0.5", y="0.5")
    assert r.status_code == 200, r.text
    assert r.json()["width"] == 1000


def short_palette_png(w=64, h=16):
    """8-bit palette PNG with a 2-entry PLTE and indices 0..255."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\x00" + bytes(((y * w + x) % 256) for x in range(w)) for y in range(h))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 3, 0, 0, 0))
            + chunk(b"PLTE", bytes([255, 0, 0, 0, 255, 0])) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


def test_short_palette_scene_is_deterministic(server):
    """Issue 8: indices past the PLTE showed uninitialised memory; they are
    opaque black now, the same on every request."""
    srv = server()
    scene = short_palette_png()
    outs = []
    for _ in range(3):
        r = post_composite(srv.base, scene, PRODUCT, x="0", y="0", scale="0.01",
                           headers={"Accept": "image/png"})
        assert r.status_code == 200, r.text
        outs.append(r.content)
    img = decode(outs[0]).convert("RGB")
    assert decode(outs[1]).convert("RGB").tobytes() == img.tobytes()
    assert decode(outs[2]).convert("RGB").tobytes() == img.tobytes()
    px = img.load()
    # (x, y) = (10, 5): index 5 * 64 + 10 = 330 % 256 = 74, past the palette
    assert px[10, 5] == (0, 0, 0)
    assert px[1, 4] == (0, 255, 0)  # index 257 % 256 = 1
    assert px[63, 15] == (0, 0, 0)


def test_exif_orientation_is_honoured(server):
    """Issue 12: a phone JPEG stored sideways with Orientation 6 (or a PNG
    with an eXIf chunk) is composited upright, as Pillow's exif_transpose
    shows it."""
    from PIL import Image, ImageOps
    srv = server()
    # blocks of solid colour, so JPEG keeps them and a misrotation shows
    stored = Image.new("RGB", (96, 64))
    for i, colour in enumerate([(250, 20, 20), (20, 250, 20), (20, 20, 250),
                                (250, 250, 20), (20, 250, 250), (250, 20, 250)]):
        stored.paste(colour, ((i % 3) * 32, (i // 3) * 32, (i % 3) * 32 + 32, (i // 3) * 32 + 32))
    clear = encode(Image.new("RGBA", (8, 8), (0, 0, 0, 0)))  # leaves the scene as it is
    for fmt, o in (("JPEG", 6), ("JPEG", 8), ("JPEG", 3), ("PNG", 5)):
        exif = Image.Exif()
        exif[0x0112] = o
        data = encode(stored, fmt, exif=exif.tobytes(), **({"quality": 95} if fmt == "JPEG" else {}))
        want = ImageOps.exif_transpose(decode(data)).convert("RGB")
        r = post_composite(srv.base, data, clear, headers={"Accept": "image/png"})
        assert r.status_code == 200, r.text
        got = decode(r.content).convert("RGB")
        assert got.size == want.size == ((64, 96) if o >= 5 else (96, 64)), (fmt, o)
        g, w = got.load(), want.load()
        for y in range(16, want.size[1], 32):  # block centres
            for x in range(16, want.size[0], 32):
                assert max(abs(a - b) for a, b in zip(g[x, y], w[x, y])) <= 12, (fmt, o, x, y)
        # the JSON answer reports the upright size too
        body = post_composite(srv.base, data, clear).json()
        assert (body["width"], body["height"]) == want.size
