"""POST /api/scenes input validation (the generation itself runs against the
fake Replicate in the Replicate suites)."""
import requests

from conftest import assert_error


def test_scene_requests_are_validated(server):
    srv = server({"REPLICATE_API_TOKEN": "r8_test"})
    url = srv.url("/api/scenes")
    assert_error(requests.post(url, data=b"not json", timeout=10), 400, "bad_request")
    assert_error(requests.post(url, json=[1, 2], timeout=10), 400, "bad_request")
    assert_error(requests.post(url, json={}, timeout=10), 400, "bad_request")
    assert_error(requests.post(url, json={"prompt": ""}, timeout=10), 400, "bad_request")
    assert_error(requests.post(url, json={"prompt": 5}, timeout=10), 400, "bad_request")
    assert_error(requests.post(url, json={"prompt": "a room", "aspect_ratio": "7:3"}, timeout=10),
                 400, "invalid_parameter")
    for seed in (-1, 1.5, "12", 2 ** 40):
        assert_error(requests.post(url, json={"prompt": "a room", "seed": seed}, timeout=10),
                     400, "invalid_parameter")
    assert_error(requests.post(url, json={"prompt": "a room", "user_id": 7}, timeout=10),
                 400, "invalid_parameter")
    big = {"prompt": "x" * 200000}
    assert_error(requests.post(url, json=big, timeout=10), 413, "payload_too_large")
    assert requests.get(srv.url("/health"), timeout=10).status_code == 200


def test_scene_without_token_is_503(server):
    srv = server()
    r = requests.post(srv.url("/api/scenes"), json={"prompt": "a sunny kitchen"}, timeout=10)
    assert_error(r, 503, "service_unavailable")


def test_scene_ids_are_checked(server):
    srv = server()
    for name in ("../x.png", "%s.jpg" % ("a" * 32), "%s.png" % ("a" * 31)):
        assert requests.get(srv.url("/api/scenes/" + name), timeout=10).status_code == 404
