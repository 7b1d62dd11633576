; or: calculator, r0 = 1 if r1 != 0 or r2 != 0 else 0.
;
; Calling convention: inputs r1, r2; result r0; no other register or memory cell is written.
; Steps: 1 (the `ret` runs in a parallel lane of the same line).
    or  r1 r2 r0 | ret
