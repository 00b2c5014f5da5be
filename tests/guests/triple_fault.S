# triple_fault: print a line, load an empty IDT (limit 0) and raise #UD. Delivering
# #UD faults (#GP), delivering #GP faults (#DF), delivering #DF faults: triple fault,
# a shutdown: fv-vmm exits 11.
# (ud2, not int3: on this host's PVM KVM, software interrupts `int3`/`int N` end in
# KVM_EXIT_INTERNAL_ERROR, suberror 1 "emulation failure", dmesg "kvm-pvm: INTERNAL_ERROR
# in batch emul", instead of a triple fault; faults such as #UD, #DE, #GP, #PF do reach
# KVM_EXIT_SHUTDOWN.)
        .include "lib.inc"              # constants, PRINT, putc/puts/poweroff/park
        .section .text.start, "ax"
        .globl  _start
_start:
        PRINT   "triple faulting\n"
        lidt    [rip + empty_idtr]
        ud2
        PRINT   "still alive after ud2\n"    # must never be printed
        jmp     park

        .section .rodata
empty_idtr:
        .word   0                       # limit: no vector is valid
        .quad   0                       # base
