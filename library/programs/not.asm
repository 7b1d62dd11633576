; not: calculator, r0 = 1 if r1 == 0 else 0.
;
; Calling convention: input r1; result r0; no other register or memory cell is written.
; Steps: 1 (the `ret` runs in a parallel lane of the same line).
    not r1 r0 | ret
