"""Assembly listings shared by the tests."""

# The paper's Fibonacci listing (§3.2), exactly as printed: r4 is the loop flag.
PAPER_FIBONACCI = """\
inc  2 2
fib_loop:
    write 3 2
    add  1 2 2
    read 3 1
    write 3 2
    inc  3 3
    jump 4 fib_loop
"""

# The same loop with a counter: r1, r2 = inputs, r4 = depth; depth d runs 7·d steps.
FIBONACCI_COUNTDOWN = """\
fib_loop:
    write 3 2
    add   1 2 2
    read  3 1
    write 3 2
    inc   3 3
    dec   4 4
    jump  4 fib_loop
"""
