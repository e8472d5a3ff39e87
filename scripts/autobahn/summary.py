#!/usr/bin/env python3
"""Summarizes an Autobahn|Testsuite fuzzingclient report and checks it against our acceptance rules.

    summary.py OUTDIR [--agent NAME]

Reads OUTDIR/index.json (and OUTDIR/<report>.json of every case that breaks a rule), prints the
number of cases per behavior and per behaviorClose, per top-level section, then every violation
with what the case expected and what it observed. Exit status 0 when every rule holds, 1 otherwise:

  * no case FAILED;
  * behaviorClose is OK or INFORMATIONAL (UNIMPLEMENTED too, for the cases that are UNIMPLEMENTED
    themselves);
  * NON-STRICT only for 6.4.x (fail-fast on invalid UTF-8 inside a fragmented message is optional)
    and the compression cases 12.x/13.x;
  * the compression cases 12.x/13.x are OK or NON-STRICT (permessage-deflate is negotiated, so
    none may be UNIMPLEMENTED or merely INFORMATIONAL);
  * no case is UNIMPLEMENTED.
"""

import argparse
import json
import os
import sys
from collections import Counter, defaultdict

BEHAVIORS = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]
CLOSE_BEHAVIORS = ["OK", "INFORMATIONAL", "UNIMPLEMENTED", "WRONG CODE", "UNCLEAN", "FAILED BY CLIENT", "FAILED"]


def case_key(case_id):
    return tuple(int(p) if p.isdigit() else p for p in case_id.split("."))


def is_compression(case_id):
    return case_id.split(".")[0] in ("12", "13")


def violations(case_id, r):
    out = []
    b, bc = r.get("behavior"), r.get("behaviorClose")
    if b == "FAILED":
        out.append("behavior FAILED")
    elif b == "UNIMPLEMENTED":
        out.append("behavior UNIMPLEMENTED (permessage-deflate is offered: every case must run)")
    elif b == "NON-STRICT" and not (case_id.startswith("6.4.") or is_compression(case_id)):
        out.append("behavior NON-STRICT (accepted only for 6.4.x and 12.x/13.x)")
    elif is_compression(case_id) and b not in ("OK", "NON-STRICT"):
        out.append("behavior %s (12.x/13.x must be OK or NON-STRICT)" % b)
    elif b not in ("OK", "NON-STRICT", "INFORMATIONAL"):
        out.append("behavior %s" % b)
    if bc not in ("OK", "INFORMATIONAL"):
        out.append("behaviorClose %s" % bc)
    return out


def short(value, limit=300):
    s = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return s if len(s) <= limit else s[:limit] + "... (%d chars)" % len(s)


def observed(detail):
    """The `received` list of a case, with long payloads abbreviated."""
    items = []
    for ev in detail.get("received") or []:
        if isinstance(ev, list) and len(ev) >= 2 and isinstance(ev[1], str) and len(ev[1]) > 40:
            ev = ev[:1] + ["%s... (%d chars)" % (ev[1][:40], len(ev[1]))] + ev[2:]
        items.append(ev)
    return items


def load_detail(outdir, r):
    report = r.get("reportfile")
    if not report:
        return {}, "no report file in index.json"
    path = os.path.join(outdir, os.path.splitext(report)[0] + ".json")
    try:
        with open(path) as f:
            return json.load(f), None
    except (OSError, ValueError) as e:
        return {}, "no case report %s: %s" % (path, e)


def describe(case_id, r, problems, detail, error):
    lines = ["%s  behavior=%s behaviorClose=%s  [%s]" % (case_id, r.get("behavior"), r.get("behaviorClose"), "; ".join(problems))]
    if error:
        lines.append("    (%s)" % error)
    if detail:
        lines.append("    description: %s" % short(" ".join(detail.get("description", "").split()), 400))
        lines.append("    expectation: %s" % short(" ".join(detail.get("expectation", "").split()), 400))
        lines.append("    expected:    %s" % short(detail.get("expected")))
        lines.append("    observed:    %s" % short(observed(detail)))
        lines.append("    result:      %s" % short(detail.get("result", "")))
        ec = detail.get("expectedClose") or {}
        lines.append(
            "    close:       expected code(s) %s (closedByMe=%s, requireClean=%s); got remote code %s reason %r, local code %s, "
            "wasClean=%s, closedByMe=%s, droppedByMe=%s, failedByMe=%s%s"
            % (
                ec.get("closeCode"),
                ec.get("closedByMe"),
                ec.get("requireClean"),
                detail.get("remoteCloseCode"),
                detail.get("remoteCloseReason"),
                detail.get("localCloseCode"),
                detail.get("wasClean"),
                detail.get("closedByMe"),
                detail.get("droppedByMe"),
                detail.get("failedByMe"),
                (", notClean: %s" % detail.get("wasNotCleanReason")) if detail.get("wasNotCleanReason") else "",
            )
        )
        lines.append("    resultClose: %s" % short(detail.get("resultClose", "")))
        for flag in ("wasOpenHandshakeTimeout", "wasCloseHandshakeTimeout", "wasServerConnectionDropTimeout"):
            if detail.get(flag):
                lines.append("    %s" % flag)
    else:
        lines.append("    remoteCloseCode=%s duration=%sms" % (r.get("remoteCloseCode"), r.get("duration")))
    return "\n".join(lines)


def group_key(problems, detail):
    """Violations that look alike (same rule broken, same way of closing) are listed together."""
    return (
        "; ".join(problems),
        "remote close code %s, closedByMe=%s, wasClean=%s%s"
        % (
            detail.get("remoteCloseCode"),
            detail.get("closedByMe"),
            detail.get("wasClean"),
            (", " + detail["wasNotCleanReason"]) if detail.get("wasNotCleanReason") else "",
        ),
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("outdir")
    ap.add_argument("--agent")
    a = ap.parse_args()
    with open(os.path.join(a.outdir, "index.json")) as f:
        index = json.load(f)
    if not index:
        print("index.json lists no agent")
        return 1
    agent = a.agent or sorted(index)[0]
    cases = index[agent]
    ids = sorted(cases, key=case_key)

    beh = Counter(cases[c].get("behavior") for c in ids)
    close = Counter(cases[c].get("behaviorClose") for c in ids)
    print("Autobahn|Testsuite fuzzingclient, agent %s: %d cases" % (agent, len(ids)))
    print("behavior:      " + "  ".join("%s=%d" % (k, beh.get(k, 0)) for k in BEHAVIORS + sorted(set(beh) - set(BEHAVIORS))))
    print("behaviorClose: " + "  ".join("%s=%d" % (k, close[k]) for k in CLOSE_BEHAVIORS + sorted(set(close) - set(CLOSE_BEHAVIORS)) if close.get(k) or k in ("OK", "INFORMATIONAL")))

    sections = defaultdict(Counter)
    for c in ids:
        sections[c.split(".")[0]][cases[c].get("behavior")] += 1
    print("per section (behavior):")
    for s in sorted(sections, key=int):
        n = sum(sections[s].values())
        print("  %-3s %4d cases  %s" % (s + ".", n, "  ".join("%s=%d" % (k, v) for k, v in sorted(sections[s].items()))))

    bad = [(c, violations(c, cases[c])) for c in ids]
    bad = [(c, p) for c, p in bad if p]
    slowest = sorted(ids, key=lambda c: -(cases[c].get("duration") or 0))[:5]
    print("slowest cases: " + ", ".join("%s %.1fs" % (c, (cases[c].get("duration") or 0) / 1000.0) for c in slowest))
    if not bad:
        print("RESULT: PASS (no rule violated)")
        return 0
    groups = defaultdict(list)
    details = []
    for c, p in bad:
        detail, error = load_detail(a.outdir, cases[c])
        text = describe(c, cases[c], p, detail, error)
        details.append(text)
        groups[group_key(p, detail)].append((c, text))
    details_path = os.path.join(a.outdir, "violations.txt")
    with open(details_path, "w") as f:
        f.write("\n".join(details) + "\n")
    print("RESULT: FAIL, %d case(s) violate the rules, in %d group(s):" % (len(bad), len(groups)))
    for n, (key, members) in enumerate(sorted(groups.items(), key=lambda kv: case_key(kv[1][0][0])), 1):
        print("[%d] %d case(s): %s; %s" % (n, len(members), key[0], key[1]))
        print("    ids: " + " ".join(c for c, _ in members))
        shown = members if len(members) <= 3 else members[:1]
        for _, text in shown:
            print("    " + text.replace("\n", "\n    "))
        if len(shown) < len(members):
            print("    (%d more alike; every case in %s)" % (len(members) - len(shown), details_path))
    print("failing case ids: " + " ".join(c for c, _ in bad))
    return 1


if __name__ == "__main__":
    sys.exit(main())
