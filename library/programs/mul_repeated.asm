; mul_repeated: multiplication by repeated addition (the `mul` calculator does it in one step).
;
; Calling convention:
;   inputs   r1 = a, r2 = b
;   result   r0 = (a * b) mod n, as a added b times
;   clobbers r3
;   steps    b + 2
    set 0 r0 | dec r2 r3 | jump r2 loop           ; product = 0, r3 = additions left after the next one
    ret                                           ; b = 0: the product is 0
loop:
    add r0 r1 r0 | dec r3 | jump r3 loop          ; product += a; the jump reads r3 from before the line
    ret
