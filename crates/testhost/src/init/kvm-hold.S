# fv-kvm-hold: holds one idle KVM VM (an in-kernel irqchip and one vCPU that never runs)
# open for as long as the emulated host runs; its init starts it.
#
# Why: KVM in the emulated host flips static keys on the way from no VM to one and back
# (the scheduler's preempt notifiers, the "APIC software-disabled" key of a new vCPU),
# and each flip patches kernel text through int3. QEMU TCG now and then stalls on that
# patching (docs/testhost.md, "Guest kernels at fixed addresses"): a test that starts and
# stops VMs one after another hung the emulated host in `exc_int3`. With this VM alive,
# those keys stay on and that text is not patched.
        .intel_syntax noprefix
        .set SYS_OPEN, 2
        .set SYS_IOCTL, 16
        .set SYS_PAUSE, 34
        .set SYS_EXIT, 60
        .set O_RDWR, 2
        .set KVM_CREATE_VM, 0xae01
        .set KVM_CREATE_IRQCHIP, 0xae60
        .set KVM_CREATE_VCPU, 0xae41

        .text
        .globl  _start
_start:
        mov     eax, SYS_OPEN           # kvm = open("/host/dev/kvm", O_RDWR)
        lea     rdi, [rip + kvm_path]
        mov     esi, O_RDWR
        xor     edx, edx
        syscall
        test    eax, eax
        js      fail
        mov     edi, eax
        mov     eax, SYS_IOCTL          # vm = ioctl(kvm, KVM_CREATE_VM, 0)
        mov     esi, KVM_CREATE_VM
        xor     edx, edx
        syscall
        test    eax, eax
        js      fail
        mov     ebx, eax
        mov     edi, ebx
        mov     eax, SYS_IOCTL          # ioctl(vm, KVM_CREATE_IRQCHIP)
        mov     esi, KVM_CREATE_IRQCHIP
        xor     edx, edx
        syscall
        test    eax, eax
        js      fail
        mov     edi, ebx
        mov     eax, SYS_IOCTL          # ioctl(vm, KVM_CREATE_VCPU, 0)
        mov     esi, KVM_CREATE_VCPU
        xor     edx, edx
        syscall
        test    eax, eax
        js      fail
1:      mov     eax, SYS_PAUSE          # until the emulated host powers off
        syscall
        jmp     1b
fail:   mov     eax, SYS_EXIT
        mov     edi, 1
        syscall

        .section .rodata
# The devtmpfs the init mounts for the command (the initramfs has no /dev/kvm).
kvm_path: .asciz "/host/dev/kvm"
