"""MAC aging: an address that is not seen again is forgotten after mac_table.aging_s.

Sends: one frame from A on p1 (phase 1), nothing more. Expects: A is learned on p1, stays
while younger than the aging time, and is gone once it is older (checked within a bound); a
later frame to A is flooded again instead of unicast.
"""
import time

from pcap_util import BROADCAST, PcapBridge, mac, udp_frame

AGING_S = 10  # the smallest the config allows


def test_unrefreshed_mac_ages_out():
    b = PcapBridge()
    try:
        a, c = mac(1), mac(3)
        b.ferryd.config["mac_table"] = {"aging_s": AGING_S}
        b.port("p1", [udp_frame(a, BROADCAST)])
        b.port("p2")
        b.port("p3")
        b.start()
        b.wait_macs([(a, 0, "p1")])
        learned_at = time.monotonic()
        time.sleep(AGING_S / 2)
        assert b.macs() == {(a, 0, "p1")}, "aged out too early"

        def gone():
            return not b.macs()

        deadline = learned_at + AGING_S + 4  # aging runs once a second
        while not gone():
            assert time.monotonic() < deadline, f"still there after {AGING_S + 4}s: {b.macs()}"
            time.sleep(0.2)
        assert time.monotonic() - learned_at >= AGING_S - 1
        # Unknown again: a frame to A is flooded to both other ports.
        b.add_port("p4", [udp_frame(c, a)])
        b.wait_counts(rx={"p4": 1}, tx={"p1": 1, "p2": 2, "p3": 2})
        out = b.finish()
        assert len(out["p1"]) == 1 and len(out["p2"]) == 2 and len(out["p3"]) == 2
    finally:
        b.close()
