; sort_select: the r2-th smallest element of a list of at most 6 values in memory (r2 = 0: the smallest).
;
; Calling convention:
;   inputs   r1 = L, the length (1 <= L <= 6); the list is M[0..L); r2 = j, the rank asked for (j < L)
;   result   r0 = sorted(M[0..L))[j]; M[0..6) holds the list padded with n - 1 and sorted ascending
;   clobbers r1, r3 .. r11; M[6..L+5) (padding written past the list)
;   steps    14 whatever L: pad, load, 6 compare-exchange phases, store, read
; The list is padded to 6 values with n - 1, which sort after every element (ties with it are equal values),
; so one fixed 6-value odd-even transposition sort with parallel lanes serves every length (sort: 3 L (L - 1)
; / 2 + 2 L + 2 steps, 28 for L = 4 and 59 for L = 6). train.py's sort task runs it at every number of the
; answer, with j counting the numbers already written.
    set 0 r9 | inc r1 r10 | set 2 r11 | set 3 r3 | set 4 r4                      ; L + 1; offsets 2..4
    dec r9 | add r1 r11 r11 | add r1 r3 r3 | add r1 r4 r4                       ; r9 = n - 1; L + 2 .. L + 4
    write r1 r9 | write r10 r9 | write r11 r9 | write r3 r9 | write r4 r9        ; M[L..L+5) = n - 1
    set 0 r3 | set 1 r4 | set 2 r5 | set 3 r6 | set 4 r7 | set 5 r8              ; the addresses 0..5
    read r3 r3 | read r4 r4 | read r5 r5 | read r6 r6 | read r7 r7 | read r8 r8  ; x0..x5 = M[0..6) in r3..r8
    min r3 r4 r3 | max r3 r4 r4 | min r5 r6 r5 | max r5 r6 r6 | min r7 r8 r7 | max r7 r8 r8   ; pairs (0 1) (2 3) (4 5)
    min r4 r5 r4 | max r4 r5 r5 | min r6 r7 r6 | max r6 r7 r7 | set 0 r9 | set 1 r10         ; pairs (1 2) (3 4)
    min r3 r4 r3 | max r3 r4 r4 | min r5 r6 r5 | max r5 r6 r6 | min r7 r8 r7 | max r7 r8 r8   ; pairs (0 1) (2 3) (4 5)
    min r4 r5 r4 | max r4 r5 r5 | min r6 r7 r6 | max r6 r7 r7 | set 2 r11 | set 3 r1         ; pairs (1 2) (3 4)
    min r3 r4 r3 | max r3 r4 r4 | min r5 r6 r5 | max r5 r6 r6 | min r7 r8 r7 | max r7 r8 r8   ; pairs (0 1) (2 3) (4 5)
    min r4 r5 r4 | max r4 r5 r5 | min r6 r7 r6 | max r6 r7 r7 | set 4 r0                      ; pairs (1 2) (3 4)
    write r9 r3 | write r10 r4 | write r11 r5 | write r1 r6 | write r0 r7 | set 5 r9  ; M[0..5) = x0..x4
    write r9 r8                                                                       ; M[5] = x5
    read r2 r0 | ret                                                                  ; r0 = M[j]
