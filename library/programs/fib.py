"""fib: Fibonacci numbers to a depth, as fib.asm: F(0) = a, F(1) = b, returns F(d + 1) (mod n), for d >= 1."""


def fib(a, b, d):
    for _ in range(d):
        a, b = b, a + b
    return b
