; list_max: the largest element of a list in memory.
;
; Calling convention:
;   inputs   r1 = L, the length; the list is M[0..L)
;   result   r0 = max(M[0], ..., M[L - 1]), and 0 for the empty list
;   clobbers r1, r4, r5
;   steps    L + 3 for L >= 1, and 2 for L = 0
; The loop is pipelined: each step compares the element loaded by the step before (its lanes all read the
; registers from before the line), so one step per element plus one to compare the last.
    set 0 r0 | set 0 r4 | set 0 r5 | jump r1 loop          ; best = 0, i = 0, x = 0; an empty list is done
    ret
loop:
    max r0 r5 r0 | read r4 r5 | inc r4 | dec r1 | jump r1 loop   ; best = max(best, x); x = M[i]; i += 1
    ret
