#!/usr/bin/env python3
"""Summarises the JUnit XML files of a test run (gtest, pytest, and scripts/test's own).

Usage: summarize_results.py DIR [PATTERN]   (PATTERN: which files of DIR, default *.xml)

Counts every <testcase>: failed = it has a <failure> or <error> child, skipped = a <skipped>
child or gtest's status="notrun" (a disabled test); passed = the rest. A file that does not
parse counts as one failed case named after the file. Prints the failed cases, then, as the very
last line, "N passed, N failed" with ", N skipped" appended only when some were skipped.
Exit status: 0 when nothing failed, 1 otherwise, 2 on a usage error.
"""
import glob
import os
import sys
import xml.etree.ElementTree as ET


def case_name(case, fallback):
    name = case.get("name", "?")
    cls = case.get("classname") or fallback
    return f"{cls}.{name}" if cls else name


def first_line(elem):
    text = (elem.get("message") or elem.text or "").strip()
    return text.splitlines()[0][:160] if text else ""


def summarize(directory, pattern="*.xml"):
    passed, failed, skipped = 0, [], 0
    for path in sorted(glob.glob(os.path.join(directory, pattern))):
        stem = os.path.splitext(os.path.basename(path))[0]
        try:
            root = ET.parse(path).getroot()
        except ET.ParseError as e:
            failed.append((stem, f"unreadable JUnit XML {path}: {e}"))
            continue
        for case in root.iter("testcase"):
            bad = case.find("failure")
            if bad is None:
                bad = case.find("error")
            if bad is not None:
                failed.append((case_name(case, stem), first_line(bad)))
            elif case.find("skipped") is not None or case.get("status") == "notrun":
                skipped += 1
            else:
                passed += 1
    return passed, failed, skipped


def main(argv):
    if len(argv) not in (2, 3) or not os.path.isdir(argv[1]):
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    passed, failed, skipped = summarize(*argv[1:])
    if failed:
        print(f"FAILED ({len(failed)}):")
        for name, why in failed:
            print(f"  {name}" + (f": {why}" if why else ""))
    line = f"{passed} passed, {len(failed)} failed"
    if skipped:
        line += f", {skipped} skipped"
    print(line)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
