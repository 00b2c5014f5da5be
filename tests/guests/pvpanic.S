# pvpanic: print a line, then report a guest panic through the pvpanic port (write 1 to
# port 0x505): fv-vmm exits 11.
        .include "lib.inc"              # constants, PRINT, putc/puts/poweroff/park
        .section .text.start, "ax"
        .globl  _start
_start:
        PRINT   "panicking via pvpanic\n"
        mov     dx, PVPANIC
        mov     al, 1                   # PVPANIC_PANICKED
        out     dx, al
        jmp     park                    # not reached if the panic was reported
