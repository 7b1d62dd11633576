; list_maximum: the largest element of a list in memory, signed values included (it starts from M[0], not 0).
;
; Calling convention:
;   inputs   r1 = L, the length; the list is M[0..L)
;   result   r0 = max(M[0], ..., M[L - 1]), and 0 for the empty list
;   clobbers r1, r4, r5
;   steps    L + 3 for L >= 1, and 2 for L = 0
; The loop is pipelined as in list_max: each step compares the element loaded by the step before (the lanes of a
; line all read the registers from before it), so one step per element; the last step's read is not used.
    set 0 r0 | set 0 r4 | jump r1 first                        ; the empty list: 0
    ret
first:
    read r4 r0 | read r4 r5 | inc r4 | dec r1                  ; best = x = M[0], i = 1, L - 1 left
loop:
    max r0 r5 r0 | read r4 r5 | inc r4 | dec r1 | jump r1 loop     ; best = max(best, x); x = M[i]; i += 1
    ret
