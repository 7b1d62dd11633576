; sort: sequential bubble sort of a list in memory, in place.
;
; Calling convention:
;   inputs   r1 = L, the length; the list is M[0..L)
;   result   M[0..L) sorted ascending; r0 is not written (the result is the memory)
;   clobbers r2, r3, r4, r5, r6, r7
;   steps    3 * L * (L - 1) / 2 + 2 * L + 2 for L >= 2 (L = 4: 28, L = 5: 42, L = 8: 102), and 4 for L < 2.
;            Pass k (k = L - 1 down to 1) orders the pairs (0, 1) .. (k - 1, k): 3 steps a pair, 2 a pass.
    dec r1 r6                                                ; passes = L - 1
    and r1 r6 r7                                             ; L >= 2?
    jump r7 pass
    ret                                                      ; a list of 0 or 1 elements is sorted
pass:
    set 0 r4 | set 1 r5 | copy r6 r7 | dec r6                ; i = 0, j = 1, pairs = passes; one pass fewer
pair:
    read r4 r2 | read r5 r3 | dec r7                         ; x = M[i], y = M[j]
    min r2 r3 r2 | max r2 r3 r3                              ; order the pair
    write r4 r2 | write r5 r3 | copy r5 r4 | inc r5 | jump r7 pair   ; store it back; i, j = j, j + 1
    jump r6 pass
    ret
