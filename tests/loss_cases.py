"""Reference numbers for the preference losses, shared by every backend's loss tests.

Each case gives summed completion log-probs under the policy (pw, pl) and the reference
(rw, rl), the scores (sw, sl), beta, and the expected losses written out by hand with `math`:
    score-dpo: -log sigmoid(beta * (sw * (pw - rw) - (1 - sl) * (pl - rl)))
    dpo:       -log sigmoid(beta * ((pw - rw) - (pl - rl)))
"""

import math


def _nls(z: float) -> float:  # -log sigmoid(z), stable for either sign
    return math.log1p(math.exp(-z)) if z > 0 else -z + math.log1p(math.exp(z))


RAW = [
    # pw,      pl,      rw,      rl,     sw,   sl,   beta
    (-12.0, -15.0, -13.0, -14.0, 1.0, 0.0, 0.1),
    (-120.5, -98.25, -121.0, -97.0, 0.6666667, 0.3333333, 0.1),
    (-40.0, -40.0, -40.0, -40.0, 0.9, 0.1, 0.1),
    (-300.0, -250.0, -280.0, -260.0, 0.25, 0.0, 0.5),
    (-5.5, -60.0, -7.0, -59.0, 1.0, 0.75, 1.0),
    (-80.0, -81.0, -60.0, -100.0, 0.5, 0.4, 2.0),  # large |z|: checks numerical stability
]

CASES = []
for pw, pl, rw, rl, sw, sl, beta in RAW:
    CASES.append({
        "pw": pw, "pl": pl, "rw": rw, "rl": rl, "sw": sw, "sl": sl, "beta": beta,
        "score_dpo": _nls(beta * (sw * (pw - rw) - (1 - sl) * (pl - rl))),
        "dpo": _nls(beta * ((pw - rw) - (pl - rl))),
    })


# The group-relative loss (grpo), on whole groups: per text its summed log-prob under the policy
# (pi) and under the generator that wrote it (ref), its completion tokens (n) and its score. The
# expected loss is written per text, GRPO's way: A_i = (s_i - mean) / std, r_i = exp((pi_i - ref_i) / n_i),
# loss = -(1/k) sum_i min(r_i A_i, clip(r_i, 1 - eps, 1 + eps) A_i); the code computes it over the
# group's pairs instead (loop/pairs.group_pairs), which must come to the same number.
GROUPS = [
    # text 0 clipped above (A > 0, r = e^0.6), text 2 clipped below (A < 0, r = e^-0.5), 1 and 3 not
    {"scores": [1.0, 0.5, 0.0, 0.0], "pi": [-40.0, -55.0, -30.0, -62.0], "ref": [-70.0, -56.0, -10.0, -60.0],
     "n": [50, 30, 40, 20], "clip": 0.2},
    # the middle text has advantage 0; nothing clipped at clip 0.5
    {"scores": [0.75, 0.25, 0.5], "pi": [-12.0, -9.0, -20.0], "ref": [-13.0, -8.5, -20.5], "n": [10, 12, 8],
     "clip": 0.5},
]


def group_expected(g: dict) -> float:
    s, k = g["scores"], len(g["scores"])
    mean = sum(s) / k
    std = math.sqrt(sum((x - mean) ** 2 for x in s) / k)
    total = 0.0
    for i in range(k):
        a = (s[i] - mean) / std
        r = math.exp((g["pi"][i] - g["ref"][i]) / g["n"][i])
        total += min(r * a, min(max(r, 1 - g["clip"]), 1 + g["clip"]) * a)
    return -total / k


def group_pair_arrays(g: dict) -> dict[str, list[float]]:
    """The group's pairs (group_pairs' order) as the loss's per-pair inputs."""
    from scoreflow.loop.pairs import Candidate, group_pairs

    pairs = group_pairs([Candidate(0, i, x) for i, x in enumerate(g["scores"])])
    pick = lambda key, side: [float(g[key][getattr(p, side)]) for p in pairs]  # noqa: E731
    return {"pw": pick("pi", "chosen"), "pl": pick("pi", "rejected"), "rw": pick("ref", "chosen"),
            "rl": pick("ref", "rejected"), "nw": pick("n", "chosen"), "nl": pick("n", "rejected"),
            "aw": [p.advantage_chosen for p in pairs], "al": [p.advantage_rejected for p in pairs],
            "weight": [p.weight for p in pairs]}
