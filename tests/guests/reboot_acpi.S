# reboot_acpi: print a line, then reset through the ACPI reset register (0x0f to port
# 0x604): fv-vmm exits 10.
        .include "lib.inc"              # constants, PRINT, putc/puts/poweroff/park
        .section .text.start, "ax"
        .globl  _start
_start:
        PRINT   "rebooting via acpi\n"
        mov     dx, ACPI_RESET
        mov     al, 0x0f
        out     dx, al
        jmp     park                    # not reached if the reset worked
