# park: print "ready" and halt with interrupts off, forever: a VM that costs nothing while
# a benchmark measures fv-vmm itself (start-up time, memory overhead).
        .include "lib.inc"              # constants, PRINT, putc/puts/poweroff/park
        .section .text.start, "ax"
        .globl  _start
_start:
        PRINT   "ready\n"
        jmp     park
