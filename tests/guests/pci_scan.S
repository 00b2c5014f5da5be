# pci_scan: walk PCI bus 0 through configuration mechanism #1 (ports 0xCF8/0xCFC), print
# each function found, check that ECAM (0xe0000000) shows the same IDs, and for each
# virtio device follow its capability list to the common configuration in BAR0 and read
# num_queues from there (an MMIO read of the transport). Then power off.
#   pci 00:DD.0 VVVV:DDDD class CCCCCC
#   virtio 00:DD.0 num_queues N
#   pci: N devices
#   ecam: agrees            (or "ecam: differs")
        .include "lib.inc"              # constants, PRINT, putc/puts/poweroff/park
        .set    PCI_ADDR, 0xcf8
        .set    PCI_DATA, 0xcfc
        .set    ECAM, 0xe0000000
        .set    VIRTIO_VENDOR, 0x1af4
        .set    CAP_VENDOR, 0x09
        .set    VIRTIO_PCI_CAP_COMMON_CFG, 1

        .section .text.start, "ax"
        .globl  _start
_start:
        PRINT   "pci: scan\n"
        xor     r12d, r12d              # device number
        xor     r13d, r13d              # devices found
        xor     r14d, r14d              # ECAM mismatches
1:      mov     edi, r12d
        xor     esi, esi
        call    cfg_read32
        cmp     ax, 0xffff
        je      3f                      # nobody home
        mov     r15d, eax               # vendor | device << 16
        inc     r13d
        mov     edi, r12d
        mov     esi, 8
        call    cfg_read32
        mov     ebx, eax                # revision | class << 8
        PRINT   "pci 00:"
        mov     edi, r12d
        mov     esi, 2
        call    put_hex
        PRINT   ".0 "
        mov     edi, r15d
        and     edi, 0xffff
        mov     esi, 4
        call    put_hex
        PRINT   ":"
        mov     edi, r15d
        shr     edi, 16
        mov     esi, 4
        call    put_hex
        PRINT   " class "
        mov     edi, ebx
        shr     edi, 8
        mov     esi, 6
        call    put_hex
        PRINT   "\n"

        mov     eax, r12d               # the same dword through ECAM: ECAM + dev << 15
        shl     eax, 15
        mov     ebx, ECAM
        add     rbx, rax
        mov     eax, dword ptr [rbx]
        cmp     eax, r15d
        je      2f
        inc     r14d
2:      cmp     r15w, VIRTIO_VENDOR
        jne     3f
        call    virtio_queues
3:      inc     r12d
        cmp     r12d, 32
        jb      1b

        PRINT   "pci: "
        mov     edi, r13d
        call    put_dec
        PRINT   " devices\n"
        test    r14d, r14d
        jnz     4f
        PRINT   "ecam: agrees\n"
        jmp     poweroff
4:      PRINT   "ecam: differs\n"
        jmp     poweroff

# virtio_queues: for device r12d, find the virtio common-cfg capability, locate it in BAR0
# and print num_queues (common cfg + 0x12). Clobbers rax-rdx, rsi, rdi, r8-r10.
virtio_queues:
        mov     edi, r12d
        mov     esi, 0x34               # capabilities pointer
        call    cfg_read32
        movzx   ebx, al
5:      test    ebx, ebx
        jz      7f
        mov     edi, r12d
        mov     esi, ebx
        call    cfg_read32              # id | next << 8 | len << 16 | cfg_type << 24
        mov     r10d, eax
        cmp     al, CAP_VENDOR
        jne     6f
        shr     eax, 24
        cmp     al, VIRTIO_PCI_CAP_COMMON_CFG
        jne     6f
        mov     edi, r12d
        lea     esi, [rbx + 8]          # offset within the BAR
        call    cfg_read32
        mov     r8d, eax
        mov     edi, r12d
        mov     esi, 0x10               # BAR0, low half (64-bit BAR)
        call    cfg_read32
        and     eax, 0xfffffff0
        mov     r9d, eax
        mov     edi, r12d
        mov     esi, 0x14               # BAR0, high half
        call    cfg_read32
        shl     rax, 32
        or      r9, rax
        add     r9, r8
        movzx   r8d, word ptr [r9 + 0x12]
        PRINT   "virtio 00:"
        mov     edi, r12d
        mov     esi, 2
        call    put_hex
        PRINT   ".0 num_queues "
        mov     edi, r8d
        call    put_dec
        PRINT   "\n"
        ret
6:      mov     eax, r10d
        movzx   ebx, ah                 # next capability
        jmp     5b
7:      PRINT   "virtio: no common cfg capability\n"
        ret

# cfg_read32: eax = the configuration dword of 00:edi.0 at register esi (dword-aligned
# down). Clobbers rax, rdx.
cfg_read32:
        mov     eax, edi
        shl     eax, 11
        or      eax, esi
        and     eax, 0xfffffffc
        or      eax, 0x80000000
        mov     dx, PCI_ADDR
        out     dx, eax
        mov     dx, PCI_DATA
        in      eax, dx
        ret

# put_hex: write the low rsi hex digits of rdi to COM1. Clobbers rax, rcx, rdx, rdi.
put_hex:
        push    rbx
        push    r12
        mov     rbx, rdi
        mov     r12, rsi
1:      dec     r12
        mov     rcx, r12
        shl     rcx, 2
        mov     rdi, rbx
        shr     rdi, cl
        and     edi, 0xf
        cmp     edi, 10
        jb      2f
        add     edi, 'a' - '0' - 10
2:      add     edi, '0'
        call    putc
        test    r12, r12
        jnz     1b
        pop     r12
        pop     rbx
        ret
