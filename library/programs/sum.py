"""sum: the sum of a list (mod n), as sum.asm (the list in memory, its length in r1)."""


def sum(xs):
    total = 0
    for x in xs:
        total += x
    return total
