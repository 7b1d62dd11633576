; add: calculator, r0 = (r1 + r2) mod n.
;
; Calling convention: inputs r1, r2; result r0; no other register or memory cell is written.
; Steps: 1 (the `ret` runs in a parallel lane of the same line).
    add r1 r2 r0 | ret
