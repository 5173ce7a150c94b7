"""scripts/check-deps.py fails on an import whose Debian package
install-deps.sh does not install, and passes once it is declared (directly or
through a dependency). Runs it on small temporary trees."""
import os
import subprocess
import sys
import textwrap

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
CHECK = os.path.join(HERE, "..", "..", "scripts", "check-deps.py")


def make_tree(root, base, bench=(), files=None):
    os.makedirs(os.path.join(root, "scripts"))
    with open(os.path.join(root, "scripts", "install-deps.sh"), "w") as f:
        f.write(textwrap.dedent("""\
            #!/usr/bin/env bash
            PKGS=(
              python3 python3-pytest
              # a comment (with parentheses)
              %s
            )
            if [ "${SC_BENCH_DEPS:-0}" = 1 ]; then
              PKGS+=(%s)
            fi
            """) % (" ".join(base), " ".join(bench)))
    for rel, text in (files or {}).items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)


def check(root, env=None):
    p = subprocess.run([sys.executable, CHECK, "--root", str(root)], capture_output=True,
                       text=True, env=env, timeout=300)
    return p.returncode, p.stdout + p.stderr


def test_undeclared_package_fails(tmp_path):
    make_tree(tmp_path, ["python3-pil"], files={
        "tests/integration/conftest.py": "import os\nimport requests\n",
        "tests/integration/test_a.py": "import pytest\nfrom conftest import x\n"})
    rc, out = check(tmp_path)
    assert rc == 1, out
    assert "conftest.py:2: import requests" in out
    assert "python3-requests" in out


def test_declared_package_passes(tmp_path):
    make_tree(tmp_path, ["python3-pil", "python3-requests"], files={
        "tests/integration/conftest.py": "import os\nimport requests\n",
        "tests/integration/test_a.py": "import pytest\nfrom conftest import x\n"
                                       "from tests.fake import harness\n",
        "tests/fake/__init__.py": "", "tests/fake/harness.py": "import json\n"})
    rc, out = check(tmp_path)
    assert rc == 0, out
    assert "requests" in out and "python3-requests" in out


def test_dependency_of_a_declared_package_counts(tmp_path):
    # urllib3 is python3-urllib3, which python3-requests depends on
    make_tree(tmp_path, ["python3-requests"], files={"scripts/tool.py": "import urllib3\n"})
    rc, out = check(tmp_path)
    assert rc == 0, out
    make_tree(tmp_path / "b", [], files={"scripts/tool.py": "import urllib3\n"})
    rc, out = check(tmp_path / "b")
    assert rc == 1 and "python3-urllib3" in out, out


def test_module_from_no_package_fails(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "handmade_mod.py").write_text("")
    make_tree(tmp_path / "repo", [], files={"tests/t.py": "import handmade_mod\n"})
    env = dict(os.environ, PYTHONPATH=str(site))
    rc, out = check(tmp_path / "repo", env)
    assert rc == 1 and "belongs to no Debian package" in out, out


def test_missing_module_fails(tmp_path):
    make_tree(tmp_path, [], files={"tests/t.py": "import no_such_module_sc\n"})
    rc, out = check(tmp_path)
    assert rc == 1 and "not installed" in out, out


def test_bench_list_counts_for_bench_only(tmp_path):
    if subprocess.run(["apt-cache", "show", "python3-fastapi"], capture_output=True).returncode:
        pytest.skip("apt-cache does not know python3-fastapi (no apt lists here)")
    make_tree(tmp_path / "ok", [], bench=["python3-fastapi"],
              files={"bench/app.py": "import fastapi\n"})
    rc, out = check(tmp_path / "ok")
    assert rc == 0, out
    make_tree(tmp_path / "tests", [], bench=["python3-fastapi"],
              files={"tests/t.py": "import fastapi\n"})
    rc, out = check(tmp_path / "tests")
    assert rc == 1 and "import fastapi" in out, out
    make_tree(tmp_path / "none", [], files={"bench/app.py": "import fastapi\n"})
    rc, out = check(tmp_path / "none")
    assert rc == 1 and "import fastapi" in out, out


def test_required_pytest_plugin_must_be_declared(tmp_path):
    # test.sh's -n comes from pytest-xdist, which no file imports: pytest.ini
    # names it and its package must be declared like an import's.
    ini = "[pytest]\n# a comment\nrequired_plugins =\n    pytest-xdist>=3.0\n"
    make_tree(tmp_path / "no", [], files={"pytest.ini": ini, "tests/t.py": "import pytest\n"})
    rc, out = check(tmp_path / "no")
    assert rc == 1, out
    assert "pytest.ini:4: required_plugins pytest-xdist" in out, out
    assert "python3-pytest-xdist" in out, out
    make_tree(tmp_path / "yes", ["python3-pytest-xdist"], files={"pytest.ini": ini})
    rc, out = check(tmp_path / "yes")
    assert rc == 0, out
    assert "xdist" in out and "python3-pytest-xdist" in out, out


def test_required_pytest_plugin_not_installed_fails(tmp_path):
    make_tree(tmp_path, [], files={"pytest.ini": "[pytest]\nrequired_plugins = pytest-nosuch-sc\n"})
    rc, out = check(tmp_path)
    assert rc == 1 and "required_plugins pytest-nosuch-sc: not installed" in out, out
