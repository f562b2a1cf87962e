"""Variants of the edge default for the reload tests: edit_edge_default.py IN OUT STEP...

Each step is one change a reload applies live (or, for `burst`, one it refuses)."""
import sys


def pace(text):
    # besteffort held to 100 Kbps, so its packets wait (and still wait when the next step removes
    # the class, however slow the generator); the uplink paced lower, and dropping arrivals when
    # full: with drop-worst, the other classes' arrivals would keep evicting the waiting packets.
    text = text.replace("    policy: fifo\n", "    policy: pace\n    rate: 100Kbps\n", 1)
    text = text.replace("    drop: worst\n", "    drop: tail\n", 1)
    return text.replace("pacing: 980Mbps", "pacing: 900Mbps", 1)


def slower_uplink(text):
    # After `pace`: the uplink paced lower still, nothing else; its scheduler ranks as before.
    return text.replace("pacing: 900Mbps", "pacing: 800Mbps", 1)


def no_besteffort(text):
    # The class, its message rule, its flow rule's queue and its tenant gone.
    head, rest = text.split("  - name: besteffort", 1)
    text = head + rest[rest.index("messages:"):]
    lines = text.split("\n")
    at = lines.index("  - class: besteffort")
    del lines[at:at + 2]
    text = "\n".join(lines).replace("actions=set_queue:3,NORMAL", "actions=NORMAL")
    return text[:text.index("        - name: silver")] + text[text.index("control:"):]


def gen2(text):
    text = text.replace("  - name: uplink0\n", "  - name: gen2\n    driver: ring\n  - name: uplink0\n", 1)
    return text.replace("ports: [gen0, gen1, uplink0]", "ports: [gen0, gen1, uplink0, gen2]")


def vlan(text):
    # uplink0 carries VLAN 10 only: the generator's untagged frames no longer reach it.
    return text.replace("ports: [gen0, gen1, uplink0]",
                        "ports: [gen0, gen1, {port: uplink0, vlan: {mode: access, tag: 10}}]")


def spare(text):
    # A fourth class no traffic uses, in tenant silver.
    text = text.replace("messages:\n", "  - name: spare\n    queue: 4\n    policy: fifo\n"
                        "    tenant: silver\nmessages:\n", 1)
    return text.replace("classes: [besteffort]", "classes: [besteffort, spare]")


def spare_moved(text):
    # The spare class with another policy, in the other tenant: a new tree for the uplink.
    text = spare(text).replace("    queue: 4\n    policy: fifo\n    tenant: silver\n",
                               "    queue: 4\n    policy: las\n    tenant: gold\n    priority: 2\n")
    text = text.replace("classes: [besteffort, spare]", "classes: [besteffort]")
    text = text.replace("classes: [rpc, bulk]", "classes: [rpc, bulk, spare]")
    return text.replace("pacing: 980Mbps", "pacing: 970Mbps", 1)


def drop_rule(text):
    # A rule for traffic that never comes.
    rule = '  - bridge: br0\n    rule: "priority=300,sctp,actions=drop"\n'
    return text.replace("flows:\n", "flows:\n" + rule, 1)


def gen0_drop_rule(text):
    rule = '  - bridge: br0\n    rule: "priority=300,in_port=gen0,actions=drop"\n'
    return text.replace("flows:\n", "flows:\n" + rule, 1)


def burst(text):
    return text.replace("  lcores: 1\n", "  lcores: 1\n  burst: 16\n", 1)


STEPS = {"pace": pace, "slower-uplink": slower_uplink, "no-besteffort": no_besteffort, "gen2": gen2, "vlan": vlan,
         "spare": spare, "spare-moved": spare_moved, "drop-rule": drop_rule,
         "gen0-drop-rule": gen0_drop_rule, "burst": burst}

if __name__ == "__main__":
    source, target, steps = sys.argv[1], sys.argv[2], sys.argv[3:]
    text = open(source).read()
    for step in steps:
        changed = STEPS[step](text)
        if changed == text:
            sys.exit(f"edit_edge_default: step {step} changed nothing")
        text = changed
    open(target, "w").write(text)
