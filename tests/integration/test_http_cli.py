"""The command line: composite, check-policy, --version, bad arguments, and
serve refusing a malformed configuration."""
import re
import subprocess

import pytest

from conftest import BIN, base_env, decode, encode, expected_composite, gradient_scene, sample_product

TIMEOUT = 60


def run(args, cwd, env=None):
    return subprocess.run([BIN] + args, cwd=cwd, env=base_env(env), capture_output=True,
                          text=True, timeout=TIMEOUT)


@pytest.fixture
def inputs(tmp_path):
    scene, product = gradient_scene(200, 100), sample_product(40, 20)
    (tmp_path / "scene.png").write_bytes(encode(scene))
    (tmp_path / "product.png").write_bytes(encode(product))
    return tmp_path, scene, product


def test_version(tmp_path):
    r = run(["--version"], tmp_path)
    assert r.returncode == 0
    assert re.fullmatch(r"scenecomp \d+\.\d+\.\d+\n", r.stdout)


def test_help_and_no_args(tmp_path):
    r = run(["--help"], tmp_path)
    assert r.returncode == 0 and "composite" in r.stdout and "check-policy" in r.stdout
    r = run([], tmp_path)
    assert r.returncode == 2 and "usage" in r.stderr
    r = run(["frobnicate"], tmp_path)
    assert r.returncode == 2 and "unknown command" in r.stderr


def test_composite_matches_independent_computation(inputs):
    d, scene, product = inputs
    r = run(["composite", "--scene", "scene.png", "--product", "product.png", "-o", "out.png",
             "--x", "0.3", "--y=0.4", "--scale", "0.2"], d)
    assert r.returncode == 0, r.stderr
    assert "out.png" in r.stdout
    got = decode((d / "out.png").read_bytes())
    assert got.format == "PNG" and got.size == (200, 100)
    want, _ = expected_composite(scene, product, 0.3, 0.4, 0.2)
    g, w = got.convert("RGB").load(), want.load()
    for y in range(100):
        for x in range(200):
            assert max(abs(a - b) for a, b in zip(g[x, y], w[x, y])) <= 1, (x, y)


def test_composite_jpeg(inputs):
    d, _, _ = inputs
    r = run(["composite", "--scene", "scene.png", "--product", "product.png", "-o", "out.jpg"], d)
    assert r.returncode == 0, r.stderr
    assert decode((d / "out.jpg").read_bytes()).format == "JPEG"
    r = run(["composite", "--scene", "scene.png", "--product", "product.png", "-o", "o2.png",
             "--format", "jpeg"], d)
    assert r.returncode == 0, r.stderr
    assert decode((d / "o2.png").read_bytes()).format == "JPEG"


@pytest.mark.parametrize("args,code,msg", [
    (["composite"], 2, "required"),
    (["composite", "--scene", "scene.png", "-o", "o.png"], 2, "required"),
    (["composite", "--scene", "scene.png", "--product", "product.png"], 2, "required"),
    (["composite", "--scene", "scene.png", "--product", "product.png", "-o", "o.png", "--x", "abc"], 2, "number"),
    (["composite", "--scene", "scene.png", "--product", "product.png", "-o", "o.png", "--x", "1.5"], 2, "'x'"),
    (["composite", "--scene", "scene.png", "--product", "product.png", "-o", "o.png", "--scale", "0"], 2, "'scale'"),
    (["composite", "--scene", "scene.png", "--product", "product.png", "-o", "o.png", "--format", "gif"], 2, "format"),
    # no --format and an extension outside the format table: refused, not written as PNG
    (["composite", "--scene", "scene.png", "--product", "product.png", "-o", "o.webp"], 2, "format"),
    (["composite", "--scene", "scene.png", "--product", "product.png", "-o", "o.png", "--bogus", "1"], 2, "unknown option"),
    (["composite", "--scene", "scene.png", "--product", "product.png", "-o"], 2, "needs a value"),
    (["composite", "--scene", "missing.png", "--product", "product.png", "-o", "o.png"], 1, "missing.png"),
    (["composite", "--scene", "notimage.txt", "--product", "product.png", "-o", "o.png"], 1, "not a valid"),
    (["composite", "--scene", "scene.png", "--product", "product.png", "-o", "nodir/o.png"], 1, "cannot write"),
])
def test_composite_bad_arguments(inputs, args, code, msg):
    d, _, _ = inputs
    (d / "notimage.txt").write_text("hello")
    r = run(args, d)
    assert r.returncode == code, (r.returncode, r.stderr)
    assert msg in r.stderr, r.stderr
    assert not (d / "o.png").exists() and not (d / "o.webp").exists()


def test_check_policy_usage_and_missing_file(tmp_path):
    r = run(["check-policy"], tmp_path)
    assert r.returncode == 2 and "usage" in r.stderr
    r = run(["check-policy", "does-not-exist.lua"], tmp_path)
    assert r.returncode == 1
    assert "does-not-exist.lua" in r.stderr


@pytest.mark.parametrize("var,value", [
    ("MAX_CONCURRENT_KONTEXT", "abc"), ("PORT", "http"), ("USE_KONTEXT_COMPOSITE", "maybe"),
    ("MAX_UPLOAD_BYTES", "-5"), ("KONTEXT_TIMEOUT_SECONDS", "soon"),
])
def test_malformed_env_stops_serve(tmp_path, var, value):
    env = {"PORT": "0", "LOGS_DIR": str(tmp_path / "logs"), "OUTPUT_DIR": str(tmp_path / "out")}
    env[var] = value
    r = run(["serve"], tmp_path, env)
    assert r.returncode != 0
    assert var in r.stderr, r.stderr


def test_malformed_dotenv_value_stops_serve(tmp_path):
    (tmp_path / ".env").write_text("MAX_KONTEXT_PER_HOUR=lots\n")
    r = run(["serve"], tmp_path, {"PORT": "0", "LOGS_DIR": str(tmp_path / "logs")})
    assert r.returncode != 0
    assert "MAX_KONTEXT_PER_HOUR" in r.stderr


def test_serve_takes_no_arguments(tmp_path):
    r = run(["serve", "--port", "1"], tmp_path)
    assert r.returncode == 2


def test_port_in_use_fails_cleanly(server, tmp_path):
    srv = server()
    r = run(["serve"], tmp_path, {"PORT": str(srv.port), "LOGS_DIR": str(tmp_path / "logs2"),
                                  "OUTPUT_DIR": str(tmp_path / "out2")})
    assert r.returncode == 1
    assert str(srv.port) in r.stderr
    import requests
    assert requests.get(srv.url("/health"), timeout=10).status_code == 200


def test_dotenv_is_read_and_env_wins(server):
    """serve reads .env from its working directory; the real environment wins."""
    import requests
    path = "/api/admin/policy"
    srv = server(files={".env": "ADMIN_TOKEN=from-dotenv\n"})
    assert requests.get(srv.url(path), timeout=10).status_code == 401
    r = requests.get(srv.url(path), headers={"Authorization": "Bearer from-dotenv"}, timeout=10)
    assert r.status_code == 200
    srv2 = server({"ADMIN_TOKEN": "from-env"}, files={".env": "ADMIN_TOKEN=from-dotenv\n"})
    r = requests.get(srv2.url(path), headers={"Authorization": "Bearer from-env"}, timeout=10)
    assert r.status_code == 200
    r = requests.get(srv2.url(path), headers={"Authorization": "Bearer from-dotenv"}, timeout=10)
    assert r.status_code == 401
