#!/usr/bin/env python3
"""Checks an Autobahn|Testsuite report (index.json) against autobahn/expected.json.

Every case of the groups in expected.json's "counts" must be in the report
(exactly that many per group); a case must be OK for both its behavior and
its closing behavior unless expected.json lists it, with a reason, under
"accepted" (case id or `*` glob -> allowed results). Prints one line per
unexpected result, a summary line, and exits 1 on any problem.

Usage: check.py INDEX_JSON EXPECTED_JSON
"""

import fnmatch
import json
import sys
from collections import Counter


def main() -> int:
    index_path, expected_path = sys.argv[1], sys.argv[2]
    with open(index_path, encoding="utf-8") as f:
        index = json.load(f)
    with open(expected_path, encoding="utf-8") as f:
        expected = json.load(f)

    if len(index) != 1:
        print(f"autobahn: expected one agent in {index_path}, found {sorted(index)}")
        return 1
    results = next(iter(index.values()))
    accepted = expected.get("accepted", {})
    for pattern, entry in accepted.items():
        if not entry.get("reason"):
            print(f"autobahn: {expected_path}: entry {pattern} has no reason")
            return 1

    problems = []
    counts = Counter(case_id.split(".")[0] for case_id in results)
    for group, want in expected["counts"].items():
        if counts.get(group, 0) != want:
            problems.append(f"group {group}.*: {counts.get(group, 0)} cases in the report, expected {want}")
    for group in sorted(set(counts) - set(expected["counts"]), key=int):
        problems.append(f"group {group}.*: {counts[group]} cases ran that expected.json does not count")

    ok = 0
    accepted_ids = []
    unexpected = 0
    slowest = []
    for case_id, result in sorted(results.items(), key=lambda kv: [int(p) for p in kv[0].split(".")]):
        behavior, close = result["behavior"], result["behaviorClose"]
        slowest.append((result.get("duration", 0), case_id))
        entry = next((e for p, e in accepted.items() if fnmatch.fnmatchcase(case_id, p)), None)
        allowed_behavior = ["OK"] + (entry.get("behavior", []) if entry else [])
        allowed_close = ["OK"] + (entry.get("behaviorClose", []) if entry else [])
        if behavior == "OK" and close == "OK":
            ok += 1
        elif behavior in allowed_behavior and close in allowed_close:
            accepted_ids.append(f"{case_id} {behavior}/{close}")
        else:
            unexpected += 1
            problems.append(
                f"case {case_id}: behavior {behavior}, close {close} (code {result.get('remoteCloseCode')}); "
                f"allowed {allowed_behavior} / {allowed_close}; see {result.get('reportfile')}"
            )

    for line in problems:
        print(f"autobahn: {line}")
    if accepted_ids:
        print(f"autobahn: accepted as listed in expected.json: {', '.join(accepted_ids)}")
    slowest.sort(reverse=True)
    print(
        "autobahn: slowest cases: "
        + ", ".join(f"{case_id} {ms} ms" for ms, case_id in slowest[:3])
        + f"; all cases {sum(d for d, _ in slowest) / 1000:.1f} s"
    )
    print(
        f"autobahn: {len(results)} cases: {ok} OK, {len(accepted_ids)} accepted (listed with a reason), "
        f"{unexpected} unexpected (FAILED or not listed); {len(problems)} problems"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
