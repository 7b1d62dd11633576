; fib: Fibonacci numbers to a recursion depth (the listing of the paper's §3.2, with a depth counter).
;
; Calling convention (values are mod n):
;   inputs   r1 = a, r2 = b: the first two terms, F(0) = a, F(1) = b, F(k + 1) = F(k) + F(k - 1)
;            r3 = d >= 1: the recursion depth, the number of new terms
;            r4 = base address of the sequence in memory (an extra input: 0 when unset, as at top level)
;   result   r0 = F(d + 1)
;   memory   M[r4 + k] = F(k + 2) for 0 <= k < d: the computed sequence, whose last term is r0
;   clobbers r1, r2, r3, r4
;   steps    exactly 8 * d, the final `ret` included (the paper: depth 1 takes 8 steps, depth 2 takes 16).
;            Every round runs 8 lines: the last one ends with `ret`, the others with the line at `next`.
loop:
    write r4 r2                 ; M[p] = b
    add   r1 r2 r2              ; b = a + b
    read  r4 r1                 ; a = M[p], the old b (the paper's swap through memory)
    write r4 r2                 ; M[p] = b, the new term
    copy  r2 r0                 ; r0 = the new term
    dec   r3                    ; one round fewer to go
    jump  r3 next               ; more rounds?
    ret                         ; depth reached
next:
    inc r4 | jump r3 loop       ; p = p + 1; back to the loop (taken: r3 != 0)
