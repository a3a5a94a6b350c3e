"""A child process that decides whether two maths expressions are equal, with sympy.

Runs as `python sympy_worker.py`: reads one JSON object per line ({"a": ..., "b": ...}, Python
expression strings already checked against a whitelist by the parent) and answers
{"eq": true | false | null}. The parent kills it when an answer takes too long (sympy can hang),
so it holds no state worth keeping. Standard library plus sympy only.
"""

import json
import resource
import sys


def main() -> None:
    try:
        limit = 2 * 1024 ** 3
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ValueError, OSError):
        pass
    import sympy
    from sympy.parsing.sympy_parser import (convert_xor, implicit_multiplication_application, parse_expr,
                                            standard_transformations)

    transformations = standard_transformations + (implicit_multiplication_application, convert_xor)
    names = {"sqrt": sympy.sqrt, "pi": sympy.pi, "oo": sympy.oo, "log": sympy.log, "exp": sympy.exp,
             "sin": sympy.sin, "cos": sympy.cos, "tan": sympy.tan, "cot": sympy.cot, "sec": sympy.sec,
             "csc": sympy.csc, "asin": sympy.asin, "acos": sympy.acos, "atan": sympy.atan, "E": sympy.E,
             "I": sympy.I}

    def parse(text):
        return parse_expr(text, local_dict=dict(names), transformations=transformations, evaluate=True)

    def equal(a, b):
        ea, eb = parse(a), parse(b)
        if ea == eb:
            return True
        if not ea.free_symbols and not eb.free_symbols:
            if ea.has(sympy.Float) or eb.has(sympy.Float):  # a decimal: equal up to a relative 1e-6
                va, vb = complex(sympy.N(ea, 30)), complex(sympy.N(eb, 30))
                return abs(va - vb) <= 1e-6 * max(1.0, abs(vb))
            return exact_equal(ea, eb)
        if ea.free_symbols != eb.free_symbols:
            return False
        return sympy.simplify(ea - eb) == 0

    def exact_equal(ea, eb):
        """Closed forms without decimals: equal only when their difference is zero, so that
        \\frac{4036082}{4036081} is not 1 and 355/113 is not pi."""
        if not (ea.is_finite and eb.is_finite):
            return False  # the same infinity was caught by ea == eb
        diff = ea - eb
        if diff.is_Rational:
            return diff == 0
        scale = max(1.0, abs(complex(sympy.N(eb, 50))))
        d = abs(complex(sympy.N(diff, 50)))
        if d <= 1e-30 * scale:
            return True
        if d > 1e-9 * scale:
            return False
        return sympy.simplify(diff) == 0  # a near miss: let simplification decide

    sys.stdout.write('{"ready": true}\n')
    sys.stdout.flush()
    for line in sys.stdin:
        try:
            msg = json.loads(line)
            eq = bool(equal(msg["a"], msg["b"]))
        except Exception:  # unparsable or not comparable: undecided
            eq = None
        sys.stdout.write(json.dumps({"eq": eq}) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
