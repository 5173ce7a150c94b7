"""The client example (examples/clients/scenecomp_client.py) and the verifier
pasted in docs/clients.md: the published Standard Webhooks vector, tampering,
replay window, and the doc's copy staying identical to the example's."""
import base64
import hashlib
import hmac
import inspect
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "examples" / "clients"))

import scenecomp_client  # noqa: E402
from scenecomp_client import verify_webhook  # noqa: E402

VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_HEADERS = {"webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek", "webhook-timestamp": "1614265330",
                  "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="}
VECTOR_BODY = b'{"test": 2432232314}'
NOW = 1614265330


def test_standard_webhooks_vector():
    assert verify_webhook(VECTOR_SECRET, VECTOR_HEADERS, VECTOR_BODY, now=NOW)
    # header names in any case, several signatures with one valid
    h = {k.upper(): v for k, v in VECTOR_HEADERS.items()}
    h["WEBHOOK-SIGNATURE"] = "v1,bm9wZQ== " + VECTOR_HEADERS["webhook-signature"]
    assert verify_webhook(VECTOR_SECRET, h, VECTOR_BODY, now=NOW)


def test_refusals():
    assert not verify_webhook(VECTOR_SECRET, VECTOR_HEADERS, b'{"test": 2432232315}', now=NOW)
    assert not verify_webhook("whsec_" + base64.b64encode(b"other").decode(), VECTOR_HEADERS,
                              VECTOR_BODY, now=NOW)
    assert not verify_webhook(VECTOR_SECRET, VECTOR_HEADERS, VECTOR_BODY, now=NOW + 301)
    assert verify_webhook(VECTOR_SECRET, VECTOR_HEADERS, VECTOR_BODY, now=NOW + 299)
    for k in VECTOR_HEADERS:
        h = dict(VECTOR_HEADERS)
        del h[k]
        assert not verify_webhook(VECTOR_SECRET, h, VECTOR_BODY, now=NOW)
    h = dict(VECTOR_HEADERS, **{"webhook-signature": "v2," + VECTOR_HEADERS["webhook-signature"][3:]})
    assert not verify_webhook(VECTOR_SECRET, h, VECTOR_BODY, now=NOW)
    h = dict(VECTOR_HEADERS, **{"webhook-timestamp": "soon"})
    assert not verify_webhook(VECTOR_SECRET, h, VECTOR_BODY, now=NOW)


def test_plain_secret_is_used_as_is():
    # the service's convention for a secret without the whsec_ form (webhook.h)
    secret, msg_id, ts, body = "plain-secret", "0123456789abcdef0123456789abcdef", "1764547200", b"{}"
    mac = hmac.new(secret.encode(), ("%s.%s." % (msg_id, ts)).encode() + body, hashlib.sha256)
    sig = "v1," + base64.b64encode(mac.digest()).decode()
    h = {"webhook-id": msg_id, "webhook-timestamp": ts, "webhook-signature": sig}
    assert verify_webhook(secret, h, body, now=1764547200)
    # "whsec_" + something that is not base64 is a plain secret too
    odd = "whsec_not base64!"
    mac = hmac.new(odd.encode(), ("%s.%s." % (msg_id, ts)).encode() + body, hashlib.sha256)
    h["webhook-signature"] = "v1," + base64.b64encode(mac.digest()).decode()
    assert verify_webhook(odd, h, body, now=1764547200)


def test_doc_copy_matches_the_example():
    doc = (ROOT / "docs" / "clients.md").read_text()
    block = doc.split("<!-- verify_webhook:begin -->")[1].split("<!-- verify_webhook:end -->")[0]
    code = block.split("```python\n")[1].split("```")[0]
    assert code == inspect.getsource(scenecomp_client.verify_webhook)


def test_multipart_body_is_well_formed(tmp_path):
    (tmp_path / "a.png").write_bytes(b"\x89PNG fake")
    ctype, body = scenecomp_client.multipart({"user_id": "u1"}, {"scene": str(tmp_path / "a.png")})
    boundary = ctype.split("boundary=")[1]
    assert body.startswith(b"--" + boundary.encode() + b"\r\n")
    assert body.endswith(b"--" + boundary.encode() + b"--\r\n")
    assert b'name="user_id"\r\n\r\nu1\r\n' in body
    assert b'name="scene"; filename="a.png"\r\nContent-Type: image/png\r\n\r\n\x89PNG fake\r\n' in body
