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
