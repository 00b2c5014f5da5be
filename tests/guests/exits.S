# exits: make a known number of VM exits that no device owns, then park.
#   K  `out` to port 0x80 (no device there)
#   K  32-bit MMIO writes to 0xd0000000 (in the MMIO hole, no device there)
#   K  32-bit MMIO reads from 0xd0000000; each must read all ones
#   1  `in` from port 0x80; must read 0xff
# then prints "mmio reads ok" / "io read ok" (or what was wrong), "done", and parks
# (cli; hlt), leaving the test to read the counters through the API and stop the VM.
        .include "lib.inc"              # constants, PRINT, putc/puts/poweroff/park
        .set    K, 100                  # keep in sync with EXITS_K in tiny_guests.rs
        .set    HOLE, 0xd0000000

        .section .text.start, "ax"
        .globl  _start
_start:
        PRINT   "exits: start\n"

        mov     ecx, K                  # K port writes
1:      mov     al, cl
        out     0x80, al
        dec     ecx
        jnz     1b

        mov     ebx, HOLE               # mov r32 zero-extends: rbx = 0xd0000000
        mov     ecx, K                  # K MMIO writes
2:      mov     dword ptr [rbx], ecx
        dec     ecx
        jnz     2b

        mov     ecx, K                  # K MMIO reads, all must be 0xffffffff
        xor     r12d, r12d              # number of bad reads
3:      mov     eax, dword ptr [rbx]
        cmp     eax, 0xffffffff
        je      4f
        inc     r12d
4:      dec     ecx
        jnz     3b
        test    r12d, r12d
        jnz     5f
        PRINT   "mmio reads ok\n"
        jmp     6f
5:      PRINT   "mmio reads not all ones: "
        mov     edi, r12d
        call    put_dec
        PRINT   " bad\n"

6:      in      al, 0x80                # one unowned port read, must be 0xff
        cmp     al, 0xff
        jne     7f
        PRINT   "io read ok\n"
        jmp     8f
7:      PRINT   "io read not all ones\n"

8:      PRINT   "done\n"
        jmp     park
