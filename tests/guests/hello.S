# hello: print a greeting on COM1, then power off through ACPI (fv-vmm exits 0).
        .include "lib.inc"              # constants, PRINT, putc/puts/poweroff/park
        .section .text.start, "ax"
        .globl  _start
_start:
        PRINT   "hello from ferrovisor\n"
        jmp     poweroff
