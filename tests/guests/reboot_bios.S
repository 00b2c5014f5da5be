# reboot_bios: print a line, then jump to the x86 reset vector (0xffff0) as Linux does to
# reboot "through the BIOS" (its default on hardware-reduced ACPI without EFI). fv-vmm has
# no BIOS; its reset-vector stub pulses the i8042 reset line: fv-vmm exits 10. The stub's
# bytes mean the same in 16- and 64-bit mode, so jumping there from long mode tests it.
        .include "lib.inc"              # constants, PRINT, putc/puts/poweroff/park
        .section .text.start, "ax"
        .globl  _start
_start:
        PRINT   "rebooting via the reset vector\n"
        mov     eax, 0xffff0
        jmp     rax
