; sort_parallel: odd-even transposition sort of exactly 5 values in memory, in place, with parallel lanes.
;
; Calling convention:
;   inputs   the list M[0..5) (the length is fixed: 5 values and their 5 addresses fill r1..r10)
;   result   M[0..5) sorted ascending; r0 is not written (the result is the memory)
;   clobbers r1 .. r10
;   steps    8 = N + 3 for N = 5 values: load, 5 compare-exchange phases, store (sort takes 42 for 5)
; Every line runs its lanes at once on the registers from before the line, so one line orders every
; disjoint pair of a phase; N phases of alternating even and odd pairs sort N values.
    set 0 r6 | set 1 r7 | set 2 r8 | set 3 r9 | set 4 r10                          ; the addresses 0..4
    read r6 r1 | read r7 r2 | read r8 r3 | read r9 r4 | read r10 r5                  ; x1..x5 = M[0..5)
    min r1 r2 r1 | max r1 r2 r2 | min r3 r4 r3 | max r3 r4 r4                         ; pairs (1 2) (3 4)
    min r2 r3 r2 | max r2 r3 r3 | min r4 r5 r4 | max r4 r5 r5                         ; pairs (2 3) (4 5)
    min r1 r2 r1 | max r1 r2 r2 | min r3 r4 r3 | max r3 r4 r4                         ; pairs (1 2) (3 4)
    min r2 r3 r2 | max r2 r3 r3 | min r4 r5 r4 | max r4 r5 r5                         ; pairs (2 3) (4 5)
    min r1 r2 r1 | max r1 r2 r2 | min r3 r4 r3 | max r3 r4 r4                         ; pairs (1 2) (3 4)
    write r6 r1 | write r7 r2 | write r8 r3 | write r9 r4 | write r10 r5 | ret         ; M[0..5) = x1..x5
