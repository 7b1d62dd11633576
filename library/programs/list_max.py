"""list_max: the largest element of a list, 0 for the empty list, as list_max.asm."""


def list_max(xs):
    best = 0
    for x in xs:
        best = max(best, x)
    return best
