; sort_oddeven: odd-even transposition sort of a list of any length up to 16 in memory, in place, with parallel
; lanes: the parallel counterpart of the sequential bubble `sort` (same calling convention).
;
; Calling convention:
;   inputs   r1 = L, the length (0 <= L <= 16); the list is M[0..L)
;   result   M[0..L) sorted ascending; M[L..16) hold max(M[0..L)); r0 = max(M[0..L)) (0 for the empty list)
;   clobbers r2, r4, r5, r6 .. r37 (needs 38 data registers: computer_registers >= 38 + call depth)
;   steps    L + 24 for L >= 1 (L = 4: 28, L = 16: 40; `sort` takes 3 L (L - 1) / 2 + 2 L + 2: 28 and 394), 2 for
;            L = 0. One pass finds the maximum (L + 2 steps), which pads the cells past the list so that one
;            fixed 16-value network sorts every length; then 16 compare-exchange phases of alternating even and odd
;            pairs, every pair of a phase in its own two lanes of one line.
    set 0 r0 | set 0 r4 | copy r1 r2 | jump r1 first                      ; the empty list is sorted
    ret
first:
    read r4 r0 | read r4 r5 | inc r4 | dec r2                             ; best = x = M[0], i = 1
loop:
    max r0 r5 r0 | read r4 r5 | inc r4 | dec r2 | jump r2 loop            ; best = max(best, x); x = M[i]
    set 0 r6 | set 1 r7 | set 2 r8 | set 3 r9 | set 4 r10 | set 5 r11 | set 6 r12 | set 7 r13 | set 8 r14 | set 9 r15 | set 10 r16 | set 11 r17 | set 12 r18 | set 13 r19 | set 14 r20 | set 15 r21   ; the addresses 0..15
    add r1 r6 r22 | add r1 r7 r23 | add r1 r8 r24 | add r1 r9 r25 | add r1 r10 r26 | add r1 r11 r27 | add r1 r12 r28 | add r1 r13 r29 | add r1 r14 r30 | add r1 r15 r31 | add r1 r16 r32 | add r1 r17 r33 | add r1 r18 r34 | add r1 r19 r35 | add r1 r20 r36 | add r1 r21 r37   ; L + k
    write r22 r0 | write r23 r0 | write r24 r0 | write r25 r0 | write r26 r0 | write r27 r0 | write r28 r0 | write r29 r0 | write r30 r0 | write r31 r0 | write r32 r0 | write r33 r0 | write r34 r0 | write r35 r0 | write r36 r0 | write r37 r0   ; M[L..16) = max (past the memory: no effect)
    read r6 r22 | read r7 r23 | read r8 r24 | read r9 r25 | read r10 r26 | read r11 r27 | read r12 r28 | read r13 r29 | read r14 r30 | read r15 r31 | read r16 r32 | read r17 r33 | read r18 r34 | read r19 r35 | read r20 r36 | read r21 r37   ; x_k = M[k]
    min r22 r23 r22 | max r22 r23 r23 | min r24 r25 r24 | max r24 r25 r25 | min r26 r27 r26 | max r26 r27 r27 | min r28 r29 r28 | max r28 r29 r29 | min r30 r31 r30 | max r30 r31 r31 | min r32 r33 r32 | max r32 r33 r33 | min r34 r35 r34 | max r34 r35 r35 | min r36 r37 r36 | max r36 r37 r37   ; phase 0: pairs (0 1) ..
    min r23 r24 r23 | max r23 r24 r24 | min r25 r26 r25 | max r25 r26 r26 | min r27 r28 r27 | max r27 r28 r28 | min r29 r30 r29 | max r29 r30 r30 | min r31 r32 r31 | max r31 r32 r32 | min r33 r34 r33 | max r33 r34 r34 | min r35 r36 r35 | max r35 r36 r36   ; phase 1: pairs (1 2) ..
    min r22 r23 r22 | max r22 r23 r23 | min r24 r25 r24 | max r24 r25 r25 | min r26 r27 r26 | max r26 r27 r27 | min r28 r29 r28 | max r28 r29 r29 | min r30 r31 r30 | max r30 r31 r31 | min r32 r33 r32 | max r32 r33 r33 | min r34 r35 r34 | max r34 r35 r35 | min r36 r37 r36 | max r36 r37 r37   ; phase 2: pairs (0 1) ..
    min r23 r24 r23 | max r23 r24 r24 | min r25 r26 r25 | max r25 r26 r26 | min r27 r28 r27 | max r27 r28 r28 | min r29 r30 r29 | max r29 r30 r30 | min r31 r32 r31 | max r31 r32 r32 | min r33 r34 r33 | max r33 r34 r34 | min r35 r36 r35 | max r35 r36 r36   ; phase 3: pairs (1 2) ..
    min r22 r23 r22 | max r22 r23 r23 | min r24 r25 r24 | max r24 r25 r25 | min r26 r27 r26 | max r26 r27 r27 | min r28 r29 r28 | max r28 r29 r29 | min r30 r31 r30 | max r30 r31 r31 | min r32 r33 r32 | max r32 r33 r33 | min r34 r35 r34 | max r34 r35 r35 | min r36 r37 r36 | max r36 r37 r37   ; phase 4: pairs (0 1) ..
    min r23 r24 r23 | max r23 r24 r24 | min r25 r26 r25 | max r25 r26 r26 | min r27 r28 r27 | max r27 r28 r28 | min r29 r30 r29 | max r29 r30 r30 | min r31 r32 r31 | max r31 r32 r32 | min r33 r34 r33 | max r33 r34 r34 | min r35 r36 r35 | max r35 r36 r36   ; phase 5: pairs (1 2) ..
    min r22 r23 r22 | max r22 r23 r23 | min r24 r25 r24 | max r24 r25 r25 | min r26 r27 r26 | max r26 r27 r27 | min r28 r29 r28 | max r28 r29 r29 | min r30 r31 r30 | max r30 r31 r31 | min r32 r33 r32 | max r32 r33 r33 | min r34 r35 r34 | max r34 r35 r35 | min r36 r37 r36 | max r36 r37 r37   ; phase 6: pairs (0 1) ..
    min r23 r24 r23 | max r23 r24 r24 | min r25 r26 r25 | max r25 r26 r26 | min r27 r28 r27 | max r27 r28 r28 | min r29 r30 r29 | max r29 r30 r30 | min r31 r32 r31 | max r31 r32 r32 | min r33 r34 r33 | max r33 r34 r34 | min r35 r36 r35 | max r35 r36 r36   ; phase 7: pairs (1 2) ..
    min r22 r23 r22 | max r22 r23 r23 | min r24 r25 r24 | max r24 r25 r25 | min r26 r27 r26 | max r26 r27 r27 | min r28 r29 r28 | max r28 r29 r29 | min r30 r31 r30 | max r30 r31 r31 | min r32 r33 r32 | max r32 r33 r33 | min r34 r35 r34 | max r34 r35 r35 | min r36 r37 r36 | max r36 r37 r37   ; phase 8: pairs (0 1) ..
    min r23 r24 r23 | max r23 r24 r24 | min r25 r26 r25 | max r25 r26 r26 | min r27 r28 r27 | max r27 r28 r28 | min r29 r30 r29 | max r29 r30 r30 | min r31 r32 r31 | max r31 r32 r32 | min r33 r34 r33 | max r33 r34 r34 | min r35 r36 r35 | max r35 r36 r36   ; phase 9: pairs (1 2) ..
    min r22 r23 r22 | max r22 r23 r23 | min r24 r25 r24 | max r24 r25 r25 | min r26 r27 r26 | max r26 r27 r27 | min r28 r29 r28 | max r28 r29 r29 | min r30 r31 r30 | max r30 r31 r31 | min r32 r33 r32 | max r32 r33 r33 | min r34 r35 r34 | max r34 r35 r35 | min r36 r37 r36 | max r36 r37 r37   ; phase 10: pairs (0 1) ..
    min r23 r24 r23 | max r23 r24 r24 | min r25 r26 r25 | max r25 r26 r26 | min r27 r28 r27 | max r27 r28 r28 | min r29 r30 r29 | max r29 r30 r30 | min r31 r32 r31 | max r31 r32 r32 | min r33 r34 r33 | max r33 r34 r34 | min r35 r36 r35 | max r35 r36 r36   ; phase 11: pairs (1 2) ..
    min r22 r23 r22 | max r22 r23 r23 | min r24 r25 r24 | max r24 r25 r25 | min r26 r27 r26 | max r26 r27 r27 | min r28 r29 r28 | max r28 r29 r29 | min r30 r31 r30 | max r30 r31 r31 | min r32 r33 r32 | max r32 r33 r33 | min r34 r35 r34 | max r34 r35 r35 | min r36 r37 r36 | max r36 r37 r37   ; phase 12: pairs (0 1) ..
    min r23 r24 r23 | max r23 r24 r24 | min r25 r26 r25 | max r25 r26 r26 | min r27 r28 r27 | max r27 r28 r28 | min r29 r30 r29 | max r29 r30 r30 | min r31 r32 r31 | max r31 r32 r32 | min r33 r34 r33 | max r33 r34 r34 | min r35 r36 r35 | max r35 r36 r36   ; phase 13: pairs (1 2) ..
    min r22 r23 r22 | max r22 r23 r23 | min r24 r25 r24 | max r24 r25 r25 | min r26 r27 r26 | max r26 r27 r27 | min r28 r29 r28 | max r28 r29 r29 | min r30 r31 r30 | max r30 r31 r31 | min r32 r33 r32 | max r32 r33 r33 | min r34 r35 r34 | max r34 r35 r35 | min r36 r37 r36 | max r36 r37 r37   ; phase 14: pairs (0 1) ..
    min r23 r24 r23 | max r23 r24 r24 | min r25 r26 r25 | max r25 r26 r26 | min r27 r28 r27 | max r27 r28 r28 | min r29 r30 r29 | max r29 r30 r30 | min r31 r32 r31 | max r31 r32 r32 | min r33 r34 r33 | max r33 r34 r34 | min r35 r36 r35 | max r35 r36 r36   ; phase 15: pairs (1 2) ..
    write r6 r22 | write r7 r23 | write r8 r24 | write r9 r25 | write r10 r26 | write r11 r27 | write r12 r28 | write r13 r29 | write r14 r30 | write r15 r31 | write r16 r32 | write r17 r33 | write r18 r34 | write r19 r35 | write r20 r36 | write r21 r37   ; M[0..16) = x
    ret
