; div: calculator, r0 = r1 // r2, and 0 when r2 = 0.
;
; Calling convention: inputs r1, r2; result r0; no other register or memory cell is written.
; Steps: 1 (the `ret` runs in a parallel lane of the same line).
    div r1 r2 r0 | ret
