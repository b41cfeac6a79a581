"""Layers point one way: dataplane/ and migrate/ include nothing from control/, and dataplane/
nothing from migrate/ (docs/architecture.md, "Layers").

Reads every C++ source and header of those folders. Expects no #include of a higher layer.
"""
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FORBIDDEN = {"dataplane": ("control/", "migrate/"), "migrate": ("control/",)}


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
