"""gcd: greatest common divisor by Euclid's algorithm, as gcd.asm (gcd(a, 0) = a)."""


def gcd(a, b):
    while b:
        a, b = b, a % b
    return a
