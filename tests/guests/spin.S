# spin: print a banner, then loop forever writing to port 0x80 (no device there) with
# a short busy delay between writes, so the exit counters keep growing while the VM runs.
# Used for pause/resume (counters frozen while paused) and reset (the banner reappears).
        .include "lib.inc"              # constants, PRINT, putc/puts/poweroff/park

        .section .text.start, "ax"
        .globl  _start
_start:
        PRINT   "spin: start\n"
        xor     ebx, ebx
1:      mov     al, bl
        out     0x80, al                # one unhandled io_out exit
        inc     ebx
        mov     ecx, 20000              # busy delay, no exits
2:      pause
        dec     ecx
        jnz     2b
        jmp     1b
