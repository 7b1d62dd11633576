"""sort: bubble sort of a list in place, as sort.asm: pass k orders the pairs (0, 1) .. (k - 2, k - 1)."""


def sort(xs):
    for k in range(len(xs), 1, -1):
        for i in range(k - 1):
            a, b = xs[i], xs[i + 1]
            xs[i], xs[i + 1] = min(a, b), max(a, b)
