# smp: start every AP with INIT-SIPI-SIPI and have each CPU check in.
#
# The CPU count N comes from the kernel command line ("cpus=N"), read through the zero
# page (RSI at entry; boot_params.hdr.cmd_line_ptr at offset 0x228).
# The BSP copies a real-mode trampoline to TRAMP (0x10000), enables its LAPIC, prints
# "cpu 0 up", broadcasts INIT then SIPI twice (vector 0x10 -> 0x10000) to all but itself,
# and waits (bounded by the TSC) until N-1 APs have checked in. Each AP goes real mode ->
# 32-bit protected mode -> long mode (the BSP's CR3: the VMM's identity map), prints
# "cpu <LAPIC ID> up" (prints are serialised by a spinlock), counts itself and parks.
# The BSP then prints "all N cpus up" (or "smp: timeout: K of N cpus up") and powers off.
        .include "lib.inc"              # constants, PRINT, putc/puts/poweroff/park
        .set    TRAMP, 0x10000          # trampoline address: SIPI vector 0x10
        .set    MAX_CPUS, 32
        .set    STACK_SIZE, 4096
        .set    ICR_LO, 0x300
        .set    ICR_HI, 0x310
        .set    WAIT_TSC, 8000000000    # give up after ~3-8 s of TSC at 1-3 GHz

        .section .text.start, "ax"
        .globl  _start
_start:
        mov     r15, rsi                # zero page

        # N from "cpus=N" on the command line
        mov     ebx, dword ptr [r15 + 0x228]    # cmd_line_ptr
        xor     r14d, r14d                      # N
        test    ebx, ebx
        jz      no_n
1:      movzx   eax, byte ptr [rbx]
        test    eax, eax
        jz      no_n
        cmp     dword ptr [rbx], 0x73757063     # "cpus"
        jne     2f
        cmp     byte ptr [rbx + 4], '='
        je      3f
2:      inc     rbx
        jmp     1b
3:      add     rbx, 5
4:      movzx   eax, byte ptr [rbx]             # decimal digits
        sub     eax, '0'
        cmp     eax, 9
        ja      5f
        imul    r14d, r14d, 10
        add     r14d, eax
        inc     rbx
        jmp     4b
5:      test    r14d, r14d
        jz      no_n
        cmp     r14d, MAX_CPUS
        ja      no_n

        # copy the trampoline below 1 MiB and give it our page tables
        lea     rsi, [rip + tramp_start]
        mov     edi, TRAMP
        mov     ecx, tramp_end - tramp_start
        cld
        rep movsb
        mov     rax, cr3
        mov     dword ptr [TRAMP + tramp_cr3 - tramp_start], eax

        # software-enable the LAPIC (SVR: bit 8, spurious vector 0xff)
        mov     ebx, LAPIC
        mov     dword ptr [rbx + 0xf0], 0x1ff

        call    lock_acquire
        PRINT   "cpu 0 up\n"
        call    lock_release

        cmp     r14d, 1
        je      all_up

        # INIT to all excluding self (shorthand 11, level assert, delivery mode INIT)
        mov     dword ptr [rbx + ICR_HI], 0
        mov     dword ptr [rbx + ICR_LO], 0x000c4500
        call    icr_wait
        mov     rdi, 10000000
        call    tsc_delay
        # SIPI twice, vector 0x10 (start at 0x10000)
        mov     r13d, 2
6:      mov     dword ptr [rbx + ICR_HI], 0
        mov     dword ptr [rbx + ICR_LO], 0x000c4600 | (TRAMP >> 12)
        call    icr_wait
        mov     rdi, 1000000
        call    tsc_delay
        dec     r13d
        jnz     6b

        # wait for N-1 APs
        rdtsc
        shl     rdx, 32
        or      rax, rdx
        mov     r12, rax                # start
        lea     ecx, [r14d - 1]
7:      cmp     dword ptr [rip + ap_count], ecx
        je      all_up
        pause
        rdtsc
        shl     rdx, 32
        or      rax, rdx
        sub     rax, r12
        mov     rdx, WAIT_TSC
        cmp     rax, rdx
        jb      7b
        call    lock_acquire
        PRINT   "smp: timeout: "
        mov     edi, dword ptr [rip + ap_count]
        inc     edi                     # the BSP
        call    put_dec
        PRINT   " of "
        mov     edi, r14d
        call    put_dec
        PRINT   " cpus up\n"
        jmp     poweroff

all_up: call    lock_acquire
        PRINT   "all "
        mov     edi, r14d
        call    put_dec
        PRINT   " cpus up\n"
        jmp     poweroff

no_n:   PRINT   "smp: no cpus=N (1..32) on the command line\n"
        jmp     poweroff

# icr_wait: wait until the ICR delivery status (bit 12) is idle. rbx = LAPIC.
icr_wait:
        pause
        test    dword ptr [rbx + ICR_LO], 0x1000
        jnz     icr_wait
        ret

# tsc_delay: busy-wait rdi TSC ticks.
tsc_delay:
        push    rbx
        rdtsc
        shl     rdx, 32
        or      rax, rdx
        mov     rbx, rax
1:      pause
        rdtsc
        shl     rdx, 32
        or      rax, rdx
        sub     rax, rbx
        cmp     rax, rdi
        jb      1b
        pop     rbx
        ret

# lock_acquire / lock_release: the print spinlock (clobbers rax).
lock_acquire:
        mov     eax, 1
        xchg    dword ptr [rip + print_lock], eax      # xchg with memory is locked
        test    eax, eax
        jz      1f
        pause
        jmp     lock_acquire
1:      ret
lock_release:
        mov     dword ptr [rip + print_lock], 0
        ret

# ap_main: APs arrive here in 64-bit mode from the trampoline.
ap_main:
        mov     ax, 0x10
        mov     ds, ax
        mov     es, ax
        mov     ss, ax
        mov     eax, LAPIC
        mov     ebx, dword ptr [rax + 0x20]     # LAPIC ID register, ID in bits 31:24
        shr     ebx, 24
        and     ebx, MAX_CPUS - 1
        lea     eax, [ebx + 1]
        imul    eax, eax, STACK_SIZE
        lea     rsp, [rip + ap_stacks]
        add     rsp, rax                        # top of this AP's stack
        call    lock_acquire
        PRINT   "cpu "
        mov     edi, ebx
        call    put_dec
        PRINT   " up\n"
        call    lock_release
        lock inc dword ptr [rip + ap_count]
        jmp     park

# The trampoline: position-dependent on TRAMP, copied there by the BSP.
# An AP starts here in real mode with CS = TRAMP >> 4, IP = 0.
        .code16
tramp_start:
        cli
        mov     ax, cs
        mov     ds, ax
        lgdt    [tramp_gdtr - tramp_start]
        mov     eax, cr0
        or      eax, 1                          # PE
        mov     cr0, eax
        .byte   0x66, 0xea                      # ljmpl 0x08:tramp_pm32
        .long   TRAMP + tramp_pm32 - tramp_start
        .word   0x08
        .code32
tramp_pm32:
        mov     ax, 0x10
        mov     ds, ax
        mov     es, ax
        mov     ss, ax
        mov     eax, cr4
        or      eax, 0x20                       # PAE
        mov     cr4, eax
        mov     eax, dword ptr [TRAMP + tramp_cr3 - tramp_start]
        mov     cr3, eax
        mov     ecx, 0xc0000080                 # EFER
        rdmsr
        or      eax, 0x100                      # LME
        wrmsr
        mov     eax, cr0
        or      eax, 0x80000001                 # PG | PE
        mov     cr0, eax
        .byte   0xea                            # ljmp 0x18:ap_main (64-bit code)
        .long   ap_main
        .word   0x18
        .balign 8
tramp_gdt:
        .quad   0
        .quad   0x00cf9a000000ffff              # 0x08: 32-bit code, flat
        .quad   0x00cf92000000ffff              # 0x10: data, flat
        .quad   0x00af9a000000ffff              # 0x18: 64-bit code
tramp_gdtr:
        .word   tramp_gdtr - tramp_gdt - 1
        .long   TRAMP + tramp_gdt - tramp_start
tramp_cr3:
        .long   0
tramp_end:
        .code64

        .section .data
        .balign 4
print_lock: .long 0
ap_count:   .long 0

        .section .bss
        .balign 4096
ap_stacks:  .skip MAX_CPUS * STACK_SIZE
