# echo: read bytes from COM1 by polling (LSR bit 0 = data ready), write each one back
# uppercased. A line that is exactly "quit" makes the guest print "bye" and power off.
        .include "lib.inc"              # constants, PRINT, putc/puts/poweroff/park
        .set    LINE_MAX, 64

        .section .text.start, "ax"
        .globl  _start
_start:
        PRINT   "echo: ready\n"
        lea     r13, [rip + line]       # current line (lowercase, as typed)
        xor     r12d, r12d              # its length

next:   mov     dx, COM1_LSR            # wait for a byte
1:      in      al, dx
        test    al, 1
        jz      1b
        mov     dx, COM1
        in      al, dx
        movzx   ebx, al

        cmp     bl, '\n'
        je      eol
        cmp     bl, '\r'
        je      next                    # ignore CR
        cmp     r12d, LINE_MAX
        jae     2f
        mov     byte ptr [r13 + r12], bl
        inc     r12d
2:      mov     edi, ebx                # echo it uppercased
        cmp     dil, 'a'
        jb      3f
        cmp     dil, 'z'
        ja      3f
        sub     dil, 0x20
3:      call    putc
        jmp     next

eol:    mov     edi, '\n'
        call    putc
        cmp     r12d, 4                 # the line is "quit"?
        jne     4f
        cmp     dword ptr [r13], 0x74697571     # "quit" little-endian
        jne     4f
        PRINT   "bye\n"
        jmp     poweroff
4:      xor     r12d, r12d
        jmp     next

        .section .bss
line:   .skip   LINE_MAX
