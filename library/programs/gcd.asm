; gcd: greatest common divisor by Euclid's algorithm with `mod`.
;
; Calling convention:
;   inputs   r1 = a, r2 = b
;   result   r0 = gcd(a, b), with gcd(a, 0) = a (so gcd(0, 0) = 0)
;   clobbers r1, r2
;   steps    2 * k + 2, where k is the number of Euclid steps (a, b) -> (b, a mod b) until b = 0
loop:
    jump r2 step                                  ; b != 0: one more Euclid step
    copy r1 r0 | ret                              ; gcd(a, 0) = a
step:
    mod r1 r2 r2 | copy r2 r1 | jump r2 loop      ; (a, b) = (b, a mod b); back to the test (taken: b != 0)
