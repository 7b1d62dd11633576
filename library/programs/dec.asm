; dec: calculator, r0 = (r1 - 1) mod n.
;
; Calling convention: input r1; result r0; no other register or memory cell is written.
; Steps: 1 (the `ret` runs in a parallel lane of the same line).
    dec r1 r0 | ret
