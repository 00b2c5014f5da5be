# reboot_i8042: print a line, then reset through the i8042 (0xfe to port 0x64):
# fv-vmm exits 10.
        .include "lib.inc"              # constants, PRINT, putc/puts/poweroff/park
        .section .text.start, "ax"
        .globl  _start
_start:
        PRINT   "rebooting via i8042\n"
        mov     al, 0xfe
        out     I8042_CMD, al
        jmp     park                    # not reached if the reset worked
