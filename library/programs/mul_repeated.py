"""mul_repeated: multiplication by repeated addition (mod n), as mul_repeated.asm."""


def mul_repeated(a, b):
    product = 0
    for _ in range(b):
        product += a
    return product
