#!/usr/bin/env python3
"""Checks that everything the tests, benchmarks and scripts need comes from scripts/setup.

Every Python module imported under tests/, benchmarks/ and scripts/ must be part of the standard
library, one of the project's own modules, or a file of a Debian package that scripts/setup
installs (one of its PACKAGES or something they depend on, directly or not). Every program
those files start (the first word of a command list, a shutil.which() name, an absolute
/usr/bin path, a command word of the bash scripts) must resolve the same way. A module that is
missing, or that was installed by hand (pip, a copied file: no package owns it), fails the
check on the machine where it happens, not only on a fresh one where it would be missing.

Usage: scripts/check_deps.py [--verbose] [--setup FILE]
  --setup FILE   take PACKAGES from FILE instead of scripts/setup (for testing the check)
Exit status: 0 when everything resolves, 1 when something does not (each listed with the
file that needs it and why), 2 when the check itself cannot run (no dpkg-query).
"""

import ast
import importlib.util
import os
import re
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TREES = ("tests", "benchmarks", "scripts")
SUBPROCESS_CALLS = {"run", "Popen", "call", "check_call", "check_output"}
BIN_DIRS = ("/usr/bin/", "/usr/sbin/", "/bin/", "/sbin/", "/usr/local/bin/", "/usr/local/sbin/")
# Shell words that are builtins or keywords in bash but also exist as files.
SHELL_WORDS = {"[", "test", "echo", "printf", "true", "false", "kill", "pwd", "time"}


def setup_packages(path):
    """The PACKAGES and BACKPORTS arrays of a setup script (scripts/setup), as a list of names."""
    text = open(path).read()
    names = []
    for array in ("PACKAGES", "BACKPORTS"):
        m = re.search(rf"^{array}=\((.*?)\)", text, re.S | re.M)
        if not m:
            sys.exit(f"check_deps: no {array}=( ... ) in {path}")
        body = "\n".join(line.split("#", 1)[0] for line in m.group(1).splitlines())
        names += body.split()
    return names


def installed_packages():
    """{name: (depends, provides, essential)} of every installed package (arch qualifier dropped)."""
    fmt = "${Package}\t${db:Status-Abbrev}\t${Pre-Depends}, ${Depends}\t${Provides}\t${Essential}\n"
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f", fmt], capture_output=True, text=True,
                             check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"check_deps: cannot list installed packages: {e}", file=sys.stderr)
        sys.exit(2)
    pkgs = {}
    for line in out.splitlines():
        name, status, depends, provides, essential = (line.split("\t") + [""] * 5)[:5]
        if not status.startswith("ii"):
            continue
        pkgs[name] = (depends, provides, essential == "yes")
    return pkgs


def dependency_closure(roots, pkgs):
    """Every installed package reachable from roots through Pre-Depends and Depends (any
    installed alternative, virtual packages through Provides), plus the Essential ones."""
    providers = {}
    for name, (_, provides, _) in pkgs.items():
        for p in provides.split(","):
            p = p.strip().split(" ")[0]
            if p:
                providers.setdefault(p, []).append(name)

    def resolve(name):
        name = name.split(":")[0]
        return ([name] if name in pkgs else []) + providers.get(name, [])

    todo = [r for root in roots for r in resolve(root)]
    todo += [n for n, (_, _, essential) in pkgs.items() if essential]
    seen = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for clause in pkgs[name][0].split(","):
            for alt in clause.split("|"):
                alt = alt.strip().split(" ")[0]
                if alt:
                    todo.extend(resolve(alt))
    return seen


def owner(path):
    """The Debian package that owns path, or None. Tries the /usr-merged twin too."""
    candidates = [path, os.path.realpath(path)]
    for p in list(candidates):
        for a, b in (("/usr/bin/", "/bin/"), ("/usr/sbin/", "/sbin/"), ("/usr/lib/", "/lib/")):
            if p.startswith(a):
                candidates.append(b + p[len(a):])
            elif p.startswith(b):
                candidates.append(a + p[len(b):])
    for p in candidates:
        r = subprocess.run(["dpkg-query", "-S", p], capture_output=True, text=True)
        if r.returncode == 0:
            # "pkg:arch, other: /path" -- the first owner is enough.
            return r.stdout.split(":", 1)[0].split(",")[0].strip()
    return None


def python_files():
    """Every Python source under TREES: *.py files and extension-less scripts with a python
    shebang."""
    for tree in TREES:
        for dirpath, dirnames, filenames in os.walk(os.path.join(ROOT, tree)):
            dirnames[:] = [d for d in dirnames if d not in ("__pycache__", "golden")]
            for f in filenames:
                path = os.path.join(dirpath, f)
                if f.endswith(".py"):
                    yield path
                elif "." not in f:
                    with open(path, "rb") as fh:
                        if re.match(rb"#!.*python", fh.readline()):
                            yield path


def shell_files():
    for tree in TREES:
        for dirpath, _, filenames in os.walk(os.path.join(ROOT, tree)):
            for f in filenames:
                path = os.path.join(dirpath, f)
                if f.endswith(".sh") or "." not in f:
                    with open(path, "rb") as fh:
                        if re.match(rb"#!.*\b(ba)?sh\b", fh.readline()):
                            yield path


def local_modules():
    """Names a project file can be imported by: every .py file's and package folder's name."""
    names = set()
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d != "build"]
        names.update(f[:-3] for f in filenames if f.endswith(".py"))
        if "__init__.py" in filenames:
            names.add(os.path.basename(dirpath))
    return names


def project_programs():
    """Names of the programs the project itself builds or ships (meson executables, scripts):
    tests start them from the build tree or, once a package installed them, from /usr/bin."""
    names = set(os.listdir(os.path.join(ROOT, "scripts")))
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d != "build"]
        if "meson.build" in filenames:
            text = open(os.path.join(dirpath, "meson.build")).read()
            names.update(re.findall(r"executable\(\s*'([^']+)'", text))
    return names


def first_string(node):
    """The string a command list or a which() call starts with, or None."""
    if isinstance(node, (ast.List, ast.Tuple)) and node.elts:
        node = node.elts[0]
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def scan_python(path):
    """(imports, programs) of one Python file: top-level module names and program words."""
    tree = ast.parse(open(path, "rb").read(), filename=path)
    imports, programs = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imports.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            imports.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and node.args:
            f = node.func
            module = getattr(f.value, "id", "") if isinstance(f, ast.Attribute) else ""
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            if ((module == "subprocess" and name in SUBPROCESS_CALLS) or name == "Popen"
                    or (module == "shutil" and name == "which")
                    or (module == "os" and name.startswith("exec"))):
                word = first_string(node.args[0])
                if word and re.fullmatch(r"[\w.+-]+|/[\w./+-]+", word):
                    programs.add(word)
        elif isinstance(node, (ast.List, ast.Tuple)) and len(node.elts) > 1:
            word = first_string(node)  # a command list built before it is run
            if word and word.startswith(BIN_DIRS):
                programs.add(word)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if re.fullmatch(r"(/usr)?/s?bin/[\w.+-]+", node.value):  # "/usr/bin/dpdk-testpmd"
                programs.add(node.value)
    return imports, programs


def scan_shell(path):
    """Command words of a bash script: the first word of each simple command that is neither a
    function of the script, a variable, nor a path inside the project."""
    text = open(path).read()
    text = re.sub(r"^\s*\w+=\(.*?^\s*\)", "", text, flags=re.S | re.M)  # array bodies are data
    functions = set(re.findall(r"^\s*([\w-]+)\s*\(\)", text, re.M))
    words = set()
    for line in text.splitlines():
        line = re.sub(r"(^|\s)#.*", "", line)
        if re.match(r"^\s*(sed|awk) ", line) is None and "'" in line:
            line = re.sub(r"'[^']*'", "''", line)  # quoted text is data, not commands
        for part in re.split(r"&&|\|\||[;|&(`]|\$\(|\bthen\b|\bdo\b|\belse\b|\btime\b", line):
            tokens = part.split()
            while tokens and re.fullmatch(r"[\w]+=\S*|!|\{|exec|timeout|-\S+|\d+|sudo", tokens[0]):
                tokens = tokens[1:]
                if tokens and re.fullmatch(r"\d+[smh]?|-\S+", tokens[0]):
                    tokens = tokens[1:]
            if not tokens:
                continue
            w = tokens[0].strip("\"")
            if re.fullmatch(r"[a-z][\w.+-]*", w) and w not in functions and w not in SHELL_WORDS:
                words.add(w)
    # Keep only words that name an executable file (not builtins or keywords).
    programs = set()
    for w in words:
        kind = subprocess.run(["bash", "-c", f"type -t {w}"], capture_output=True, text=True)
        if kind.stdout.strip() == "file":
            programs.add(w)
    return programs


def main():
    args = sys.argv[1:]
    verbose = "--verbose" in args
    setup = os.path.join(ROOT, "scripts", "setup")
    if "--setup" in args:
        setup = args[args.index("--setup") + 1]
    pkgs = installed_packages()
    wanted = setup_packages(setup)
    allowed = dependency_closure(wanted, pkgs)
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    local = local_modules()
    problems = []
    seen = {}

    def check(what, kind, path, needed_by):
        key = (kind, what)
        if key in seen:
            return
        if path is None:
            seen[key] = f"{kind} {what}: not found (needed by {needed_by})"
        else:
            pkg = owner(path)
            if pkg is None:
                seen[key] = (f"{kind} {what}: {path} belongs to no Debian package, installed by "
                             f"hand? (needed by {needed_by})")
            elif pkg not in allowed:
                seen[key] = (f"{kind} {what}: from package {pkg}, which scripts/setup does not "
                             f"install (needed by {needed_by})")
            else:
                seen[key] = None
                if verbose:
                    print(f"ok: {kind} {what} <- {pkg}")
        if seen[key]:
            problems.append(seen[key])

    own = project_programs()
    for path in sorted(python_files()):
        rel = os.path.relpath(path, ROOT)
        imports, programs = scan_python(path)
        programs = {p for p in programs if os.path.basename(p) not in own}
        for mod in sorted(imports - stdlib - local):
            spec = importlib.util.find_spec(mod)
            origin = None
            if spec is not None:
                origin = spec.origin if spec.origin not in (None, "namespace") else \
                    next(iter(spec.submodule_search_locations or []), None)
            check(mod, "module", origin, rel)
        for prog in sorted(programs):
            check(prog, "program", prog if prog.startswith("/") and os.path.exists(prog)
                  else (None if prog.startswith("/") else shutil.which(prog)), rel)
    for path in sorted(shell_files()):
        rel = os.path.relpath(path, ROOT)
        for prog in sorted(scan_shell(path)):
            check(prog, "program", shutil.which(prog), rel)

    for p in problems:
        print(f"check_deps: {p}")
    checked = len(seen)
    if problems:
        print(f"check_deps: {len(problems)} of {checked} modules and programs do not come from "
              f"scripts/setup's packages (add the package to PACKAGES there)")
        return 1
    print(f"check_deps: all {checked} modules and programs come from scripts/setup's packages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
