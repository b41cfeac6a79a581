"""Layers point one way: dataplane/ and migrate/ include nothing from control/, and dataplane/
nothing from migrate/ (docs/architecture.md, "Layers"); the client, control/ferryctl/, includes
nothing of the daemon's, each feature's pipeline stage sits in its feature's folder, and nothing in
dataplane/ calls a standard-library accessor that throws.

Reads every C++ source and header of those folders. Expects no #include of a higher layer.
"""
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FORBIDDEN = {"dataplane": ("control/", "migrate/"), "migrate": ("control/",)}
# A feature's files, by the prefix of their names, and the folder they belong in.
FEATURE_FOLDERS = {"ct_": "dataplane/conntrack", "nat_": "dataplane/conntrack",
                   "dpi_": "dataplane/dpi"}


def includes(folder):
    for dirpath, _, files in os.walk(os.path.join(ROOT, folder)):
        for f in files:
            if f.endswith((".h", ".cc")):
                path = os.path.join(dirpath, f)
                with open(path) as fh:
                    for n, line in enumerate(fh, 1):
                        m = re.match(r'\s*#\s*include\s+"([^"]+)"', line)
                        if m:
                            yield os.path.relpath(path, ROOT), n, m.group(1)


def test_lower_layers_include_nothing_from_higher_ones():
    bad = [f"{path}:{n}: {inc}" for folder, above in FORBIDDEN.items()
           for path, n, inc in includes(folder) if inc.startswith(above)]
    assert bad == [], "\n".join(bad)


def test_ferryctl_includes_nothing_of_the_daemon():
    """ferryctl links only JSON: a header of ferryd's would pull ferryd's code into the client."""
    bad = [f"{path}:{n}: {inc}" for path, n, inc in includes("control/ferryctl")
           if not inc.startswith(("control/ferryctl/", "ferry_version.h", "dataplane/result.h"))]
    assert bad == [], "\n".join(bad)


def test_feature_files_sit_in_their_folders():
    """No ct_*, nat_* or dpi_* source directly in dataplane/: each lives in its feature folder."""
    stray = [f for f in os.listdir(os.path.join(ROOT, "dataplane"))
             if f.endswith((".h", ".cc")) and f.startswith(tuple(FEATURE_FOLDERS))]
    assert stray == [], f"move into {sorted(set(FEATURE_FOLDERS.values()))}: {stray}"


# Checked accessors that report a bad index or an empty value by throwing. dataplane/ is built
# with exceptions because its control-thread half (the classifier build, DPI database
# compilation) allocates with standard containers; the fast path must still never throw, so
# none of these appear anywhere in dataplane/ (use operator[] on an index known to be in range).
THROWING = re.compile(r"\.(test|at|value)\(|\bstd::sto[a-z]+\(|\bthrow\b")


def test_dataplane_calls_no_throwing_accessor():
    bad = []
    for dirpath, _, files in os.walk(os.path.join(ROOT, "dataplane")):
        for f in files:
            if f.endswith((".h", ".cc")):
                path = os.path.join(dirpath, f)
                with open(path) as fh:
                    for n, line in enumerate(fh, 1):
                        code = line.split("//", 1)[0]
                        if THROWING.search(code):
                            bad.append(f"{os.path.relpath(path, ROOT)}:{n}: {line.strip()}")
    assert bad == [], "\n".join(bad)
