"""Conntrack differential test: ferry's stateful firewall against Linux netfilter's.

Sends: the same crafted packet sequences (ct_diff_scenarios.py: TCP handshakes, closes, RST and
FIN variants, windows, SACK, checksums, UDP, ICMP echo and errors, IPv4 source routes, IPv6,
fragments; then FERRY_DIFF_RANDOM (default 200) mutated conversations drawn from FERRY_DIFF_SEED,
default a fresh seed printed in the output) through two firewalls with one policy, "established
and related pass both ways, invalid is dropped, new only from inside":
- Linux: a router namespace with an nftables forward chain and conntrack with
  nf_conntrack_checksum=1, nf_conntrack_tcp_loose=0, nf_conntrack_tcp_be_liberal=0;
- ferry: ferryd with two net_tap ports and the policy as ct rules.
(ct_diff_worlds.py says how packets are injected, ordered and seen.)
Expects: every packet gets the same verdict (passed or dropped) from both, except the steps a
scenario lists as a known difference, each named in docs/conntrack.md ("Agreement with Linux");
in random mode the first disagreement of a sequence must be a known difference
(classify_random), and the later ones of that sequence are counted as its consequences.
Prints the figures: scenarios, packets, disagreements.

Reproduce a random run: FERRY_DIFF_SEED=<seed printed> pytest test_ct_differential.py
"""
import os
import random
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib"))

from ferry_harness import tap_netns_unavailable  # noqa: E402

_UNAVAILABLE = tap_netns_unavailable(tools=("ip", "nft"))
pytestmark = pytest.mark.skipif(_UNAVAILABLE is not None, reason=_UNAVAILABLE or "")

if _UNAVAILABLE is None:
    from ct_diff_scenarios import (DIFFERENCES, classify_random, describe,  # noqa: E402
                                   random_scenarios, scenarios)
    from ct_diff_worlds import FerrySwitch, LinuxRouter  # noqa: E402

RANDOM_COUNT = int(os.environ.get("FERRY_DIFF_RANDOM", "200"))


@pytest.fixture(scope="module")
def worlds():
    """The Linux router and ferryd, each with its barrier connection open; torn down (namespaces,
    veths, ferryd) whatever happens."""
    linux, ferry = LinuxRouter(), FerrySwitch()
    try:
        linux.start()
        ferry.start()
        linux.open_barrier_flow()
        ferry.open_barrier_flow()
        yield linux, ferry
    finally:
        ferry.stop()
        linux.stop()


class Figures:
    """What a comparison found. Every disagreement is one of: a known difference (listed in the
    scenario, or in random mode named by classify_random), a consequence (random mode: a later
    packet of a sequence whose first disagreement was a known difference, after which the two
    connection tables no longer hold the same thing), or unexplained (the test fails)."""

    def __init__(self, title):
        self.title = title
        self.scenarios = self.packets = 0
        self.known, self.consequences, self.unexplained, self.stale = [], [], [], []

    def disagreements(self):
        return len(self.known) + len(self.consequences) + len(self.unexplained)

    def report(self):
        print(f"\n{self.title}: {self.scenarios} scenarios, {self.packets} packets, "
              f"{self.disagreements()} disagreements ({len(self.known)} known differences, "
              f"{len(self.consequences)} consequences of one, {len(self.unexplained)} unexplained)")
        for line in self.known:
            print("  known:", line)
        for line in self.consequences:
            print("  consequence:", line)
        for line in self.stale:
            print("  listed as a difference but agrees (update the scenario and "
                  "docs/conntrack.md):", line)
        for line in self.unexplained:
            print("  DISAGREES:", line)


def _compare(worlds, cases, title, classify=None):
    """Plays every case through both worlds and sorts the disagreements (Figures). classify
    (random mode) names the first disagreement of a sequence; later ones are its consequences."""
    linux, ferry = worlds
    fig = Figures(title)
    for case in cases:
        got_linux = linux.play(case.steps)
        got_ferry = ferry.play(case.steps)
        fig.scenarios += 1
        fig.packets += len(case.steps)
        first_key = None
        for i, (side, l3) in enumerate(case.steps):
            line = (f"{case.name} step {i} from {side}: {describe(l3)}: linux "
                    f"{'passes' if got_linux[i] else 'drops'}, ferry "
                    f"{'passes' if got_ferry[i] else 'drops'}")
            if got_linux[i] == got_ferry[i]:
                if i in case.differs:
                    fig.stale.append(line)
                continue
            if classify is None:
                key = case.differs.get(i)
            elif first_key is None:
                key = first_key = classify(case, i, got_linux, got_ferry) or ""
            else:
                (fig.consequences if first_key else fig.unexplained).append(line)
                continue
            if key:
                fig.known.append(f"{line} [{key}]")
            else:
                fig.unexplained.append(line)
    fig.report()
    return fig


def test_fixed_scenarios_agree_with_linux(worlds):
    cases = scenarios()
    assert len(cases) >= 40
    assert all(k in DIFFERENCES for c in cases for k in c.differs.values())
    fig = _compare(worlds, cases, "fixed scenarios")
    assert not fig.unexplained, "ferry and Linux disagree:\n" + "\n".join(fig.unexplained)


def test_random_mutations_agree_with_linux(worlds):
    seed = int(os.environ.get("FERRY_DIFF_SEED", random.SystemRandom().randrange(1 << 31)))
    print(f"\nrandom mode: FERRY_DIFF_SEED={seed} FERRY_DIFF_RANDOM={RANDOM_COUNT}")
    cases = random_scenarios(seed, RANDOM_COUNT)
    fig = _compare(worlds, cases, f"random mode (seed {seed})", classify_random)
    assert not fig.unexplained, (f"ferry and Linux disagree (FERRY_DIFF_SEED={seed} reproduces):\n"
                                 + "\n".join(fig.unexplained))
