#!/usr/bin/env python3
"""Fails when a Python module imported by tests/, bench/ or scripts/ (*.py)
comes from a Debian package that scripts/install-deps.sh does not install,
directly or through a dependency.

    /usr/bin/python3 scripts/check-deps.py [--root DIR]

Run it with the interpreter the tests use (test.sh's /usr/bin/python3): a
module is resolved with that interpreter's import machinery, its file is
looked up with `dpkg -S`, and the owning package must lie in the closure of
install-deps.sh's list under Depends/Pre-Depends (the packages installed on
this machine are read with dpkg-query, others with apt-cache).

bench/ may also use the bench-only list (the SC_BENCH_DEPS=1 block). Those
packages are normally not installed, so a bench module that does not import
here is matched by name instead: module `foo_bar` must be provided by a
declared package named python3-foo-bar (or python3-foo_bar) that apt-cache
knows. A module that does not import and has no such declared package fails
with a message saying so. A module imported by tests/ or scripts/ must be
installed here (install-deps.sh ran first), or the check fails.

pytest plugins are not imported but loaded by name: every distribution in
pytest.ini's `required_plugins` (pytest itself refuses to run without them)
must be installed, and its modules (its pytest11 entry points) must come from
a declared package, as a tests/ import must.

Ignored: the standard library (sys.stdlib_module_names), relative imports,
and the repo's own modules (any *.py file name or folder holding *.py files).
Only static `import` statements are seen, not __import__ or code in shell
heredocs. Stdlib only, so it runs before anything is installed.
"""
import argparse
import ast
import importlib.metadata as md
import importlib.util
import os
import re
import subprocess
import sys

SKIP_DIRS = {".git", "__pycache__", "node_modules"}


def python_files(root, top):
    base = os.path.join(root, top)
    for d, dirs, files in os.walk(base):
        dirs[:] = sorted(x for x in dirs if x not in SKIP_DIRS and not x.startswith("build"))
        for f in sorted(files):
            if f.endswith(".py"):
                yield os.path.join(d, f)


def local_names(root):
    """Names the repo itself provides: every .py stem, every folder holding .py files."""
    names = set()
    for d, dirs, files in os.walk(root):
        dirs[:] = [x for x in dirs if x not in SKIP_DIRS and not x.startswith("build")]
        py = [f for f in files if f.endswith(".py")]
        names.update(f[:-3] for f in py)
        if py:
            rel = os.path.relpath(d, root)
            if rel != ".":
                names.update(rel.split(os.sep))
    return names


def imports_of(path):
    with open(path, "rb") as f:
        tree = ast.parse(f.read(), filename=path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name.split(".")[0], node.lineno
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0], node.lineno


def declared_packages(install_deps):
    """(base list, bench-only list) from install-deps.sh's PKGS=( ) and PKGS+=( )."""
    with open(install_deps) as f:
        # comments first: they may hold parentheses
        text = "\n".join(re.sub(r"(^|\s)#.*", "", line) for line in f)
    base = re.search(r"^PKGS=\((.*?)\)", text, re.S | re.M)
    if not base:
        raise SystemExit("check-deps: no PKGS=( ... ) list in %s" % install_deps)
    bench = []
    for m in re.finditer(r"PKGS\+=\((.*?)\)", text, re.S):
        bench += m.group(1).split()
    return base.group(1).split(), bench


def run(cmd):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return p.returncode, p.stdout


class Packages:
    def __init__(self):
        self.installed = {}  # name -> [[alternatives], ...] from Depends + Pre-Depends
        self.provides = {}   # virtual name -> installed packages providing it
        _, out = run(["dpkg-query", "-W", "-f",
                      "${Package}\t${Status}\t${Depends}\t${Pre-Depends}\t${Provides}\n"])
        for line in out.splitlines():
            parts = line.split("\t")
            if len(parts) != 5 or not parts[1].endswith(" installed"):
                continue
            name, _, dep, pre, prov = parts
            self.installed[name] = self.parse_deps(dep) + self.parse_deps(pre)
            for v in self.parse_deps(prov):
                self.provides.setdefault(v[0], []).append(name)

    @staticmethod
    def parse_deps(field):
        groups = []
        for group in field.split(","):
            alts = []
            for alt in group.split("|"):
                alt = re.sub(r"\(.*?\)|\[.*?\]|<.*?>", "", alt).strip()
                if alt:
                    alts.append(alt.split(":")[0])  # python3:any -> python3
            if alts:
                groups.append(alts)
        return groups

    @staticmethod
    def apt_closure(names):
        """Packages reached from names not installed here, by one apt-cache call;
        every alternative and every provider of a virtual name counts."""
        rc, out = run(["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests",
                       "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances"]
                      + sorted(names))
        found = set()
        for line in out.splitlines():
            m = re.match(r"\s*\|?(?:Pre)?Depends:\s*<?([^>\s]+)>?", line) or \
                re.match(r"<?([^\s>]+)>?$", line.strip()) if line.strip() else None
            if m:
                found.add(m.group(1).split(":")[0])
        return found

    def closure(self, roots):
        seen, todo, elsewhere = set(), list(roots), set()
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            if name in self.installed:
                for alts in self.installed[name]:
                    # the alternative actually installed; else all of them
                    have = [a for a in alts if a in self.installed or a in self.provides]
                    todo += have or alts
            elif name in self.provides:
                todo += self.provides[name]
            else:
                elsewhere.add(name)
        if elsewhere:
            seen |= self.apt_closure(elsewhere)
        return seen


def module_file(name):
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.origin and spec.origin not in ("built-in", "frozen"):
        return spec.origin
    locs = list(spec.submodule_search_locations or [])
    return locs[0] if locs else None


def owners(path):
    rc, out = run(["dpkg", "-S", path])
    if rc != 0:
        return []
    pkgs = []
    for line in out.splitlines():
        if line.startswith("diversion by"):
            continue
        head = line.rsplit(": ", 1)[0]
        pkgs += [p.strip().split(":")[0] for p in head.split(",")]
    return pkgs


def apt_knows(pkg):
    rc, out = run(["apt-cache", "show", "--no-all-versions", pkg])
    return rc == 0 and out.strip() != ""


def required_plugins(ini):
    """(distribution name, line) for each entry of [pytest] required_plugins."""
    if not os.path.exists(ini):
        return []
    out, section, cont = [], None, False
    with open(ini) as f:
        for n, raw in enumerate(f, 1):
            line = raw.split("#", 1)[0].split(";", 1)[0].rstrip()
            m = re.match(r"\[(.*)\]$", line.strip())
            if m:
                section, cont = m.group(1).strip(), False
                continue
            if section != "pytest" or not line.strip():
                continue
            kv = re.match(r"(\w+)\s*=\s*(.*)$", line)
            if kv and not raw[0].isspace():
                cont = kv.group(1) == "required_plugins"
                value = kv.group(2)
            elif cont and raw[0].isspace():
                value = line
            else:
                continue
            if cont:
                # "pytest-xdist>=3.0" -> pytest-xdist
                out += [(re.split(r"[<>=!~\[ ]", v, 1)[0], n) for v in value.split() if v]
    return out


def plugin_modules(dist_name):
    """The top-level modules of an installed pytest plugin distribution (its
    pytest11 entry points, else its top_level.txt), or None if not installed."""
    try:
        dist = md.distribution(dist_name)
    except md.PackageNotFoundError:
        return None
    mods = {ep.value.split(":")[0].split(".")[0] for ep in dist.entry_points
            if ep.group == "pytest11"}
    if not mods:
        mods = set((dist.read_text("top_level.txt") or "").split())
    return sorted(mods)


def resolve(mod, where, top, allowed, listed, bench_closure, checked, problems):
    """Checks that module mod comes from an allowed package; records the result."""
    f = module_file(mod)
    if f is None:
        guesses = {"python3-" + mod.lower().replace("_", "-"), "python3-" + mod.lower()}
        hit = sorted(g for g in guesses if g in listed and apt_knows(g))
        if top == "bench" and hit:
            checked[mod] = "%s (by name, not installed here)" % hit[0]
            return
        problems.append("%s: module not installed for %s, and no declared package "
                        "%s provides it; add its Debian package to "
                        "scripts/install-deps.sh%s" % (
                            where, sys.executable, " or ".join(sorted(guesses)),
                            " (bench-only list)" if top == "bench" else ""))
        return
    pkgs = owners(f)
    if not pkgs:
        problems.append("%s: %s belongs to no Debian package (installed by hand, "
                        "e.g. pip?); install it from a package declared in "
                        "scripts/install-deps.sh" % (where, f))
        return
    ok = [p for p in pkgs if p in allowed]
    if not ok:
        bench_only = top != "bench" and any(p in bench_closure for p in pkgs)
        problems.append("%s: comes from %s, which scripts/install-deps.sh does not "
                        "install (directly or as a dependency)%s" % (
                            where, ", ".join(pkgs),
                            " outside the bench-only list" if bench_only else ""))
        return
    checked[mod] = ok[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    args = ap.parse_args()
    root = os.path.abspath(args.root)
    base, bench = declared_packages(os.path.join(root, "scripts", "install-deps.sh"))
    pk = Packages()
    base_closure = pk.closure(base)
    bench_closure = base_closure | pk.closure(bench)
    own = local_names(root)
    std = set(sys.stdlib_module_names)

    problems, checked = [], {}
    for top in ("tests", "scripts", "bench"):
        allowed = bench_closure if top == "bench" else base_closure
        listed = set(base + bench) if top == "bench" else set(base)
        for path in python_files(root, top):
            rel = os.path.relpath(path, root)
            try:
                mods = sorted(set(imports_of(path)))
            except SyntaxError as e:
                problems.append("%s: cannot parse: %s" % (rel, e))
                continue
            for mod, line in mods:
                if mod in std or mod in own:
                    continue
                where = "%s:%d: import %s" % (rel, line, mod)
                resolve(mod, where, top, allowed, listed, bench_closure, checked, problems)
    # pytest plugins are loaded by name, not imported: pytest.ini's
    # required_plugins (distribution names) are resolved through their modules.
    for dist_name, line in required_plugins(os.path.join(root, "pytest.ini")):
        where = "pytest.ini:%d: required_plugins %s" % (line, dist_name)
        mods = plugin_modules(dist_name)
        if mods is None:
            problems.append("%s: not installed for %s; add its Debian package (e.g. "
                            "python3-%s) to scripts/install-deps.sh" % (
                                where, sys.executable, dist_name.lower().replace("_", "-")))
            continue
        for mod in mods:
            resolve(mod, where, "tests", base_closure, set(base), bench_closure,
                    checked, problems)
    for mod in sorted(checked):
        print("check-deps: %-10s <- %s" % (mod, checked[mod]))
    for p in problems:
        print("check-deps: " + p, file=sys.stderr)
    if problems:
        print("check-deps: %d undeclared import(s)" % len(problems), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
