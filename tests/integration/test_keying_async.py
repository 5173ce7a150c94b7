"""Keying options (mask, quality, shadow) with main's async composites and
Idempotency-Key: they are part of the request's fingerprint, and an async
composite resumed after a restart is composited with them."""
import io
import time

import requests
from PIL import Image

from conftest import assert_error, encode, post_composite

TOKEN = "r8_keyingAsync_41d2"


def shot_scene_mask():
    shot = Image.new("RGB", (120, 90), (246, 245, 242))
    shot.paste((40, 90, 60), (30, 20, 90, 70))
    mask = Image.new("L", (120, 90), 0)
    mask.paste(255, (30, 20, 60, 70))  # only the left half of the block is product
    scene = Image.new("RGB", (300, 200), (20, 80, 200))
    return encode(shot, "JPEG", quality=92), encode(scene), encode(mask)


def post(base, scene, shot, mask, headers=None, **fields):
    parts = [("scene", ("s.png", scene, "image/png")), ("product", ("p.jpg", shot, "image/jpeg")),
             ("mask", ("m.png", mask, "image/png"))]
    parts += [(k, (None, str(v))) for k, v in fields.items()]
    return requests.post(base + "/api/composite", files=parts, headers=headers or {}, timeout=60)


def test_idempotency_key_covers_the_keying_fields(server):
    srv = server()
    shot, scene, mask = shot_scene_mask()
    key = {"Idempotency-Key": "keying-1"}
    r1 = post(srv.base, scene, shot, mask, headers=key, shadow="keep")
    assert r1.status_code == 200, r1.text
    # the same uploads with another option are another request
    assert_error(post(srv.base, scene, shot, mask, headers=key, shadow="remove"), 422,
                 "idempotency_conflict")
    assert_error(post(srv.base, scene, shot, mask, headers=key, shadow="keep", quality="40"), 422,
                 "idempotency_conflict")
    r = post_composite(srv.base, scene, shot, headers=key, shadow="keep")  # no mask
    assert_error(r, 422, "idempotency_conflict")
    r2 = post(srv.base, scene, shot, mask, headers=key, shadow="keep")
    assert r2.status_code == 200 and r2.headers["Idempotent-Replayed"] == "true"


def test_async_resumed_after_kill9_keeps_mask_quality_shadow(server, fake):
    shot, scene, mask = shot_scene_mask()
    opts = {"format": "jpeg", "quality": "25", "shadow": "remove"}
    ref = post(server().base, scene, shot, mask, headers={"Accept": "image/jpeg"}, **opts)
    assert ref.status_code == 200, ref.text
    assert ref.headers["X-Composite-Keying"] == "mask"
    want = Image.open(io.BytesIO(ref.content)).convert("RGB").tobytes()

    # Kontext held for the whole prediction: the killed process never learns
    # the id, so the restart composites by PIL (reason interrupted).
    fake.configure(mode="ok", delay_ms=8000, honor_prefer=True)
    env = {"USE_KONTEXT_COMPOSITE": "true", "COMPOSITE_METHOD": "kontext",
           "REPLICATE_API_TOKEN": TOKEN, "REPLICATE_API_BASE": fake.base_url,
           "KONTEXT_TIMEOUT_SECONDS": "30", "SC_REPLICATE_POLL_MS": "100"}
    srv = server(env, check_exit=False)
    r = post(srv.base, scene, shot, mask, headers={"Prefer": "respond-async"}, **opts)
    assert r.status_code == 202, r.text
    rid = r.json()["id"]
    deadline = time.time() + 20
    while fake.stats()["creates"] < 1 and time.time() < deadline:
        time.sleep(0.05)
    srv.proc.kill()
    srv.proc.wait(timeout=30)
    srv2 = server(dict(env, LOGS_DIR=srv.logs_dir, OUTPUT_DIR=srv.output_dir))
    deadline = time.time() + 60
    while True:
        rec = requests.get(srv2.url("/api/composites/" + rid), timeout=10).json()
        if rec["status"] != "processing" or time.time() > deadline:
            break
        time.sleep(0.1)
    assert rec["status"] == "succeeded" and rec["fallback_reason"] == "interrupted", rec
    img = requests.get(srv2.url(rec["image_url"]), timeout=10)
    assert img.status_code == 200
    got = Image.open(io.BytesIO(img.content)).convert("RGB").tobytes()
    assert got == want  # same mask, JPEG quality and shadow as the uninterrupted one
